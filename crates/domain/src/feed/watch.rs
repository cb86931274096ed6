//! One watcher: catches up from the database after its cursor, then follows
//! its tenant's hub. It hands out every event after the cursor, in order,
//! none twice; events its filter drops still move its cursor, which
//! bookmarks carry.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{Batch, Cursor, Feed, Open, READ_BATCH};
use crate::error::DomainError;
use crate::event::Event;
use crate::event_filter::EventFilter;
use crate::repo::{EventOrder, EventQuery, EventRepository};
use crate::tenant::TenantId;
use crate::text::Timestamp;

/// What a watcher hands out next.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// An event and the cursor just after it.
    Event(Arc<Event>, Cursor),
    /// No event for a while (or only events the filter dropped): where the
    /// watcher stands, to resume from.
    Bookmark(Cursor, Timestamp),
}

/// A watcher of one tenant's feed; see [`Feed::watch`].
pub struct Watch<R> {
    feed: Arc<Feed<R>>,
    tenant: TenantId,
    at: Cursor,
    filter: EventFilter,
    /// Whether the caller sees API key events.
    keys_visible: bool,
    /// Reading the database (true) or following the hub.
    catching_up: bool,
    /// Events read but not handed out, with their batch.
    buffer: VecDeque<(Batch, usize)>,
    rx: broadcast::Receiver<Batch>,
    bookmark_every: Duration,
    quiet_since: tokio::time::Instant,
    _hub: Arc<super::hub::Hub>,
    _open: Open,
}

impl<R: EventRepository> Feed<R> {
    /// A watcher of `tenant` from `at` (checked by the caller against the
    /// feed's head), handing out the events `filter` keeps (API key events
    /// only with `keys_visible`), with a bookmark after `bookmark_every`
    /// without an event.
    pub fn watch(
        self: &Arc<Self>,
        tenant: &TenantId,
        at: Cursor,
        head: i64,
        filter: EventFilter,
        keys_visible: bool,
        bookmark_every: Duration,
    ) -> Watch<R> {
        let hub = self.hub(tenant, head);
        // Subscribed before the first read of the database: every event the
        // hub has not read yet arrives here, every other one is in the database.
        let rx = hub.subscribe();
        Watch {
            feed: Arc::clone(self),
            tenant: tenant.clone(),
            at,
            filter,
            keys_visible,
            catching_up: true,
            buffer: VecDeque::new(),
            rx,
            bookmark_every,
            quiet_since: tokio::time::Instant::now(),
            _hub: hub,
            _open: Open::new(&self.stats),
        }
    }
}

impl<R: EventRepository> Watch<R> {
    /// Where the watcher stands: after the last event it handed out or skipped.
    pub fn cursor(&self) -> Cursor {
        self.at
    }

    fn keeps(&self, event: &Event) -> bool {
        (self.keys_visible || !event.change.kind.is_api_key()) && self.filter.matches(event)
    }

    /// The next event or bookmark. An error ends the watch: the caller
    /// resumes from [`Self::cursor`].
    pub async fn next(&mut self) -> Result<WatchItem, DomainError> {
        loop {
            while let Some((batch, i)) = self.buffer.pop_front() {
                if i + 1 < batch.len() {
                    self.buffer.push_front((Arc::clone(&batch), i + 1));
                }
                let event = &batch[i];
                if event.seq <= self.at.seq {
                    continue;
                }
                if event.seq != self.at.seq + 1 {
                    // Never expected (the hub reads in order): read the
                    // database again rather than skip anything.
                    self.buffer.clear();
                    self.catching_up = true;
                    break;
                }
                self.at = Cursor {
                    epoch: self.at.epoch,
                    seq: event.seq,
                    event: event.id,
                };
                if self.keeps(event) {
                    self.quiet_since = tokio::time::Instant::now();
                    self.feed.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    let lag = Timestamp::now().unix_micros() - event.time.unix_micros();
                    self.feed
                        .observe_lag(Duration::from_micros(u64::try_from(lag).unwrap_or(0)));
                    return Ok(WatchItem::Event(Arc::clone(event), self.at));
                }
            }
            if self.catching_up {
                // What the hub published so far is in the database: only
                // what it publishes from here on is wanted, and a watcher
                // catching up at its own pace never falls behind the hub.
                self.rx = self.rx.resubscribe();
                let query = EventQuery {
                    tenant: self.tenant.clone(),
                    order: EventOrder::Ascending {
                        after: self.at.seq,
                        upto: i64::MAX,
                    },
                    filter: EventFilter::default(),
                    limit: READ_BATCH,
                };
                let events = self.feed.repo().list_events(&query).await?;
                if events.len() < READ_BATCH as usize {
                    self.catching_up = false;
                }
                if !events.is_empty() {
                    let batch: Batch = Arc::new(events.into_iter().map(Arc::new).collect());
                    self.buffer.push_back((batch, 0));
                }
                continue;
            }
            let bookmark_at = self.quiet_since + self.bookmark_every;
            tokio::select! {
                received = self.rx.recv() => match received {
                    Ok(batch) if !batch.is_empty() => self.buffer.push_back((batch, 0)),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        return Err(DomainError::Exhausted {
                            reason: "WATCHER_TOO_SLOW",
                            message: format!(
                                "this watcher of {} fell too far behind the changes and was ended; resume from \
                                 the last cursor it received",
                                self.tenant.resource_name()
                            ),
                        });
                    }
                    // The hub stopped (never while held): read the database.
                    Err(RecvError::Closed) => self.catching_up = true,
                },
                () = tokio::time::sleep_until(bookmark_at) => {
                    self.quiet_since = tokio::time::Instant::now();
                    return Ok(WatchItem::Bookmark(self.at, Timestamp::now()));
                }
            }
        }
    }
}
