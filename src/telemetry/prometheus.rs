//! The Prometheus text endpoint (`--metrics-listen`): `GET /metrics` on a
//! port of its own, plain HTTP/1.1, for operators who scrape rather than run
//! an OpenTelemetry collector. It serves only metrics, never the API.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder as _, TextEncoder};
use tokio::net::TcpListener;

use super::TelemetryError;

/// Binds `addr` and serves `registry` there until the task is aborted.
pub async fn serve(
    addr: SocketAddr,
    registry: prometheus::Registry,
) -> Result<tokio::task::JoinHandle<()>, TelemetryError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| TelemetryError::Prometheus(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "metrics endpoint listening (GET /metrics)");
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(respond(&req, &registry)) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended");
                }
            });
        }
    }))
}

fn respond<B>(req: &http::Request<B>, registry: &prometheus::Registry) -> http::Response<Full<Bytes>> {
    let plain = |status: http::StatusCode, text: &'static str| {
        let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if req.uri().path() != "/metrics" {
        return plain(http::StatusCode::NOT_FOUND, "not found: metrics are at GET /metrics\n");
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return plain(http::StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
    }
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        tracing::warn!(error = %e, "encoding metrics failed");
        return plain(http::StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n");
    }
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    if let Ok(value) = http::HeaderValue::from_str(encoder.format_type()) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    response
}
