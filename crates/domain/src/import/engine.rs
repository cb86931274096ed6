//! The import engine: every row goes decode -> parse -> validate -> write ->
//! result. Rows are gathered into batches; each batch is looked up with one
//! query (while the next batches are read), decided, and handed to the writer
//! ([`super::writer`]), which commits several batches per transaction; its
//! results are handed back once it has committed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

use super::columns::{Column, ColumnMap, resolve};
use super::csv::{CsvDecoder, FileError, Record};
use super::seen::SeenKeys;
use super::writer::{Writer, Written};
use super::{
    ImportCounts, ImportJob, ImportLimits, ImportMode, ImportOptions, ImportState, MatchKey, RowFailure, RowOutcome,
    RowResult,
};
use crate::email::Email;
use crate::error::DomainError;
use crate::repo::{ImportRepository, RepoResult, SyncLock, TenantRepository, UserRepository};
use crate::tenant::{Tenant, custom_key};
use crate::text::{Revision, Timestamp};
use crate::user::{User, UserInput, UserMask, UserStatus};

/// Rows per batch: one lookup query each; the writer groups batches into
/// transactions. 500 keys per lookup stay well under SQLite's 32766 bound
/// parameters per statement.
pub const BATCH_ROWS: usize = 500;
/// Batches whose lookups run ahead of the batch being decided. With one, the
/// decisions often waited for a lookup that had not had a core yet: the
/// unchanged 1M re-import on SQLite took 7.2 / 7.2 s with one, 6.0 / 6.3 s with
/// two, and no less with three.
const LOOKAHEAD: usize = 2;
/// A FULL_SYNC lock not refreshed for this long belongs to a dead server.
const SYNC_LOCK_STALE: Duration = Duration::from_secs(60);
const SYNC_LOCK_REFRESH: Duration = Duration::from_secs(10);
/// How often a running job's counts are saved, for GetImportJob.
const JOB_SAVE_EVERY: Duration = Duration::from_secs(2);

/// A task aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where rows come from; fixed by the first data message.
enum Input {
    Unknown,
    Csv {
        decoder: Box<CsvDecoder>,
        columns: Option<ColumnMap>,
    },
    Rows {
        next_line: u64,
    },
}

/// A row waiting for its batch.
struct Pending {
    line: u64,
    cells: Result<Vec<(Column, String)>, RowFailure>,
    /// How often the row ran before: a row whose write lost a race with
    /// another writer runs again ([`ROW_ATTEMPTS`]); its key was checked for
    /// duplicates in the file the first time.
    attempt: u8,
}

/// What a written row needs to run again: its cells and its next attempt.
type Retry = (Vec<(Column, String)>, u8);

/// Runs of a row whose write keeps losing races with other writers (a
/// create beaten by another create of the same user, an update by another
/// update) before it fails.
const ROW_ATTEMPTS: u8 = 3;

/// What a row's match key resolved to.
enum Key {
    Email(Email),
    Id(Uuid),
    /// USER_ID matching, empty cell: a new user.
    NewId,
    External(String),
}

/// A validated row, ready to compare with the stored user.
struct Prepared {
    line: u64,
    key: Key,
    cells: Vec<(Column, String)>,
    attempt: u8,
}

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

/// A decided batch: the results known before writing, and the writes. Once
/// written, only the results are kept until the transaction commits.
pub(super) struct Plan {
    results: Vec<Option<RowResult>>,
    /// (slot in `results`, result if written) of each create and update.
    create_results: Vec<(usize, RowResult)>,
    /// The cells and attempt of each create and update that runs again if
    /// another writer gets there first between its lookup and its write.
    retries: Vec<Option<Retry>>,
    pub(super) creates: Vec<User>,
    update_results: Vec<(usize, RowResult)>,
    update_retries: Vec<Option<Retry>>,
    pub(super) updates: Vec<(User, Revision)>,
}

impl Plan {
    /// Rows this plan writes.
    pub(super) fn writes(&self) -> usize {
        self.creates.len() + self.updates.len()
    }

    /// Creates decided, written or not.
    pub(super) fn create_count(&self) -> usize {
        self.create_results.len()
    }

    /// Updates decided, written or not.
    pub(super) fn update_count(&self) -> usize {
        self.update_results.len()
    }
}

/// One import in progress. Created by [`crate::Directory::start_import`].
pub struct Importer<R> {
    repo: Arc<R>,
    tenant: Tenant,
    job: ImportJob,
    limits: ImportLimits,
    input: Input,
    pending: Vec<Pending>,
    /// Match-key hash -> line of its first row.
    seen_keys: SeenKeys,
    /// Email-key hash -> line, when emails are not the match key.
    seen_emails: SeenKeys,
    /// External-id hash -> line, when external ids are not the match key.
    seen_external: SeenKeys,
    /// FULL_SYNC only: users the file names (16 bytes a user).
    keep: HashSet<Uuid>,
    /// Dry runs: seats the file would take.
    dry_created: u64,
    locked: bool,
    last_refresh: Instant,
    last_save: Instant,
    /// Batches staged, oldest first: their lookups run while the next
    /// batches are read and decided.
    staged: VecDeque<Staged>,
    /// Writes decided batches, group-committing them; `None` in dry runs.
    writer: Option<Writer>,
    /// Renews the job's heartbeat while the import lives.
    _heartbeat: AbortOnDrop,
}

fn failure(reason: &str, field: impl Into<String>, message: impl Into<String>) -> RowFailure {
    RowFailure {
        reason: reason.to_owned(),
        field: field.into(),
        message: message.into(),
    }
}

fn file_error(e: FileError) -> DomainError {
    DomainError::invalid("file", format!("line {}: {}", e.line, e.message))
}

/// A domain error about one row, as a row failure.
fn row_failure(err: DomainError) -> RowFailure {
    match err {
        DomainError::Invalid(v) => {
            let field = v.first().map(|v| v.field.clone()).unwrap_or_default();
            let message = v
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ");
            failure("INVALID_ARGUMENT", field, message)
        }
        DomainError::AlreadyExists { field, .. } => {
            let reason = err.reason();
            failure(reason, field, err.to_string())
        }
        DomainError::EtagMismatch { .. } => failure(
            "CONCURRENT_MODIFICATION",
            "",
            "the user was changed by someone else during the import; run the import again",
        ),
        other => failure(other.reason(), "", other.to_string()),
    }
}

/// Undoes the export's formula protection: `'=1` -> `=1`, `''x` -> `'x`.
pub fn unprotect_formula(value: &str) -> &str {
    match value.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) => rest,
        _ => value,
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "enabled" | "有効" => Some(true),
        "false" | "0" | "no" | "n" | "disabled" | "無効" => Some(false),
        _ => None,
    }
}

/// The writable fields of a row and, for updates, which of them it writes.
/// Empty cells never clear `email`, `external_id`, `enabled` or `status`
/// (seed 000: identifiers cannot be blanked by import); with
/// `skip_empty_values` no empty cell writes anything.
fn row_input(cells: &[(Column, String)], skip_empty: bool) -> Result<(UserInput, UserMask), RowFailure> {
    let mut input = UserInput::default();
    let mut mask = UserMask::default();
    for (column, value) in cells {
        let empty = value.is_empty();
        if empty
            && (skip_empty
                || matches!(
                    column,
                    Column::Email | Column::ExternalId | Column::Enabled | Column::Status
                ))
        {
            continue;
        }
        match *column {
            Column::Email => {
                input.email = value.trim().to_owned();
                mask.email = true;
            }
            Column::DisplayName => {
                input.display_name = value.clone();
                mask.display_name = true;
            }
            Column::Enabled => {
                let enabled = parse_bool(value)
                    .ok_or_else(|| failure("INVALID_ARGUMENT", "enabled", format!("{value:?} is not true or false")))?;
                input.enabled = Some(enabled);
                mask.enabled = true;
            }
            Column::Status => {
                let status: UserStatus = value
                    .parse()
                    .map_err(|e: String| failure("INVALID_ARGUMENT", "status", e))?;
                input.status = Some(status);
                mask.status = true;
            }
            Column::ExternalId => {
                input.external_id = value.clone();
                mask.external_id = true;
            }
            Column::Custom(slot) => {
                input.custom.push((custom_key(slot), value.clone()));
                mask.custom[slot] = true;
            }
            Column::Profile(field) => {
                input.profile.push((field, value.clone()));
                mask.profile[field as usize] = true;
            }
            Column::UserId | Column::ReadOnly | Column::Ignored => {}
        }
    }
    Ok((input, mask))
}

fn cell(cells: &[(Column, String)], column: Column) -> Option<&str> {
    cells.iter().find(|(c, _)| *c == column).map(|(_, v)| v.as_str())
}

impl<R: TenantRepository + UserRepository + ImportRepository> Importer<R> {
    /// Starts an import: checks the tenant, takes the FULL_SYNC lock when
    /// needed and records the job as RUNNING.
    pub(crate) async fn start(
        repo: Arc<R>,
        tenant: Tenant,
        options: ImportOptions,
        actor: String,
        limits: ImportLimits,
    ) -> Result<Self, DomainError> {
        let now = Timestamp::now();
        let job = ImportJob {
            tenant: tenant.id.clone(),
            id: Uuid::now_v7(),
            actor,
            options,
            state: ImportState::Running,
            start_time: now,
            end_time: None,
            counts: ImportCounts::default(),
            error: String::new(),
        };
        let mut locked = false;
        if job.options.mode == ImportMode::FullSync && !job.options.validate_only {
            let stale = Timestamp::from_unix_micros(now.unix_micros() - SYNC_LOCK_STALE.as_micros() as i64);
            match repo.acquire_sync_lock(&tenant.id, job.id, now, stale).await? {
                SyncLock::Acquired => {}
                SyncLock::TakenOver(previous) => {
                    let why = "the server running this import stopped before it finished";
                    repo.interrupt_import_jobs(now, Some((&tenant.id, previous)), why)
                        .await?;
                }
                SyncLock::Held(other) => {
                    return Err(DomainError::Conflict {
                        reason: "FULL_SYNC_ALREADY_RUNNING",
                        message: format!(
                            "another FULL_SYNC import of tenant {} is running (tenants/{}/importJobs/{}); wait for it to finish",
                            tenant.id, tenant.id, other
                        ),
                    });
                }
            }
            locked = true;
        }
        if let Err(e) = repo.insert_import_job(&job).await {
            if locked {
                let _ = repo.release_sync_lock(&tenant.id, job.id).await;
            }
            return Err(e);
        }
        let writer = (!job.options.validate_only).then(|| Writer::spawn(Arc::clone(&repo), tenant.id.clone(), job.id));
        let heartbeat = {
            let (repo, tenant, id) = (Arc::clone(&repo), tenant.id.clone(), job.id);
            // Renewed whatever the client does (sends, waits, reads nothing).
            let every = (limits.job_lease / 6).max(Duration::from_millis(100));
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = repo.touch_import_job(&tenant, id, Timestamp::now()).await {
                        tracing::warn!(error = %e, job = %id, "could not renew an import job's heartbeat");
                    }
                }
            }))
        };
        Ok(Self {
            repo,
            tenant,
            job,
            limits,
            input: Input::Unknown,
            pending: Vec::new(),
            seen_keys: SeenKeys::default(),
            seen_emails: SeenKeys::default(),
            seen_external: SeenKeys::default(),
            keep: HashSet::new(),
            dry_created: 0,
            locked,
            last_refresh: Instant::now(),
            last_save: Instant::now(),
            staged: VecDeque::new(),
            writer,
            _heartbeat: heartbeat,
        })
    }

    /// The job as it stands.
    pub fn job(&self) -> &ImportJob {
        &self.job
    }

    /// Feeds the next bytes of a CSV file.
    pub async fn push_chunk(&mut self, bytes: &[u8]) -> Result<Vec<RowResult>, DomainError> {
        if matches!(self.input, Input::Unknown) {
            let decoder =
                Box::new(CsvDecoder::new(self.job.options.encoding).with_max_record(self.limits.max_record_bytes));
            self.input = Input::Csv { decoder, columns: None };
        }
        let Input::Csv { decoder, .. } = &mut self.input else {
            return Err(DomainError::invalid(
                "chunk",
                "an import takes file chunks or parsed rows, not both",
            ));
        };
        let mut records = Vec::new();
        decoder.push(bytes, &mut records).map_err(file_error)?;
        self.take_records(records)?;
        self.flush_full_batches().await
    }

    /// Feeds parsed rows: each a list of (field name, value).
    pub async fn push_rows(&mut self, rows: Vec<Vec<(String, String)>>) -> Result<Vec<RowResult>, DomainError> {
        if matches!(self.input, Input::Unknown) {
            self.input = Input::Rows { next_line: 1 };
        }
        let Input::Rows { next_line } = &mut self.input else {
            return Err(DomainError::invalid(
                "rows",
                "an import takes file chunks or parsed rows, not both",
            ));
        };
        let key_column = Column::for_key(self.job.options.match_key);
        for row in rows {
            let line = *next_line;
            *next_line += 1;
            let mut cells = Vec::with_capacity(row.len());
            let mut bad = None;
            let size: usize = row.iter().map(|(name, value)| name.len() + value.len()).sum();
            if size > self.limits.max_record_bytes {
                bad = Some(failure(
                    "RECORD_TOO_LARGE",
                    "",
                    format!(
                        "the row holds {size} bytes of names and values, more than the {} a row may have",
                        self.limits.max_record_bytes
                    ),
                ));
            }
            for (name, value) in row {
                match resolve(&name, &self.job.options.column_mapping) {
                    Ok(column) if cells.iter().any(|(c, _)| *c == column) && column != Column::Ignored => {
                        bad = Some(failure(
                            "DUPLICATE_FIELD",
                            column.field(),
                            format!("{name:?} is given twice"),
                        ));
                    }
                    Ok(column) => cells.push((column, value)),
                    Err(message) => bad = Some(failure("UNKNOWN_FIELD", name, message)),
                }
            }
            let cells = match bad {
                Some(f) => Err(f),
                None if key_column != Column::UserId && cell(&cells, key_column).is_none() => Err(failure(
                    "MISSING_KEY",
                    key_column.field(),
                    format!("the row has no {} to match users by", key_column.field()),
                )),
                None => Ok(cells),
            };
            self.pending.push(Pending {
                line,
                cells,
                attempt: 0,
            });
        }
        self.flush_full_batches().await
    }

    fn take_records(&mut self, records: Vec<Record>) -> Result<(), DomainError> {
        let Input::Csv { columns, .. } = &mut self.input else {
            return Ok(());
        };
        for record in records {
            let Some(map) = columns.as_ref() else {
                let header = record.fields.map_err(|e| {
                    DomainError::invalid(
                        "file",
                        format!("line {}: the header row is unreadable: {}", record.line, e.message),
                    )
                })?;
                let map = ColumnMap::from_header(&header, &self.job.options.column_mapping, self.job.options.match_key)
                    .map_err(|m| DomainError::invalid("file", format!("line {}: {m}", record.line)))?;
                *columns = Some(map);
                continue;
            };
            let cells = match record.fields {
                Err(e) => Err(failure(e.reason, "", e.message)),
                Ok(fields) if fields.len() != map.columns.len() => Err(failure(
                    "RAGGED_ROW",
                    "",
                    format!(
                        "the row has {} values but the header has {} columns",
                        fields.len(),
                        map.columns.len()
                    ),
                )),
                Ok(fields) => Ok(map
                    .columns
                    .iter()
                    .zip(fields)
                    .filter(|(c, _)| !matches!(c, Column::Ignored | Column::ReadOnly))
                    .map(|(c, v)| (*c, unprotect_formula(&v).to_owned()))
                    .collect()),
            };
            self.pending.push(Pending {
                line: record.line,
                cells,
                attempt: 0,
            });
        }
        Ok(())
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
        if self.locked && self.last_refresh.elapsed() >= SYNC_LOCK_REFRESH {
            self.hold_sync_lock().await?;
        }
        if self.last_save.elapsed() >= JOB_SAVE_EVERY {
            self.repo.update_import_job(&self.job).await?;
            self.last_save = Instant::now();
        }
        Ok(())
    }

    /// Refreshes the FULL_SYNC lock; an error if another import took it over
    /// (this one stalled for longer than the lock lives).
    async fn hold_sync_lock(&mut self) -> Result<(), DomainError> {
        if !self
            .repo
            .refresh_sync_lock(&self.tenant.id, self.job.id, Timestamp::now())
            .await?
        {
            self.locked = false;
            return Err(DomainError::Conflict {
                reason: "FULL_SYNC_LOCK_LOST",
                message: format!(
                    "this FULL_SYNC stalled for over {}s and another import took over the tenant's lock; nothing was deleted",
                    SYNC_LOCK_STALE.as_secs()
                ),
            });
        }
        self.last_refresh = Instant::now();
        Ok(())
    }

    /// Ends the input: processes what is left, then (FULL_SYNC) deletes the
    /// users absent from the file, and records the job as SUCCEEDED.
    pub async fn finish(&mut self) -> Result<Vec<RowResult>, DomainError> {
        if matches!(self.input, Input::Unknown) {
            return Err(DomainError::invalid(
                "file",
                "the import received neither file bytes nor rows",
            ));
        }
        if let Input::Csv { decoder, .. } = &mut self.input {
            let mut records = Vec::new();
            decoder.finish(&mut records).map_err(file_error)?;
            self.take_records(records)?;
            if matches!(&self.input, Input::Csv { columns: None, .. }) {
                return Err(DomainError::invalid("file", "the file is empty: it has no header row"));
            }
        }
        let mut results = Vec::new();
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
        if self.job.options.mode == ImportMode::FullSync {
            results.extend(self.delete_absent().await?);
        }
        self.end(ImportState::Succeeded, None).await;
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
        let dry_run = self.job.options.validate_only;
        if self.locked {
            self.hold_sync_lock().await?;
        }
        let deleted = self
            .repo
            .delete_absent_users(&self.tenant.id, self.job.id, self.job.start_time, &self.keep, dry_run)
            .await?;
        let tenant = self.tenant.id.clone();
        Ok(deleted
            .into_iter()
            .map(|(id, email)| {
                self.job.counts.add(RowOutcome::Deleted);
                RowResult {
                    line: 0,
                    outcome: RowOutcome::Deleted,
                    user: format!("tenants/{tenant}/users/{id}"),
                    email,
                    failure: None,
                }
            })
            .collect())
    }

    /// Records how the import ended (FAILED or CANCELLED with `error`) and
    /// releases the FULL_SYNC lock. Never fails: the job record is best effort.
    pub async fn end(&mut self, state: ImportState, error: Option<String>) {
        if self.job.state != ImportState::Running {
            return;
        }
        // Writes still running are abandoned: a transaction in progress rolls
        // back (or has committed), and its rows were never reported.
        self.writer = None;
        self.staged.clear();
        self.job.state = state;
        self.job.end_time = Some(Timestamp::now());
        if let Some(error) = error {
            self.job.error = error;
        }
        if let Err(e) = self.repo.update_import_job(&self.job).await {
            tracing::warn!(error = %e, job = %self.job.resource_name(), "could not record the end of an import job");
        }
        if self.locked {
            self.locked = false;
            let _ = self.repo.release_sync_lock(&self.tenant.id, self.job.id).await;
        }
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
            let outcomes = self.dry_run_outcomes(&plan);
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
        let mut results: Vec<Option<RowResult>> = vec![None; batch.len()];
        let mut prepared = Vec::with_capacity(batch.len());
        let (mut email_keys, mut external_ids, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (i, row) in batch.into_iter().enumerate() {
            let fail = |f: RowFailure| Some(RowResult::failed(row.line, String::new(), f));
            let cells = match row.cells {
                Ok(cells) => cells,
                Err(f) => {
                    results[i] = fail(f);
                    continue;
                }
            };
            let key = match self.key_of(&cells) {
                Ok(key) => key,
                Err(f) => {
                    results[i] = fail(f);
                    continue;
                }
            };
            if row.attempt == 0
                && let Some(hash) = key_hash(&key)
                && let Some(first) = self.seen_keys.first_or_insert(hash, row.line)
            {
                let field = Column::for_key(self.job.options.match_key).field();
                results[i] = fail(failure(
                    "DUPLICATE_IN_FILE",
                    &field,
                    format!("the same {field} is on {first}"),
                ));
                continue;
            }
            match &key {
                Key::Email(e) => email_keys.push(e.key().to_owned()),
                Key::Id(id) => ids.push(*id),
                Key::External(x) => external_ids.push(x.clone()),
                Key::NewId => {}
            }
            // Secondary unique fields are looked up too, to report conflicts per row.
            if !matches!(key, Key::Email(_))
                && let Some(Ok(e)) = cell(&cells, Column::Email)
                    .filter(|v| !v.is_empty())
                    .map(|v| Email::parse("email", v.trim()))
            {
                email_keys.push(e.key().to_owned());
            }
            if let Some(x) = cell(&cells, Column::ExternalId).filter(|v| !v.is_empty()) {
                external_ids.push(x.to_owned());
            }
            prepared.push((
                i,
                Prepared {
                    line: row.line,
                    key,
                    cells,
                    attempt: row.attempt,
                },
            ));
        }

        let lookup = if prepared.is_empty() {
            Lookup::Done(Ok(Vec::new()))
        } else {
            email_keys.sort();
            email_keys.dedup();
            external_ids.sort();
            external_ids.dedup();
            let repo = Arc::clone(&self.repo);
            let tenant = self.tenant.id.clone();
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

    /// Decides a staged batch whose lookup is done: every row's outcome,
    /// leaving creates and updates to write.
    fn plan(&mut self, staged: Staged) -> Result<Plan, DomainError> {
        let Staged {
            mut results,
            prepared,
            lookup,
        } = staged;
        let existing = match lookup {
            Lookup::Done(found) => found?,
            Lookup::Running(_) => return Err(DomainError::storage("a batch was decided before its lookup ended")),
        };
        let by_id: HashMap<Uuid, &User> = existing.iter().map(|u| (u.id.0, u)).collect();
        let by_email: HashMap<&str, &User> = existing.iter().map(|u| (u.email.key(), u)).collect();
        let by_external: HashMap<&str, &User> = existing
            .iter()
            .filter_map(|u| u.external_id.as_deref().map(|x| (x, u)))
            .collect();

        let now = Timestamp::now();
        let mode = self.job.options.mode;
        let skip_empty = self.job.options.skip_empty_values;
        let mut plan = Plan {
            results: Vec::new(),
            create_results: Vec::new(),
            retries: Vec::new(),
            creates: Vec::new(),
            update_results: Vec::new(),
            update_retries: Vec::new(),
            updates: Vec::new(),
        };
        for (i, row) in prepared {
            let current = match &row.key {
                Key::Email(e) => by_email.get(e.key()).copied(),
                Key::Id(id) => by_id.get(id).copied(),
                Key::External(x) => by_external.get(x.as_str()).copied(),
                Key::NewId => None,
            };
            if let (None, Key::Id(id)) = (current, &row.key) {
                // Ids are the service's: a userid that names no user of
                // this tenant fails the same way whether it exists in
                // another tenant or nowhere (no oracle), and never becomes
                // the id of a new user.
                let f = failure(
                    "USER_NOT_FOUND",
                    "userid",
                    format!(
                        "no user of {} has id {id}; leave userid empty to create a new user",
                        self.tenant.id.resource_name()
                    ),
                );
                let email = cell(&row.cells, Column::Email).unwrap_or_default().to_owned();
                results[i] = Some(RowResult::failed(row.line, email, f));
                continue;
            }
            let outcome = match (current, mode) {
                (Some(user), ImportMode::CreateOnly) => Err(RowResult::done(row.line, RowOutcome::Skipped, user)),
                (None, ImportMode::UpdateOnly) => Err(RowResult {
                    line: row.line,
                    outcome: RowOutcome::Skipped,
                    user: String::new(),
                    email: cell(&row.cells, Column::Email).unwrap_or_default().to_owned(),
                    failure: None,
                }),
                (Some(user), _) => {
                    if mode == ImportMode::FullSync {
                        self.keep.insert(user.id.0);
                    }
                    Ok(self.update_of(user, &row, skip_empty))
                }
                (None, _) => Ok(self.create_of(&row, now)),
            };
            let planned = match outcome {
                Err(result) => {
                    results[i] = Some(result);
                    continue;
                }
                Ok(Err(f)) => {
                    let email = cell(&row.cells, Column::Email).unwrap_or_default().to_owned();
                    let user = current.map(|u| u.name().to_string()).unwrap_or_default();
                    results[i] = Some(RowResult {
                        line: row.line,
                        outcome: RowOutcome::Failed,
                        user,
                        email,
                        failure: Some(f),
                    });
                    continue;
                }
                Ok(Ok(planned)) => planned,
            };
            // Unique fields the row would take from another user, in the database or earlier in the file.
            if let Err(f) = self.check_unique(&planned, current, &by_email, &by_external, &row) {
                results[i] = Some(RowResult::failed(row.line, planned.email.as_str().to_owned(), f));
                continue;
            }
            match current {
                None => {
                    plan.create_results
                        .push((i, RowResult::done(row.line, RowOutcome::Created, &planned)));
                    let attempt = row.attempt + 1;
                    plan.retries
                        .push((attempt < ROW_ATTEMPTS).then_some((row.cells, attempt)));
                    plan.creates.push(planned);
                }
                Some(user) if planned == *user => {
                    results[i] = Some(RowResult::done(row.line, RowOutcome::Unchanged, user));
                }
                Some(user) => {
                    let mut updated = planned;
                    updated.update_time = now;
                    updated.revision = user.revision.next();
                    plan.update_results
                        .push((i, RowResult::done(row.line, RowOutcome::Updated, &updated)));
                    plan.updates.push((updated, user.revision));
                    let attempt = row.attempt + 1;
                    plan.update_retries
                        .push((attempt < ROW_ATTEMPTS).then_some((row.cells, attempt)));
                }
            }
        }

        plan.results = results;
        Ok(plan)
    }

    fn key_of(&self, cells: &[(Column, String)]) -> Result<Key, RowFailure> {
        let value = |column: Column| cell(cells, column).unwrap_or_default().trim();
        match self.job.options.match_key {
            MatchKey::Email => Email::parse("email", value(Column::Email))
                .map(Key::Email)
                .map_err(|v| failure("INVALID_ARGUMENT", v.field, v.description)),
            MatchKey::UserId => match value(Column::UserId) {
                "" => Ok(Key::NewId),
                id => Uuid::parse_str(id).map(Key::Id).map_err(|_| {
                    failure(
                        "INVALID_ARGUMENT",
                        "userid",
                        format!("{id:?} is not a user id (a UUID)"),
                    )
                }),
            },
            MatchKey::ExternalId => match cell(cells, Column::ExternalId).unwrap_or_default() {
                "" => Err(failure(
                    "INVALID_ARGUMENT",
                    "external_id",
                    "external_id is empty; it is the match key",
                )),
                x => Ok(Key::External(x.to_owned())),
            },
        }
    }

    fn update_of(&self, user: &User, row: &Prepared, skip_empty: bool) -> Result<User, RowFailure> {
        let (input, mask) = row_input(&row.cells, skip_empty)?;
        let mut updated = user.clone();
        updated
            .write(input, &mask, &self.tenant.custom_attributes)
            .map_err(row_failure)?;
        Ok(updated)
    }

    fn create_of(&self, row: &Prepared, now: Timestamp) -> Result<User, RowFailure> {
        let (input, _) = row_input(&row.cells, false)?;
        User::create(self.tenant.id.clone(), input, &self.tenant.custom_attributes, now).map_err(row_failure)
    }

    /// The row's email and external id must not belong to another user, in
    /// the database or on an earlier line.
    fn check_unique(
        &mut self,
        planned: &User,
        current: Option<&User>,
        by_email: &HashMap<&str, &User>,
        by_external: &HashMap<&str, &User>,
        row: &Prepared,
    ) -> Result<(), RowFailure> {
        let line = row.line;
        let other = |found: Option<&&User>| found.is_some_and(|u| u.id != planned.id);
        if other(by_email.get(planned.email.key())) {
            return Err(failure(
                "EMAIL_ALREADY_EXISTS",
                "email",
                format!("{} belongs to another user of the tenant", planned.email),
            ));
        }
        if let Some(x) = &planned.external_id
            && other(by_external.get(x.as_str()))
        {
            return Err(failure(
                "EXTERNAL_ID_ALREADY_EXISTS",
                "external_id",
                format!("external id {x:?} belongs to another user of the tenant"),
            ));
        }
        let key = self.job.options.match_key;
        let email_changes = current.is_none_or(|c| c.email.key() != planned.email.key());
        // A row running again was checked against the file the first time.
        if key != MatchKey::Email && email_changes && row.attempt == 0 {
            let hash = xxh3_64(planned.email.key().as_bytes());
            if let Some(first) = self.seen_emails.first_or_insert(hash, line) {
                return Err(failure(
                    "DUPLICATE_IN_FILE",
                    "email",
                    format!("the same email is on {first}"),
                ));
            }
        }
        if key != MatchKey::ExternalId
            && row.attempt == 0
            && let Some(x) = &planned.external_id
            && current.is_none_or(|c| c.external_id.as_ref() != Some(x))
        {
            let hash = xxh3_64(x.as_bytes());
            if let Some(first) = self.seen_external.first_or_insert(hash, line) {
                return Err(failure(
                    "DUPLICATE_IN_FILE",
                    "external_id",
                    format!("the same external_id is on {first}"),
                ));
            }
        }
        Ok(())
    }

    /// A dry run's write outcomes: seats are taken on paper, in file order.
    fn dry_run_outcomes(&mut self, plan: &Plan) -> Vec<RepoResult<()>> {
        let limit = u64::from(self.tenant.seat_limit);
        let mut outcomes = Vec::with_capacity(plan.writes());
        for _ in &plan.creates {
            if limit != 0 && u64::from(self.tenant.user_count) + self.dry_created >= limit {
                outcomes.push(Err(DomainError::SeatLimitExceeded {
                    tenant: self.tenant.id.to_string(),
                    limit: self.tenant.seat_limit,
                }));
            } else {
                self.dry_created += 1;
                outcomes.push(Ok(()));
            }
        }
        outcomes.extend(plan.updates.iter().map(|_| Ok(())));
        outcomes
    }

    /// The results of a written plan, in file order; counts them.
    fn complete(&mut self, plan: Plan, outcomes: Vec<RepoResult<()>>) -> Vec<RowResult> {
        let Plan {
            mut results,
            create_results,
            mut retries,
            update_results,
            update_retries,
            ..
        } = plan;
        retries.extend(update_retries);
        for (((i, done), written), retry) in create_results
            .into_iter()
            .chain(update_results)
            .zip(outcomes)
            .zip(retries)
        {
            results[i] = Some(match (written, retry) {
                (Ok(()), _) => done,
                // Another writer got there between this row's lookup and its
                // write: it created the same user (UPSERT: the row becomes an
                // update of that user, or unchanged; CREATE_ONLY: skipped),
                // or changed the user (the row applies to the new state, as
                // an UpdateUser without an etag does). The row runs again.
                (Err(DomainError::AlreadyExists { .. } | DomainError::EtagMismatch { .. }), Some((cells, attempt))) => {
                    self.pending.push(Pending {
                        line: done.line,
                        cells: Ok(cells),
                        attempt,
                    });
                    continue;
                }
                (Err(e), _) => RowResult::failed(done.line, done.email, row_failure(e)),
            });
        }
        let results: Vec<RowResult> = results.into_iter().flatten().collect();
        for r in &results {
            self.job.counts.add(r.outcome);
        }
        results
    }
}

fn key_hash(key: &Key) -> Option<u64> {
    match key {
        Key::Email(e) => Some(xxh3_64(e.key().as_bytes())),
        Key::Id(id) => Some(xxh3_64(id.as_bytes())),
        Key::External(x) => Some(xxh3_64(x.as_bytes())),
        Key::NewId => None,
    }
}

impl RowResult {
    fn done(line: u64, outcome: RowOutcome, user: &User) -> Self {
        Self {
            line,
            outcome,
            user: user.name().to_string(),
            email: user.email.as_str().to_owned(),
            failure: None,
        }
    }

    fn failed(line: u64, email: String, failure: RowFailure) -> Self {
        Self {
            line,
            outcome: RowOutcome::Failed,
            user: String::new(),
            email,
            failure: Some(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn formula_protection_is_undone_exactly() {
        assert_eq!(unprotect_formula("'=SUM(A1)"), "=SUM(A1)");
        assert_eq!(unprotect_formula("'+81 3"), "+81 3");
        assert_eq!(unprotect_formula("''=x"), "'=x");
        assert_eq!(unprotect_formula("'abc"), "'abc");
        assert_eq!(unprotect_formula("'"), "'");
        assert_eq!(unprotect_formula("=raw"), "=raw");
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("無効"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
