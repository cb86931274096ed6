//! Bulk import through the real server, next to the raw database load of the
//! same file in the same run.
//!
//! For each backend (SQLite, PostgreSQL) and each N in `IMPORT_BENCH_ROWS`
//! (default `100000,1000000`):
//! 1. the raw load: `sqlite3 .import` into a table with time-ordered ids and a
//!    unique email, or `psql \copy` into a table with a unique
//!    (tenant, lower(email)) index, the ceilings of `bench/`;
//! 2. the `userdir` server binary on a fresh database, fed the file by a
//!    streaming client in 64 KiB chunks: UPSERT of N new users, then the same
//!    file again (all UNCHANGED). Reported: rows/s, per-row result latency
//!    (from sending the chunk that completes a row to receiving its result),
//!    the rate of the first and last 10% of rows (where a tenth spans at
//!    least two transactions: results arrive a transaction at a time), and
//!    the server's peak RSS;
//! 3. `userdir import` (the CLI, as an operator runs it) of the same file
//!    into a fresh database, timed from start to exit;
//! 4. the raw load of the same file, by the same method, into an empty copy
//!    of the server's own schema (all its indexes), for where the database
//!    itself puts the ceiling.
//!
//! 5. with `IMPORT_BENCH_BASELINE_BIN` (another build's `userdir` binary,
//!    say the one before a change), UPSERT of the same N new users through
//!    it into a fresh database, in the same run: this build's rate against it.
//!
//! Run: `cargo bench --bench import` (needs `python3`, `sqlite3` and `psql`;
//! PostgreSQL from `USERDIR_TEST_PG_URL`). `IMPORT_BENCH_BACKENDS=sqlite` or
//! `=postgres` limits the backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{connect, operator_key};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use userdir::pb::import_users_request::Payload;
use userdir::pb::import_users_response::Payload as Out;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{CreateTenantRequest, ImportEnd, ImportMode, ImportOptions, ImportUsersRequest, Tenant};
use userdir_domain::import::GROUP_ROWS;

const CHUNK: usize = 64 * 1024;

struct Run {
    rows: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
    first10: f64,
    last10: f64,
    /// Rows/s of each tenth of the rows, in file order.
    deciles: Vec<f64>,
    failed: u64,
}

fn sh(cmd: &mut Command) {
    let status = cmd.status().expect("run command");
    assert!(status.success(), "{cmd:?} failed");
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

/// CPU seconds the process has used (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// `, custom_01{suffix}, ..., custom_10{suffix}`.
fn custom_columns(suffix: &str) -> String {
    (1..=10).map(|k| format!(", custom_{k:02}{suffix}")).collect()
}

/// Runs `program` with `script` on its standard input; returns the seconds it took.
fn timed_script(program: &mut Command, script: &str) -> f64 {
    use std::io::Write;
    let start = Instant::now();
    let mut child = program.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "{program:?} failed");
    start.elapsed().as_secs_f64()
}

fn raw_sqlite(csv: &Path, dir: &Path) -> f64 {
    let db = dir.join("raw.db");
    let _ = std::fs::remove_file(&db);
    let custom: String = custom_columns(" TEXT");
    let cols: String = custom_columns("");
    let uuid7 = "substr(printf('%012x', CAST((julianday('now')-2440587.5)*86400000 AS INT)),1,8)||'-'||substr(printf('%012x', CAST((julianday('now')-2440587.5)*86400000 AS INT)),9,4)||'-7'||printf('%03x',(rn>>40)&4095)||'-'||printf('%04x',32768|((rn>>28)&4095))||'-'||printf('%012x',rn)";
    let script = format!(
        "PRAGMA journal_mode=WAL;\nPRAGMA temp_store=MEMORY;\n\
         CREATE TABLE users(id TEXT PRIMARY KEY, email TEXT UNIQUE, name TEXT, enabled INT, status TEXT, created TEXT, updated TEXT{custom});\n\
         CREATE TEMP TABLE staging(email TEXT, name TEXT{custom});\nBEGIN;\n.import --csv --skip 1 {} staging\n\
         INSERT INTO users SELECT {uuid7}, email, name, 1, 'active', strftime('%Y-%m-%dT%H:%M:%fZ','now'), strftime('%Y-%m-%dT%H:%M:%fZ','now'){cols} FROM (SELECT rowid AS rn, * FROM staging);\nCOMMIT;\n",
        csv.display()
    );
    let secs = timed_script(Command::new("sqlite3").arg(&db), &script);
    let _ = std::fs::remove_file(&db);
    secs
}

fn raw_postgres(csv: &Path, url: &str, schema: &str) -> f64 {
    let custom: String = custom_columns(" TEXT");
    let cols: String = custom_columns("");
    let setup = format!(
        "CREATE TABLE {schema}.raw_users(id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant TEXT NOT NULL DEFAULT 'default', \
         email TEXT NOT NULL, name TEXT NOT NULL, enabled BOOLEAN NOT NULL DEFAULT true, status TEXT NOT NULL DEFAULT 'active', \
         created TIMESTAMPTZ NOT NULL DEFAULT now(), updated TIMESTAMPTZ NOT NULL DEFAULT now(){custom}); \
         CREATE UNIQUE INDEX ON {schema}.raw_users (tenant, lower(email)); CHECKPOINT;"
    );
    sh(Command::new("psql").args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", &setup]));
    let copy = format!(
        "\\copy {schema}.raw_users(email, name{cols}) FROM '{}' WITH (FORMAT csv, HEADER true)",
        csv.display()
    );
    let start = Instant::now();
    sh(Command::new("psql").args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", &copy]));
    let secs = start.elapsed().as_secs_f64();
    sh(Command::new("psql").args([url, "-q", "-c", &format!("DROP TABLE {schema}.raw_users")]));
    secs
}

/// The columns the raw loads into the server's own schema fill, from a
/// staging table holding the file (`rn` its row number): the values an
/// import of that row stores, except the id, which is made time-ordered from
/// the row number as the server's UUIDv7 ids are.
fn schema_columns(id: &str, now: &str) -> (String, String) {
    let custom: String = custom_columns("");
    (
        format!(
            "id, tenant_id, email, email_key, display_name, enabled, status, external_id{custom}, create_time, update_time, revision"
        ),
        format!("{id}, 'bench', email, lower(email), name, true, 'UNCONFIRMED', NULL{custom}, {now}, {now}, 1"),
    )
}

/// The raw load of the same file into an empty copy of the server's own
/// SQLite schema (its seven b-trees), the way `raw_sqlite` loads the
/// reference table: `.import` into a staging table, then one `INSERT ...
/// SELECT`, in one transaction. `server_db` is a database the server made.
fn raw_sqlite_schema(csv: &Path, dir: &Path, server_db: &Path) -> f64 {
    let db = dir.join("raw-schema.db");
    let _ = std::fs::remove_file(&db);
    let schema = Command::new("sqlite3").arg(server_db).arg(".schema").output().unwrap();
    let schema = String::from_utf8(schema.stdout).unwrap();
    let custom: String = custom_columns(" TEXT");
    // 16 bytes in ascending order, as long as a UUID blob.
    let (columns, values) = schema_columns(
        "CAST(printf('%016x', rn) AS BLOB)",
        "CAST((julianday('now') - 2440587.5) * 86400000000 AS INT)",
    );
    let script = format!(
        "PRAGMA journal_mode=WAL;\nPRAGMA temp_store=MEMORY;\n{schema}\n\
         INSERT INTO tenants (id, display_name, seat_limit, user_count, custom_attributes, create_time, update_time, revision) VALUES ('bench', 'Bench', 0, 0, '[]', 0, 0, 1);\n\
         CREATE TEMP TABLE staging(email TEXT, name TEXT{custom});\nBEGIN;\n.import --csv --skip 1 {} staging\n\
         INSERT INTO users ({columns}) SELECT {values} FROM (SELECT rowid AS rn, * FROM staging);\nCOMMIT;\n",
        csv.display()
    );
    let secs = timed_script(Command::new("sqlite3").arg(&db), &script);
    let _ = std::fs::remove_file(&db);
    secs
}

/// The raw load of the same file into an empty copy of the server's own
/// PostgreSQL `users` table (its indexes; the migrations dropped its foreign
/// key): `\copy` into a
/// temporary staging table, then one `INSERT ... SELECT`, in one transaction.
fn raw_postgres_schema(csv: &Path, url: &str, schema: &str) -> f64 {
    let custom: String = custom_columns(" TEXT");
    let cols: String = custom_columns("");
    let setup = format!("CREATE TABLE {schema}.raw_schema_users (LIKE {schema}.users INCLUDING ALL); CHECKPOINT;");
    sh(Command::new("psql").args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", &setup]));
    let (columns, values) = schema_columns(
        "(lpad(to_hex((extract(epoch from now()) * 1000)::bigint), 12, '0') || '70008000' || lpad(to_hex(rn), 12, '0'))::uuid",
        "(extract(epoch from now()) * 1000000)::bigint",
    );
    let script = format!(
        "BEGIN;\nCREATE TEMP TABLE staging(email TEXT, name TEXT{custom}) ON COMMIT DROP;\n\
         \\copy staging(email, name{cols}) FROM '{}' WITH (FORMAT csv, HEADER true)\n\
         INSERT INTO {schema}.raw_schema_users ({columns}) SELECT {values} FROM (SELECT row_number() OVER () AS rn, * FROM staging) s;\nCOMMIT;\n",
        csv.display()
    );
    let secs = timed_script(Command::new("psql").args([url, "-q", "-v", "ON_ERROR_STOP=1"]), &script);
    sh(Command::new("psql").args([url, "-q", "-c", &format!("DROP TABLE {schema}.raw_schema_users")]));
    secs
}

/// Streams `csv` into the server and times every row's result.
async fn import(addr: &str, csv: &Path) -> Run {
    let bytes = std::fs::read(csv).unwrap();
    let mut users = UserDirectoryClient::new(connect(addr).await).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(8);
    let options = ImportOptions {
        parent: "tenants/bench".into(),
        mode: ImportMode::Upsert as i32,
        ..Default::default()
    };
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Options(options)),
    })
    .await
    .unwrap();
    // (rows completed by the end of the chunk, when it was sent)
    let sent: std::sync::Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Default::default();
    let sent_log = sent.clone();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut lines = 0u64;
        for chunk in bytes.chunks(CHUNK) {
            lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            tx.send(ImportUsersRequest {
                payload: Some(Payload::Chunk(chunk.to_vec())),
            })
            .await
            .unwrap();
            sent_log.lock().unwrap().push((lines, Instant::now()));
        }
        tx.send(ImportUsersRequest {
            payload: Some(Payload::End(ImportEnd {})),
        })
        .await
        .unwrap();
    });
    let mut stream = users.import_users(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut arrivals: Vec<(u64, Instant)> = Vec::new();
    let mut failed = 0;
    while let Some(message) = stream.message().await.unwrap() {
        let now = Instant::now();
        if let Some(Out::Results(batch)) = message.payload {
            for r in batch.results {
                failed += u64::from(r.outcome == userdir::pb::ImportOutcome::Failed as i32);
                arrivals.push((r.line as u64, now));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    sender.await.unwrap();
    let sent = sent.lock().unwrap();
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .map(|&(line, at)| {
            // The chunk that completed this line (line L ends with the L-th newline).
            let i = sent.partition_point(|&(lines, _)| lines < line);
            at.saturating_duration_since(sent.get(i).map_or(start, |s| s.1))
        })
        .collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let n = arrivals.len();
    let tenth = n / 10;
    let rate = |from: usize, to: usize| {
        let t0 = if from == 0 { start } else { arrivals[from - 1].1 };
        (to - from) as f64 / arrivals[to - 1].1.duration_since(t0).as_secs_f64().max(1e-9)
    };
    Run {
        rows: n as u64,
        secs,
        p50: pick(0.5),
        p99: pick(0.99),
        first10: rate(0, tenth),
        last10: rate(n - tenth, n),
        deciles: (0..10).map(|i| rate(i * tenth, (i + 1) * tenth)).collect(),
        failed,
    }
}

/// The raw dump of the server's users table: `sqlite3 -csv` or `COPY ... TO STDOUT`.
fn raw_dump(backend: &str, url: &str, schema: &str) -> f64 {
    let start = Instant::now();
    let status = if backend == "sqlite" {
        let path = url.trim_start_matches("sqlite://").trim_end_matches("?mode=rwc");
        Command::new("sqlite3")
            .args(["-csv", path, "SELECT * FROM users"])
            .stdout(Stdio::null())
            .status()
    } else {
        let copy = format!("COPY {schema}.users TO STDOUT WITH (FORMAT csv)");
        Command::new("psql")
            .args([url, "-q", "-c", &copy])
            .stdout(Stdio::null())
            .status()
    };
    assert!(status.expect("raw dump").success());
    start.elapsed().as_secs_f64()
}

/// Exports every user of the bench tenant: (seconds, time to the first message, users).
async fn export(addr: &str, rows: bool) -> (f64, Duration, u64) {
    let mut users = UserDirectoryClient::new(connect(addr).await).max_decoding_message_size(64 << 20);
    let format = if rows {
        userdir::pb::ExportFormat::Rows
    } else {
        userdir::pb::ExportFormat::Csv
    };
    let req = userdir::pb::ExportUsersRequest {
        parent: "tenants/bench".into(),
        format: format as i32,
        ..Default::default()
    };
    let start = Instant::now();
    let mut stream = users.export_users(req).await.unwrap().into_inner();
    let mut first = None;
    let mut count = 0;
    while let Some(message) = stream.message().await.unwrap() {
        first.get_or_insert_with(|| start.elapsed());
        if let Some(userdir::pb::export_users_response::Payload::Trailer(t)) = message.payload {
            count = t.user_count as u64;
        }
    }
    (start.elapsed().as_secs_f64(), first.unwrap_or_default(), count)
}

fn start_server(bin: &str, url: &str, schema: &str, port: u16) -> Child {
    Command::new(bin)
        .arg("serve")
        .env("USERDIR_LISTEN", format!("127.0.0.1:{port}"))
        .env("USERDIR_DATABASE_URL", url)
        .env("USERDIR_PG_SCHEMA", schema)
        .env("USERDIR_OPERATOR_KEY", operator_key())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start userdir")
}

/// Waits until `server` serves at `addr` (health SERVING, and it is this
/// run's process that answers).
async fn wait_ready(addr: &str, server: &mut Child) -> TenantAdminClient<userdir::client::AuthedChannel> {
    support::wait_serving(addr, server).await;
    TenantAdminClient::new(connect(addr).await)
}

async fn create_tenant(addr: &str, server: &mut Child) {
    let tenant = Tenant {
        display_name: "Bench".into(),
        ..Default::default()
    };
    wait_ready(addr, server)
        .await
        .create_tenant(CreateTenantRequest {
            tenant_id: "bench".into(),
            tenant: Some(tenant),
            initial_owner: None,
        })
        .await
        .unwrap();
}

/// Results arrive a transaction (up to [`GROUP_ROWS`] rows) at a time, so
/// the rate of a tenth of the rows means something only where a tenth spans
/// at least two transactions.
fn tenths_measurable(rows: u64) -> bool {
    rows / 10 >= 2 * GROUP_ROWS as u64
}

fn line(backend: &str, n: u64, what: &str, raw_rate: f64, r: &Run, rss: f64, cpu: f64) {
    let rate = r.rows as f64 / r.secs;
    let last_first = if tenths_measurable(r.rows) {
        format!("{:.2}", r.last10 / r.first10)
    } else {
        "n/a".to_owned()
    };
    println!(
        "| {backend} | {n} | {what} | {:.0} | {:.2}x | {:.0} | {:.0} | {last_first} | {:.0} | {:.1} | {} |",
        rate,
        rate / raw_rate,
        r.p50.as_secs_f64() * 1000.0,
        r.p99.as_secs_f64() * 1000.0,
        rss,
        cpu * 1e6 / r.rows.max(1) as f64,
        r.failed
    );
}

#[tokio::main]
async fn main() {
    let bin = env!("CARGO_BIN_EXE_userdir");
    let sizes: Vec<u64> = std::env::var("IMPORT_BENCH_ROWS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let backends = std::env::var("IMPORT_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let pg = std::env::var("USERDIR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    println!(
        "| backend | rows | run | rows/s | vs raw load | p50 ms | p99 ms | last 10% / first 10% | peak RSS MiB | server CPU µs/row | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut exports = Vec::new();
    let mut deciles = Vec::new();
    let mut ceilings = Vec::new();
    let mut baselines = Vec::new();
    let baseline_bin = std::env::var("IMPORT_BENCH_BASELINE_BIN").ok();
    for &n in &sizes {
        let csv = dir.path().join(format!("users-{n}.csv"));
        sh(Command::new("python3")
            .arg(root.join("benches/scripts/gen_users_csv.py"))
            .args(["--rows", &n.to_string(), "--out"])
            .arg(&csv));
        for backend in backends.split(',') {
            let port = support::free_port();
            let addr = format!("http://127.0.0.1:{port}");
            let (url, schema, raw_secs) = if backend == "sqlite" {
                let db = dir.path().join(format!("bench-{n}.db"));
                let raw = raw_sqlite(&csv, dir.path());
                (format!("sqlite://{}?mode=rwc", db.display()), String::new(), raw)
            } else {
                let schema = format!("import_bench_{}", uuid::Uuid::now_v7().simple());
                sh(Command::new("psql").args([&pg, "-q", "-c", &format!("CREATE SCHEMA {schema}")]));
                let raw = raw_postgres(&csv, &pg, &schema);
                (pg.clone(), schema, raw)
            };
            let raw_rate = n as f64 / raw_secs;
            println!("| {backend} | {n} | raw load | {raw_rate:.0} | 1.00x | | | | | | |");
            let mut server = start_server(bin, &url, &schema, port);
            create_tenant(&addr, &mut server).await;
            let mut new_rate = 0.0;
            for what in ["UPSERT, new users", "UPSERT, unchanged"] {
                let cpu = cpu_secs(server.id());
                let run = import(&addr, &csv).await;
                let cpu = cpu_secs(server.id()) - cpu;
                line(backend, n, what, raw_rate, &run, peak_rss_mib(server.id()), cpu);
                if new_rate == 0.0 {
                    new_rate = run.rows as f64 / run.secs;
                }
                if tenths_measurable(run.rows) {
                    let tenths: Vec<String> = run.deciles.iter().map(|r| format!("{:.1}", r / 1000.0)).collect();
                    deciles.push(format!("| {backend} | {n} | {what} | {} |", tenths.join(" | ")));
                }
            }
            if let Some(base) = &baseline_bin {
                let _ = server.kill();
                let _ = server.wait();
                let (base_url, base_schema) = if backend == "sqlite" {
                    let db = dir.path().join(format!("baseline-{n}.db"));
                    (format!("sqlite://{}?mode=rwc", db.display()), String::new())
                } else {
                    let schema = format!("import_bench_base_{}", uuid::Uuid::now_v7().simple());
                    sh(Command::new("psql").args([&pg, "-q", "-c", &format!("CREATE SCHEMA {schema}")]));
                    (pg.clone(), schema)
                };
                let mut base_server = start_server(base, &base_url, &base_schema, port);
                create_tenant(&addr, &mut base_server).await;
                let cpu = cpu_secs(base_server.id());
                let run = import(&addr, &csv).await;
                let cpu = cpu_secs(base_server.id()) - cpu;
                line(
                    backend,
                    n,
                    "UPSERT, new users (baseline build)",
                    raw_rate,
                    &run,
                    peak_rss_mib(base_server.id()),
                    cpu,
                );
                let base_rate = run.rows as f64 / run.secs;
                baselines.push(format!(
                    "| {backend} | {n} | {new_rate:.0} | {base_rate:.0} | {:.2}x |",
                    new_rate / base_rate
                ));
                let _ = base_server.kill();
                let _ = base_server.wait();
                if !base_schema.is_empty() {
                    sh(Command::new("psql").args([&pg, "-q", "-c", &format!("DROP SCHEMA {base_schema} CASCADE")]));
                }
            }
            // Export of the same users from a freshly started server, so that its
            // peak RSS is the export's own: the raw dump of the server's own
            // table, then CSV and ROWS.
            let _ = server.kill();
            let _ = server.wait();
            let mut server = start_server(bin, &url, &schema, port);
            wait_ready(&addr, &mut server).await;
            let dump = raw_dump(backend, &url, &schema);
            let dump_rate = n as f64 / dump;
            exports.push(format!("| {backend} | {n} | raw dump | {dump_rate:.0} | 1.00x | | |"));
            for rows in [false, true] {
                let (secs, first, count) = export(&addr, rows).await;
                let rate = count as f64 / secs;
                exports.push(format!(
                    "| {backend} | {n} | export {} | {rate:.0} | {:.2}x | {:.0} | {:.0} |",
                    if rows { "ROWS" } else { "CSV" },
                    rate / dump_rate,
                    first.as_secs_f64() * 1000.0,
                    peak_rss_mib(server.id())
                ));
            }
            let _ = server.kill();
            let _ = server.wait();
            // The import as an operator runs it: `userdir import` (the CLI,
            // on this machine) into a fresh database, timed from start to exit.
            let (cli_url, cli_schema) = if backend == "sqlite" {
                let db = dir.path().join(format!("cli-{n}.db"));
                (format!("sqlite://{}?mode=rwc", db.display()), String::new())
            } else {
                let schema = format!("import_bench_cli_{}", uuid::Uuid::now_v7().simple());
                sh(Command::new("psql").args([&pg, "-q", "-c", &format!("CREATE SCHEMA {schema}")]));
                (pg.clone(), schema)
            };
            let mut server = start_server(bin, &cli_url, &cli_schema, port);
            create_tenant(&addr, &mut server).await;
            let started = Instant::now();
            sh(Command::new(bin)
                .args(["import", "--tenant", "bench", "--mode", "upsert", "--server", &addr])
                .env("USERDIR_API_KEY", support::operator_key())
                .arg(&csv)
                .stdout(Stdio::null())
                .stderr(Stdio::null()));
            let cli_rate = n as f64 / started.elapsed().as_secs_f64();
            let _ = server.kill();
            let _ = server.wait();
            if !cli_schema.is_empty() {
                sh(Command::new("psql").args([&pg, "-q", "-c", &format!("DROP SCHEMA {cli_schema} CASCADE")]));
            }
            let schema_secs = if backend == "sqlite" {
                let server_db = url.trim_start_matches("sqlite://").trim_end_matches("?mode=rwc");
                raw_sqlite_schema(&csv, dir.path(), Path::new(server_db))
            } else {
                raw_postgres_schema(&csv, &pg, &schema)
            };
            let schema_rate = n as f64 / schema_secs;
            ceilings.push(format!(
                "| {backend} | {n} | {raw_rate:.0} | {schema_rate:.0} | {:.2}x | {new_rate:.0} | {:.2}x | {cli_rate:.0} | {:.2}x |",
                schema_rate / raw_rate,
                new_rate / schema_rate,
                cli_rate / schema_rate
            ));
            if !schema.is_empty() {
                sh(Command::new("psql").args([&pg, "-q", "-c", &format!("DROP SCHEMA {schema} CASCADE")]));
            }
        }
    }
    if !baselines.is_empty() {
        println!();
        println!("This build against the baseline build (UPSERT of new users, same file, same run):");
        println!();
        println!("| backend | rows | this build rows/s | baseline rows/s | this / baseline |");
        println!("|---|---|---|---|---|");
        for line in baselines {
            println!("{line}");
        }
    }
    println!();
    println!("Thousands of rows/s in each tenth of the file:");
    println!();
    println!("| backend | rows | run | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for line in deciles {
        println!("{line}");
    }
    println!();
    println!("The raw load into the server's own schema (same method, one transaction), rows/s:");
    println!();
    println!(
        "| backend | rows | raw load | raw load, our schema | vs raw load | UPSERT new users | vs our schema's raw load | `userdir import` (CLI) | vs our schema's raw load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for line in ceilings {
        println!("{line}");
    }
    println!();
    println!("| backend | rows | run | rows/s | vs raw dump | first bytes ms | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for line in exports {
        println!("{line}");
    }
}
