//! The API keys a server checks requests against, held in memory and
//! refreshed from the database every few seconds (so a key revoked on one
//! replica stops working on every replica within one refresh), with each
//! key's last use written back in batches rather than on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use crate::access::{Caller, Principal, TenantScope};
use crate::apikey::{ApiKey, KeyFormatError, PresentedKey};
use crate::repo::{ApiKeyRepository, RepoResult};
use crate::text::Timestamp;
use crate::user::UserId;

/// Why a credential is refused: each is UNAUTHENTICATED, with a message
/// that helps the holder of the key and tells nobody else anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: send `authorization: Bearer udk_...`")]
    Missing,
    #[error("the credential is not an API key: {0}")]
    Malformed(KeyFormatError),
    #[error("the API key is not known (a wrong secret, or a key of another installation)")]
    Unknown,
    #[error("the API key was revoked")]
    Revoked,
    #[error("the API key expired")]
    Expired,
}

impl From<AuthError> for crate::error::DomainError {
    fn from(e: AuthError) -> Self {
        Self::Unauthenticated { message: e.to_string() }
    }
}

/// A credential the ring accepted: its caller, and the user it is bound
/// to (a key made while acting), whom the caller must then act for.
#[derive(Debug, Clone)]
pub struct Credential {
    pub caller: Caller,
    pub bound_user: Option<UserId>,
}

/// The keys as last read, and the change number they were read up to.
struct Held {
    keys: Arc<HashMap<Uuid, ApiKey>>,
    last: i64,
}

/// Keys by id, and the last uses not yet written.
pub struct KeyRing<R> {
    repo: Arc<R>,
    held: RwLock<Held>,
    /// One refresh at a time, so an older read never replaces a newer one.
    refreshing: tokio::sync::Mutex<()>,
    used: Mutex<HashMap<Uuid, Timestamp>>,
}

impl<R: ApiKeyRepository> KeyRing<R> {
    /// Loads every key.
    pub async fn load(repo: Arc<R>) -> RepoResult<Self> {
        let ring = Self {
            repo,
            held: RwLock::new(Held {
                keys: Arc::new(HashMap::new()),
                last: -1,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            used: Mutex::new(HashMap::new()),
        };
        ring.refresh().await?;
        Ok(ring)
    }

    fn keys(&self) -> Arc<HashMap<Uuid, ApiKey>> {
        Arc::clone(&self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys)
    }

    /// Reads the keys written since the last read (new and revoked ones;
    /// expiry is checked at each call). Refreshes run one at a time, and
    /// each reads from where the last one stopped: a refresh costs what
    /// changed, not what is stored. A row that does not decode makes its
    /// key unknown (it opens nothing) and is logged; the others are read.
    pub async fn refresh(&self) -> RepoResult<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let since = self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner).last;
        let changes = self.repo.api_key_changes(since).await?;
        if changes.keys.is_empty() && changes.undecodable.is_empty() {
            return Ok(());
        }
        for id in &changes.undecodable {
            tracing::error!(key = %id.simple(), "an API key's stored row does not decode: the key is refused until it is repaired or revoked");
        }
        let mut keys = HashMap::clone(&self.keys());
        for id in changes.undecodable {
            keys.remove(&id);
        }
        for key in changes.keys {
            keys.insert(key.id, key);
        }
        *self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Held {
            keys: Arc::new(keys),
            last: changes.last,
        };
        Ok(())
    }

    /// The credential a bearer token stands for at `now`. The secret's hash
    /// is compared in constant time; the id, which is not secret, finds the key.
    pub fn authenticate(&self, token: &str, now: Timestamp) -> Result<Credential, AuthError> {
        let presented = PresentedKey::parse(token).map_err(AuthError::Malformed)?;
        let keys = self.keys();
        let key = keys.get(&presented.id).ok_or(AuthError::Unknown)?;
        if !key.hash.matches(&presented.hash) {
            return Err(AuthError::Unknown);
        }
        self.caller_of(key, now)
    }

    /// The credential of the key `id`, for a caller that proved itself
    /// otherwise (a client certificate the TLS handshake verified and the
    /// configuration maps to this key).
    pub fn authenticate_id(&self, id: Uuid, now: Timestamp) -> Result<Credential, AuthError> {
        let keys = self.keys();
        let key = keys.get(&id).ok_or(AuthError::Unknown)?;
        self.caller_of(key, now)
    }

    /// Whether the key `id` still works at `now` (for a long stream that
    /// began with it: a revoked or expired key ends it).
    pub fn check_live(&self, id: Uuid, now: Timestamp) -> Result<(), AuthError> {
        let keys = self.keys();
        let key = keys.get(&id).ok_or(AuthError::Unknown)?;
        if key.revoke_time.is_some() {
            return Err(AuthError::Revoked);
        }
        if !key.live_at(now) {
            return Err(AuthError::Expired);
        }
        Ok(())
    }

    /// A known key's caller, unless it was revoked or expired; notes its use.
    fn caller_of(&self, key: &ApiKey, now: Timestamp) -> Result<Credential, AuthError> {
        self.check_live(key.id, now)?;
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.id, now);
        Ok(Credential {
            caller: Caller {
                principal: Principal::key(key.id),
                tenants: key.tenant.clone().map_or(TenantScope::All, TenantScope::One),
                scopes: key.scopes,
                act_as_users: key.act_as_users,
                expire_time: key.expire_time,
                acting: None,
            },
            bound_user: key.user,
        })
    }

    /// Writes the last uses seen since the previous call.
    pub async fn flush_last_used(&self) -> RepoResult<()> {
        let used: Vec<(Uuid, Timestamp)> =
            std::mem::take(&mut *self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                .into_iter()
                .collect();
        if used.is_empty() {
            return Ok(());
        }
        self.repo.touch_api_keys(&used).await
    }
}
