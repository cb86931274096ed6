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
use userdir::config::Config;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{CreateTenantRequest, CreateUserRequest, Tenant, User};
use userdir_store::Store;

pub mod pgproxy;
pub mod pki;

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
    pub users: UserDirectoryClient<Channel>,
    pub tenants: TenantAdminClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    pub addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<String>,
    /// How the server reaches its database, for tests that must reach behind it.
    pub store_options: userdir_store::StoreOptions,
}

/// Starts a server on `backend`, or `None` when PostgreSQL is not reachable
/// outside CI (with `CI=true` a missing PostgreSQL fails the test instead).
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
            (Config::for_test(url), Some(dir), None)
        }
        Backend::Postgres => {
            let url = pg_url();
            let admin = match Database::connect(url.as_str()).await {
                Ok(db) => db,
                Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                    eprintln!("skipping PostgreSQL test: {url} not reachable ({e}); set CI=true to make this fail");
                    return None;
                }
                Err(e) => panic!("PostgreSQL at {url} is required when CI=true: {e}"),
            };
            let schema = format!("it_{}", uuid::Uuid::now_v7().simple());
            admin
                .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
                .await
                .expect("create schema");
            admin.close().await.ok();
            let mut config = Config::for_test(url);
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
    let server = TestServer {
        users: UserDirectoryClient::new(channel.clone()),
        tenants: TenantAdminClient::new(channel.clone()),
        health: HealthClient::new(channel.clone()),
        channel,
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
    pub async fn replica(&self) -> (UserDirectoryClient<Channel>, oneshot::Sender<()>) {
        let store = Store::open(&self.store_options)
            .await
            .expect("open the shared database");
        let config = Config::for_test(self.store_options.url.clone());
        let listener = TcpListener::bind(config.listen).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = userdir::server::serve(listener, store, &config, async {
                let _ = rx.await;
            })
            .await;
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        (UserDirectoryClient::new(channel), tx)
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
        if let Some(schema) = self.pg_schema.take() {
            // Drop the schema from a plain thread: Drop cannot await.
            let url = pg_url();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(db) = Database::connect(url.as_str()).await {
                        let _ = db
                            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .await;
                        let _ = db.close().await;
                    }
                });
            })
            .join();
        }
    }
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
