//! The caller's deadline (`grpc-timeout`): a unary call whose deadline
//! passes is cancelled (its database work is dropped, an open transaction
//! rolls back; a commit already sent may still land, as gRPC allows for
//! DEADLINE_EXCEEDED) and answered DEADLINE_EXCEEDED; a call that arrives
//! with no time left is not started; a streaming call finds the deadline
//! in its request's extensions and ends its stream with DEADLINE_EXCEEDED
//! when it passes (an import's committed rows stay and its job says so; an
//! export gives up its snapshot).
//!
//! tonic's own timeout wraps the same future, but answers CANCELLED "Timeout
//! expired", and only until the response headers (never a stream's body).
//! This layer sits inside it and fires a moment earlier, so the caller sees
//! the code gRPC defines for a deadline.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

/// When the caller stops waiting; in the request's extensions when it sent
/// `grpc-timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline of a tonic request, if its caller set one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.extensions().get::<Self>().copied()
    }
}

/// Ahead of tonic's own timer, which started a moment before ours (both
/// round up to the timer's millisecond ticks). A call with no more than this
/// left is answered at once.
const AHEAD: Duration = Duration::from_millis(2);

/// Tower layer: reads `grpc-timeout`, puts the [`Deadline`] in the request's
/// extensions and answers DEADLINE_EXCEEDED when it passes before the
/// response is ready.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DeadlineService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let Some(timeout) = grpc_timeout(req.headers()) else {
            return Box::pin(self.inner.call(req));
        };
        if timeout <= AHEAD {
            // Too little time left to do anything: not started at all.
            return Box::pin(async move { Ok(exceeded(timeout).into_http()) });
        }
        let deadline = Instant::now() + (timeout - AHEAD);
        req.extensions_mut().insert(Deadline(deadline));
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, call).await {
                Ok(response) => response,
                Err(_) => Ok(exceeded(timeout).into_http()),
            }
        })
    }
}

/// The status of a call whose deadline passed.
pub fn exceeded(timeout: Duration) -> tonic::Status {
    crate::grpc::to_status(userdir_domain::DomainError::DeadlineExceeded {
        message: format!(
            "the call's deadline ({} ms) passed before it was done, so it was cancelled; a write cut off \
             at its commit may still have been stored (read it back before retrying). Allow more time",
            timeout.as_millis()
        ),
    })
}

/// The `grpc-timeout` header: at most 8 digits and a unit (gRPC over
/// HTTP/2). A malformed one is ignored, as tonic ignores it.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
