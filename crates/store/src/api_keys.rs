//! `ApiKeyRepository` on sea-orm. Every key write first takes the one row
//! of `api_key_counter` (migration 11) and stamps the key with the next
//! change number: key writes then run one at a time, in the order of their
//! numbers, so the quota and last-operator-key checks made under that lock
//! hold under races, and servers re-read only the keys written since the
//! number they last saw.

use crate::tenant_write::TenantWrite;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, SqlErr, Statement, TransactionTrait,
};
use userdir_domain::DomainError;
use userdir_domain::access::{Scope, Scopes};
use userdir_domain::apikey::{ApiKey, SecretHash};
use userdir_domain::error::ResourceKind;
use userdir_domain::event::{Change, EventType, Origin};
use userdir_domain::keys::{key_resource_name, quota_exceeded};
use userdir_domain::repo::{ApiKeyRepository, KeyChanges, KeyQuery, RepoResult, Revoked};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use userdir_domain::user::UserId;
use uuid::Uuid;

use crate::convert::corrupt;
use crate::entity::api_key::{ActiveModel, Column, Entity, Model};
use crate::{Store, db_error};

/// Keys read per change query: a server that starts reads them all in
/// pages of this many.
const CHANGES_PAGE: u64 = 10_000;

pub(crate) fn key_from_row(row: Model) -> RepoResult<ApiKey> {
    let micros = Timestamp::from_unix_micros;
    Ok(ApiKey {
        id: row.id,
        name: row.name,
        tenant: row
            .tenant_id
            .map(|t| TenantId::parse("tenant_id", &t).map_err(|e| corrupt("API key tenant", e)))
            .transpose()?,
        scopes: Scopes::from_bits(u8::try_from(row.scopes).map_err(|e| corrupt("API key scopes", e))?),
        act_as_users: row.act_as_users,
        user: row.user_id.map(UserId),
        creator: row.creator,
        create_time: micros(row.create_time),
        expire_time: row.expire_time.map(micros),
        last_used_time: row.last_used_time.map(micros),
        revoke_time: row.revoke_time.map(micros),
        hash: SecretHash::from_hex(&row.secret_hash).ok_or_else(|| corrupt("API key hash", "not 64 hex digits"))?,
    })
}

/// A key's row, written as the number `seq` of the key writes.
pub(crate) fn key_to_active(key: &ApiKey, seq: i64) -> ActiveModel {
    ActiveModel {
        id: Set(key.id),
        name: Set(key.name.clone()),
        tenant_id: Set(key.tenant.as_ref().map(|t| t.as_str().to_owned())),
        scopes: Set(i32::from(key.scopes.bits())),
        act_as_users: Set(key.act_as_users),
        user_id: Set(key.user.map(|u| u.0)),
        creator: Set(key.creator.clone()),
        create_time: Set(key.create_time.unix_micros()),
        expire_time: Set(key.expire_time.map(Timestamp::unix_micros)),
        last_used_time: Set(key.last_used_time.map(Timestamp::unix_micros)),
        revoke_time: Set(key.revoke_time.map(Timestamp::unix_micros)),
        secret_hash: Set(key.hash.to_hex()),
        change_seq: Set(seq),
    }
}

/// Live at `now`: not revoked, not expired.
fn live(now: Timestamp) -> sea_orm::Condition {
    sea_orm::Condition::all().add(Column::RevokeTime.is_null()).add(
        sea_orm::Condition::any()
            .add(Column::ExpireTime.is_null())
            .add(Column::ExpireTime.gt(now.unix_micros())),
    )
}

/// Takes the key lock for the rest of `txn` and returns the next change
/// number (a write first, so SQLite takes its write lock before any read).
async fn next_change(txn: &DatabaseTransaction) -> RepoResult<i64> {
    let backend = txn.get_database_backend();
    txn.execute_raw(Statement::from_string(
        backend,
        "UPDATE api_key_counter SET seq = seq + 1 WHERE id = 1",
    ))
    .await
    .map_err(db_error)?;
    let row = txn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT seq FROM api_key_counter WHERE id = 1",
        ))
        .await
        .map_err(db_error)?
        .ok_or_else(|| corrupt("API key counter", "its row is missing"))?;
    row.try_get::<i64>("", "seq").map_err(db_error)
}

impl Store {
    /// Commits a key write; a tenant's key records its event under the
    /// tenant's lock (taken after the key counter: no write takes them the
    /// other way round). Operator keys belong to no tenant's feed.
    async fn commit_key_write(
        &self,
        txn: sea_orm::DatabaseTransaction,
        kind: EventType,
        key: &ApiKey,
        origin: &Origin,
    ) -> RepoResult<()> {
        match &key.tenant {
            Some(tenant) => {
                let mut w = TenantWrite::lock(txn, tenant, origin).await?;
                w.record(&Change::api_key(kind, key));
                w.commit(self).await
            }
            None => txn.commit().await.map_err(|e| self.db_error(e)),
        }
    }
}

impl ApiKeyRepository for Store {
    async fn insert_api_key(&self, key: &ApiKey, quota: u32, origin: &Origin) -> RepoResult<()> {
        let txn = self.begin_on(self.writer(), "insert_api_key").await?;
        let seq = next_change(&txn).await?;
        let same_tenant = match &key.tenant {
            Some(t) => Column::TenantId.eq(t.as_str()),
            None => Column::TenantId.is_null(),
        };
        let held = Entity::find()
            .filter(same_tenant)
            .filter(live(key.create_time))
            .count(&txn)
            .await
            .map_err(db_error)?;
        if held >= u64::from(quota) {
            return Err(quota_exceeded(key.tenant.as_ref(), quota));
        }
        let row = key_to_active(key, seq);
        Entity::insert(row)
            .exec_without_returning(&txn)
            .await
            .map_err(|e| match e.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => DomainError::AlreadyExists {
                    kind: ResourceKind::ApiKey,
                    field: "name",
                    value: key_resource_name(key.id),
                },
                _ => self.db_error(e),
            })?;
        self.commit_key_write(txn, EventType::ApiKeyCreated, key, origin).await
    }

    async fn get_api_key(&self, id: Uuid) -> RepoResult<Option<ApiKey>> {
        Entity::find_by_id(id)
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?
            .map(key_from_row)
            .transpose()
    }

    async fn list_api_keys(&self, query: &KeyQuery) -> RepoResult<Vec<ApiKey>> {
        let mut select = Entity::find().order_by_asc(Column::Id);
        if let Some(tenant) = &query.tenant {
            select = select.filter(Column::TenantId.eq(tenant.as_str()));
        }
        if !query.show_revoked {
            select = select.filter(Column::RevokeTime.is_null());
        }
        if let Some(after) = query.after {
            select = select.filter(Column::Id.gt(after));
        }
        select
            .limit(u64::try_from(query.limit).unwrap_or(u64::MAX))
            .all(self.connection())
            .await
            .map_err(|e| self.db_error(e))?
            .into_iter()
            .map(key_from_row)
            .collect()
    }

    async fn has_operator_admin_key(&self, now: Timestamp) -> RepoResult<bool> {
        let keys = Entity::find()
            .filter(Column::TenantId.is_null())
            .filter(live(now))
            .all(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(keys.iter().any(administers))
    }

    async fn revoke_api_key(&self, id: Uuid, at: Timestamp, origin: &Origin) -> RepoResult<Revoked> {
        let txn = self.begin_on(self.writer(), "revoke_api_key").await?;
        let seq = next_change(&txn).await?;
        let Some(key) = Entity::find_by_id(id).one(&txn).await.map_err(db_error)? else {
            return Ok(Revoked::Unchanged);
        };
        if key.revoke_time.is_some() {
            return Ok(Revoked::Unchanged);
        }
        if key.tenant_id.is_none() && administers(&key) {
            let others = Entity::find()
                .filter(Column::TenantId.is_null())
                .filter(Column::Id.ne(id))
                .filter(live(at))
                .all(&txn)
                .await
                .map_err(db_error)?;
            if !others.iter().any(administers) {
                return Ok(Revoked::LastOperatorKey);
            }
        }
        Entity::update_many()
            .col_expr(Column::RevokeTime, Expr::value(at.unix_micros()))
            .col_expr(Column::ChangeSeq, Expr::value(seq))
            .filter(Column::Id.eq(id))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        let mut revoked = key_from_row(key)?;
        revoked.revoke_time = Some(at);
        self.commit_key_write(txn, EventType::ApiKeyRevoked, &revoked, origin)
            .await?;
        Ok(Revoked::Now)
    }

    async fn api_key_changes(&self, since: i64) -> RepoResult<KeyChanges> {
        let mut changes = KeyChanges {
            last: since,
            ..KeyChanges::default()
        };
        // Paged by (number, id): the keys of the first migration share 0.
        let mut after: Option<(i64, Uuid)> = None;
        loop {
            let select = Entity::find()
                .order_by_asc(Column::ChangeSeq)
                .order_by_asc(Column::Id)
                .limit(CHANGES_PAGE);
            // After the first page the cursor alone bounds the range (a row
            // comparison, which both databases answer from the
            // (change_seq, id) index; with `change_seq > since` beside it
            // SQLite would seek on that and scan every earlier page again).
            let select = match after {
                None => select.filter(Column::ChangeSeq.gt(since)),
                Some((seq, id)) => select.filter(
                    Expr::tuple([Expr::col(Column::ChangeSeq), Expr::col(Column::Id)])
                        .gt(Expr::tuple([Expr::value(seq), Expr::value(id)])),
                ),
            };
            let rows = select.all(self.connection()).await.map_err(|e| self.db_error(e))?;
            let full = rows.len() as u64 == CHANGES_PAGE;
            for row in rows {
                let (seq, id) = (row.change_seq, row.id);
                after = Some((seq, id));
                changes.last = Ord::max(changes.last, seq);
                match key_from_row(row) {
                    Ok(key) => changes.keys.push(key),
                    Err(_) => changes.undecodable.push(id),
                }
            }
            if !full {
                return Ok(changes);
            }
        }
    }

    async fn touch_api_keys(&self, used: &[(Uuid, Timestamp)]) -> RepoResult<()> {
        let txn = self.writer().begin().await.map_err(|e| self.db_error(e))?;
        for (id, at) in used {
            let at = at.unix_micros();
            Entity::update_many()
                .col_expr(Column::LastUsedTime, Expr::value(at))
                .filter(Column::Id.eq(*id))
                .filter(Column::LastUsedTime.is_null().or(Column::LastUsedTime.lt(at)))
                .exec(&txn)
                .await
                .map_err(db_error)?;
        }
        txn.commit().await.map_err(|e| self.db_error(e))
    }
}

/// An operator key row with the admin scope: one that can administer the
/// installation (make tenants and keys).
fn administers(row: &Model) -> bool {
    u8::try_from(row.scopes).is_ok_and(|bits| Scopes::from_bits(bits).has(Scope::Admin))
}
