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
/// Changed in place under the lock (a refresh costs what changed, not a
/// copy of every key); readers hold it for one lookup.
struct Held {
    keys: HashMap<Uuid, Arc<ApiKey>>,
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
                keys: HashMap::new(),
                last: -1,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            used: Mutex::new(HashMap::new()),
        };
        ring.refresh().await?;
        Ok(ring)
    }

    fn key(&self, id: &Uuid) -> Option<Arc<ApiKey>> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys
            .get(id)
            .cloned()
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
        let changed: Vec<Arc<ApiKey>> = changes.keys.into_iter().map(Arc::new).collect();
        let mut held = self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in changes.undecodable {
            held.keys.remove(&id);
        }
        for key in changed {
            held.keys.insert(key.id, key);
        }
        held.last = changes.last;
        Ok(())
    }

    /// The credential a bearer token stands for at `now`. The secret's hash
    /// is compared in constant time; the id, which is not secret, finds the key.
    pub fn authenticate(&self, token: &str, now: Timestamp) -> Result<Credential, AuthError> {
        let presented = PresentedKey::parse(token).map_err(AuthError::Malformed)?;
        let key = self.key(&presented.id).ok_or(AuthError::Unknown)?;
        if !key.hash.matches(&presented.hash) {
            return Err(AuthError::Unknown);
        }
        self.caller_of(&key, now)
    }

    /// The credential of the key `id`, for a caller that proved itself
    /// otherwise (a client certificate the TLS handshake verified and the
    /// configuration maps to this key).
    pub fn authenticate_id(&self, id: Uuid, now: Timestamp) -> Result<Credential, AuthError> {
        let key = self.key(&id).ok_or(AuthError::Unknown)?;
        self.caller_of(&key, now)
    }

    /// Whether the key `id` still works at `now` (for a long stream that
    /// began with it: a revoked or expired key ends it).
    pub fn check_live(&self, id: Uuid, now: Timestamp) -> Result<(), AuthError> {
        live(&*self.key(&id).ok_or(AuthError::Unknown)?, now)
    }

    /// A known key's caller, unless it was revoked or expired; notes its use.
    fn caller_of(&self, key: &ApiKey, now: Timestamp) -> Result<Credential, AuthError> {
        live(key, now)?;
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.id, now);
        Ok(Credential {
            caller: Caller {
                request: Default::default(),
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

/// Whether `key` works at `now`: not revoked, not expired.
fn live(key: &ApiKey, now: Timestamp) -> Result<(), AuthError> {
    if key.revoke_time.is_some() {
        return Err(AuthError::Revoked);
    }
    if !key.live_at(now) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;
    use crate::access::Scopes;
    use crate::apikey::NewApiKey;
    use crate::error::DomainError;
    use crate::repo::{KeyChanges, KeyQuery, Revoked};
    use crate::tenant::TenantId;

    /// Keys in memory, each with its change number; the second read of
    /// changes is held at a gate after taking its snapshot (a slow query).
    struct SlowRepo {
        keys: Mutex<Vec<(i64, ApiKey)>>,
        reads: AtomicUsize,
        snapshot_taken: Notify,
        gate: Notify,
    }

    impl ApiKeyRepository for SlowRepo {
        async fn insert_api_key(&self, _: &ApiKey, _: u32, _: &crate::event::Origin) -> RepoResult<()> {
            Err(DomainError::storage("unused"))
        }
        async fn get_api_key(&self, _: Uuid) -> RepoResult<Option<ApiKey>> {
            Err(DomainError::storage("unused"))
        }
        async fn list_api_keys(&self, _: &KeyQuery) -> RepoResult<Vec<ApiKey>> {
            Err(DomainError::storage("unused"))
        }
        async fn has_operator_admin_key(&self, _: Timestamp) -> RepoResult<bool> {
            Err(DomainError::storage("unused"))
        }
        async fn revoke_api_key(&self, _: Uuid, _: Timestamp, _: &crate::event::Origin) -> RepoResult<Revoked> {
            Err(DomainError::storage("unused"))
        }
        async fn api_key_changes(&self, since: i64) -> RepoResult<KeyChanges> {
            let snapshot: Vec<(i64, ApiKey)> = self
                .keys
                .lock()
                .unwrap()
                .iter()
                .filter(|(seq, _)| *seq > since)
                .cloned()
                .collect();
            if self.reads.fetch_add(1, Ordering::SeqCst) == 1 {
                self.snapshot_taken.notify_one();
                self.gate.notified().await;
            }
            Ok(KeyChanges {
                last: snapshot.iter().map(|(seq, _)| *seq).max().unwrap_or(since),
                keys: snapshot.into_iter().map(|(_, k)| k).collect(),
                undecodable: Vec::new(),
            })
        }
        async fn touch_api_keys(&self, _: &[(Uuid, Timestamp)]) -> RepoResult<()> {
            Ok(())
        }
    }

    /// A slow refresh that read before a revocation never puts the key back
    /// after a later refresh saw it revoked: refreshes run one at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_read_never_replaces_a_newer_one() {
        let made = NewApiKey::generate().unwrap();
        let key = ApiKey {
            id: made.id,
            name: "svc".into(),
            tenant: Some(TenantId::parse("tenant", "acme").unwrap()),
            scopes: Scopes::ALL,
            act_as_users: false,
            user: None,
            creator: "test".into(),
            create_time: Timestamp::now(),
            expire_time: None,
            last_used_time: None,
            revoke_time: None,
            hash: made.hash(),
        };
        let repo = Arc::new(SlowRepo {
            keys: Mutex::new(vec![(1, key.clone())]),
            reads: AtomicUsize::new(0),
            snapshot_taken: Notify::new(),
            gate: Notify::new(),
        });
        let ring = Arc::new(KeyRing::load(Arc::clone(&repo)).await.unwrap());
        // A change (a rename), then a slow refresh reads it...
        repo.keys.lock().unwrap()[0] = (
            2,
            ApiKey {
                name: "renamed".into(),
                ..key.clone()
            },
        );
        let slow = tokio::spawn({
            let ring = Arc::clone(&ring);
            async move { ring.refresh().await.unwrap() }
        });
        repo.snapshot_taken.notified().await;
        // ...the key is revoked, and another refresh starts meanwhile.
        repo.keys.lock().unwrap()[0] = (
            3,
            ApiKey {
                revoke_time: Some(Timestamp::now()),
                ..key.clone()
            },
        );
        let fast = tokio::spawn({
            let ring = Arc::clone(&ring);
            async move { ring.refresh().await.unwrap() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        repo.gate.notify_one();
        slow.await.unwrap();
        fast.await.unwrap();
        assert_eq!(
            ring.authenticate(&made.token(), Timestamp::now()).unwrap_err(),
            AuthError::Revoked
        );
    }
}
