//! The one tenant lock, and a tenant's seats read and moved under it inside
//! a transaction. Every write of a tenant's data takes it first (seats, the
//! last admin, ownership, the event numbers): one lock, one order (the
//! tenant, then its rows), so two writers of a tenant never deadlock.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};
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
    /// Seats taken (freed, when negative) by this transaction so far: the
    /// tenant's count moves by this much as the transaction ends, in the
    /// statement that numbers its events.
    pub(crate) moved: i64,
}

impl Seats {
    /// Takes `n` seats the lock found free (the caller checked).
    pub(crate) fn take(&mut self, n: u64) {
        self.free = self.free.map(|f| f.saturating_sub(n));
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.users += n;
        self.moved += n;
    }

    /// Frees `n` seats.
    pub(crate) fn give_back(&mut self, n: u64) {
        self.free = self.free.map(|f| f + n);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.users -= n;
        self.moved -= n;
    }
}

/// Locks the tenant row for the rest of `txn` (a write, so SQLite takes its
/// write lock before anything is read; on PostgreSQL the row lock makes
/// "are seats free?", "is there another admin?" and "who owns the tenant?"
/// answers that hold until the commit) and returns its seats, in one
/// statement.
pub(crate) async fn lock_tenant(txn: &DatabaseTransaction, tenant: &TenantId) -> RepoResult<Seats> {
    let rows = tenant::Entity::update_many()
        .col_expr(tenant::Column::UserCount, Expr::col(tenant::Column::UserCount))
        .filter(tenant::Column::Id.eq(tenant.as_str()))
        .exec_with_returning(txn)
        .await
        .map_err(db_error)?;
    let row = rows.into_iter().next().ok_or_else(|| tenant_not_found(tenant))?;
    let free = (row.seat_limit != 0).then(|| u64::try_from(row.seat_limit - row.user_count).unwrap_or(0));
    Ok(Seats {
        users: row.user_count,
        limit: row.seat_limit,
        free,
        last_event: row.event_seq,
        moved: 0,
    })
}

pub(crate) fn seat_error(tenant: &TenantId, seats: &Seats) -> DomainError {
    DomainError::SeatLimitExceeded {
        tenant: tenant.to_string(),
        limit: u32::try_from(seats.limit).unwrap_or(u32::MAX),
    }
}
