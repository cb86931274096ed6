//! The life of an import job outside its rows: the tenant's FULL_SYNC lock
//! (taken, refreshed, given back) and the heartbeat that tells other
//! replicas this job's server is alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::DomainError;
use crate::repo::{ImportRepository, SyncLock};
use crate::tenant::TenantId;
use crate::text::Timestamp;

/// A FULL_SYNC lock not refreshed for this long belongs to a dead server.
const SYNC_LOCK_STALE: Duration = Duration::from_secs(60);
const SYNC_LOCK_REFRESH: Duration = Duration::from_secs(10);

/// A task aborted when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews job `id`'s heartbeat six times per `lease`, whatever its client
/// does (sends, waits, reads nothing), until dropped.
pub(super) fn spawn_heartbeat<R: ImportRepository>(
    repo: Arc<R>,
    tenant: TenantId,
    id: Uuid,
    lease: Duration,
) -> AbortOnDrop {
    let every = (lease / 6).max(Duration::from_millis(100));
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = repo.touch_import_job(&tenant, id, Timestamp::now()).await {
                tracing::warn!(error = %e, job = %id, "could not renew an import job's heartbeat");
            }
        }
    }))
}

/// The tenant's FULL_SYNC lock, held by one job.
pub(super) struct SyncLease {
    tenant: TenantId,
    job: Uuid,
    held: bool,
    last_refresh: Instant,
}

impl SyncLease {
    /// A lease that holds nothing (imports other than FULL_SYNC, dry runs).
    pub(super) fn none(tenant: TenantId, job: Uuid) -> Self {
        Self {
            tenant,
            job,
            held: false,
            last_refresh: Instant::now(),
        }
    }

    /// Takes the tenant's lock for `job`; one left by a server that stopped
    /// is taken over and its job marked INTERRUPTED.
    pub(super) async fn acquire<R: ImportRepository>(
        repo: &R,
        tenant: &TenantId,
        job: Uuid,
        now: Timestamp,
    ) -> Result<Self, DomainError> {
        let stale = Timestamp::from_unix_micros(now.unix_micros() - SYNC_LOCK_STALE.as_micros() as i64);
        match repo.acquire_sync_lock(tenant, job, now, stale).await? {
            SyncLock::Acquired => {}
            SyncLock::TakenOver(previous) => {
                let why = "the server running this import stopped before it finished";
                repo.interrupt_import_jobs(now, Some((tenant, previous)), why).await?;
            }
            SyncLock::Held(other) => {
                return Err(DomainError::Conflict {
                    reason: "FULL_SYNC_ALREADY_RUNNING",
                    message: format!(
                        "another FULL_SYNC import of tenant {tenant} is running (tenants/{tenant}/importJobs/{other}); \
                         wait for it to finish"
                    ),
                });
            }
        }
        Ok(Self {
            held: true,
            ..Self::none(tenant.clone(), job)
        })
    }

    /// Refreshes the lock when it is due.
    pub(super) async fn refresh_if_due<R: ImportRepository>(&mut self, repo: &R) -> Result<(), DomainError> {
        if self.held && self.last_refresh.elapsed() >= SYNC_LOCK_REFRESH {
            self.hold(repo).await?;
        }
        Ok(())
    }

    /// Refreshes the lock; an error if another import took it over (this one
    /// stalled for longer than the lock lives).
    pub(super) async fn hold<R: ImportRepository>(&mut self, repo: &R) -> Result<(), DomainError> {
        if !self.held {
            return Ok(());
        }
        if !repo.refresh_sync_lock(&self.tenant, self.job, Timestamp::now()).await? {
            self.held = false;
            return Err(DomainError::Conflict {
                reason: "FULL_SYNC_LOCK_LOST",
                message: format!(
                    "this FULL_SYNC stalled for over {}s and another import took over the tenant's lock; nothing was deleted",
                    SYNC_LOCK_STALE.as_secs()
                ),
            });
        }
        self.last_refresh = Instant::now();
        Ok(())
    }

    /// Gives the lock back; `false` when that failed (the database did not
    /// answer): [`spawn_record_end`] gives it back later.
    pub(super) async fn release<R: ImportRepository>(&mut self, repo: &R) -> bool {
        if !self.held {
            return true;
        }
        self.held = false;
        repo.release_sync_lock(&self.tenant, self.job).await.is_ok()
    }
}

/// How often, and how long, an ended import's record is retried.
const RECORD_RETRY_EVERY: Duration = Duration::from_millis(250);
const RECORD_RETRY_FOR: Duration = Duration::from_secs(600);

/// Records how `job` ended (and gives its FULL_SYNC lock back, with
/// `release_lock`) once the database answers again, retrying every 250 ms
/// for up to ten minutes; past that the job's lease tells other servers it
/// ended (INTERRUPTED).
pub(super) fn spawn_record_end<R: ImportRepository>(
    repo: Arc<R>,
    job: crate::import::ImportJob,
    origin: crate::event::Origin,
    release_lock: bool,
) {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut lock_held = release_lock;
        while started.elapsed() < RECORD_RETRY_FOR {
            tokio::time::sleep(RECORD_RETRY_EVERY).await;
            if lock_held && repo.release_sync_lock(&job.tenant, job.id).await.is_err() {
                continue;
            }
            lock_held = false;
            if repo.update_import_job(&job, &origin).await.is_ok() {
                tracing::info!(job = %job.resource_name(), state = job.state.as_str(), "recorded the end of an import job once the database answered");
                return;
            }
        }
        tracing::warn!(job = %job.resource_name(), "gave up recording the end of an import job; its lease will mark it INTERRUPTED");
    });
}
