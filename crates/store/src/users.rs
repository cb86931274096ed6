//! `UserRepository` on sea-orm.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use userdir_domain::access::TenantRole;
use userdir_domain::event::{Change, EventType, Origin};
use userdir_domain::list::UserQuery;
use userdir_domain::repo::{RepoResult, UserKey, UserRepository, UserUpdate};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::{Revision, Timestamp};
use userdir_domain::user::{User, UserId, UserName};
use userdir_domain::{DomainError, ResourceKind};

use crate::entity::user;
use crate::error::user_write_error;
use crate::query::page_select;
use crate::tenant_write::TenantWrite;
use crate::user_row::user_from_row;
use crate::user_writes;
use crate::{Store, db_error};

fn user_not_found(name: &UserName) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::User,
        name: name.to_string(),
    }
}

impl Store {
    /// `AlreadyExists` when another user of the tenant has `user`'s email or
    /// external id.
    async fn check_free(&self, user: &User) -> RepoResult<()> {
        let mut keys = vec![UserKey::EmailKey(user.email.key().to_owned())];
        keys.extend(user.external_id.clone().map(UserKey::ExternalId));
        for key in keys {
            match self.find_user(&user.tenant, &key).await {
                Ok(other) if other.id != user.id => {
                    return Err(match key {
                        UserKey::EmailKey(_) => DomainError::AlreadyExists {
                            kind: ResourceKind::User,
                            field: "email",
                            value: user.email.as_str().to_owned(),
                        },
                        UserKey::ExternalId(x) => DomainError::AlreadyExists {
                            kind: ResourceKind::User,
                            field: "external_id",
                            value: x,
                        },
                    });
                }
                Ok(_) | Err(DomainError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl UserRepository for Store {
    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "insert_user"))]
    async fn insert_user(&self, user: &User, origin: &Origin) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let mut w = TenantWrite::begin(self, &user.tenant, origin, "insert_user").await?;
        if !user_writes::seat_free(&w) {
            let full = user_writes::no_seat(&w);
            w.rollback().await?;
            // The permanent, specific reason wins: a taken email or external
            // id is reported as such even when the seats are full too.
            self.check_free(user).await?;
            return Err(full);
        }
        if let Err(e) = user_writes::insert(&mut w, user).await {
            w.rollback().await?;
            return Err(user_write_error(e, user.email.as_str(), user.external_id.as_deref()));
        }
        w.commit(self).await
    }

    async fn get_user(&self, name: &UserName) -> RepoResult<User> {
        let row = user::Entity::find_by_id(name.id.0)
            .filter(user::Column::TenantId.eq(name.tenant.as_str()))
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        row.map(user_from_row).unwrap_or_else(|| Err(user_not_found(name)))
    }

    async fn find_user(&self, tenant: &TenantId, key: &UserKey) -> RepoResult<User> {
        let (column, value, label) = match key {
            UserKey::EmailKey(k) => (user::Column::EmailKey, k, "email"),
            UserKey::ExternalId(id) => (user::Column::ExternalId, id, "external_id"),
        };
        let row = user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant.as_str()))
            .filter(column.eq(value.as_str()))
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        row.map(user_from_row).unwrap_or_else(|| {
            Err(DomainError::NotFound {
                kind: ResourceKind::User,
                name: format!("with {label} {value:?} in {}", tenant.resource_name()),
            })
        })
    }

    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "update_user"))]
    async fn update_user(&self, update: UserUpdate<'_>) -> RepoResult<()> {
        let user = update.user;
        let turn = self.interactive_write();
        let mut w = TenantWrite::begin(self, &user.tenant, update.origin, "update_user").await?;
        let write = user_writes::Update {
            user,
            expected: update.expected,
            kind: update.kind,
            paths: update.paths,
            line: None,
            packed: None,
            keep_an_admin: update.keep_an_admin,
        };
        let outcome = match user_writes::update(&mut w, write).await {
            Ok(outcome) => outcome,
            Err(e) => {
                w.rollback().await?;
                return Err(match e.sql_err() {
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                        user_write_error(e, user.email.as_str(), user.external_id.as_deref())
                    }
                    _ => self.db_error(e),
                });
            }
        };
        match outcome {
            Ok(()) => w.commit(self).await?,
            Err(e) => {
                w.rollback().await?;
                drop(turn);
                if let DomainError::EtagMismatch { .. } = e {
                    // Gone, or changed since it was read.
                    self.get_user(&user.name()).await?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "delete_user"))]
    async fn delete_user(
        &self,
        name: &UserName,
        expected: Option<Revision>,
        keep_admin: bool,
        origin: &Origin,
    ) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let mut w = TenantWrite::begin(self, &name.tenant, origin, "delete_user").await?;
        if user_writes::delete(&mut w, name.id, expected, None).await?.is_none() {
            w.rollback().await?;
            self.get_user(name).await?;
            return Err(DomainError::EtagMismatch {
                kind: ResourceKind::User,
                name: name.to_string(),
            });
        }
        if keep_admin && let Err(e) = user_writes::keep_an_admin(&w.txn, &name.tenant).await {
            w.rollback().await?;
            return Err(e);
        }
        w.commit(self).await
    }

    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "transfer_ownership"))]
    async fn transfer_ownership(
        &self,
        tenant: &TenantId,
        from: Option<UserId>,
        to: UserId,
        now: Timestamp,
        origin: &Origin,
    ) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let mut w = TenantWrite::begin(self, tenant, origin, "transfer_ownership").await?;
        let owner_changed = || DomainError::Conflict {
            reason: "OWNER_CHANGED",
            message: format!(
                "the owner of {} changed while the transfer was prepared; read it again and retry",
                tenant.resource_name()
            ),
        };
        let stepped_down = match from {
            Some(from) => user_writes::set_role(&mut w, from, TenantRole::Admin, Some(TenantRole::Owner), false, now)
                .await
                .map_err(db_error)?
                .is_some(),
            None => {
                user::Entity::find()
                    .filter(user::Column::TenantId.eq(tenant.as_str()))
                    .filter(user::Column::Role.eq("owner"))
                    .count(&w.txn)
                    .await
                    .map_err(db_error)?
                    == 0
            }
        };
        if !stepped_down {
            w.rollback().await?;
            return Err(owner_changed());
        }
        let stepped_up = match user_writes::set_role(&mut w, to, TenantRole::Owner, None, true, now).await {
            Ok(user) => user,
            // The one-owner index: another transfer won.
            Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
                w.rollback().await?;
                return Err(owner_changed());
            }
            Err(e) => {
                w.rollback().await?;
                return Err(db_error(e));
            }
        };
        if stepped_up.is_none() {
            w.rollback().await?;
            let name = UserName {
                tenant: tenant.clone(),
                id: to,
            };
            self.get_user(&name).await?;
            return Err(DomainError::Precondition {
                reason: "USER_DISABLED",
                message: format!("{name} is disabled: enable the user before making them the owner"),
            });
        }
        let tenant_row = crate::entity::tenant::Entity::find_by_id(tenant.as_str())
            .one(&w.txn)
            .await
            .map_err(db_error)?;
        if let Some(row) = tenant_row {
            let change = Change::tenant(
                EventType::TenantOwnerTransferred,
                &crate::convert::tenant_from_row(row)?,
                vec!["owner".to_owned()],
            );
            w.record(&change);
        }
        w.commit(self).await
    }

    async fn find_owner(&self, tenant: &TenantId) -> RepoResult<Option<User>> {
        let row = user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant.as_str()))
            .filter(user::Column::Role.eq("owner"))
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        row.map(user_from_row).transpose()
    }

    async fn list_users(&self, tenant: &TenantId, query: &UserQuery, limit: u32) -> RepoResult<Vec<User>> {
        let rows = page_select(tenant, query, limit)?
            .all(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        rows.into_iter().map(user_from_row).collect()
    }
}
