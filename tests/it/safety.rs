//! Never lie, never lose: what the server says happened did happen, on a
//! full disk, on a lost database, and when a stream ends badly.

use std::collections::BTreeSet;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use tonic::Code;
use userdir::pb::{DeleteUserRequest, ImportMode, ImportOutcome, User};

use crate::common::{Backend, reason, spawn_with};
use crate::import::{chunks, options, run};

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
            eprintln!("cannot mount a tmpfs here; limiting the database's size instead");
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
