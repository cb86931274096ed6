//! Acting for a user: which user a call acts for (named in a request by a
//! key that may act for users, or the user a key is bound to), checked and
//! taken as read for a while. A server reads each acting user at most once
//! per `ttl` (its key refresh): a user disabled, demoted or deleted on any
//! replica stops acting so within it, as a revoked key stops working.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access::{ActingUser, Caller, TenantScope};
use crate::error::DomainError;
use crate::repo::UserRepository;
use crate::user::{UserId, UserName};

/// Acting users remembered at most; past it the stale ones go, then all.
const KEPT: usize = 10_000;

/// The acting users a server read lately, by resource name.
pub struct ActingUsers<R> {
    repo: Arc<R>,
    ttl: Duration,
    read: Mutex<HashMap<String, (Instant, ActingUser)>>,
}

impl<R: UserRepository> ActingUsers<R> {
    /// Acting users read through `repo`, each taken as read for `ttl`.
    pub fn new(repo: Arc<R>, ttl: Duration) -> Self {
        Self {
            repo,
            ttl,
            read: Mutex::new(HashMap::new()),
        }
    }

    /// How long an acting user is taken as read.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `caller` acting for `name`; `None` when that is not an enabled user
    /// of the caller's own tenant (gone, disabled, another tenant's).
    pub async fn act_for(&self, mut caller: Caller, name: &UserName) -> Result<Option<Caller>, DomainError> {
        if caller.tenants != TenantScope::One(name.tenant.clone()) {
            return Ok(None);
        }
        let key = name.to_string();
        let acting = match self.remembered(&key) {
            Some(acting) => acting,
            None => {
                let user = match self.repo.get_user(name).await {
                    Ok(user) if user.enabled => user,
                    Ok(_) | Err(DomainError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let acting = ActingUser {
                    user: user.id,
                    email: user.email.as_str().to_owned(),
                    role: user.role,
                    capabilities: user.capabilities,
                };
                self.remember(key.clone(), acting.clone());
                acting
            }
        };
        caller.principal.acting_user = Some(key);
        caller.acting = Some(acting);
        Ok(Some(caller))
    }

    /// `caller` acting for `user` of its own tenant, the user its key is
    /// bound to; `None` once that user is disabled or gone.
    pub async fn bound(&self, caller: Caller, user: UserId) -> Result<Option<Caller>, DomainError> {
        let TenantScope::One(tenant) = caller.tenants.clone() else {
            return Ok(None);
        };
        self.act_for(caller, &UserName { tenant, id: user }).await
    }

    /// Whether the user `caller` acts for (if any) still may: for a long
    /// stream that began acting for them.
    pub async fn still_acts(&self, caller: &Caller) -> Result<bool, DomainError> {
        let Some(user) = &caller.principal.acting_user else {
            return Ok(true);
        };
        let name = UserName::parse("acting_user", user)
            .map_err(|_| DomainError::storage("a caller's acting user is not a user's name"))?;
        let again = Caller {
            acting: None,
            ..caller.clone()
        };
        Ok(self.act_for(again, &name).await?.is_some())
    }

    fn remembered(&self, name: &str) -> Option<ActingUser> {
        let read = self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        read.get(name)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, acting)| acting.clone())
    }

    fn remember(&self, name: String, acting: ActingUser) {
        let mut read = self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if read.len() >= KEPT {
            read.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if read.len() >= KEPT {
                read.clear();
            }
        }
        read.insert(name, (Instant::now(), acting));
    }
}
