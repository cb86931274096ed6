//! Never lie, never lose: what the server says happened did happen, on a
//! full disk, on a lost database, and when a stream ends badly.

use std::collections::BTreeSet;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use tonic::Code;
use userdir::pb::import_users_request::Payload;
use userdir::pb::import_users_response::Payload as Out;
use userdir::pb::{
    CreateUserRequest, DeleteUserRequest, ExportUsersRequest, GetImportJobRequest, GetUserRequest, ImportJobState,
    ImportMode, ImportOutcome, ImportRow, ImportRowResult, ImportRows, ImportUsersRequest, ImportUsersResponse,
    ListUsersRequest, Tenant, UpdateUserRequest, User,
};

use crate::common::pgproxy::{PgProxy, pg_target};
use crate::common::{Backend, TestServer, pg_url, reason, spawn_with};
use crate::import::{by_email, chunks, end, many_rows, open_import, options, run, users};

/// The emails stored in the server's database, read over a connection of
/// the test's own: only what was committed.
async fn committed_emails(url: &str) -> BTreeSet<String> {
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT email FROM users"))
        .await
        .unwrap();
    let emails = rows.iter().map(|r| r.try_get_by_index::<String>(0).unwrap()).collect();
    // Another writer can take the database: no transaction was left open.
    db.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    db.execute_unprepared("ROLLBACK").await.unwrap();
    db.close().await.unwrap();
    emails
}

fn big_user(i: usize) -> User {
    User {
        email: format!("full{i:04}@example.com"),
        display_name: format!("{i:04} {}", "x".repeat(1900)),
        ..Default::default()
    }
}

/// A small tmpfs of the test's own (the tests run as root on CI), unmounted
/// when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        status.is_ok_and(|s| s.success()).then_some(Self { dir })
    }

    /// Fills the disk up to `leave` bytes free with a file, removed by [`Self::free`].
    fn fill(&self, leave: u64) {
        let free = fs_free(self.dir.path());
        let ballast = vec![0u8; free.saturating_sub(leave) as usize];
        std::fs::write(self.dir.path().join("ballast"), ballast).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Free bytes of the filesystem holding `path` (from `df`).
fn fs_free(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// SQLite on a full disk (a small tmpfs where the test may mount one,
/// otherwise a database that may not grow past 1 MiB): writes that do not
/// fit fail RESOURCE_EXHAUSTED `STORAGE_FULL`, every write that was
/// acknowledged is committed, and once space is free again writes work
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_loses_no_acknowledged_write() {
    let disk = SmallDisk::mount(8);
    let s = match &disk {
        Some(disk) => {
            let url = format!("sqlite://{}/userdir.db?mode=rwc", disk.dir.path().display());
            spawn_with(Backend::Sqlite, |c| c.database_url = url).await.unwrap()
        }
        None => {
            // In CI (root) the tmpfs must mount: the size limit is a stand-in
            // for a full disk, not a test of one.
            crate::common::skip("cannot mount a tmpfs for a full disk; limiting the database's size instead");
            spawn_with(Backend::Sqlite, |c| c.sqlite_max_size_mib = 1)
                .await
                .unwrap()
        }
    };
    let url = s.store_options.url.clone();
    s.tenant("acme").await;
    if let Some(disk) = &disk {
        disk.fill(700 * 1024);
    }
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut names = Vec::new();
    let mut full = 0;
    let mut first_full = None;
    // Until the disk is full, then 30 more.
    for i in 0..2000 {
        match s.create("acme", big_user(i)).await {
            Ok(user) => {
                acknowledged.insert(user.email.clone());
                names.push(user.name);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "STORAGE_FULL");
                full += 1;
                first_full.get_or_insert(i);
            }
        }
        if first_full.is_some_and(|first| i >= first + 30) {
            break;
        }
    }
    assert!(full > 0, "the database never filled up");
    // An import into the full database: what it reports CREATED is stored.
    let mut text = String::from("name,email\n");
    for i in 0..300 {
        text.push_str(&format!("{i:04} {},imp{i:04}@example.com\n", "y".repeat(1500)));
    }
    match run(&s, options(ImportMode::Upsert), chunks(text.as_bytes(), 4096)).await {
        Ok((results, _)) => {
            for r in results {
                if r.outcome == ImportOutcome::Created as i32 {
                    acknowledged.insert(r.email);
                } else {
                    assert_eq!(r.reason, "STORAGE_FULL", "{r:?}");
                }
            }
        }
        Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
    }
    assert_eq!(committed_emails(&url).await, acknowledged);

    // Space comes back (users are deleted, the disk freed): writes work again.
    if let Some(disk) = &disk {
        disk.free();
    }
    for name in names.iter().take(100) {
        let req = DeleteUserRequest {
            name: name.clone(),
            ..Default::default()
        };
        s.users.clone().delete_user(req).await.unwrap();
    }
    let deleted: Vec<String> = (0..100).map(|i| big_user(i).email).collect();
    for email in &deleted {
        acknowledged.remove(email);
    }
    for i in 5000..5010 {
        let user = s.create("acme", big_user(i)).await.unwrap();
        acknowledged.insert(user.email);
    }
    assert_eq!(committed_emails(&url).await, acknowledged);
}

/// The `ErrorInfo` metadata entry `key` of a status.
fn info(status: &tonic::Status, key: &str) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get(key).cloned())
        .unwrap_or_default()
}

/// Reads an import's responses to the end: the row results, and how the call ended.
async fn drain(mut stream: tonic::Streaming<ImportUsersResponse>) -> (Vec<ImportRowResult>, Result<(), tonic::Status>) {
    let mut results = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if let Some(Out::Results(batch)) = message.payload {
                    results.extend(batch.results);
                }
            }
            Ok(None) => return (results, Ok(())),
            Err(status) => return (results, Err(status)),
        }
    }
}

/// A stream closed without `end` ends ABORTED `IMPORT_END_MISSING`, naming
/// the job and what was committed, never OK.
async fn import_without_end_is_aborted(s: TestServer) {
    s.tenant("acme").await;
    let (tx, stream) = open_import(&s, options(ImportMode::Upsert)).await;
    let text = many_rows(1200);
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Chunk(text.into_bytes())),
    })
    .await
    .unwrap();
    drop(tx);
    let (results, ended) = drain(stream).await;
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "IMPORT_END_MISSING");
    let job = info(&status, "import_job");
    assert!(job.starts_with("tenants/acme/importJobs/"), "{status:?}");
    assert!(status.message().contains(&job), "{}", status.message());
    assert_eq!(info(&status, "rows_reported"), results.len().to_string());
    let stored = users(&s).await;
    assert_eq!(stored.len(), results.len(), "exactly the reported rows are stored");
    let req = GetImportJobRequest { name: job };
    let job = s.users.clone().get_import_job(req).await.unwrap().into_inner();
    assert_eq!(job.state, ImportJobState::Cancelled as i32);
}

/// A request message over the size limit ends RESOURCE_EXHAUSTED
/// `MESSAGE_TOO_LARGE` with the job's name.
async fn oversized_message_is_resource_exhausted(s: TestServer) {
    s.tenant("acme").await;
    let huge = vec![b'a'; 8 << 20];
    let (tx, stream) = open_import(&s, options(ImportMode::Upsert)).await;
    let _ = tx
        .send(ImportUsersRequest {
            payload: Some(Payload::Chunk(huge)),
        })
        .await;
    let _ = tx.send(end()).await;
    let (_, ended) = drain(stream).await;
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");
    assert!(info(&status, "import_job").starts_with("tenants/acme/importJobs/"));
    drop(tx);
}

/// PostgreSQL goes away in the middle of an import and of an export: both
/// end UNAVAILABLE promptly (not once it is back), and every row the import
/// reported is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_mid_stream_is_unavailable() {
    let proxy = PgProxy::start(pg_target(&pg_url())).await;
    let url = proxy.url_through(&pg_url());
    let Some(s) = spawn_with(Backend::Postgres, |c| c.database_url = url).await else {
        return;
    };
    s.tenant("acme").await;
    // An export that has started reading: on PostgreSQL it reads 50,000
    // users per query, so this one needs a second query.
    run(
        &s,
        options(ImportMode::Upsert),
        chunks(many_rows(51_000).as_bytes(), 65536),
    )
    .await
    .unwrap();
    let req = ExportUsersRequest {
        parent: "tenants/acme".into(),
        ..Default::default()
    };
    let mut export = s.users.clone().export_users(req).await.unwrap().into_inner();
    export.message().await.unwrap().unwrap();

    // An import that has reported some rows.
    let (tx, mut stream) = open_import(&s, options(ImportMode::Upsert)).await;
    let text = many_rows(20_000).replace("u", "v");
    let (go_on, go) = tokio::sync::oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        let (first, second) = text.as_bytes().split_at(text.len() / 2);
        for chunk in first.chunks(16 * 1024) {
            let message = ImportUsersRequest {
                payload: Some(Payload::Chunk(chunk.to_vec())),
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
        // The second half once the database is gone.
        let _ = go.await;
        for chunk in second.chunks(16 * 1024) {
            let message = ImportUsersRequest {
                payload: Some(Payload::Chunk(chunk.to_vec())),
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
        let _ = tx.send(end()).await;
    });
    let mut reported = Vec::new();
    while reported.len() < 1000 {
        if let Some(Out::Results(batch)) = stream.message().await.unwrap().unwrap().payload {
            reported.extend(batch.results);
        }
    }
    proxy.set_up(false);
    let _ = go_on.send(());
    let started = std::time::Instant::now();
    let (rest, ended) = drain(stream).await;
    reported.extend(rest);
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(info(&status, "import_job").starts_with("tenants/acme/importJobs/"));
    assert_eq!(info(&status, "rows_reported"), reported.len().to_string());
    let export_status = loop {
        match export.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the export ended OK while the database was down"),
            Err(status) => break status,
        }
    };
    assert_eq!(export_status.code(), Code::Unavailable, "{export_status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    sender.abort();

    proxy.set_up(true);
    let stored = by_email(&users_all(&s).await);
    for r in &reported {
        if r.outcome == ImportOutcome::Created as i32 {
            assert_eq!(stored[&r.email].name, r.user);
        }
    }
    // The server that ran the import is alive and knows how it ended: the
    // job says so soon after the database is back, well before its lease
    // (60 s) would have it marked INTERRUPTED.
    let back = std::time::Instant::now();
    let name = info(&status, "import_job");
    let job = loop {
        let job = s
            .users
            .clone()
            .get_import_job(GetImportJobRequest { name: name.clone() })
            .await
            .unwrap()
            .into_inner();
        if job.state != ImportJobState::Running as i32 || back.elapsed() > std::time::Duration::from_secs(15) {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(job.state, ImportJobState::Failed as i32, "{job:?}");
    assert!(job.error.contains("unavailable"), "{job:?}");
}

/// Every user of tenant acme, page by page.
pub(crate) async fn users_all(s: &TestServer) -> Vec<User> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let req = ListUsersRequest {
            parent: "tenants/acme".into(),
            page_size: 1000,
            page_token: token,
            ..Default::default()
        };
        let page = loop {
            match s.users.clone().list_users(req.clone()).await {
                Ok(page) => break page.into_inner(),
                Err(e) if e.code() == Code::Unavailable => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        all.extend(page.users);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// Two UpdateUser calls without an etag on one user, each with its own
/// mask, at once: both apply, every time.
async fn concurrent_updates_without_etag_both_apply(s: TestServer) {
    s.tenant("acme").await;
    for round in 0..40 {
        let user = s.user("acme", &format!("r{round}@example.com"), "Round").await;
        let update = |field: &'static str, value: String| {
            let mut client = s.users.clone();
            let mut changed = User {
                name: user.name.clone(),
                ..Default::default()
            };
            match field {
                "title" => changed.title = value,
                _ => changed.department = value,
            }
            async move {
                let req = UpdateUserRequest {
                    user: Some(changed),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![field.to_owned()],
                    }),
                };
                client.update_user(req).await
            }
        };
        let (a, b) = tokio::join!(
            update("title", format!("T{round}")),
            update("department", format!("D{round}"))
        );
        a.unwrap();
        b.unwrap();
        let req = GetUserRequest {
            name: user.name.clone(),
        };
        let stored = s.users.clone().get_user(req).await.unwrap().into_inner();
        assert_eq!(
            (stored.title, stored.department),
            (format!("T{round}"), format!("D{round}"))
        );
    }
}

/// Two UPSERT imports of the same new emails, started together, and
/// CreateUser calls racing them: no row fails; every email is one user.
async fn racing_upserts_never_fail_a_row(s: TestServer) {
    s.tenant("acme").await;
    let text = many_rows(3000);
    let import = || run(&s, options(ImportMode::Upsert), chunks(text.as_bytes(), 16 * 1024));
    let creates = async {
        let mut ok = 0;
        for i in (0..3000).step_by(97) {
            if s.user_result("acme", &format!("u{i:05}@example.com")).await.is_ok() {
                ok += 1;
            }
        }
        ok
    };
    let (a, b, created_by_rpc) = tokio::join!(import(), import(), creates);
    let (a, job_a) = a.unwrap();
    let (b, job_b) = b.unwrap();
    for r in a.iter().chain(&b) {
        assert_ne!(r.outcome, ImportOutcome::Failed as i32, "{r:?}");
    }
    assert_eq!((a.len(), b.len()), (3000, 3000));
    let created = job_a.counts.unwrap().created + job_b.counts.unwrap().created + created_by_rpc;
    assert_eq!(created, 3000);
    assert_eq!(users_all(&s).await.len(), 3000);
}

/// With the seats full, a duplicate email is ALREADY_EXISTS (the permanent,
/// specific reason), in CreateUser, its dry run and an import.
async fn duplicate_beats_full_seats(s: TestServer) {
    s.tenant_with(
        "acme",
        Tenant {
            display_name: "Acme".into(),
            seat_limit: 1,
            ..Default::default()
        },
    )
    .await;
    s.user("acme", "taken@example.com", "Taken").await;
    for validate_only in [false, true] {
        let req = CreateUserRequest {
            parent: "tenants/acme".into(),
            user: Some(User {
                email: "TAKEN@example.com".into(),
                display_name: "Again".into(),
                ..Default::default()
            }),
            validate_only,
        };
        let err = s.users.clone().create_user(req).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::AlreadyExists,
            "validate_only={validate_only}: {err:?}"
        );
        assert_eq!(reason(&err), "EMAIL_ALREADY_EXISTS");
    }
    let mut opts = options(ImportMode::CreateOnly);
    opts.match_key = userdir::pb::MatchKey::ExternalId as i32;
    let (results, _) = run(
        &s,
        opts,
        chunks(b"name,email,external_id\nX,taken@example.com,X-1\n", 100),
    )
    .await
    .unwrap();
    assert_eq!(results[0].reason, "EMAIL_ALREADY_EXISTS", "{results:?}");
}

crate::on_both_backends!(
    import_without_end_is_aborted,
    oversized_message_is_resource_exhausted,
    concurrent_updates_without_etag_both_apply,
    racing_upserts_never_fail_a_row,
    duplicate_beats_full_seats,
    user_ids_are_the_services,
    lookalike_emails,
    huge_cell_fails_its_row_alone,
    auto_encoding_never_garbles,
    results_flow_while_the_client_waits,
);

/// `match_key: USER_ID`: an id that names no user of the tenant fails its
/// row the same way whether it lives in another tenant or nowhere, and never
/// becomes a new user's id; an empty cell creates a user with a new id.
async fn user_ids_are_the_services(s: TestServer) {
    s.tenant("acme").await;
    s.tenant("other").await;
    let theirs = s.user("other", "theirs@example.com", "Theirs").await;
    let their_id = theirs.name.rsplit('/').next().unwrap().to_owned();
    let unused = uuid::Uuid::now_v7().to_string();
    let nil = uuid::Uuid::nil().to_string();
    let text = format!(
        "userid,name,email\n{their_id},A,a@example.com\n{unused},B,b@example.com\n{nil},C,c@example.com\n,D,d@example.com\n"
    );
    let mut opts = options(ImportMode::Upsert);
    opts.match_key = userdir::pb::MatchKey::UserId as i32;
    let (results, _) = run(&s, opts, chunks(text.as_bytes(), 50)).await.unwrap();
    for r in &results[..3] {
        assert_eq!(r.outcome, ImportOutcome::Failed as i32, "{r:?}");
        assert_eq!((r.reason.as_str(), r.field.as_str()), ("USER_NOT_FOUND", "userid"));
    }
    let shape = |r: &ImportRowResult, id: &str| r.message.replace(id, "ID");
    assert_eq!(shape(&results[0], &their_id), shape(&results[1], &unused), "no oracle");
    assert_eq!(results[3].outcome, ImportOutcome::Created as i32);
    let stored = users(&s).await;
    assert_eq!(stored.len(), 1);
    for id in [&their_id, &unused, &nil] {
        assert!(!stored[0].name.ends_with(id.as_str()));
    }
}

/// Emails that look the same are the same key; invisible and text-direction
/// characters and bad Punycode are refused; display names refuse bidi overrides.
async fn lookalike_emails(s: TestServer) {
    s.tenant("acme").await;
    s.user("acme", "bob@bücher.example", "Bob").await;
    s.user("acme", "admin@example.com", "Admin").await;
    for same in [
        "bob@xn--bcher-kva.example",
        "BOB@BÜCHER.example",
        "ａｄｍｉｎ@example.com",
    ] {
        let err = s.user_result("acme", same).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{same}: {err:?}");
    }
    for bad in [
        "ad\u{200B}min@example.com",
        "\u{FEFF}admin@example.com",
        "ad\u{AD}min@example.com",
        "ad\u{2060}min@example.com",
        "admin\u{202E}@example.com",
        "v@xn--zz.example",
    ] {
        let err = s.user_result("acme", bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    let stored = users(&s).await;
    assert!(
        stored.iter().any(|u| u.email == "bob@bücher.example"),
        "the typed form is kept"
    );
    let err = s
        .create(
            "acme",
            User {
                email: "eve@example.com".into(),
                display_name: "Eve \u{202E}nimda".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A 32 MiB cell fails its row RECORD_TOO_LARGE; the rows around it import.
async fn huge_cell_fails_its_row_alone(s: TestServer) {
    s.tenant("acme").await;
    let mut text = b"name,email\nBefore,before@example.com\n\"".to_vec();
    text.extend(std::iter::repeat_n(b'x', 32 << 20));
    text.extend_from_slice(b"\",huge@example.com\nAfter,after@example.com\n");
    let (results, _) = run(&s, options(ImportMode::Upsert), chunks(&text, 64 * 1024))
        .await
        .unwrap();
    let summary: Vec<(i64, String)> = results.iter().map(|r| (r.line, r.reason.clone())).collect();
    assert_eq!(
        summary,
        [(2, String::new()), (3, "RECORD_TOO_LARGE".into()), (4, String::new())]
    );
    assert_eq!(users(&s).await.len(), 2);
}

/// AUTO with real files of both encodings, clean and with a bad byte: names
/// are stored as written, the bad row alone fails, and a file that is
/// neither is refused naming both encodings.
async fn auto_encoding_never_garbles(s: TestServer) {
    s.tenant("acme").await;
    // Names whose UTF-8 bytes also read as (wrong) Shift-JIS.
    let names = ["山田", "佐藤", "鈴木", "伊藤", "渡辺", "小林", "吉田"];
    let file = |prefix: &str| {
        let mut text = String::from("name,email\n");
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!("{name},{prefix}{i}@example.com\n"));
        }
        text
    };
    let with_bad_byte = |mut bytes: Vec<u8>, byte: u8| {
        // Before the second data row's name.
        let at = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0 + 1;
        bytes.insert(at, byte);
        bytes
    };
    let utf8 = |p: &str| file(p).into_bytes();
    let sjis = |p: &str| encoding_rs::SHIFT_JIS.encode(&file(p)).0.into_owned();
    for (prefix, bytes, bad_line) in [
        ("a", utf8("a"), None),
        ("b", sjis("b"), None),
        ("c", with_bad_byte(utf8("c"), 0xB1), Some(3)),
        ("d", with_bad_byte(sjis("d"), 0xFF), Some(3)),
    ] {
        let (results, _) = run(&s, options(ImportMode::Upsert), chunks(&bytes, 7)).await.unwrap();
        let failed: Vec<i64> = results
            .iter()
            .filter(|r| r.outcome == ImportOutcome::Failed as i32)
            .map(|r| r.line)
            .collect();
        assert_eq!(failed, bad_line.into_iter().collect::<Vec<_>>(), "{prefix}");
        for user in users_all(&s).await.iter().filter(|u| u.email.starts_with(prefix)) {
            assert!(
                names.contains(&user.display_name.as_str()),
                "{prefix}: garbled {:?}",
                user.display_name
            );
        }
    }
    let neither = b"name,email\nJos\xe9 \xff\xfe,x@example.com\n".to_vec();
    let err = run(&s, options(ImportMode::Upsert), chunks(&neither, 100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("UTF8 or SHIFT_JIS"), "{}", err.message());
}

/// A FULL_SYNC whose client trickles a byte at a time (never a whole row)
/// ends ABORTED `IMPORT_IDLE_TIMEOUT` once no row arrived for the idle
/// timeout; its lock is released and its job recorded.
async fn trickling_import_times_out(backend: Backend) {
    let Some(s) = spawn_with(backend, |c| c.import_idle_timeout_secs = 1).await else {
        return;
    };
    s.tenant("acme").await;
    s.user("acme", "keep@example.org", "Kept").await;
    let (tx, stream) = open_import(&s, options(ImportMode::FullSync)).await;
    let trickle = tokio::spawn(async move {
        let mut first = b"name,email\nA,a@example.com\nB,b@exa".to_vec();
        loop {
            let chunk = ImportUsersRequest {
                payload: Some(Payload::Chunk(std::mem::replace(&mut first, b"m".to_vec()))),
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let (_, ended) = tokio::time::timeout(std::time::Duration::from_secs(20), drain(stream))
        .await
        .expect("a trickling import is never timed out");
    trickle.abort();
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "IMPORT_IDLE_TIMEOUT");
    let job = info(&status, "import_job");
    let req = GetImportJobRequest { name: job };
    let job = s.users.clone().get_import_job(req).await.unwrap().into_inner();
    assert_eq!(job.state, ImportJobState::Cancelled as i32);
    // The user the file does not list is still there: nothing was deleted.
    let left: Vec<String> = users_all(&s).await.into_iter().map(|u| u.email).collect();
    assert!(left.contains(&"keep@example.org".to_owned()), "{left:?}");
    // The FULL_SYNC lock is free again.
    let (_, job) = run(
        &s,
        options(ImportMode::FullSync),
        chunks(b"name,email\nA,a@example.com\n", 100),
    )
    .await
    .unwrap();
    assert_eq!(job.state, ImportJobState::Succeeded as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_trickling_import_times_out() {
    trickling_import_times_out(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_trickling_import_times_out() {
    trickling_import_times_out(Backend::Postgres).await;
}

/// Reads results until `n` have arrived (the client has not sent `end`).
async fn results_before_end(stream: &mut tonic::Streaming<ImportUsersResponse>, n: usize) -> Vec<ImportRowResult> {
    let mut results = Vec::new();
    let wait = async {
        while results.len() < n {
            if let Some(Out::Results(batch)) = stream.message().await.unwrap().unwrap().payload {
                results.extend(batch.results);
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), wait)
        .await
        .expect("results wait for the end of the input");
    results
}

/// A client that waits for results before sending more gets them: rows
/// short of a batch go on by themselves, and AUTO decides on the bytes it
/// has instead of waiting for 64 KiB.
async fn results_flow_while_the_client_waits(s: TestServer) {
    s.tenant("acme").await;
    // Three parsed rows.
    let (tx, mut stream) = open_import(&s, options(ImportMode::Upsert)).await;
    let rows = (0..3)
        .map(|i| ImportRow {
            fields: [
                ("email".to_owned(), format!("p{i}@example.com")),
                ("name".to_owned(), "P".to_owned()),
            ]
            .into(),
        })
        .collect();
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Rows(ImportRows { rows })),
    })
    .await
    .unwrap();
    assert_eq!(results_before_end(&mut stream, 3).await.len(), 3);
    tx.send(end()).await.unwrap();
    // 1,001, 1,200 and 2,500 CSV rows in one chunk (the rows past the last
    // full batch must not wait for `end`), and Japanese rows (AUTO decides
    // early).
    for text in [
        many_rows(1001),
        many_rows(1200),
        many_rows(2500),
        many_rows(1200).trim_end().to_owned(),
        "name,email\n山田 太郎,yamada@example.com\n佐藤 花子,sato@example.com\n".to_owned(),
    ] {
        let (tx, mut stream) = open_import(&s, options(ImportMode::Upsert)).await;
        tx.send(ImportUsersRequest {
            payload: Some(Payload::Chunk(text.clone().into_bytes())),
        })
        .await
        .unwrap();
        // A last line without its newline may go on in the next chunk: it
        // waits for more bytes or the end.
        let n = text.lines().count() - 1 - usize::from(!text.ends_with('\n'));
        let results = results_before_end(&mut stream, n).await;
        assert!(
            results.iter().all(|r| r.outcome != ImportOutcome::Failed as i32),
            "{results:?}"
        );
        tx.send(end()).await.unwrap();
    }
    let stored = users_all(&s).await;
    assert!(stored.iter().any(|u| u.display_name == "山田 太郎"));
}
