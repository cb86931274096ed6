//! Roles and capabilities (seeds 003 and 004): making a user an admin or a
//! member, granting a member's capabilities, handing the owner role on, and
//! telling a console which actions the caller may take.

use crate::access::{self, Action, Caller, Capabilities, Target, TenantRole};
use crate::directory::{Directory, allow, reach};
use crate::error::{DomainError, ResourceKind};
use crate::event::{EventType, Origin};
use crate::repo::{TenantRepository, UserRepository, UserUpdate};
use crate::tenant::TenantId;
use crate::text::{Revision, Timestamp};
use crate::user::{User, UserMask, UserName};

fn invalid<T>(r: Result<T, crate::error::FieldViolation>) -> Result<T, DomainError> {
    r.map_err(|v| DomainError::Invalid(vec![v]))
}

fn check_etag(etag: &str, user: &User) -> Result<(), DomainError> {
    if etag.is_empty() || Revision::from_etag(etag) == Some(user.revision) {
        Ok(())
    } else {
        Err(DomainError::EtagMismatch {
            kind: ResourceKind::User,
            name: user.name().to_string(),
        })
    }
}

/// The permissions `TestPermissions` answers for a tenant, and for a user.
const TENANT_PERMISSIONS: [&str; 8] = [
    "tenants.get",
    "tenants.update",
    "tenants.transferOwnership",
    "users.list",
    "users.create",
    "users.import",
    "users.export",
    "importJobs.get",
];
const USER_PERMISSIONS: [&str; 5] = [
    "users.get",
    "users.update",
    "users.delete",
    "users.setRole",
    "users.setCapabilities",
];

impl<R: TenantRepository + UserRepository> Directory<R> {
    /// Makes a user a member or an admin.
    pub async fn set_user_role(
        &self,
        caller: &Caller,
        name: &str,
        role: TenantRole,
        etag: &str,
    ) -> Result<User, DomainError> {
        let name = invalid(UserName::parse("name", name))?;
        if role == TenantRole::Owner {
            return Err(DomainError::invalid(
                "role",
                "ownership moves with TransferTenantOwnership, which makes the old owner an admin",
            ));
        }
        let action = Action::SetRole(role);
        reach(caller, Some(&name.tenant), action)?;
        let mut user = self.repo().get_user(&name).await?;
        allow(caller, &name.tenant, action, Some(&user))?;
        check_etag(etag, &user)?;
        if user.role == role {
            return Ok(user);
        }
        let demotes = user.administers() && role < TenantRole::Admin;
        let expected = user.revision;
        user.role = role;
        user.update_time = Timestamp::now();
        user.revision = expected.next();
        self.repo()
            .update_user(UserUpdate {
                user: &user,
                expected,
                keep_an_admin: demotes,
                kind: EventType::UserRoleSet,
                paths: vec!["role".to_owned()],
                origin: &Origin::of(caller),
            })
            .await?;
        Ok(user)
    }

    /// Sets the capabilities a user holds.
    pub async fn set_user_capabilities(
        &self,
        caller: &Caller,
        name: &str,
        capabilities: Capabilities,
        etag: &str,
    ) -> Result<User, DomainError> {
        let name = invalid(UserName::parse("name", name))?;
        reach(caller, Some(&name.tenant), Action::SetCapabilities)?;
        let mut user = self.repo().get_user(&name).await?;
        allow(caller, &name.tenant, Action::SetCapabilities, Some(&user))?;
        check_etag(etag, &user)?;
        if user.capabilities == capabilities {
            return Ok(user);
        }
        let expected = user.revision;
        user.capabilities = capabilities;
        user.update_time = Timestamp::now();
        user.revision = expected.next();
        self.repo()
            .update_user(UserUpdate {
                user: &user,
                expected,
                keep_an_admin: false,
                kind: EventType::UserCapabilitiesSet,
                paths: vec!["capabilities".to_owned()],
                origin: &Origin::of(caller),
            })
            .await?;
        Ok(user)
    }

    /// Hands the owner role of `tenant` to `new_owner`; the old owner becomes
    /// an admin in the same transaction. Returns the new owner and the old.
    pub async fn transfer_ownership(
        &self,
        caller: &Caller,
        tenant: &str,
        new_owner: &str,
    ) -> Result<(User, Option<User>), DomainError> {
        let tenant = invalid(TenantId::from_resource_name("tenant", tenant))?;
        let to = invalid(UserName::parse("new_owner", new_owner))?;
        reach(caller, Some(&tenant), Action::TransferOwnership { first: false })?;
        if to.tenant != tenant {
            return Err(DomainError::invalid(
                "new_owner",
                format!("is not a user of {}", tenant.resource_name()),
            ));
        }
        let next = self.repo().get_user(&to).await?;
        let previous = self.repo().find_owner(&tenant).await?;
        let action = Action::TransferOwnership {
            first: previous.is_none(),
        };
        allow(caller, &tenant, action, Some(&next))?;
        if !next.enabled {
            return Err(DomainError::Precondition {
                reason: "USER_DISABLED",
                message: format!("{to} is disabled: enable the user before making them the owner"),
            });
        }
        if previous.as_ref().is_some_and(|p| p.id == next.id) {
            return Ok((next, None));
        }
        self.repo()
            .transfer_ownership(
                &tenant,
                previous.as_ref().map(|p| p.id),
                next.id,
                Timestamp::now(),
                &Origin::of(caller),
            )
            .await?;
        let owner = self.repo().get_user(&to).await?;
        let previous = match previous {
            Some(p) => Some(self.repo().get_user(&p.name()).await?),
            None => None,
        };
        Ok((owner, previous))
    }

    /// Which of `permissions` (all that apply when empty) the caller holds
    /// on `resource`: a tenant or a user. Unknown permission names are an
    /// error, so a console's typo does not hide a button for ever.
    pub async fn test_permissions(
        &self,
        caller: &Caller,
        resource: &str,
        permissions: &[String],
    ) -> Result<Vec<String>, DomainError> {
        let (tenant, user) = if resource.contains("/users/") {
            let name = invalid(UserName::parse("resource", resource))?;
            (name.tenant.clone(), Some(name))
        } else {
            (invalid(TenantId::from_resource_name("resource", resource))?, None)
        };
        let applicable: &[&str] = if user.is_some() {
            &USER_PERMISSIONS
        } else {
            &TENANT_PERMISSIONS
        };
        let asked: Vec<&str> = if permissions.is_empty() {
            applicable.to_vec()
        } else {
            permissions.iter().map(String::as_str).collect()
        };
        if let Some(unknown) = asked.iter().find(|p| !applicable.contains(p)) {
            return Err(DomainError::invalid(
                "permissions",
                format!(
                    "{unknown:?} is not a permission on this resource; these are: {}",
                    applicable.join(", ")
                ),
            ));
        }
        // A tenant the caller cannot reach does not exist for it; naming a
        // user asks whether it exists (and who owns the tenant), which
        // needs the right to read users.
        if user.is_some() {
            reach(caller, Some(&tenant), Action::GetUser)?;
        } else {
            reach(caller, Some(&tenant), Action::GetTenant).or_else(|e| match e {
                DomainError::PermissionDenied { .. } => Ok(()),
                e => Err(e),
            })?;
        }
        self.repo().get_tenant(&tenant).await?;
        let target = match &user {
            Some(name) => Some(self.repo().get_user(name).await?),
            None => None,
        };
        let first_owner = if asked.contains(&"tenants.transferOwnership") {
            self.repo().find_owner(&tenant).await?.is_none()
        } else {
            false
        };
        let everything = UserMask::all();
        let held = asked
            .into_iter()
            .filter(|permission| {
                let action = match *permission {
                    "tenants.get" => Action::GetTenant,
                    "tenants.update" => Action::UpdateTenant,
                    "tenants.transferOwnership" => Action::TransferOwnership { first: first_owner },
                    "users.list" => Action::ListUsers,
                    "users.create" => Action::CreateUser,
                    "users.import" => Action::ImportUsers,
                    "users.export" => Action::ExportUsers,
                    "importJobs.get" => Action::GetImportJobs,
                    "users.get" => Action::GetUser,
                    // Any field at all: a console shows the edit button.
                    "users.update" => Action::UpdateUser(&everything),
                    "users.delete" => Action::DeleteUser,
                    "users.setRole" => Action::SetRole(TenantRole::Member),
                    _ => Action::SetCapabilities,
                };
                let allowed = access::decide(caller, Some(&tenant), action, target.as_ref().map(Target::of));
                match (allowed, action, &target) {
                    (Ok(()), _, _) => true,
                    // Editing oneself is allowed for some fields: the button shows.
                    (Err(_), Action::UpdateUser(_), Some(t)) => {
                        let name_only = UserMask {
                            display_name: true,
                            ..UserMask::default()
                        };
                        access::decide(
                            caller,
                            Some(&tenant),
                            Action::UpdateUser(&name_only),
                            Some(Target::of(t)),
                        )
                        .is_ok()
                    }
                    _ => false,
                }
            })
            .map(str::to_owned)
            .collect();
        Ok(held)
    }
}
