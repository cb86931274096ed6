//! An import's bulk write: one transaction of multi-row inserts and
//! updates, fed batch after batch, redone row by row when a unique
//! constraint fires; and the statistics PostgreSQL needs during a bulk load.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect, SqlErr,
    TransactionTrait,
};
use userdir_domain::access::TenantRole;
use userdir_domain::repo::{ImportWrite, RepoResult};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Revision;
use userdir_domain::user::User;
use userdir_domain::{DomainError, ResourceKind};
use uuid::Uuid;

use crate::bulk_insert::{CHUNK, UNNEST_CHUNK, insert_or_fail, insert_unnest};
use crate::entity::user;
use crate::error::user_write_error;
use crate::import_jobs::add_job_counts;
use crate::seats::{Seats, add_seats, lock_tenant, seat_error};
use crate::user_row::user_to_active;
use crate::user_row::{pack_user, unpack_user};
use crate::users::keep_an_admin;
use crate::{Store, db_error};

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

async fn update_one(conn: &impl ConnectionTrait, user: &User, expected: Revision) -> Result<bool, DbErr> {
    let result = user::Entity::update_many()
        .set(user_to_active(user))
        .filter(user::Column::Id.eq(user.id.0))
        .filter(user::Column::TenantId.eq(user.tenant.as_str()))
        .filter(user::Column::Revision.eq(expected.0))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Writes an import's update of `user`. One that disables an enabled admin
/// or owner runs behind a savepoint and is undone (`LAST_ADMIN`) when the
/// tenant is then left without an enabled admin: the import's transaction
/// holds the tenant's lock (its seats), so two imports cannot both pass.
async fn update_row(txn: &DatabaseTransaction, user: &User, expected: Revision) -> Result<RepoResult<()>, DbErr> {
    let outcome = |written: bool| if written { Ok(()) } else { Err(stale(user)) };
    if user.enabled || user.role < TenantRole::Admin {
        return update_one(txn, user, expected).await.map(outcome);
    }
    let was_enabled: Option<bool> = user::Entity::find()
        .select_only()
        .column(user::Column::Enabled)
        .filter(user::Column::Id.eq(user.id.0))
        .filter(user::Column::TenantId.eq(user.tenant.as_str()))
        .into_tuple()
        .one(txn)
        .await?;
    if was_enabled != Some(true) {
        return update_one(txn, user, expected).await.map(outcome);
    }
    let savepoint = txn.begin().await?;
    if !update_one(&savepoint, user, expected).await? {
        savepoint.rollback().await?;
        return Ok(Err(stale(user)));
    }
    match keep_an_admin(&savepoint, &user.tenant).await {
        Ok(()) => {
            savepoint.commit().await?;
            Ok(Ok(()))
        }
        Err(last) => {
            savepoint.rollback().await?;
            Ok(Err(last))
        }
    }
}

fn stale(user: &User) -> DomainError {
    DomainError::EtagMismatch {
        kind: ResourceKind::User,
        name: user.name().to_string(),
    }
}

/// PostgreSQL statistics are refreshed when the rows inserted by imports
/// reach this many, then twice as many, and so on.
const ANALYZE_FIRST: u64 = 25_000;

/// Which refresh of the statistics `inserted` rows call for: 0 below
/// [`ANALYZE_FIRST`], then one more at every doubling.
pub(crate) fn analyze_level(inserted: u64) -> u32 {
    match inserted / ANALYZE_FIRST {
        0 => 0,
        n => 1 + n.ilog2(),
    }
}

/// The statistics an import's plans depend on: those of the columns its
/// lookups filter on (and the table's size, which every ANALYZE updates).
/// All 31 columns took six times as long; autovacuum analyzes the rest.
const ANALYZE_LOOKUP_COLUMNS: &str = "ANALYZE users (tenant_id, id, email_key, external_id)";

impl Store {
    /// Keeps PostgreSQL's statistics in step with a bulk load. Without them
    /// the planner goes on believing the table is as small as it was when
    /// last analyzed, and looks users up by scanning the whole tenant
    /// (measured: lookups growing to 200 ms per batch at 850k users). The
    /// planner scales row counts by the table's current size, so statistics
    /// are refreshed only as the table doubles: ANALYZE reads a sample of the
    /// same size each time, and every 25,000 rows it took 11% of a load.
    /// It runs beside the import, on a connection of its own.
    fn note_inserts(&self, rows: u64) {
        if self.backend() != DbBackend::Postgres || rows == 0 {
            return;
        }
        let before = self.inserted.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        if analyze_level(before + rows) > analyze_level(before) {
            let db = self.connection().clone();
            tokio::spawn(async move {
                if let Err(e) = db.execute_unprepared(ANALYZE_LOOKUP_COLUMNS).await {
                    tracing::warn!(error = %e, "ANALYZE users failed");
                }
            });
        }
    }

    /// Redoes a bulk write's rows one by one, each behind its own savepoint,
    /// so that a row that violates a unique constraint fails alone; creates
    /// take seats in order while there are any. Returns the outcomes and the
    /// users inserted.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "import_rowwise"))]
    async fn write_rowwise(
        &self,
        tenant: &TenantId,
        job: Uuid,
        writes: &[RowWrite],
    ) -> RepoResult<(Vec<RepoResult<()>>, u64)> {
        let txn = self.begin_on(self.writer(), "import_rowwise").await?;
        let seats = lock_tenant(&txn, tenant).await?;
        let mut free = seats.free;
        let mut inserted = 0u64;
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            let user = match write {
                RowWrite::Create(_) if free == Some(0) => {
                    results.push(Err(seat_error(tenant, &seats)));
                    continue;
                }
                RowWrite::Create(user) | RowWrite::Update(user, _) => user,
            };
            let savepoint = txn.begin().await.map_err(db_error)?;
            let written = match write {
                RowWrite::Create(_) => user::Entity::insert(user_to_active(user))
                    .exec_without_returning(&savepoint)
                    .await
                    .map(|_| Ok(())),
                RowWrite::Update(_, expected) => update_row(&savepoint, user, *expected).await,
            };
            match written {
                Ok(outcome) => {
                    savepoint.commit().await.map_err(db_error)?;
                    if matches!(write, RowWrite::Create(_)) {
                        inserted += 1;
                        free = free.map(|f| f - 1);
                    }
                    results.push(outcome);
                }
                Err(e) => {
                    savepoint.rollback().await.map_err(db_error)?;
                    results.push(Err(user_write_error(
                        e,
                        user.email.as_str(),
                        user.external_id.as_deref(),
                    )));
                }
            }
        }
        add_seats(&txn, tenant, inserted as i64).await?;
        let (created, updated) = written_counts(writes.iter().map(|w| matches!(w, RowWrite::Create(_))), &results);
        add_job_counts(&txn, job, created, updated, 0).await?;
        txn.commit().await.map_err(db_error)?;
        Ok((results, inserted))
    }
}

/// Rows created and updated: the successful outcomes, told apart by
/// `creates` (one flag per outcome, in the same order).
fn written_counts(creates: impl Iterator<Item = bool>, outcomes: &[RepoResult<()>]) -> (i64, i64) {
    let (mut created, mut updated) = (0, 0);
    for (create, outcome) in creates.zip(outcomes) {
        match (create, outcome) {
            (true, Ok(())) => created += 1,
            (false, Ok(())) => updated += 1,
            _ => {}
        }
    }
    (created, updated)
}

/// A row of a bulk write, for the row-by-row redo.
enum RowWrite {
    Create(User),
    Update(User, Revision),
}

/// An import's bulk write: one transaction of multi-row inserts and updates,
/// fed batch after batch ([`ImportWrite`]). Every row is also kept packed
/// ([`pack_user`], a few hundred bytes), so that when a unique constraint
/// fires (a row raced with another writer between the import's lookup and
/// its write) the transaction can be rolled back and redone row by row,
/// where the racing row fails alone.
pub struct StoreImportWrite {
    store: Store,
    tenant: TenantId,
    /// The import job whose counts the commit moves.
    job: Uuid,
    /// `None` once a unique constraint fired: later rows are only kept for the redo.
    txn: Option<DatabaseTransaction>,
    seats: Seats,
    inserted: u64,
    outcomes: Vec<RepoResult<()>>,
    /// Every row handed over, in order: packed user, and the expected revision of an update.
    redo: Vec<(String, Option<Revision>)>,
}

impl StoreImportWrite {
    /// Opens the transaction and locks the tenant's seats for it.
    pub(crate) async fn begin(store: &Store, tenant: &TenantId, job: Uuid) -> RepoResult<Self> {
        let txn = store.begin_on(store.writer(), "import_write").await?;
        let seats = lock_tenant(&txn, tenant).await?;
        Ok(Self {
            store: store.clone(),
            tenant: tenant.clone(),
            job,
            txn: Some(txn),
            seats,
            inserted: 0,
            outcomes: Vec::new(),
            redo: Vec::new(),
        })
    }

    /// Writes rows into the open transaction; `Ok(false)` when a unique
    /// constraint fired.
    async fn write_fast(
        &mut self,
        txn: &DatabaseTransaction,
        creates: &[User],
        updates: &[(User, Revision)],
    ) -> RepoResult<bool> {
        let allowed = self.seats.free.map_or(creates.len(), |f| {
            creates.len().min(usize::try_from(f).unwrap_or(usize::MAX))
        });
        let pg = self.store.backend() == DbBackend::Postgres;
        for chunk in creates[..allowed].chunks(if pg { UNNEST_CHUNK } else { CHUNK }) {
            let insert = if pg {
                insert_unnest(txn, &self.tenant, chunk).await
            } else {
                insert_or_fail(txn, &self.tenant, chunk).await
            };
            match insert {
                Ok(()) => {}
                Err(e) if is_unique_violation(&e) => return Ok(false),
                Err(e) => return Err(db_error(e)),
            }
        }
        self.seats.free = self.seats.free.map(|f| f - allowed as u64);
        self.inserted += allowed as u64;
        let (tenant, seats) = (&self.tenant, &self.seats);
        self.outcomes.extend((0..creates.len()).map(|i| {
            if i < allowed {
                Ok(())
            } else {
                Err(seat_error(tenant, seats))
            }
        }));
        for (user, expected) in updates {
            match update_row(txn, user, *expected).await {
                Ok(outcome) => self.outcomes.push(outcome),
                Err(e) if is_unique_violation(&e) => return Ok(false),
                Err(e) => return Err(db_error(e)),
            }
        }
        Ok(true)
    }
}

impl ImportWrite for StoreImportWrite {
    async fn write(&mut self, creates: &[User], updates: &[(User, Revision)]) -> RepoResult<()> {
        self.redo.extend(creates.iter().map(|u| (pack_user(u), None)));
        self.redo.extend(updates.iter().map(|(u, r)| (pack_user(u), Some(*r))));
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        if self.write_fast(&txn, creates, updates).await? {
            self.txn = Some(txn);
        } else {
            txn.rollback().await.map_err(db_error)?;
        }
        Ok(())
    }

    async fn commit(self) -> RepoResult<Vec<RepoResult<()>>> {
        let (outcomes, inserted) = match self.txn {
            Some(txn) => {
                add_seats(&txn, &self.tenant, self.inserted as i64).await?;
                let creates = self.redo.iter().map(|(_, revision)| revision.is_none());
                let (created, updated) = written_counts(creates, &self.outcomes);
                add_job_counts(&txn, self.job, created, updated, 0).await?;
                txn.commit().await.map_err(db_error)?;
                (self.outcomes, self.inserted)
            }
            None => {
                let writes = self
                    .redo
                    .iter()
                    .map(|(packed, revision)| {
                        let user = unpack_user(packed, &self.tenant)?;
                        Ok(match revision {
                            None => RowWrite::Create(user),
                            Some(r) => RowWrite::Update(user, *r),
                        })
                    })
                    .collect::<RepoResult<Vec<_>>>()?;
                self.store.write_rowwise(&self.tenant, self.job, &writes).await?
            }
        };
        self.store.note_inserts(inserted);
        self.store.checkpoint_soon();
        Ok(outcomes)
    }
}
