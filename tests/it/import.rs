//! ImportUsers through the real server: the formats of seeds 000/001, modes,
//! row-level and file-level errors, FULL_SYNC, seats, dry runs, job records.

use std::collections::HashMap;

use tonic::Code;
use userdir::pb::import_users_request::Payload;
use userdir::pb::import_users_response::Payload as Out;
use userdir::pb::{
    GetImportJobRequest, ImportEncoding, ImportEnd, ImportJob, ImportJobState, ImportMode, ImportOptions,
    ImportOutcome, ImportRow, ImportRowResult, ImportRows, ImportUsersRequest, ListImportJobsRequest, ListUsersRequest,
    MatchKey, Tenant, User,
};

use crate::common::{TestServer, reason, violation_fields};

pub(crate) fn options(mode: ImportMode) -> ImportOptions {
    ImportOptions {
        parent: "tenants/acme".into(),
        mode: mode as i32,
        ..Default::default()
    }
}

pub(crate) fn end() -> ImportUsersRequest {
    ImportUsersRequest {
        payload: Some(Payload::End(ImportEnd {})),
    }
}

pub(crate) fn chunks(bytes: &[u8], size: usize) -> Vec<ImportUsersRequest> {
    bytes
        .chunks(size.max(1))
        .map(|c| ImportUsersRequest {
            payload: Some(Payload::Chunk(c.to_vec())),
        })
        .collect()
}

/// Runs one import: the options, then `messages`; returns every row result and the summary.
pub(crate) async fn run(
    s: &TestServer,
    opts: ImportOptions,
    messages: Vec<ImportUsersRequest>,
) -> Result<(Vec<ImportRowResult>, ImportJob), tonic::Status> {
    let mut all = vec![ImportUsersRequest {
        payload: Some(Payload::Options(opts)),
    }];
    all.extend(messages);
    all.push(end());
    results_of(s.users.clone(), tonic::Request::new(tokio_stream::iter(all))).await
}

/// Sends one import's `request` through `client`: every row result and the summary.
pub(crate) async fn results_of(
    mut client: userdir::pb::user_directory_client::UserDirectoryClient<userdir::client::AuthedChannel>,
    request: tonic::Request<tokio_stream::Iter<std::vec::IntoIter<ImportUsersRequest>>>,
) -> Result<(Vec<ImportRowResult>, ImportJob), tonic::Status> {
    let mut stream = client.import_users(request).await?.into_inner();
    let mut results = Vec::new();
    let mut summary = None;
    while let Some(message) = stream.message().await? {
        match message.payload {
            Some(Out::Results(batch)) => results.extend(batch.results),
            Some(Out::Summary(job)) => summary = Some(job),
            None => {}
        }
    }
    Ok((results, summary.expect("a summary ends every import")))
}

pub(crate) async fn csv(s: &TestServer, opts: ImportOptions, text: &str) -> (Vec<ImportRowResult>, ImportJob) {
    run(s, opts, chunks(text.as_bytes(), 7)).await.expect("import")
}

pub(crate) fn outcomes(results: &[ImportRowResult]) -> Vec<(i64, ImportOutcome)> {
    results
        .iter()
        .map(|r| (r.line, ImportOutcome::try_from(r.outcome).unwrap()))
        .collect()
}

/// Every user of tenant acme, by email, page after page.
pub(crate) async fn users(s: &TestServer) -> Vec<User> {
    users_of(s, "acme").await
}

/// Every user of `tenant`, by email.
pub(crate) async fn users_of(s: &TestServer, tenant: &str) -> Vec<User> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = ListUsersRequest {
            parent: format!("tenants/{tenant}"),
            page_size: 1000,
            order_by: "email".into(),
            page_token,
            ..Default::default()
        };
        let page = s.users.clone().list_users(req).await.unwrap().into_inner();
        all.extend(page.users);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

pub(crate) fn by_email(users: &[User]) -> HashMap<String, User> {
    users.iter().map(|u| (u.email.clone(), u.clone())).collect()
}

const SEED_001: &str = "\u{FEFF}name,email,custom_01,custom_02,custom_03,custom_04,custom_05,custom_06,custom_07,custom_08,custom_09,custom_10\r\n\
\"Yamada, Taro\",taro@example.com,営業,,,,,,,,,\r\n\
\"Say \"\"hi\"\"\",hi@example.com,,x,,,,,,,,10\r\n\
Plain,plain@example.com,'=SUM(A1),,,,,,,,,\n";

async fn seed_001_upsert_then_rerun_changes_nothing(s: TestServer) {
    s.tenant("acme").await;
    let (results, job) = csv(&s, options(ImportMode::Upsert), SEED_001).await;
    assert_eq!(
        outcomes(&results),
        [
            (2, ImportOutcome::Created),
            (3, ImportOutcome::Created),
            (4, ImportOutcome::Created)
        ]
    );
    assert!(results.iter().all(|r| r.user.starts_with("tenants/acme/users/")));
    assert_eq!(results[0].email, "taro@example.com");
    assert_eq!(job.state, ImportJobState::Succeeded as i32);
    let counts = job.counts.unwrap();
    assert_eq!((counts.rows, counts.created), (3, 3));
    let before = by_email(&users(&s).await);
    assert_eq!(before["taro@example.com"].display_name, "Yamada, Taro");
    assert_eq!(before["taro@example.com"].custom_attributes["custom_01"], "営業");
    assert_eq!(before["hi@example.com"].display_name, "Say \"hi\"");
    assert_eq!(before["hi@example.com"].custom_attributes["custom_10"], "10");
    assert_eq!(
        before["plain@example.com"].custom_attributes["custom_01"], "=SUM(A1)",
        "formula protection undone"
    );

    let (again, _) = csv(&s, options(ImportMode::Upsert), SEED_001).await;
    assert_eq!(again.len(), 3, "{again:?}");
    assert!(
        outcomes(&again).iter().all(|(_, o)| *o == ImportOutcome::Unchanged),
        "{again:?}"
    );
    let after = by_email(&users(&s).await);
    for (email, user) in &before {
        assert_eq!(
            (&after[email].update_time, &after[email].etag),
            (&user.update_time, &user.etag)
        );
    }
}

async fn shift_jis_files(s: TestServer) {
    s.tenant("acme").await;
    let text = "name,email,custom_01\r\n髙橋 一郎,takahashi@example.jp,ソニー㈱\r\n①番 表 能,maru@example.jp,～\r\n";
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(!unmappable);
    for (encoding, chunk) in [(ImportEncoding::ShiftJis, 1), (ImportEncoding::Auto, 3)] {
        let opts = ImportOptions {
            encoding: encoding as i32,
            ..options(ImportMode::Upsert)
        };
        let (results, _) = run(&s, opts, chunks(&bytes, chunk)).await.unwrap();
        assert_eq!(results.len(), 2);
        assert!(
            results.iter().all(|r| r.outcome != ImportOutcome::Failed as i32),
            "{results:?}"
        );
    }
    let all = by_email(&users(&s).await);
    assert_eq!(all["takahashi@example.jp"].display_name, "髙橋 一郎");
    assert_eq!(all["takahashi@example.jp"].custom_attributes["custom_01"], "ソニー㈱");
    assert_eq!(all["maru@example.jp"].display_name, "①番 表 能");
    assert_eq!(all["maru@example.jp"].custom_attributes["custom_01"], "～");

    // Declared UTF-8 but Shift-JIS: refused before anything is written.
    let opts = ImportOptions {
        encoding: ImportEncoding::Utf8 as i32,
        ..options(ImportMode::Upsert)
    };
    let (other, _, _) = encoding_rs::SHIFT_JIS.encode("name,email\n新規,new@example.jp\n");
    let err = run(&s, opts, chunks(&other, 5)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("looks like Shift-JIS"), "{}", err.message());
    assert_eq!(users(&s).await.len(), 2);
}

async fn row_errors_fail_only_their_row(s: TestServer) {
    s.tenant("acme").await;
    let mut bytes = b"name,email\n".to_vec();
    bytes.extend_from_slice(b"Good,good@example.com\n"); // 2
    bytes.extend_from_slice(b"Bad,bad..email@example.com\n"); // 3
    bytes.extend_from_slice(b"Ragged,ragged@example.com,extra\n"); // 4
    bytes.extend_from_slice(b"Again,GOOD@example.com\n"); // 5: duplicate of line 2
    bytes.extend_from_slice(b"Broken \xff\xfe,broken@example.com\n"); // 6: not UTF-8
    bytes.extend_from_slice(b"Nul\0,nul@example.com\n"); // 7
    bytes.extend_from_slice(b",noname@example.com\n"); // 8: name required
    bytes.extend_from_slice(b"\"Multi\nLine\",multi@example.com\n"); // 9-10
    bytes.extend_from_slice(b"Last,last@example.com"); // 11, no final newline
    let opts = ImportOptions {
        encoding: ImportEncoding::Utf8 as i32,
        ..options(ImportMode::Upsert)
    };
    let (results, job) = run(&s, opts, chunks(&bytes, 4)).await.unwrap();
    use ImportOutcome::*;
    assert_eq!(
        outcomes(&results),
        [
            (2, Created),
            (3, Failed),
            (4, Failed),
            (5, Failed),
            (6, Failed),
            (7, Failed),
            (8, Failed),
            (9, Created),
            (11, Created)
        ]
    );
    let reasons: Vec<&str> = results.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "",
            "INVALID_ARGUMENT",
            "RAGGED_ROW",
            "DUPLICATE_IN_FILE",
            "ENCODING_ERROR",
            "NUL_BYTE",
            "INVALID_ARGUMENT",
            "",
            ""
        ]
    );
    assert_eq!(results[1].field, "email");
    assert!(results[3].message.contains("line 2"), "{}", results[3].message);
    assert_eq!(results[6].field, "display_name");
    assert_eq!(job.counts.unwrap().failed, 6);
    let stored: Vec<String> = users(&s).await.into_iter().map(|u| u.display_name).collect();
    assert_eq!(stored, ["Good", "Last", "Multi\nLine"]);
    assert!(stored.iter().all(|n| !n.contains('\u{FFFD}')));
}

async fn file_errors_write_nothing(s: TestServer) {
    s.tenant("acme").await;
    let cases = [
        (
            "name,email,nickname\nA,a@example.com,x\n",
            "unknown column \"nickname\"",
        ),
        ("name,email,EMAIL\nA,a@example.com,b@example.com\n", "both hold email"),
        ("name,custom_01\nA,x\n", "no email column"),
        ("", "neither file bytes nor rows"),
        ("\n\n", "the file is empty"),
    ];
    for (text, says) in cases {
        let err = run(&s, options(ImportMode::Upsert), chunks(text.as_bytes(), 3))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{text:?}");
        assert_eq!(violation_fields(&err), ["file"]);
        assert!(err.message().contains(says), "{text:?}: {}", err.message());
    }
    assert!(users(&s).await.is_empty());
    // Every attempt left a FAILED job.
    let jobs = import_jobs(&s).await;
    assert_eq!(jobs.len(), 5);
    assert!(
        jobs.iter()
            .all(|j| j.state == ImportJobState::Failed as i32 && !j.error.is_empty())
    );

    // No mode: never a default, never FULL_SYNC.
    let err = run(&s, options(ImportMode::Unspecified), vec![]).await.unwrap_err();
    assert_eq!(
        (err.code(), violation_fields(&err)),
        (Code::InvalidArgument, vec!["options.mode".to_owned()])
    );
    let no_options = s
        .users
        .clone()
        .import_users(tokio_stream::iter(chunks(b"name,email\n", 100)))
        .await;
    let err = match no_options {
        Ok(response) => response.into_inner().message().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::InvalidArgument);
    let unknown = ImportOptions {
        parent: "tenants/nope".into(),
        ..options(ImportMode::Upsert)
    };
    assert_eq!(run(&s, unknown, vec![]).await.unwrap_err().code(), Code::NotFound);
}

async fn modes_and_empty_cells(s: TestServer) {
    s.tenant("acme").await;
    csv(
        &s,
        options(ImportMode::Upsert),
        "name,email,title,custom_01\nA,a@example.com,Boss,keep\nB,b@example.com,Dev,x\n",
    )
    .await;
    use ImportOutcome::*;

    let (r, _) = csv(
        &s,
        options(ImportMode::CreateOnly),
        "name,email\nA2,a@example.com\nC,c@example.com\n",
    )
    .await;
    assert_eq!(outcomes(&r), [(2, Skipped), (3, Created)]);
    let (r, _) = csv(
        &s,
        options(ImportMode::UpdateOnly),
        "name,email\nA3,a@example.com\nD,d@example.com\n",
    )
    .await;
    assert_eq!(outcomes(&r), [(2, Updated), (3, Skipped)]);

    // Without skip_empty_values an empty cell overwrites (seed 000).
    let (r, _) = csv(
        &s,
        options(ImportMode::Upsert),
        "name,email,title,custom_01\nA3,a@example.com,,\n",
    )
    .await;
    assert_eq!(outcomes(&r), [(2, Updated)]);
    let a = by_email(&users(&s).await)["a@example.com"].clone();
    assert_eq!((a.title.as_str(), a.custom_attributes.get("custom_01")), ("", None));
    // With it, empty cells leave stored values alone.
    let opts = ImportOptions {
        skip_empty_values: true,
        ..options(ImportMode::Upsert)
    };
    let (r, _) = csv(&s, opts, "name,email,title,custom_01\n,b@example.com,,y\n").await;
    assert_eq!(outcomes(&r), [(2, Updated)]);
    let b = by_email(&users(&s).await)["b@example.com"].clone();
    assert_eq!(
        (
            b.display_name.as_str(),
            b.title.as_str(),
            b.custom_attributes["custom_01"].as_str()
        ),
        ("B", "Dev", "y")
    );

    // Column mapping for foreign headers; an ignored column.
    let opts = ImportOptions {
        column_mapping: HashMap::from([
            ("氏名".into(), "display_name".into()),
            ("メール".into(), "email".into()),
            ("備考".into(), String::new()),
        ]),
        ..options(ImportMode::Upsert)
    };
    let (r, _) = csv(&s, opts, "氏名,メール,備考\n佐藤,sato@example.com,whatever\n").await;
    assert_eq!(outcomes(&r), [(2, Created)]);
}

async fn seat_limit_takes_the_first_rows(s: TestServer) {
    s.tenant_with(
        "acme",
        Tenant {
            display_name: "Acme".into(),
            seat_limit: 3,
            ..Default::default()
        },
    )
    .await;
    s.user("acme", "existing@example.com", "Existing").await;
    let text = "name,email\nA,a@example.com\nB,b@example.com\nC,c@example.com\nD,d@example.com\n";
    let dry = ImportOptions {
        validate_only: true,
        ..options(ImportMode::Upsert)
    };
    let (dry_results, _) = csv(&s, dry, text).await;
    let (results, _) = csv(&s, options(ImportMode::Upsert), text).await;
    use ImportOutcome::*;
    assert_eq!(
        outcomes(&results),
        [(2, Created), (3, Created), (4, Failed), (5, Failed)]
    );
    assert_eq!(results[2].reason, "SEAT_LIMIT_EXCEEDED");
    assert_eq!(
        outcomes(&dry_results),
        outcomes(&results),
        "a dry run predicts the real run"
    );
    assert_eq!(users(&s).await.len(), 3);
}

async fn dry_run_writes_nothing(s: TestServer) {
    s.tenant("acme").await;
    s.user("acme", "a@example.com", "A").await;
    let opts = ImportOptions {
        validate_only: true,
        ..options(ImportMode::FullSync)
    };
    let (results, job) = csv(&s, opts, "name,email\nA2,a@example.com\nB,b@example.com\nbad,x..y@z\n").await;
    use ImportOutcome::*;
    assert_eq!(outcomes(&results), [(2, Updated), (3, Created), (4, Failed)]);
    assert!(job.options.unwrap().validate_only);
    let stored = users(&s).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].display_name, "A");
}

async fn full_sync(s: TestServer) {
    s.tenant("acme").await;
    for e in ["a", "b", "c"] {
        s.user("acme", &format!("{e}@example.com"), e).await;
    }
    let (results, job) = csv(
        &s,
        options(ImportMode::FullSync),
        "name,email\na,a@example.com\nD,d@example.com\n",
    )
    .await;
    use ImportOutcome::*;
    let mut seen = outcomes(&results);
    seen.sort_by_key(|(l, _)| *l);
    assert_eq!(seen, [(0, Deleted), (0, Deleted), (2, Unchanged), (3, Created)]);
    let mut deleted: Vec<&str> = results
        .iter()
        .filter(|r| r.outcome == Deleted as i32)
        .map(|r| r.email.as_str())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["b@example.com", "c@example.com"]);
    assert_eq!(job.counts.unwrap().deleted, 2);
    let emails: Vec<String> = users(&s).await.into_iter().map(|u| u.email).collect();
    assert_eq!(emails, ["a@example.com", "d@example.com"]);
    let tenant = s
        .tenants
        .clone()
        .get_tenant(userdir::pb::GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await;
    assert_eq!(tenant.unwrap().into_inner().user_count, 2, "deletions free their seats");

    // A failed row means nothing is deleted: it may stand for a user who must stay.
    let (results, job) = csv(&s, options(ImportMode::FullSync), "name,email\nA,a@exa..mple.com\n").await;
    assert_eq!(outcomes(&results), [(2, Failed)]);
    assert!(job.error.contains("no user was deleted"), "{}", job.error);
    assert_eq!(users(&s).await.len(), 2);

    // A header-only file would delete everyone: refused unless asked for.
    let err = run(&s, options(ImportMode::FullSync), chunks(b"name,email\n", 4))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "FULL_SYNC_EMPTY_FILE")
    );
    assert_eq!(users(&s).await.len(), 2);
    let all = ImportOptions {
        allow_delete_all: true,
        ..options(ImportMode::FullSync)
    };
    let (results, _) = run(&s, all, chunks(b"name,email\n", 4)).await.unwrap();
    assert_eq!(results.len(), 2);
    assert!(users(&s).await.is_empty());
}

async fn one_full_sync_at_a_time(s: TestServer) {
    s.tenant("acme").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Options(options(ImportMode::FullSync))),
    })
    .await
    .unwrap();
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Chunk(b"name,email\nA,a@example.com\n".to_vec())),
    })
    .await
    .unwrap();
    let mut first = s
        .users
        .clone()
        .import_users(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = run(
        &s,
        options(ImportMode::FullSync),
        chunks(b"name,email\nB,b@example.com\n", 100),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Aborted, "FULL_SYNC_ALREADY_RUNNING")
    );
    // UPSERTs may still run meanwhile.
    csv(&s, options(ImportMode::Upsert), "name,email\nC,c@example.com\n").await;
    tx.send(end()).await.unwrap();
    drop(tx);
    let mut summary = None;
    while let Some(m) = first.message().await.unwrap() {
        if let Some(Out::Summary(job)) = m.payload {
            summary = Some(job);
        }
    }
    assert_eq!(summary.unwrap().state, ImportJobState::Succeeded as i32);
    // The lock is free again.
    csv(&s, options(ImportMode::FullSync), "name,email\nA,a@example.com\n").await;
}

/// Writes a FULL_SYNC lock into the tenant row, as a server would.
async fn plant_sync_lock(db: &sea_orm::DatabaseConnection, job: uuid::Uuid, heartbeat: i64) {
    use sea_orm::ConnectionTrait;
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "UPDATE tenants SET sync_job = $1, sync_heartbeat = $2 WHERE id = 'acme'",
        _ => "UPDATE tenants SET sync_job = ?, sync_heartbeat = ? WHERE id = 'acme'",
    };
    let statement = sea_orm::Statement::from_sql_and_values(backend, sql, [job.into(), heartbeat.into()]);
    db.execute_raw(statement).await.unwrap();
}

async fn stale_full_sync_lock_is_taken_over(s: TestServer) {
    s.tenant("acme").await;
    s.user("acme", "gone@example.com", "Gone").await;
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    let now = userdir_domain::text::Timestamp::now().unix_micros();
    // A FULL_SYNC whose server died an hour ago still holds the lock: taken over.
    plant_sync_lock(store.writer(), uuid::Uuid::now_v7(), now - 3_600_000_000).await;
    let (results, job) = csv(&s, options(ImportMode::FullSync), "name,email\nA,a@example.com\n").await;
    assert_eq!(job.state, ImportJobState::Succeeded as i32);
    assert!(
        results
            .iter()
            .any(|r| r.outcome == ImportOutcome::Deleted as i32 && r.email == "gone@example.com")
    );
    // A fresh lock is respected.
    plant_sync_lock(store.writer(), uuid::Uuid::now_v7(), now).await;
    let err = run(
        &s,
        options(ImportMode::FullSync),
        chunks(b"name,email\nA,a@example.com\n", 9),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Aborted, "FULL_SYNC_ALREADY_RUNNING")
    );
}

/// A create that collides with another writer's user between the lookup and
/// the write (a race the file cannot show) fails alone; the rest of its
/// transaction, including rows written before it by earlier batches of the
/// same transaction, is written, with their external ids, and the seats
/// counted. Unset external ids are stored as NULL by the fast (multi-row)
/// path too.
async fn a_row_racing_another_writer_fails_alone(s: TestServer) {
    use userdir_domain::repo::{ImportRepository, ImportWrite, TenantRepository};
    use userdir_domain::tenant::TenantId;
    use userdir_domain::user::{User as DomainUser, UserInput};
    s.tenant("acme").await;
    s.user("acme", "taken@example.com", "Taken").await;
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    let tenant = TenantId::parse("tenant", "acme").unwrap();
    let schema = store.get_tenant(&tenant).await.unwrap().custom_attributes;
    let now = userdir_domain::text::Timestamp::now();
    let new = |email: &str, external_id: &str| {
        let input = UserInput {
            email: email.into(),
            display_name: email.into(),
            external_id: external_id.into(),
            ..Default::default()
        };
        userdir_domain::repo::Imported {
            user: DomainUser::create(tenant.clone(), input, &schema, now).unwrap(),
            line: 2,
            paths: Vec::new(),
        }
    };
    let origin = userdir_domain::event::Origin::server();
    // A transaction without conflicts takes the multi-row path.
    let mut write = store
        .begin_import_write(&tenant, uuid::Uuid::now_v7(), &origin)
        .await
        .unwrap();
    write.write(&[new("solo@example.com", "")], &[]).await.unwrap();
    let outcomes = write.commit().await.unwrap();
    assert!(outcomes.len() == 1 && outcomes[0].is_ok(), "{outcomes:?}");
    // The conflict is in the second batch of a transaction.
    let mut write = store
        .begin_import_write(&tenant, uuid::Uuid::now_v7(), &origin)
        .await
        .unwrap();
    write.write(&[new("first@example.com", "")], &[]).await.unwrap();
    let racing = [new("TAKEN@example.com", ""), new("third@example.com", "HR-3")];
    write.write(&racing, &[]).await.unwrap();
    let outcomes = write.commit().await.unwrap();
    assert!(
        outcomes.len() == 3 && outcomes[0].is_ok() && outcomes[2].is_ok(),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[1].as_ref().map_err(|e| e.reason()),
        Err("EMAIL_ALREADY_EXISTS"),
        "{outcomes:?}"
    );
    let found = s
        .users
        .clone()
        .lookup_user(userdir::pb::LookupUserRequest {
            parent: "tenants/acme".into(),
            key: Some(userdir::pb::lookup_user_request::Key::ExternalId("HR-3".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.email, "third@example.com");
    let emails: Vec<String> = users(&s).await.into_iter().map(|u| u.email).collect();
    assert_eq!(
        emails,
        [
            "first@example.com",
            "solo@example.com",
            "taken@example.com",
            "third@example.com"
        ]
    );
    // `''` would pass the API's "unset" checks but take the unique index's one empty slot.
    let sql = "SELECT COUNT(*) FROM users WHERE external_id = ''";
    let row =
        sea_orm::ConnectionTrait::query_one_raw(store.writer(), sea_orm::Statement::from_string(store.backend(), sql))
            .await
            .unwrap()
            .unwrap();
    let blank: i64 = row.try_get_by_index(0).unwrap();
    assert_eq!(blank, 0, "unset external ids are stored as NULL");
    let unset = s
        .users
        .clone()
        .list_users(ListUsersRequest {
            parent: "tenants/acme".into(),
            filter: "NOT external_id:*".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unset.users.len(), 3, "an unset external id is stored as unset");
    let tenant = s
        .tenants
        .clone()
        .get_tenant(userdir::pb::GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenant.user_count, 4);
}

async fn parsed_rows_for_pipelines(s: TestServer) {
    s.tenant("acme").await;
    let row = |pairs: &[(&str, &str)]| ImportRow {
        fields: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let rows = ImportRows {
        rows: vec![
            row(&[
                ("email", "p1@example.com"),
                ("display_name", "P1"),
                ("external_id", "HR-1"),
                ("enabled", "false"),
                ("given_name", "Pia"),
                ("family_name", "Park"),
                ("time_zone", "Asia/Tokyo"),
            ]),
            row(&[("email", "p2@example.com"), ("name", "P2"), ("status", "CONFIRMED")]),
            row(&[("email", "p3@example.com"), ("name", "P3"), ("nickname", "x")]),
            row(&[("name", "no email")]),
        ],
    };
    let opts = options(ImportMode::Upsert);
    let (results, _) = run(
        &s,
        opts,
        vec![ImportUsersRequest {
            payload: Some(Payload::Rows(rows)),
        }],
    )
    .await
    .unwrap();
    use ImportOutcome::*;
    assert_eq!(
        outcomes(&results),
        [(1, Created), (2, Created), (3, Failed), (4, Failed)]
    );
    assert_eq!(
        (results[2].reason.as_str(), results[3].reason.as_str()),
        ("UNKNOWN_FIELD", "MISSING_KEY")
    );
    let all = by_email(&users(&s).await);
    assert_eq!(
        (
            all["p1@example.com"].enabled,
            all["p1@example.com"].external_id.as_str()
        ),
        (Some(false), "HR-1")
    );
    let p1 = &all["p1@example.com"];
    assert_eq!(
        (p1.given_name.as_str(), p1.family_name.as_str(), p1.time_zone.as_str()),
        ("Pia", "Park", "Asia/Tokyo"),
        "profile fields land in their own columns"
    );
    assert_eq!(all["p2@example.com"].status, userdir::pb::UserStatus::Confirmed as i32);

    // Match by external id: renames the user found by HR id.
    let by_ext = ImportOptions {
        match_key: MatchKey::ExternalId as i32,
        ..options(ImportMode::UpdateOnly)
    };
    let rows = ImportRows {
        rows: vec![row(&[("external_id", "HR-1"), ("email", "renamed@example.com")])],
    };
    let (results, _) = run(
        &s,
        by_ext,
        vec![ImportUsersRequest {
            payload: Some(Payload::Rows(rows)),
        }],
    )
    .await
    .unwrap();
    assert_eq!(outcomes(&results), [(1, Updated)]);
    assert!(by_email(&users(&s).await).contains_key("renamed@example.com"));
    // Mixing CSV bytes and rows in one import is refused.
    let mixed = vec![
        ImportUsersRequest {
            payload: Some(Payload::Chunk(b"name,email\n".to_vec())),
        },
        ImportUsersRequest {
            payload: Some(Payload::Rows(ImportRows::default())),
        },
    ];
    assert_eq!(
        run(&s, options(ImportMode::Upsert), mixed).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

async fn export_format_imports_back(s: TestServer) {
    s.tenant("acme").await;
    csv(&s, options(ImportMode::Upsert), SEED_001).await;
    // The export header of seed 001, rows as the export writes them.
    let mut text = String::from(
        "userid,email,name,enabled,status,created,updated,custom_01,custom_02,custom_03,custom_04,custom_05,custom_06,custom_07,custom_08,custom_09,custom_10\n",
    );
    for u in users(&s).await {
        let c = |k: &str| u.custom_attributes.get(k).cloned().unwrap_or_default();
        let quoted = |v: String| {
            if v.contains([',', '"']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v
            }
        };
        let custom: Vec<String> = (1..=10).map(|i| quoted(c(&format!("custom_{i:02}")))).collect();
        let custom: Vec<String> = custom
            .into_iter()
            .map(|v| if v.starts_with('=') { format!("'{v}") } else { v })
            .collect();
        text.push_str(&format!(
            "{},{},{},true,UNCONFIRMED,2026-01-01T00:00:00Z,2026-01-01T00:00:00Z,{}\n",
            u.user_id,
            u.email,
            quoted(u.display_name.clone()),
            custom.join(",")
        ));
    }
    for key in [MatchKey::Email, MatchKey::UserId] {
        let opts = ImportOptions {
            match_key: key as i32,
            ..options(ImportMode::Upsert)
        };
        let (results, _) = csv(&s, opts, &text).await;
        assert_eq!(results.len(), text.lines().count() - 1, "{key:?}: {results:?}");
        assert!(!results.is_empty());
        assert!(
            results.iter().all(|r| r.outcome == ImportOutcome::Unchanged as i32),
            "{key:?}: {results:?}"
        );
    }
}

async fn import_jobs_are_recorded(s: TestServer) {
    s.tenant("acme").await;
    let (_, first) = csv(&s, options(ImportMode::Upsert), "name,email\nA,a@example.com\n").await;
    let mut req = tonic::Request::new(tokio_stream::iter(vec![
        ImportUsersRequest {
            payload: Some(Payload::Options(options(ImportMode::CreateOnly))),
        },
        ImportUsersRequest {
            payload: Some(Payload::Chunk(
                b"name,email\nA,a@example.com\nB,b@example.com\n".to_vec(),
            )),
        },
        end(),
    ]));
    // The old header that named an actor is no longer believed.
    req.metadata_mut()
        .insert("x-userdir-actor", "ops@example.com".parse().unwrap());
    let mut stream = s.users.clone().import_users(req).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}

    let got = s
        .users
        .clone()
        .get_import_job(GetImportJobRequest {
            name: first.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, first);
    assert!(got.end_time.is_some());
    let jobs = s
        .users
        .clone()
        .list_import_jobs(ListImportJobsRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let newest = &jobs.import_jobs[0];
    assert_eq!(
        newest.actor,
        crate::common::operator_principal(),
        "the caller runs the import"
    );
    let counts = newest.counts.unwrap();
    assert_eq!((counts.rows, counts.created, counts.skipped), (2, 1, 1));
    assert_eq!(newest.options.as_ref().unwrap().mode, ImportMode::CreateOnly as i32);
    let older = s
        .users
        .clone()
        .list_import_jobs(ListImportJobsRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            page_token: jobs.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(older.import_jobs[0].name, first.name);
    let missing = first.name.replace("tenants/acme", "tenants/globex");
    assert_eq!(
        s.users
            .clone()
            .get_import_job(GetImportJobRequest { name: missing })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

/// Starts an import whose input the test feeds by hand.
pub(crate) async fn open_import(
    s: &TestServer,
    opts: ImportOptions,
) -> (
    tokio::sync::mpsc::Sender<ImportUsersRequest>,
    tonic::Streaming<userdir::pb::ImportUsersResponse>,
) {
    try_open_import(s, opts, None).await.expect("import started")
}

/// [`open_import`], with the caller's deadline if any, returning the status
/// the server refused it with (the options were read, the response headers
/// came back: a started import holds its place under the caps).
pub(crate) async fn try_open_import(
    s: &TestServer,
    opts: ImportOptions,
    deadline: Option<std::time::Duration>,
) -> Result<
    (
        tokio::sync::mpsc::Sender<ImportUsersRequest>,
        tonic::Streaming<userdir::pb::ImportUsersResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Options(opts)),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    let stream = s.users.clone().import_users(request).await?;
    Ok((tx, stream.into_inner()))
}

/// The import jobs of tenant acme, newest first (one page).
pub(crate) async fn import_jobs(s: &TestServer) -> Vec<ImportJob> {
    let req = ListImportJobsRequest {
        parent: "tenants/acme".into(),
        ..Default::default()
    };
    s.users
        .clone()
        .list_import_jobs(req)
        .await
        .unwrap()
        .into_inner()
        .import_jobs
}

pub(crate) async fn latest_job_when_done(s: &TestServer) -> ImportJob {
    for _ in 0..200 {
        let req = ListImportJobsRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        };
        let jobs = s
            .users
            .clone()
            .list_import_jobs(req)
            .await
            .unwrap()
            .into_inner()
            .import_jobs;
        if jobs[0].state != ImportJobState::Running as i32 {
            return jobs[0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the import job never ended");
}

/// Imports `n` users (`many_rows`) into tenant acme.
pub(crate) async fn seed_users(s: &TestServer, n: usize) {
    run(s, options(ImportMode::Upsert), chunks(many_rows(n).as_bytes(), 65536))
        .await
        .expect("seed users");
}

pub(crate) fn many_rows(n: usize) -> String {
    let mut text = String::from("name,email\n");
    for i in 0..n {
        text.push_str(&format!("User number {i} with a longer name,u{i:05}@example.com\n"));
    }
    text
}

async fn cancelled_import_keeps_committed_rows(s: TestServer) {
    s.tenant("acme").await;
    // Users the file does not list: a FULL_SYNC that ends without its end
    // message must delete none of them.
    let kept = ["keep1@example.org", "keep2@example.org"];
    for email in kept {
        s.user("acme", email, "Kept with a longer name").await;
    }
    let text = many_rows(2000);
    // 1300 rows (past the 64 KiB the encoding check reads first), then the
    // first half of row 1301, then the client goes away without an end.
    let cut = text.match_indices('\n').nth(1300).unwrap().0 + 1;
    let (tx, mut stream) = open_import(&s, options(ImportMode::FullSync)).await;
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Chunk(text.as_bytes()[..cut + 20].to_vec())),
    })
    .await
    .unwrap();
    let mut received = Vec::new();
    while received.len() < 1000 {
        match stream.message().await.unwrap().unwrap().payload {
            Some(Out::Results(batch)) => received.extend(batch.results),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(tx);
    drop(stream);
    let job = latest_job_when_done(&s).await;
    assert_eq!(job.state, ImportJobState::Cancelled as i32, "{job:?}");
    // Every row whose result was sent is stored whole; the cut row is not;
    // the users the file does not list are all still there.
    let mut stored = by_email(&users(&s).await);
    for email in kept {
        assert!(
            stored.remove(email).is_some(),
            "{email} was deleted by a FULL_SYNC that never ended"
        );
    }
    for r in &received {
        assert_eq!(stored[&r.email].name, r.user);
    }
    assert!(stored.values().all(|u| u.display_name.ends_with("with a longer name")));
    assert!(stored.len() <= 1300);
    // What the server was still committing when the client left landed
    // before the job ended, and the job counts it: nothing is written later.
    let counts = job.counts.unwrap();
    assert_eq!(stored.len() as i64, counts.created, "{counts:?}");
    // The FULL_SYNC lock was released.
    csv(&s, options(ImportMode::Upsert), "name,email\nA,a@example.com\n").await;
    let mut opts = options(ImportMode::FullSync);
    opts.max_delete_percent = 100;
    let (results, _) = csv(&s, opts, "name,email\nA,a@example.com\n").await;
    assert_eq!(
        results
            .iter()
            .filter(|r| r.outcome == ImportOutcome::Deleted as i32)
            .count(),
        stored.len() + kept.len()
    );
}

async fn slow_reader_gets_every_result(s: TestServer) {
    s.tenant("acme").await;
    let text = many_rows(5000);
    let (tx, mut stream) = open_import(&s, options(ImportMode::Upsert)).await;
    let sender = tokio::spawn(async move {
        for chunk in text.as_bytes().chunks(8192) {
            tx.send(ImportUsersRequest {
                payload: Some(Payload::Chunk(chunk.to_vec())),
            })
            .await
            .unwrap();
        }
        tx.send(end()).await.unwrap();
    });
    let mut lines = Vec::new();
    let mut summary = None;
    let mut largest = 0;
    while let Some(message) = stream.message().await.unwrap() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        match message.payload {
            Some(Out::Results(batch)) => {
                largest = largest.max(batch.results.len());
                lines.extend(batch.results.into_iter().map(|r| r.line));
            }
            Some(Out::Summary(job)) => summary = Some(job),
            None => {}
        }
    }
    sender.await.unwrap();
    assert_eq!(
        lines,
        (2..=5001).collect::<Vec<i64>>(),
        "one result per row, in file order"
    );
    // Transactions hold thousands of rows; their results go out in
    // messages of at most 1,000.
    assert!(largest <= 1000, "a message of {largest} results");
    assert_eq!(summary.unwrap().counts.unwrap().created, 5000);
}

/// An import by user id reaches only its own tenant's users: the id of
/// another tenant's user (in the file, with that user's email) matches
/// nothing, creates nothing under that id, and leaves that user as it was.
async fn a_user_id_of_another_tenant_matches_nothing(s: TestServer) {
    s.tenant("acme").await;
    s.tenant("globex").await;
    let theirs = s.user("globex", "ceo@globex.example", "Their CEO").await;
    let ours = s.user("acme", "me@acme.example", "Me").await;
    let text = format!(
        "userid,email,name\n{},ceo@globex.example,Taken Over\n{},me@acme.example,Renamed\n",
        theirs.user_id, ours.user_id
    );
    let opts = ImportOptions {
        match_key: MatchKey::UserId as i32,
        ..options(ImportMode::UpdateOnly)
    };
    let (results, _) = csv(&s, opts, &text).await;
    let outcomes = outcomes(&results);
    assert_eq!(outcomes[1], (3, ImportOutcome::Updated));
    // Not found, as any unknown id: not a conflict that tells the id exists.
    assert_eq!(outcomes[0], (2, ImportOutcome::Failed));
    assert_eq!(
        (results[0].reason.as_str(), results[0].user.as_str()),
        ("USER_NOT_FOUND", ""),
        "{results:?}"
    );
    let globex = users_of(&s, "globex").await;
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0].display_name, "Their CEO");
    let acme = users(&s).await;
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].display_name, "Renamed");
}

crate::on_both_backends!(
    a_user_id_of_another_tenant_matches_nothing,
    a_row_racing_another_writer_fails_alone,
    seed_001_upsert_then_rerun_changes_nothing,
    shift_jis_files,
    row_errors_fail_only_their_row,
    file_errors_write_nothing,
    modes_and_empty_cells,
    seat_limit_takes_the_first_rows,
    dry_run_writes_nothing,
    full_sync,
    one_full_sync_at_a_time,
    stale_full_sync_lock_is_taken_over,
    parsed_rows_for_pipelines,
    export_format_imports_back,
    import_jobs_are_recorded,
    cancelled_import_keeps_committed_rows,
    slow_reader_gets_every_result,
);
