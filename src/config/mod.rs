//! Configuration: one typed struct, defaults in code, an optional TOML file
//! ([`file`]), `USERDIR_*` environment overrides, command-line flags over all.

pub mod file;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use userdir_domain::admission::{Cap, StreamLimits};

/// The default embedded database: a SQLite file in the working directory,
/// created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://userdir.db?mode=rwc";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Who may use reflection (`--reflection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReflectionAccess {
    /// Open when the server listens on a loopback address (a developer's
    /// machine, a sidecar), authenticated otherwise.
    #[default]
    Loopback,
    /// Open to anyone who reaches the port.
    Open,
    /// Only with a credential, like every other RPC.
    Authenticated,
}

/// Settings of `userdir serve`.
#[derive(Clone, Args)]
pub struct Config {
    /// TOML file of settings, keyed by these flags' names (`listen = "..."`,
    /// `database_url = "..."`); flags and `USERDIR_*` variables override it.
    #[arg(long, env = "USERDIR_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the settings in effect (secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on.
    #[arg(long, env = "USERDIR_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Database URL: `sqlite://FILE?mode=rwc` (default) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "USERDIR_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Database connection pool size.
    #[arg(long, env = "USERDIR_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How often the health check probes the database, in milliseconds.
    #[arg(long, env = "USERDIR_HEALTH_PROBE_MS", default_value_t = 2000)]
    pub health_probe_ms: u64,
    /// Log format.
    #[arg(long, env = "USERDIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// PostgreSQL schema (`search_path`) to use; empty for the default.
    #[arg(long, env = "USERDIR_PG_SCHEMA", default_value = "")]
    pub pg_schema: String,
    /// SQLite only: the largest the database file may grow, in MiB (0 = no
    /// limit); writes beyond it fail with RESOURCE_EXHAUSTED, as on a full disk.
    #[arg(long, env = "USERDIR_SQLITE_MAX_SIZE_MIB", default_value_t = 0)]
    pub sqlite_max_size_mib: u64,
    /// The largest row an import takes, in KiB of values; a longer row fails
    /// alone with RECORD_TOO_LARGE.
    #[arg(long, env = "USERDIR_MAX_RECORD_KIB", default_value_t = 64)]
    pub max_record_kib: usize,
    /// The largest workbook (.xlsx, .xls) an import takes, in MiB: it is
    /// spooled to a temporary file (in TMPDIR) while it arrives. A larger
    /// one fails RESOURCE_EXHAUSTED `WORKBOOK_TOO_LARGE`.
    #[arg(long, env = "USERDIR_IMPORT_MAX_WORKBOOK_MIB", default_value_t = 100)]
    pub import_max_workbook_mib: u64,
    /// The most an xlsx may inflate to, all its parts together, in MiB (its
    /// shared strings, held in memory while it is read, an eighth of it): a
    /// zip bomb fails RESOURCE_EXHAUSTED `WORKBOOK_INFLATES_TOO_FAR`.
    #[arg(long, env = "USERDIR_IMPORT_MAX_INFLATED_MIB", default_value_t = 1024)]
    pub import_max_inflated_mib: u64,
    /// Seconds after which a RUNNING import job without a heartbeat (its
    /// server stopped) is marked INTERRUPTED, by any replica.
    #[arg(long, env = "USERDIR_IMPORT_JOB_LEASE_SECS", default_value_t = 60)]
    pub import_job_lease_secs: u64,
    /// Seconds an import may go without a new row (a silent or trickling
    /// client) before it ends ABORTED `IMPORT_IDLE_TIMEOUT`.
    #[arg(long, env = "USERDIR_IMPORT_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub import_idle_timeout_secs: u64,
    /// Seconds in-flight calls get to finish after SIGTERM or Ctrl-C; then
    /// open imports and exports end UNAVAILABLE and the process exits.
    #[arg(long, env = "USERDIR_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Seconds an export waits for a reader that takes nothing before it
    /// ends (RESOURCE_EXHAUSTED `EXPORT_READER_STALLED`) and frees its snapshot.
    #[arg(long, env = "USERDIR_EXPORT_STALL_TIMEOUT_SECS", default_value_t = 30)]
    pub export_stall_timeout_secs: u64,
    /// Do not migrate the database at start (a separate `userdir migrate`
    /// job does); refuse to start if a migration is pending.
    #[arg(long, env = "USERDIR_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Milliseconds a request waits for a free database connection; then it
    /// fails RESOURCE_EXHAUSTED `SERVER_BUSY` (all busy) or UNAVAILABLE (the
    /// database does not answer).
    #[arg(long, env = "USERDIR_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,
    /// Imports that may run at once in the server (default: a quarter of
    /// `--db-max-connections`, at least 1); more are refused RESOURCE_EXHAUSTED
    /// `TOO_MANY_IMPORTS` with a retry hint.
    #[arg(long, env = "USERDIR_MAX_IMPORTS")]
    pub max_imports: Option<u32>,
    /// Imports that may run at once for one tenant (default: 2, or the total if smaller).
    #[arg(long, env = "USERDIR_MAX_IMPORTS_PER_TENANT")]
    pub max_imports_per_tenant: Option<u32>,
    /// Exports that may run at once in the server (default: a quarter of
    /// `--db-max-connections`, at least 1); more are refused `TOO_MANY_EXPORTS`.
    #[arg(long, env = "USERDIR_MAX_EXPORTS")]
    pub max_exports: Option<u32>,
    /// Exports that may run at once for one tenant (default: 2, or the total if smaller).
    #[arg(long, env = "USERDIR_MAX_EXPORTS_PER_TENANT")]
    pub max_exports_per_tenant: Option<u32>,
    /// HTTP/2 streams (calls) one connection may have open at once; a client
    /// that opens more waits for one to finish.
    #[arg(long, env = "USERDIR_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,
    /// PEM certificate (chain) the server presents: with `--tls-key`, the
    /// server speaks only TLS.
    #[arg(long, env = "USERDIR_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "USERDIR_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate it signed (mTLS).
    #[arg(long, env = "USERDIR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Seconds between checks of the TLS files for a rotated certificate
    /// (SIGHUP reloads at once).
    #[arg(long, env = "USERDIR_TLS_RELOAD_SECS", default_value_t = 10)]
    pub tls_reload_secs: u64,
    /// Seconds between HTTP/2 keepalive pings on an idle connection (0 = off);
    /// a peer that does not answer one within 20 s is disconnected.
    #[arg(long, env = "USERDIR_HTTP2_KEEPALIVE_SECS", default_value_t = 30)]
    pub http2_keepalive_secs: u64,
    /// Address of a Prometheus text endpoint (`GET /metrics`, plain HTTP) on
    /// a port of its own; off when not given. OTLP metrics and traces follow
    /// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` instead.
    #[arg(long, env = "USERDIR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of a plaintext port that serves only the gRPC health service
    /// (no API, no reflection), for probes that cannot speak TLS, such as
    /// Kubernetes' gRPC probes; off when not given. Service `liveness` there
    /// (and on the main port) is SERVING while the process runs, whatever
    /// the database does.
    #[arg(long, env = "USERDIR_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// The installation's operator key (every tenant, every scope): the key
    /// itself (`udk_...`) or its hash (`udkh_...`, as `userdir keys generate`
    /// prints both), stored at start if it is not yet. Without it and with
    /// no operator key stored, the first start on SQLite makes one, prints it
    /// once and saves it beside the database file (`userdir.operator-key`,
    /// owner-only).
    #[arg(
        long,
        env = "USERDIR_OPERATOR_KEY",
        hide_env_values = true,
        conflicts_with = "operator_key_file"
    )]
    pub operator_key: Option<String>,
    /// A file holding the operator key or its hash (a mounted Secret).
    #[arg(long, env = "USERDIR_OPERATOR_KEY_FILE")]
    pub operator_key_file: Option<std::path::PathBuf>,
    /// Maps a verified client certificate (with `--tls-client-ca`) to an API
    /// key: a call on that connection without an `authorization` header has
    /// the key's rights (revoke or expire the key to end them).
    /// `SELECTOR=apiKeys/ID`, SELECTOR one of `subject:CN=ops,O=Example`,
    /// `uri:spiffe://...`, `dns:host`, `email:addr`. Repeat the flag; in
    /// USERDIR_CLIENT_CERT_KEYS separate mappings with `;`; in the config
    /// file, a list.
    #[arg(
        long,
        env = "USERDIR_CLIENT_CERT_KEYS",
        value_delimiter = ';',
        requires = "tls_client_ca"
    )]
    pub client_cert_key: Vec<String>,
    /// Who may use gRPC reflection: `loopback` (default: open when listening
    /// on a loopback address, else a credential is needed), `open`, or
    /// `authenticated`.
    #[arg(long, env = "USERDIR_REFLECTION", value_enum, default_value_t = ReflectionAccess::Loopback)]
    pub reflection: ReflectionAccess,
    /// Milliseconds between re-reads of the API keys: a key revoked on any
    /// replica stops working on this one within this time. An acting user's
    /// role and enablement are taken as read for as long.
    #[arg(long, env = "USERDIR_KEY_REFRESH_MS", default_value_t = 2000)]
    pub key_refresh_ms: u64,
    /// Live API keys a tenant may hold at once (the operators' keys count
    /// together, as one more tenant); a create past it is RESOURCE_EXHAUSTED.
    #[arg(long, env = "USERDIR_MAX_API_KEYS_PER_TENANT", default_value_t = userdir_domain::keys::DEFAULT_KEY_QUOTA,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_api_keys_per_tenant: u32,

    /// Days the audit log and change feed keep an event; older ones are
    /// purged (a change-feed cursor older than that must start again).
    #[arg(long, env = "USERDIR_AUDIT_RETENTION_DAYS", default_value_t = 180,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_retention_days: u32,

    /// Batches of events (up to 1,000 each) a change-feed watcher may fall
    /// behind its tenant's newest before it is ended WATCHER_TOO_SLOW (it
    /// resumes from its cursor).
    #[arg(long, env = "USERDIR_FEED_BUFFER_BATCHES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub feed_buffer_batches: u32,
}

/// Settings of `userdir migrate`: just the database.
#[derive(Clone, Args)]
pub struct MigrateArgs {
    /// The TOML file of `serve` (only its database settings are used).
    #[arg(long, env = "USERDIR_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Database URL: `sqlite://FILE?mode=rwc` (default) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "USERDIR_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// PostgreSQL schema (`search_path`) to use; empty for the default.
    #[arg(long, env = "USERDIR_PG_SCHEMA", default_value = "")]
    pub pg_schema: String,
}

impl MigrateArgs {
    pub fn store_options(&self) -> userdir_store::StoreOptions {
        database_options(&self.database_url, &self.pg_schema, 2)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("db_max_connections", &self.db_max_connections)
            .field("health_probe_ms", &self.health_probe_ms)
            .field("log_format", &self.log_format)
            .field("pg_schema", &self.pg_schema)
            .field("sqlite_max_size_mib", &self.sqlite_max_size_mib)
            .field("max_record_kib", &self.max_record_kib)
            .field("import_max_workbook_mib", &self.import_max_workbook_mib)
            .field("import_max_inflated_mib", &self.import_max_inflated_mib)
            .field("import_job_lease_secs", &self.import_job_lease_secs)
            .field("import_idle_timeout_secs", &self.import_idle_timeout_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("export_stall_timeout_secs", &self.export_stall_timeout_secs)
            .field("no_migrate", &self.no_migrate)
            .field("db_acquire_timeout_ms", &self.db_acquire_timeout_ms)
            .field("max_imports", &self.max_imports)
            .field("max_imports_per_tenant", &self.max_imports_per_tenant)
            .field("max_exports", &self.max_exports)
            .field("max_exports_per_tenant", &self.max_exports_per_tenant)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("http2_keepalive_secs", &self.http2_keepalive_secs)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("tls_reload_secs", &self.tls_reload_secs)
            .field("metrics_listen", &self.metrics_listen)
            .field("health_listen", &self.health_listen)
            .field("operator_key", &self.operator_key.as_ref().map(|_| "***"))
            .field("operator_key_file", &self.operator_key_file)
            .field("client_cert_key", &self.client_cert_key)
            .field("reflection", &self.reflection)
            .field("key_refresh_ms", &self.key_refresh_ms)
            .field("max_api_keys_per_tenant", &self.max_api_keys_per_tenant)
            .field("audit_retention_days", &self.audit_retention_days)
            .field("feed_buffer_batches", &self.feed_buffer_batches)
            .finish()
    }
}

impl Config {
    /// Settings for tests: an ephemeral port and a fast health probe.
    pub fn for_test(database_url: impl Into<String>) -> Self {
        Self {
            config: None,
            print_config: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            db_max_connections: 8,
            health_probe_ms: 100,
            log_format: LogFormat::Text,
            pg_schema: String::new(),
            sqlite_max_size_mib: 0,
            max_record_kib: 64,
            import_max_workbook_mib: 100,
            import_max_inflated_mib: 1024,
            import_job_lease_secs: 60,
            import_idle_timeout_secs: 60,
            shutdown_grace_secs: 5,
            export_stall_timeout_secs: 30,
            no_migrate: false,
            db_acquire_timeout_ms: 5000,
            max_imports: None,
            max_imports_per_tenant: None,
            max_exports: None,
            max_exports_per_tenant: None,
            max_concurrent_streams: 100,
            http2_keepalive_secs: 30,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_secs: 10,
            metrics_listen: None,
            health_listen: None,
            operator_key: None,
            operator_key_file: None,
            client_cert_key: Vec::new(),
            reflection: ReflectionAccess::Loopback,
            key_refresh_ms: 200,
            max_api_keys_per_tenant: userdir_domain::keys::DEFAULT_KEY_QUOTA,
            audit_retention_days: 180,
            feed_buffer_batches: 256,
        }
    }

    /// The same, with `key` as the operator key.
    #[must_use]
    pub fn with_operator_key(mut self, key: impl Into<String>) -> Self {
        self.operator_key = Some(key.into());
        self
    }

    /// How often the API keys are re-read.
    pub fn key_refresh(&self) -> Duration {
        Duration::from_millis(self.key_refresh_ms.max(50))
    }

    /// Whether reflection needs no credential on this server.
    pub fn reflection_open(&self) -> bool {
        match self.reflection {
            ReflectionAccess::Open => true,
            ReflectionAccess::Authenticated => false,
            ReflectionAccess::Loopback => self.listen.ip().is_loopback(),
        }
    }

    /// The configured operator key (`--operator-key` or the file), read and
    /// parsed; the error names the setting, never the value.
    pub fn configured_operator_key(&self) -> Result<Option<userdir_domain::keys::ConfiguredKey>, String> {
        let text = match (&self.operator_key, &self.operator_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --operator-key-file {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let from = if self.operator_key.is_some() {
            "--operator-key (USERDIR_OPERATOR_KEY)".to_owned()
        } else {
            format!(
                "--operator-key-file {}",
                self.operator_key_file
                    .as_deref()
                    .unwrap_or_else(|| std::path::Path::new(""))
                    .display()
            )
        };
        userdir_domain::keys::ConfiguredKey::parse(&text)
            .map(Some)
            .map_err(|e| format!("{from}: {e}"))
    }

    /// Where a generated operator key is saved: beside the SQLite file
    /// (none for PostgreSQL or an in-memory database).
    pub fn operator_key_path(&self) -> Option<std::path::PathBuf> {
        let rest = self.database_url.strip_prefix("sqlite://")?;
        let file = rest.split('?').next().unwrap_or(rest);
        if file.is_empty() || file.contains(":memory:") {
            return None;
        }
        let dir = std::path::Path::new(file)
            .parent()
            .unwrap_or_else(|| std::path::Path::new(""));
        Some(dir.join("userdir.operator-key"))
    }

    /// The caps on imports and exports running at once: flags where given,
    /// else sized by the connection pool.
    pub fn stream_limits(&self) -> StreamLimits {
        let derived = StreamLimits::for_pool(self.db_max_connections);
        let cap = |total: Option<u32>, per_tenant: Option<u32>, default: Cap| {
            let total = total.unwrap_or(default.total).max(1);
            Cap {
                total,
                per_tenant: per_tenant.unwrap_or(default.per_tenant.min(total)).max(1),
            }
        };
        StreamLimits {
            imports: cap(self.max_imports, self.max_imports_per_tenant, derived.imports),
            exports: cap(self.max_exports, self.max_exports_per_tenant, derived.exports),
        }
    }

    /// HTTP/2 keepalive ping interval, if on.
    pub fn http2_keepalive(&self) -> Option<Duration> {
        (self.http2_keepalive_secs > 0).then(|| Duration::from_secs(self.http2_keepalive_secs))
    }

    /// The limits every import runs under.
    pub fn import_limits(&self) -> userdir_domain::import::ImportLimits {
        userdir_domain::import::ImportLimits {
            max_record_bytes: self.max_record_kib.saturating_mul(1024).max(1024),
            job_lease: Duration::from_secs(self.import_job_lease_secs.max(1)),
            idle_timeout: Duration::from_secs(self.import_idle_timeout_secs.max(1)),
            workbook: userdir_domain::import::workbook::WorkbookLimits {
                max_bytes: self.import_max_workbook_mib.max(1).saturating_mul(1024 * 1024),
                max_inflated_bytes: self.import_max_inflated_mib.max(1).saturating_mul(1024 * 1024),
            },
        }
    }

    /// How long an export waits for a reader that takes nothing.
    pub fn export_stall_timeout(&self) -> Duration {
        Duration::from_secs(self.export_stall_timeout_secs.max(1))
    }

    /// How long in-flight calls get after a shutdown signal.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn health_probe_interval(&self) -> Duration {
        Duration::from_millis(self.health_probe_ms.max(10))
    }

    pub fn store_options(&self) -> userdir_store::StoreOptions {
        let mut options = database_options(&self.database_url, &self.pg_schema, self.db_max_connections);
        options.sqlite_max_size_mib = self.sqlite_max_size_mib;
        options.acquire_timeout = Duration::from_millis(self.db_acquire_timeout_ms.max(1));
        options
    }
}

/// How `serve` and `migrate` open the database named by their flags.
fn database_options(url: &str, pg_schema: &str, max_connections: u32) -> userdir_store::StoreOptions {
    let mut options = userdir_store::StoreOptions::new(url);
    options.max_connections = max_connections.max(1);
    options.pg_schema = (!pg_schema.is_empty()).then(|| pg_schema.to_owned());
    options
}

/// Query parameters of a database URL that hold secrets.
const SECRET_PARAMS: [&str; 3] = ["password", "sslpassword", "passfile"];

/// The URL with every password (in the user info, or a `password=` query
/// parameter) replaced by `***`, safe to log. Parsed with a real URL parser
/// (the `url` crate): a hand-made split misses `?password=` and
/// percent-encoded forms. What does not parse is not shown at all.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "(a database URL that does not parse)".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|p| k.eq_ignore_ascii_case(p));
                (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_logged() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db?mode=rwc"), "sqlite://x.db?mode=rwc");
        for leaky in [
            "postgres://u@h/db?password=SENTINEL",
            "postgres://u@h/db?sslmode=require&PASSWORD=SENTINEL",
            "postgres://u:SEN%54INEL@h/db",
            "postgres://u:SENTINEL@h:5432/db?password=SENTINEL&application_name=x",
            "postgres://u:p@ss:SENTINEL@h/db",
        ] {
            let shown = redact_url(leaky);
            assert!(
                !shown.contains("SENTINEL") && !shown.contains("SEN%54"),
                "{leaky} -> {shown}"
            );
        }
        assert_eq!(
            redact_url("postgres://u@h/db?password=x&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
    }
}
