//! Structured logs: the subscriber, and one log line per RPC with method,
//! gRPC status and latency.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use tower::{Layer, Service};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default `info`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm_migration=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // try_init: tests install it more than once.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Tower layer that logs every RPC once it has finished.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcLogLayer;

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcLog<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let mut record = RpcRecord {
            method: req.uri().path().to_owned(),
            start: Instant::now(),
            logged: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            let (parts, body) = response.into_parts();
            // Errors before any message come "trailers-only": status in the headers.
            if let Some(code) = grpc_status(&parts.headers) {
                record.log(code);
            }
            Ok(http::Response::from_parts(parts, LoggedBody { inner: body, record }))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

struct RpcRecord {
    method: String,
    start: Instant,
    logged: bool,
}

impl RpcRecord {
    fn log(&mut self, code: i32) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let status = tonic::Code::from_i32(code);
        let latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        match status {
            tonic::Code::Ok | tonic::Code::NotFound | tonic::Code::AlreadyExists | tonic::Code::InvalidArgument => {
                tracing::info!(method = %self.method, status = ?status, latency_ms, "rpc")
            }
            _ => tracing::warn!(method = %self.method, status = ?status, latency_ms, "rpc"),
        }
    }
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        if !self.logged {
            self.logged = true;
            let latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(method = %self.method, status = "CANCELLED_BY_CLIENT", latency_ms, "rpc");
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body, watched for the trailers that carry the status.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        record: RpcRecord,
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(code) = frame.trailers_ref().and_then(grpc_status)
        {
            this.record.log(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
