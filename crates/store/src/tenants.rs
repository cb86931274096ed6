//! `TenantRepository` on sea-orm.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr};
use userdir_domain::event::{Change, EventType, Origin};
use userdir_domain::repo::{RepoResult, TenantRepository};
use userdir_domain::tenant::{Tenant, TenantId};
use userdir_domain::text::Revision;
use userdir_domain::{DomainError, ResourceKind};
use uuid::Uuid;

use crate::Store;
use crate::convert::{tenant_from_row, tenant_to_active};
use crate::entity::tenant::{Column, Entity};
use crate::tenant_write::TenantWrite;

pub(crate) fn tenant_not_found(id: &TenantId) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::Tenant,
        name: id.resource_name(),
    }
}

/// A new feed epoch: the random bits of a UUIDv7, positive.
pub(crate) fn new_epoch() -> i64 {
    let bits = Uuid::now_v7().as_u128() as u64;
    (bits & (i64::MAX as u64)) as i64
}

impl TenantRepository for Store {
    async fn insert_tenant(&self, tenant: &Tenant, origin: &Origin) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let mut row = tenant_to_active(tenant);
        row.user_count = Set(0);
        // A feed's cursors name its epoch: a tenant made again under the
        // same id (after a restore, say) starts another.
        row.event_epoch = Set(new_epoch());
        let txn = self.begin_on(self.writer(), "insert_tenant").await?;
        Entity::insert(row).exec(&txn).await.map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => DomainError::AlreadyExists {
                kind: ResourceKind::Tenant,
                field: "tenant_id",
                value: tenant.id.to_string(),
            },
            _ => self.db_error(e),
        })?;
        let mut w = TenantWrite::lock(txn, &tenant.id, origin).await?;
        w.record(&Change::tenant(EventType::TenantCreated, tenant, Vec::new()));
        w.commit(self).await
    }

    async fn get_tenant(&self, id: &TenantId) -> RepoResult<Tenant> {
        let row = Entity::find_by_id(id.as_str())
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        row.map(tenant_from_row).unwrap_or_else(|| Err(tenant_not_found(id)))
    }

    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> RepoResult<Vec<Tenant>> {
        let mut query = Entity::find().order_by_asc(Column::Id).limit(u64::from(limit));
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query.all(self.connection()).await.map_err(|e| self.db_error(e))?;
        rows.into_iter().map(tenant_from_row).collect()
    }

    async fn update_tenant(
        &self,
        tenant: &Tenant,
        expected: Revision,
        paths: Vec<String>,
        origin: &Origin,
    ) -> RepoResult<()> {
        let turn = self.interactive_write();
        let mut w = TenantWrite::begin(self, &tenant.id, origin, "update_tenant").await?;
        let result = Entity::update_many()
            .set(tenant_to_active(tenant))
            .filter(Column::Id.eq(tenant.id.as_str()))
            .filter(Column::Revision.eq(expected.0))
            .exec(&w.txn)
            .await
            .map_err(|e| self.db_error(e))?;
        if result.rows_affected == 1 {
            let mut after = tenant.clone();
            after.user_count = u32::try_from(w.seats.users).unwrap_or(u32::MAX);
            w.record(&Change::tenant(EventType::TenantUpdated, &after, paths));
            return w.commit(self).await;
        }
        w.rollback().await?;
        drop(turn);
        // Nothing written: changed since it was read.
        Err(DomainError::EtagMismatch {
            kind: ResourceKind::Tenant,
            name: tenant.id.resource_name(),
        })
    }
}
