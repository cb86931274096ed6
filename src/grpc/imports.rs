//! `ImportUsers`, `GetImportJob`, `ListImportJobs`: protobuf <-> the domain's
//! import engine. The stream is driven from a spawned task that sends results
//! through a bounded channel: a client that stops reading stops the import
//! from reading its file (backpressure), and one that goes away cancels it.

use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};
use userdir_domain::DomainError;
use userdir_domain::import::engine::Importer;
use userdir_domain::import::{
    DeclaredEncoding, FileFormat, ImportJob, ImportMode, ImportOptions, ImportState, MatchKey, RowOutcome, RowResult,
};
use userdir_domain::repo::{ImportRepository, TenantRepository, UserRepository};

use super::convert::timestamp;
use super::ending::Ending;
use super::status::to_status_with;
use super::to_status;
use crate::pb;
use crate::pb::import_users_request::Payload;
use crate::pb::import_users_response::Payload as Out;
use crate::telemetry::metrics::Metrics;
use tracing::Instrument as _;

/// How long rows short of a full batch wait for more input before they go
/// on by themselves (a client that waits for results before sending more).
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);
/// Response messages buffered ahead of a slow reader.
const RESPONSE_BUFFER: usize = 4;
/// Row results per response message: a transaction's results (up to 20,000
/// rows) or a FULL_SYNC's deletions (any number) go out in messages of about
/// 100 KiB, well under the 4 MiB that gRPC clients accept by default.
const RESULTS_PER_MESSAGE: usize = 1000;

/// Where an import's responses go; counts the rows it reports.
pub struct ImportSender {
    tx: mpsc::Sender<Result<pb::ImportUsersResponse, Status>>,
    metrics: Metrics,
    started: std::time::Instant,
}

impl ImportSender {
    async fn send(
        &self,
        message: Result<pb::ImportUsersResponse, Status>,
    ) -> Result<(), mpsc::error::SendError<Result<pb::ImportUsersResponse, Status>>> {
        self.tx.send(message).await
    }
}

/// Reads the options message that must open the stream.
pub async fn read_options(inbound: &mut Streaming<pb::ImportUsersRequest>) -> Result<(String, ImportOptions), Status> {
    let first = inbound.message().await?;
    match first.and_then(|m| m.payload) {
        Some(Payload::Options(options)) => import_options(options).map_err(to_status),
        _ => Err(to_status(DomainError::invalid(
            "options",
            "the first message of ImportUsers must carry the options",
        ))),
    }
}

/// Starts the task that feeds `inbound` to `importer`; returns the response channel.
pub fn spawn_import<R>(
    importer: Importer<R>,
    inbound: Streaming<pb::ImportUsersRequest>,
    mut ending: Ending,
    metrics: Metrics,
) -> mpsc::Receiver<Result<pb::ImportUsersResponse, Status>>
where
    R: TenantRepository + UserRepository + ImportRepository,
{
    let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
    let tx = ImportSender {
        tx,
        metrics,
        started: std::time::Instant::now(),
    };
    let task = async move {
        let mut importer = importer;
        let run = run_import(&mut importer, inbound, &tx);
        tokio::select! {
            () = run => {}
            // A shutdown's grace period over, or the caller's deadline
            // passed: the open batch rolls back, the lock is released, the
            // job says why.
            why = ending.reached() => stop(&mut importer, &tx, ImportState::Cancelled, why).await,
        }
    };
    // Under the call's span: the import's batches are its children.
    tokio::spawn(task.in_current_span());
    rx
}

/// What woke the import's loop.
enum Event {
    /// A request message, the end of the input, or a broken stream.
    Input(Result<Option<pb::ImportUsersRequest>, Status>),
    /// Rows already read moved along (a partial batch after the linger, or
    /// a batch decided or committed) with the results that produced.
    Moved(Result<Vec<RowResult>, DomainError>),
    /// No new row for the idle timeout.
    Idle,
}

async fn run_import<R>(importer: &mut Importer<R>, mut inbound: Streaming<pb::ImportUsersRequest>, tx: &ImportSender)
where
    R: TenantRepository + UserRepository + ImportRepository,
{
    loop {
        // Input first, so that the lookup of a staged batch overlaps the
        // reading of the next; while no input is waiting, batches already
        // read move along and their results go out as soon as they commit.
        let event = tokio::select! {
            biased;
            received = inbound.message() => Event::Input(received),
            // The client paused: rows short of a batch go on by themselves.
            () = tokio::time::sleep(LINGER), if importer.has_partial() => Event::Moved(importer.flush_partial().await),
            // Idle only while nothing is being written for it: a client may
            // wait for every result before it sends `end`.
            () = tokio::time::sleep_until(importer.idle_deadline()), if !importer.writing() => Event::Idle,
            settled = importer.settle(), if importer.writing() => Event::Moved(settled),
        };
        let received = match event {
            Event::Input(received) => received,
            Event::Moved(moved) => {
                importer.note_progress();
                if !deliver(importer, tx, moved).await {
                    return;
                }
                continue;
            }
            Event::Idle => {
                let err = DomainError::Conflict {
                    reason: "IMPORT_IDLE_TIMEOUT",
                    message: format!(
                        "no new row arrived for {}s, so the import was cancelled (a FULL_SYNC deletes nothing); \
                         rows already reported stay committed. Send the file without pauses, then an end message",
                        importer.idle_timeout().as_secs()
                    ),
                };
                return stop(importer, tx, ImportState::Cancelled, err).await;
            }
        };
        let message = match received {
            Ok(Some(message)) => message,
            Ok(None) => {
                let err = DomainError::Conflict {
                    reason: "IMPORT_END_MISSING",
                    message: "the request stream closed without an end message, so the file may be cut short: \
                              the import was cancelled. Rows reported stay committed, nothing else was written. \
                              Send an end message after the last data"
                        .into(),
                };
                return stop(importer, tx, ImportState::Cancelled, err).await;
            }
            Err(status) if status.code() == Code::OutOfRange => {
                // tonic's decoder refused a message over the size limit.
                let err = DomainError::Exhausted {
                    reason: "MESSAGE_TOO_LARGE",
                    message: format!(
                        "a request message is larger than the server accepts ({}); send the file in smaller chunks \
                         (the CLI sends 64 KiB) or fewer rows per message",
                        status.message()
                    ),
                };
                return stop(importer, tx, ImportState::Failed, err).await;
            }
            Err(status) => {
                let err = DomainError::Conflict {
                    reason: "IMPORT_STREAM_BROKEN",
                    message: format!("the client's stream broke off: {}", status.message()),
                };
                return stop(importer, tx, ImportState::Cancelled, err).await;
            }
        };
        let step = match message.payload {
            Some(Payload::Chunk(bytes)) => importer.push_chunk(&bytes).await,
            Some(Payload::Rows(rows)) => {
                importer
                    .push_rows(rows.rows.into_iter().map(|r| r.fields.into_iter().collect()).collect())
                    .await
            }
            Some(Payload::End(_)) => break,
            Some(Payload::Options(_)) => Err(DomainError::invalid("options", "options may only be sent once, first")),
            None => Ok(Vec::new()),
        };
        if !deliver(importer, tx, step).await {
            return;
        }
    }
    // A workbook's rows are read only now (its index is at its end), a
    // batch at a time, their results sent as they come.
    loop {
        match importer.read_rest().await {
            Ok(Some(results)) => {
                if !deliver(importer, tx, Ok(results)).await {
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => return fail(importer, tx, e).await,
        }
    }
    let ended = match importer.end_input().await {
        Ok(results) => results,
        Err(e) => return fail(importer, tx, e).await,
    };
    if !send_results(tx, ended).await {
        let _ = importer
            .end(ImportState::Cancelled, Some("the client went away".into()))
            .await;
        return;
    }
    match importer.conclude().await {
        Ok(results) => {
            if !send_results(tx, results).await {
                return;
            }
            tx.metrics
                .import_finished(importer.job().counts.rows, tx.started.elapsed());
            let summary = pb::ImportUsersResponse {
                payload: Some(Out::Summary(job_to_pb(importer.job()))),
            };
            let _ = tx.send(Ok(summary)).await;
        }
        Err(e) => fail(importer, tx, e).await,
    }
}

/// Sends the results of a step, or ends the import on its error; `false`
/// when the import is over (failed, or the client went away).
async fn deliver<R>(importer: &mut Importer<R>, tx: &ImportSender, step: Result<Vec<RowResult>, DomainError>) -> bool
where
    R: TenantRepository + UserRepository + ImportRepository,
{
    match step {
        Ok(results) => {
            if send_results(tx, results).await {
                return true;
            }
            // Nobody listens for what the writer still commits.
            let _ = importer
                .end(ImportState::Cancelled, Some("the client went away".into()))
                .await;
            false
        }
        Err(e) => {
            fail(importer, tx, e).await;
            false
        }
    }
}

async fn fail<R>(importer: &mut Importer<R>, tx: &ImportSender, err: DomainError)
where
    R: TenantRepository + UserRepository + ImportRepository,
{
    stop(importer, tx, ImportState::Failed, err).await;
}

/// Ends the import as `state` and the call with `err`, naming the job and
/// what was committed: an import that did not finish never ends in OK.
async fn stop<R>(importer: &mut Importer<R>, tx: &ImportSender, state: ImportState, err: DomainError)
where
    R: TenantRepository + UserRepository + ImportRepository,
{
    // Rows the writer still committed are reported before the error.
    // The job record says what the caller is told, never the database's own text.
    let written = importer.end(state, Some(err.public_message())).await;
    if !send_results(tx, written).await {
        return;
    }
    let job = importer.job();
    let c = &job.counts;
    let committed = c.created + c.updated + c.deleted;
    let context = format!(
        " (import job {}: {} rows reported, {committed} of them written; rows reported stay)",
        job.resource_name(),
        c.rows
    );
    let extra = [
        ("import_job", job.resource_name()),
        ("rows_reported", c.rows.to_string()),
        ("rows_written", committed.to_string()),
    ];
    let _ = tx.send(Err(to_status_with(err, &context, &extra))).await;
}

/// Sends row results in messages of at most [`RESULTS_PER_MESSAGE`]; `false`
/// when the client went away.
async fn send_results(tx: &ImportSender, results: Vec<RowResult>) -> bool {
    count_outcomes(&tx.metrics, &results);
    let mut results = results.into_iter().peekable();
    while results.peek().is_some() {
        let results = results.by_ref().take(RESULTS_PER_MESSAGE).map(row_to_pb).collect();
        let message = pb::ImportUsersResponse {
            payload: Some(Out::Results(pb::ImportRowResults { results })),
        };
        if tx.send(Ok(message)).await.is_err() {
            return false;
        }
    }
    true
}

/// Adds reported rows to the metrics, by outcome.
fn count_outcomes(metrics: &Metrics, results: &[RowResult]) {
    let mut counts: Vec<(RowOutcome, u64)> = Vec::new();
    for r in results {
        match counts.iter_mut().find(|(outcome, _)| *outcome == r.outcome) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.outcome, 1)),
        }
    }
    for (outcome, n) in counts {
        metrics.import_rows(outcome_name(outcome), n);
    }
}

fn outcome_name(outcome: RowOutcome) -> &'static str {
    match outcome {
        RowOutcome::Created => "created",
        RowOutcome::Updated => "updated",
        RowOutcome::Unchanged => "unchanged",
        RowOutcome::Deleted => "deleted",
        RowOutcome::Skipped => "skipped",
        RowOutcome::Failed => "failed",
        RowOutcome::Protected => "protected",
    }
}

fn row_to_pb(r: RowResult) -> pb::ImportRowResult {
    let outcome = match r.outcome {
        RowOutcome::Created => pb::ImportOutcome::Created,
        RowOutcome::Updated => pb::ImportOutcome::Updated,
        RowOutcome::Unchanged => pb::ImportOutcome::Unchanged,
        RowOutcome::Deleted => pb::ImportOutcome::Deleted,
        RowOutcome::Skipped => pb::ImportOutcome::Skipped,
        RowOutcome::Failed => pb::ImportOutcome::Failed,
        RowOutcome::Protected => pb::ImportOutcome::Protected,
    };
    let failure = r.failure.unwrap_or_default();
    pb::ImportRowResult {
        line: i64::try_from(r.line).unwrap_or(i64::MAX),
        outcome: outcome as i32,
        user: r.user,
        email: r.email,
        reason: failure.reason,
        field: failure.field,
        message: failure.message,
    }
}

/// The tenant and validated options of an import.
pub fn import_options(o: pb::ImportOptions) -> Result<(String, ImportOptions), DomainError> {
    let mode = match pb::ImportMode::try_from(o.mode) {
        Ok(pb::ImportMode::CreateOnly) => ImportMode::CreateOnly,
        Ok(pb::ImportMode::UpdateOnly) => ImportMode::UpdateOnly,
        Ok(pb::ImportMode::Upsert) => ImportMode::Upsert,
        Ok(pb::ImportMode::FullSync) => ImportMode::FullSync,
        Ok(pb::ImportMode::Unspecified) | Err(_) => {
            return Err(DomainError::invalid(
                "options.mode",
                "mode is required: IMPORT_MODE_CREATE_ONLY, IMPORT_MODE_UPDATE_ONLY, IMPORT_MODE_UPSERT or IMPORT_MODE_FULL_SYNC",
            ));
        }
    };
    let match_key = match pb::MatchKey::try_from(o.match_key) {
        Ok(pb::MatchKey::Unspecified | pb::MatchKey::Email) => MatchKey::Email,
        Ok(pb::MatchKey::UserId) => MatchKey::UserId,
        Ok(pb::MatchKey::ExternalId) => MatchKey::ExternalId,
        Err(_) => {
            return Err(DomainError::invalid(
                "options.match_key",
                format!("{} is not a MatchKey", o.match_key),
            ));
        }
    };
    let encoding = match pb::ImportEncoding::try_from(o.encoding) {
        Ok(pb::ImportEncoding::Unspecified | pb::ImportEncoding::Auto) => DeclaredEncoding::Auto,
        Ok(pb::ImportEncoding::Utf8) => DeclaredEncoding::Utf8,
        Ok(pb::ImportEncoding::ShiftJis) => DeclaredEncoding::ShiftJis,
        Err(_) => {
            return Err(DomainError::invalid(
                "options.encoding",
                format!("{} is not an ImportEncoding", o.encoding),
            ));
        }
    };
    let format = match pb::ImportFormat::try_from(o.format) {
        Ok(pb::ImportFormat::Unspecified | pb::ImportFormat::Auto) => FileFormat::Auto,
        Ok(pb::ImportFormat::Csv) => FileFormat::Csv,
        Ok(pb::ImportFormat::Xlsx) => FileFormat::Xlsx,
        Ok(pb::ImportFormat::Xls) => FileFormat::Xls,
        Err(_) => {
            return Err(DomainError::invalid(
                "options.format",
                format!("{} is not an ImportFormat", o.format),
            ));
        }
    };
    let options = ImportOptions {
        mode,
        match_key,
        keep_admins: o.keep_admins,
        skip_empty_values: o.skip_empty_values,
        encoding,
        column_mapping: o.column_mapping.into_iter().collect(),
        validate_only: o.validate_only,
        allow_delete_all: o.allow_delete_all,
        max_delete_percent: o.max_delete_percent.min(100),
        format,
        sheet: o.sheet,
    };
    Ok((o.parent, options))
}

fn options_to_pb(parent: String, o: &ImportOptions) -> pb::ImportOptions {
    pb::ImportOptions {
        parent,
        mode: match o.mode {
            ImportMode::CreateOnly => pb::ImportMode::CreateOnly,
            ImportMode::UpdateOnly => pb::ImportMode::UpdateOnly,
            ImportMode::Upsert => pb::ImportMode::Upsert,
            ImportMode::FullSync => pb::ImportMode::FullSync,
        } as i32,
        match_key: match o.match_key {
            MatchKey::Email => pb::MatchKey::Email,
            MatchKey::UserId => pb::MatchKey::UserId,
            MatchKey::ExternalId => pb::MatchKey::ExternalId,
        } as i32,
        keep_admins: o.keep_admins,
        skip_empty_values: o.skip_empty_values,
        encoding: match o.encoding {
            DeclaredEncoding::Auto => pb::ImportEncoding::Auto,
            DeclaredEncoding::Utf8 => pb::ImportEncoding::Utf8,
            DeclaredEncoding::ShiftJis => pb::ImportEncoding::ShiftJis,
        } as i32,
        column_mapping: o.column_mapping.clone().into_iter().collect(),
        validate_only: o.validate_only,
        allow_delete_all: o.allow_delete_all,
        max_delete_percent: o.max_delete_percent,
        format: match o.format {
            FileFormat::Auto => pb::ImportFormat::Auto,
            FileFormat::Csv => pb::ImportFormat::Csv,
            FileFormat::Xlsx => pb::ImportFormat::Xlsx,
            FileFormat::Xls => pb::ImportFormat::Xls,
        } as i32,
        sheet: o.sheet.clone(),
    }
}

pub fn job_to_pb(job: &ImportJob) -> pb::ImportJob {
    let c = &job.counts;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::ImportJob {
        name: job.resource_name(),
        actor: job.actor.clone(),
        options: Some(options_to_pb(job.tenant.resource_name(), &job.options)),
        state: match job.state {
            ImportState::Running => pb::ImportJobState::Running,
            ImportState::Succeeded => pb::ImportJobState::Succeeded,
            ImportState::Failed => pb::ImportJobState::Failed,
            ImportState::Cancelled => pb::ImportJobState::Cancelled,
            ImportState::Interrupted => pb::ImportJobState::Interrupted,
        } as i32,
        start_time: timestamp(job.start_time),
        end_time: job.end_time.and_then(timestamp),
        counts: Some(pb::ImportCounts {
            rows: n(c.rows),
            created: n(c.created),
            updated: n(c.updated),
            unchanged: n(c.unchanged),
            deleted: n(c.deleted),
            skipped: n(c.skipped),
            failed: n(c.failed),
            protected: n(c.protected),
        }),
        error: job.error.clone(),
    }
}
