//! Managing API keys: making one (its token shown once), listing and
//! revoking them, and the first operator key of an installation.

use crate::event::Origin;
use uuid::Uuid;

use crate::access::{Action, Caller, KeyGrant, Scopes, Target, TenantRole, TenantScope};
use crate::apikey::{ApiKey, NewApiKey, PREFIX, PresentedKey, SecretHash};
use crate::directory::{Directory, Page, reach};
use crate::error::{DomainError, FieldViolation, ResourceKind};
use crate::list::{SortKey, page_size};
use crate::repo::{ApiKeyRepository, KeyQuery, Revoked, TenantRepository, UserRepository};
use crate::tenant::TenantId;
use crate::text::{Timestamp, check_text};
use crate::user::UserName;

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
    /// None: the maker's own expiry (none if it has none).
    pub expire_time: Option<Timestamp>,
    /// `tenants/{t}/users/{id}`: the user every call with the key acts for.
    /// Empty: the user the caller acts for, if any (a key made while acting
    /// is always bound to that user).
    pub user: String,
}

/// Live keys a tenant holds at most, unless configured otherwise (and the
/// operators, together): enough for every service and console of a
/// customer, few enough that a runaway script cannot fill the database.
pub const DEFAULT_KEY_QUOTA: u32 = 1_000;

/// The error of a tenant (`None`: the operators) at its key quota.
pub fn quota_exceeded(tenant: Option<&TenantId>, quota: u32) -> DomainError {
    DomainError::Exhausted {
        reason: "API_KEY_QUOTA",
        message: format!(
            "{} already holds {quota} live API keys, the most allowed (--max-api-keys-per-tenant): revoke keys no \
             longer used, then create this one",
            tenant.map_or_else(|| "the installation's operators".to_owned(), TenantId::resource_name)
        ),
    }
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
    Generated(Box<CreatedKey>),
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

/// A bearer token or `udkh_` hash is never a key's name: say so rather than
/// echo it back.
fn no_secret_name(caller_sent: &str) -> Result<(), DomainError> {
    if caller_sent.starts_with(PREFIX) || caller_sent.starts_with(HASH_PREFIX) {
        return Err(DomainError::invalid(
            "name",
            "is a key's token or hash, not its name: name a key as apiKeys/{id} (the id is the token's second part)",
        ));
    }
    Ok(())
}

impl<R: TenantRepository + UserRepository + ApiKeyRepository> Directory<R> {
    /// Makes a key; its token is in the result and nowhere else, ever. The
    /// key never holds more than its maker: not a scope, reach or later
    /// expiry it lacks (no expiry asked: the maker's); made while acting
    /// for a user, it is bound to that user.
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
        if let (Some(asked), Some(limit)) = (request.expire_time, caller.expire_time)
            && asked > limit
        {
            violations.push(FieldViolation::new(
                "api_key.expire_time",
                format!(
                    "is later than the expiry of the key that creates it ({}): a key never outlives its maker; \
                     leave it empty to take the maker's",
                    limit.to_rfc3339()
                ),
            ));
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
        let bound = if request.user.is_empty() {
            None
        } else {
            match UserName::parse("api_key.user", &request.user) {
                Ok(name) if tenant.as_ref() == Some(&name.tenant) => Some(name),
                Ok(_) => {
                    violations.push(FieldViolation::new(
                        "api_key.user",
                        "is not a user of the key's tenant: a key acts only for a user of its own tenant",
                    ));
                    None
                }
                Err(v) => {
                    violations.push(v);
                    None
                }
            }
        };
        if bound.is_some() && request.act_as_users {
            violations.push(FieldViolation::new(
                "api_key.act_as_users",
                "is for keys that name their user per call; a key bound to one user acts for that user alone",
            ));
        }
        if !violations.is_empty() {
            return Err(DomainError::Invalid(violations));
        }
        // Made while acting: bound to the acting user unless it names one
        // (which must be that user: the rules below refuse any other).
        let bound_to = match (&bound, &caller.acting) {
            (Some(name), _) => {
                reach(caller, tenant.as_ref(), Action::ListApiKeys)?;
                Some(Target::of(&self.repo().get_user(name).await?))
            }
            (None, Some(actor)) => Some(Target {
                user: actor.user,
                role: actor.role,
            }),
            (None, None) => None,
        };
        let expire_time = request.expire_time.or(caller.expire_time);
        let grant = KeyGrant {
            scopes: request.scopes,
            act_as_users: request.act_as_users,
            all_tenants: tenant.is_none(),
            expire_time,
            bound_to,
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
            user: bound_to.map(|t| t.user),
            creator: caller.principal.to_string(),
            create_time: now,
            expire_time,
            last_used_time: None,
            revoke_time: None,
            hash: new.hash(),
        };
        self.repo()
            .insert_api_key(&key, self.key_quota(), &Origin::of(caller))
            .await?;
        Ok(CreatedKey {
            key,
            token: new.token(),
        })
    }

    /// The keys the caller may see, by id; `tenant` (`tenants/{id}`)
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
        let query = KeyQuery {
            tenant: within.cloned(),
            show_revoked,
            after,
            limit: limit + 1,
        };
        let mut items = self.repo().list_api_keys(&query).await?;
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
        no_secret_name(name)?;
        let id = parse_key_name("name", name)?;
        let key = self.visible_key(caller, id).await?;
        crate::access::decide(caller, key.tenant.as_ref(), Action::ListApiKeys, None)
            .map_err(|d| d.into_error(key.tenant.as_ref(), Action::ListApiKeys))?;
        Ok(key)
    }

    /// Revokes a key at once (every replica within one key refresh), if
    /// the caller could have made it. A revoked key stays listed, with its
    /// revoke time; revoking it again changes nothing. The last live
    /// operator key with the admin scope is not revoked: that would lock
    /// every operator out (decided under the key lock, so two operators
    /// revoking each other's keys at once cannot both succeed).
    pub async fn revoke_api_key(&self, caller: &Caller, name: &str) -> Result<ApiKey, DomainError> {
        no_secret_name(name)?;
        let id = parse_key_name("name", name)?;
        let key = self.visible_key(caller, id).await?;
        let bound_to = match key.user {
            Some(user) => Some(match &key.tenant {
                Some(tenant) => match self
                    .repo()
                    .get_user(&UserName {
                        tenant: tenant.clone(),
                        id: user,
                    })
                    .await
                {
                    Ok(u) => Target::of(&u),
                    // A gone user's keys: any manager of members may revoke them.
                    Err(DomainError::NotFound { .. }) => Target {
                        user,
                        role: TenantRole::Member,
                    },
                    Err(e) => return Err(e),
                },
                None => Target {
                    user,
                    role: TenantRole::Member,
                },
            }),
            None => None,
        };
        let grant = KeyGrant {
            scopes: key.scopes,
            act_as_users: key.act_as_users,
            all_tenants: key.tenant.is_none(),
            expire_time: key.expire_time,
            bound_to,
        };
        let action = Action::RevokeApiKey(&grant);
        crate::access::decide(caller, key.tenant.as_ref(), action, None)
            .map_err(|d| d.into_error(key.tenant.as_ref(), action))?;
        if key.revoke_time.is_some() {
            return Ok(key);
        }
        match self
            .repo()
            .revoke_api_key(id, Timestamp::now(), &Origin::of(caller))
            .await?
        {
            Revoked::Now | Revoked::Unchanged => self.visible_key(caller, id).await,
            Revoked::LastOperatorKey => Err(DomainError::Precondition {
                reason: "LAST_OPERATOR_KEY",
                message: format!(
                    "{} is the last live operator key with the admin scope: create another such key first, then \
                     revoke this one",
                    key_resource_name(id)
                ),
            }),
        }
    }

    async fn visible_key(&self, caller: &Caller, id: Uuid) -> Result<ApiKey, DomainError> {
        self.repo()
            .get_api_key(id)
            .await?
            .filter(|k| sees(caller, k))
            .ok_or_else(|| not_found(id))
    }

    /// Whether a live operator key with the admin scope is stored: one that
    /// can administer the installation.
    pub async fn has_live_operator_key(&self) -> Result<bool, DomainError> {
        self.repo().has_operator_admin_key(Timestamp::now()).await
    }

    /// Makes sure an operator can get in: stores the configured operator key
    /// (every tenant, every scope) if it is not stored yet, or, with none
    /// configured and no live operator key with the admin scope, generates
    /// one for the caller to show once. A configured key whose id is stored
    /// with another secret is refused: the configuration and the database
    /// disagree.
    pub async fn bootstrap_operator_key(&self, configured: Option<ConfiguredKey>) -> Result<Bootstrap, DomainError> {
        let now = Timestamp::now();
        let operator_key = |id: Uuid, hash: SecretHash, creator: &str| ApiKey {
            id,
            name: "operator".to_owned(),
            tenant: None,
            scopes: Scopes::ALL,
            act_as_users: false,
            user: None,
            creator: creator.to_owned(),
            create_time: now,
            expire_time: None,
            last_used_time: None,
            revoke_time: None,
            hash,
        };
        // The installation's own key is never refused for the quota.
        let quota = u32::MAX;
        let Some(configured) = configured else {
            if self.repo().has_operator_admin_key(now).await? {
                return Ok(Bootstrap::Present);
            }
            let new = NewApiKey::generate()
                .map_err(|e| DomainError::storage(format!("no random bytes from the system: {e}")))?;
            let key = operator_key(new.id, new.hash(), "first start");
            self.repo().insert_api_key(&key, quota, &Origin::server()).await?;
            return Ok(Bootstrap::Generated(Box::new(CreatedKey {
                key,
                token: new.token(),
            })));
        };
        let stored = match self.repo().get_api_key(configured.id).await? {
            Some(stored) => stored,
            None => {
                let key = operator_key(configured.id, configured.hash, "configuration");
                match self.repo().insert_api_key(&key, quota, &Origin::server()).await {
                    Ok(()) => {
                        return Ok(Bootstrap::Configured {
                            id: configured.id,
                            created: true,
                        });
                    }
                    // Another replica stored it first: check it as stored.
                    Err(DomainError::AlreadyExists { .. }) => self
                        .repo()
                        .get_api_key(configured.id)
                        .await?
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
