//! Assembles the gRPC server: our services, health tied to the database,
//! reflection (v1 and v1alpha), the RPC log layer and graceful shutdown.
//! `main` and the integration tests run the same [`serve`].

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use userdir_domain::Directory;
use userdir_domain::feed::{Feed, FeedOptions};
use userdir_domain::page_token::PageTokens;
use userdir_domain::repo::Ping;
use userdir_store::Store;

use crate::auth::{Auth, AuthLayer};
use crate::config::{Config, redact_url};
use crate::deadline::DeadlineLayer;
use crate::grpc::api_keys::ApiKeysService;
use crate::grpc::events::EventsService;
use crate::grpc::health::ClosingHealth;
use crate::grpc::tenants::TenantAdminService;
use crate::grpc::users::UserDirectoryService;
use crate::pb;
use crate::pb::api_keys_server::ApiKeysServer;
use crate::pb::events_server::EventsServer;
use crate::pb::tenant_admin_server::TenantAdminServer;
use crate::pb::user_directory_server::UserDirectoryServer;
use crate::peer::PeerIdentityLayer;
use crate::telemetry::RpcLogLayer;
use crate::telemetry::metrics;

/// Services whose health is reported, besides the overall `""`.
const SERVICES: [&str; 3] = [
    "userdir.v1.UserDirectory",
    "userdir.v1.TenantAdmin",
    "userdir.v1.ApiKeys",
];
/// A health service name that is SERVING while the process runs, for
/// liveness probes that must not follow the database.
pub const LIVENESS: &str = "liveness";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: sea_orm::DbErr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection descriptors are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot read the service's keys: {0}")]
    Keys(userdir_domain::DomainError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the database schema is behind this version (pending: {0}); run `userdir migrate` first")]
    MigrationsPending(String),
    #[error("telemetry: {0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("operator key: {0}")]
    OperatorKey(String),
    #[error("{0}")]
    ClientCertKeys(String),
}

/// Opens the database (creating and migrating it, unless `--no-migrate`),
/// binds, and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    // A TLS setting that cannot work is named before anything starts.
    crate::tls::server_tls(&config)?;
    crate::certmap::CertKeys::parse(&config.client_cert_key).map_err(ServeError::ClientCertKeys)?;
    let url = redact_url(&config.database_url);
    let database = |source| ServeError::Database {
        url: url.clone(),
        source,
    };
    let store = Store::connect(&config.store_options()).await.map_err(database)?;
    if config.no_migrate {
        let pending = store.pending_migrations().await.map_err(database)?;
        if !pending.is_empty() {
            return Err(ServeError::MigrationsPending(pending.join(", ")));
        }
    } else {
        store.migrate().await.map_err(database)?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(
        %addr,
        database = %url,
        backend = ?store.backend(),
        tls = config.tls_cert.is_some(),
        client_certificates = config.tls_client_ca.is_some(),
        "userdir listening"
    );
    serve(listener, store.clone(), &config, shutdown).await?;
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the database pool failed");
    }
    tracing::info!("userdir stopped");
    Ok(())
}

/// Applies pending migrations (`userdir migrate`), under the same lock
/// replicas take at start.
pub async fn migrate(args: &crate::config::MigrateArgs) -> Result<(), ServeError> {
    let url = redact_url(&args.database_url);
    let store = Store::connect(&args.store_options())
        .await
        .map_err(|source| ServeError::Database {
            url: url.clone(),
            source,
        })?;
    let pending = store
        .pending_migrations()
        .await
        .map_err(|source| ServeError::Database {
            url: url.clone(),
            source,
        })?;
    store
        .migrate()
        .await
        .map_err(|source| ServeError::Database { url, source })?;
    if pending.is_empty() {
        println!("the database schema is up to date");
    } else {
        println!("applied {} migrations: {}", pending.len(), pending.join(", "));
    }
    let _ = store.close().await;
    Ok(())
}

/// Serves on `listener` with a migrated `store` until `shutdown` resolves, then
/// reports NOT_SERVING and lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let serving = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feed_stats = Arc::new(userdir_domain::feed::FeedStats::default());
    let (metrics, metrics_runtime) = metrics::start(
        config.metrics_listen,
        &store,
        Arc::clone(&serving),
        Arc::clone(&feed_stats),
    )
    .await?;
    let reporter = Health {
        reporter: HealthReporter::new(),
        serving,
    };
    reporter.set(ServingStatus::NotServing).await;
    reporter
        .reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let (stop_probe, probe_stopped) = watch::channel(false);
    let probe = tokio::spawn(probe_database(
        store.clone(),
        reporter.clone(),
        config.health_probe_interval(),
        probe_stopped,
    ));

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let sqlite = store.backend() == sea_orm::DbBackend::Sqlite;
    let key = store.page_token_key().await.map_err(ServeError::Keys)?;
    let store = Arc::new(store);
    let directory = Directory::new(Arc::clone(&store))
        .with_import_limits(config.import_limits())
        .with_key_quota(config.max_api_keys_per_tenant)
        .with_stream_limits(config.stream_limits())
        .with_page_tokens(PageTokens::new(&key));
    bootstrap_operator_key(&directory, config).await?;
    let cert_keys = crate::certmap::CertKeys::parse(&config.client_cert_key).map_err(ServeError::ClientCertKeys)?;
    let settings = crate::auth::AuthSettings {
        reflection_open: config.reflection_open(),
        cert_keys,
        acting_ttl: config.key_refresh(),
    };
    let auth = Auth::load(Arc::clone(&store), settings)
        .await
        .map_err(ServeError::Keys)?;
    let key_keeper = tokio::spawn(Arc::clone(&auth).maintain(config.key_refresh(), Duration::from_secs(60)));
    let sweeper = tokio::spawn(sweep_import_jobs(directory.clone(), sqlite));
    let purger = tokio::spawn(purge_events(directory.clone(), config.audit_retention_days));
    let lag_metrics = metrics.clone();
    let feed = Arc::new(
        Feed::new(
            Arc::clone(&store),
            FeedOptions {
                buffer_batches: config.feed_buffer_batches as usize,
                ..FeedOptions::default()
            },
        )
        .with_stats(feed_stats)
        .with_lag_observer(Arc::new(move |lag| lag_metrics.feed_lag(lag))),
    );
    let shutdown_reporter = reporter.clone();
    // Shutdown: NOT_SERVING at once and in-flight calls drain; when the
    // grace period is over, open imports and exports end UNAVAILABLE (an
    // import's committed rows stay and its job says why), and a moment later
    // the connections still open (stalled readers, health watches) close.
    let (shutting_down, mut shutdown_started) = watch::channel(false);
    let health_service = HealthServer::new(ClosingHealth::new(
        HealthService::from_health_reporter(reporter.reporter.clone()),
        shutdown_started.clone(),
    ));
    let health_port = match config.health_listen {
        Some(addr) => Some(serve_health(addr, health_service.clone()).await?),
        None => None,
    };
    let (closing_tx, closing_rx) = watch::channel(false);
    // Watchers never finish by themselves: they end as a shutdown starts
    // (SERVER_SHUTTING_DOWN) and resume on another replica from their cursor.
    let watchers_closing = shutdown_started.clone();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight calls");
        let _ = shutting_down.send(true);
        let _ = stop_probe.send(true);
        shutdown_reporter.set(ServingStatus::NotServing).await;
    };
    let grace = config.shutdown_grace();
    let grace_over = async move {
        let _ = shutdown_started.wait_for(|started| *started).await;
        tokio::time::sleep(grace).await;
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "shutdown grace period over: ending open streams"
        );
        let _ = closing_tx.send(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    let tls = crate::tls::server_tls(config)?;
    let reloader = tls
        .as_ref()
        .map(|tls| tls.spawn_reloader(Duration::from_secs(config.tls_reload_secs.max(1))));
    let router = Server::builder()
        // Many calls at once on one connection wait for each other at the
        // client, not in the server's memory; an idle peer that vanished is
        // noticed by the keepalive pings.
        .max_concurrent_streams(config.max_concurrent_streams.max(1))
        .http2_keepalive_interval(config.http2_keepalive())
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(PeerIdentityLayer)
        .layer(RpcLogLayer::new(metrics.clone()))
        .layer(DeadlineLayer)
        .layer(AuthLayer::new(Arc::clone(&auth)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(UserDirectoryServer::new(UserDirectoryService::new(
            directory.clone(),
            closing_rx,
            config.export_stall_timeout(),
            metrics,
            Arc::clone(&auth),
        )))
        .add_service(TenantAdminServer::new(TenantAdminService::new(directory.clone())))
        .add_service(EventsServer::new(EventsService::new(
            directory.clone(),
            Arc::clone(&feed),
            watchers_closing,
            Arc::clone(&auth),
        )))
        .add_service(ApiKeysServer::new(ApiKeysService::new(directory, Arc::clone(&auth))));
    let server: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match &tls {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(tls.incoming(incoming(listener)), graceful)),
        None => Box::pin(router.serve_with_incoming_shutdown(incoming(listener), graceful)),
    };
    let result = tokio::select! {
        result = server => result,
        () = grace_over => Ok(()),
    };
    probe.abort();
    sweeper.abort();
    purger.abort();
    key_keeper.abort();
    auth.flush().await;
    if let Some(health_port) = health_port {
        health_port.abort();
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    metrics_runtime.shutdown();
    Ok(result?)
}

/// Makes sure an operator can get in (see `Directory::bootstrap_operator_key`):
/// stores the configured operator key, or on a first start without one,
/// makes one, prints it once and saves it owner-only beside the SQLite file.
async fn bootstrap_operator_key(directory: &Directory<Store>, config: &Config) -> Result<(), ServeError> {
    use userdir_domain::keys::{Bootstrap, key_resource_name};
    let configured = config.configured_operator_key().map_err(ServeError::OperatorKey)?;
    let path = config.operator_key_path();
    if configured.is_none() && path.is_none() {
        // PostgreSQL (or memory): replicas share the database, and a key
        // printed by one of them would be lost in its logs.
        let present = directory
            .has_live_operator_key()
            .await
            .map_err(|e| ServeError::OperatorKey(e.to_string()))?;
        if !present {
            return Err(ServeError::OperatorKey(
                "the database holds no operator key and none is configured: set USERDIR_OPERATOR_KEY (or \
                 --operator-key-file) to a key or its hash, made with `userdir keys generate`"
                    .to_owned(),
            ));
        }
        return Ok(());
    }
    match directory
        .bootstrap_operator_key(configured)
        .await
        .map_err(|e| ServeError::OperatorKey(e.to_string()))?
    {
        Bootstrap::Configured { id, created } => {
            tracing::info!(key = %key_resource_name(id), stored_now = created, "operator key from the configuration")
        }
        Bootstrap::ConfiguredRevoked { id } => tracing::error!(
            key = %key_resource_name(id),
            "the configured operator key was revoked: it opens nothing; configure another (userdir keys generate)"
        ),
        Bootstrap::Present => {}
        Bootstrap::Generated(created) => {
            let Some(path) = path else {
                return Err(ServeError::OperatorKey("nowhere to save a generated key".to_owned()));
            };
            save_owner_only(&path, &created.token).map_err(|e| {
                ServeError::OperatorKey(format!("cannot save the new operator key to {}: {e}", path.display()))
            })?;
            tracing::warn!(
                key = %key_resource_name(created.key.id),
                file = %path.display(),
                "first start: an operator key was made and saved owner-only; it is shown once on standard error"
            );
            eprintln!(
                "\n  userdir: the first operator key of this installation (shown once, saved to {}):\n\n    \
                 {}\n\n  Send it as `authorization: Bearer <key>`; make narrower keys with `userdir keys create`.\n",
                path.display(),
                created.token
            );
        }
    }
    Ok(())
}

/// Writes `text` to `path` readable by its owner only (0600), replacing a
/// stale file through a rename so no reader sees half a key.
fn save_owner_only(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Serves the health service alone, in plaintext, on `addr` (`--health-listen`).
async fn serve_health(
    addr: std::net::SocketAddr,
    health: HealthServer<ClosingHealth>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(addr),
        "health endpoint listening (plaintext, grpc.health.v1 only)"
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming(listener))
            .await
        {
            tracing::warn!(error = %e, "the health endpoint stopped");
        }
    }))
}

/// Marks import jobs whose server stopped as INTERRUPTED: at start (on
/// SQLite every RUNNING job, since no other server can be running on the
/// file), then every quarter lease (PostgreSQL replicas each do it).
/// Purges the events past their retention, now and every ten minutes, in
/// batches that keep each delete short.
async fn purge_events(directory: Directory<Store>, default_days: u32) {
    loop {
        match directory.purge_events(default_days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "purged events past their retention"),
            Err(e) => tracing::warn!(error = %e, "could not purge old events"),
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

async fn sweep_import_jobs(directory: Directory<Store>, sqlite: bool) {
    let lease = directory.import_limits().job_lease;
    let mut first = sqlite;
    loop {
        let age = if first { Duration::ZERO } else { lease };
        first = false;
        match directory.interrupt_stale_imports(age).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "import jobs whose server stopped marked INTERRUPTED"),
            Err(e) => tracing::debug!(error = %e, "could not sweep import jobs"),
        }
        tokio::time::sleep((lease / 4).max(Duration::from_millis(250))).await;
    }
}

/// The connections `listener` accepts, with TCP_NODELAY on each: with Nagle
/// on, a small reply's second write waited for the client's delayed ACK,
/// about 40 ms a call (tonic applies `tcp_nodelay` only to listeners it binds
/// itself, not to an incoming stream it is handed).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Reflection over our protos, health, and `google.rpc` error details (so
/// grpcurl can print `BadRequest` and `ErrorInfo` of failed calls).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// The health service's state, and the same as a flag for the metrics.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
    serving: Arc<std::sync::atomic::AtomicBool>,
}

impl Health {
    async fn set(&self, status: ServingStatus) {
        self.serving
            .store(status == ServingStatus::Serving, std::sync::atomic::Ordering::Relaxed);
        self.reporter.set_service_status("", status).await;
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
    }
}

/// SERVING while the database answers, NOT_SERVING while it does not.
async fn probe_database(store: Store, reporter: Health, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut last: Option<bool> = None;
    loop {
        let up = matches!(
            tokio::time::timeout(every.max(Duration::from_secs(1)), store.ping()).await,
            Ok(Ok(()))
        );
        if last != Some(up) {
            if up {
                tracing::info!("database answers: SERVING");
            } else {
                tracing::warn!("database does not answer: NOT_SERVING");
            }
            reporter
                .set(if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                })
                .await;
            last = Some(up);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
