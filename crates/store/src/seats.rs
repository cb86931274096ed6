//! The one tenant lock, and a tenant's seats read and moved under it inside
//! a transaction. Every write of a tenant's data takes it first (seats, the
//! last admin, ownership, the event numbers): one lock, one order (the
//! tenant, then its rows), so two writers of a tenant never deadlock.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, ExprTrait, QueryFilter};
use userdir_domain::DomainError;
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::TenantId;

use crate::db_error;
use crate::entity::tenant;
use crate::tenants::tenant_not_found;

/// Seats of a tenant, read under its lock.
pub(crate) struct Seats {
    /// Users the tenant has.
    pub(crate) users: i64,
    pub(crate) limit: i64,
    /// `None` = no limit.
    pub(crate) free: Option<u64>,
    /// The number of the tenant's last event (see `events::log`).
    pub(crate) last_event: i64,
}

/// Locks the tenant row for the rest of `txn` (a write, so SQLite takes its
/// write lock before anything is read; on PostgreSQL the row lock makes
/// "are seats free?", "is there another admin?" and "who owns the tenant?"
/// answers that hold until the commit) and returns its seats.
pub(crate) async fn lock_tenant(txn: &DatabaseTransaction, tenant: &TenantId) -> RepoResult<Seats> {
    let touched = tenant::Entity::update_many()
        .col_expr(tenant::Column::UserCount, Expr::col(tenant::Column::UserCount))
        .filter(tenant::Column::Id.eq(tenant.as_str()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if touched.rows_affected == 0 {
        return Err(tenant_not_found(tenant));
    }
    let row = tenant::Entity::find_by_id(tenant.as_str())
        .one(txn)
        .await
        .map_err(db_error)?;
    let row = row.ok_or_else(|| tenant_not_found(tenant))?;
    let free = (row.seat_limit != 0).then(|| u64::try_from(row.seat_limit - row.user_count).unwrap_or(0));
    Ok(Seats {
        users: row.user_count,
        limit: row.seat_limit,
        free,
        last_event: row.event_seq,
    })
}

/// Moves the tenant's seats in use by `delta` (under its lock).
pub(crate) async fn add_seats(txn: &DatabaseTransaction, tenant: &TenantId, delta: i64) -> Result<(), sea_orm::DbErr> {
    if delta != 0 {
        tenant::Entity::update_many()
            .col_expr(
                tenant::Column::UserCount,
                Expr::col(tenant::Column::UserCount).add(delta),
            )
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .exec(txn)
            .await?;
    }
    Ok(())
}

pub(crate) fn seat_error(tenant: &TenantId, seats: &Seats) -> DomainError {
    DomainError::SeatLimitExceeded {
        tenant: tenant.to_string(),
        limit: u32::try_from(seats.limit).unwrap_or(u32::MAX),
    }
}
