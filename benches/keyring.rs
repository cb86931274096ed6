//! What a server's key refresh costs with many keys stored (issue 22).
//!
//! Every replica re-reads the API keys every `--key-refresh-ms` (2 s). It
//! used to read the whole table each time; it now reads the keys written
//! since the change number it last saw. This stores `KEYRING_BENCH_KEYS`
//! keys (100,000 by default) across 1,000 tenants, on a fresh SQLite file
//! and a fresh PostgreSQL schema, and times, in the same run:
//! - the reference: a full read of every key (what every refresh cost
//!   before, and what a server's start still costs);
//! - a refresh when nothing changed;
//! - a refresh after one key was revoked.
//!
//! `cargo bench --bench keyring` (PostgreSQL from `USERDIR_TEST_PG_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`; skipped when it does
//! not answer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ActiveValue::Set, ConnectionTrait, Database, EntityTrait, TransactionTrait};
use userdir_domain::apikey::NewApiKey;
use userdir_domain::keyring::KeyRing;
use userdir_domain::repo::ApiKeyRepository;
use userdir_domain::text::Timestamp;
use userdir_store::entity::api_key;
use userdir_store::{Store, StoreOptions};

const ROWS_PER_INSERT: usize = 1000;

/// Stores `n` keys across 1,000 tenants, numbered as key writes number
/// them; returns one key's id.
async fn fill(store: &Store, n: usize) -> uuid::Uuid {
    let hash = NewApiKey::generate().expect("random").hash().to_hex();
    let now = Timestamp::now().unix_micros();
    let txn = store.writer().begin().await.expect("begin");
    let mut first = None;
    for start in (0..n).step_by(ROWS_PER_INSERT) {
        let rows: Vec<api_key::ActiveModel> = (start..(start + ROWS_PER_INSERT).min(n))
            .map(|i| {
                let id = uuid::Uuid::now_v7();
                first.get_or_insert(id);
                api_key::ActiveModel {
                    id: Set(id),
                    name: Set(format!("key {i}")),
                    tenant_id: Set(Some(format!("tenant{}", i % 1000))),
                    scopes: Set(1),
                    act_as_users: Set(false),
                    user_id: Set(None),
                    creator: Set("bench".into()),
                    create_time: Set(now),
                    expire_time: Set(None),
                    last_used_time: Set(None),
                    revoke_time: Set(None),
                    secret_hash: Set(hash.clone()),
                    change_seq: Set(i as i64 + 1),
                }
            })
            .collect();
        api_key::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await
            .expect("insert keys");
    }
    txn.execute_unprepared(&format!("UPDATE api_key_counter SET seq = {n} WHERE id = 1"))
        .await
        .expect("counter");
    txn.commit().await.expect("commit");
    first.expect("at least one key")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn measure(label: &str, options: StoreOptions, n: usize) {
    let store = Arc::new(Store::open(&options).await.expect("open"));
    let started = Instant::now();
    let one = fill(&store, n).await;
    eprintln!("{label}: stored {n} keys in {:.1?}", started.elapsed());
    let mut full = Vec::new();
    let mut ring = None;
    for _ in 0..3 {
        let t = Instant::now();
        ring = Some(KeyRing::load(Arc::clone(&store)).await.expect("load"));
        full.push(t.elapsed());
    }
    let ring = ring.expect("a ring");
    let mut idle = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        ring.refresh().await.expect("refresh");
        idle.push(t.elapsed());
    }
    let mut one_change = Vec::new();
    for round in 0..5 {
        // One key made and one revoked per round: two changes.
        let made = NewApiKey::generate().expect("random");
        let key = userdir_domain::apikey::ApiKey {
            id: made.id,
            name: "new".into(),
            tenant: Some(userdir_domain::tenant::TenantId::parse("tenant", "tenant1").expect("id")),
            scopes: userdir_domain::access::Scopes::ALL,
            act_as_users: false,
            user: None,
            creator: "bench".into(),
            create_time: Timestamp::now(),
            expire_time: None,
            last_used_time: None,
            revoke_time: None,
            hash: made.hash(),
        };
        store
            .insert_api_key(&key, u32::MAX, &userdir_domain::event::Origin::server())
            .await
            .expect("insert");
        let target = if round == 0 { one } else { key.id };
        store
            .revoke_api_key(target, Timestamp::now(), &userdir_domain::event::Origin::server())
            .await
            .expect("revoke");
        let t = Instant::now();
        ring.refresh().await.expect("refresh");
        one_change.push(t.elapsed());
    }
    let (full, idle, one_change) = (median(full), median(idle), median(one_change));
    let ratio = |d: Duration| d.as_secs_f64() / full.as_secs_f64();
    println!(
        "| {label} | {n} | {full:.1?} | {idle:.2?} ({:.4}x) | {one_change:.2?} ({:.4}x) |",
        ratio(idle),
        ratio(one_change)
    );
    drop(ring);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await.expect("close");
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KEYRING_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!("| backend | keys | full read (reference) | refresh, nothing changed | refresh, two changes |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display());
    measure("SQLite", StoreOptions::new(url), n).await;

    let pg = std::env::var("USERDIR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let Ok(admin) = Database::connect(pg.as_str()).await else {
        eprintln!("PostgreSQL does not answer at {pg}: skipped");
        return;
    };
    let schema = format!("bench_keyring_{}", std::process::id());
    admin
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("schema");
    let mut options = StoreOptions::new(pg);
    options.pg_schema = Some(schema.clone());
    measure("PostgreSQL", options, n).await;
    admin
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");
}
