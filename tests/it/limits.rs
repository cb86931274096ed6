//! One caller cannot take the server down: caps on concurrent imports and
//! exports (per tenant and in total, refused RESOURCE_EXHAUSTED with a retry
//! hint), a saturated pool answered RESOURCE_EXHAUSTED `SERVER_BUSY`, and the
//! caller's deadline (`grpc-timeout`) honoured by unary and streaming calls.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;
use userdir::pb::import_users_request::Payload;
use userdir::pb::{
    ExportFormat, ExportUsersRequest, ExportUsersResponse, ImportMode, ImportUsersRequest, LookupUserRequest,
    lookup_user_request,
};

use crate::common::{Backend, TestServer, reason, spawn_with};
use crate::import::{end, open_import, options, seed_users, try_open_import};

fn import_options(tenant: &str) -> userdir::pb::ImportOptions {
    userdir::pb::ImportOptions {
        parent: format!("tenants/{tenant}"),
        ..options(ImportMode::Upsert)
    }
}

/// Starts an import of `tenant`, or the status it was refused with.
async fn hold_import(
    s: &TestServer,
    tenant: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<ImportUsersRequest>,
        tonic::Streaming<userdir::pb::ImportUsersResponse>,
    ),
    tonic::Status,
> {
    try_open_import(s, import_options(tenant), None).await
}

/// Ends an import and reads it to its summary.
async fn finish(
    tx: tokio::sync::mpsc::Sender<ImportUsersRequest>,
    mut stream: tonic::Streaming<userdir::pb::ImportUsersResponse>,
) {
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Chunk(b"name,email\nA,a@example.com\n".to_vec())),
    })
    .await
    .unwrap();
    tx.send(end()).await.unwrap();
    while stream.message().await.unwrap().is_some() {}
}

/// The user of tenant acme with `email`.
async fn lookup(s: &TestServer, email: &str) -> Result<userdir::pb::User, tonic::Status> {
    let req = LookupUserRequest {
        parent: "tenants/acme".into(),
        key: Some(lookup_user_request::Key::Email(email.into())),
    };
    s.users.clone().lookup_user(req).await.map(tonic::Response::into_inner)
}

fn assert_refused(status: &tonic::Status, why: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(status), why, "{status:?}");
    let retry = status.get_details_retry_info().expect("a retry hint");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(5)), "{status:?}");
}

/// At most one import per tenant and two in the server: the second import
/// of a tenant and the third of the server are refused at once, with a
/// retry hint, and start once a slot is free.
async fn imports_over_their_caps_are_refused(backend: Backend) {
    let Some(s) = spawn_with(backend, |c| {
        c.max_imports = Some(2);
        c.max_imports_per_tenant = Some(1);
    })
    .await
    else {
        return;
    };
    for t in ["acme", "beta", "gamma"] {
        s.tenant(t).await;
    }
    let (acme_tx, acme) = hold_import(&s, "acme").await.unwrap();
    let refused = hold_import(&s, "acme").await.unwrap_err();
    assert_refused(&refused, "TOO_MANY_IMPORTS");
    assert!(
        refused.message().contains("tenant acme already runs 1 import ("),
        "{refused:?}"
    );
    let (beta_tx, beta) = hold_import(&s, "beta").await.unwrap();
    let refused = hold_import(&s, "gamma").await.unwrap_err();
    assert_refused(&refused, "TOO_MANY_IMPORTS");
    assert!(
        refused.message().contains("the server already runs 2 imports"),
        "{refused:?}"
    );
    // A refused import left no job behind.
    assert!(crate::import::import_jobs(&s).await.len() == 1);
    finish(acme_tx, acme).await;
    // The finished import's slot is free again (it is given back as the
    // import's task ends, a moment after its summary).
    let mut gamma = None;
    for _ in 0..50 {
        match hold_import(&s, "gamma").await {
            Ok(held) => {
                gamma = Some(held);
                break;
            }
            Err(status) => {
                assert_refused(&status, "TOO_MANY_IMPORTS");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let (gamma_tx, gamma) = gamma.expect("a slot came free");
    finish(gamma_tx, gamma).await;
    finish(beta_tx, beta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_imports_over_their_caps_are_refused() {
    imports_over_their_caps_are_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_imports_over_their_caps_are_refused() {
    imports_over_their_caps_are_refused(Backend::Postgres).await;
}

/// An export of 40,000 users whose reader took one message and reads no
/// more (more than the HTTP/2 window and the server's buffers hold).
async fn stalled_export(s: &TestServer, deadline: Option<Duration>) -> tonic::Streaming<ExportUsersResponse> {
    let mut req = tonic::Request::new(ExportUsersRequest {
        parent: "tenants/acme".into(),
        format: ExportFormat::Rows as i32,
        ..Default::default()
    });
    if let Some(deadline) = deadline {
        req.set_timeout(deadline);
    }
    let mut export = s.users.clone().export_users(req).await.unwrap().into_inner();
    export.message().await.unwrap().unwrap();
    export
}

/// Reads an export to its end: the error it ended with, if any.
async fn read_to_end(export: &mut tonic::Streaming<ExportUsersResponse>) -> Option<tonic::Status> {
    loop {
        match export.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(status) => return Some(status),
        }
    }
}

/// One export at a time (the pool of 4 allows one): a second is refused
/// with a retry hint while the first waits for its reader; the first ends
/// DEADLINE_EXCEEDED when its caller's deadline passes (not at the 30 s
/// stall timeout), and then the second may run. Meanwhile the pool is not
/// the export's alone: single calls go on.
async fn exports_over_their_cap_are_refused_and_deadlines_end_them(backend: Backend) {
    let Some(s) = spawn_with(backend, |c| c.db_max_connections = 4).await else {
        return;
    };
    s.tenant("acme").await;
    seed_users(&s, 40_000).await;
    let mut held = stalled_export(&s, Some(Duration::from_secs(2))).await;
    let refused = s
        .users
        .clone()
        .export_users(ExportUsersRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&refused, "TOO_MANY_EXPORTS");
    lookup(&s, "u00001@example.com").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ended = read_to_end(&mut held).await.expect("the export ended with an error");
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert!(ended.message().contains("deadline"), "{ended:?}");
    // Its slot is free: the next export runs to its trailer.
    let mut next = s
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
    assert_eq!(read_to_end(&mut next).await.map(|s| s.code()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_exports_over_their_cap_are_refused_and_deadlines_end_them() {
    exports_over_their_cap_are_refused_and_deadlines_end_them(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exports_over_their_cap_are_refused_and_deadlines_end_them() {
    exports_over_their_cap_are_refused_and_deadlines_end_them(Backend::Postgres).await;
}

/// With the only connection held by an export nobody reads, a call that
/// cannot get one in time is told the server is busy (RESOURCE_EXHAUSTED,
/// retryable, with a hint), not that the database is unavailable.
async fn saturated_pool_is_resource_exhausted(backend: Backend) {
    let Some(s) = spawn_with(backend, |c| {
        c.db_max_connections = 1;
        // Long enough for the seeding import, which shares the one connection
        // between its lookups, its writes and its job, under a busy test run.
        c.db_acquire_timeout_ms = 2000;
    })
    .await
    else {
        return;
    };
    s.tenant("acme").await;
    seed_users(&s, 40_000).await;
    let export = stalled_export(&s, None).await;
    let status = lookup(&s, "u00001@example.com").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "SERVER_BUSY", "{status:?}");
    assert!(status.message().contains("busy"), "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    drop(export);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_saturated_pool_is_resource_exhausted() {
    saturated_pool_is_resource_exhausted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_saturated_pool_is_resource_exhausted() {
    saturated_pool_is_resource_exhausted(Backend::Postgres).await;
}

/// A unary call over a bare HTTP/2 connection with a `grpc-timeout` header
/// (a tonic client would give up on its own at the deadline and report its
/// own CANCELLED): the server's `grpc-status` and `grpc-message`.
async fn raw_unary(
    addr: std::net::SocketAddr,
    path: &str,
    message: impl prost::Message,
    timeout: &str,
) -> (String, String) {
    let headers = [
        ("grpc-timeout", timeout.to_owned()),
        ("authorization", format!("Bearer {}", crate::common::operator_key())),
    ];
    crate::common::raw_call(addr, path, &message.encode_to_vec(), &headers).await
}

/// A call whose deadline passes is answered DEADLINE_EXCEEDED (not tonic's
/// CANCELLED "Timeout expired"); one that arrives with no time left is not
/// started, so nothing of it is written (one cut off at its commit may
/// land, as gRPC allows). A call with time to spare is not affected.
async fn unary_deadline_is_deadline_exceeded(backend: Backend) {
    let Some(s) = spawn_with(backend, |_| {}).await else {
        return;
    };
    s.tenant("acme").await;
    let create = |email: &str| userdir::pb::CreateUserRequest {
        parent: "tenants/acme".into(),
        user: Some(userdir::pb::User {
            email: email.into(),
            display_name: "Late".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = "/userdir.v1.UserDirectory/CreateUser";
    // No time left: DEADLINE_EXCEEDED (4), not started.
    for timeout in ["1u", "2m"] {
        let email = format!("late-{timeout}@example.com");
        let (status, message) = raw_unary(s.addr, path, create(&email), timeout).await;
        assert_eq!(status, "4", "{timeout}: {message}");
        assert!(message.contains("deadline"), "{message}");
        assert_eq!(lookup(&s, &email).await.unwrap_err().code(), Code::NotFound);
    }
    // A deadline that passes during the work: DEADLINE_EXCEEDED, or OK when
    // the work was quicker; never another code. Each a new email, so no
    // answer can be ALREADY_EXISTS; an OK user is stored.
    for i in 0..5 {
        let email = format!("racing-{i}@example.com");
        let (status, message) = raw_unary(s.addr, path, create(&email), "3m").await;
        assert!(["0", "4"].contains(&status.as_str()), "{status} {message}");
        if status == "0" {
            lookup(&s, &email).await.unwrap();
        }
    }
    let (status, message) = raw_unary(s.addr, path, create("on-time@example.com"), "10S").await;
    assert_eq!(status, "0", "{message}");
    lookup(&s, "on-time@example.com").await.unwrap();
}

/// Writes cut off by their deadlines at every point (BEGIN on the wire
/// among them) leave no connection inside a transaction: afterwards the
/// users table can be locked exclusively at once, as a migration would.
async fn cut_writes_leave_no_open_transaction(s: TestServer) {
    use sea_orm::ConnectionTrait;
    s.tenant("acme").await;
    let path = "/userdir.v1.UserDirectory/CreateUser";
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (addr, users) = (s.addr, s.users.clone());
            tokio::spawn(async move {
                for i in 0..150 {
                    let create = userdir::pb::CreateUserRequest {
                        parent: "tenants/acme".into(),
                        user: Some(userdir::pb::User {
                            email: format!("cut-{t}-{i}@example.com"),
                            display_name: "Cut".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let timeout = format!("{}u", 200 + (i * 37 + t * 101) % 3000);
                    let _ = raw_unary(addr, path, create, &timeout).await;
                    // A read, on whatever connection the pool hands out next.
                    let _ = users
                        .clone()
                        .lookup_user(userdir::pb::LookupUserRequest {
                            parent: "tenants/acme".into(),
                            key: Some(userdir::pb::lookup_user_request::Key::Email(
                                "cut-0-0@example.com".into(),
                            )),
                        })
                        .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let schema = s.store_options.pg_schema.clone().unwrap();
    let db = sea_orm::Database::connect(crate::common::pg_url().as_str())
        .await
        .unwrap();
    let locked = db
        .execute_unprepared(&format!(
            "BEGIN; SET LOCAL lock_timeout = '5s'; LOCK TABLE {schema}.users IN ACCESS EXCLUSIVE MODE; ROLLBACK"
        ))
        .await;
    assert!(locked.is_ok(), "a connection was left inside a transaction: {locked:?}");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_writes_leave_no_open_transaction() {
    if let Some(s) = crate::common::spawn_with(Backend::Postgres, |c| c.db_max_connections = 2).await {
        cut_writes_leave_no_open_transaction(s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unary_deadline_is_deadline_exceeded() {
    unary_deadline_is_deadline_exceeded(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unary_deadline_is_deadline_exceeded() {
    unary_deadline_is_deadline_exceeded(Backend::Postgres).await;
}

/// An import whose caller's deadline passes before its end message ends
/// DEADLINE_EXCEEDED: the rows reported stay, the job is CANCELLED and says
/// why, and the tenant's FULL_SYNC lock is free again.
async fn import_deadline_ends_the_import(backend: Backend) {
    let Some(s) = spawn_with(backend, |_| {}).await else {
        return;
    };
    s.tenant("acme").await;
    // Not in the file: a FULL_SYNC cut short by its deadline deletes nobody.
    s.user("acme", "keep@example.org", "Kept").await;
    let (tx, mut stream) = try_open_import(&s, options(ImportMode::FullSync), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Chunk(b"name,email\nA,a@example.com\n".to_vec())),
    })
    .await
    .unwrap();
    let mut reported = 0;
    let ended = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if let Some(userdir::pb::import_users_response::Payload::Results(batch)) = message.payload {
                    reported += batch.results.len();
                }
            }
            Ok(None) => panic!("the import ended OK without its end message"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert_eq!(reported, 1);
    lookup(&s, "a@example.com").await.unwrap();
    lookup(&s, "keep@example.org").await.unwrap();
    let job = crate::import::latest_job_when_done(&s).await;
    assert_eq!(job.state, userdir::pb::ImportJobState::Cancelled as i32, "{job:?}");
    assert!(job.error.contains("deadline"), "{job:?}");
    // The FULL_SYNC lock went with it.
    let (tx2, stream2) = open_import(&s, options(ImportMode::FullSync)).await;
    finish(tx2, stream2).await;
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_import_deadline_ends_the_import() {
    import_deadline_ends_the_import(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_import_deadline_ends_the_import() {
    import_deadline_ends_the_import(Backend::Postgres).await;
}
