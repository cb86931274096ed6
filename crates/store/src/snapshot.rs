//! Read-only snapshots for exports: one transaction that sees the database
//! as it was when it began (REPEATABLE READ on PostgreSQL; a WAL read
//! transaction on SQLite), however long the export takes.

use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, IdenStatic, IsolationLevel, QueryTrait,
    TransactionTrait,
};
use userdir_domain::list::UserQuery;
use userdir_domain::repo::{RepoResult, SnapshotRepository, UserSnapshot};
use userdir_domain::tenant::TenantId;
use userdir_domain::user::User;

use crate::imports::{ROW_POSTGRES, ROW_SQLITE, unpack_users};
use crate::query::{order_column, page_select};
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
    /// A page as one JSON value: the page's rows are selected (filter, order,
    /// keyset, limit) in a subquery and aggregated in the same order, so one
    /// value is decoded per page instead of 31 per user.
    async fn list_users(&mut self, tenant: &TenantId, query: &UserQuery, limit: u32) -> RepoResult<Vec<User>> {
        let page = page_select(tenant, query, limit)?;
        let column = order_column(query.order.field).as_str();
        let dir = if query.order.descending { "DESC" } else { "ASC" };
        let backend = self.txn.get_database_backend();
        let aggregate = match backend {
            DbBackend::Postgres => {
                format!("COALESCE(json_agg({ROW_POSTGRES} ORDER BY {column} {dir}, id {dir}), '[]')::text")
            }
            _ => format!("json_group_array({ROW_SQLITE} ORDER BY {column} {dir}, id {dir})"),
        };
        let packed = Query::select()
            .expr(Expr::cust(aggregate))
            .from_subquery(page.into_query(), Alias::new("u"))
            .to_owned();
        let row = self.txn.query_one(&packed).await.map_err(db_error)?;
        let json = match row {
            Some(row) => row.try_get_by_index::<Option<String>>(0).map_err(db_error)?,
            None => None,
        };
        unpack_users(json, tenant)
    }
}
