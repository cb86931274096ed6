//! Smaller promises that must hold: filters as AIP-160 reads them, line
//! numbers for every line ending, errors that fit in their headers,
//! migrations that replicas can run together.

use tonic::Code;
use userdir::pb::{GetTenantRequest, ImportMode, ListUsersRequest, User};

use crate::common::{TestServer, pg_url};
use crate::import::{chunks, options, run};

fn custom(email: &str, c1: &str, c2: &str, c3: &str) -> User {
    let mut user = User {
        email: email.into(),
        display_name: email.into(),
        ..Default::default()
    };
    for (slot, value) in [("custom_01", c1), ("custom_02", c2), ("custom_03", c3)] {
        user.custom_attributes.insert(slot.into(), value.into());
    }
    user
}

/// `a OR b AND c` is `(a OR b) AND c`; `-` negates.
async fn filters_follow_aip_160(s: TestServer) {
    s.tenant("acme").await;
    s.create("acme", custom("a@example.com", "1", "", "")).await.unwrap();
    s.create("acme", custom("ac@example.com", "1", "", "3")).await.unwrap();
    s.create("acme", custom("bc@example.com", "", "2", "3")).await.unwrap();
    s.create("acme", custom("c@example.com", "", "", "3")).await.unwrap();
    let list = |filter: &str| {
        let req = ListUsersRequest {
            parent: "tenants/acme".into(),
            filter: filter.into(),
            order_by: "email".into(),
            ..Default::default()
        };
        let mut client = s.users.clone();
        async move {
            let users = client.list_users(req).await.unwrap().into_inner().users;
            users.into_iter().map(|u| u.email).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(r#"custom_01 = "1" OR custom_02 = "2" AND custom_03 = "3""#).await,
        ["ac@example.com", "bc@example.com"]
    );
    assert_eq!(list(r#"-custom_03 = "3""#).await, ["a@example.com"]);
}

/// A file with lone CR line endings (old Mac) reports each row's own line.
async fn lone_cr_rows_report_their_lines(s: TestServer) {
    s.tenant("acme").await;
    let text = "name,email\rA,a@example.com\rB,not-an-email\rC,c@example.com\r";
    let (results, _) = run(&s, options(ImportMode::Upsert), chunks(text.as_bytes(), 5))
        .await
        .unwrap();
    let lines: Vec<i64> = results.iter().map(|r| r.line).collect();
    assert_eq!(lines, [2, 3, 4]);
    assert_eq!(results[1].reason, "INVALID_ARGUMENT");
}

/// Whatever a request quotes, the error that quotes it back fits: our own
/// status, not the transport's "metadata exceeds hard limit".
async fn errors_quote_little(s: TestServer) {
    let huge = "x".repeat(100_000);
    let req = GetTenantRequest {
        name: format!("tenants/{huge}"),
    };
    let err = s.tenants.clone().get_tenant(req).await.unwrap_err();
    assert!(matches!(err.code(), Code::InvalidArgument | Code::NotFound), "{err:?}");
    assert!(err.message().len() < 2000, "{} bytes", err.message().len());
    let header = format!("name,email,{huge}\nA,a@example.com,x\n");
    s.tenant("acme").await;
    let err = run(&s, options(ImportMode::Upsert), chunks(header.as_bytes(), 65536))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().len() < 2000, "{} bytes", err.message().len());
}

/// A one-row FULL_SYNC of a 40-user tenant deletes nothing and says how
/// many it would have deleted; a dry run says the same; raising the limit
/// lets it through.
async fn full_sync_delete_guard(s: TestServer) {
    s.tenant("acme").await;
    run(
        &s,
        options(ImportMode::Upsert),
        chunks(crate::import::many_rows(40).as_bytes(), 4096),
    )
    .await
    .unwrap();
    let file = b"name,email\nKept,u00000@example.com\n";
    for validate_only in [false, true] {
        let mut opts = options(ImportMode::FullSync);
        opts.validate_only = validate_only;
        let err = run(&s, opts, chunks(file, 4096)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(crate::common::reason(&err), "FULL_SYNC_DELETE_GUARD");
        assert!(
            err.message().contains("would delete 39 of the tenant's 40 users"),
            "{}",
            err.message()
        );
        assert_eq!(crate::import::users(&s).await.len(), 40, "nothing was deleted");
    }
    let mut opts = options(ImportMode::FullSync);
    opts.max_delete_percent = 100;
    let (_, job) = run(&s, opts, chunks(file, 4096)).await.unwrap();
    assert_eq!(job.counts.unwrap().deleted, 39);
}

/// Page tokens are opaque (no email inside, even decoded), refuse any
/// edit, and work on every replica (they share the key in the database).
async fn page_tokens_are_sealed_and_shared(s: TestServer) {
    use base64::Engine;
    s.tenant("acme").await;
    for i in 0..3 {
        s.user("acme", &format!("private.person{i}@example.com"), "P").await;
    }
    let req = |token: String| ListUsersRequest {
        parent: "tenants/acme".into(),
        order_by: "email".into(),
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    let first = s
        .users
        .clone()
        .list_users(req(String::new()))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("private"),
        "the token shows personal data"
    );
    let mut edited = raw.clone();
    edited[raw.len() / 2] ^= 1;
    let edited = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(edited);
    let err = s.users.clone().list_users(req(edited)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let (mut replica, _stop) = s.replica().await;
    let second = replica.list_users(req(token)).await.unwrap().into_inner();
    assert_eq!(second.users[0].email, "private.person1@example.com");
}

crate::on_both_backends!(
    page_tokens_are_sealed_and_shared,
    filters_follow_aip_160,
    lone_cr_rows_report_their_lines,
    errors_quote_little,
    full_sync_delete_guard
);

/// Three replicas starting together on a fresh PostgreSQL schema all come
/// up (they take turns migrating).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrate_a_fresh_schema_together() {
    use sea_orm::{ConnectionTrait, Database};
    let Ok(admin) = Database::connect(pg_url().as_str()).await else {
        crate::common::skip("PostgreSQL is not reachable");
        return;
    };
    let schema = format!("it_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let mut options = userdir_store::StoreOptions::new(pg_url());
    options.pg_schema = Some(schema.clone());
    options.max_connections = 2;
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let options = options.clone();
            tokio::spawn(async move { userdir_store::Store::open(&options).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap().close().await.unwrap();
    }
    admin
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// `userdir migrate` migrates a fresh database; `serve --no-migrate` refuses
/// a database that is behind.
#[test]
fn migrate_command_and_no_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"))
        .args([
            "serve",
            "--no-migrate",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("userdir migrate"),
        "{serve:?}"
    );
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"))
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    assert!(String::from_utf8_lossy(&migrate.stdout).contains("applied"));
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"))
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
}
