//! `userdir.v1.Events`: the audit log and the change feed.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use userdir_domain::Directory;
use userdir_domain::event::{Event, Image};
use userdir_domain::feed::{Feed, WatchItem};
use userdir_store::Store;

use super::api_keys::key_to_pb;
use super::convert::{tenant_to_pb, timestamp, user_to_pb};
use super::ending::Ending;
use super::imports::job_to_pb;
use super::{caller, to_status};
use crate::deadline::Deadline;
use crate::pb;
use crate::pb::events_server::Events;

pub struct EventsService {
    dir: Directory<Store>,
    feed: Arc<Feed<Store>>,
    closing: tokio::sync::watch::Receiver<bool>,
    auth: Arc<crate::auth::Auth>,
}

impl EventsService {
    pub fn new(
        dir: Directory<Store>,
        feed: Arc<Feed<Store>>,
        closing: tokio::sync::watch::Receiver<bool>,
        auth: Arc<crate::auth::Auth>,
    ) -> Self {
        Self {
            dir,
            feed,
            closing,
            auth,
        }
    }
}

/// An event as the API shows it.
pub fn event_to_pb(e: &Event) -> pb::Event {
    let o = &e.origin;
    let after = match &e.change.after {
        Image::User(u) => pb::event::ResourceAfter::User(user_to_pb((**u).clone())),
        Image::Tenant(t) => pb::event::ResourceAfter::Tenant(tenant_to_pb((**t).clone())),
        Image::ApiKey(k) => pb::event::ResourceAfter::ApiKey(key_to_pb(k.clone())),
        Image::ImportJob(j) => pb::event::ResourceAfter::ImportJobAfter(job_to_pb(j)),
    };
    pb::Event {
        name: e.name(),
        seq: e.seq,
        event_id: e.id.to_string(),
        time: timestamp(e.time),
        r#type: e.change.kind.as_str().to_owned(),
        resource: e.change.resource.clone(),
        resource_revision: e.change.revision,
        actor: Some(pb::Actor {
            principal: o.principal(),
            acting_user: o.acting_user.clone().unwrap_or_default(),
            acting_user_email: o.acting_user_email.clone().unwrap_or_default(),
            certificate: o.certificate.clone().unwrap_or_default(),
        }),
        request_id: o.request_id.clone().unwrap_or_default(),
        trace_id: o.trace_id.clone().unwrap_or_default(),
        import_job: o
            .import_job
            .map(|j| format!("{}/importJobs/{}", e.tenant.resource_name(), j.hyphenated()))
            .unwrap_or_default(),
        import_line: e.change.line.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)),
        changed_paths: (!e.change.paths.is_empty()).then(|| prost_types::FieldMask {
            paths: e.change.paths.clone(),
        }),
        resource_after: Some(after),
    }
}

/// Messages a watcher's stream holds for a slow reader before the watcher
/// waits (and, a whole hub buffer behind, is ended). Small: the HTTP/2
/// stream buffers more behind it, and with 1,000 watchers of one burst a
/// queue of 64 took the server's RSS 435 MiB up, one of 4 152 MiB
/// (`cargo bench --bench feed`).
const WATCH_QUEUE: usize = 4;

/// A message of a watcher's queue, boxed: tokio's channel allocates its
/// slots 32 at a time whatever its bound, and a response held inline (an
/// event with its user, ~1 KiB) made that 28 KiB per watcher, twice over
/// during a burst (heaptrack: 56 MB of 1,000 watchers' peak).
type Queued = Box<Result<pb::WatchChangesResponse, Status>>;

#[tonic::async_trait]
impl Events for EventsService {
    type WatchChangesStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::WatchChangesResponse, Status>> + Send>>;

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = self
            .dir
            .list_audit_events(&caller, &req.parent, &req.filter, req.page_size, &req.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.iter().map(event_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_audit_event(&self, request: Request<pb::GetAuditEventRequest>) -> Result<Response<pb::Event>, Status> {
        let caller = caller(&request)?;
        let event = self
            .dir
            .get_audit_event(&caller, &request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(event_to_pb(&event)))
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let changes = self
            .dir
            .list_changes(&caller, &req.parent, &req.cursor, &req.filter, req.page_size)
            .await
            .map_err(to_status)?;
        let tenant = changes_tenant(&req.parent);
        Ok(Response::new(pb::ListChangesResponse {
            events: changes
                .events
                .iter()
                .map(|(e, at)| pb::ChangeEvent {
                    cursor: at.encode(&e.tenant),
                    event: Some(event_to_pb(e)),
                })
                .collect(),
            next_cursor: tenant.map(|t| changes.next_cursor.encode(&t)).unwrap_or_default(),
        }))
    }

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let caller = caller(&request)?;
        let deadline = Deadline::of(&request);
        let req = request.into_inner();
        let interval = req
            .bookmark_interval
            .map(|d| std::time::Duration::try_from(d).unwrap_or_default());
        let mut watch = self
            .dir
            .watch_changes(&caller, &self.feed, &req.parent, &req.cursor, &req.filter, interval)
            .await
            .map_err(to_status)?;
        let tenant = changes_tenant(&req.parent).ok_or_else(|| Status::invalid_argument("parent"))?;
        let mut ending = Ending::new(self.closing.clone(), deadline).while_valid(&self.auth, &caller);
        let (tx, rx) = tokio::sync::mpsc::channel::<Queued>(WATCH_QUEUE);
        tokio::spawn(async move {
            // One future for the whole watch: its timers run across events.
            let ended = ending.reached();
            tokio::pin!(ended);
            loop {
                let item = tokio::select! {
                    item = watch.next() => item,
                    why = &mut ended => Err(why),
                    () = tx.closed() => return,
                };
                let message = match item {
                    Ok(WatchItem::Event(event, at)) => pb::WatchChangesResponse {
                        kind: Some(pb::watch_changes_response::Kind::Event(pb::ChangeEvent {
                            cursor: at.encode(&tenant),
                            event: Some(event_to_pb(&event)),
                        })),
                    },
                    Ok(WatchItem::Bookmark(at, time)) => pb::WatchChangesResponse {
                        kind: Some(pb::watch_changes_response::Kind::Bookmark(pb::Bookmark {
                            cursor: at.encode(&tenant),
                            time: timestamp(time),
                        })),
                    },
                    Err(e) => {
                        let resume = watch.cursor().encode(&tenant);
                        let status = super::status::to_status_with(e, "", &[("cursor", resume)]);
                        let _ = tx.send(Box::new(Err(status))).await;
                        return;
                    }
                };
                if tx.send(Box::new(Ok(message))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|queued| *queued))))
    }
}

/// The tenant of a `parent` the domain already accepted.
fn changes_tenant(parent: &str) -> Option<userdir_domain::tenant::TenantId> {
    userdir_domain::tenant::TenantId::from_resource_name("parent", parent).ok()
}
