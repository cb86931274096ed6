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
    // Colour codes only for a person at a terminal, never into a log file or collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
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

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        // The caller's request id (a sane one), or a new one; echoed in the
        // response headers and in the log line, so one call can be followed
        // from the client's logs to ours.
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        let header = http::HeaderValue::from_str(&request_id).ok();
        if let Some(value) = &header {
            req.headers_mut().insert(REQUEST_ID, value.clone());
        }
        let method = req.uri().path().to_owned();
        let mut record = RpcRecord {
            // Probes and reflection are frequent and uninteresting: DEBUG.
            quiet: method.starts_with("/grpc.health.") || method.starts_with("/grpc.reflection."),
            method,
            request_id: request_id.clone(),
            start: Instant::now(),
            logged: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            if let Some(value) = header {
                response.headers_mut().insert(REQUEST_ID, value);
            }
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

/// The request id header, taken from the caller or made here.
pub const REQUEST_ID: &str = "x-request-id";

struct RpcRecord {
    method: String,
    request_id: String,
    /// Logged at DEBUG when it went well (health probes, reflection).
    quiet: bool,
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
        let (method, request_id) = (&self.method, &self.request_id);
        match status {
            tonic::Code::Ok if self.quiet => {
                tracing::debug!(%method, status = ?status, latency_ms, %request_id, "rpc")
            }
            tonic::Code::Ok | tonic::Code::NotFound | tonic::Code::AlreadyExists | tonic::Code::InvalidArgument => {
                tracing::info!(%method, status = ?status, latency_ms, %request_id, "rpc")
            }
            _ => tracing::warn!(%method, status = ?status, latency_ms, %request_id, "rpc"),
        }
    }
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        if !self.logged {
            self.logged = true;
            let latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(
                method = %self.method,
                status = "CANCELLED_BY_CLIENT",
                latency_ms,
                request_id = %self.request_id,
                "rpc"
            );
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
