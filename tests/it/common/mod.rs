//! The test harness: a real server on `127.0.0.1:0`, the same `serve` that
//! `main` runs, on a fresh database per test (a SQLite file in a temp dir, or a
//! fresh PostgreSQL schema), and connected tonic clients.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use userdir::client::{AuthedChannel, BearerAuth, authed};
use userdir::config::Config;
use userdir::pb::api_keys_client::ApiKeysClient;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{CreateTenantRequest, CreateUserRequest, Tenant, User};
use userdir_store::Store;

pub mod pgproxy;
pub mod pki;

/// The operator key every test server is configured with (made once per
/// test process, the way a deployment supplies `USERDIR_OPERATOR_KEY`).
pub fn operator_key() -> &'static str {
    static KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        userdir_domain::apikey::NewApiKey::generate()
            .expect("random bytes")
            .token()
    });
    &KEY
}

/// Who the operator key is, as jobs and logs name it.
pub fn operator_principal() -> String {
    format!("apikey:{}", &operator_key()[4..36])
}

/// Test settings for `url`, with the operator key.
pub fn test_config(url: impl Into<String>) -> Config {
    Config::for_test(url).with_operator_key(operator_key())
}

/// `channel` calling with `key` (none: without a credential).
pub fn with_key(channel: &Channel, key: Option<&str>) -> AuthedChannel {
    authed(channel.clone(), BearerAuth::new(key).expect("a header-safe key"))
}

/// A new API key of `tenant` ("" for an operator's), made through `channel`
/// (a credential allowed to): its token, shown this once, and its record.
pub async fn create_key(
    channel: &AuthedChannel,
    tenant: &str,
    scopes: &[userdir::pb::Scope],
    act_as_users: bool,
) -> (String, userdir::pb::ApiKey) {
    let made = ApiKeysClient::new(channel.clone())
        .create_api_key(userdir::pb::CreateApiKeyRequest {
            api_key: Some(userdir::pb::ApiKey {
                display_name: format!("test {tenant} {scopes:?}"),
                tenant: if tenant.is_empty() {
                    String::new()
                } else {
                    format!("tenants/{tenant}")
                },
                scopes: scopes.iter().map(|s| *s as i32).collect(),
                act_as_users,
                ..Default::default()
            }),
        })
        .await
        .expect("create key")
        .into_inner();
    (made.token, made.api_key.expect("the key's record"))
}

/// A port nothing listens on right now, for a process the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The first JSON log line (`--log-format json`) that `wanted` accepts.
pub fn json_log_line(log: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| wanted(l))
        .unwrap_or_else(|| panic!("no such log line in:\n{log}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// PostgreSQL server the tests use; each test gets its own schema in it.
pub fn pg_url() -> String {
    std::env::var("USERDIR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub struct TestServer {
    /// Clients calling as the operator.
    pub users: UserDirectoryClient<AuthedChannel>,
    pub tenants: TenantAdminClient<AuthedChannel>,
    pub keys: ApiKeysClient<AuthedChannel>,
    pub health: HealthClient<Channel>,
    /// The operator's channel.
    pub channel: AuthedChannel,
    /// The same connection, with no credential.
    pub plain: Channel,
    pub addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<String>,
    /// How the server reaches its database, for tests that must reach behind it.
    pub store_options: userdir_store::StoreOptions,
}

/// Starts a server on `backend`, or `None` when PostgreSQL is not reachable
/// outside CI (in CI a missing PostgreSQL fails the test instead).
pub async fn spawn(backend: Backend) -> Option<TestServer> {
    spawn_with(backend, |_| {}).await
}

/// Like [`spawn`], letting the test adjust the config (e.g. its database URL).
pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestServer> {
    let _ = userdir::telemetry::init(userdir::config::LogFormat::Text);
    let (mut config, dir, pg_schema) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("userdir.db").display());
            (test_config(url), Some(dir), None)
        }
        Backend::Postgres => {
            let (url, schema) = spawn_bare_postgres_schema().await?;
            let mut config = test_config(url);
            config.pg_schema = schema.clone();
            (config, None, Some(schema))
        }
    };
    adjust(&mut config);
    let store_options = config.store_options();
    let store = Store::open(&config.store_options())
        .await
        .expect("open and migrate the test database");
    let listener = TcpListener::bind(config.listen).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        userdir::server::serve(listener, store, &config, async {
            let _ = rx.await;
        })
        .await
        .expect("server failed");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let operator = with_key(&channel, Some(operator_key()));
    let server = TestServer {
        users: UserDirectoryClient::new(operator.clone()),
        tenants: TenantAdminClient::new(operator.clone()),
        keys: ApiKeysClient::new(operator.clone()),
        health: HealthClient::new(channel.clone()),
        channel: operator,
        plain: channel,
        addr,
        shutdown: Some(tx),
        handle: Some(handle),
        _dir: dir,
        pg_schema,
        store_options,
    };
    server.wait_serving().await;
    Some(server)
}

impl TestServer {
    /// Another server on the same database (a replica), with a client; it
    /// stops when the returned sender is dropped.
    pub async fn replica(&self) -> (UserDirectoryClient<AuthedChannel>, oneshot::Sender<()>) {
        self.replica_with(self.store_options.clone()).await
    }

    /// A replica whose store opens with `options` (a test's faults, say).
    pub async fn replica_with(
        &self,
        options: userdir_store::StoreOptions,
    ) -> (UserDirectoryClient<AuthedChannel>, oneshot::Sender<()>) {
        let (addr, stop) = self.replica_on(options).await;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        (UserDirectoryClient::new(with_key(&channel, Some(operator_key()))), stop)
    }

    /// Another server on the same database: its address; it stops when the
    /// returned sender is dropped.
    pub async fn replica_at(&self) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        self.replica_on(self.store_options.clone()).await
    }

    async fn replica_on(&self, options: userdir_store::StoreOptions) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let store = Store::open(&options).await.expect("open the shared database");
        let mut config = test_config(self.store_options.url.clone());
        config.pg_schema = self.store_options.pg_schema.clone().unwrap_or_default();
        let listener = TcpListener::bind(config.listen).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = userdir::server::serve(listener, store, &config, async {
                let _ = rx.await;
            })
            .await;
        });
        (addr, tx)
    }

    /// Waits until health says SERVING (the first database probe ran).
    pub async fn wait_serving(&self) {
        for _ in 0..100 {
            if self.health_status("").await == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server never became SERVING");
    }

    /// The health status of `service` (1 = SERVING, 2 = NOT_SERVING).
    pub async fn health_status(&self, service: &str) -> i32 {
        let req = tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        };
        self.health
            .clone()
            .check(req)
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(-1)
    }

    /// Creates a tenant with default settings.
    pub async fn tenant(&self, id: &str) -> Tenant {
        self.tenant_with(
            id,
            Tenant {
                display_name: format!("Tenant {id}"),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn tenant_with(&self, id: &str, tenant: Tenant) -> Tenant {
        let req = CreateTenantRequest {
            tenant_id: id.to_owned(),
            tenant: Some(tenant),
            initial_owner: None,
        };
        self.tenants
            .clone()
            .create_tenant(req)
            .await
            .expect("create tenant")
            .into_inner()
    }

    /// Creates a user with just an email and a name.
    pub async fn user(&self, tenant: &str, email: &str, name: &str) -> User {
        self.create(
            tenant,
            User {
                email: email.into(),
                display_name: name.into(),
                ..Default::default()
            },
        )
        .await
        .expect("create user")
    }

    /// Creates a user with just an email (its name derived from it).
    pub async fn user_result(&self, tenant: &str, email: &str) -> Result<User, tonic::Status> {
        let user = User {
            email: email.into(),
            display_name: format!("Created for {email}"),
            ..Default::default()
        };
        self.create(tenant, user).await
    }

    pub async fn create(&self, tenant: &str, user: User) -> Result<User, tonic::Status> {
        let req = CreateUserRequest {
            parent: format!("tenants/{tenant}"),
            user: Some(user),
            validate_only: false,
        };
        self.users
            .clone()
            .create_user(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Sends the shutdown signal and waits up to `wait` for the server to
    /// stop, keeping its database; `true` when it stopped.
    pub async fn shut_down_within(&mut self, wait: Duration) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(handle) => tokio::time::timeout(wait, handle).await.is_ok(),
            None => true,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("graceful shutdown")
                .expect("join");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let schema = self.pg_schema.take();
        let options = self.store_options.clone();
        let check = !std::thread::panicking();
        // From a plain thread: Drop cannot await.
        let leaked = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let leaked = if check { secrets_in_events(&options).await } else { None };
                if let Some(schema) = schema {
                    drop_pg_schema(&schema).await;
                }
                leaked
            })
        })
        .join()
        .ok()
        .flatten();
        if let Some(leaked) = leaked {
            panic!("an event holds a secret: {leaked}");
        }
    }
}

/// Every test's events are scanned as its server goes: no event may hold
/// an API key's token (`udk_…`) or the hash of any key stored, in any text
/// it keeps. Returns what leaked, if anything did.
pub async fn secrets_in_events(options: &userdir_store::StoreOptions) -> Option<String> {
    let store = userdir_store::Store::connect(options).await.ok()?;
    let db = store.connection();
    let backend = db.get_database_backend();
    let text = |sql: &str| sea_orm::Statement::from_string(backend, sql.to_owned());
    let hashes: Vec<String> = db
        .query_all_raw(text("SELECT secret_hash FROM api_keys"))
        .await
        .ok()?
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect();
    let rows = db
        .query_all_raw(text(
            "SELECT resource || ' ' || changed_paths || ' ' || after || ' ' || coalesce(acting_user_email, '') || ' ' \
             || coalesce(certificate, '') || ' ' || coalesce(request_id, '') FROM events",
        ))
        .await
        .ok()?;
    let mut leaked = None;
    for row in rows {
        let Ok(event) = row.try_get_by_index::<String>(0) else {
            continue;
        };
        if event.contains("udk_") {
            leaked = Some(format!("a key token in {event:?}"));
        } else if let Some(hash) = hashes.iter().find(|h| event.contains(h.as_str())) {
            leaked = Some(format!("the key hash {hash} in {event:?}"));
        }
        if leaked.is_some() {
            break;
        }
    }
    let _ = store.close().await;
    leaked
}

/// The `BadRequest` field names of an error status.
pub fn violation_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `ErrorInfo.reason` of an error status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

/// Runs each listed test case on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(server) = $crate::common::spawn($crate::common::Backend::Sqlite).await {
                        super::$name(server).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(server) = $crate::common::spawn($crate::common::Backend::Postgres).await {
                        super::$name(server).await;
                    }
                }
            )*
        }
    };
}

/// Whether this run is CI's, where a skipped test is a failed one: `CI`
/// set to anything but empty, `0` or `false` (CI systems set `true` or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// A test that cannot run here: outside CI it says why and is skipped; in
/// CI it fails, naming why.
pub fn skip(why: &str) {
    assert!(!in_ci(), "a test cannot run, and in CI a skip is a failure: {why}");
    eprintln!("skipping: {why} (in CI this fails)");
}

/// A fresh, empty PostgreSQL schema (no server, no migrations): its URL and
/// name; `None` when PostgreSQL is not reachable outside CI.
pub async fn spawn_bare_postgres_schema() -> Option<(String, String)> {
    let url = pg_url();
    let admin = match Database::connect(url.as_str()).await {
        Ok(db) => db,
        Err(e) => {
            skip(&format!("PostgreSQL at {url} is not reachable ({e})"));
            return None;
        }
    };
    let schema = format!("it_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    admin.close().await.ok();
    Some((url, schema))
}

/// Drops a schema [`spawn_bare_postgres_schema`] made. A session that still
/// holds a lock in it 15 s on (a server's connection left inside a
/// transaction) is named on stderr and ended, so that no test run waits
/// forever on a teardown.
pub async fn drop_pg_schema(schema: &str) {
    let Ok(db) = Database::connect(pg_url().as_str()).await else {
        return;
    };
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    // One round trip, so the timeout holds on the connection that drops (a
    // pool hands each statement any of its connections).
    let timed_drop = format!("SET lock_timeout = '15s'; {drop}");
    if db.execute_unprepared(&timed_drop).await.is_err() {
        let holders = format!(
            "SELECT a.pid, a.state, left(a.query, 200) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE n.nspname = '{schema}' AND l.pid <> pg_backend_pid()"
        );
        if let Ok(rows) = db
            .query_all_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, holders))
            .await
        {
            for row in rows {
                let pid: i32 = row.try_get_by_index(0).unwrap_or_default();
                let state: Option<String> = row.try_get_by_index(1).unwrap_or_default();
                let query: Option<String> = row.try_get_by_index(2).unwrap_or_default();
                eprintln!("teardown of {schema}: ending session {pid} ({state:?}) that holds a lock: {query:?}");
                let _ = db
                    .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
                    .await;
            }
        }
        let _ = db.execute_unprepared(&drop).await;
    }
    let _ = db.close().await;
}

/// One gRPC call of `path` over a bare HTTP/2 connection (no client-side
/// deadline or credential of tonic's): `message` as its one request frame,
/// `headers` added; the server's `grpc-status` and decoded `grpc-message`.
pub async fn raw_call(
    addr: std::net::SocketAddr,
    path: &str,
    message: &[u8],
    headers: &[(&str, String)],
) -> (String, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(http_body_util::Full::new(hyper::body::Bytes::from(frame)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let mut headers = response.headers().clone();
    if !headers.contains_key("grpc-status") {
        let collected = response.into_body().collect().await.unwrap();
        headers.extend(collected.trailers().cloned().unwrap_or_default());
    }
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (get("grpc-status"), percent_decoded(&get("grpc-message")))
}

/// `grpc-message` as sent: percent-encoded UTF-8.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
