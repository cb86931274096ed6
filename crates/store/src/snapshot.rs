//! Read-only snapshots for exports: one transaction that sees the database
//! as it was when it began (REPEATABLE READ on PostgreSQL; a WAL read
//! transaction on SQLite), however long the export takes.

use futures_util::StreamExt;
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, IdenStatic, IsolationLevel, QueryTrait, StreamTrait,
    TransactionTrait,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use userdir_domain::feed::Cursor;
use userdir_domain::list::UserQuery;
use userdir_domain::list::sort_key;
use userdir_domain::repo::walk_pages;
use userdir_domain::repo::{PageSender, RepoResult, SnapshotRepository, UserSnapshot};
use userdir_domain::tenant::TenantId;
use userdir_domain::user::User;

use crate::entity::user;
use crate::entity::{event, tenant};
use crate::query::{filter_condition, order_column, page_select};
use crate::tenants::tenant_not_found;
use crate::user_row::{ROW_SQLITE, unpack_users};
use crate::user_row::{select_row_columns, user_by_index};
use crate::{Store, db_error};

/// A snapshot; dropping it ends the transaction and frees its connection.
pub struct StoreSnapshot {
    txn: DatabaseTransaction,
}

impl SnapshotRepository for Store {
    type Snapshot = StoreSnapshot;

    async fn snapshot(&self) -> RepoResult<StoreSnapshot> {
        let start = std::time::Instant::now();
        // In a task of its own, as `Store::begin_on` explains.
        let conn = self.connection().clone();
        let pg = self.backend() == DbBackend::Postgres;
        let txn = tokio::spawn(async move {
            if pg {
                conn.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
                    .await
            } else {
                // SQLite: the first read fixes the snapshot for the transaction.
                conn.begin().await
            }
        })
        .await
        .map_err(|e| userdir_domain::DomainError::storage(format!("a snapshot's BEGIN did not finish: {e}")))?
        .map_err(|e| self.db_error(e))?;
        self.observed("snapshot", start);
        Ok(StoreSnapshot { txn })
    }
}

impl UserSnapshot for StoreSnapshot {
    async fn change_cursor(&mut self, tenant: &TenantId) -> RepoResult<Cursor> {
        let head: Option<(i64, i64)> = tenant::Entity::find_by_id(tenant.as_str())
            .select_only()
            .column(tenant::Column::EventEpoch)
            .column(tenant::Column::EventSeq)
            .into_tuple()
            .one(&self.txn)
            .await
            .map_err(db_error)?;
        let (epoch, seq) = head.ok_or_else(|| tenant_not_found(tenant))?;
        let id: Option<uuid::Uuid> = event::Entity::find_by_id((tenant.as_str().to_owned(), seq))
            .select_only()
            .column(event::Column::Id)
            .into_tuple()
            .one(&self.txn)
            .await
            .map_err(db_error)?;
        Ok(Cursor {
            epoch,
            seq,
            event: id.unwrap_or_default(),
        })
    }

    async fn count_users(&mut self, tenant: &TenantId, query: &UserQuery, cap: u64) -> RepoResult<u64> {
        let mut select = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .filter(user::Column::TenantId.eq(tenant.as_str()));
        if let Some(filter) = &query.filter {
            select = select.filter(filter_condition(filter));
        }
        // The count of a subquery with a limit: at most `cap` index entries read.
        let count = Query::select()
            .expr(Expr::cust("COUNT(*)"))
            .from_subquery(select.limit(cap).into_query(), Alias::new("u"))
            .to_owned();
        let row = self.txn.query_one(&count).await.map_err(db_error)?;
        let n = match row {
            Some(row) => row.try_get_by_index::<i64>(0).map_err(db_error)?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// On PostgreSQL, typed rows read by position. On SQLite, a page as one
    /// packed text value (`ROW_SQLITE`): the page's rows are selected
    /// (filter, order, keyset, limit) in a subquery and aggregated in the
    /// same order, so one value crosses from SQLite's thread per page
    /// instead of 29 per user.
    async fn list_users(&mut self, tenant: &TenantId, query: &UserQuery, limit: u32) -> RepoResult<Vec<User>> {
        let page = page_select(tenant, query, limit)?;
        if self.backend() == DbBackend::Postgres {
            let rows = self
                .txn
                .query_all(select_row_columns(page).as_query())
                .await
                .map_err(db_error)?;
            return rows.iter().map(|row| user_by_index(row, tenant)).collect();
        }
        let column = order_column(query.order.field).as_str();
        let dir = if query.order.descending { "DESC" } else { "ASC" };
        let aggregate = format!(
            "group_concat({}, char(30) ORDER BY {column} {dir}, id {dir})",
            *ROW_SQLITE
        );
        let select = Query::select()
            .expr(Expr::cust(aggregate))
            .from_subquery(page.into_query(), Alias::new("u"))
            .to_owned();
        let row = self.txn.query_one(&select).await.map_err(db_error)?;
        let packed = match row {
            Some(row) => row.try_get_by_index::<Option<String>>(0).map_err(db_error)?,
            None => None,
        };
        unpack_users(packed, tenant)
    }

    /// PostgreSQL streams the rows of each segment of [`SEGMENT_PAGES`] pages as the
    /// database produces them, so it reads ahead while the server decodes and
    /// formats; SQLite walks page by page.
    async fn send_pages(self, tenant: TenantId, query: UserQuery, size: u32, pages: PageSender) {
        if self.backend() != DbBackend::Postgres {
            return walk_pages(self, tenant, query, size, pages).await;
        }
        if let Err(e) = self.stream_segments(&tenant, query, size, &pages).await {
            let _ = pages.send(Err(e)).await;
        }
    }
}

/// Pages per streamed PostgreSQL query (50,000 users for the server's pages
/// of 1,000). Bounded so that an export whose client left frees its
/// connection soon: the pool drains the rest of the current query's rows
/// before it reuses the connection.
const SEGMENT_PAGES: u32 = 50;

impl StoreSnapshot {
    fn backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.txn)
    }

    /// Streams segment after segment, each a keyset query starting after the
    /// last user of the one before, inside the snapshot. `Ok` when done or
    /// when the receiver is gone.
    async fn stream_segments(
        &self,
        tenant: &TenantId,
        mut query: UserQuery,
        size: u32,
        pages: &PageSender,
    ) -> RepoResult<()> {
        let size = size.max(1);
        let segment = size.saturating_mul(SEGMENT_PAGES);
        let size = size as usize;
        loop {
            let select = select_row_columns(page_select(tenant, &query, segment)?).build(DbBackend::Postgres);
            let mut rows = self.txn.stream_raw(select).await.map_err(db_error)?;
            let mut page = Vec::with_capacity(size);
            let mut read = 0u32;
            let mut last = None;
            while let Some(row) = rows.next().await {
                page.push(user_by_index(&row.map_err(db_error)?, tenant)?);
                read += 1;
                if page.len() == size {
                    last = page.last().map(|u| sort_key(u, query.order.field));
                    let full = std::mem::replace(&mut page, Vec::with_capacity(size));
                    if pages.send(Ok(Some(full))).await.is_err() {
                        return Ok(());
                    }
                }
            }
            drop(rows);
            if !page.is_empty() && pages.send(Ok(Some(page))).await.is_err() {
                return Ok(());
            }
            if read < segment {
                let _ = pages.send(Ok(None)).await;
                return Ok(());
            }
            query.after = last;
        }
    }
}
