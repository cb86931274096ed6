//! SQLite: WAL checkpoints beside the writer.
//!
//! In WAL mode a commit only appends pages to the log; a checkpoint copies
//! them into the database file, and with `synchronous = NORMAL` it is the
//! one step that waits for the disk: it syncs the log, writes the pages and
//! syncs the file. SQLite runs it in the connection that committed once the
//! log passes `wal_autocheckpoint` pages, so during a bulk import the writer
//! stood still for every sync. Measured at 1M new users on a disk where a
//! sync takes about 200 ms: 73 syncs, 14.7 s of a 57 s import.
//!
//! After each bulk write commits (an import's transaction, a FULL_SYNC's
//! deletions), this task runs a `PASSIVE` checkpoint on a connection of the
//! read pool. It never blocks the writer
//! or the readers; the writer goes on with its next transaction while the
//! pages are copied and synced, and its own automatic checkpoint finds
//! little left to do. The log stays as bounded as before: measured, at most
//! 186 MB in a 1M import against 171 MB without this task. 1M new users in
//! interleaved runs on that machine: 56.0 / 56.3 / 59.4 / 62.6 s before,
//! 51.3 / 51.5 / 52.6 / 59.5 s after, for about 1% more CPU. (On a faster
//! disk, in session 5, an earlier form of this gained nothing.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::mpsc;

/// Hands checkpoint requests to the task; requests made while one waits
/// are merged into it. The task ends when every handle is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Checkpointer {
    requests: mpsc::Sender<()>,
    /// Checkpoints run so far: tests wait on it.
    #[cfg_attr(not(test), allow(dead_code))]
    done: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Starts the task, which checkpoints through `pool`.
    pub(crate) fn spawn(pool: DatabaseConnection) -> Self {
        let (requests, mut pending) = mpsc::channel(1);
        let done = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&done);
        tokio::spawn(async move {
            while pending.recv().await.is_some() {
                match pool.execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)").await {
                    Ok(_) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
        });
        Self { requests, done }
    }

    /// Asks for a checkpoint, unless one is already asked for.
    pub(crate) fn request(&self) {
        // Full: a request is pending and will cover this one. Closed: the
        // task is gone with the runtime; nothing left to checkpoint for.
        let _ = self.requests.try_send(());
    }

    #[cfg(test)]
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}
