//! Users one at a time: create, read, update, delete, list, look up.

use super::directory::{Directory, Page, allow, check_etag, invalid, next_token, reach};
use crate::access::{Action, Caller};
use crate::error::{DomainError, ResourceKind};
use crate::event::{EventType, Origin, changed_user_paths};
use crate::list::{UserQuery, sort_key};
use crate::repo::{TenantRepository, UserKey, UserRepository, UserUpdate};
use crate::tenant::TenantId;
use crate::text::{Revision, Timestamp};
use crate::user::{User, UserInput, UserMask, UserName};

impl<R: TenantRepository + UserRepository> Directory<R> {
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
        self.repo.insert_user(&user, &Origin::of(caller)).await?;
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
            let before = user.clone();
            if !user.apply(input.clone(), &mask, &tenant.custom_attributes)? {
                return Ok(user);
            }
            // Disabling an admin must leave the tenant another.
            let keep_an_admin = administered && !user.administers();
            user.update_time = Timestamp::now();
            user.revision = expected.next();
            let update = UserUpdate {
                user: &user,
                expected,
                keep_an_admin,
                kind: EventType::UserUpdated,
                paths: changed_user_paths(&before, &user),
                origin: &Origin::of(caller),
            };
            match self.repo.update_user(update).await {
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
        self.repo
            .delete_user(&parsed, expected, user.administers(), &Origin::of(caller))
            .await
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
