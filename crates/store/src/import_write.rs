//! An import's bulk write: one transaction of multi-row inserts and
//! updates, fed batch after batch, redone row by row when a unique
//! constraint fires; and the statistics PostgreSQL needs during a bulk load.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, SqlErr};
use userdir_domain::event::{EventType, Origin};
use userdir_domain::repo::{ImportWrite, Imported, RepoResult};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Revision;
use uuid::Uuid;

use crate::import_jobs::add_job_counts;
use crate::tenant_write::TenantWrite;
use crate::user_row::{pack_user, unpack_user};
use crate::user_writes;
use crate::{Store, db_error};

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
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
        origin: &Origin,
        writes: Vec<user_writes::Row>,
    ) -> RepoResult<(Vec<RepoResult<()>>, u64)> {
        let mut w = TenantWrite::begin(self, tenant, origin, "import_rowwise").await?;
        let mut inserted = 0u64;
        let mut results = Vec::with_capacity(writes.len());
        let creates: Vec<bool> = writes.iter().map(|r| r.expected.is_none()).collect();
        for row in writes {
            let create = row.expected.is_none();
            let outcome = user_writes::write_alone(&mut w, row).await?;
            inserted += u64::from(create && outcome.is_ok());
            results.push(outcome);
        }
        let (created, updated) = written_counts(creates.into_iter(), &results);
        add_job_counts(&w.txn, job, created, updated, 0).await?;
        w.commit(self).await?;
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
    origin: Origin,
    /// `None` once a unique constraint fired: later rows are only kept for the redo.
    write: Option<TenantWrite>,
    inserted: u64,
    outcomes: Vec<RepoResult<()>>,
    /// Every row handed over, in order: packed user, the expected revision
    /// of an update, the line and the changed fields.
    redo: Vec<(String, Option<Revision>, u64, Vec<String>)>,
}

impl StoreImportWrite {
    /// Opens the transaction and locks the tenant for it.
    pub(crate) async fn begin(store: &Store, tenant: &TenantId, job: Uuid, origin: &Origin) -> RepoResult<Self> {
        let write = TenantWrite::begin(store, tenant, origin, "import_write").await?;
        Ok(Self {
            store: store.clone(),
            tenant: tenant.clone(),
            job,
            origin: origin.clone(),
            write: Some(write),
            inserted: 0,
            outcomes: Vec::new(),
            redo: Vec::new(),
        })
    }

    /// Writes rows into the open transaction; `Ok(false)` when a unique
    /// constraint fired.
    async fn write_fast(
        &mut self,
        w: &mut TenantWrite,
        creates: &[Imported],
        updates: &[(Imported, Revision)],
        packed: &[String],
    ) -> RepoResult<bool> {
        let rows = creates
            .iter()
            .zip(packed)
            .map(|(c, p)| user_writes::Create {
                user: &c.user,
                line: c.line,
                packed: p.clone(),
            })
            .collect();
        let allowed = match user_writes::insert_many(w, rows).await {
            Ok(allowed) => allowed,
            Err(e) if is_unique_violation(&e) => return Ok(false),
            Err(e) => return Err(db_error(e)),
        };
        self.inserted += allowed as u64;
        self.outcomes.extend((0..creates.len()).map(|i| {
            if i < allowed {
                Ok(())
            } else {
                Err(user_writes::no_seat(w))
            }
        }));
        for ((row, expected), packed) in updates.iter().zip(&packed[creates.len()..]) {
            let update = user_writes::Update {
                user: &row.user,
                expected: *expected,
                kind: EventType::UserUpdated,
                paths: row.paths.clone(),
                line: Some(row.line),
                packed: Some(packed.clone()),
                keep_an_admin: user_writes::disables_an_admin(&row.user),
            };
            match user_writes::update(w, update).await {
                Ok(outcome) => self.outcomes.push(outcome),
                Err(e) if is_unique_violation(&e) => return Ok(false),
                Err(e) => return Err(db_error(e)),
            }
        }
        Ok(true)
    }
}

impl ImportWrite for StoreImportWrite {
    async fn write(&mut self, creates: &[Imported], updates: &[(Imported, Revision)]) -> RepoResult<()> {
        let packed: Vec<String> = creates
            .iter()
            .map(|c| pack_user(&c.user))
            .chain(updates.iter().map(|(u, _)| pack_user(&u.user)))
            .collect();
        self.redo.extend(
            creates
                .iter()
                .zip(&packed)
                .map(|(c, p)| (p.clone(), None, c.line, Vec::new())),
        );
        self.redo.extend(
            updates
                .iter()
                .zip(&packed[creates.len()..])
                .map(|((u, r), p)| (p.clone(), Some(*r), u.line, u.paths.clone())),
        );
        let Some(mut w) = self.write.take() else {
            return Ok(());
        };
        if self.write_fast(&mut w, creates, updates, &packed).await? {
            w.events.flush(&w.txn).await?;
            self.write = Some(w);
        } else {
            w.rollback().await?;
        }
        Ok(())
    }

    async fn commit(self) -> RepoResult<Vec<RepoResult<()>>> {
        let (outcomes, inserted) = match self.write {
            Some(w) => {
                let creates = self.redo.iter().map(|(_, revision, _, _)| revision.is_none());
                let (created, updated) = written_counts(creates, &self.outcomes);
                add_job_counts(&w.txn, self.job, created, updated, 0).await?;
                w.commit(&self.store).await?;
                (self.outcomes, self.inserted)
            }
            None => {
                let writes = self
                    .redo
                    .into_iter()
                    .map(|(packed, expected, line, paths)| {
                        Ok(user_writes::Row {
                            user: unpack_user(&packed, &self.tenant)?,
                            expected,
                            line,
                            paths,
                            packed,
                        })
                    })
                    .collect::<RepoResult<Vec<_>>>()?;
                self.store
                    .write_rowwise(&self.tenant, self.job, &self.origin, writes)
                    .await?
            }
        };
        self.store.note_inserts(inserted);
        self.store.checkpoint_soon();
        Ok(outcomes)
    }
}
