//! Tenants: create, read, list, change settings.

use super::directory::{Directory, Page, allow, check_etag, invalid, next_token, reach};
use crate::access::{Action, Caller, TenantScope};
use crate::error::{DomainError, ResourceKind};
use crate::event::{Origin, changed_tenant_paths};
use crate::list::{SortKey, page_size};
use crate::repo::{TenantRepository, UserRepository};
use crate::tenant::{Tenant, TenantId, TenantMask, TenantSettings};
use crate::text::Timestamp;
use crate::user::{User, UserInput};

impl<R: TenantRepository + UserRepository> Directory<R> {
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
        let origin = Origin::of(caller);
        self.repo.insert_tenant(&tenant, &origin).await?;
        match owner {
            None => Ok(tenant),
            Some(owner) => {
                self.repo.insert_user(&owner, &origin).await?;
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
        let before = tenant.clone();
        let expected = tenant.revision;
        check_etag(etag, expected, ResourceKind::Tenant, name.to_owned())?;
        tenant.apply(settings, mask, Timestamp::now())?;
        tenant.revision = expected.next();
        let paths = changed_tenant_paths(&before, &tenant);
        self.repo
            .update_tenant(&tenant, expected, paths, &Origin::of(caller))
            .await?;
        Ok(tenant)
    }
}
