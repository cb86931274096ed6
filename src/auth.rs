//! Who is calling. Every RPC except health carries a credential
//! (`authorization: Bearer udk_...`); this layer turns it into the
//! [`Caller`] that handlers pass to every domain operation, or answers
//! UNAUTHENTICATED before any handler runs. Reflection follows
//! `--reflection` (by default open when the server listens on loopback only).
//!
//! Keys are held in memory ([`KeyRing`]) and re-read every few seconds, so a
//! key revoked on one replica stops working on every replica within one
//! refresh; last uses are written back about once a minute.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};
use userdir_domain::DomainError;
use userdir_domain::access::Caller;
use userdir_domain::keyring::KeyRing;
use userdir_domain::text::Timestamp;
use userdir_store::Store;

use crate::telemetry::PrincipalSlot;

/// Who may use reflection (`--reflection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReflectionAccess {
    /// Open when the server listens on a loopback address (a developer's
    /// machine, a sidecar), authenticated otherwise.
    #[default]
    Loopback,
    /// Open to anyone who reaches the port.
    Open,
    /// Only with a credential, like every other RPC.
    Authenticated,
}

/// The key ring and the rules of the layer.
pub struct Auth {
    ring: KeyRing<Store>,
    reflection_open: bool,
}

impl Auth {
    /// Loads every key; `reflection_open` says whether reflection needs no
    /// credential on this listener.
    pub async fn load(store: Arc<Store>, reflection_open: bool) -> Result<Arc<Self>, DomainError> {
        Ok(Arc::new(Self {
            ring: KeyRing::load(store).await?,
            reflection_open,
        }))
    }

    /// Re-reads the keys every `every`, and writes last uses every
    /// `flush_every`; runs until aborted.
    pub async fn maintain(self: Arc<Self>, every: Duration, flush_every: Duration) {
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            self.refresh().await;
            if last_flush.elapsed() >= flush_every {
                last_flush = tokio::time::Instant::now();
                self.flush().await;
            }
        }
    }

    /// Re-reads the keys now (after this server changed one).
    pub async fn refresh(&self) {
        if let Err(e) = self.ring.refresh().await {
            tracing::warn!(error = %e, "could not re-read the API keys; they are read again shortly");
        }
    }

    /// Writes the last uses not yet written (also at shutdown).
    pub async fn flush(&self) {
        if let Err(e) = self.ring.flush_last_used().await {
            tracing::debug!(error = %e, "could not record when API keys were last used");
        }
    }

    /// The caller of a request, `None` for one that needs no credential,
    /// or why it is refused.
    fn check<B>(&self, request: &http::Request<B>) -> Result<Option<Arc<Caller>>, DomainError> {
        let path = request.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") {
            return Ok(None);
        }
        if self.reflection_open && path.starts_with("/grpc.reflection.") {
            return Ok(None);
        }
        let token = bearer(request.headers())?;
        let caller = self.ring.authenticate(token, Timestamp::now())?;
        Ok(Some(Arc::new(caller)))
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(headers: &http::HeaderMap) -> Result<&str, DomainError> {
    let unauthenticated = |message: &str| DomainError::Unauthenticated {
        message: message.to_owned(),
    };
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(userdir_domain::keyring::AuthError::Missing.into());
    };
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("the authorization header is not text: send `authorization: Bearer udk_...`"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(
            "the authorization header is not a bearer credential: send `authorization: Bearer udk_...`",
        ));
    }
    Ok(token.trim())
}

/// Puts the [`Caller`] into each request, or refuses it.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match self.auth.check(&request) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    if let Some(slot) = request.extensions().get::<PrincipalSlot>() {
                        slot.set(&caller.principal);
                    }
                    request.extensions_mut().insert(caller);
                }
                AuthFuture::Inner {
                    inner: self.inner.call(request),
                }
            }
            Err(refused) => AuthFuture::Refused {
                response: Some(crate::grpc::to_status(refused).into_http()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's answer, or the refusal.
    #[project = AuthFutureProj]
    pub enum AuthFuture<F, B> {
        Inner { #[pin] inner: F },
        Refused { response: Option<http::Response<B>> },
    }
}

impl<F, B, E> Future for AuthFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProj::Inner { inner } => inner.poll(cx),
            AuthFutureProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

/// The caller the layer found for `request`; a handler behind the layer
/// always has one.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>, DomainError> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| userdir_domain::keyring::AuthError::Missing.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(&headers("Bearer udk_x")).unwrap(), "udk_x");
        assert_eq!(bearer(&headers("bearer  udk_x ")).unwrap(), "udk_x");
        let err = bearer(&headers("Basic dXNlcjpwYXNz")).unwrap_err();
        assert!(err.to_string().contains("Bearer udk_"), "{err}");
        assert!(
            !err.to_string().contains("dXNlcjpwYXNz"),
            "never echoes the credential: {err}"
        );
        let err = bearer(&http::HeaderMap::new()).unwrap_err();
        assert!(matches!(err, DomainError::Unauthenticated { .. }));
    }
}
