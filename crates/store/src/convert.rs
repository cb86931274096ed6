//! Tenant rows <-> domain types (a user's row has a module of its own, `user_row`).

use sea_orm::ActiveValue::Set;
use userdir_domain::DomainError;
use userdir_domain::tenant::{CustomAttributeDef, CustomAttributeSchema, Tenant, TenantId};
use userdir_domain::text::{Revision, Timestamp};

use crate::entity::tenant;

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> DomainError {
    DomainError::storage(format!("stored {what} is unreadable: {detail}"))
}

fn count(n: u32) -> i64 {
    i64::from(n)
}

fn to_u32(what: &str, n: i64) -> Result<u32, DomainError> {
    u32::try_from(n).map_err(|_| corrupt(what, n))
}

pub(crate) fn tenant_from_row(row: tenant::Model) -> Result<Tenant, DomainError> {
    let defs: Vec<CustomAttributeDef> =
        serde_json::from_str(&row.custom_attributes).map_err(|e| corrupt("custom attribute schema", e))?;
    let custom_attributes: CustomAttributeSchema = defs
        .try_into()
        .map_err(|v: Vec<_>| corrupt("custom attribute schema", format!("{} slots", v.len())))?;
    Ok(Tenant {
        id: TenantId::parse("id", &row.id).map_err(|e| corrupt("tenant id", e))?,
        display_name: row.display_name,
        seat_limit: to_u32("seat limit", row.seat_limit)?,
        custom_attributes,
        user_count: to_u32("user count", row.user_count)?,
        audit_retention_days: to_u32("audit retention", row.audit_retention_days)?,
        create_time: Timestamp::from_unix_micros(row.create_time),
        update_time: Timestamp::from_unix_micros(row.update_time),
        revision: Revision(row.revision),
    })
}

/// The writable columns of a tenant (not `user_count`, which only the store moves).
pub(crate) fn tenant_to_active(t: &Tenant) -> tenant::ActiveModel {
    tenant::ActiveModel {
        id: Set(t.id.as_str().to_owned()),
        display_name: Set(t.display_name.clone()),
        seat_limit: Set(count(t.seat_limit)),
        custom_attributes: Set(serde_json::to_string(&t.custom_attributes).unwrap_or_else(|_| "[]".into())),
        create_time: Set(t.create_time.unix_micros()),
        update_time: Set(t.update_time.unix_micros()),
        revision: Set(t.revision.0),
        audit_retention_days: Set(i64::from(t.audit_retention_days)),
        ..Default::default()
    }
}
