//! Who is calling. Every RPC except health carries a credential
//! (`authorization: Bearer udk_...`); this layer turns it into the
//! [`Caller`] that handlers pass to every domain operation, or answers
//! UNAUTHENTICATED before any handler runs. Reflection follows
//! `--reflection` (by default open when the server listens on loopback only).
//! A verified client certificate that `--client-cert-key` maps to a key
//! stands for that key when no `authorization` header is sent
//! ([`CertKeys`]); a key allowed to act for users may name one in
//! `x-userdir-acting-user`. JWT/OIDC bearer tokens would slot in beside the
//! key lookup: each yields the same [`Caller`].
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
use userdir_domain::acting::ActingUsers;
use userdir_domain::keyring::{Credential, KeyRing};
use userdir_domain::text::Timestamp;
use userdir_domain::user::{UserId, UserName};
use userdir_store::Store;

use crate::certmap::CertKeys;
use crate::peer::PeerIdentity;
use crate::telemetry::PrincipalSlot;

/// The key ring and the rules of the layer.
pub struct Auth {
    ring: KeyRing<Store>,
    settings: AuthSettings,
    /// Acting users, each taken as read for the key refresh.
    acting_users: ActingUsers<Store>,
}

/// How a server authenticates, beside its keys.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// Reflection needs no credential on this listener.
    pub reflection_open: bool,
    /// Client certificates that stand for API keys (mTLS).
    pub cert_keys: CertKeys,
    /// How long an acting user's role, capabilities and enablement are
    /// taken as read (the key refresh): a change reaches every replica
    /// within it, as a key's revocation does.
    pub acting_ttl: Duration,
}

/// The header a key that may act for users names the user with.
pub const ACTING_USER: &str = "x-userdir-acting-user";

impl Auth {
    /// Loads every key.
    pub async fn load(store: Arc<Store>, settings: AuthSettings) -> Result<Arc<Self>, DomainError> {
        Ok(Arc::new(Self {
            ring: KeyRing::load(Arc::clone(&store)).await?,
            acting_users: ActingUsers::new(store, settings.acting_ttl),
            settings,
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

    /// The acting user named by `header` as `caller`'s: the key must be
    /// allowed to act for users, and the user must exist, be enabled and
    /// belong to the key's tenant. Effective rights are then the key's
    /// scopes and the user's role, both (`access::decide`).
    async fn acting(&self, caller: Caller, header: Option<String>) -> Result<Caller, DomainError> {
        let Some(name) = header else {
            return Err(DomainError::Unauthenticated {
                message: format!("the {ACTING_USER} header is not text"),
            });
        };
        if !caller.act_as_users {
            return Err(DomainError::PermissionDenied {
                reason: "MISSING_PERMISSION",
                permission: "apiKeys.actAsUsers",
                message: format!(
                    "this API key may not act for users: send no {ACTING_USER} header, or use a key made with act_as_users"
                ),
            });
        }
        let unknown = || DomainError::Unauthenticated {
            message: format!(
                "the {ACTING_USER} user is not an enabled user of this key's tenant (tenants/{{id}}/users/{{id}})"
            ),
        };
        let name = UserName::parse(ACTING_USER, name.trim()).map_err(|_| unknown())?;
        self.acting_users.act_for(caller, &name).await?.ok_or_else(unknown)
    }

    /// `caller` acting for the user its key is bound to (a key made while
    /// acting for them): refused once that user is disabled or gone.
    async fn bound(&self, caller: Caller, user: UserId) -> Result<Caller, DomainError> {
        self.acting_users.bound(caller, user).await?.ok_or_else(unbound_user)
    }

    /// Whether `caller`, who began a long stream (an import, an export),
    /// may still go on: its key neither revoked nor expired, the user it
    /// acts for still enabled. Asked about once a key refresh, so a revoked
    /// key's stream ends within about that.
    pub async fn still_valid(&self, caller: &Caller) -> Result<(), DomainError> {
        self.ring.check_live(caller.principal.key, Timestamp::now())?;
        if !self.acting_users.still_acts(caller).await? {
            return Err(DomainError::Unauthenticated {
                message: format!(
                    "{}, whom this call acts for, was disabled or deleted",
                    caller.principal.acting_user.as_deref().unwrap_or("the user")
                ),
            });
        }
        Ok(())
    }

    /// How often a long stream asks [`Self::still_valid`].
    pub fn recheck_every(&self) -> Duration {
        self.acting_users.ttl().max(Duration::from_millis(100))
    }

    /// The credential of a request, `None` for one that needs no
    /// credential, or why it is refused.
    fn check<B>(&self, request: &http::Request<B>) -> Result<Option<Credential>, DomainError> {
        let path = request.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") {
            return Ok(None);
        }
        if self.settings.reflection_open && path.starts_with("/grpc.reflection.") {
            return Ok(None);
        }
        if !request.headers().contains_key(http::header::AUTHORIZATION)
            && let Some(peer) = PeerIdentity::of(request)
            && let Some((key, selector)) = self.settings.cert_keys.key_for(&peer)
        {
            let mut credential = self.ring.authenticate_id(key, Timestamp::now())?;
            credential.caller.principal.certificate = Some(selector.to_owned());
            return Ok(Some(credential));
        }
        let token = bearer(request.headers())?;
        Ok(Some(self.ring.authenticate(token, Timestamp::now())?))
    }
}

fn unbound_user() -> DomainError {
    DomainError::Unauthenticated {
        message: "the user this API key acts for (it was made while acting for them) is disabled or deleted, so the \
                  key opens nothing"
            .to_owned(),
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
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match self.auth.check(&request) {
            Ok(Some(credential)) if credential.bound_user.is_some() || request.headers().contains_key(ACTING_USER) => {
                // The acting user is read from the database: the call waits for it.
                let header = request.headers().contains_key(ACTING_USER).then(|| {
                    request
                        .headers()
                        .get(ACTING_USER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                });
                let auth = Arc::clone(&self.auth);
                // The service that was polled ready serves this call; a clone waits for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                AuthFuture::Acting {
                    fut: Box::pin(async move {
                        let acting = match (header, credential.bound_user) {
                            (Some(header), _) => auth.acting(credential.caller, header).await,
                            (None, Some(user)) => auth.bound(credential.caller, user).await,
                            (None, None) => Ok(credential.caller),
                        };
                        match acting {
                            Ok(mut acting) => {
                                acting.request = request_ids(&request);
                                if let Some(slot) = request.extensions().get::<PrincipalSlot>() {
                                    slot.set(&acting.principal.to_string());
                                }
                                request.extensions_mut().insert(Arc::new(acting));
                                inner.call(request).await
                            }
                            Err(refused) => Ok(crate::grpc::status::to_status(refused).into_http()),
                        }
                    }),
                }
            }
            Ok(credential) => {
                if let Some(mut credential) = credential {
                    credential.caller.request = request_ids(&request);
                    if let Some(slot) = request.extensions().get::<PrincipalSlot>() {
                        slot.set(&credential.caller.principal.to_string());
                    }
                    request.extensions_mut().insert(Arc::new(credential.caller));
                }
                AuthFuture::Inner {
                    inner: self.inner.call(request),
                }
            }
            Err(refused) => AuthFuture::Refused {
                response: Some(crate::grpc::status::to_status(refused).into_http()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's answer, or the refusal.
    #[project = AuthFutureProj]
    pub enum AuthFuture<F, B, E> {
        Inner { #[pin] inner: F },
        Refused { response: Option<http::Response<B>> },
        Acting { fut: Pin<Box<dyn Future<Output = Result<http::Response<B>, E>> + Send>> },
    }
}

impl<F, B, E> Future for AuthFuture<F, B, E>
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
            AuthFutureProj::Acting { fut } => fut.as_mut().poll(cx),
        }
    }
}

/// The ids the telemetry layer gave the request (none without it).
fn request_ids<B>(request: &http::Request<B>) -> userdir_domain::event::RequestIds {
    request
        .extensions()
        .get::<userdir_domain::event::RequestIds>()
        .cloned()
        .unwrap_or_default()
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
