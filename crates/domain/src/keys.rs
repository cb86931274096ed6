//! Managing API keys: making one (its token shown once), listing and
//! revoking them, and the first operator key of an installation.

use uuid::Uuid;

use crate::access::{Action, Caller, KeyGrant, Scopes, TenantScope};
use crate::apikey::{ApiKey, NewApiKey, PREFIX, PresentedKey, SecretHash};
use crate::directory::{Directory, Page};
use crate::error::{DomainError, FieldViolation, ResourceKind};
use crate::list::{SortKey, page_size};
use crate::repo::{ApiKeyRepository, TenantRepository, UserRepository};
use crate::tenant::TenantId;
use crate::text::{Timestamp, check_text};

/// The prefix of an operator key given by its hash (`udkh_<id>_<sha256>`),
/// for a deployment that keeps the token itself out of its configuration.
pub const HASH_PREFIX: &str = "udkh_";

/// What a new key is to be.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    /// A name for people, 1 to 100 characters.
    pub display_name: String,
    /// `tenants/{id}`, or empty for an operator's key (every tenant).
    pub tenant: String,
    pub scopes: Scopes,
    pub act_as_users: bool,
    pub expire_time: Option<Timestamp>,
}

/// A key just made, and its token: the only time the token is seen.
pub struct CreatedKey {
    pub key: ApiKey,
    pub token: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("token", &"***")
            .finish()
    }
}

/// The operator key a deployment configures: the token itself, or its id
/// and hash (`udkh_...`, so a Secret need not hold the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfiguredKey {
    pub id: Uuid,
    pub hash: SecretHash,
}

impl ConfiguredKey {
    /// Reads `udk_...` (a token) or `udkh_<32 hex id>_<64 hex SHA-256>`.
    /// The error names the form expected and never echoes the value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix(HASH_PREFIX) {
            let parsed = rest.split_once('_').and_then(|(id, hash)| {
                let id = (id.len() == 32).then(|| Uuid::try_parse(id).ok()).flatten()?;
                Some(Self {
                    id,
                    hash: SecretHash::from_hex(hash)?,
                })
            });
            return parsed.ok_or_else(|| {
                "an operator key hash is udkh_<32 hex digits>_<64 hex digits>, as `userdir keys generate` prints it"
                    .to_owned()
            });
        }
        if text.starts_with(PREFIX) {
            let key = PresentedKey::parse(text).map_err(|e| format!("the operator key is not a valid key: {e}"))?;
            return Ok(Self {
                id: key.id,
                hash: key.hash,
            });
        }
        Err("the operator key is neither a key (udk_...) nor a key's hash (udkh_...)".to_owned())
    }

    /// The `udkh_` form of a new key.
    pub fn hash_form(key: &NewApiKey) -> String {
        format!("{HASH_PREFIX}{}_{}", key.id.simple(), key.hash().to_hex())
    }
}

/// What start-up found or did about the operator key.
#[derive(Debug)]
pub enum Bootstrap {
    /// The configured key is stored (`created`: just now).
    Configured { id: Uuid, created: bool },
    /// The configured key was revoked: it opens nothing.
    ConfiguredRevoked { id: Uuid },
    /// None configured, and a live operator key exists.
    Present,
    /// None configured and none live: a new one, to show once.
    Generated(CreatedKey),
}

const KEYS_SCOPE: &str = "apiKeys";

/// `apiKeys/{32 hex}`: the same id as in the key's token.
pub fn key_resource_name(id: Uuid) -> String {
    format!("apiKeys/{}", id.simple())
}

fn parse_key_name(field: &str, name: &str) -> Result<Uuid, DomainError> {
    name.strip_prefix("apiKeys/")
        .filter(|id| id.len() == 32)
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or_else(|| DomainError::invalid(field, "must be apiKeys/{id}, the id as 32 hex digits"))
}

fn not_found(id: Uuid) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::ApiKey,
        name: key_resource_name(id),
    }
}

/// Whether `caller` can see `key`: an operator sees every key; a tenant's
/// credential sees its tenant's keys and nothing else (others do not exist).
fn sees(caller: &Caller, key: &ApiKey) -> bool {
    match &caller.tenants {
        TenantScope::All => true,
        TenantScope::One(own) => key.tenant.as_ref() == Some(own),
    }
}

impl<R: TenantRepository + UserRepository + ApiKeyRepository> Directory<R> {
    /// Makes a key; its token is in the result and nowhere else, ever.
    pub async fn create_api_key(&self, caller: &Caller, request: KeyRequest) -> Result<CreatedKey, DomainError> {
        let mut violations = Vec::new();
        let display_name = request.display_name.trim().to_owned();
        if display_name.is_empty() {
            violations.push(FieldViolation::new(
                "api_key.display_name",
                "is required: say what the key is for (ci-import, console)",
            ));
        } else if let Err(v) = check_text("api_key.display_name", &display_name, 100) {
            violations.push(v);
        }
        if request.scopes == Scopes::default() {
            violations.push(FieldViolation::new(
                "api_key.scopes",
                "names no scope: give at least one of READ, WRITE, IMPORT, EXPORT, ADMIN",
            ));
        }
        let now = Timestamp::now();
        if request.expire_time.is_some_and(|t| t <= now) {
            violations.push(FieldViolation::new("api_key.expire_time", "is not in the future"));
        }
        let tenant = if request.tenant.is_empty() {
            None
        } else {
            match TenantId::from_resource_name("api_key.tenant", &request.tenant) {
                Ok(t) => Some(t),
                Err(v) => {
                    violations.push(v);
                    None
                }
            }
        };
        if request.act_as_users && request.tenant.is_empty() {
            violations.push(FieldViolation::new(
                "api_key.act_as_users",
                "is for a tenant's key: an operator's key acts for nobody",
            ));
        }
        if !violations.is_empty() {
            return Err(DomainError::Invalid(violations));
        }
        let grant = KeyGrant {
            scopes: request.scopes,
            act_as_users: request.act_as_users,
            all_tenants: tenant.is_none(),
        };
        let action = Action::CreateApiKey(&grant);
        crate::access::decide(caller, tenant.as_ref(), action, None)
            .map_err(|d| d.into_error(tenant.as_ref(), action))?;
        if let Some(tenant) = &tenant {
            self.repo().get_tenant(tenant).await?;
        }
        let new =
            NewApiKey::generate().map_err(|e| DomainError::storage(format!("no random bytes from the system: {e}")))?;
        let key = ApiKey {
            id: new.id,
            name: display_name,
            tenant,
            scopes: request.scopes,
            act_as_users: request.act_as_users,
            creator: caller.principal.clone(),
            create_time: now,
            expire_time: request.expire_time,
            last_used_time: None,
            revoke_time: None,
            hash: new.hash(),
        };
        self.repo().insert_api_key(&key).await?;
        Ok(CreatedKey {
            key,
            token: new.token(),
        })
    }

    /// The keys the caller may see, oldest first; `tenant` (`tenants/{id}`)
    /// narrows an operator's list to one tenant's keys.
    pub async fn list_api_keys(
        &self,
        caller: &Caller,
        tenant: &str,
        show_revoked: bool,
        requested_size: i32,
        page_token: &str,
    ) -> Result<Page<ApiKey>, DomainError> {
        let only = if tenant.is_empty() {
            None
        } else {
            Some(TenantId::from_resource_name("tenant", tenant).map_err(|v| DomainError::Invalid(vec![v]))?)
        };
        let within = only.as_ref().or(match &caller.tenants {
            TenantScope::One(own) => Some(own),
            TenantScope::All => None,
        });
        crate::access::decide(caller, within, Action::ListApiKeys, None)
            .map_err(|d| d.into_error(within, Action::ListApiKeys))?;
        let limit = page_size(requested_size)? as usize;
        let after = if page_token.is_empty() {
            None
        } else {
            let key = self.tokens().decode(KEYS_SCOPE, page_token)?;
            Some(Uuid::try_parse(&key.id).map_err(|_| DomainError::invalid("page_token", "is damaged"))?)
        };
        let mut items: Vec<ApiKey> = self
            .repo()
            .list_api_keys()
            .await?
            .into_iter()
            .filter(|k| sees(caller, k))
            .filter(|k| only.is_none() || k.tenant == only)
            .filter(|k| show_revoked || k.revoke_time.is_none())
            .filter(|k| after.is_none_or(|after| k.id > after))
            .collect();
        items.sort_by_key(|k| k.id);
        let next_page_token = if items.len() > limit {
            items.truncate(limit);
            items.last().map_or_else(String::new, |k| {
                self.tokens().encode(
                    KEYS_SCOPE,
                    SortKey {
                        text: None,
                        int: None,
                        id: k.id.to_string(),
                    },
                )
            })
        } else {
            String::new()
        };
        Ok(Page { items, next_page_token })
    }

    /// One key the caller may see.
    pub async fn get_api_key(&self, caller: &Caller, name: &str) -> Result<ApiKey, DomainError> {
        let id = parse_key_name("name", name)?;
        let key = self.visible_key(caller, id).await?;
        crate::access::decide(caller, key.tenant.as_ref(), Action::ListApiKeys, None)
            .map_err(|d| d.into_error(key.tenant.as_ref(), Action::ListApiKeys))?;
        Ok(key)
    }

    /// Revokes a key at once (every replica within one key refresh). A
    /// revoked key stays listed, with its revoke time; revoking it again
    /// changes nothing. The last live operator key is not revoked: that
    /// would lock every operator out.
    pub async fn revoke_api_key(&self, caller: &Caller, name: &str) -> Result<ApiKey, DomainError> {
        let id = parse_key_name("name", name)?;
        let key = self.visible_key(caller, id).await?;
        crate::access::decide(caller, key.tenant.as_ref(), Action::RevokeApiKey, None)
            .map_err(|d| d.into_error(key.tenant.as_ref(), Action::RevokeApiKey))?;
        if key.revoke_time.is_some() {
            return Ok(key);
        }
        let now = Timestamp::now();
        if key.tenant.is_none() {
            let others = self
                .repo()
                .list_api_keys()
                .await?
                .into_iter()
                .filter(|k| k.tenant.is_none() && k.id != key.id && k.live_at(now))
                .count();
            if others == 0 {
                return Err(DomainError::Precondition {
                    reason: "LAST_OPERATOR_KEY",
                    message: format!(
                        "{} is the last live operator key: create another operator key first, then revoke this one",
                        key_resource_name(id)
                    ),
                });
            }
        }
        self.repo().revoke_api_key(id, now).await?;
        self.visible_key(caller, id).await
    }

    async fn visible_key(&self, caller: &Caller, id: Uuid) -> Result<ApiKey, DomainError> {
        self.repo()
            .list_api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id && sees(caller, k))
            .ok_or_else(|| not_found(id))
    }

    /// Whether a live operator key is stored.
    pub async fn has_live_operator_key(&self) -> Result<bool, DomainError> {
        let now = Timestamp::now();
        Ok(self
            .repo()
            .list_api_keys()
            .await?
            .iter()
            .any(|k| k.tenant.is_none() && k.live_at(now)))
    }

    /// Makes sure an operator can get in: stores the configured operator key
    /// (every tenant, every scope) if it is not stored yet, or, with none
    /// configured and no live operator key, generates one for the caller to
    /// show once. A configured key whose id is stored with another secret is
    /// refused: the configuration and the database disagree.
    pub async fn bootstrap_operator_key(&self, configured: Option<ConfiguredKey>) -> Result<Bootstrap, DomainError> {
        let now = Timestamp::now();
        let operator_key = |id: Uuid, hash: SecretHash, creator: &str| ApiKey {
            id,
            name: "operator".to_owned(),
            tenant: None,
            scopes: Scopes::ALL,
            act_as_users: false,
            creator: creator.to_owned(),
            create_time: now,
            expire_time: None,
            last_used_time: None,
            revoke_time: None,
            hash,
        };
        let keys = self.repo().list_api_keys().await?;
        let Some(configured) = configured else {
            if keys.iter().any(|k| k.tenant.is_none() && k.live_at(now)) {
                return Ok(Bootstrap::Present);
            }
            let new = NewApiKey::generate()
                .map_err(|e| DomainError::storage(format!("no random bytes from the system: {e}")))?;
            let key = operator_key(new.id, new.hash(), "first start");
            self.repo().insert_api_key(&key).await?;
            return Ok(Bootstrap::Generated(CreatedKey {
                key,
                token: new.token(),
            }));
        };
        let stored = match keys.into_iter().find(|k| k.id == configured.id) {
            Some(stored) => stored,
            None => {
                let key = operator_key(configured.id, configured.hash, "configuration");
                match self.repo().insert_api_key(&key).await {
                    Ok(()) => {
                        return Ok(Bootstrap::Configured {
                            id: configured.id,
                            created: true,
                        });
                    }
                    // Another replica stored it first: check it as stored.
                    Err(DomainError::AlreadyExists { .. }) => self
                        .repo()
                        .list_api_keys()
                        .await?
                        .into_iter()
                        .find(|k| k.id == configured.id)
                        .ok_or_else(|| not_found(configured.id))?,
                    Err(e) => return Err(e),
                }
            }
        };
        if !stored.hash.matches(&configured.hash) || stored.tenant.is_some() {
            return Err(DomainError::Precondition {
                reason: "OPERATOR_KEY_MISMATCH",
                message: format!(
                    "the configured operator key names {}, which the database holds with another secret or for one \
                     tenant: configure that key's own token, or a new key's",
                    key_resource_name(configured.id)
                ),
            });
        }
        if stored.revoke_time.is_some() {
            return Ok(Bootstrap::ConfiguredRevoked { id: stored.id });
        }
        Ok(Bootstrap::Configured {
            id: stored.id,
            created: false,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn configured_keys_by_token_or_hash() {
        let new = NewApiKey::generate().unwrap();
        let by_token = ConfiguredKey::parse(&format!("  {}\n", new.token())).unwrap();
        let by_hash = ConfiguredKey::parse(&ConfiguredKey::hash_form(&new)).unwrap();
        assert_eq!(by_token, by_hash);
        assert_eq!(by_token.id, new.id);
        assert!(by_token.hash.matches(&new.hash()));
        for bad in ["", "secret", "udkh_00_11", "udk_short"] {
            let err = ConfiguredKey::parse(bad).unwrap_err();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
        let token = new.token();
        let err = ConfiguredKey::parse(&token[..token.len() - 2]).unwrap_err();
        assert!(!err.contains(&token[4..20]), "never echoes the key: {err}");
    }

    #[test]
    fn key_names() {
        let id = Uuid::now_v7();
        assert_eq!(parse_key_name("name", &key_resource_name(id)).unwrap(), id);
        assert!(parse_key_name("name", "apiKeys/xyz").is_err());
        assert!(parse_key_name("name", &format!("keys/{}", id.simple())).is_err());
    }
}
