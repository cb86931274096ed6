//! The `userdir` command line as an operator meets it: exit codes, what it
//! says when the server is wrong or down, dry runs, the errors file.

use std::path::Path;
use std::process::Output;

use userdir::pb::{Tenant, User};

use crate::common::TestServer;
use crate::import::users;

/// Runs `userdir args...` off the runtime's threads, with the operator key
/// in USERDIR_API_KEY.
async fn userdir(args: Vec<String>) -> Output {
    userdir_with_key(args, Some(crate::common::operator_key())).await
}

async fn userdir_with_key(args: Vec<String>, key: Option<&str>) -> Output {
    let key = key.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"));
        command.args(args).env_remove("USERDIR_API_KEY");
        if let Some(key) = key {
            command.env("USERDIR_API_KEY", key);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

async fn import_cli_as_an_operator_meets_it(s: TestServer) {
    s.tenant("acme").await;
    let server = format!("http://{}", s.addr);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "users.csv",
        "name,email\nGood,good@example.com\nBad \"quote,bad@example.com\nNo email,\n".as_bytes(),
    );

    // A bad command line has its own exit code.
    let out = userdir(args(&["import", "--tenant", "acme", &file])).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");

    // No scheme, and a server that is down: what is wrong, and what to type.
    let bare = s.addr.to_string();
    let out = userdir(args(&[
        "import", "--tenant", "acme", "--mode", "upsert", "--server", &bare, &file,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("write http://{bare}")),
        "{}",
        text(&out.stderr)
    );
    let port = crate::common::free_port();
    let down = format!("http://127.0.0.1:{port}");
    let out = userdir(args(&[
        "import", "--tenant", "acme", "--mode", "upsert", "--server", &down, &file,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("userdir serve"), "{}", text(&out.stderr));

    // A dry run says so, and says "would".
    let out = userdir(args(&[
        "import",
        "--tenant",
        "tenants/acme",
        "--mode",
        "upsert",
        "--dry-run",
        "--server",
        &server,
        &file,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = text(&out.stdout);
    assert!(said.contains("DRY RUN") && said.contains("would create 1"), "{said}");
    assert!(users(&s).await.is_empty());

    // Rows fail: exit 2, and the errors file keeps the malformed row's text.
    let out = userdir(args(&[
        "import",
        "--tenant",
        "tenants/acme",
        "--mode",
        "upsert",
        "--server",
        &server,
        &file,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let errors = dir.path().join("users.errors.csv");
    let written = std::fs::read_to_string(&errors).unwrap();
    assert!(
        written.contains("MALFORMED_CSV") && written.contains("\"Bad \"\"quote,bad@example.com\""),
        "{written}"
    );
    let jobs = crate::import::import_jobs(&s).await;
    assert!(
        jobs[0].actor.starts_with("apikey:"),
        "the job names the key that ran it: {}",
        jobs[0].actor
    );

    // Without a key: refused, and told how to give one.
    let out = userdir_with_key(
        args(&[
            "import", "--tenant", "acme", "--mode", "upsert", "--server", &server, &file,
        ]),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stderr);
    assert!(
        said.contains("Unauthenticated") && said.contains("USERDIR_API_KEY"),
        "{said}"
    );

    // The fixed file imports cleanly, and the stale errors file goes away.
    let fixed = write(
        dir.path(),
        "users.csv",
        "name,email\nGood,good@example.com\nBad quote,bad@example.com\nNo email,none@example.com\n".as_bytes(),
    );
    let out = userdir(args(&[
        "import",
        "--tenant",
        "acme",
        "--mode",
        "upsert",
        "--encoding",
        "sjis",
        "--server",
        &server,
        &fixed,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!errors.exists());
    assert!(text(&out.stdout).contains("removed"));
    assert_eq!(users(&s).await.len(), 3);
}

async fn export_cli_to_stdout_and_flags_it_names(s: TestServer) {
    s.tenant_with(
        "acme",
        Tenant {
            display_name: "Acme".into(),
            ..Default::default()
        },
    )
    .await;
    s.create(
        "acme",
        User {
            email: "emoji@example.com".into(),
            display_name: "😀".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let server = format!("http://{}", s.addr);
    let out = userdir(args(&[
        "export",
        "--tenant",
        "tenants/acme",
        "-o",
        "-",
        "--server",
        &server,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("emoji@example.com"));
    assert!(text(&out.stderr).contains("1 users exported to standard output"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sjis.csv").display().to_string();
    let out = userdir(args(&[
        "export",
        "--tenant",
        "acme",
        "--encoding",
        "cp932",
        "-o",
        &path,
        "--server",
        &server,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--replace-unmappable"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new("-").exists());
}

/// `userdir export -o users.xlsx` writes a workbook; `userdir import
/// users.xlsx` takes it by its name and reports every row unchanged; a
/// failed row of a workbook goes to an errors file by its row number.
async fn excel_through_the_cli(s: TestServer) {
    s.tenant("acme").await;
    s.user("acme", "taro@example.jp", "山田 太郎").await;
    let server = format!("http://{}", s.addr);
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("users.xlsx").display().to_string();
    let out = userdir(args(&["export", "--tenant", "acme", "-o", &book, "--server", &server])).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(std::fs::read(&book).unwrap().starts_with(b"PK\x03\x04"));
    let import = |file: String| {
        let server = server.clone();
        async move {
            userdir(args(&[
                "import",
                "--tenant",
                "acme",
                "--mode",
                "upsert",
                "--match-key",
                "user-id",
                "--server",
                &server,
                &file,
            ]))
            .await
        }
    };
    let out = import(book.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("unchanged 1"), "{}", text(&out.stdout));

    // A workbook with a bad row: the errors file names its row.
    let bad = dir.path().join("bad.xlsx");
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (col, value) in ["email", "name"].iter().enumerate() {
        sheet.write_string(0, col as u16, *value).unwrap();
    }
    sheet.write_string(1, 0, "not an email").unwrap();
    sheet.write_string(1, 1, "X").unwrap();
    workbook.save(&bad).unwrap();
    let out = userdir(args(&[
        "import",
        "--tenant",
        "acme",
        "--mode",
        "upsert",
        "--server",
        &server,
        &bad.display().to_string(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let errors = std::fs::read_to_string(dir.path().join("bad.errors.csv")).unwrap();
    assert!(
        errors.contains("import_line,import_field,import_reason,import_message"),
        "{errors}"
    );
    assert!(errors.contains("\r\n2,email,"), "{errors}");
}

/// `userdir audit` prints the log newest first (filtered); `userdir watch`
/// prints events as JSON lines and the cursor to resume from, from which a
/// second watch goes on where the first stopped.
async fn audit_and_watch_cli(s: TestServer) {
    s.tenant("acme").await;
    let taro = s.user("acme", "taro@example.com", "Taro").await;
    s.user("acme", "hanako@example.com", "Hanako").await;
    let server = format!("http://{}", s.addr);
    let out = userdir(args(&["audit", "--tenant", "acme", "--server", &server])).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("3\t") && lines[0].contains("user.created"),
        "{lines:?}"
    );
    assert!(lines[2].contains("tenant.created"), "{lines:?}");
    let filter = format!("resource = \"{}\"", taro.name);
    let out = userdir(args(&[
        "audit", "--tenant", "acme", "--json", "--filter", &filter, "--server", &server,
    ]))
    .await;
    let event: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(event["type"], "user.created");
    assert_eq!(event["after"]["email"], "taro@example.com");
    let bad = userdir(args(&[
        "audit",
        "--tenant",
        "acme",
        "--filter",
        "colour = 1",
        "--server",
        &server,
    ]))
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("colour"), "{}", text(&bad.stderr));

    let out = userdir(args(&[
        "watch", "--tenant", "acme", "--cursor", "oldest", "--count", "2", "--server", &server,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let seen: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((seen[0]["seq"].as_i64(), seen[1]["seq"].as_i64()), (Some(1), Some(2)));
    let cursor = text(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("cursor: ").map(str::to_owned))
        .expect("the cursor on stderr");
    assert_eq!(seen[1]["cursor"].as_str(), Some(cursor.as_str()));
    let out = userdir(args(&[
        "watch", "--tenant", "acme", "--cursor", &cursor, "--count", "1", "--server", &server,
    ]))
    .await;
    let next: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(next["seq"].as_i64(), Some(3));
    assert_eq!(next["after"]["email"], "hanako@example.com");
}

/// `userdir health`, as a container HEALTHCHECK runs it: SERVING and exit 0
/// from a running server, exit 1 (with a reason) where none answers.
async fn health_cli_for_a_healthcheck(s: TestServer) {
    s.wait_serving().await;
    let out = userdir(args(&["health", "--server", &format!("http://{}", s.addr)])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "SERVING");
    let out = userdir(args(&[
        "health",
        "--server",
        &format!("http://{}", s.addr),
        "--service",
        "userdir.v1.UserDirectory",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = crate::common::free_port();
    let out = userdir(args(&["health", "--server", &format!("http://127.0.0.1:{port}")])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot reach"), "{}", text(&out.stderr));
}

/// A FULL_SYNC through the CLI lists the users it kept, and why.
async fn full_sync_cli_names_who_it_kept(s: TestServer) {
    s.tenant("acme").await;
    let admin = s.user("acme", "admin@example.com", "Admin").await;
    crate::roles::set_role(&s, &admin.name, userdir::pb::TenantRole::Admin)
        .await
        .unwrap();
    s.user("acme", "gone@example.com", "Gone").await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "users.csv",
        b"name,email
Stays,stays@example.com
",
    );
    let server = format!("http://{}", s.addr);
    let out = userdir(args(&[
        "import",
        "--tenant",
        "acme",
        "--mode",
        "full-sync",
        "--keep-admins",
        "--server",
        &server,
        &file,
    ]))
    .await;
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(said.contains("deleted 1") && said.contains("protected 1"), "{said}");
    assert!(
        said.contains(&format!(
            "kept, not in the file: {} admin@example.com (KEEP_ADMINS",
            admin.name
        )),
        "{said}"
    );
}

crate::on_both_backends!(
    full_sync_cli_names_who_it_kept,
    import_cli_as_an_operator_meets_it,
    export_cli_to_stdout_and_flags_it_names,
    health_cli_for_a_healthcheck,
    audit_and_watch_cli,
    excel_through_the_cli
);
