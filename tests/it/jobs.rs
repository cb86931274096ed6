//! Job records tell the truth: counts committed with the rows they count,
//! jobs of a server that died become INTERRUPTED, a FULL_SYNC's deletions
//! are recorded with its job.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, Statement};
use userdir::pb::import_users_response::Payload as Out;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{GetImportJobRequest, ImportJobState, ImportMode, ImportOutcome};

use crate::common::{Backend, TestServer, spawn_with};
use crate::import::{chunks, import_jobs, many_rows, open_import, options, run, users};
use crate::safety::users_all;

/// A `userdir serve` process on the test server's database, to be killed.
struct Victim {
    child: Child,
    client: UserDirectoryClient<userdir::client::AuthedChannel>,
}

impl Victim {
    async fn start(s: &TestServer) -> Self {
        let port = crate::common::free_port();
        let o = &s.store_options;
        let mut child = Command::new(env!("CARGO_BIN_EXE_userdir"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &o.url, "--import-job-lease-secs", "2"])
            .args(["--pg-schema", o.pg_schema.as_deref().unwrap_or("")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
            {
                let client =
                    UserDirectoryClient::new(crate::common::with_key(&channel, Some(crate::common::operator_key())));
                return Self { child, client };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the userdir process never listened");
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kill -9 in the middle of an import: the job becomes INTERRUPTED (marked
/// by the other server once the lease ran out) and its created count is
/// exactly the users that were committed.
async fn killed_server_leaves_an_interrupted_job_with_true_counts(s: TestServer) {
    s.tenant("acme").await;
    let mut victim = Victim::start(&s).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(userdir::pb::ImportUsersRequest {
        payload: Some(userdir::pb::import_users_request::Payload::Options(options(
            ImportMode::Upsert,
        ))),
    })
    .await
    .unwrap();
    let mut stream = victim
        .client
        .import_users(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let text = many_rows(6000);
    let sender = tokio::spawn(async move {
        for message in chunks(text.as_bytes(), 16 * 1024) {
            if tx.send(message).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await; // never sends end
    });
    let mut reported = 0;
    while reported < 1000 {
        if let Some(Out::Results(batch)) = stream.message().await.unwrap().unwrap().payload {
            reported += batch.results.len();
        }
    }
    victim.child.kill().unwrap(); // SIGKILL
    victim.child.wait().unwrap();
    sender.abort();

    let jobs = import_jobs(&s).await;
    let name = jobs[0].name.clone();
    let mut job = jobs[0].clone();
    for _ in 0..100 {
        if job.state != ImportJobState::Running as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = GetImportJobRequest { name: name.clone() };
        job = s.users.clone().get_import_job(req).await.unwrap().into_inner();
    }
    assert_eq!(job.state, ImportJobState::Interrupted as i32, "{job:?}");
    let stored = users_all(&s).await.len() as i64;
    assert!(stored >= reported as i64);
    assert_eq!(job.counts.unwrap().created, stored, "{job:?}");
}

/// While an import runs, its job's created count is never behind the
/// results already reported (they are committed together).
async fn running_job_counts_include_every_reported_row(s: TestServer) {
    s.tenant("acme").await;
    let (tx, mut stream) = open_import(&s, options(ImportMode::Upsert)).await;
    for message in chunks(many_rows(1500).as_bytes(), 16 * 1024) {
        tx.send(message).await.unwrap();
    }
    let mut created = 0;
    let mut name = String::new();
    while created < 1000 {
        if let Some(Out::Results(batch)) = stream.message().await.unwrap().unwrap().payload {
            created += batch
                .results
                .iter()
                .filter(|r| r.outcome == ImportOutcome::Created as i32)
                .count();
        }
        if name.is_empty() {
            name = import_jobs(&s).await[0].name.clone();
        }
    }
    let job = s
        .users
        .clone()
        .get_import_job(GetImportJobRequest { name })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state, ImportJobState::Running as i32);
    assert!(
        job.counts.unwrap().created >= created as i64,
        "{job:?} after {created} reported"
    );
    drop(tx);
}

/// A FULL_SYNC's deletions are recorded, users and count, in the deletion's
/// own transaction.
async fn full_sync_deletions_are_recorded_with_the_job(s: TestServer) {
    s.tenant("acme").await;
    run(&s, options(ImportMode::Upsert), chunks(many_rows(30).as_bytes(), 4096))
        .await
        .unwrap();
    let mut opts = options(ImportMode::FullSync);
    opts.allow_delete_all = true;
    let (results, job) = run(&s, opts, chunks(b"name,email\nKept,u00000@example.com\n", 4096))
        .await
        .unwrap();
    let deleted: Vec<_> = results
        .iter()
        .filter(|r| r.outcome == ImportOutcome::Deleted as i32)
        .collect();
    assert_eq!(deleted.len(), 29);
    assert_eq!(job.counts.unwrap().deleted, 29);
    assert_eq!(users(&s).await.len(), 1);
    let id = job.name.rsplit('/').next().unwrap().to_owned();
    let db = Database::connect(s.store_options.url.as_str()).await.unwrap();
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => format!(
            "SELECT count(*) FROM {}.import_deletions WHERE job_id = '{id}'",
            s.store_options.pg_schema.clone().unwrap()
        ),
        _ => format!(
            "SELECT count(*) FROM import_deletions WHERE hex(job_id) = upper('{}')",
            id.replace('-', "")
        ),
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 29);
}

crate::on_both_backends!(
    running_job_counts_include_every_reported_row,
    full_sync_deletions_are_recorded_with_the_job
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_server_leaves_an_interrupted_job() {
    let s = spawn_with(Backend::Sqlite, |c| c.import_job_lease_secs = 2)
        .await
        .unwrap();
    killed_server_leaves_an_interrupted_job_with_true_counts(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_server_leaves_an_interrupted_job() {
    if let Some(s) = spawn_with(Backend::Postgres, |c| c.import_job_lease_secs = 2).await {
        killed_server_leaves_an_interrupted_job_with_true_counts(s).await;
    }
}
