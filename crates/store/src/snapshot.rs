//! Read-only snapshots for exports: one transaction that sees the database
//! as it was when it began (REPEATABLE READ on PostgreSQL; a WAL read
//! transaction on SQLite), however long the export takes.

use sea_orm::{AccessMode, DatabaseTransaction, DbBackend, IsolationLevel, TransactionTrait};
use userdir_domain::list::UserQuery;
use userdir_domain::repo::{RepoResult, SnapshotRepository, UserSnapshot};
use userdir_domain::tenant::TenantId;
use userdir_domain::user::User;

use crate::users::list_users_on;
use crate::{Store, db_error};

/// A snapshot; dropping it ends the transaction and frees its connection.
pub struct StoreSnapshot {
    txn: DatabaseTransaction,
}

impl SnapshotRepository for Store {
    type Snapshot = StoreSnapshot;

    async fn snapshot(&self) -> RepoResult<StoreSnapshot> {
        let txn = match self.backend() {
            DbBackend::Postgres => self
                .connection()
                .begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
                .await
                .map_err(db_error)?,
            // SQLite: the first read fixes the snapshot for the transaction.
            _ => self.connection().begin().await.map_err(db_error)?,
        };
        Ok(StoreSnapshot { txn })
    }
}

impl UserSnapshot for StoreSnapshot {
    async fn list_users(&mut self, tenant: &TenantId, query: &UserQuery, limit: u32) -> RepoResult<Vec<User>> {
        list_users_on(&self.txn, tenant, query, limit).await
    }
}
