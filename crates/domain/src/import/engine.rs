//! The import engine: every row goes decode -> parse -> validate -> write ->
//! result. Rows are gathered into batches; each batch is looked up with one
//! query (while the next batches are read), decided by the planner
//! ([`super::plan`]), and handed to the writer ([`super::writer`]), which
//! commits several batches per transaction; its results are handed back once
//! it has committed.

use crate::event::Origin;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::input::Intake;
use super::job::{AbortOnDrop, SyncLease, spawn_heartbeat};
use super::plan::{Plan, Planner, Prepare};
use super::rows::{Pending, Prepared, failure};
use super::writer::{Writer, Written};
use super::{
    DeleteGuard, ImportCounts, ImportJob, ImportLimits, ImportMode, ImportOptions, ImportState, RowOutcome, RowResult,
};
use crate::access::Caller;
use crate::admission::Slot;
use crate::error::DomainError;
use crate::repo::{AbsentSweep, ImportRepository, Kept, RepoResult, TenantRepository, UserRepository};
use crate::tenant::Tenant;
use crate::text::Timestamp;
use crate::user::{User, UserId};

/// Rows per batch: one lookup query each; the writer groups batches into
/// transactions. 500 keys per lookup stay well under SQLite's 32766 bound
/// parameters per statement.
pub const BATCH_ROWS: usize = 500;
/// Batches whose lookups run ahead of the batch being decided. With one, the
/// decisions often waited for a lookup that had not had a core yet: the
/// unchanged 1M re-import on SQLite took 7.2 / 7.2 s with one, 6.0 / 6.3 s with
/// two, and no less with three.
const LOOKAHEAD: usize = 2;
/// How often a running job's counts are saved, for GetImportJob.
const JOB_SAVE_EVERY: Duration = Duration::from_secs(2);

/// A batch whose keys are checked and whose users are being looked up.
struct Staged {
    /// Rows already failed, by position in the batch.
    results: Vec<Option<RowResult>>,
    /// The other rows, by position in the batch.
    prepared: Vec<(usize, Prepared)>,
    lookup: Lookup,
}

/// The stored users a staged batch names.
enum Lookup {
    Running(tokio::task::JoinHandle<RepoResult<Vec<User>>>),
    Done(RepoResult<Vec<User>>),
}

impl Staged {
    /// Waits for the lookup. Cancel-safe: the lookup goes on, and its result
    /// is kept once it arrives.
    async fn wait_lookup(&mut self) {
        if let Lookup::Running(task) = &mut self.lookup {
            let found = task
                .await
                .unwrap_or_else(|e| Err(DomainError::storage(format!("the lookup of a batch stopped: {e}"))));
            self.lookup = Lookup::Done(found);
        }
    }
}

/// One import in progress. Created by [`crate::Directory::start_import`].
pub struct Importer<R> {
    repo: Arc<R>,
    job: ImportJob,
    limits: ImportLimits,
    /// File bytes or parsed rows, read into rows waiting for their batch.
    intake: Intake,
    pending: Vec<Pending>,
    planner: Planner,
    sync_lock: SyncLease,
    last_save: Instant,
    /// When the last new row arrived or results last went out.
    last_progress: tokio::time::Instant,
    /// Batches staged, oldest first: their lookups run while the next
    /// batches are read and decided.
    staged: VecDeque<Staged>,
    /// Writes decided batches, group-committing them; `None` in dry runs.
    writer: Option<Writer>,
    /// Whether the end of the input was taken in ([`Self::read_rest`]).
    input_ended: bool,
    /// Rows refused for the caller's rights, and the first of them (line,
    /// message): an import whose every row was refused so fails.
    refused: (u64, Option<(u64, String)>),
    /// Whose changes the import's are: its events name the caller and the job.
    origin: Origin,
    /// Renews the job's heartbeat while the import lives.
    _heartbeat: AbortOnDrop,
    /// The import's place under the server's caps, given back when it ends.
    _slot: Slot,
}

impl<R: TenantRepository + UserRepository + ImportRepository> Importer<R> {
    /// Starts an import: checks the tenant, takes the FULL_SYNC lock when
    /// needed and records the job as RUNNING.
    pub(crate) async fn start(
        repo: Arc<R>,
        tenant: Tenant,
        options: ImportOptions,
        caller: Caller,
        limits: ImportLimits,
        slot: Slot,
    ) -> Result<Self, DomainError> {
        let now = Timestamp::now();
        let job = ImportJob {
            tenant: tenant.id.clone(),
            id: Uuid::now_v7(),
            actor: caller.principal.to_string(),
            options,
            state: ImportState::Running,
            start_time: now,
            end_time: None,
            counts: ImportCounts::default(),
            error: String::new(),
        };
        let mut sync_lock = if job.options.mode == ImportMode::FullSync && !job.options.validate_only {
            SyncLease::acquire(&*repo, &tenant.id, job.id, now).await?
        } else {
            SyncLease::none(tenant.id.clone(), job.id)
        };
        let origin = Origin::of(&caller).for_import(job.id);
        if let Err(e) = repo.insert_import_job(&job, &origin).await {
            sync_lock.release(&*repo).await;
            return Err(e);
        }
        let writer = (!job.options.validate_only)
            .then(|| Writer::spawn(Arc::clone(&repo), tenant.id.clone(), job.id, origin.clone()));
        let heartbeat = spawn_heartbeat(Arc::clone(&repo), tenant.id.clone(), job.id, limits.job_lease);
        let intake = Intake::new(&job.options, limits.max_record_bytes, limits.workbook);
        Ok(Self {
            repo,
            planner: Planner::new(tenant, job.options.clone(), caller),
            job,
            limits,
            intake,
            pending: Vec::new(),
            sync_lock,
            last_save: Instant::now(),
            last_progress: tokio::time::Instant::now(),
            staged: VecDeque::new(),
            writer,
            input_ended: false,
            refused: (0, None),
            origin,
            _heartbeat: heartbeat,
            _slot: slot,
        })
    }

    /// The idle timeout counted from the last new row, or the last results
    /// sent (or the start): see [`ImportLimits::idle_timeout`].
    pub fn idle_deadline(&self) -> tokio::time::Instant {
        self.last_progress + self.limits.idle_timeout
    }

    /// Whether rows wait for a full batch (or bytes for the encoding to be
    /// known): [`Self::flush_partial`] moves them along.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty() || self.intake.holds_bytes()
    }

    /// The client paused: the rows read so far go on as a batch of their
    /// own (and AUTO decides on the bytes it has), so their results leave
    /// without waiting for 500 rows or 64 KiB.
    pub async fn flush_partial(&mut self) -> Result<Vec<RowResult>, DomainError> {
        let read = self.intake.decide_early(&mut self.pending)?;
        self.note_rows(read);
        let mut results = Vec::new();
        if !self.pending.is_empty() {
            let batch: Vec<Pending> = self.pending.drain(..).collect();
            results.extend(self.run_batch(batch).await?);
        }
        self.keep_alive().await?;
        Ok(results)
    }

    /// Restarts the idle clock (results went out: the import is moving).
    pub fn note_progress(&mut self) {
        self.last_progress = tokio::time::Instant::now();
    }

    /// How long an import may go without a new row.
    pub fn idle_timeout(&self) -> Duration {
        self.limits.idle_timeout
    }

    /// The job as it stands.
    pub fn job(&self) -> &ImportJob {
        &self.job
    }

    /// Feeds the next bytes of a CSV file.
    pub async fn push_chunk(&mut self, bytes: &[u8]) -> Result<Vec<RowResult>, DomainError> {
        let read = self.intake.push_chunk(bytes, &mut self.pending)?;
        self.note_rows(read);
        self.flush_full_batches().await
    }

    /// Feeds parsed rows: each a list of (field name, value).
    pub async fn push_rows(&mut self, rows: Vec<Vec<(String, String)>>) -> Result<Vec<RowResult>, DomainError> {
        let read = self.intake.push_rows(rows, &mut self.pending)?;
        self.note_rows(read);
        self.flush_full_batches().await
    }

    /// New rows arrived: the import is moving.
    fn note_rows(&mut self, read: usize) {
        if read > 0 {
            self.last_progress = tokio::time::Instant::now();
        }
    }

    async fn flush_full_batches(&mut self) -> Result<Vec<RowResult>, DomainError> {
        let mut results = Vec::new();
        while self.pending.len() >= BATCH_ROWS {
            let batch: Vec<Pending> = self.pending.drain(..BATCH_ROWS).collect();
            results.extend(self.run_batch(batch).await?);
        }
        self.keep_alive().await?;
        Ok(results)
    }

    /// Refreshes the sync lock and saves progress now and then.
    async fn keep_alive(&mut self) -> Result<(), DomainError> {
        self.sync_lock.refresh_if_due(&*self.repo).await?;
        if self.last_save.elapsed() >= JOB_SAVE_EVERY {
            self.repo.update_import_job(&self.job, &self.origin).await?;
            self.last_save = Instant::now();
        }
        Ok(())
    }

    /// After the end message: the input's last rows, a workbook's (read only
    /// now: its index is at its end) a batch at a time, each call returning
    /// the results of the rows it moved along; `None` once every row is
    /// read. [`Self::end_input`] then finishes the rows.
    pub async fn read_rest(&mut self) -> Result<Option<Vec<RowResult>>, DomainError> {
        if !self.input_ended {
            self.input_ended = true;
            self.intake.finish(&mut self.pending)?;
        }
        match self.intake.read_more(&mut self.pending).await? {
            None => Ok(None),
            Some(read) => {
                self.note_rows(read);
                self.flush_full_batches().await.map(Some)
            }
        }
    }

    /// Ends the input: processes what is left (what [`Self::read_rest`] did
    /// not read yet too) and returns its results; [`Self::conclude`] then
    /// ends the import.
    pub async fn end_input(&mut self) -> Result<Vec<RowResult>, DomainError> {
        let mut results = Vec::new();
        while let Some(read) = self.read_rest().await? {
            results.extend(read);
        }
        // Rows whose create lost a race come back as pending once written.
        loop {
            while !self.pending.is_empty() {
                let n = self.pending.len().min(BATCH_ROWS);
                let batch: Vec<Pending> = self.pending.drain(..n).collect();
                results.extend(self.run_batch(batch).await?);
            }
            results.extend(self.drain().await?);
            if self.pending.is_empty() {
                break;
            }
        }
        Ok(results)
    }

    /// After [`Self::end_input`] (its results delivered): refuses an import
    /// whose every row was refused for the caller's rights (PERMISSION_DENIED,
    /// the job FAILED: not a SUCCEEDED that wrote nothing), then (FULL_SYNC)
    /// deletes the users absent from the file, and records the job as
    /// SUCCEEDED.
    pub async fn conclude(&mut self) -> Result<Vec<RowResult>, DomainError> {
        if let (refused, Some((line, first))) = &self.refused
            && *refused == self.job.counts.rows
        {
            return Err(DomainError::PermissionDenied {
                reason: "MISSING_PERMISSION",
                permission: "users.import",
                message: format!(
                    "every row of the file ({refused}) was refused for the caller's rights, so nothing was written \
                     (line {line}: {first}). Import with a key (the import scope) or an acting user that may write \
                     these users"
                ),
            });
        }
        let mut results = Vec::new();
        if self.job.options.mode == ImportMode::FullSync {
            results.extend(self.delete_absent().await?);
        }
        results.extend(self.end(ImportState::Succeeded, None).await);
        Ok(results)
    }

    async fn delete_absent(&mut self) -> Result<Vec<RowResult>, DomainError> {
        let opts = &self.job.options;
        if self.job.counts.rows == 0 && !opts.allow_delete_all {
            return Err(DomainError::Precondition {
                reason: "FULL_SYNC_EMPTY_FILE",
                message: "the file has no rows: FULL_SYNC would delete every user of the tenant. \
                          Set allow_delete_all to really do that"
                    .into(),
            });
        }
        if self.job.counts.failed > 0 {
            self.job.error = format!(
                "{} rows failed, so no user was deleted: a row that failed may stand for a user who must stay. \
                 Fix the failed rows and run the FULL_SYNC again",
                self.job.counts.failed
            );
            return Ok(Vec::new());
        }
        let protect = self.planner.protection()?;
        self.sync_lock.hold(&*self.repo).await?;
        let tenant = self.job.tenant.clone();
        let sweep = AbsentSweep {
            job: self.job.id,
            created_before: self.job.start_time,
            keep: &self.planner.keep,
            protect: &protect,
            guard: DeleteGuard::of(&self.job.options),
            dry_run: self.job.options.validate_only,
            origin: &self.origin,
        };
        let swept = self.repo.delete_absent_users(&tenant, sweep).await?;
        let absent = |(id, email, why): (UserId, String, Option<Kept>)| {
            let outcome = if why.is_some() {
                RowOutcome::Protected
            } else {
                RowOutcome::Deleted
            };
            self.job.counts.add(outcome);
            RowResult {
                line: 0,
                outcome,
                user: format!("tenants/{tenant}/users/{id}"),
                email,
                failure: why.map(|why| failure(why.reason(), "", why.message())),
            }
        };
        let deleted = swept.deleted.into_iter().map(|(id, email)| (id, email, None));
        let protected = swept
            .protected
            .into_iter()
            .map(|(id, email, why)| (id, email, Some(why)));
        Ok(protected.chain(deleted).map(absent).collect())
    }

    /// Records how the import ended (FAILED or CANCELLED with `error`) and
    /// releases the FULL_SYNC lock. Never fails: the job record is best effort.
    /// What the writer was already handed is committed first, and its
    /// results are returned (to be reported when someone still listens): the
    /// job then counts every row written, and nothing is written after it.
    pub async fn end(&mut self, state: ImportState, error: Option<String>) -> Vec<RowResult> {
        if self.job.state != ImportState::Running {
            return Vec::new();
        }
        let mut results = Vec::new();
        if let Some(writer) = self.writer.take() {
            let groups = writer.settle().await;
            results = self.complete_groups(groups);
            // Rows that lost a race would run again; the import is over.
            self.pending.clear();
        }
        self.staged.clear();
        self.job.state = state;
        self.job.end_time = Some(Timestamp::now());
        if let Some(error) = error {
            self.job.error = error;
        }
        // The lock goes first: once the job says it ended, the tenant's next
        // FULL_SYNC may start.
        let released = self.sync_lock.release(&*self.repo).await;
        if let Err(e) = self.repo.update_import_job(&self.job, &self.origin).await {
            // Most often the database went away (the reason the import
            // ended): this server is alive and knows how it ended, so it
            // records that as soon as the database answers, not when the
            // job's lease runs out.
            tracing::warn!(error = %e, job = %self.job.resource_name(), "could not record the end of an import job; retrying");
            super::job::spawn_record_end(Arc::clone(&self.repo), self.job.clone(), self.origin.clone(), !released);
        } else if !released {
            super::job::spawn_record_end(Arc::clone(&self.repo), self.job.clone(), self.origin.clone(), true);
        }
        results
    }

    /// Stages a batch, so that its lookup runs while the next batches are
    /// read, then decides the oldest staged batch once [`LOOKAHEAD`] wait
    /// and hands it to the writer; returns the results of the batches
    /// committed meanwhile.
    async fn run_batch(&mut self, batch: Vec<Pending>) -> Result<Vec<RowResult>, DomainError> {
        let staged = self.stage(batch);
        self.staged.push_back(staged);
        if self.staged.len() > LOOKAHEAD
            && let Some(oldest) = self.staged.pop_front()
        {
            return self.decide(oldest).await;
        }
        Ok(Vec::new())
    }

    /// Decides a staged batch and hands it to the writer (a dry run settles it at once).
    async fn decide(&mut self, mut staged: Staged) -> Result<Vec<RowResult>, DomainError> {
        staged.wait_lookup().await;
        let plan = self.plan(staged)?;
        let Some(writer) = self.writer.as_mut() else {
            let outcomes = self.planner.dry_run_outcomes(&plan);
            return Ok(self.complete(plan, outcomes));
        };
        let groups = writer.submit(plan).await?;
        Ok(self.complete_groups(groups))
    }

    /// Whether batches are staged or being written, so that [`Self::settle`]
    /// has results to wait for.
    pub fn writing(&self) -> bool {
        !self.staged.is_empty() || self.writer.as_ref().is_some_and(Writer::busy)
    }

    /// Moves the batches already read along without more input: decides the
    /// staged batch once its lookup is back, or waits for the next group of
    /// batches to commit, and returns the results that produced. Never
    /// returns while nothing is staged or written. Cancel-safe.
    pub async fn settle(&mut self) -> Result<Vec<RowResult>, DomainError> {
        if let Some(staged) = self.staged.front_mut() {
            staged.wait_lookup().await;
            if self.writer.as_ref().is_none_or(Writer::has_room)
                && let Some(staged) = self.staged.pop_front()
            {
                // With room, handing over does not wait: nothing to cancel.
                return self.decide(staged).await;
            }
        }
        let Some(writer) = self.writer.as_mut() else {
            return std::future::pending().await;
        };
        let group = writer.next().await?;
        Ok(self.complete_groups(vec![group]))
    }

    /// Decides the staged batches, waits for every batch handed to the
    /// writer and returns their results.
    async fn drain(&mut self) -> Result<Vec<RowResult>, DomainError> {
        let mut results = Vec::new();
        while let Some(staged) = self.staged.pop_front() {
            results.extend(self.decide(staged).await?);
        }
        let mut groups = Vec::new();
        if let Some(writer) = self.writer.as_mut() {
            while writer.busy() {
                groups.push(writer.next().await?);
            }
        }
        results.extend(self.complete_groups(groups));
        Ok(results)
    }

    fn complete_groups(&mut self, groups: Vec<Written>) -> Vec<RowResult> {
        let mut results = Vec::new();
        for (plan, outcomes) in groups.into_iter().flatten() {
            results.extend(self.complete(plan, outcomes));
        }
        results
    }

    /// Checks a batch's keys (format, duplicates in the file) and starts
    /// looking its users up.
    fn stage(&mut self, batch: Vec<Pending>) -> Staged {
        let Prepare {
            results,
            prepared,
            email_keys,
            external_ids,
            ids,
        } = self.planner.prepare(batch);
        let lookup = if prepared.is_empty() {
            Lookup::Done(Ok(Vec::new()))
        } else {
            let repo = Arc::clone(&self.repo);
            let tenant = self.job.tenant.clone();
            Lookup::Running(tokio::spawn(async move {
                repo.find_import_matches(&tenant, &email_keys, &external_ids, &ids)
                    .await
            }))
        };
        Staged {
            results,
            prepared,
            lookup,
        }
    }

    /// Decides a staged batch whose lookup is done.
    fn plan(&mut self, staged: Staged) -> Result<Plan, DomainError> {
        let Staged {
            results,
            prepared,
            lookup,
        } = staged;
        let existing = match lookup {
            Lookup::Done(found) => found?,
            Lookup::Running(_) => return Err(DomainError::storage("a batch was decided before its lookup ended")),
        };
        Ok(self.planner.plan(results, prepared, &existing))
    }

    /// The results of a written plan, in file order; counts them. Rows that
    /// lost a race with another writer wait to run again.
    fn complete(&mut self, plan: Plan, outcomes: Vec<RepoResult<()>>) -> Vec<RowResult> {
        let results = self.planner.complete(plan, outcomes, &mut self.pending);
        for r in &results {
            self.job.counts.add(r.outcome);
            if let Some(failure) = &r.failure
                && r.outcome == RowOutcome::Failed
                && crate::access::Denied::is_reason(&failure.reason)
            {
                self.refused.0 += 1;
                self.refused.1.get_or_insert_with(|| (r.line, failure.message.clone()));
            }
        }
        results
    }
}
