//! One tenant's hub: a task that reads the tenant's new events once per
//! batch, as they commit, and broadcasts each batch to the tenant's
//! watchers. It runs while a watcher holds it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast;

use super::{Batch, FeedOptions, FeedStats, READ_BATCH};
use crate::event_filter::EventFilter;
use crate::repo::{EventOrder, EventQuery, EventRepository};
use crate::tenant::TenantId;

pub(super) struct Hub {
    tx: broadcast::Sender<Batch>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hub {
    /// Starts reading the events of `tenant` after number `last`.
    pub(super) fn start<R: EventRepository>(
        repo: Arc<R>,
        tenant: TenantId,
        last: i64,
        options: FeedOptions,
        stats: Arc<FeedStats>,
    ) -> Self {
        let (tx, _) = broadcast::channel(options.buffer_batches.max(1));
        let task = tokio::spawn(run(repo, tenant, last, tx.clone(), options, stats));
        Self { tx, task }
    }

    /// Batches published from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.tx.subscribe()
    }
}

async fn run<R: EventRepository>(
    repo: Arc<R>,
    tenant: TenantId,
    mut last: i64,
    tx: broadcast::Sender<Batch>,
    options: FeedOptions,
    stats: Arc<FeedStats>,
) {
    let mut signal = repo.event_signal();
    let mut signal_open = true;
    loop {
        // Everything committed since the last read, a batch at a time.
        loop {
            let query = EventQuery {
                tenant: tenant.clone(),
                order: EventOrder::Ascending {
                    after: last,
                    upto: i64::MAX,
                },
                filter: EventFilter::default(),
                limit: READ_BATCH,
            };
            match repo.list_events(&query).await {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    stats.hub_reads.fetch_add(1, Ordering::Relaxed);
                    last = events.last().map_or(last, |e| e.seq);
                    let full = events.len() == READ_BATCH as usize;
                    // No receiver now: the watchers read the database themselves.
                    let _ = tx.send(Arc::new(events.into_iter().map(Arc::new).collect()));
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "the change feed cannot read events; retrying");
                    break;
                }
            }
        }
        if signal_open {
            tokio::select! {
                changed = signal.changed() => signal_open = changed.is_ok(),
                () = tokio::time::sleep(options.poll) => {}
            }
        } else {
            tokio::time::sleep(options.poll).await;
        }
    }
}
