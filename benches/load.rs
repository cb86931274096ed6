//! How the server behaves under load, each figure next to a reference
//! measured in the same run on a fresh server:
//!
//! 1. **Writes during an import.** Single-user writes (CreateUser and
//!    UpdateUser in another tenant, `LOAD_WRITERS` closed-loop callers) alone,
//!    then during an import of `LOAD_IMPORT_ROWS` (default 1,000,000) new
//!    users; the import alone on a fresh database, then under those writes.
//!    Reported: write latency p50/p99/max and rate, import rows/s and its
//!    ratio to the import alone.
//! 2. **Storm.** `LOAD_STORM_STREAMS` (default 120) imports and as many
//!    exports opened over two connections for `LOAD_STORM_SECS` (20 s), each
//!    caller retrying after the hint when refused, while a third connection
//!    measures GetUser and health latency. Reported: GetUser and health
//!    p50/p99 before (reference) and during the storm, streams completed and
//!    refused, the server's peak RSS.
//!
//! Run: `cargo bench --bench load` (needs `python3`; PostgreSQL from
//! `USERDIR_TEST_PG_URL`). `LOAD_BENCH_BACKENDS=sqlite` or `=postgres`
//! limits the backends, `LOAD_BENCH_PARTS=writes` or `=storm` the parts;
//! `USERDIR_BIN` runs another build of the server (an earlier commit).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{authed, operator_key};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// A connection calling as the operator.
type Channel = userdir::client::AuthedChannel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;
use userdir::pb::import_users_request::Payload;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{
    CreateTenantRequest, CreateUserRequest, ExportUsersRequest, GetUserRequest, ImportEnd, ImportMode, ImportOptions,
    ImportUsersRequest, Tenant, UpdateUserRequest, User,
};

const CHUNK: usize = 64 * 1024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A database for one server: a fresh SQLite file or PostgreSQL schema.
struct Db {
    url: String,
    schema: String,
    pg: String,
}

impl Db {
    fn fresh(backend: &str, dir: &Path, pg: &str, name: &str) -> Self {
        if backend == "sqlite" {
            let file = dir.join(format!("{name}.db"));
            Self {
                url: format!("sqlite://{}?mode=rwc", file.display()),
                schema: String::new(),
                pg: String::new(),
            }
        } else {
            let schema = format!("load_bench_{}", uuid::Uuid::now_v7().simple());
            psql(pg, &format!("CREATE SCHEMA {schema}"));
            Self {
                url: pg.to_owned(),
                schema,
                pg: pg.to_owned(),
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if !self.schema.is_empty() {
            psql(&self.pg, &format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }
}

fn psql(url: &str, sql: &str) {
    let status = Command::new("psql").args([url, "-q", "-c", sql]).status().unwrap();
    assert!(status.success(), "psql {sql} failed");
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(db: &Db) -> Server {
    let port = support::free_port();
    let bin = std::env::var("USERDIR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_userdir").to_owned());
    let mut child = Command::new(bin)
        .arg("serve")
        .env("USERDIR_LISTEN", format!("127.0.0.1:{port}"))
        .env("USERDIR_DATABASE_URL", &db.url)
        .env("USERDIR_PG_SCHEMA", &db.schema)
        .env("USERDIR_OPERATOR_KEY", operator_key())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start userdir");
    let addr = format!("http://127.0.0.1:{port}");
    support::wait_serving(&addr, &mut child).await;
    Server { child, addr }
}

async fn channel(addr: &str) -> Channel {
    authed(
        Endpoint::from_shared(addr.to_owned())
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap(),
    )
}

async fn create_tenant(ch: &Channel, id: &str) {
    TenantAdminClient::new(ch.clone())
        .create_tenant(CreateTenantRequest {
            tenant_id: id.into(),
            tenant: Some(Tenant {
                display_name: id.into(),
                ..Default::default()
            }),
            initial_owner: None,
        })
        .await
        .unwrap();
}

/// Imports `csv` into `tenant` (UPSERT); returns rows reported and seconds,
/// or the status it was refused with.
async fn import(ch: &Channel, tenant: &str, csv: &[u8]) -> Result<(u64, f64), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Options(ImportOptions {
            parent: format!("tenants/{tenant}"),
            mode: ImportMode::Upsert as i32,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let start = Instant::now();
    let bytes = csv.to_vec();
    let sender = tokio::spawn(async move {
        for chunk in bytes.chunks(CHUNK) {
            let message = ImportUsersRequest {
                payload: Some(Payload::Chunk(chunk.to_vec())),
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(ImportUsersRequest {
                payload: Some(Payload::End(ImportEnd {})),
            })
            .await;
    });
    let mut stream = UserDirectoryClient::new(ch.clone())
        .max_decoding_message_size(64 << 20)
        .import_users(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut rows = 0u64;
    while let Some(message) = stream.message().await? {
        if let Some(userdir::pb::import_users_response::Payload::Results(batch)) = message.payload {
            rows += batch.results.len() as u64;
        }
    }
    sender.abort();
    Ok((rows, start.elapsed().as_secs_f64()))
}

/// Latencies in microseconds.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    fn add(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    fn ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i] as f64 / 1000.0
    }

    fn summary(&mut self) -> String {
        format!("{:.1} | {:.1} | {:.1}", self.ms(0.5), self.ms(0.99), self.ms(1.0))
    }
}

/// Single-user writes in tenant `other` until `stop`: each caller creates a
/// user, then renames it, again and again. Returns the latencies.
async fn writes(ch: Channel, callers: usize, stop: Arc<AtomicBool>) -> (Latencies, u64, f64) {
    let start = Instant::now();
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (ch, stop, seq) = (ch.clone(), stop.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = UserDirectoryClient::new(ch);
            let mut lat = Latencies::default();
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let created = client
                    .create_user(CreateUserRequest {
                        parent: "tenants/other".into(),
                        user: Some(User {
                            email: format!("w{n}-{}@example.com", std::process::id()),
                            display_name: format!("Writer {n}"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await;
                lat.add(t.elapsed());
                let Ok(created) = created else {
                    failed += 1;
                    continue;
                };
                let mut user = created.into_inner();
                user.display_name = format!("Writer {n} renamed");
                let t = Instant::now();
                let updated = client
                    .update_user(UpdateUserRequest {
                        user: Some(user),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["display_name".into()],
                        }),
                    })
                    .await;
                lat.add(t.elapsed());
                failed += u64::from(updated.is_err());
            }
            (lat, failed)
        }));
    }
    let mut all = Latencies::default();
    let mut failed = 0;
    for task in tasks {
        let (lat, f) = task.await.unwrap();
        all.0.extend(lat.0);
        failed += f;
    }
    (all, failed, start.elapsed().as_secs_f64())
}

async fn writes_during_import(backend: &str, dir: &Path, pg: &str, csv: &[u8], rows: u64) {
    let callers = env_or("LOAD_WRITERS", 2usize);
    // The import alone, on a fresh database.
    let alone = {
        let db = Db::fresh(backend, dir, pg, "alone");
        let server = start(&db).await;
        let ch = channel(&server.addr).await;
        create_tenant(&ch, "bench").await;
        create_tenant(&ch, "other").await;
        // The writes alone, for their reference latency.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(writes(ch.clone(), callers, stop.clone()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        let (mut lat, failed, secs) = writer.await.unwrap();
        println!(
            "| {backend} | writes alone ({callers} callers) | {:.0}/s | {} | {failed} | |",
            lat.0.len() as f64 / secs,
            lat.summary()
        );
        let (n, secs) = import(&ch, "bench", csv).await.unwrap();
        assert_eq!(n, rows);
        let rate = n as f64 / secs;
        println!("| {backend} | import alone | {rate:.0} rows/s | | | | | 1.00x |");
        rate
    };
    // The import with the writes beside it, on another fresh database.
    let db = Db::fresh(backend, dir, pg, "contended");
    let server = start(&db).await;
    let ch = channel(&server.addr).await;
    create_tenant(&ch, "bench").await;
    create_tenant(&ch, "other").await;
    let stop = Arc::new(AtomicBool::new(false));
    // The writers get a connection of their own, as another service would.
    let writer = tokio::spawn(writes(channel(&server.addr).await, callers, stop.clone()));
    let (n, secs) = import(&ch, "bench", csv).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut lat, failed, wsecs) = writer.await.unwrap();
    assert_eq!(n, rows);
    let rate = n as f64 / secs;
    println!(
        "| {backend} | writes during the import | {:.0}/s | {} | {failed} | |",
        lat.0.len() as f64 / wsecs,
        lat.summary()
    );
    println!(
        "| {backend} | import beside the writes | {rate:.0} rows/s | | | | | {:.2}x |",
        rate / alone
    );
}

/// GetUser of `names` and health checks, closed loop, until `stop`.
async fn probes(ch: Channel, names: Arc<Vec<String>>, stop: Arc<AtomicBool>) -> (Latencies, Latencies, u64) {
    let get = {
        let (ch, stop) = (ch.clone(), stop.clone());
        tokio::spawn(async move {
            let mut client = UserDirectoryClient::new(ch);
            let mut lat = Latencies::default();
            let mut failed = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = client
                    .get_user(GetUserRequest {
                        name: names[i % names.len()].clone(),
                    })
                    .await;
                lat.add(t.elapsed());
                failed += u64::from(r.is_err());
                i += 7;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (lat, failed)
        })
    };
    let mut health = HealthClient::new(ch);
    let mut hlat = Latencies::default();
    let mut not_serving = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let r = health.check(HealthCheckRequest::default()).await;
        hlat.add(t.elapsed());
        not_serving += u64::from(!r.is_ok_and(|r| r.into_inner().status == 1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (glat, failed) = get.await.unwrap();
    (glat, hlat, failed + not_serving)
}

async fn storm(backend: &str, dir: &Path, pg: &str, csv: &[u8]) {
    let streams = env_or("LOAD_STORM_STREAMS", 120usize);
    let secs = env_or("LOAD_STORM_SECS", 20u64);
    let tenants = 12usize;
    let db = Db::fresh(backend, dir, pg, "storm");
    let server = start(&db).await;
    let probe_ch = channel(&server.addr).await;
    for t in 0..tenants {
        create_tenant(&probe_ch, &format!("storm-{t}")).await;
        import(&probe_ch, &format!("storm-{t}"), csv).await.unwrap();
    }
    create_tenant(&probe_ch, "probe").await;
    let mut names = Vec::new();
    let mut client = UserDirectoryClient::new(probe_ch.clone());
    for i in 0..200 {
        let user = client
            .create_user(CreateUserRequest {
                parent: "tenants/probe".into(),
                user: Some(User {
                    email: format!("p{i}@example.com"),
                    display_name: format!("Probe {i}"),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        names.push(user.into_inner().name);
    }
    let names = Arc::new(names);
    // Reference: the probes with nothing else going on.
    let stop = Arc::new(AtomicBool::new(false));
    let reference = tokio::spawn(probes(probe_ch.clone(), names.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut g0, mut h0, f0) = reference.await.unwrap();
    let rss_before = peak_rss_mib(server.child.id());
    // The storm: every caller runs its stream again and again, waiting as
    // told when refused; two connections carry them all.
    let connections = [channel(&server.addr).await, channel(&server.addr).await];
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let csv = Arc::new(csv.to_vec());
    let mut callers = Vec::new();
    for i in 0..streams * 2 {
        let ch = connections[i % 2].clone();
        let (stop, done, refused, failed, csv) =
            (stop.clone(), done.clone(), refused.clone(), failed.clone(), csv.clone());
        let tenant = format!("storm-{}", i % tenants);
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = if i % 4 < 2 {
                    import(&ch, &tenant, &csv).await.map(|_| ())
                } else {
                    export(&ch, &tenant).await
                };
                match result {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        let wait = status
                            .get_details_retry_info()
                            .and_then(|r| r.retry_delay)
                            .unwrap_or(Duration::from_secs(1));
                        tokio::time::sleep(wait).await;
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
    }
    let during = tokio::spawn(probes(probe_ch.clone(), names.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut g1, mut h1, f1) = during.await.unwrap();
    let rss = peak_rss_mib(server.child.id());
    for caller in callers {
        caller.abort();
    }
    println!(
        "| {backend} | reference | {} | {} | {f0} | | {rss_before:.0} |",
        g0.summary(),
        h0.summary()
    );
    println!(
        "| {backend} | storm of {streams} imports + {streams} exports, {secs} s | {} | {} | {f1} | {} done, {} refused, {} failed | {rss:.0} |",
        g1.summary(),
        h1.summary(),
        done.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}

async fn export(ch: &Channel, tenant: &str) -> Result<(), tonic::Status> {
    let mut stream = UserDirectoryClient::new(ch.clone())
        .export_users(ExportUsersRequest {
            parent: format!("tenants/{tenant}"),
            ..Default::default()
        })
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

fn generate(dir: &Path, rows: u64) -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let csv = dir.join(format!("users-{rows}.csv"));
    let status = Command::new("python3")
        .arg(root.join("benches/scripts/gen_users_csv.py"))
        .args(["--rows", &rows.to_string(), "--out"])
        .arg(&csv)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(csv).unwrap()
}

#[tokio::main]
async fn main() {
    let backends = std::env::var("LOAD_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let parts = std::env::var("LOAD_BENCH_PARTS").unwrap_or_else(|_| "writes,storm".into());
    let pg = std::env::var("USERDIR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let dir = tempfile::tempdir().unwrap();
    if parts.contains("writes") {
        let rows = env_or("LOAD_IMPORT_ROWS", 1_000_000u64);
        let csv = generate(dir.path(), rows);
        println!("Writes during an import of {rows} new users:");
        println!();
        println!("| backend | run | rate | p50 ms | p99 ms | max ms | failed | vs import alone |");
        println!("|---|---|---|---|---|---|---|---|");
        for backend in backends.split(',') {
            writes_during_import(backend, dir.path(), &pg, &csv, rows).await;
        }
        println!();
    }
    if parts.contains("storm") {
        let csv = generate(dir.path(), env_or("LOAD_STORM_ROWS", 2_000u64));
        println!("GetUser and health during a storm of imports and exports (each tenant 2,000 users):");
        println!();
        println!(
            "| backend | run | GetUser p50 ms | p99 ms | max ms | health p50 ms | p99 ms | max ms | failed probes | streams | peak RSS MiB |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for backend in backends.split(',') {
            storm(backend, dir.path(), &pg, &csv).await;
        }
    }
}
