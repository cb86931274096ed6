//! The directory's operations: each RPC calls exactly one of these.

use std::sync::Arc;

use crate::access::{self, Action, Caller, Target, TenantScope};
use crate::admission::{Admission, StreamKind, StreamLimits};
use crate::error::{DomainError, ResourceKind};
use crate::import::engine::Importer;
use crate::import::{ImportJob, ImportLimits, ImportOptions};
use crate::list::{SortKey, UserQuery, page_size, sort_key};
use crate::page_token::PageTokens;
use crate::repo::{ImportRepository, TenantRepository, UserKey, UserRepository};
use crate::tenant::{Tenant, TenantId, TenantMask, TenantSettings};
use crate::text::{Revision, Timestamp};
use crate::user::{User, UserInput, UserMask, UserName};

/// A page of results and the token of the next one (empty on the last page).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// Entry point of the domain, generic over the store.
pub struct Directory<R> {
    repo: Arc<R>,
    import_limits: ImportLimits,
    tokens: PageTokens,
    admission: Admission,
    /// Live API keys a tenant (or the operators) may hold at once.
    key_quota: u32,
}

impl<R> Clone for Directory<R> {
    fn clone(&self) -> Self {
        Self {
            repo: Arc::clone(&self.repo),
            import_limits: self.import_limits,
            tokens: self.tokens.clone(),
            admission: self.admission.clone(),
            key_quota: self.key_quota,
        }
    }
}

fn check_etag(etag: &str, current: Revision, kind: ResourceKind, name: String) -> Result<(), DomainError> {
    if etag.is_empty() || Revision::from_etag(etag) == Some(current) {
        Ok(())
    } else {
        Err(DomainError::EtagMismatch { kind, name })
    }
}

fn invalid<T>(r: Result<T, crate::error::FieldViolation>) -> Result<T, DomainError> {
    r.map_err(|v| DomainError::Invalid(vec![v]))
}

/// [`access::reaches`] as the error the caller gets.
pub(crate) fn reach(caller: &Caller, tenant: Option<&TenantId>, action: Action<'_>) -> Result<(), DomainError> {
    access::reaches(caller, tenant, action).map_err(|d| d.into_error(tenant, action))
}

/// [`access::decide`] as the error the caller gets.
pub(crate) fn allow(
    caller: &Caller,
    tenant: &TenantId,
    action: Action<'_>,
    target: Option<&User>,
) -> Result<(), DomainError> {
    access::decide(caller, Some(tenant), action, target.map(Target::of)).map_err(|d| d.into_error(Some(tenant), action))
}

/// A user as the permission rules see them.
impl<R: TenantRepository + UserRepository> Directory<R> {
    pub fn new(repo: Arc<R>) -> Self {
        Self {
            repo,
            import_limits: ImportLimits::default(),
            tokens: PageTokens::random(),
            admission: Admission::default(),
            key_quota: crate::keys::DEFAULT_KEY_QUOTA,
        }
    }

    /// Caps the imports and exports that run at once (by default
    /// [`StreamLimits::default`]).
    pub fn with_stream_limits(mut self, limits: StreamLimits) -> Self {
        self.admission = Admission::new(limits);
        self
    }

    /// Seals page tokens with `tokens` (the key every replica shares; by
    /// default a random key, good in this process only).
    pub fn with_page_tokens(mut self, tokens: PageTokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// The limits every import runs under.
    pub fn import_limits(&self) -> ImportLimits {
        self.import_limits
    }

    /// Sets the limits every import runs under.
    /// At most `quota` live API keys per tenant (and for operators).
    pub fn with_key_quota(mut self, quota: u32) -> Self {
        self.key_quota = quota;
        self
    }

    pub(crate) fn key_quota(&self) -> u32 {
        self.key_quota
    }

    pub fn with_import_limits(mut self, limits: ImportLimits) -> Self {
        self.import_limits = limits;
        self
    }

    pub fn repo(&self) -> &Arc<R> {
        &self.repo
    }

    /// The sealer of this directory's page tokens.
    pub(crate) fn tokens(&self) -> &PageTokens {
        &self.tokens
    }

    // ---- tenants ----

    pub async fn create_tenant(
        &self,
        caller: &Caller,
        tenant_id: &str,
        settings: TenantSettings,
        initial_owner: Option<UserInput>,
    ) -> Result<Tenant, DomainError> {
        reach(caller, None, Action::CreateTenant)?;
        let id = invalid(TenantId::parse("tenant_id", tenant_id))?;
        let now = Timestamp::now();
        let tenant = Tenant::create(id.clone(), settings, now)?;
        // The owner is checked against the new tenant's schema before anything is stored.
        let owner = match initial_owner {
            None => None,
            Some(input) => {
                let mut owner = User::create(id, input, &tenant.custom_attributes, now).map_err(|e| match e {
                    DomainError::Invalid(violations) => DomainError::Invalid(
                        violations
                            .into_iter()
                            .map(|mut v| {
                                v.field = format!("initial_owner.{}", v.field);
                                v
                            })
                            .collect(),
                    ),
                    e => e,
                })?;
                owner.role = crate::access::TenantRole::Owner;
                Some(owner)
            }
        };
        self.repo.insert_tenant(&tenant).await?;
        match owner {
            None => Ok(tenant),
            Some(owner) => {
                self.repo.insert_user(&owner).await?;
                self.repo.get_tenant(&tenant.id).await
            }
        }
    }

    pub async fn get_tenant(&self, caller: &Caller, name: &str) -> Result<Tenant, DomainError> {
        let id = invalid(TenantId::from_resource_name("name", name))?;
        allow(caller, &id, Action::GetTenant, None)?;
        self.repo.get_tenant(&id).await
    }

    /// Every tenant for an operator; a tenant's own credential sees its tenant.
    pub async fn list_tenants(
        &self,
        caller: &Caller,
        requested_size: i32,
        page_token: &str,
    ) -> Result<Page<Tenant>, DomainError> {
        const SCOPE: &str = "tenants";
        let limit = page_size(requested_size)?;
        let after = if page_token.is_empty() {
            None
        } else {
            Some(self.tokens.decode(SCOPE, page_token)?.id)
        };
        if let TenantScope::One(own) = &caller.tenants {
            allow(caller, own, Action::GetTenant, None)?;
            let items = match after {
                None => vec![self.repo.get_tenant(own).await?],
                Some(_) => Vec::new(),
            };
            return Ok(Page {
                items,
                next_page_token: String::new(),
            });
        }
        reach(caller, None, Action::GetTenant)?;
        let mut items = self.repo.list_tenants(after.as_deref(), limit + 1).await?;
        let next_page_token = next_token(&mut items, limit, |t| {
            self.tokens.encode(
                SCOPE,
                SortKey {
                    text: None,
                    int: None,
                    id: t.id.as_str().to_owned(),
                },
            )
        });
        Ok(Page { items, next_page_token })
    }

    pub async fn update_tenant(
        &self,
        caller: &Caller,
        name: &str,
        settings: TenantSettings,
        mask_paths: &[String],
        etag: &str,
    ) -> Result<Tenant, DomainError> {
        let id = invalid(TenantId::from_resource_name("tenant.name", name))?;
        allow(caller, &id, Action::UpdateTenant, None)?;
        let mask = TenantMask::parse(mask_paths, &settings)?;
        let mut tenant = self.repo.get_tenant(&id).await?;
        let expected = tenant.revision;
        check_etag(etag, expected, ResourceKind::Tenant, name.to_owned())?;
        tenant.apply(settings, mask, Timestamp::now())?;
        tenant.revision = expected.next();
        self.repo.update_tenant(&tenant, expected).await?;
        Ok(tenant)
    }

    // ---- users ----

    /// Creates a user; with `validate_only` runs every check (rules, schema,
    /// uniqueness, seats) and returns the would-be user without writing it.
    pub async fn create_user(
        &self,
        caller: &Caller,
        parent: &str,
        input: UserInput,
        validate_only: bool,
    ) -> Result<User, DomainError> {
        let tenant_id = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant_id, Action::CreateUser, None)?;
        let tenant = self.repo.get_tenant(&tenant_id).await?;
        let user = User::create(tenant_id, input, &tenant.custom_attributes, Timestamp::now())?;
        if validate_only {
            self.check_unique(&user).await?;
            if tenant.seat_limit != 0 && tenant.user_count >= tenant.seat_limit {
                return Err(DomainError::SeatLimitExceeded {
                    tenant: tenant.id.to_string(),
                    limit: tenant.seat_limit,
                });
            }
            return Ok(user);
        }
        self.repo.insert_user(&user).await?;
        Ok(user)
    }

    async fn check_unique(&self, user: &User) -> Result<(), DomainError> {
        let taken = |field: &'static str, value: &str| DomainError::AlreadyExists {
            kind: ResourceKind::User,
            field,
            value: value.to_owned(),
        };
        match self
            .repo
            .find_user(&user.tenant, &UserKey::EmailKey(user.email.key().to_owned()))
            .await
        {
            Ok(other) if other.id != user.id => return Err(taken("email", user.email.as_str())),
            Ok(_) | Err(DomainError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if let Some(ext) = &user.external_id {
            match self
                .repo
                .find_user(&user.tenant, &UserKey::ExternalId(ext.clone()))
                .await
            {
                Ok(other) if other.id != user.id => return Err(taken("external_id", ext)),
                Ok(_) | Err(DomainError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn get_user(&self, caller: &Caller, name: &str) -> Result<User, DomainError> {
        let name = invalid(UserName::parse("name", name))?;
        reach(caller, Some(&name.tenant), Action::GetUser)?;
        let user = self.repo.get_user(&name).await?;
        allow(caller, &name.tenant, Action::GetUser, Some(&user))?;
        Ok(user)
    }

    /// Applies a partial update. A write that changes nothing leaves the user,
    /// its `update_time` and its etag untouched. Without an etag the caller
    /// asked for no concurrency check: when another write lands between the
    /// read and the write, the update is applied again to the new state
    /// (its mask names the only fields it writes), so neither is lost.
    pub async fn update_user(
        &self,
        caller: &Caller,
        name: &str,
        input: UserInput,
        mask_paths: &[String],
        etag: &str,
    ) -> Result<User, DomainError> {
        /// Attempts before giving up under a storm of writes to one user.
        const ATTEMPTS: usize = 20;
        let name = invalid(UserName::parse("user.name", name))?;
        let mask = UserMask::parse(mask_paths, &input)?;
        let action = Action::UpdateUser(&mask);
        reach(caller, Some(&name.tenant), action)?;
        let tenant = self.repo.get_tenant(&name.tenant).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut user = self.repo.get_user(&name).await?;
            allow(caller, &name.tenant, action, Some(&user))?;
            let expected = user.revision;
            check_etag(etag, expected, ResourceKind::User, name.to_string())?;
            let administered = user.administers();
            if !user.apply(input.clone(), &mask, &tenant.custom_attributes)? {
                return Ok(user);
            }
            // Disabling an admin must leave the tenant another.
            let keep_an_admin = administered && !user.administers();
            user.update_time = Timestamp::now();
            user.revision = expected.next();
            match self.repo.update_user(&user, expected, keep_an_admin).await {
                Err(DomainError::EtagMismatch { .. }) if etag.is_empty() && attempt < ATTEMPTS => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(user),
            }
        }
    }

    pub async fn delete_user(&self, caller: &Caller, name: &str, etag: &str) -> Result<(), DomainError> {
        let parsed = invalid(UserName::parse("name", name))?;
        reach(caller, Some(&parsed.tenant), Action::DeleteUser)?;
        let user = self.repo.get_user(&parsed).await?;
        allow(caller, &parsed.tenant, Action::DeleteUser, Some(&user))?;
        let expected = if etag.is_empty() {
            None
        } else {
            match Revision::from_etag(etag) {
                Some(r) => Some(r),
                None => {
                    return Err(DomainError::EtagMismatch {
                        kind: ResourceKind::User,
                        name: name.to_owned(),
                    });
                }
            }
        };
        self.repo.delete_user(&parsed, expected, user.administers()).await
    }

    pub async fn list_users(
        &self,
        caller: &Caller,
        parent: &str,
        filter: &str,
        order_by: &str,
        requested_size: i32,
        page_token: &str,
    ) -> Result<Page<User>, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::ListUsers, None)?;
        let query = UserQuery::parse(
            tenant.as_str(),
            filter,
            order_by,
            requested_size,
            page_token,
            &self.tokens,
        )?;
        // NOT_FOUND for an unknown tenant rather than an empty page.
        self.repo.get_tenant(&tenant).await?;
        let mut items = self.repo.list_users(&tenant, &query, query.limit + 1).await?;
        let next_page_token = next_token(&mut items, query.limit, |u| {
            self.tokens.encode(&query.scope, sort_key(u, query.order.field))
        });
        Ok(Page { items, next_page_token })
    }

    pub async fn lookup_user(&self, caller: &Caller, parent: &str, key: UserKey) -> Result<User, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        reach(caller, Some(&tenant), Action::GetUser)?;
        let key = match key {
            // An address no user can have (a look-alike that mixes scripts,
            // say) is a bad request, not a user that is not there.
            UserKey::EmailKey(email) => {
                UserKey::EmailKey(invalid(crate::email::Email::parse("email", &email))?.key().to_owned())
            }
            other => other,
        };
        let user = self.repo.find_user(&tenant, &key).await?;
        allow(caller, &tenant, Action::GetUser, Some(&user))?;
        Ok(user)
    }
}

/// Trims a fetched `limit + 1` rows to `limit` and builds the next token if
/// there was an extra row.
fn next_token<T>(items: &mut Vec<T>, limit: u32, token: impl Fn(&T) -> String) -> String {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

impl<R: TenantRepository + UserRepository + ImportRepository> Directory<R> {
    /// Starts an import into `parent` (`tenants/{id}`); its job records the
    /// caller as its actor.
    pub async fn start_import(
        &self,
        caller: &Caller,
        parent: &str,
        options: ImportOptions,
    ) -> Result<Importer<R>, DomainError> {
        let tenant_id = invalid(TenantId::from_resource_name("options.parent", parent))?;
        allow(caller, &tenant_id, Action::ImportUsers, None)?;
        let tenant = self.repo.get_tenant(&tenant_id).await?;
        let slot = self.admission.admit(StreamKind::Import, &tenant_id)?;
        let caller = caller.clone();
        Importer::start(
            Arc::clone(&self.repo),
            tenant,
            options,
            caller,
            self.import_limits,
            slot,
        )
        .await
    }

    /// Marks the RUNNING import jobs whose server stopped (their heartbeat
    /// is older than `lease`) as INTERRUPTED; returns how many. Every replica
    /// runs this now and then with the job lease; a server on a SQLite file,
    /// the only one that can use it, runs it with a zero lease once at start.
    pub async fn interrupt_stale_imports(&self, lease: std::time::Duration) -> Result<u64, DomainError> {
        let stale_before = Timestamp::from_unix_micros(
            Timestamp::now()
                .unix_micros()
                .saturating_sub(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX)),
        );
        let why = "the server running this import stopped before it finished (killed, crashed, or cut off from \
                   the database); the rows it reported stay";
        self.repo.interrupt_import_jobs(stale_before, None, why).await
    }

    pub async fn get_import_job(&self, caller: &Caller, name: &str) -> Result<ImportJob, DomainError> {
        let (tenant, id) = invalid(ImportJob::parse_name("name", name))?;
        allow(caller, &tenant, Action::GetImportJobs, None)?;
        self.repo.get_import_job(&tenant, id).await
    }

    /// The import history of a tenant, newest first.
    pub async fn list_import_jobs(
        &self,
        caller: &Caller,
        parent: &str,
        requested_size: i32,
        page_token: &str,
    ) -> Result<Page<ImportJob>, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::GetImportJobs, None)?;
        let limit = page_size(requested_size)?;
        let scope = format!("{}/importJobs", tenant.resource_name());
        let before = if page_token.is_empty() {
            None
        } else {
            let key = self.tokens.decode(&scope, page_token)?;
            Some(uuid::Uuid::parse_str(&key.id).map_err(|_| DomainError::invalid("page_token", "is damaged"))?)
        };
        self.repo.get_tenant(&tenant).await?;
        let mut items = self.repo.list_import_jobs(&tenant, before, limit + 1).await?;
        let next_page_token = next_token(&mut items, limit, |j| {
            self.tokens.encode(
                &scope,
                SortKey {
                    text: None,
                    int: None,
                    id: j.id.to_string(),
                },
            )
        });
        Ok(Page { items, next_page_token })
    }
}

impl<R: TenantRepository + UserRepository + crate::repo::SnapshotRepository> Directory<R> {
    /// Starts an export of `parent`'s users matching `filter`, in `order_by`,
    /// over one snapshot taken now.
    pub async fn start_export(
        &self,
        caller: &Caller,
        parent: &str,
        filter: &str,
        order_by: &str,
    ) -> Result<crate::export::Exporter<R::Snapshot>, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::ExportUsers, None)?;
        let query = UserQuery::parse(tenant.as_str(), filter, order_by, 0, "", &self.tokens)?;
        self.repo.get_tenant(&tenant).await?;
        let slot = self.admission.admit(StreamKind::Export, &tenant)?;
        let snapshot = self.repo.snapshot().await?;
        Ok(crate::export::Exporter::new(snapshot, tenant, query, slot))
    }
}
