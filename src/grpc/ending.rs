//! What ends a long stream before it is done: a shutdown whose grace period
//! is over, or the caller's deadline.

use tokio::sync::watch;
use userdir_domain::DomainError;

use crate::deadline::Deadline;

/// Watches both; [`Ending::reached`] resolves with the error the stream ends with.
pub struct Ending {
    closing: watch::Receiver<bool>,
    deadline: Option<(Deadline, std::time::Duration)>,
}

impl Ending {
    /// `deadline` as the caller set it (with the timeout it asked for, for the message).
    pub fn new(closing: watch::Receiver<bool>, deadline: Option<Deadline>) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            closing,
            deadline: deadline.map(|d| (d, d.0.saturating_duration_since(now))),
        }
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
        tokio::select! {
            _ = self.closing.wait_for(|closing| *closing) => DomainError::ShuttingDown,
            timeout = deadline => DomainError::DeadlineExceeded {
                message: format!(
                    "the call's deadline ({} s) passed before the stream was done, so it was ended",
                    timeout.as_secs_f64().round()
                ),
            },
        }
    }
}
