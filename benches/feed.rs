//! The change feed through the real server, on each backend:
//! 1. **Delay**: one watcher while a client creates users (16 in flight);
//!    for each event, the time from its write (the event's own time, taken
//!    in its transaction before the commit) to its arrival at the watcher,
//!    next to the same run's CreateUser latency (the writer's own wait for
//!    its commit, the reference).
//! 2. **Fan-out**: `FEED_BENCH_WATCHERS` watchers (default 1,000) of one
//!    tenant on one server, then an import of `FEED_BENCH_BURST` (10,000)
//!    new users: whether every watcher got every event, how long the last
//!    took, the server's RSS before the watchers, with them, and at the
//!    peak, and the batches the server read from the database (from its
//!    Prometheus endpoint) against the events it delivered.
//!
//! Run: `cargo bench --bench feed` (PostgreSQL from `USERDIR_TEST_PG_URL`;
//! `FEED_BENCH_BACKENDS=sqlite` or `=postgres` limits the backends).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{connect, operator_key};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use userdir::pb::events_client::EventsClient;
use userdir::pb::import_users_request::Payload;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{
    CreateTenantRequest, CreateUserRequest, ImportEnd, ImportMode, ImportOptions, ImportUsersRequest, Tenant, User,
    WatchChangesRequest, watch_changes_response,
};

fn start_server(url: &str, schema: &str, port: u16, metrics_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_userdir"))
        .arg("serve")
        .env("USERDIR_LISTEN", format!("127.0.0.1:{port}"))
        .env("USERDIR_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("USERDIR_DATABASE_URL", url)
        .env("USERDIR_PG_SCHEMA", schema)
        .env("USERDIR_OPERATOR_KEY", operator_key())
        .env("USERDIR_MAX_CONCURRENT_STREAMS", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start userdir")
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A counter of the server's Prometheus endpoint.
async fn scrape(metrics_port: u16, name: &str) -> f64 {
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn watch(
    events: &mut EventsClient<userdir::client::AuthedChannel>,
) -> tonic::Streaming<userdir::pb::WatchChangesResponse> {
    events
        .watch_changes(WatchChangesRequest {
            parent: "tenants/bench".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn delay(addr: &str, writes: usize) -> (Vec<Duration>, Vec<Duration>) {
    let channel = connect(addr).await;
    let mut stream = watch(&mut EventsClient::new(channel.clone())).await;
    let watcher = tokio::spawn(async move {
        let mut delays = Vec::with_capacity(writes);
        while delays.len() < writes {
            let Some(message) = stream.message().await.unwrap() else {
                break;
            };
            if let Some(watch_changes_response::Kind::Event(e)) = message.kind {
                let event = e.event.unwrap();
                let time = event.time.unwrap();
                let written = time.seconds * 1_000_000 + i64::from(time.nanos) / 1_000;
                delays.push(Duration::from_micros((now_micros() - written).max(0) as u64));
            }
        }
        delays
    });
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (next, mut users) = (Arc::clone(&next), UserDirectoryClient::new(channel.clone()));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= writes as u64 {
                        return latencies;
                    }
                    let start = Instant::now();
                    users
                        .create_user(CreateUserRequest {
                            parent: "tenants/bench".into(),
                            user: Some(User {
                                email: format!("delay{i}@example.com"),
                                display_name: format!("Delay {i}"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    latencies.push(start.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in writers {
        latencies.extend(w.await.unwrap());
    }
    let mut delays = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .unwrap()
        .unwrap();
    delays.sort();
    latencies.sort();
    (delays, latencies)
}

async fn burst(addr: &str, rows: usize) {
    let mut text = String::from("email,name\n");
    for i in 0..rows {
        text.push_str(&format!("burst{i}@example.com,Burst {i}\n"));
    }
    let mut users = UserDirectoryClient::new(connect(addr).await).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(8);
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Options(ImportOptions {
            parent: "tenants/bench".into(),
            mode: ImportMode::Upsert as i32,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    tokio::spawn(async move {
        for chunk in text.as_bytes().chunks(64 * 1024) {
            tx.send(ImportUsersRequest {
                payload: Some(Payload::Chunk(chunk.to_vec())),
            })
            .await
            .unwrap();
        }
        tx.send(ImportUsersRequest {
            payload: Some(Payload::End(ImportEnd {})),
        })
        .await
        .unwrap();
    });
    let mut stream = users.import_users(ReceiverStream::new(rx)).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
}

#[tokio::main]
async fn main() {
    let backends = std::env::var("FEED_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let watchers: usize = std::env::var("FEED_BENCH_WATCHERS").map_or(1000, |v| v.parse().unwrap());
    let rows: usize = std::env::var("FEED_BENCH_BURST").map_or(10_000, |v| v.parse().unwrap());
    let pg = std::env::var("USERDIR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let dir = tempfile::tempdir().unwrap();
    let mut delays_table = Vec::new();
    let mut fanout_table = Vec::new();
    for backend in backends.split(',') {
        let (url, schema) = if backend == "sqlite" {
            let db = dir.path().join("feed.db");
            (format!("sqlite://{}?mode=rwc", db.display()), String::new())
        } else {
            let schema = format!("feed_bench_{}", uuid::Uuid::now_v7().simple());
            let status = Command::new("psql")
                .args([&pg, "-q", "-c", &format!("CREATE SCHEMA {schema}")])
                .status()
                .unwrap();
            assert!(status.success());
            (pg.clone(), schema)
        };
        let (port, metrics_port) = (support::free_port(), support::free_port());
        let addr = format!("http://127.0.0.1:{port}");
        let mut server = start_server(&url, &schema, port, metrics_port);
        support::wait_serving(&addr, &mut server).await;
        TenantAdminClient::new(connect(&addr).await)
            .create_tenant(CreateTenantRequest {
                tenant_id: "bench".into(),
                tenant: Some(Tenant {
                    display_name: "Bench".into(),
                    ..Default::default()
                }),
                initial_owner: None,
            })
            .await
            .unwrap();

        let (delays, latencies) = delay(&addr, 2_000).await;
        delays_table.push(format!(
            "| {backend} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            delays.len(),
            percentile(&delays, 0.5).as_secs_f64() * 1e3,
            percentile(&delays, 0.99).as_secs_f64() * 1e3,
            percentile(&delays, 1.0).as_secs_f64() * 1e3,
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        ));

        // Fan-out: the watchers over connections of 100 streams each.
        let pid = server.id();
        let rss_before = rss_mib(pid, "VmRSS:");
        let reads_before = scrape(metrics_port, "userdir_feed_batches_read").await;
        let expected = rows + 2; // import.started, the rows, import.finished
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut opened = 0;
        for _ in 0..watchers.div_ceil(100) {
            let channel = connect(&addr).await;
            for _ in 0..100.min(watchers - opened) {
                let mut stream = watch(&mut EventsClient::new(channel.clone())).await;
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let mut seen = 0usize;
                    let mut last = 0i64;
                    let mut in_order = true;
                    while seen < expected {
                        match stream.message().await {
                            Ok(Some(m)) => {
                                if let Some(watch_changes_response::Kind::Event(e)) = m.kind {
                                    let seq = e.event.unwrap().seq;
                                    in_order &= last == 0 || seq == last + 1;
                                    last = seq;
                                    seen += 1;
                                }
                            }
                            _ => break,
                        }
                    }
                    let _ = done.send((seen, in_order, Instant::now()));
                });
                opened += 1;
            }
        }
        drop(done_tx);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_watching = rss_mib(pid, "VmRSS:");
        let start = Instant::now();
        burst(&addr, rows).await;
        let imported = start.elapsed();
        let mut complete = 0;
        let mut ordered = true;
        let mut last_done = start;
        while let Ok(Some((seen, in_order, at))) = tokio::time::timeout(Duration::from_secs(120), done_rx.recv()).await
        {
            complete += usize::from(seen == expected);
            ordered &= in_order;
            last_done = last_done.max(at);
        }
        let reads = scrape(metrics_port, "userdir_feed_batches_read").await - reads_before;
        let delivered = scrape(metrics_port, "userdir_feed_events_delivered").await;
        fanout_table.push(format!(
            "| {backend} | {watchers} | {complete} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {reads:.0} | {delivered:.0} |",
            if ordered { "yes" } else { "NO" },
            imported.as_secs_f64(),
            (last_done - start).as_secs_f64(),
            rss_before,
            rss_watching,
            rss_mib(pid, "VmHWM:"),
        ));
        let _ = server.kill();
        let _ = server.wait();
        if !schema.is_empty() {
            let _ = Command::new("psql")
                .args([&pg, "-q", "-c", &format!("DROP SCHEMA {schema} CASCADE")])
                .status();
        }
    }
    println!("Delay from an event's write to a watcher, 2,000 CreateUser at 16 in flight:");
    println!();
    println!("| backend | events | p50 ms | p99 ms | max ms | CreateUser p50 ms (reference) | CreateUser p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    for line in delays_table {
        println!("{line}");
    }
    println!();
    println!("Fan-out: watchers of one tenant, then an import of {rows} new users:");
    println!();
    println!(
        "| backend | watchers | got every event | in order | import s | last watcher done s | RSS before MiB | RSS watching MiB | peak RSS MiB | batches read | events delivered |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for line in fanout_table {
        println!("{line}");
    }
}
