//! Single-request latency of CreateUser and GetUser through the real server
//! (in-process, loopback, one client, one call at a time) on SQLite and
//! PostgreSQL.
//!
//! Run: `cargo bench --bench rpc_latency` (PostgreSQL from `USERDIR_TEST_PG_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`; skipped if unreachable).
//! `RPC_LATENCY_N` sets the number of calls per RPC (default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};
use support::{authed, operator_key};

use sea_orm::{ConnectionTrait, Database};
use tokio::net::TcpListener;
/// A connection calling as the operator.
type Channel = userdir::client::AuthedChannel;
use userdir::config::Config;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{CreateTenantRequest, CreateUserRequest, GetUserRequest, Tenant, User};
use userdir_store::Store;

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats {
        p50: pick(0.5),
        p99: pick(0.99),
        mean,
    }
}

async fn start(config: Config) -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let config = config.with_operator_key(operator_key());
    let store = Store::open(&config.store_options()).await.expect("open database");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        userdir::server::serve(listener, store, &config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (authed(channel), tx)
}

async fn measure(label: &str, channel: Channel, n: usize) {
    let mut tenants = TenantAdminClient::new(channel.clone());
    let mut users = UserDirectoryClient::new(channel);
    let tenant = Tenant {
        display_name: "Bench".into(),
        ..Default::default()
    };
    tenants
        .create_tenant(CreateTenantRequest {
            tenant_id: "bench".into(),
            tenant: Some(tenant),
            initial_owner: None,
        })
        .await
        .unwrap();
    let create = |i: usize| CreateUserRequest {
        parent: "tenants/bench".into(),
        user: Some(User {
            email: format!("user{i:07}@example.com"),
            display_name: format!("ユーザー {i}"),
            custom_attributes: [("custom_01".to_owned(), "Sales".to_owned())].into(),
            ..Default::default()
        }),
        validate_only: false,
    };
    let warmup = 200;
    let mut names = Vec::with_capacity(n + warmup);
    for i in 0..warmup {
        names.push(users.create_user(create(i)).await.unwrap().into_inner().name);
    }
    let mut samples = Vec::with_capacity(n);
    for i in warmup..warmup + n {
        let start = Instant::now();
        let user = users.create_user(create(i)).await.unwrap().into_inner();
        samples.push(start.elapsed());
        names.push(user.name);
    }
    let c = stats(samples);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        // A spread of users, not one cached row.
        let name = names[(i * 7919) % names.len()].clone();
        let start = Instant::now();
        users.get_user(GetUserRequest { name }).await.unwrap();
        samples.push(start.elapsed());
    }
    let g = stats(samples);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {label} | CreateUser | {n} | {:.0} | {:.0} | {:.0} |\n| {label} | GetUser | {n} | {:.0} | {:.0} | {:.0} |",
        us(c.p50),
        us(c.p99),
        us(c.mean),
        us(g.p50),
        us(g.p99),
        us(g.mean)
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("RPC_LATENCY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!("| backend | rpc | calls | p50 µs | p99 µs | mean µs |\n|---|---|---|---|---|---|");

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let (channel, stop) = start(Config::for_test(url)).await;
    measure("SQLite", channel, n).await;
    let _ = stop.send(());

    let pg = std::env::var("USERDIR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match Database::connect(pg.as_str()).await {
        Ok(admin) => {
            let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
            admin
                .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
                .await
                .unwrap();
            let mut config = Config::for_test(pg.clone());
            config.pg_schema = schema.clone();
            let (channel, stop) = start(config).await;
            measure("PostgreSQL", channel, n).await;
            let _ = stop.send(());
            admin
                .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .unwrap();
        }
        Err(e) => eprintln!("PostgreSQL at {pg} unreachable, skipped: {e}"),
    }
}
