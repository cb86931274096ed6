//! The change feed: a tenant's events in commit order, resumable from a
//! [`Cursor`]. One [`hub`] per tenant per server reads each new batch of
//! events from the database once and hands it to every watcher of the
//! tenant; a watcher first catches up from the database by itself, then
//! follows the hub. A watcher that falls a whole buffer behind is ended
//! (it resumes from its cursor) rather than buffered without bound.

pub mod cursor;
mod hub;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use cursor::Cursor;
pub use watch::{Watch, WatchItem};

use crate::event::Event;
use crate::repo::EventRepository;
use crate::tenant::TenantId;

/// Events read from the database per query.
pub const READ_BATCH: u32 = 1_000;

/// How the feed runs.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Batches a watcher may fall behind its hub before it is ended.
    pub buffer_batches: usize,
    /// How often a hub reads the database without being woken (the wake-up
    /// is a hint: a notification can be lost with its connection).
    pub poll: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            buffer_batches: 256,
            poll: Duration::from_secs(1),
        }
    }
}

/// Counters for the server's metrics.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Watchers open now.
    pub watchers: AtomicI64,
    /// Events handed to watchers.
    pub delivered: AtomicU64,
    /// Batches the hubs read from the database.
    pub hub_reads: AtomicU64,
}

/// A batch of events, shared by every watcher of the tenant.
pub type Batch = Arc<Vec<Arc<Event>>>;

/// Is told how long an event took from its commit to a watcher.
pub type LagObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Every hub of this server.
pub struct Feed<R> {
    repo: Arc<R>,
    options: FeedOptions,
    hubs: Mutex<HashMap<TenantId, Weak<hub::Hub>>>,
    stats: Arc<FeedStats>,
    lag: Option<LagObserver>,
}

impl<R: EventRepository> Feed<R> {
    pub fn new(repo: Arc<R>, options: FeedOptions) -> Self {
        Self {
            repo,
            options,
            hubs: Mutex::new(HashMap::new()),
            stats: Arc::default(),
            lag: None,
        }
    }

    /// Counts into `stats` (shared with the server's metrics).
    pub fn with_stats(mut self, stats: Arc<FeedStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Tells `observer` each event's delay from its commit to a watcher.
    pub fn with_lag_observer(mut self, observer: LagObserver) -> Self {
        self.lag = Some(observer);
        self
    }

    pub fn stats(&self) -> &Arc<FeedStats> {
        &self.stats
    }

    pub(crate) fn repo(&self) -> &Arc<R> {
        &self.repo
    }

    /// The hub of `tenant`, started at event `last` if it is not running.
    fn hub(&self, tenant: &TenantId, last: i64) -> Arc<hub::Hub> {
        #[allow(clippy::unwrap_used)] // Poisoned only by a panic while holding it, which never happens.
        let mut hubs = self.hubs.lock().unwrap();
        if let Some(hub) = hubs.get(tenant).and_then(Weak::upgrade) {
            return hub;
        }
        hubs.retain(|_, hub| hub.strong_count() > 0);
        let hub = Arc::new(hub::Hub::start(
            Arc::clone(&self.repo),
            tenant.clone(),
            last,
            self.options,
            Arc::clone(&self.stats),
        ));
        hubs.insert(tenant.clone(), Arc::downgrade(&hub));
        hub
    }

    pub(crate) fn observe_lag(&self, lag: Duration) {
        if let Some(observer) = &self.lag {
            observer(lag);
        }
    }
}

/// Counts a watcher open while it lives.
struct Open(Arc<FeedStats>);

impl Open {
    fn new(stats: &Arc<FeedStats>) -> Self {
        stats.watchers.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}
