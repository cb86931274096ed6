//! `EventRepository` on sea-orm: the audit log's and the change feed's
//! reads, the feed's head, and the purge past retention.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use userdir_domain::event::{Change, Event, EventType, Origin};
use userdir_domain::event_filter::{EventFilter, TypeMatch};
use userdir_domain::repo::{EventOrder, EventQuery, EventRepository, FeedHead, RepoResult};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;

use super::image;
use crate::convert::corrupt;
use crate::entity::{event, tenant};
use crate::tenants::tenant_not_found;
use crate::{Store, db_error};

fn event_from_row(row: event::Model, tenant: &TenantId) -> RepoResult<Event> {
    let kind: EventType = row.r#type.parse().map_err(|e| corrupt("event type", e))?;
    Ok(Event {
        tenant: tenant.clone(),
        seq: row.seq,
        id: row.id,
        time: Timestamp::from_unix_micros(row.time),
        change: Change {
            kind,
            after: image::decode(&row.r#type, &row.after, tenant)?,
            resource: row.resource,
            revision: row.revision,
            paths: if row.changed_paths.is_empty() {
                Vec::new()
            } else {
                row.changed_paths.split(',').map(str::to_owned).collect()
            },
            line: row.import_line.map(|l| u64::try_from(l).unwrap_or(0)),
        },
        origin: Origin {
            key: row.api_key,
            certificate: row.certificate,
            acting_user: row.acting_user,
            acting_user_email: row.acting_user_email,
            request_id: row.request_id,
            trace_id: row.trace_id,
            import_job: row.import_job,
        },
    })
}

/// The filter as conditions on the events' columns.
fn filtered(mut select: sea_orm::Select<event::Entity>, filter: &EventFilter) -> sea_orm::Select<event::Entity> {
    match &filter.kind {
        None => {}
        Some(TypeMatch::Exact(kind)) => select = select.filter(event::Column::Type.eq(kind.as_str())),
        Some(prefix @ TypeMatch::Prefix(_)) => {
            // The known types the prefix covers: no LIKE, whose `_` is a wildcard.
            let kinds = EventType::ALL
                .into_iter()
                .filter(|k| prefix.matches(*k))
                .map(EventType::as_str);
            select = select.filter(event::Column::Type.is_in(kinds));
        }
    }
    if let Some(resource) = &filter.resource {
        select = select.filter(event::Column::Resource.eq(resource.as_str()));
    }
    if let Some(key) = filter.api_key {
        select = select.filter(event::Column::ApiKey.eq(key));
    }
    if let Some(user) = &filter.acting_user {
        select = select.filter(event::Column::ActingUser.eq(user.as_str()));
    }
    if let Some(job) = filter.import_job {
        select = select.filter(event::Column::ImportJob.eq(job));
    }
    if let Some(since) = filter.since {
        select = select.filter(event::Column::Time.gte(since.unix_micros()));
    }
    if let Some(until) = filter.until {
        select = select.filter(event::Column::Time.lt(until.unix_micros()));
    }
    select
}

impl Store {
    /// The number of the oldest event of `tenant` kept, if any is.
    async fn oldest_event(&self, tenant: &TenantId) -> RepoResult<Option<i64>> {
        event::Entity::find()
            .select_only()
            .column(event::Column::Seq)
            .filter(event::Column::TenantId.eq(tenant.as_str()))
            .order_by_asc(event::Column::Seq)
            .limit(1)
            .into_tuple()
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))
    }
}

impl EventRepository for Store {
    async fn list_events(&self, query: &EventQuery) -> RepoResult<Vec<Event>> {
        let mut select = event::Entity::find().filter(event::Column::TenantId.eq(query.tenant.as_str()));
        select = match query.order {
            EventOrder::Ascending { after, upto } => select
                .filter(event::Column::Seq.gt(after))
                .filter(event::Column::Seq.lte(upto))
                .order_by_asc(event::Column::Seq),
            EventOrder::Descending { before } => {
                if let Some(before) = before {
                    select = select.filter(event::Column::Seq.lt(before));
                }
                select.order_by_desc(event::Column::Seq)
            }
        };
        let rows = filtered(select, &query.filter)
            .limit(u64::from(query.limit))
            .all(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        rows.into_iter().map(|row| event_from_row(row, &query.tenant)).collect()
    }

    async fn get_event(&self, tenant: &TenantId, seq: i64) -> RepoResult<Option<Event>> {
        let row = event::Entity::find_by_id((tenant.as_str().to_owned(), seq))
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        row.map(|row| event_from_row(row, tenant)).transpose()
    }

    async fn feed_head(&self, tenant: &TenantId) -> RepoResult<FeedHead> {
        let head: Option<(i64, i64)> = tenant::Entity::find_by_id(tenant.as_str())
            .select_only()
            .column(tenant::Column::EventEpoch)
            .column(tenant::Column::EventSeq)
            .into_tuple()
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        let (epoch, last) = head.ok_or_else(|| tenant_not_found(tenant))?;
        let oldest = self.oldest_event(tenant).await?;
        Ok(FeedHead {
            epoch,
            last,
            oldest: oldest.unwrap_or(last + 1),
        })
    }

    async fn purge_events(&self, now: Timestamp, default_days: u32, limit: u32) -> RepoResult<u64> {
        let tenants: Vec<(String, i64)> = tenant::Entity::find()
            .select_only()
            .column(tenant::Column::Id)
            .column(tenant::Column::AuditRetentionDays)
            .into_tuple()
            .all(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        let mut purged = 0u64;
        for (tenant, days) in tenants {
            if purged >= u64::from(limit) {
                break;
            }
            let days = if days > 0 { days } else { i64::from(default_days) };
            let before = Timestamp::from_unix_micros(now.unix_micros().saturating_sub(days * 86_400_000_000));
            // The run of oldest events past retention, at most `room` of
            // them: the events kept stay one run of numbers.
            let tenant_id = TenantId::parse("tenant_id", &tenant).map_err(|e| corrupt("tenant id", e))?;
            let Some(oldest) = self.oldest_event(&tenant_id).await? else {
                continue;
            };
            let room = i64::from(limit) - i64::try_from(purged).unwrap_or(i64::MAX);
            let times: Vec<(i64, i64)> = event::Entity::find()
                .select_only()
                .column(event::Column::Seq)
                .column(event::Column::Time)
                .filter(event::Column::TenantId.eq(tenant.as_str()))
                .filter(event::Column::Seq.gte(oldest))
                .filter(event::Column::Seq.lt(oldest + room))
                .order_by_asc(event::Column::Seq)
                .into_tuple()
                .all(self.connection())
                .await
                .map_err(|e| self.db_error(e))?;
            let past = times
                .iter()
                .take_while(|(_, time)| *time < before.unix_micros())
                .count();
            let Some(&(upto, _)) = past.checked_sub(1).and_then(|i| times.get(i)) else {
                continue;
            };
            let deleted = event::Entity::delete_many()
                .filter(event::Column::TenantId.eq(tenant.as_str()))
                .filter(event::Column::Seq.lte(upto))
                .exec(self.writer())
                .await
                .map_err(db_error)?;
            purged += deleted.rows_affected;
        }
        Ok(purged)
    }

    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signal().subscribe()
    }
}
