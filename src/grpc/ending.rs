//! What ends a long stream before it is done: a shutdown whose grace period
//! is over, the caller's deadline, or the caller's credential no longer
//! holding (its key revoked or expired, the user it acts for disabled or
//! deleted), checked once a key refresh.

use std::sync::Arc;

use tokio::sync::watch;
use userdir_domain::DomainError;
use userdir_domain::access::Caller;

use crate::auth::Auth;
use crate::deadline::Deadline;

/// Watches both; [`Ending::reached`] resolves with the error the stream ends with.
pub struct Ending {
    closing: watch::Receiver<bool>,
    deadline: Option<(Deadline, std::time::Duration)>,
    credential: Option<(Arc<Auth>, Arc<Caller>)>,
}

impl Ending {
    /// `deadline` as the caller set it (with the timeout it asked for, for the message).
    pub fn new(closing: watch::Receiver<bool>, deadline: Option<Deadline>) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            closing,
            deadline: deadline.map(|d| (d, d.0.saturating_duration_since(now))),
            credential: None,
        }
    }

    /// Also ends the stream once `caller`'s credential no longer holds.
    #[must_use]
    pub fn while_valid(mut self, auth: &Arc<Auth>, caller: &Arc<Caller>) -> Self {
        self.credential = Some((Arc::clone(auth), Arc::clone(caller)));
        self
    }

    /// Resolves when the stream must end, with why.
    pub async fn reached(&mut self) -> DomainError {
        let deadline = self.deadline;
        let deadline = async move {
            match deadline {
                Some((Deadline(at), timeout)) => {
                    tokio::time::sleep_until(at).await;
                    timeout
                }
                None => std::future::pending().await,
            }
        };
        let credential = self.credential.clone();
        let revoked = async move {
            let Some((auth, caller)) = credential else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(auth.recheck_every()).await;
                // Only a refused credential ends it: a database that does
                // not answer is the stream's own to meet.
                if let Err(e @ DomainError::Unauthenticated { .. }) = auth.still_valid(&caller).await {
                    return e;
                }
            }
        };
        tokio::select! {
            _ = self.closing.wait_for(|closing| *closing) => DomainError::ShuttingDown,
            e = revoked => e,
            timeout = deadline => DomainError::DeadlineExceeded {
                message: format!(
                    "the call's deadline ({} s) passed before the stream was done, so it was ended",
                    timeout.as_secs_f64().round()
                ),
            },
        }
    }
}
