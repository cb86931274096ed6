//! Secrets stay secret, between two `userdir serve` processes sharing one
//! PostgreSQL schema: an API key's token is shown once, and neither it nor
//! its secret part is ever in the database, either server's log (at debug
//! level) or an error message; a key revoked through one process stops
//! working on the other within its key refresh.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::Code;
use userdir::pb::api_keys_client::ApiKeysClient;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::{CreateTenantRequest, GetTenantRequest, RevokeApiKeyRequest, Scope, Tenant};

use crate::auth::{start_serve, stop};
use crate::common::with_key;

/// Every row of every table of `schema`, as JSON text.
async fn dump(url: &str, schema: &str) -> String {
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let tables = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            [schema.into()],
        ))
        .await
        .unwrap();
    let mut text = String::new();
    for table in tables {
        let table: String = table.try_get_by_index(0).unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT row_to_json(t)::text FROM \"{schema}\".\"{table}\" t"),
            ))
            .await
            .unwrap();
        for row in rows {
            text.push_str(&row.try_get_by_index::<String>(0).unwrap());
            text.push('\n');
        }
    }
    db.close().await.ok();
    text
}

async fn get_tenant(port: u16, token: &str) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    TenantAdminClient::new(with_key(&channel, Some(token)))
        .get_tenant(GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_leak_and_revocation_reaches_another_process() {
    let Some((url, schema)) = crate::common::spawn_bare_postgres_schema().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let operator = userdir_domain::apikey::NewApiKey::generate().unwrap();
    let operator_token = operator.token();
    let hash_file = dir.path().join("operator-key-hash");
    let hash = format!("udkh_{}_{}", operator.id.simple(), operator.hash().to_hex());
    std::fs::write(&hash_file, format!("{hash}\n")).unwrap();
    let args = [
        "--database-url",
        url.as_str(),
        "--pg-schema",
        schema.as_str(),
        "--log-format",
        "json",
    ];
    let env = [
        ("USERDIR_OPERATOR_KEY_FILE", hash_file.to_str().unwrap()),
        ("RUST_LOG", "debug"),
    ];
    let (mut logs, mut children, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for name in ["a", "b"] {
        let log = dir.path().join(format!("{name}.log"));
        let (child, port) = start_serve(&args, &env, &log).await;
        children.push(child);
        ports.push(port.unwrap());
        logs.push(log);
    }
    let (a, b) = (ports[0], ports[1]);

    // Through A: a tenant and a key of it, whose token is shown once.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{a}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let operator_channel = with_key(&channel, Some(&operator_token));
    TenantAdminClient::new(operator_channel.clone())
        .create_tenant(CreateTenantRequest {
            tenant_id: "acme".into(),
            tenant: Some(Tenant {
                display_name: "Acme".into(),
                ..Default::default()
            }),
            initial_owner: None,
        })
        .await
        .unwrap();
    let (token, key) = crate::common::create_key(&operator_channel, "acme", &[Scope::Read], false).await;
    let mut keys = ApiKeysClient::new(operator_channel);
    assert!(token.starts_with("udk_"));
    // The secret part: what must never be seen again.
    let secret = token[4 + 33..].to_owned();
    assert!(secret.len() >= 40, "{token}");

    // It works on B once B re-reads the keys, and is never shown again.
    let made_at = Instant::now();
    while let Err(e) = get_tenant(b, &token).await {
        assert!(
            made_at.elapsed() < Duration::from_secs(5),
            "the new key never worked on B: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let listed = format!(
        "{:?}",
        keys.list_api_keys(userdir::pb::ListApiKeysRequest::default())
            .await
            .unwrap()
    );
    assert!(!listed.contains(&secret), "{listed}");

    // Refusals name the problem, never the credential presented.
    let mut said = Vec::new();
    let wrong = format!("{}{}", &token[..4 + 33], "A".repeat(secret.len()));
    let tampered = format!("{token}x");
    for presented in [wrong.as_str(), tampered.as_str(), &format!("udk_{secret}")] {
        let err = get_tenant(a, presented).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        said.push(err.message().to_owned());
    }

    // Revoked through A: refused on B within its refresh (2 s by default).
    keys.revoke_api_key(RevokeApiKeyRequest { name: key.name.clone() })
        .await
        .unwrap();
    let revoked = Instant::now();
    let took = loop {
        match get_tenant(b, &token).await {
            Err(e) if e.code() == Code::Unauthenticated => {
                assert!(e.message().contains("revoked"), "{e:?}");
                said.push(e.message().to_owned());
                break revoked.elapsed();
            }
            _ if revoked.elapsed() > Duration::from_secs(10) => panic!("the revoked key still works on B"),
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    };
    assert!(took < Duration::from_secs(5), "revocation took {took:?}");

    for child in children {
        stop(child);
    }
    let stored = dump(&url, &schema).await;
    assert!(
        stored.contains(&key.display_name),
        "the dump holds the key's row: {stored}"
    );
    for (what, text) in [
        ("the database", stored),
        ("server A's log", std::fs::read_to_string(&logs[0]).unwrap()),
        ("server B's log", std::fs::read_to_string(&logs[1]).unwrap()),
        ("the errors", said.join("\n")),
    ] {
        for sentinel in [
            &secret,
            &token,
            &operator_token,
            &operator_token[operator_token.len() - 40..].to_owned(),
        ] {
            assert!(!text.contains(sentinel.as_str()), "{what} holds a secret: {text}");
        }
    }
    crate::common::drop_pg_schema(&schema).await;
}

/// The SQLite database holds every user's personal data: a first start
/// makes it and its `-wal` and `-shm` files owner-only (beside the 0600
/// operator key), and a database found readable by others is made so.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let s = crate::common::spawn(crate::common::Backend::Sqlite).await.unwrap();
    s.tenant("acme").await;
    s.user("acme", "a@example.com", "A").await;
    let url = s.store_options.url.clone();
    let file = std::path::PathBuf::from(url.trim_start_matches("sqlite://").split('?').next().unwrap());
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", file.display()));
        assert!(path.exists(), "{}", path.display());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // A database left readable by others (an older start, a copy) is tightened.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = userdir_store::Store::open(&userdir_store::StoreOptions::new(format!(
        "sqlite://{}?mode=rwc",
        old.display()
    )))
    .await
    .unwrap();
    assert_eq!(mode(&old), 0o600);
    store.close().await.unwrap();
}
