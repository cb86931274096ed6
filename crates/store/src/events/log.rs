//! Writing events: a write transaction of a tenant holds the tenant's lock
//! (`seats::lock_tenant`, taken first), numbers its events after the last
//! number it read there, inserts them in the same transaction and, last,
//! moves the tenant's number. A writer of the same tenant waits for the
//! lock, so it reads the number only once this one's commit is visible:
//! numbers are dense (a rollback gives its numbers back) and in commit order.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use userdir_domain::DomainError;
use userdir_domain::event::{Change, EventType, Origin};
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use uuid::Uuid;

use super::image;
use super::insert::{Pending, insert};
use crate::db_error;

/// The events of one transaction of one tenant, numbered as they come.
pub(crate) struct EventLog {
    tenant: TenantId,
    origin: Origin,
    /// The tenant's last number when the lock was taken.
    start: i64,
    /// The last number handed out.
    last: i64,
    /// Recorded, not inserted yet.
    pending: Vec<Pending>,
}

impl EventLog {
    /// Events of `tenant` after number `last` (read under the tenant's lock).
    pub(crate) fn new(tenant: &TenantId, origin: &Origin, last: i64) -> Self {
        Self {
            tenant: tenant.clone(),
            origin: origin.clone(),
            start: last,
            last,
            pending: Vec::new(),
        }
    }

    /// Records `change`; it is inserted by the next [`Self::flush`].
    pub(crate) fn record(&mut self, change: &Change) {
        let after = image::encode(&change.after);
        self.record_encoded(
            change.kind,
            &change.resource,
            change.revision,
            &change.paths,
            change.line,
            after,
        );
    }

    /// [`Self::record`] of an image already encoded (an import packs every
    /// row it writes anyway).
    pub(crate) fn record_encoded(
        &mut self,
        kind: EventType,
        resource: &str,
        revision: i64,
        paths: &[String],
        line: Option<u64>,
        after: String,
    ) {
        self.last += 1;
        self.pending.push(Pending {
            seq: self.last,
            id: Uuid::now_v7(),
            time: Timestamp::now().unix_micros(),
            kind: kind.as_str(),
            resource: resource.to_owned(),
            revision,
            line: line.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            paths: paths.join(","),
            after,
        });
    }

    /// Events recorded in this transaction so far.
    pub(crate) fn count(&self) -> i64 {
        self.last - self.start
    }

    /// Inserts the events recorded since the last flush.
    pub(crate) async fn flush(&mut self, txn: &DatabaseTransaction) -> RepoResult<()> {
        let pending = std::mem::take(&mut self.pending);
        insert(txn, &self.tenant, &self.origin, pending).await.map_err(db_error)
    }

    /// Inserts what is left, then in one statement moves the tenant's
    /// number to the last event and its seats in use by `seats_moved` (and,
    /// on PostgreSQL, sends the `NOTIFY` that wakes other replicas'
    /// watchers: delivered on commit only, a hint); the caller commits next.
    /// A number that moved meanwhile (nothing moves it without the lock)
    /// fails the transaction.
    pub(crate) async fn finish(
        mut self,
        txn: &DatabaseTransaction,
        seats_moved: i64,
    ) -> RepoResult<Option<(TenantId, i64)>> {
        if self.count() == 0 && seats_moved == 0 {
            return Ok(None);
        }
        self.flush(txn).await?;
        let values = [
            self.last.into(),
            seats_moved.into(),
            self.tenant.as_str().into(),
            self.start.into(),
        ];
        let moved = if txn.get_database_backend() == DbBackend::Postgres {
            let notify = if self.count() > 0 {
                "RETURNING pg_notify('userdir_events', id)"
            } else {
                "RETURNING id"
            };
            let sql = format!(
                "UPDATE tenants SET event_seq = $1, user_count = user_count + $2 WHERE id = $3 AND event_seq = $4 \
                 {notify}"
            );
            txn.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
                .await
                .map_err(db_error)?
                .len() as u64
        } else {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "UPDATE tenants SET event_seq = ?, user_count = user_count + ? WHERE id = ? AND event_seq = ?",
                values,
            ))
            .await
            .map_err(db_error)?
            .rows_affected()
        };
        if moved != 1 {
            return Err(DomainError::storage(format!(
                "the event number of {} moved while its lock was held",
                self.tenant.resource_name()
            )));
        }
        Ok((self.count() > 0).then_some((self.tenant, self.last)))
    }
}
