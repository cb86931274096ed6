//! `TenantRepository` on sea-orm.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr};
use userdir_domain::repo::{RepoResult, TenantRepository};
use userdir_domain::tenant::{Tenant, TenantId};
use userdir_domain::text::Revision;
use userdir_domain::{DomainError, ResourceKind};

use crate::Store;
use crate::convert::{tenant_from_row, tenant_to_active};
use crate::entity::tenant::{Column, Entity};

pub(crate) fn tenant_not_found(id: &TenantId) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::Tenant,
        name: id.resource_name(),
    }
}

impl TenantRepository for Store {
    async fn insert_tenant(&self, tenant: &Tenant) -> RepoResult<()> {
        let _turn = self.interactive_write();
        let mut row = tenant_to_active(tenant);
        row.user_count = Set(0);
        Entity::insert(row)
            .exec(self.writer())
            .await
            .map_err(|e| match e.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => DomainError::AlreadyExists {
                    kind: ResourceKind::Tenant,
                    field: "tenant_id",
                    value: tenant.id.to_string(),
                },
                _ => self.db_error(e),
            })?;
        Ok(())
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

    async fn update_tenant(&self, tenant: &Tenant, expected: Revision) -> RepoResult<()> {
        let turn = self.interactive_write();
        let result = Entity::update_many()
            .set(tenant_to_active(tenant))
            .filter(Column::Id.eq(tenant.id.as_str()))
            .filter(Column::Revision.eq(expected.0))
            .exec(self.writer())
            .await
            .map_err(|e| self.db_error(e))?;
        drop(turn);
        if result.rows_affected == 1 {
            return Ok(());
        }
        // Nothing written: gone, or changed since it was read.
        self.get_tenant(&tenant.id).await?;
        Err(DomainError::EtagMismatch {
            kind: ResourceKind::Tenant,
            name: tenant.id.resource_name(),
        })
    }
}
