//! Every RPC, once: a span (the OpenTelemetry RPC conventions, its parent
//! taken from the caller's W3C `traceparent`), a log line with method,
//! status, latency, request id and trace id when it has finished, and its
//! duration and status in the metrics.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::metrics::{Metrics, RpcMethod};

/// Tower layer that traces, logs and counts every RPC.
#[derive(Clone, Debug)]
pub struct RpcLogLayer {
    metrics: Metrics,
}

impl RpcLogLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RpcLog<S> {
    inner: S,
    metrics: Metrics,
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
        // Probes and reflection are frequent and uninteresting: DEBUG, and no span.
        let quiet = method.starts_with("/grpc.health.") || method.starts_with("/grpc.reflection.");
        let span = if quiet {
            tracing::Span::none()
        } else {
            rpc_span(&method, &request_id)
        };
        // The caller's trace: the parent of our span; its id goes into the
        // log line even when no spans are exported.
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let mut trace_id = None;
        if !span.is_disabled() {
            let _ = span.set_parent(parent.clone());
            let ours = span.context();
            let id = ours.span().span_context().trace_id();
            trace_id = (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string());
        }
        if trace_id.is_none() && parent.span().span_context().is_valid() {
            trace_id = Some(parent.span().span_context().trace_id().to_string());
        }
        let rpc_method = RpcMethod::from_path(&method);
        let peer = crate::peer::PeerIdentity::of(&req);
        let principal = PrincipalSlot::default();
        req.extensions_mut().insert(principal.clone());
        // The request's ids, for the events its changes write.
        req.extensions_mut().insert(userdir_domain::event::RequestIds {
            request_id: Some(request_id.clone()),
            trace_id: trace_id.clone(),
        });
        self.metrics.rpc_active(&rpc_method, 1);
        let mut record = RpcRecord {
            quiet,
            method,
            rpc_method,
            request_id: request_id.clone(),
            trace_id,
            peer,
            principal,
            span: span.clone(),
            metrics: self.metrics.clone(),
            start: Instant::now(),
            logged: false,
        };
        let fut = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let mut response = fut.await?;
            if let Some(value) = header {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            let (parts, body) = response.into_parts();
            // Errors before any message come "trailers-only": status in the headers.
            if let Some(code) = grpc_status(&parts.headers) {
                record.log(code, &parts.headers);
            }
            Ok(http::Response::from_parts(parts, LoggedBody { inner: body, record }))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The `ErrorInfo.reason` of a failed call's status details, for the log line.
fn error_reason(code: i32, headers: &http::HeaderMap) -> Option<String> {
    use tonic_types::StatusExt as _;
    if code == 0 || !headers.contains_key("grpc-status-details-bin") {
        return None;
    }
    let status = tonic::Status::from_header_map(headers)?;
    let reason = status.get_details_error_info()?.reason;
    (!reason.is_empty()).then_some(reason)
}

/// The request id header, taken from the caller or made here.
pub const REQUEST_ID: &str = "x-request-id";

/// The span of one RPC, as OpenTelemetry's RPC conventions name it.
fn rpc_span(path: &str, request_id: &str) -> tracing::Span {
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    tracing::info_span!(
        target: "userdir::rpc",
        "rpc",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        request_id,
    )
}

/// Codes that are the server's fault, for the span's status (the RPC
/// conventions: a server span is an error only for these).
fn server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

/// Request headers as OpenTelemetry's propagators read them.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct RpcRecord {
    method: String,
    rpc_method: RpcMethod,
    request_id: String,
    /// The trace this call belongs to: ours when spans are on, else the caller's.
    trace_id: Option<String>,
    /// The client certificate's identity (mTLS).
    peer: Option<std::sync::Arc<crate::peer::PeerIdentity>>,
    /// Who called, once the credential was checked.
    principal: PrincipalSlot,
    span: tracing::Span,
    metrics: Metrics,
    /// Logged at DEBUG when it went well (health probes, reflection).
    quiet: bool,
    start: Instant,
    logged: bool,
}

impl RpcRecord {
    fn log(&mut self, code: i32, headers: &http::HeaderMap) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let status = tonic::Code::from_i32(code);
        let elapsed = self.start.elapsed().as_secs_f64();
        let latency_ms = elapsed * 1000.0;
        self.metrics.rpc_active(&self.rpc_method, -1);
        self.metrics.rpc_done(&self.rpc_method, code, elapsed);
        self.span.record("rpc.grpc.status_code", code);
        if server_error(status) {
            self.span.record("otel.status_code", "ERROR");
        }
        let (method, request_id, trace_id) = (&self.method, &self.request_id, self.trace_id.as_deref());
        let peer = self.peer.as_deref().map(|p| p.subject.as_str());
        let principal = self.principal.get();
        let reason = error_reason(code, headers);
        let reason = reason.as_deref();
        match status {
            tonic::Code::Ok if self.quiet => {
                tracing::debug!(%method, status = ?status, latency_ms, %request_id, trace_id, principal, peer, "rpc")
            }
            tonic::Code::Ok | tonic::Code::NotFound | tonic::Code::AlreadyExists | tonic::Code::InvalidArgument => {
                tracing::info!(%method, status = ?status, reason, latency_ms, %request_id, trace_id, principal, peer, "rpc")
            }
            _ => {
                tracing::warn!(%method, status = ?status, reason, latency_ms, %request_id, trace_id, principal, peer, "rpc")
            }
        }
    }
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        if !self.logged {
            self.logged = true;
            let elapsed = self.start.elapsed().as_secs_f64();
            let code = tonic::Code::Cancelled as i32;
            self.metrics.rpc_active(&self.rpc_method, -1);
            self.metrics.rpc_done(&self.rpc_method, code, elapsed);
            self.span.record("rpc.grpc.status_code", code);
            tracing::info!(
                method = %self.method,
                status = "CANCELLED_BY_CLIENT",
                latency_ms = elapsed * 1000.0,
                request_id = %self.request_id,
                trace_id = self.trace_id.as_deref(),
                principal = self.principal.get(),
                peer = self.peer.as_deref().map(|p| p.subject.as_str()),
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
        // Work done while the response streams (an export's pages) belongs to the call's span.
        let polled = this.record.span.clone().in_scope(|| this.inner.poll_frame(cx));
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = grpc_status(trailers)
        {
            this.record.log(code, trailers);
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

/// Who called: set by the authentication layer inside this one, read when
/// the call's line is logged.
#[derive(Clone, Debug, Default)]
pub struct PrincipalSlot(std::sync::Arc<std::sync::OnceLock<String>>);

impl PrincipalSlot {
    pub fn set(&self, principal: &str) {
        let _ = self.0.set(principal.to_owned());
    }

    fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}
