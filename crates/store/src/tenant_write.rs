//! A write transaction of one tenant's data: it takes the tenant's lock
//! first, records the changes it makes as events, and numbers them when it
//! commits. Every write of users, tenants and their keys runs in one.

use sea_orm::DatabaseTransaction;
use userdir_domain::event::{Change, Origin};
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::TenantId;

use crate::events::log::EventLog;
use crate::seats::{Seats, lock_tenant};
use crate::{Store, db_error};

pub(crate) struct TenantWrite {
    pub(crate) txn: DatabaseTransaction,
    pub(crate) tenant: TenantId,
    /// The tenant's seats as the lock found them.
    pub(crate) seats: Seats,
    pub(crate) events: EventLog,
}

impl TenantWrite {
    /// Begins a transaction on the writer and locks `tenant` (`NotFound`
    /// when there is no such tenant); its changes are `origin`'s.
    pub(crate) async fn begin(
        store: &Store,
        tenant: &TenantId,
        origin: &Origin,
        operation: &'static str,
    ) -> RepoResult<Self> {
        let txn = store.begin_on(store.writer(), operation).await?;
        Self::lock(txn, tenant, origin).await
    }

    /// Locks `tenant` in `txn`, which has written nothing yet.
    pub(crate) async fn lock(txn: DatabaseTransaction, tenant: &TenantId, origin: &Origin) -> RepoResult<Self> {
        let seats = lock_tenant(&txn, tenant).await?;
        let events = EventLog::new(tenant, origin, seats.last_event);
        Ok(Self {
            txn,
            tenant: tenant.clone(),
            seats,
            events,
        })
    }

    pub(crate) fn record(&mut self, change: &Change) {
        self.events.record(change);
    }

    /// Writes the events, commits, and wakes the tenant's watchers.
    pub(crate) async fn commit(self, store: &Store) -> RepoResult<()> {
        let head = self.events.finish(&self.txn, self.seats.moved).await?;
        if let Some(faults) = store.commit_faults() {
            // Random bits of a UUIDv7.
            let dice = uuid::Uuid::now_v7().as_u128() as u64;
            let micros = u64::try_from(faults.delay.as_micros()).unwrap_or(u64::MAX);
            tokio::time::sleep(std::time::Duration::from_micros(dice % micros.max(1))).await;
            if faults.fail_one_in > 0 && (dice >> 32).is_multiple_of(u64::from(faults.fail_one_in)) {
                self.txn.rollback().await.map_err(db_error)?;
                return Err(userdir_domain::DomainError::storage("a fault injected by a test"));
            }
        }
        self.txn.commit().await.map_err(db_error)?;
        if let Some((tenant, seq)) = head {
            store.signal().committed(&tenant, seq);
        }
        Ok(())
    }

    /// Undoes everything, the events with the changes.
    pub(crate) async fn rollback(self) -> RepoResult<()> {
        self.txn.rollback().await.map_err(db_error)
    }
}
