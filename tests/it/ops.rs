//! Operability: health tied to the database, reflection v1 and v1alpha,
//! graceful shutdown.

use std::time::Duration;

use tonic_reflection::pb::{v1, v1alpha};

use crate::common::pgproxy::{PgProxy, pg_target};
use crate::common::{Backend, TestServer, pg_url, spawn_with};

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

async fn health_reports_every_service(s: TestServer) {
    for service in ["", "userdir.v1.UserDirectory", "userdir.v1.TenantAdmin"] {
        assert_eq!(s.health_status(service).await, SERVING, "{service:?}");
    }
}

async fn reflection_v1_and_v1alpha(s: TestServer) {
    // v1
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(s.channel.clone());
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = response.message_response
    else {
        panic!("unexpected reflection response");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    // v1 lists the services it knows about; both reflection versions are served.
    for expected in [
        "grpc.health.v1.Health",
        "userdir.v1.TenantAdmin",
        "userdir.v1.UserDirectory",
    ] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }

    // v1alpha (what grpcurl 1.8 speaks): describe a message by symbol.
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol("userdir.v1.User".into()),
        ),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(s.channel.clone());
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
    ));
}

async fn graceful_shutdown(s: TestServer) {
    s.tenant("acme").await;
    let addr = s.addr;
    s.stop().await;
    let reconnect = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    assert!(reconnect.is_err(), "the port is closed after shutdown");
}

crate::on_both_backends!(
    health_reports_every_service,
    reflection_v1_and_v1alpha,
    graceful_shutdown
);

/// Health follows the database: NOT_SERVING while PostgreSQL does not answer,
/// SERVING again once it does; calls meanwhile fail UNAVAILABLE, not INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database() {
    let proxy = PgProxy::start(pg_target(&pg_url())).await;
    let url = proxy.url_through(&pg_url());
    let Some(s) = spawn_with(Backend::Postgres, |c| c.database_url = url).await else {
        return;
    };
    s.tenant("acme").await;
    assert_eq!(s.health_status("").await, SERVING);

    proxy.set_up(false);
    wait_for(&s, NOT_SERVING).await;
    assert_eq!(s.health_status("userdir.v1.UserDirectory").await, NOT_SERVING);
    // Liveness does not follow the database: no restarts for an outage.
    assert_eq!(s.health_status("liveness").await, SERVING);
    let err = s.create(
        "acme",
        userdir::pb::User {
            email: "a@example.com".into(),
            display_name: "A".into(),
            ..Default::default()
        },
    );
    let err = err.await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "the README promises UNAVAILABLE while the database is down: {err:?}"
    );
    assert!(
        !err.message().contains("postgres://"),
        "no connection details leak: {}",
        err.message()
    );

    proxy.set_up(true);
    wait_for(&s, SERVING).await;
    s.user("acme", "a@example.com", "A").await;
}

async fn wait_for(s: &TestServer, status: i32) {
    for _ in 0..200 {
        if s.health_status("").await == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never became {status}");
}

/// Every accepted connection has Nagle off (TCP_NODELAY): otherwise each
/// small reply waits about 40 ms for the client's delayed ACK.
#[tokio::test]
async fn accepted_sockets_have_nodelay() {
    use tokio_stream::StreamExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = userdir::server::incoming(listener);
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let accepted = incoming.next().await.unwrap().unwrap();
    assert!(accepted.nodelay().unwrap());
}

/// An export of 40,000 users (more than the client's HTTP/2 window and the
/// server's buffers hold) whose reader took one message and reads no more.
async fn stalled_export(s: &TestServer) -> tonic::Streaming<userdir::pb::ExportUsersResponse> {
    s.tenant("acme").await;
    crate::import::seed_users(s, 40_000).await;
    let req = userdir::pb::ExportUsersRequest {
        parent: "tenants/acme".into(),
        format: userdir::pb::ExportFormat::Rows as i32,
        ..Default::default()
    };
    let mut export = s.users.clone().export_users(req).await.unwrap().into_inner();
    export.message().await.unwrap().unwrap();
    export
}

/// A pool held by a long export (one connection, the export holds it while
/// its reader does not read) is a busy server, not a dead database: health
/// stays SERVING (the probe has a connection of its own).
async fn busy_pool_is_not_a_dead_database(backend: Backend) {
    let Some(s) = spawn_with(backend, |c| c.db_max_connections = 1).await else {
        return;
    };
    let export = stalled_export(&s).await;
    // The export now waits for its reader, holding the only connection.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(s.health_status("").await, SERVING);
    }
    drop(export);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_busy_pool_is_not_a_dead_database() {
    busy_pool_is_not_a_dead_database(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_busy_pool_is_not_a_dead_database() {
    busy_pool_is_not_a_dead_database(Backend::Postgres).await;
}

/// SIGTERM with an import waiting for input and an export nobody reads:
/// after the grace period both end, the import's job says why (its lock
/// released), and the server stops instead of waiting for the clients.
async fn shutdown_ends_stalled_streams_after_the_grace_period(backend: Backend) {
    use userdir::pb::import_users_request::Payload;
    let Some(mut s) = spawn_with(backend, |c| c.shutdown_grace_secs = 1).await else {
        return;
    };
    s.tenant("acme").await;
    crate::import::seed_users(&s, 3000).await;
    let (tx, mut import) =
        crate::import::open_import(&s, crate::import::options(userdir::pb::ImportMode::FullSync)).await;
    tx.send(userdir::pb::ImportUsersRequest {
        payload: Some(Payload::Chunk(b"name,email\nA,u00001@example.com\n".to_vec())),
    })
    .await
    .unwrap();
    let req = userdir::pb::ExportUsersRequest {
        parent: "tenants/acme".into(),
        ..Default::default()
    };
    let _export = s.users.clone().export_users(req).await.unwrap().into_inner();
    assert!(
        s.shut_down_within(Duration::from_secs(15)).await,
        "the server waited for its clients"
    );
    // The import's client learns it ended, and why.
    let ended = loop {
        match import.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("the import ended OK at a shutdown");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(crate::common::reason(&status), "SERVER_SHUTTING_DOWN", "{status:?}");
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    let tenant = userdir_domain::tenant::TenantId::parse("tenant", "acme").unwrap();
    let jobs = userdir_domain::repo::ImportRepository::list_import_jobs(&store, &tenant, None, 10)
        .await
        .unwrap();
    let job = &jobs[0];
    assert_eq!(job.state, userdir_domain::import::ImportState::Cancelled, "{job:?}");
    assert!(job.error.contains("shutting down"), "{job:?}");
    // The FULL_SYNC listed one of the 3,000 users and never ended: all stay.
    let stored = sea_orm::PaginatorTrait::count(
        sea_orm::EntityTrait::find() as sea_orm::Select<userdir_store::entity::user::Entity>,
        store.connection(),
    )
    .await
    .unwrap();
    assert_eq!(stored, 3000);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_shutdown_ends_stalled_streams_after_the_grace_period() {
    shutdown_ends_stalled_streams_after_the_grace_period(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shutdown_ends_stalled_streams_after_the_grace_period() {
    shutdown_ends_stalled_streams_after_the_grace_period(Backend::Postgres).await;
}

/// An export whose reader stops reading gives its snapshot (and its pool
/// connection) up after the stall timeout, and its stream ends with an
/// error, never OK, once the reader reads on.
async fn stalled_export_frees_its_snapshot(backend: Backend) {
    let Some(s) = spawn_with(backend, |c| {
        c.db_max_connections = 1;
        c.export_stall_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    let mut export = stalled_export(&s).await;
    // The only connection is the export's until it gives up: this waits for it.
    let list = userdir::pb::ListUsersRequest {
        parent: "tenants/acme".into(),
        page_size: 1,
        ..Default::default()
    };
    s.users.clone().list_users(list).await.unwrap();
    let ended = loop {
        match export.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(crate::common::reason(&status), "EXPORT_READER_STALLED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stalled_export_frees_its_snapshot() {
    stalled_export_frees_its_snapshot(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stalled_export_frees_its_snapshot() {
    stalled_export_frees_its_snapshot(Backend::Postgres).await;
}

/// SIGTERM while a load balancer watches health and an import still drains
/// (grace period 30 s): the watch gets NOT_SERVING at once and then its
/// stream ends, instead of lasting until the grace period is over.
async fn shutdown_ends_health_watches(backend: Backend) {
    use tonic_health::pb::HealthCheckRequest;
    let Some(mut s) = spawn_with(backend, |c| c.shutdown_grace_secs = 30).await else {
        return;
    };
    s.wait_serving().await;
    s.tenant("acme").await;
    let (tx, _import) = crate::import::open_import(&s, crate::import::options(userdir::pb::ImportMode::Upsert)).await;
    let mut watch = s
        .health
        .clone()
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, SERVING);
    // The server starts draining; the open import keeps it from stopping.
    assert!(!s.shut_down_within(Duration::from_millis(50)).await);
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    assert_eq!(next.unwrap().unwrap().unwrap().status, NOT_SERVING);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    assert!(
        matches!(end, Ok(Ok(None))),
        "the watch went on after the shutdown began: {end:?}"
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_shutdown_ends_health_watches() {
    shutdown_ends_health_watches(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shutdown_ends_health_watches() {
    shutdown_ends_health_watches(Backend::Postgres).await;
}

/// Every call carries a request id: the caller's (`x-request-id`), or one
/// the server makes; it comes back in the response headers (and is in the
/// server's log line for the call).
async fn request_ids_are_echoed(backend: Backend) {
    let Some(s) = spawn_with(backend, |_| {}).await else {
        return;
    };
    let call = |id: Option<&str>| {
        let mut req = tonic::Request::new(userdir::pb::ListTenantsRequest::default());
        if let Some(id) = id {
            req.metadata_mut().insert("x-request-id", id.parse().unwrap());
        }
        let mut tenants = s.tenants.clone();
        async move {
            let response = tenants.list_tenants(req).await.unwrap();
            response
                .metadata()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        }
    };
    assert_eq!(call(Some("batch-7f3a")).await, "batch-7f3a");
    let made = call(None).await;
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made:?}");
    assert_ne!(made, call(None).await);
    // One too long to be an id is replaced, not echoed.
    let long = "x".repeat(200);
    let replaced = call(Some(&long)).await;
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_request_ids_are_echoed() {
    request_ids_are_echoed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_request_ids_are_echoed() {
    request_ids_are_echoed(Backend::Postgres).await;
}

/// `--health-listen`: a plaintext port with the health service alone (for
/// kubelet's gRPC probes, which cannot speak TLS): `""` follows the
/// database, `liveness` the process; the API and reflection are not there.
async fn health_port_serves_probes_only(backend: Backend) {
    let port = crate::common::free_port();
    let Some(s) = spawn_with(backend, |c| {
        c.health_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    })
    .await
    else {
        return;
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "liveness", "userdir.v1.UserDirectory", "userdir.v1.TenantAdmin"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, SERVING, "{service:?}");
    }
    assert_eq!(s.health_status("liveness").await, SERVING, "on the main port too");
    let err = userdir::pb::tenant_admin_client::TenantAdminClient::new(channel.clone())
        .list_tenants(userdir::pb::ListTenantsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "no API on the health port");
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let err = reflection
        .server_reflection_info(tokio_stream::iter(vec![v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await;
    let refused = match err {
        Err(status) => status.code() == tonic::Code::Unimplemented,
        Ok(response) => {
            let mut stream = response.into_inner();
            matches!(stream.message().await, Err(status) if status.code() == tonic::Code::Unimplemented)
        }
    };
    assert!(refused, "no reflection on the health port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_health_port_serves_probes_only() {
    health_port_serves_probes_only(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_port_serves_probes_only() {
    health_port_serves_probes_only(Backend::Postgres).await;
}
