//! API keys in the database (the groundwork of the callers' issue): what is
//! stored is the SHA-256 of each secret, never the secret; revocation and
//! last use are recorded; on both backends.

use sea_orm::EntityTrait;
use userdir_domain::access::{Scope, Scopes};
use userdir_domain::apikey::{ApiKey, NewApiKey, PresentedKey};
use userdir_domain::repo::{ApiKeyRepository, KeyQuery, Revoked};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use userdir_store::Store;

use crate::common::TestServer;

async fn keys_are_stored_as_hashes_and_revoked(s: TestServer) {
    let store = Store::connect(&s.store_options).await.unwrap();
    add_tenant(&store, "acme").await;
    let now = Timestamp::now();
    let made = NewApiKey::generate().unwrap();
    let token = made.token();
    let key = ApiKey {
        id: made.id,
        name: "ci-import".into(),
        tenant: Some(TenantId::parse("tenant", "acme").unwrap()),
        scopes: Scopes::of(&[Scope::Read, Scope::Import]),
        act_as_users: true,
        user: None,
        creator: "test".to_owned(),
        create_time: now,
        expire_time: None,
        last_used_time: None,
        revoke_time: None,
        hash: made.hash(),
    };
    store
        .insert_api_key(&key, 10, &userdir_domain::event::Origin::server())
        .await
        .unwrap();
    let operator = NewApiKey::generate().unwrap();
    let operator_key = ApiKey {
        id: operator.id,
        name: "bootstrap".into(),
        tenant: None,
        scopes: Scopes::ALL,
        act_as_users: false,
        user: None,
        creator: "test".to_owned(),
        create_time: Timestamp::from_unix_micros(now.unix_micros() + 1),
        expire_time: Some(Timestamp::from_unix_micros(now.unix_micros() + 60_000_000)),
        last_used_time: None,
        revoke_time: None,
        hash: operator.hash(),
    };
    store
        .insert_api_key(&operator_key, 10, &userdir_domain::event::Origin::server())
        .await
        .unwrap();

    // Besides the operator key the test server was configured with.
    let listed: Vec<ApiKey> = store
        .list_api_keys(&every_key())
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.creator == "test")
        .collect();
    assert_eq!(listed, vec![key.clone(), operator_key.clone()]);
    let presented = PresentedKey::parse(&token).unwrap();
    assert!(listed[0].hash.matches(&presented.hash));
    assert!(listed[1].live_at(now));
    assert!(!listed[1].live_at(Timestamp::from_unix_micros(now.unix_micros() + 61_000_000)));

    // Nothing of the secret is in the table: only its hash.
    let rows = format!(
        "{:?}",
        userdir_store::entity::api_key::Entity::find()
            .all(store.connection())
            .await
            .unwrap()
    );
    let secret = &token[4 + 33..4 + 33 + 43];
    assert!(!rows.contains(secret) && !rows.contains(&token), "{rows}");
    assert!(rows.contains(&made.hash().to_hex()));

    // Last use moves forward only.
    let later = Timestamp::from_unix_micros(now.unix_micros() + 5_000_000);
    store.touch_api_keys(&[(key.id, later)]).await.unwrap();
    store.touch_api_keys(&[(key.id, now)]).await.unwrap();
    let ours = |keys: Vec<ApiKey>| keys.into_iter().find(|k| k.id == key.id).unwrap();
    let listed = ours(store.list_api_keys(&every_key()).await.unwrap());
    assert_eq!(listed.last_used_time, Some(later));

    // Revoked once.
    assert_eq!(
        store
            .revoke_api_key(key.id, later, &userdir_domain::event::Origin::server())
            .await
            .unwrap(),
        Revoked::Now
    );
    assert_eq!(
        store
            .revoke_api_key(key.id, later, &userdir_domain::event::Origin::server())
            .await
            .unwrap(),
        Revoked::Unchanged
    );
    assert_eq!(
        store
            .revoke_api_key(uuid::Uuid::now_v7(), later, &userdir_domain::event::Origin::server())
            .await
            .unwrap(),
        Revoked::Unchanged
    );
    let listed = ours(store.list_api_keys(&every_key()).await.unwrap());
    assert_eq!(listed.revoke_time, Some(later));
    assert!(!listed.live_at(now));
    store.close().await.unwrap();
}

/// Two servers' key rings on one database: a key works on both, a wrong
/// secret under its id does not, and once revoked through one it stops on
/// the other at its next refresh; last uses are written in batches.
async fn a_revoked_key_stops_on_every_replica(s: TestServer) {
    use std::sync::Arc;
    use userdir_domain::access::TenantScope;
    use userdir_domain::keyring::{AuthError, KeyRing};

    let (one, two) = (
        Arc::new(Store::connect(&s.store_options).await.unwrap()),
        Arc::new(Store::connect(&s.store_options).await.unwrap()),
    );
    add_tenant(&one, "acme").await;
    let now = Timestamp::now();
    let made = NewApiKey::generate().unwrap();
    one.insert_api_key(
        &ApiKey {
            create_time: now,
            ..svc_key(&made, "svc")
        },
        10,
        &userdir_domain::event::Origin::server(),
    )
    .await
    .unwrap();
    let ring_one = KeyRing::load(Arc::clone(&one)).await.unwrap();
    let ring_two = KeyRing::load(Arc::clone(&two)).await.unwrap();
    let token = made.token();
    for ring in [&ring_one, &ring_two] {
        let caller = ring.authenticate(&token, now).unwrap().caller;
        assert_eq!(
            caller.tenants,
            TenantScope::One(TenantId::parse("tenant", "acme").unwrap())
        );
        assert!(caller.scopes.has(Scope::Read) && !caller.scopes.has(Scope::Write));
        assert_eq!(caller.principal.to_string(), format!("apikey:{}", made.id.simple()));
    }
    // A well-formed key whose secret is not the one stored under its id:
    // unknown, like any wrong key.
    let (presented, stored) = (NewApiKey::generate().unwrap(), NewApiKey::generate().unwrap());
    one.insert_api_key(
        &ApiKey {
            id: presented.id,
            tenant: None,
            scopes: Scopes::ALL,
            ..svc_key(&stored, "other")
        },
        10,
        &userdir_domain::event::Origin::server(),
    )
    .await
    .unwrap();
    ring_one.refresh().await.unwrap();
    assert_eq!(
        ring_one.authenticate(&presented.token(), now).unwrap_err(),
        AuthError::Unknown
    );
    assert!(matches!(
        ring_one.authenticate("udk_nope", now),
        Err(AuthError::Malformed(_))
    ));
    ring_one.flush_last_used().await.unwrap();
    let listed = one.list_api_keys(&every_key()).await.unwrap();
    let svc = listed.iter().find(|k| k.id == made.id).unwrap();
    assert_eq!(svc.last_used_time, Some(now));

    // Revoked through one replica's store: the other refuses it after its refresh.
    assert_eq!(
        one.revoke_api_key(made.id, Timestamp::now(), &userdir_domain::event::Origin::server())
            .await
            .unwrap(),
        Revoked::Now
    );
    assert!(ring_two.authenticate(&token, now).is_ok(), "until the refresh");
    ring_two.refresh().await.unwrap();
    assert_eq!(ring_two.authenticate(&token, now).unwrap_err(), AuthError::Revoked);

    // A row that does not decode stops nothing: that key is refused (it is
    // forgotten), every other change still arrives.
    let (broken, fresh) = (NewApiKey::generate().unwrap(), NewApiKey::generate().unwrap());
    for (made, name) in [(&broken, "broken"), (&fresh, "fresh")] {
        one.insert_api_key(&svc_key(made, name), 10, &userdir_domain::event::Origin::server())
            .await
            .unwrap();
    }
    ring_two.refresh().await.unwrap();
    assert!(ring_two.authenticate(&broken.token(), now).is_ok());
    corrupt_key(&one, broken.id).await;
    let newer = NewApiKey::generate().unwrap();
    one.insert_api_key(&svc_key(&newer, "newer"), 10, &userdir_domain::event::Origin::server())
        .await
        .unwrap();
    ring_two.refresh().await.unwrap();
    assert_eq!(
        ring_two.authenticate(&broken.token(), now).unwrap_err(),
        AuthError::Unknown
    );
    assert!(ring_two.authenticate(&fresh.token(), now).is_ok());
    assert!(
        ring_two.authenticate(&newer.token(), now).is_ok(),
        "a later change still arrives"
    );
    assert_eq!(
        ring_one.authenticate(&newer.token(), now).unwrap_err(),
        AuthError::Unknown,
        "until its refresh"
    );
    ring_one.refresh().await.unwrap();
    assert!(ring_one.authenticate(&newer.token(), now).is_ok());
}

/// Every key of the installation, revoked ones too.
fn every_key() -> KeyQuery {
    KeyQuery {
        tenant: None,
        show_revoked: true,
        after: None,
        limit: 1_000_000,
    }
}

/// Stores tenant `id` (a tenant's keys record their events in its feed).
async fn add_tenant(store: &Store, id: &str) {
    use userdir_domain::repo::TenantRepository;
    let id = TenantId::parse("tenant", id).unwrap();
    let settings = userdir_domain::tenant::TenantSettings {
        display_name: id.to_string(),
        ..Default::default()
    };
    let tenant = userdir_domain::tenant::Tenant::create(id, settings, Timestamp::now()).unwrap();
    store
        .insert_tenant(&tenant, &userdir_domain::event::Origin::server())
        .await
        .unwrap();
}

/// A live read key of tenant acme.
fn svc_key(made: &NewApiKey, name: &str) -> ApiKey {
    ApiKey {
        id: made.id,
        name: name.into(),
        tenant: Some(TenantId::parse("tenant", "acme").unwrap()),
        scopes: Scopes::of(&[Scope::Read]),
        act_as_users: false,
        user: None,
        creator: "test".to_owned(),
        create_time: Timestamp::now(),
        expire_time: None,
        last_used_time: None,
        revoke_time: None,
        hash: made.hash(),
    }
}

/// Damages key `id`'s stored hash (a hand edit), as a new change.
async fn corrupt_key(store: &Store, id: uuid::Uuid) {
    use sea_orm::{ColumnTrait, ConnectionTrait, QueryFilter};
    use userdir_store::entity::api_key::{Column, Entity};
    store
        .connection()
        .execute_unprepared("UPDATE api_key_counter SET seq = seq + 1 WHERE id = 1")
        .await
        .unwrap();
    Entity::update_many()
        .col_expr(Column::SecretHash, sea_orm::sea_query::Expr::value("not hex"))
        .col_expr(
            Column::ChangeSeq,
            sea_orm::sea_query::Expr::cust("(SELECT seq FROM api_key_counter WHERE id = 1)"),
        )
        .filter(Column::Id.eq(id))
        .exec(store.connection())
        .await
        .unwrap();
}

/// Many keys made at once against a quota of 5, in rounds (the pool warm
/// after the first): exactly 5 are made each time, the others refused
/// `API_KEY_QUOTA`; a revoked key frees its place.
async fn the_key_quota_holds_under_a_race(s: TestServer) {
    use std::sync::Arc;
    let store = Arc::new(Store::connect(&s.store_options).await.unwrap());
    let mut first = Vec::new();
    for round in 0..5 {
        let tenant = TenantId::parse("tenant", &format!("quota{round}")).unwrap();
        add_tenant(&store, tenant.as_str()).await;
        let start = Arc::new(tokio::sync::Barrier::new(40));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (store, start, tenant) = (Arc::clone(&store), Arc::clone(&start), tenant.clone());
                tokio::spawn(async move {
                    let made = NewApiKey::generate().unwrap();
                    let key = ApiKey {
                        tenant: Some(tenant),
                        ..svc_key(&made, &format!("k{i}"))
                    };
                    start.wait().await;
                    store
                        .insert_api_key(&key, 5, &userdir_domain::event::Origin::server())
                        .await
                        .map(|()| key.id)
                })
            })
            .collect();
        let mut made = Vec::new();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(id) => made.push(id),
                Err(e) => {
                    assert_eq!(e.reason(), "API_KEY_QUOTA", "{e}");
                    refused += 1;
                }
            }
        }
        assert_eq!((made.len(), refused), (5, 35), "round {round}");
        first.push(made[0]);
    }
    let one_more = NewApiKey::generate().unwrap();
    let key = ApiKey {
        tenant: Some(TenantId::parse("tenant", "quota0").unwrap()),
        ..svc_key(&one_more, "after")
    };
    assert!(
        store
            .insert_api_key(&key, 5, &userdir_domain::event::Origin::server())
            .await
            .is_err()
    );
    store
        .revoke_api_key(first[0], Timestamp::now(), &userdir_domain::event::Origin::server())
        .await
        .unwrap();
    store
        .insert_api_key(&key, 5, &userdir_domain::event::Origin::server())
        .await
        .unwrap();
}

/// The last live operator key with the admin scope is never revoked: a
/// read-only operator key does not count, and operators revoking all the
/// admin keys at once leave exactly one.
async fn the_last_operator_admin_key_stays_under_a_race(s: TestServer) {
    use std::sync::Arc;
    let store = Arc::new(Store::connect(&s.store_options).await.unwrap());
    let operator_key = |scopes: Scopes| {
        let made = NewApiKey::generate().unwrap();
        ApiKey {
            tenant: None,
            scopes,
            ..svc_key(&made, "operator")
        }
    };
    let reader = operator_key(Scopes::of(&[Scope::Read]));
    store
        .insert_api_key(&reader, 100, &userdir_domain::event::Origin::server())
        .await
        .unwrap();
    // Rounds: the one key left by a round is revoked with the next's four.
    for round in 0..4 {
        for _ in 0..4 {
            store
                .insert_api_key(
                    &operator_key(Scopes::ALL),
                    100,
                    &userdir_domain::event::Origin::server(),
                )
                .await
                .unwrap();
        }
        let admins: Vec<uuid::Uuid> = store
            .list_api_keys(&KeyQuery {
                show_revoked: false,
                ..every_key()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.tenant.is_none() && k.scopes == Scopes::ALL)
            .map(|k| k.id)
            .collect();
        assert_eq!(admins.len(), 5, "round {round}");
        let start = Arc::new(tokio::sync::Barrier::new(admins.len()));
        let tasks: Vec<_> = admins
            .iter()
            .map(|id| {
                let (store, id, start) = (Arc::clone(&store), *id, Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    store
                        .revoke_api_key(id, Timestamp::now(), &userdir_domain::event::Origin::server())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let revoked = outcomes.iter().filter(|o| **o == Revoked::Now).count();
        let kept = outcomes.iter().filter(|o| **o == Revoked::LastOperatorKey).count();
        assert_eq!((revoked, kept), (4, 1), "round {round}: {outcomes:?}");
    }
    assert!(store.has_operator_admin_key(Timestamp::now()).await.unwrap());
    assert_eq!(
        store
            .revoke_api_key(reader.id, Timestamp::now(), &userdir_domain::event::Origin::server())
            .await
            .unwrap(),
        Revoked::Now,
        "a read-only operator key is no administrator: it may go"
    );
}

/// The README's key examples, run as written with bash against this
/// server (`USERDIR_SERVER`, the operator's `USERDIR_API_KEY`): the
/// `read,import` key imports, the console key is made, the import key is
/// revoked by name; then the import key is refused.
async fn the_readme_key_examples_run_as_written(s: TestServer) {
    s.tenant("acme").await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block: String = readme
        .split("<!-- key-examples:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- key-examples:end -->").next())
        .expect("the README's key examples, between their markers")
        .lines()
        .filter(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(block.contains("--scope read,import"), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_userdir"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let (addr, cwd) = (s.addr, dir.path().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block])
            .current_dir(cwd)
            .env("PATH", path)
            .env("USERDIR_SERVER", format!("http://{addr}"))
            .env("USERDIR_API_KEY", crate::common::operator_key())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The import key imported the file's user.
    let users = crate::import::users_of(&s, "acme").await;
    assert_eq!(users.len(), 1, "{stdout}\n{stderr}");
    assert_eq!(users[0].display_name, "山田 太郎");
    // The console key was made, the import key revoked, and it shows so.
    assert!(
        stdout.contains("console\ttenants/acme: read,write,export,admin; acts for users; expires 2030-12-31"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\tci-import\t") && l.contains("; revoked ")),
        "{stdout}"
    );
    let import_key = std::fs::read_to_string(dir.path().join("ci-import.key")).unwrap();
    let refused = userdir::pb::user_directory_client::UserDirectoryClient::new(crate::common::with_key(
        &s.plain,
        Some(import_key.trim()),
    ))
    .get_user(userdir::pb::GetUserRequest {
        name: users[0].name.clone(),
    })
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let operator = std::fs::read_to_string(dir.path().join("operator.txt")).unwrap();
    assert!(
        operator.starts_with("udk_") && operator.contains("\nudkh_"),
        "{operator}"
    );
}

crate::on_both_backends!(
    the_readme_key_examples_run_as_written,
    keys_are_stored_as_hashes_and_revoked,
    a_revoked_key_stops_on_every_replica,
    the_key_quota_holds_under_a_race,
    the_last_operator_admin_key_stays_under_a_race
);
