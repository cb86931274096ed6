//! `grpc.health.v1.Health`: tonic-health's service, except that a Watch
//! stream ends once the server shuts down (after it carried NOT_SERVING), so
//! a watching load balancer or kubelet neither keeps the draining process
//! alive nor waits for the grace period to learn it is going.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthService;

/// How long a Watch stream goes on after the shutdown began: time for the
/// NOT_SERVING the server publishes at once to go out first.
const LAST_WORD: Duration = Duration::from_millis(200);

pub struct ClosingHealth {
    inner: HealthService,
    shutting_down: watch::Receiver<bool>,
}

impl ClosingHealth {
    pub fn new(inner: HealthService, shutting_down: watch::Receiver<bool>) -> Self {
        Self { inner, shutting_down }
    }
}

#[tonic::async_trait]
impl Health for ClosingHealth {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let mut statuses = self.inner.watch(request).await?.into_inner();
        let mut shutting_down = self.shutting_down.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let ended = async move {
                let _ = shutting_down.wait_for(|down| *down).await;
                tokio::time::sleep(LAST_WORD).await;
            };
            tokio::pin!(ended);
            loop {
                tokio::select! {
                    status = statuses.next() => {
                        let Some(status) = status else { return };
                        if tx.send(status).await.is_err() {
                            return;
                        }
                    }
                    () = &mut ended => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
