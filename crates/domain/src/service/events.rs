//! Reading the events: the audit log (newest first, filtered, paged) and
//! the change feed (oldest first, from a cursor: a page at a time, or a
//! watch that follows the commits).

use std::sync::Arc;
use std::time::Duration;

use super::directory::{Directory, Page, allow, invalid, next_token};
use crate::access::{self, Action, Caller};
use crate::error::DomainError;
use crate::event::Event;
use crate::event_filter::EventFilter;
use crate::feed::{Cursor, Feed, READ_BATCH, Watch};
use crate::list::page_size;
use crate::page_token::SortKey;
use crate::repo::{EventOrder, EventQuery, EventRepository, FeedHead, TenantRepository, UserRepository};
use crate::tenant::TenantId;

/// Events a `ListChanges` call reads at most, matching its filter or not:
/// a filter that keeps little still answers promptly, with a cursor past
/// what it read.
const LIST_CHANGES_SCAN: usize = 10 * READ_BATCH as usize;

/// Shortest bookmark interval a watcher may ask for.
pub const MIN_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// The bookmark interval of a watcher that asks for none.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// The cursor that starts at the oldest event kept (the whole history, up
/// to the retention).
pub const OLDEST: &str = "oldest";

/// A page of the change feed.
#[derive(Debug)]
pub struct Changes {
    /// Each event with the cursor just after it.
    pub events: Vec<(Event, Cursor)>,
    /// Where the next call starts: after the last event read (kept or not).
    pub next_cursor: Cursor,
}

/// `tenants/{t}/auditEvents/{seq}`.
fn parse_event_name(name: &str) -> Option<(TenantId, i64)> {
    let rest = name.strip_prefix("tenants/")?;
    let (tenant, seq) = rest.split_once("/auditEvents/")?;
    let seq: i64 = seq.parse().ok().filter(|s| *s > 0)?;
    Some((TenantId::parse("name", tenant).ok()?, seq))
}

impl<R: TenantRepository + UserRepository + EventRepository> Directory<R> {
    /// The audit log of a tenant, newest first.
    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        parent: &str,
        filter: &str,
        requested_size: i32,
        page_token: &str,
    ) -> Result<Page<Event>, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::ReadAuditLog, None)?;
        let limit = page_size(requested_size)?;
        let parsed = EventFilter::parse(filter)?;
        // A token is good for the filter it was made with.
        let scope = format!("{}/auditEvents?{filter}", tenant.resource_name());
        let before = if page_token.is_empty() {
            None
        } else {
            let key = self.tokens().decode(&scope, page_token)?;
            Some(
                key.int
                    .ok_or_else(|| DomainError::invalid("page_token", "is damaged"))?,
            )
        };
        self.repo.get_tenant(&tenant).await?;
        let query = EventQuery {
            tenant: tenant.clone(),
            order: EventOrder::Descending { before },
            filter: parsed,
            limit: limit + 1,
        };
        let mut items = self.repo.list_events(&query).await?;
        let next_page_token = next_token(&mut items, limit, |e| {
            self.tokens().encode(
                &scope,
                SortKey {
                    text: None,
                    int: Some(e.seq),
                    id: String::new(),
                },
            )
        });
        Ok(Page { items, next_page_token })
    }

    /// One event of the audit log.
    pub async fn get_audit_event(&self, caller: &Caller, name: &str) -> Result<Event, DomainError> {
        let (tenant, seq) = parse_event_name(name).ok_or_else(|| {
            DomainError::invalid(
                "name",
                format!("{name:?} is not an audit event name; expected tenants/{{tenant_id}}/auditEvents/{{number}}"),
            )
        })?;
        allow(caller, &tenant, Action::ReadAuditLog, None)?;
        self.repo.get_tenant(&tenant).await?;
        self.repo
            .get_event(&tenant, seq)
            .await?
            .ok_or_else(|| DomainError::NotFound {
                kind: crate::error::ResourceKind::AuditEvent,
                name: name.to_owned(),
            })
    }

    /// Where `cursor` (empty: the feed's head, "from now"; [`OLDEST`]: before
    /// the oldest event kept) stands in the
    /// feed of `tenant`, checked: a cursor of another epoch, one past the
    /// feed's end or whose event is not the one there fails
    /// FAILED_PRECONDITION; one older than the events kept, OUT_OF_RANGE.
    async fn resume(&self, tenant: &TenantId, cursor: &str) -> Result<(Cursor, FeedHead), DomainError> {
        let head = self.repo.feed_head(tenant).await?;
        if cursor.is_empty() {
            return Ok((self.head_cursor(tenant, head).await?, head));
        }
        if cursor == OLDEST {
            let before_oldest = Cursor {
                epoch: head.epoch,
                seq: head.oldest - 1,
                event: uuid::Uuid::nil(),
            };
            return Ok((before_oldest, head));
        }
        let at = Cursor::decode("cursor", tenant, cursor)?;
        let again = "export the users again and follow the feed from the export's change_cursor";
        if at.epoch != head.epoch {
            return Err(DomainError::Precondition {
                reason: "CURSOR_EPOCH_MISMATCH",
                message: format!(
                    "the change feed of {} restarted since this cursor was made (a restore): {again}",
                    tenant.resource_name()
                ),
            });
        }
        if at.seq > head.last {
            return Err(DomainError::Precondition {
                reason: "CURSOR_DIVERGED",
                message: format!(
                    "this cursor is past the end of the change feed of {} (events were lost, as in a restore of an \
                     older backup): {again}",
                    tenant.resource_name()
                ),
            });
        }
        if at.seq + 1 < head.oldest {
            return Err(DomainError::OutOfRange {
                reason: "CURSOR_EXPIRED",
                message: format!(
                    "the events after this cursor are past the retention of {} and were purged: {again}",
                    tenant.resource_name()
                ),
            });
        }
        // The cursor's own event may be purged while every later one is
        // kept: nothing to check it against, and nothing missed.
        if at.seq > 0 && at.seq >= head.oldest {
            let there = self.repo.get_event(tenant, at.seq).await?;
            if there.map(|e| e.id) != Some(at.event) {
                return Err(DomainError::Precondition {
                    reason: "CURSOR_DIVERGED",
                    message: format!(
                        "the change feed of {} no longer holds the event this cursor names (a restore, or a \
                         failover that lost commits): {again}",
                        tenant.resource_name()
                    ),
                });
            }
        }
        Ok((at, head))
    }

    /// The cursor after the last event of `head`.
    async fn head_cursor(&self, tenant: &TenantId, head: FeedHead) -> Result<Cursor, DomainError> {
        let event = if head.last > 0 {
            match self.repo.get_event(tenant, head.last).await? {
                Some(e) => e.id,
                // Purged: the cursor still holds; a resume finds it expired.
                None => uuid::Uuid::nil(),
            }
        } else {
            uuid::Uuid::nil()
        };
        Ok(Cursor {
            epoch: head.epoch,
            seq: head.last,
            event,
        })
    }

    /// Whether `caller` sees API key events in the feed (they hold the
    /// right to list keys).
    fn sees_keys(caller: &Caller, tenant: &TenantId) -> bool {
        access::decide(caller, Some(tenant), Action::ListApiKeys, None).is_ok()
    }

    /// A page of the change feed after `cursor` (empty: from now, an empty page).
    pub async fn list_changes(
        &self,
        caller: &Caller,
        parent: &str,
        cursor: &str,
        filter: &str,
        requested_size: i32,
    ) -> Result<Changes, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::ReadChanges, None)?;
        let limit = page_size(requested_size)? as usize;
        let filter = EventFilter::parse(filter)?;
        let keys = Self::sees_keys(caller, &tenant);
        let (mut at, head) = self.resume(&tenant, cursor).await?;
        let mut events = Vec::new();
        let mut scanned = 0;
        while events.len() < limit && scanned < LIST_CHANGES_SCAN && at.seq < head.last {
            let query = EventQuery {
                tenant: tenant.clone(),
                order: EventOrder::Ascending {
                    after: at.seq,
                    upto: head.last,
                },
                filter: EventFilter::default(),
                limit: READ_BATCH,
            };
            let read = self.repo.list_events(&query).await?;
            if read.is_empty() {
                break;
            }
            for event in read {
                scanned += 1;
                at = Cursor {
                    epoch: at.epoch,
                    seq: event.seq,
                    event: event.id,
                };
                if (keys || !event.change.kind.is_api_key()) && filter.matches(&event) {
                    events.push((event, at));
                    if events.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(Changes {
            events,
            next_cursor: at,
        })
    }

    /// A watcher of the feed of `parent` after `cursor` (empty: from now).
    pub async fn watch_changes(
        &self,
        caller: &Caller,
        feed: &Arc<Feed<R>>,
        parent: &str,
        cursor: &str,
        filter: &str,
        bookmark_interval: Option<Duration>,
    ) -> Result<Watch<R>, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::ReadChanges, None)?;
        let filter = EventFilter::parse(filter)?;
        let every = match bookmark_interval {
            None => DEFAULT_BOOKMARK_INTERVAL,
            Some(d) if d < MIN_BOOKMARK_INTERVAL => {
                return Err(DomainError::invalid(
                    "bookmark_interval",
                    "must be at least 1 second (or unset for 30 seconds)",
                ));
            }
            Some(d) => d,
        };
        let (at, head) = self.resume(&tenant, cursor).await?;
        let keys = Self::sees_keys(caller, &tenant);
        Ok(feed.watch(&tenant, at, head.last, filter, keys, every))
    }

    /// Purges the events past their tenant's retention (`default_days` for
    /// a tenant that sets none), in batches; returns how many.
    pub async fn purge_events(&self, default_days: u32) -> Result<u64, DomainError> {
        const BATCH: u32 = 10_000;
        let now = crate::text::Timestamp::now();
        let mut purged = 0;
        loop {
            let n = self.repo.purge_events(now, default_days, BATCH).await?;
            purged += n;
            if n < u64::from(BATCH) {
                return Ok(purged);
            }
        }
    }

    /// The cursor of the feed's head of `tenant` now (for an export's trailer,
    /// read inside its snapshot by the store instead where it can).
    pub async fn change_cursor(&self, tenant: &TenantId) -> Result<Cursor, DomainError> {
        let head = self.repo.feed_head(tenant).await?;
        self.head_cursor(tenant, head).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_parse() {
        let (t, seq) = parse_event_name("tenants/acme/auditEvents/12").unwrap_or_else(|| unreachable!());
        assert_eq!((t.as_str(), seq), ("acme", 12));
        for bad in [
            "tenants/acme/auditEvents/0",
            "tenants/acme/auditEvents/x",
            "tenants/acme/users/1",
            "",
        ] {
            assert!(parse_event_name(bad).is_none(), "{bad}");
        }
    }
}
