//! `UserRepository` on sea-orm.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, DatabaseTransaction, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter};
use userdir_domain::list::UserQuery;
use userdir_domain::repo::{RepoResult, TenantRepository, UserKey, UserRepository};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::{Revision, Timestamp};
use userdir_domain::user::{User, UserId, UserName};
use userdir_domain::{DomainError, ResourceKind};

use crate::entity::{tenant, user};
use crate::error::user_write_error;
use crate::query::page_select;
use crate::seats::lock_tenant;
use crate::user_row::{user_from_row, user_to_active};
use crate::{Store, db_error};

fn user_not_found(name: &UserName) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::User,
        name: name.to_string(),
    }
}

/// Moves the seat counter of a tenant by `delta` inside `txn`. Taking seats
/// (`delta > 0`) only succeeds while the seat limit allows it; the row update
/// also serialises concurrent writers of the tenant.
async fn move_seats(txn: &DatabaseTransaction, tenant: &TenantId, delta: i64) -> RepoResult<bool> {
    let mut update = tenant::Entity::update_many()
        .col_expr(
            tenant::Column::UserCount,
            Expr::col(tenant::Column::UserCount).add(delta),
        )
        .filter(tenant::Column::Id.eq(tenant.as_str()));
    if delta > 0 {
        update = update.filter(
            Condition::any().add(tenant::Column::SeatLimit.eq(0)).add(
                Expr::col(tenant::Column::UserCount)
                    .add(delta)
                    .lte(Expr::col(tenant::Column::SeatLimit)),
            ),
        );
    }
    let result = update.exec(txn).await.map_err(db_error)?;
    Ok(result.rows_affected == 1)
}

/// `Precondition LAST_ADMIN` unless the tenant still has an enabled admin or
/// owner, as `txn` sees it (under [`lock_tenant`]).
pub(crate) async fn keep_an_admin(txn: &DatabaseTransaction, tenant: &TenantId) -> RepoResult<()> {
    let left = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant.as_str()))
        .filter(user::Column::Enabled.eq(true))
        .filter(user::Column::Role.is_in(["admin", "owner"]))
        .count(txn)
        .await
        .map_err(db_error)?;
    if left == 0 {
        return Err(DomainError::Precondition {
            reason: "LAST_ADMIN",
            message: format!(
                "this would leave {} without an enabled administrator (seed 004: there is always at least one); \
                 make another user an admin first",
                tenant.resource_name()
            ),
        });
    }
    Ok(())
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
    async fn insert_user(&self, user: &User) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let txn = self.begin_on(self.writer(), "insert_user").await?;
        // The seat is taken first: that write locks the tenant row (PostgreSQL)
        // or the database (SQLite) before anything is read.
        if !move_seats(&txn, &user.tenant, 1).await? {
            txn.rollback().await.map_err(db_error)?;
            // The permanent, specific reason wins: a taken email or external
            // id is reported as such even when the seats are full too.
            self.check_free(user).await?;
            let tenant = self.get_tenant(&user.tenant).await?;
            return Err(DomainError::SeatLimitExceeded {
                tenant: tenant.id.to_string(),
                limit: tenant.seat_limit,
            });
        }
        if let Err(e) = user::Entity::insert(user_to_active(user)).exec(&txn).await {
            txn.rollback().await.map_err(db_error)?;
            return Err(user_write_error(e, user.email.as_str(), user.external_id.as_deref()));
        }
        txn.commit().await.map_err(db_error)
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
    async fn update_user(&self, user: &User, expected: Revision, keep_admin: bool) -> RepoResult<()> {
        let turn = self.interactive_write();
        let update = user::Entity::update_many()
            .set(user_to_active(user))
            .filter(user::Column::Id.eq(user.id.0))
            .filter(user::Column::TenantId.eq(user.tenant.as_str()))
            .filter(user::Column::Revision.eq(expected.0));
        let write_error = |e: sea_orm::DbErr| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                user_write_error(e, user.email.as_str(), user.external_id.as_deref())
            }
            _ => self.db_error(e),
        };
        let updated = if keep_admin {
            let txn = self.begin_on(self.writer(), "update_user").await?;
            lock_tenant(&txn, &user.tenant).await?;
            let updated = update.exec(&txn).await.map_err(write_error)?.rows_affected == 1;
            if updated && let Err(e) = keep_an_admin(&txn, &user.tenant).await {
                txn.rollback().await.map_err(db_error)?;
                return Err(e);
            }
            txn.commit().await.map_err(db_error)?;
            updated
        } else {
            update.exec(self.writer()).await.map_err(write_error)?.rows_affected == 1
        };
        drop(turn);
        if updated {
            return Ok(());
        }
        let name = user.name();
        self.get_user(&name).await?;
        Err(DomainError::EtagMismatch {
            kind: ResourceKind::User,
            name: name.to_string(),
        })
    }

    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "delete_user"))]
    async fn delete_user(&self, name: &UserName, expected: Option<Revision>, keep_admin: bool) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let txn = self.begin_on(self.writer(), "delete_user").await?;
        let mut delete = user::Entity::delete_many()
            .filter(user::Column::Id.eq(name.id.0))
            .filter(user::Column::TenantId.eq(name.tenant.as_str()));
        if let Some(rev) = expected {
            delete = delete.filter(user::Column::Revision.eq(rev.0));
        }
        let deleted = delete.exec(&txn).await.map_err(db_error)?.rows_affected;
        if deleted == 0 {
            txn.rollback().await.map_err(db_error)?;
            self.get_user(name).await?;
            return Err(DomainError::EtagMismatch {
                kind: ResourceKind::User,
                name: name.to_string(),
            });
        }
        // The seat's update locks the tenant row: the count below holds.
        move_seats(&txn, &name.tenant, -1).await?;
        if keep_admin && let Err(e) = keep_an_admin(&txn, &name.tenant).await {
            txn.rollback().await.map_err(db_error)?;
            return Err(e);
        }
        txn.commit().await.map_err(db_error)
    }

    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "transfer_ownership"))]
    async fn transfer_ownership(
        &self,
        tenant: &TenantId,
        from: Option<UserId>,
        to: UserId,
        now: Timestamp,
    ) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let txn = self.begin_on(self.writer(), "transfer_ownership").await?;
        lock_tenant(&txn, tenant).await?;
        let set_role = |id: UserId, role: &'static str| {
            user::Entity::update_many()
                .col_expr(user::Column::Role, Expr::value(role))
                .col_expr(user::Column::Revision, Expr::col(user::Column::Revision).add(1))
                .col_expr(user::Column::UpdateTime, Expr::value(now.unix_micros()))
                .filter(user::Column::Id.eq(id.0))
                .filter(user::Column::TenantId.eq(tenant.as_str()))
        };
        let owner_changed = || DomainError::Conflict {
            reason: "OWNER_CHANGED",
            message: format!(
                "the owner of {} changed while the transfer was prepared; read it again and retry",
                tenant.resource_name()
            ),
        };
        let stepped_down = match from {
            Some(from) => {
                set_role(from, "admin")
                    .filter(user::Column::Role.eq("owner"))
                    .exec(&txn)
                    .await
                    .map_err(db_error)?
                    .rows_affected
                    == 1
            }
            None => {
                user::Entity::find()
                    .filter(user::Column::TenantId.eq(tenant.as_str()))
                    .filter(user::Column::Role.eq("owner"))
                    .count(&txn)
                    .await
                    .map_err(db_error)?
                    == 0
            }
        };
        if !stepped_down {
            txn.rollback().await.map_err(db_error)?;
            return Err(owner_changed());
        }
        let stepped_up = set_role(to, "owner")
            .filter(user::Column::Enabled.eq(true))
            .exec(&txn)
            .await
            .map_err(|e| match e.sql_err() {
                // The one-owner index: another transfer won.
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => owner_changed(),
                _ => db_error(e),
            })?
            .rows_affected
            == 1;
        if !stepped_up {
            txn.rollback().await.map_err(db_error)?;
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
        txn.commit().await.map_err(db_error)
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
