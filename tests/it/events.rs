//! Events: every change recorded once, in its own transaction, numbered
//! densely per tenant in commit order; read as the audit log and as the
//! change feed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use userdir::pb::event::ResourceAfter;
use userdir::pb::events_client::EventsClient;
use userdir::pb::*;

use crate::common::{TestServer, reason};
use crate::import::{csv, options};

pub(crate) fn events(s: &TestServer) -> EventsClient<userdir::client::AuthedChannel> {
    EventsClient::new(s.channel.clone())
}

/// Every event of `tenant` after `cursor`, through ListChanges pages.
pub(crate) async fn changes_after(s: &TestServer, tenant: &str, cursor: &str) -> Vec<Event> {
    let mut all = Vec::new();
    let mut cursor = cursor.to_owned();
    loop {
        let page = events(s)
            .list_changes(ListChangesRequest {
                parent: format!("tenants/{tenant}"),
                cursor: cursor.clone(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if page.events.is_empty() {
            return all;
        }
        all.extend(page.events.into_iter().map(|e| e.event.unwrap()));
        cursor = page.next_cursor;
    }
}

/// Every event of `tenant` kept, from the oldest.
pub(crate) async fn history(s: &TestServer, tenant: &str) -> Vec<Event> {
    changes_after(s, tenant, "oldest").await
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.r#type.as_str()).collect()
}

/// The users a feed's events leave, by resource name.
fn replay(events: &[Event]) -> BTreeMap<String, User> {
    let mut users = BTreeMap::new();
    for e in events {
        match (&e.r#type[..], &e.resource_after) {
            ("user.deleted", _) => {
                users.remove(&e.resource);
            }
            (kind, Some(ResourceAfter::User(user))) if kind.starts_with("user.") => {
                users.insert(e.resource.clone(), user.clone());
            }
            _ => {}
        }
    }
    users
}

fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    request
}

/// Each mutating call writes exactly its events (and a refusal none),
/// numbered 1, 2, 3... in order, each naming who made it and how.
async fn every_change_writes_exactly_its_events(s: TestServer) {
    s.tenant("acme").await;
    let owner = s.user("acme", "owner@example.com", "Owner").await;
    s.tenants
        .clone()
        .transfer_tenant_ownership(TransferTenantOwnershipRequest {
            tenant: "tenants/acme".into(),
            new_owner: owner.name.clone(),
        })
        .await
        .unwrap();
    let taro = s.user("acme", "taro@example.com", "Taro").await;
    let renamed = s
        .users
        .clone()
        .update_user(with_request_id(
            UpdateUserRequest {
                user: Some(User {
                    name: taro.name.clone(),
                    display_name: "Taro Yamada".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            "req-rename-taro",
        ))
        .await
        .unwrap()
        .into_inner();
    // Refused: a stale etag, a taken email. Neither is a change.
    let stale = s
        .users
        .clone()
        .update_user(UpdateUserRequest {
            user: Some(User {
                name: taro.name.clone(),
                display_name: "Lost".into(),
                etag: taro.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted);
    assert!(s.user_result("acme", "TARO@example.com").await.is_err());
    s.users
        .clone()
        .set_user_role(SetUserRoleRequest {
            name: taro.name.clone(),
            role: TenantRole::Admin as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let hanako = s.user("acme", "hanako@example.com", "Hanako").await;
    s.users
        .clone()
        .set_user_capabilities(SetUserCapabilitiesRequest {
            name: hanako.name.clone(),
            capabilities: Some(Capabilities {
                export_users: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    s.tenants
        .clone()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                name: "tenants/acme".into(),
                display_name: "Acme Japan".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap();
    let (_, key) = crate::common::create_key(&s.channel, "acme", &[Scope::Read], false).await;
    s.keys
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { name: key.name.clone() })
        .await
        .unwrap();
    s.users
        .clone()
        .delete_user(DeleteUserRequest {
            name: hanako.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // An import: a new user, a changed one, an unchanged one, a failed row.
    let (results, job) = csv(
        &s,
        options(ImportMode::Upsert),
        "email,name\njiro@example.com,Jiro\ntaro@example.com,Taro Y.\nowner@example.com,Owner\nbad,Nobody\n",
    )
    .await;
    assert_eq!(results.len(), 4);
    // A FULL_SYNC that leaves Jiro out: he is deleted.
    let (_, sync) = csv(
        &s,
        options(ImportMode::FullSync),
        "email,name\ntaro@example.com,Taro Y.\nowner@example.com,Owner\n",
    )
    .await;
    assert_eq!(sync.counts.as_ref().unwrap().deleted, 1);

    let all = history(&s, "acme").await;
    assert_eq!(
        types(&all),
        [
            "tenant.created",
            "user.created",
            "user.role_set",
            "tenant.owner_transferred",
            "user.created",
            "user.updated",
            "user.role_set",
            "user.created",
            "user.capabilities_set",
            "tenant.updated",
            "api_key.created",
            "api_key.revoked",
            "user.deleted",
            "import.started",
            "user.created",
            "user.updated",
            "import.finished",
            "import.started",
            "user.deleted",
            "import.finished",
        ]
    );
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as i64).collect::<Vec<_>>(), "dense, in order");

    // Each says what it changed, who changed it and through which request.
    let rename = &all[5];
    assert_eq!(rename.resource, taro.name);
    assert_eq!(rename.changed_paths.as_ref().unwrap().paths, ["display_name"]);
    assert_eq!(rename.request_id, "req-rename-taro");
    assert_eq!(rename.resource_revision, 2);
    assert_eq!(
        rename.actor.as_ref().unwrap().principal,
        crate::common::operator_principal()
    );
    match &rename.resource_after {
        Some(ResourceAfter::User(after)) => assert_eq!(after, &renamed),
        other => panic!("a user's event carries the user: {other:?}"),
    }
    assert_eq!(all[9].changed_paths.as_ref().unwrap().paths, ["display_name"]);
    let job_name = job.name.clone();
    for (e, line) in [(&all[14], 2), (&all[15], 3)] {
        assert_eq!(
            (e.import_job.as_str(), e.import_line),
            (job_name.as_str(), line),
            "{e:?}"
        );
    }
    assert_eq!(all[15].changed_paths.as_ref().unwrap().paths, ["display_name"]);
    match &all[16].resource_after {
        Some(ResourceAfter::ImportJobAfter(j)) => {
            assert_eq!(j.state, ImportJobState::Succeeded as i32);
            assert_eq!(j.counts.as_ref().unwrap().created, 1);
        }
        other => panic!("import.finished carries the job: {other:?}"),
    }
    // A key's event never carries its secret.
    match &all[10].resource_after {
        Some(ResourceAfter::ApiKey(k)) => assert_eq!(k.name, key.name),
        other => panic!("a key's event carries the key: {other:?}"),
    }
    // The deleted user, as they were.
    match &all[12].resource_after {
        Some(ResourceAfter::User(u)) => assert_eq!(u.email, "hanako@example.com"),
        other => panic!("{other:?}"),
    }
    // Replayed, the events are the directory.
    let listed: BTreeMap<String, User> = crate::import::users_of(&s, "acme")
        .await
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect();
    assert_eq!(replay(&all), listed);
}

/// The audit log: newest first, paged, filtered by type, resource, acting
/// user, import job and time; one event by name; administrators only.
async fn the_audit_log_reads_newest_first_and_filters(s: TestServer) {
    s.tenant("acme").await;
    let admin = s.user("acme", "admin@example.com", "Admin").await;
    crate::roles::set_role(&s, &admin.name, TenantRole::Admin)
        .await
        .unwrap();
    let member = s.user("acme", "member@example.com", "Member").await;
    let console = crate::roles::console(&s, "acme").await;
    // The admin, acting through the console, renames the member.
    let mut request = tonic::Request::new(UpdateUserRequest {
        user: Some(User {
            name: member.name.clone(),
            display_name: "Member 2".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
    });
    request
        .metadata_mut()
        .insert("x-userdir-acting-user", admin.name.parse().unwrap());
    userdir::pb::user_directory_client::UserDirectoryClient::new(console.clone())
        .update_user(request)
        .await
        .unwrap();
    let (_, job) = csv(&s, options(ImportMode::Upsert), "email,name\nnew@example.com,New\n").await;

    let list = |filter: &str, page_size: i32, page_token: String| {
        let mut client = events(&s);
        let request = ListAuditEventsRequest {
            parent: "tenants/acme".into(),
            filter: filter.into(),
            page_size,
            page_token,
        };
        async move { client.list_audit_events(request).await.map(|r| r.into_inner()) }
    };
    let newest = list("", 1000, String::new()).await.unwrap().events;
    let seqs: Vec<i64> = newest.iter().map(|e| e.seq).collect();
    let mut expected: Vec<i64> = (1..=newest.len() as i64).collect();
    expected.reverse();
    assert_eq!(seqs, expected, "newest first");
    // Paged by three, the same events.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = list("", 3, token).await.unwrap();
        paged.extend(page.events.into_iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, seqs);
    // Filters.
    let got = |events: Vec<Event>| events.into_iter().map(|e| e.r#type).collect::<Vec<_>>();
    let by_actor = list(&format!("acting_user = \"{}\"", admin.name), 100, String::new())
        .await
        .unwrap();
    assert_eq!(got(by_actor.events.clone()), ["user.updated"]);
    let actor = by_actor.events[0].actor.clone().unwrap();
    assert_eq!(actor.acting_user_email, "admin@example.com");
    let by_job = list(&format!("import_job = \"{}\"", job.name), 100, String::new())
        .await
        .unwrap();
    assert_eq!(
        got(by_job.events),
        ["import.finished", "user.created", "import.started"]
    );
    let users_only = list("type = \"user.*\"", 100, String::new()).await.unwrap();
    assert!(users_only.events.iter().all(|e| e.r#type.starts_with("user.")));
    assert_eq!(users_only.events.len(), 5);
    let of_member = list(&format!("resource = \"{}\"", member.name), 100, String::new())
        .await
        .unwrap();
    assert_eq!(got(of_member.events), ["user.updated", "user.created"]);
    let future = list("time >= \"2999-01-01T00:00:00Z\"", 100, String::new())
        .await
        .unwrap();
    assert!(future.events.is_empty());
    let past = list("time < \"2999-01-01T00:00:00Z\"", 100, String::new())
        .await
        .unwrap();
    assert_eq!(past.events.len(), newest.len());
    let bad = list("colour = \"red\"", 100, String::new()).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // A page token is good for its own filter only.
    let first = list("type = \"user.*\"", 2, String::new()).await.unwrap();
    let other = list("", 2, first.next_page_token).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::InvalidArgument);

    // One by name.
    let one = events(&s)
        .get_audit_event(GetAuditEventRequest {
            name: newest[0].name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one, newest[0]);
    let missing = events(&s)
        .get_audit_event(GetAuditEventRequest {
            name: "tenants/acme/auditEvents/999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A member acting through the console may not read the log; the admin may.
    let as_user = |who: &str| {
        let mut request = tonic::Request::new(ListAuditEventsRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-userdir-acting-user", who.parse().unwrap());
        request
    };
    let mut client = EventsClient::new(console);
    let denied = client.list_audit_events(as_user(&member.name)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&denied), "MISSING_PERMISSION");
    client.list_audit_events(as_user(&admin.name)).await.unwrap();
}

/// The change feed for a read-only key: every user change, no key events;
/// a cursor resumes exactly where it stood; broken cursors are refused
/// with what to do.
async fn the_feed_resumes_from_its_cursor(s: TestServer) {
    s.tenant("acme").await;
    let (reader, _) = crate::common::create_key(&s.channel, "acme", &[Scope::Read], false).await;
    let mut feed = EventsClient::new(crate::common::with_key(&s.plain, Some(&reader)));
    let page = |cursor: &str, filter: &str| ListChangesRequest {
        parent: "tenants/acme".into(),
        cursor: cursor.into(),
        filter: filter.into(),
        page_size: 2,
    };
    // From now: nothing yet, and a cursor.
    let now = feed.list_changes(page("", "")).await.unwrap().into_inner();
    assert!(now.events.is_empty());
    let a = s.user("acme", "a@example.com", "A").await;
    crate::common::create_key(&s.channel, "acme", &[Scope::Read], false).await;
    let b = s.user("acme", "b@example.com", "B").await;
    let c = s.user("acme", "c@example.com", "C").await;
    let first = feed
        .list_changes(page(&now.next_cursor, ""))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = first
        .events
        .iter()
        .map(|e| e.event.as_ref().unwrap().resource.as_str())
        .collect();
    assert_eq!(
        names,
        [a.name.as_str(), b.name.as_str()],
        "the key's event is not the reader's"
    );
    let rest = feed
        .list_changes(page(&first.next_cursor, ""))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = rest
        .events
        .iter()
        .map(|e| e.event.as_ref().unwrap().resource.as_str())
        .collect();
    assert_eq!(names, [c.name.as_str()]);
    // Each event's cursor resumes after it.
    let after_b = first.events[1].cursor.clone();
    let again = feed.list_changes(page(&after_b, "")).await.unwrap().into_inner();
    assert_eq!(again.events[0].event.as_ref().unwrap().resource, c.name);
    // A filter that keeps nothing still moves the cursor.
    let none = feed
        .list_changes(page(&now.next_cursor, "type = \"tenant.updated\""))
        .await
        .unwrap()
        .into_inner();
    assert!(none.events.is_empty());
    let past = feed
        .list_changes(page(&none.next_cursor, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(past.events.is_empty(), "{:?}", past.events);

    // Broken cursors.
    let bad = feed.list_changes(page("not a cursor", "")).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let tamper = |cursor: &str, change: &dyn Fn(&mut Vec<String>)| {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let text = String::from_utf8(engine.decode(cursor).unwrap()).unwrap();
        let mut parts: Vec<String> = text.split(':').map(str::to_owned).collect();
        change(&mut parts);
        engine.encode(parts.join(":"))
    };
    let other_epoch = tamper(&after_b, &|p| p[2] = "1".into());
    let e = feed.list_changes(page(&other_epoch, "")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (tonic::Code::FailedPrecondition, "CURSOR_EPOCH_MISMATCH")
    );
    let other_event = tamper(&after_b, &|p| p[4] = uuid::Uuid::now_v7().simple().to_string());
    let e = feed.list_changes(page(&other_event, "")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (tonic::Code::FailedPrecondition, "CURSOR_DIVERGED")
    );
    let future = tamper(&after_b, &|p| p[3] = "999".into());
    let e = feed.list_changes(page(&future, "")).await.unwrap_err();
    assert_eq!(reason(&e), "CURSOR_DIVERGED");
    // Past retention: the events after it are purged.
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    use userdir_domain::repo::EventRepository;
    // As if a year went by: the default 180 days are past.
    let later = userdir_domain::text::Timestamp::from_unix_micros(
        userdir_domain::text::Timestamp::now().unix_micros() + 365 * 86_400_000_000,
    );
    // Its own event purged, a cursor still resumes: nothing after it is gone.
    assert_eq!(store.purge_events(later, 180, 2).await.unwrap(), 2);
    feed.list_changes(page(&now.next_cursor, "")).await.unwrap();
    assert_eq!(store.purge_events(later, 180, 1).await.unwrap(), 1);
    let e = feed.list_changes(page(&now.next_cursor, "")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (tonic::Code::OutOfRange, "CURSOR_EXPIRED")
    );
    assert!(e.message().contains("export"), "{}", e.message());
    store.close().await.unwrap();
}

/// A watcher sees what commits after its cursor, in order, live, and ends
/// with a cursor to resume from.
async fn a_watcher_follows_the_commits(s: TestServer) {
    s.tenant("acme").await;
    let a = s.user("acme", "a@example.com", "A").await;
    let mut stream = events(&s)
        .watch_changes(WatchChangesRequest {
            parent: "tenants/acme".into(),
            cursor: "oldest".into(),
            bookmark_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut next_event = async || loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if let Some(watch_changes_response::Kind::Event(e)) = message.kind {
            return e;
        }
    };
    assert_eq!(next_event().await.event.unwrap().r#type, "tenant.created");
    assert_eq!(next_event().await.event.unwrap().resource, a.name);
    let b = s.user("acme", "b@example.com", "B").await;
    let seen = next_event().await;
    assert_eq!(seen.event.as_ref().unwrap().resource, b.name);
    // Resumed from that event's cursor, a new watcher starts after it.
    let c = s.user("acme", "c@example.com", "C").await;
    let mut resumed = events(&s)
        .watch_changes(WatchChangesRequest {
            parent: "tenants/acme".into(),
            cursor: seen.cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = resumed.message().await.unwrap().unwrap();
    match first.kind {
        Some(watch_changes_response::Kind::Event(e)) => assert_eq!(e.event.unwrap().resource, c.name),
        other => panic!("{other:?}"),
    }
    // Quiet: a bookmark whose cursor resumes at the same place.
    let bookmark = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(watch_changes_response::Kind::Bookmark(b)) = message.kind {
            break b;
        }
    };
    let after = events(&s)
        .list_changes(ListChangesRequest {
            parent: "tenants/acme".into(),
            cursor: bookmark.cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(after.events.is_empty(), "the bookmark stands after every event");
}

/// Many writers at once on one tenant, through another server whose every
/// write sleeps with its events numbered and its tenant locked, and fails
/// now and then after writing them: a watcher on this server sees 1..N,
/// none missing, none twice, no failed write's event; and the events
/// replayed are the directory.
async fn racing_writers_leave_a_gap_free_feed(s: TestServer) {
    s.tenant("acme").await;
    let mut faulty = s.store_options.clone();
    faulty.commit_faults = Some(userdir_store::CommitFaults {
        delay: Duration::from_millis(15),
        fail_one_in: 7,
    });
    let (replica, _stop) = s.replica_with(faulty).await;
    let mut stream = events(&s)
        .watch_changes(WatchChangesRequest {
            parent: "tenants/acme".into(),
            cursor: "oldest".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The watcher stops once it has seen the number the writers end at.
    let (last_tx, mut last_rx) = tokio::sync::watch::channel(i64::MAX);
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<Event> = Vec::new();
        while seen.last().map_or(0, |e| e.seq) < *last_rx.borrow_and_update() {
            tokio::select! {
                message = stream.message() => match message.unwrap() {
                    Some(WatchChangesResponse { kind: Some(watch_changes_response::Kind::Event(e)) }) => {
                        seen.push(e.event.unwrap());
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = last_rx.changed() => {}
            }
        }
        seen
    });
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let mut users = replica.clone();
            tokio::spawn(async move {
                let mut made = Vec::new();
                for i in 0..6 {
                    let created = users
                        .create_user(CreateUserRequest {
                            parent: "tenants/acme".into(),
                            user: Some(User {
                                email: format!("w{w}-{i}@example.com"),
                                display_name: format!("Writer {w} {i}"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .await;
                    if let Ok(user) = created {
                        made.push(user.into_inner());
                    }
                    if let Some(user) = made.get(i / 2) {
                        let _ = users
                            .update_user(UpdateUserRequest {
                                user: Some(User {
                                    name: user.name.clone(),
                                    display_name: format!("Renamed {w} {i}"),
                                    ..Default::default()
                                }),
                                update_mask: Some(prost_types::FieldMask {
                                    paths: vec!["display_name".into()],
                                }),
                            })
                            .await;
                    }
                    if i == 5
                        && let Some(user) = made.first()
                    {
                        let _ = users
                            .delete_user(DeleteUserRequest {
                                name: user.name.clone(),
                                ..Default::default()
                            })
                            .await;
                    }
                }
            })
        })
        .collect();
    // Two imports through the replica too.
    let imports: Vec<_> = (0..2)
        .map(|n| {
            let users = replica.clone();
            tokio::spawn(async move {
                let mut text = String::from("email,name\n");
                for i in 0..300 {
                    text.push_str(&format!("imp{n}-{i}@example.com,Imported {i}\n"));
                }
                let mut all = vec![ImportUsersRequest {
                    payload: Some(import_users_request::Payload::Options(options(ImportMode::Upsert))),
                }];
                all.extend(crate::import::chunks(text.as_bytes(), 4096));
                all.push(crate::import::end());
                let _ = crate::import::results_of(users, tonic::Request::new(tokio_stream::iter(all))).await;
            })
        })
        .collect();
    for task in writers.into_iter().chain(imports) {
        task.await.unwrap();
    }
    let newest = events(&s)
        .list_audit_events(ListAuditEventsRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events[0]
        .seq;
    last_tx.send(newest).unwrap();
    // The watcher catches up (its server hears of the replica's commits).
    let seen = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .expect("the watcher sees every event within 60 s")
        .unwrap();
    let all = history(&s, "acme").await;
    let seqs: Vec<i64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=newest).collect::<Vec<_>>(), "every number once, in order");
    assert_eq!(seen, all);
    let listed: BTreeMap<String, User> = crate::import::users_of(&s, "acme")
        .await
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect();
    assert_eq!(replay(&seen), listed, "the events replayed are the directory");
    // Each user's revision only rises along the feed.
    let mut revisions: HashMap<&str, i64> = HashMap::new();
    for e in &seen {
        if e.r#type.starts_with("user.") && e.r#type != "user.deleted" {
            let last = revisions.insert(&e.resource, e.resource_revision).unwrap_or(0);
            assert!(e.resource_revision > last, "{e:?}");
        }
    }
}

/// Export while others write, then follow the feed from the export's
/// cursor: the export and the events after it are the directory.
async fn export_then_follow_misses_nothing(s: TestServer) {
    s.tenant("acme").await;
    crate::import::seed_users(&s, 300).await;
    let writer = {
        let s_users = s.users.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let _ = s_users
                    .clone()
                    .create_user(CreateUserRequest {
                        parent: "tenants/acme".into(),
                        user: Some(User {
                            email: format!("late{i}@example.com"),
                            display_name: format!("Late {i}"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await;
            }
        })
    };
    let mut stream = s
        .users
        .clone()
        .export_users(ExportUsersRequest {
            parent: "tenants/acme".into(),
            format: ExportFormat::Rows as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = BTreeMap::new();
    let mut cursor = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.payload {
            Some(export_users_response::Payload::Rows(rows)) => {
                exported.extend(rows.users.into_iter().map(|u| (u.name.clone(), u)));
            }
            Some(export_users_response::Payload::Trailer(t)) => cursor = Some(t.change_cursor),
            _ => {}
        }
    }
    writer.await.unwrap();
    let after = changes_after(&s, "acme", &cursor.expect("a trailer")).await;
    for e in &after {
        match (&e.r#type[..], &e.resource_after) {
            ("user.deleted", _) => {
                exported.remove(&e.resource);
            }
            (_, Some(ResourceAfter::User(u))) => {
                exported.insert(e.resource.clone(), u.clone());
            }
            _ => {}
        }
    }
    let listed: BTreeMap<String, User> = crate::import::users_of(&s, "acme")
        .await
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect();
    assert_eq!(exported.len(), 340);
    assert_eq!(exported, listed);
}

/// A watcher whose reader stops reading is ended WATCHER_TOO_SLOW once it
/// falls a whole buffer behind, with its cursor in the status; resumed from
/// the last event it got, it misses nothing.
async fn a_slow_watcher_is_ended_and_resumes(s: TestServer) {
    s.tenant("acme").await;
    // From now: the watcher follows the hub at once.
    let mut stream = events(&s)
        .watch_changes(WatchChangesRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The reader reads nothing while 20,000 users come in batches of 1,000.
    crate::import::seed_users(&s, 20_000).await;
    let mut got: Vec<ChangeEvent> = Vec::new();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap()
        {
            Ok(Some(WatchChangesResponse {
                kind: Some(watch_changes_response::Kind::Event(e)),
            })) => got.push(e),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch ended OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::ResourceExhausted, "{ended:?}");
    assert_eq!(reason(&ended), "WATCHER_TOO_SLOW");
    let last = got.last().expect("some events came before the end");
    let total = 1 + 20_000 + 2;
    let got_last = 1 + got.len() as i64;
    assert!(got_last < total, "it was ended before the end");
    let seqs: Vec<i64> = got.iter().map(|e| e.event.as_ref().unwrap().seq).collect();
    assert_eq!(seqs, (2..=got_last).collect::<Vec<_>>());
    let rest: Vec<i64> = changes_after(&s, "acme", &last.cursor)
        .await
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(rest, ((got_last + 1)..=total).collect::<Vec<_>>());
}

/// An import cut off by its caller: the rows it committed have their
/// events, the rows it rolled back none.
async fn a_cut_import_leaves_events_for_its_committed_rows_only(s: TestServer) {
    s.tenant("acme").await;
    let (tx, mut stream) = crate::import::open_import(&s, options(ImportMode::Upsert)).await;
    let rows = crate::import::many_rows(30_000);
    let mut sent = 0;
    for chunk in rows.as_bytes().chunks(64 * 1024) {
        tx.send(ImportUsersRequest {
            payload: Some(import_users_request::Payload::Chunk(chunk.to_vec())),
        })
        .await
        .unwrap();
        sent += chunk.len();
        if sent > rows.len() / 2 {
            break;
        }
    }
    // Some results come back (committed), then the caller goes away.
    let first = stream.message().await.unwrap();
    assert!(first.is_some());
    drop(tx);
    drop(stream);
    let job = crate::import::latest_job_when_done(&s).await;
    assert_ne!(job.state, ImportJobState::Succeeded as i32, "{job:?}");
    let created = job.counts.as_ref().unwrap().created;
    let all = history(&s, "acme").await;
    let of_job: Vec<&Event> = all.iter().filter(|e| e.import_job == job.name).collect();
    let rows_created = of_job.iter().filter(|e| e.r#type == "user.created").count() as i64;
    assert_eq!(rows_created, created, "one event per committed row");
    assert_eq!(crate::import::users_of(&s, "acme").await.len() as i64, created);
    assert_eq!(of_job.first().map(|e| e.r#type.as_str()), Some("import.started"));
    assert_eq!(of_job.last().map(|e| e.r#type.as_str()), Some("import.finished"));
}

/// A tenant keeps its events as long as it says (at most ten years), the
/// others as long as the server's default; the purge goes oldest first.
async fn retention_is_per_tenant(s: TestServer) {
    use userdir_domain::repo::EventRepository;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let keep = |days: u32| UpdateTenantRequest {
        tenant: Some(Tenant {
            name: "tenants/acme".into(),
            audit_retention_days: days,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["audit_retention_days".into()],
        }),
    };
    let too_long = s.tenants.clone().update_tenant(keep(3651)).await.unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    let acme = s.tenants.clone().update_tenant(keep(400)).await.unwrap().into_inner();
    assert_eq!(acme.audit_retention_days, 400);
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    let in_a_year = userdir_domain::text::Timestamp::from_unix_micros(
        userdir_domain::text::Timestamp::now().unix_micros() + 365 * 86_400_000_000,
    );
    // globex's one event (created) goes; acme's two (created, updated) stay.
    assert_eq!(store.purge_events(in_a_year, 180, 1000).await.unwrap(), 1);
    assert_eq!(history(&s, "acme").await.len(), 2);
    assert!(history(&s, "globex").await.is_empty());
    store.close().await.unwrap();
}

/// The scan every test's teardown runs finds a secret where one is.
async fn the_secret_scan_finds_a_planted_token(s: TestServer) {
    use sea_orm::ConnectionTrait;
    s.tenant("acme").await;
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    assert_eq!(crate::common::secrets_in_events(&s.store_options).await, None);
    store
        .connection()
        .execute_unprepared("UPDATE events SET after = after || ' udk_planted' WHERE seq = 1")
        .await
        .unwrap();
    let found = crate::common::secrets_in_events(&s.store_options).await;
    assert!(found.is_some_and(|f| f.contains("udk_planted")));
    store
        .connection()
        .execute_unprepared("UPDATE events SET after = replace(after, ' udk_planted', '') WHERE seq = 1")
        .await
        .unwrap();
    store.close().await.unwrap();
}

crate::on_both_backends!(
    every_change_writes_exactly_its_events,
    the_audit_log_reads_newest_first_and_filters,
    the_feed_resumes_from_its_cursor,
    a_watcher_follows_the_commits,
    racing_writers_leave_a_gap_free_feed,
    export_then_follow_misses_nothing,
    the_secret_scan_finds_a_planted_token,
    a_cut_import_leaves_events_for_its_committed_rows_only,
    retention_is_per_tenant,
);

/// With a buffer of one batch, as `--feed-buffer-batches 1` sets it.
async fn slow_watcher(backend: crate::common::Backend) {
    let Some(s) = crate::common::spawn_with(backend, |c| c.feed_buffer_batches = 1).await else {
        return;
    };
    a_slow_watcher_is_ended_and_resumes(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_slow_watcher_is_ended_and_resumes() {
    slow_watcher(crate::common::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_slow_watcher_is_ended_and_resumes() {
    slow_watcher(crate::common::Backend::Postgres).await;
}
