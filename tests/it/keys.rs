//! API keys in the database (the groundwork of the callers' issue): what is
//! stored is the SHA-256 of each secret, never the secret; revocation and
//! last use are recorded; on both backends.

use sea_orm::EntityTrait;
use userdir_domain::access::{Scope, Scopes};
use userdir_domain::apikey::{ApiKey, NewApiKey, PresentedKey};
use userdir_domain::repo::ApiKeyRepository;
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use userdir_store::Store;

use crate::common::TestServer;

async fn keys_are_stored_as_hashes_and_revoked(s: TestServer) {
    let store = Store::connect(&s.store_options).await.unwrap();
    let now = Timestamp::now();
    let made = NewApiKey::generate().unwrap();
    let token = made.token();
    let key = ApiKey {
        id: made.id,
        name: "ci-import".into(),
        tenant: Some(TenantId::parse("tenant", "acme").unwrap()),
        scopes: Scopes::of(&[Scope::Read, Scope::Import]),
        act_as_users: true,
        creator: "test".to_owned(),
        create_time: now,
        expire_time: None,
        last_used_time: None,
        revoke_time: None,
        hash: made.hash(),
    };
    store.insert_api_key(&key).await.unwrap();
    let operator = NewApiKey::generate().unwrap();
    let operator_key = ApiKey {
        id: operator.id,
        name: "bootstrap".into(),
        tenant: None,
        scopes: Scopes::ALL,
        act_as_users: false,
        creator: "test".to_owned(),
        create_time: Timestamp::from_unix_micros(now.unix_micros() + 1),
        expire_time: Some(Timestamp::from_unix_micros(now.unix_micros() + 60_000_000)),
        last_used_time: None,
        revoke_time: None,
        hash: operator.hash(),
    };
    store.insert_api_key(&operator_key).await.unwrap();

    // Besides the operator key the test server was configured with.
    let listed: Vec<ApiKey> = store
        .list_api_keys()
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
    let listed = ours(store.list_api_keys().await.unwrap());
    assert_eq!(listed.last_used_time, Some(later));

    // Revoked once.
    assert!(store.revoke_api_key(key.id, later).await.unwrap());
    assert!(!store.revoke_api_key(key.id, later).await.unwrap());
    assert!(!store.revoke_api_key(uuid::Uuid::now_v7(), later).await.unwrap());
    let listed = ours(store.list_api_keys().await.unwrap());
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
    let now = Timestamp::now();
    let made = NewApiKey::generate().unwrap();
    one.insert_api_key(&ApiKey {
        id: made.id,
        name: "svc".into(),
        tenant: Some(TenantId::parse("tenant", "acme").unwrap()),
        scopes: Scopes::of(&[Scope::Read]),
        act_as_users: false,
        creator: "test".to_owned(),
        create_time: now,
        expire_time: None,
        last_used_time: None,
        revoke_time: None,
        hash: made.hash(),
    })
    .await
    .unwrap();
    let ring_one = KeyRing::load(Arc::clone(&one)).await.unwrap();
    let ring_two = KeyRing::load(Arc::clone(&two)).await.unwrap();
    let token = made.token();
    for ring in [&ring_one, &ring_two] {
        let caller = ring.authenticate(&token, now).unwrap();
        assert_eq!(
            caller.tenants,
            TenantScope::One(TenantId::parse("tenant", "acme").unwrap())
        );
        assert!(caller.scopes.has(Scope::Read) && !caller.scopes.has(Scope::Write));
        assert_eq!(caller.principal, format!("apikey:{}", made.id.simple()));
    }
    // A well-formed key whose secret is not the one stored under its id:
    // unknown, like any wrong key.
    let (presented, stored) = (NewApiKey::generate().unwrap(), NewApiKey::generate().unwrap());
    one.insert_api_key(&ApiKey {
        id: presented.id,
        name: "other".into(),
        tenant: None,
        scopes: Scopes::ALL,
        act_as_users: false,
        creator: "test".to_owned(),
        create_time: now,
        expire_time: None,
        last_used_time: None,
        revoke_time: None,
        hash: stored.hash(),
    })
    .await
    .unwrap();
    ring_one.refresh().await.unwrap();
    assert_eq!(ring_one.authenticate(&presented.token(), now), Err(AuthError::Unknown));
    assert!(matches!(
        ring_one.authenticate("udk_nope", now),
        Err(AuthError::Malformed(_))
    ));
    ring_one.flush_last_used().await.unwrap();
    let listed = one.list_api_keys().await.unwrap();
    let svc = listed.iter().find(|k| k.id == made.id).unwrap();
    assert_eq!(svc.last_used_time, Some(now));

    // Revoked through one replica's store: the other refuses it after its refresh.
    assert!(one.revoke_api_key(made.id, Timestamp::now()).await.unwrap());
    assert!(ring_two.authenticate(&token, now).is_ok(), "until the refresh");
    ring_two.refresh().await.unwrap();
    assert_eq!(ring_two.authenticate(&token, now), Err(AuthError::Revoked));
}

crate::on_both_backends!(
    keys_are_stored_as_hashes_and_revoked,
    a_revoked_key_stops_on_every_replica
);
