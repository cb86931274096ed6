//! The wake-up of watchers: a generation number that moves after every
//! commit that wrote events in this process and, on PostgreSQL, on every
//! `NOTIFY userdir_events` (a commit through any replica). Only a hint:
//! watchers read the events themselves, and poll as well.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use userdir_domain::tenant::TenantId;

#[derive(Clone, Debug)]
pub struct Signal {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for Signal {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(0).0),
        }
    }
}

impl Signal {
    /// A commit wrote events of `tenant` up to number `seq`.
    pub(crate) fn committed(&self, _tenant: &TenantId, _seq: i64) {
        self.poke();
    }

    fn poke(&self) {
        self.tx
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Changes whenever events may have been written.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// PostgreSQL: listens for other replicas' commits on a connection of
    /// its own (opened as `pool` opens its own, outside it, so it never
    /// takes a request's place), until `pool` closes; reconnects after errors.
    pub(crate) fn listen(&self, pool: sea_orm::sqlx::PgPool) {
        let signal = self.clone();
        let own = sea_orm::sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_lazy_with((*pool.connect_options()).clone());
        tokio::spawn(async move {
            while !pool.is_closed() {
                match sea_orm::sqlx::postgres::PgListener::connect_with(&own).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen("userdir_events").await {
                            tracing::debug!(error = %e, "LISTEN userdir_events failed");
                        } else {
                            // Missed notifications while reconnecting: wake anyway.
                            signal.poke();
                            while let Ok(_note) = listener.recv().await {
                                signal.poke();
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "the event listener cannot connect"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            own.close().await;
        });
    }
}
