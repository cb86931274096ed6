//! Group commit for imports. Decided batches ([`Plan`]s) are written by a
//! task of their own, so the database writes while the next rows are parsed
//! and decided. One transaction takes batches for as long as they keep coming,
//! up to [`GROUP_ROWS`] writes: whatever queued up while it wrote goes into it
//! next. A database that is slow to commit thus gets fewer, larger
//! transactions instead of falling behind; every commit rewrites each index
//! page it touched, so on SQLite 1M new users took 20-23 s in transactions of
//! about 2,000 rows and 14-17 s in transactions of 10,000 to 20,000.
//!
//! A written batch keeps only its results until the commit (the store keeps
//! what it needs to redo the transaction row by row), so the transaction's
//! size does not cost the users' memory. Results leave only after their
//! transaction committed. The price of large transactions: one holds
//! SQLite's write lock (on PostgreSQL, the tenant's row, for its seats) for
//! about 0.3-0.5 s on one 2-core machine and 0.85 s on a slower one (1M
//! new users on SQLite: 69 transactions in 58.6 s). So on SQLite a
//! single-user write that waits for the writer ends the group at its next
//! step ([`ImportRepository::writer_wanted`]): it waits for one step (at
//! most [`MAX_QUEUED`] batches), not for a whole transaction. On PostgreSQL
//! only writes that change the tenant or its seat count wait for the group.

use crate::event::Origin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use uuid::Uuid;

use super::GROUP_ROWS;
use super::plan::Plan;
use crate::error::DomainError;
use crate::repo::{ImportRepository, ImportWrite, RepoResult};
use crate::tenant::TenantId;

/// How long an import that ended waits for its writer to finish.
const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
/// Plans handed over but not yet written: bounds the users held in memory
/// and how far the decisions run ahead of the database (at 1M new users on
/// SQLite, 4 kept the writer as busy as 8, with 5-10 MiB less peak RSS).
const MAX_QUEUED: usize = 4;

/// Each plan of a committed group with its write outcomes (creates, then updates).
pub(super) type Written = Vec<(Plan, Vec<RepoResult<()>>)>;

/// The writer task of one import. Dropping it abandons what is not written:
/// a transaction in progress rolls back.
pub(super) struct Writer {
    /// `None` once the import ended: the task writes what it has and stops.
    plans: Option<mpsc::Sender<Plan>>,
    done: mpsc::UnboundedReceiver<RepoResult<Written>>,
    /// Plans handed over whose results were not taken back yet.
    outstanding: usize,
    task: JoinHandle<()>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Writer {
    pub(super) fn spawn<R: ImportRepository>(repo: Arc<R>, tenant: TenantId, job: Uuid, origin: Origin) -> Self {
        let (plans, inbox) = mpsc::channel(MAX_QUEUED);
        let (finished, done) = mpsc::unbounded_channel();
        // The import's span (its RPC's) is the parent of each batch's span.
        let task = tokio::spawn(run(repo, tenant, job, origin, inbox, finished).in_current_span());
        Self {
            plans: Some(plans),
            done,
            outstanding: 0,
            task,
        }
    }

    /// Takes no more plans and waits until the task has written what it was
    /// handed and stopped (at most [`SETTLE_WITHIN`]; then what is left is
    /// abandoned and a transaction in progress rolls back); returns the
    /// groups committed meanwhile. A commit cannot be called back once it is
    /// on its way to the database, so an import that ends lets its last
    /// transactions land, reports them, and records the job after them: the
    /// job's counts are final and nothing of the import is written later.
    pub(super) async fn settle(mut self) -> Vec<Written> {
        self.plans = None;
        let mut groups = Vec::new();
        let collect = async {
            // The channel closes when the task has stopped.
            while let Some(group) = self.done.recv().await {
                match group {
                    Ok(group) => groups.push(group),
                    Err(_) => break,
                }
            }
        };
        if tokio::time::timeout(SETTLE_WITHIN, collect).await.is_err() {
            self.task.abort();
        }
        let _ = (&mut self.task).await;
        groups
    }

    /// Whether plans are being written or wait for their results to be taken.
    pub(super) fn busy(&self) -> bool {
        self.outstanding > 0
    }

    /// Whether a plan can be handed over without waiting.
    pub(super) fn has_room(&self) -> bool {
        self.plans.as_ref().is_some_and(|p| p.capacity() > 0)
    }

    /// Hands a plan over; returns the groups committed meanwhile. Waits for
    /// the database when [`MAX_QUEUED`] plans wait to be written.
    pub(super) async fn submit(&mut self, plan: Plan) -> RepoResult<Vec<Written>> {
        let mut finished = Vec::new();
        while let Ok(group) = self.done.try_recv() {
            finished.push(self.taken(group)?);
        }
        let sent = match &self.plans {
            Some(plans) => plans.send(plan).await.is_ok(),
            None => false,
        };
        if !sent {
            // The task stopped: its error, if it sent one, says why.
            while let Ok(group) = self.done.try_recv() {
                group?;
            }
            return Err(gone());
        }
        self.outstanding += 1;
        Ok(finished)
    }

    /// Waits for the next committed group. Cancel-safe. Never returns while
    /// nothing is outstanding.
    pub(super) async fn next(&mut self) -> RepoResult<Written> {
        if self.outstanding == 0 {
            return std::future::pending().await;
        }
        let group = self.done.recv().await.ok_or_else(gone)?;
        self.taken(group)
    }

    fn taken(&mut self, group: RepoResult<Written>) -> RepoResult<Written> {
        let group = group?;
        self.outstanding -= group.len();
        Ok(group)
    }
}

fn gone() -> DomainError {
    DomainError::storage("the import's writer stopped unexpectedly")
}

async fn run<R: ImportRepository>(
    repo: Arc<R>,
    tenant: TenantId,
    job: Uuid,
    origin: Origin,
    mut inbox: mpsc::Receiver<Plan>,
    finished: mpsc::UnboundedSender<RepoResult<Written>>,
) {
    while let Some(first) = inbox.recv().await {
        let span = tracing::info_span!(
            "import.batch",
            import.rows = tracing::field::Empty,
            import.created = tracing::field::Empty,
            import.updated = tracing::field::Empty,
            import.failed = tracing::field::Empty,
        );
        let written = write_group(&*repo, &tenant, job, &origin, first, &mut inbox)
            .instrument(span.clone())
            .await;
        if let Ok(written) = &written {
            record_batch(&span, written);
        }
        let failed = written.is_err();
        if finished.send(written).is_err() || failed {
            return;
        }
    }
}

/// Puts a committed group's counts on its span.
fn record_batch(span: &tracing::Span, written: &Written) {
    if span.is_disabled() {
        return;
    }
    let (mut created, mut updated, mut failed) = (0u64, 0u64, 0u64);
    for (plan, outcomes) in written {
        for (i, outcome) in outcomes.iter().enumerate() {
            match (outcome.is_ok(), i < plan.create_count()) {
                (true, true) => created += 1,
                (true, false) => updated += 1,
                (false, _) => failed += 1,
            }
        }
    }
    span.record("import.rows", created + updated + failed);
    span.record("import.created", created);
    span.record("import.updated", updated);
    span.record("import.failed", failed);
}

/// Writes `first` and the plans queued behind it in one transaction, for as
/// long as they keep coming and the transaction has room, then commits and
/// gives each plan its outcomes.
async fn write_group<R: ImportRepository>(
    repo: &R,
    tenant: &TenantId,
    job: Uuid,
    origin: &Origin,
    first: Plan,
    inbox: &mut mpsc::Receiver<Plan>,
) -> RepoResult<Written> {
    let mut txn: Option<R::ImportWrite> = None;
    // Plans in the order written, a step (one write call) at a time.
    let mut steps: Vec<Vec<Plan>> = Vec::new();
    let mut rows = 0;
    let mut step = vec![first];
    loop {
        // Whatever queued up meanwhile joins this step, unless a single-user
        // write waits: then the step is one plan, and the commit follows.
        let mut step_rows: usize = step.iter().map(Plan::writes).sum();
        while rows + step_rows < GROUP_ROWS
            && !repo.writer_wanted()
            && let Ok(plan) = inbox.try_recv()
        {
            step_rows += plan.writes();
            step.push(plan);
        }
        if step.is_empty() {
            break;
        }
        let creates: Vec<_> = step.iter_mut().flat_map(|p| std::mem::take(&mut p.creates)).collect();
        let updates: Vec<_> = step.iter_mut().flat_map(|p| std::mem::take(&mut p.updates)).collect();
        if step_rows > 0 {
            let txn = match txn.as_mut() {
                Some(txn) => txn,
                None => txn.insert(repo.begin_import_write(tenant, job, origin).await?),
            };
            txn.write(&creates, &updates).await?;
        }
        rows += step_rows;
        steps.push(std::mem::take(&mut step));
        // A single-user write waits for the writer: commit now and let it
        // have its turn (the next group queues behind it).
        if rows >= GROUP_ROWS || (rows > 0 && repo.writer_wanted()) {
            break;
        }
    }
    let outcomes = match txn {
        Some(txn) => txn.commit().await?,
        None => Vec::new(),
    };
    if outcomes.len() != rows {
        return Err(DomainError::storage(
            "the store returned a wrong number of write outcomes",
        ));
    }
    // Each step's outcomes come creates first, then updates: take each plan's
    // creates outcomes first, then hand out the updates outcomes in plan order.
    let mut outcomes = outcomes.into_iter();
    let mut written = Vec::new();
    for step in steps {
        let creates: Vec<Vec<RepoResult<()>>> = step
            .iter()
            .map(|p| outcomes.by_ref().take(p.create_count()).collect())
            .collect();
        for (plan, mut mine) in step.into_iter().zip(creates) {
            mine.extend(outcomes.by_ref().take(plan.update_count()));
            written.push((plan, mine));
        }
    }
    Ok(written)
}
