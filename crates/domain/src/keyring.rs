//! The API keys a server checks requests against, held in memory and
//! refreshed from the database every few seconds (so a key revoked on one
//! replica stops working on every replica within one refresh), with each
//! key's last use written back in batches rather than on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use crate::access::{Caller, TenantScope};
use crate::apikey::{ApiKey, KeyFormatError, PresentedKey};
use crate::repo::{ApiKeyRepository, RepoResult};
use crate::text::Timestamp;

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

/// Keys by id, and the last uses not yet written.
pub struct KeyRing<R> {
    repo: Arc<R>,
    keys: RwLock<Arc<HashMap<Uuid, ApiKey>>>,
    used: Mutex<HashMap<Uuid, Timestamp>>,
}

impl<R: ApiKeyRepository> KeyRing<R> {
    /// Loads every key.
    pub async fn load(repo: Arc<R>) -> RepoResult<Self> {
        let ring = Self {
            repo,
            keys: RwLock::new(Arc::new(HashMap::new())),
            used: Mutex::new(HashMap::new()),
        };
        ring.refresh().await?;
        Ok(ring)
    }

    /// Reads the keys again (new, revoked and expired ones).
    pub async fn refresh(&self) -> RepoResult<()> {
        let keys: HashMap<Uuid, ApiKey> = self
            .repo
            .list_api_keys()
            .await?
            .into_iter()
            .map(|k| (k.id, k))
            .collect();
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(())
    }

    /// The caller a bearer token stands for at `now`. The secret's hash is
    /// compared in constant time; the id, which is not secret, finds the key.
    pub fn authenticate(&self, token: &str, now: Timestamp) -> Result<Caller, AuthError> {
        let presented = PresentedKey::parse(token).map_err(AuthError::Malformed)?;
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let key = keys.get(&presented.id).ok_or(AuthError::Unknown)?;
        if !key.hash.matches(&presented.hash) {
            return Err(AuthError::Unknown);
        }
        self.caller_of(key, now)
    }

    /// The caller of the key `id`, for a credential that proved itself
    /// otherwise (a client certificate the TLS handshake verified and the
    /// configuration maps to this key).
    pub fn authenticate_id(&self, id: Uuid, now: Timestamp) -> Result<Caller, AuthError> {
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let key = keys.get(&id).ok_or(AuthError::Unknown)?;
        self.caller_of(key, now)
    }

    /// A known key's caller, unless it was revoked or expired; notes its use.
    fn caller_of(&self, key: &ApiKey, now: Timestamp) -> Result<Caller, AuthError> {
        if key.revoke_time.is_some() {
            return Err(AuthError::Revoked);
        }
        if !key.live_at(now) {
            return Err(AuthError::Expired);
        }
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.id, now);
        Ok(Caller {
            principal: format!("apikey:{}", key.id.simple()),
            tenants: key.tenant.clone().map_or(TenantScope::All, TenantScope::One),
            scopes: key.scopes,
            act_as_users: key.act_as_users,
            acting: None,
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
