//! Who may do what in a tenant: the caller, tenant roles (seeds 003 and
//! 004), grantable capabilities, and [`decide`], the one pure permission
//! function every operation asks (and the import engine, row by row).
//!
//! The rules, from the seeds:
//! - a tenant has one **owner** once set (003: 代表組織管理者, one per
//!   organisation, who alone hands the role on and then becomes an admin),
//!   any number of **admins** and **members** (004: ユーザー管理の権限 is a
//!   member capability: list, add, import and edit users);
//! - admins and user managers create, update, delete, import and export
//!   members; only the owner and admins touch admins or change roles; only
//!   the owner transfers ownership;
//! - a member changes their own name and "other info" and nothing else of
//!   theirs (003), and nothing of anyone else;
//! - nobody deletes or disables themselves, or the owner (000: the
//!   operating admin cannot be deleted);
//! - export is for the owner, admins and members granted it (003's
//!   連絡先CSV出力).
//!
//! A credential's scopes bound everything: the effective rights of a call
//! are the key's scopes intersected with the acting user's role. A caller
//! whose tenant scope does not cover the tenant is told the tenant does not
//! exist (no existence oracle).

use crate::error::{DomainError, ResourceKind};
use crate::tenant::TenantId;
pub use crate::tenant_role::{Capabilities, TenantRole};
use crate::user::{ProfileField, User, UserId, UserMask};

/// What a credential (an API key, a mapped certificate) may do at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Get and list.
    Read,
    /// Create, update and delete users.
    Write,
    /// Bulk import.
    Import,
    /// Bulk export.
    Export,
    /// Roles, capabilities, ownership and tenant settings.
    Admin,
}

/// Scopes as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Self = Self(0b1_1111);

    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, s| bits | Self::bit(*s)))
    }

    /// The set as bits, for storage.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From storage; bits of no scope are dropped.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & Self::ALL.0)
    }

    pub fn has(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    fn bit(scope: Scope) -> u8 {
        match scope {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Import => 4,
            Scope::Export => 8,
            Scope::Admin => 16,
        }
    }
}

/// The tenants a caller's credential reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantScope {
    One(TenantId),
    /// An operator's credential.
    All,
}

/// The user a credential acts for, as the directory knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActingUser {
    pub user: UserId,
    /// For messages that ask the caller to find the user (in a file, say).
    pub email: String,
    pub role: TenantRole,
    pub capabilities: Capabilities,
}

/// Who is calling: built once per request by the gRPC layer, passed to
/// every domain operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Who the credential belongs to, for events and logs (`apikey:…`).
    pub principal: String,
    pub tenants: TenantScope,
    pub scopes: Scopes,
    /// The credential may act for users of its tenant.
    pub act_as_users: bool,
    /// The user the call acts for, if the credential may and said so.
    pub acting: Option<ActingUser>,
}

/// The user an action is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub user: UserId,
    pub role: TenantRole,
}

impl Target {
    /// What [`decide`] needs to know of a stored user.
    pub fn of(user: &User) -> Self {
        Self {
            user: user.id,
            role: user.role,
        }
    }
}

/// What a caller asks to do.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    GetUser,
    ListUsers,
    /// New users are members: a role is never given at creation.
    CreateUser,
    /// The fields the update writes.
    UpdateUser(&'a UserMask),
    DeleteUser,
    ImportUsers,
    ExportUsers,
    SetRole(TenantRole),
    SetCapabilities,
    TransferOwnership,
    GetTenant,
    UpdateTenant,
    /// Installation-wide: only operator credentials.
    CreateTenant,
    /// Reading import jobs (their row errors name users, as a list does).
    GetImportJobs,
    /// A new API key with these rights: never more than the caller's own.
    CreateApiKey(&'a KeyGrant),
    ListApiKeys,
    RevokeApiKey,
}

/// What a new API key would be allowed: what [`Action::CreateApiKey`] checks
/// against the caller's own credential, so no key mints a stronger one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    pub scopes: Scopes,
    pub act_as_users: bool,
    /// Reaching every tenant (an operator's key).
    pub all_tenants: bool,
}

impl Action<'_> {
    /// The permission's name, as `TestPermissions` and error details spell it.
    pub fn permission(&self) -> &'static str {
        match self {
            Action::GetUser => "users.get",
            Action::ListUsers => "users.list",
            Action::CreateUser => "users.create",
            Action::UpdateUser(_) => "users.update",
            Action::DeleteUser => "users.delete",
            Action::ImportUsers => "users.import",
            Action::ExportUsers => "users.export",
            Action::SetRole(_) => "users.setRole",
            Action::SetCapabilities => "users.setCapabilities",
            Action::TransferOwnership => "tenants.transferOwnership",
            Action::GetTenant => "tenants.get",
            Action::UpdateTenant => "tenants.update",
            Action::CreateTenant => "tenants.create",
            Action::GetImportJobs => "importJobs.get",
            Action::CreateApiKey(_) => "apiKeys.create",
            Action::ListApiKeys => "apiKeys.list",
            Action::RevokeApiKey => "apiKeys.revoke",
        }
    }

    /// The credential scope the action needs.
    fn scope(&self) -> Scope {
        match self {
            Action::GetUser | Action::ListUsers | Action::GetTenant | Action::GetImportJobs => Scope::Read,
            Action::CreateUser | Action::UpdateUser(_) | Action::DeleteUser => Scope::Write,
            Action::ImportUsers => Scope::Import,
            Action::ExportUsers => Scope::Export,
            Action::SetRole(_)
            | Action::SetCapabilities
            | Action::TransferOwnership
            | Action::UpdateTenant
            | Action::CreateTenant
            | Action::CreateApiKey(_)
            | Action::ListApiKeys
            | Action::RevokeApiKey => Scope::Admin,
        }
    }
}

/// Why an action is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The caller's credential does not reach the tenant: answered exactly
    /// as a tenant that does not exist.
    TenantNotFound,
    /// PERMISSION_DENIED `MISSING_PERMISSION`, naming the permission.
    Missing(&'static str),
    /// FAILED_PRECONDITION `SELF_ACTION_FORBIDDEN`: deleting, disabling or
    /// demoting oneself.
    SelfAction,
    /// FAILED_PRECONDITION `OWNER_PROTECTED`: the owner is not deleted,
    /// disabled, demoted or edited by anyone else.
    OwnerProtected,
    /// PERMISSION_DENIED `KEY_ESCALATION`: a new key would be allowed more
    /// than the credential that asks for it.
    Escalation,
}

impl Denied {
    /// The `ErrorInfo.reason` of the refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::TenantNotFound => "TENANT_NOT_FOUND",
            Denied::Missing(_) => "MISSING_PERMISSION",
            Denied::SelfAction => "SELF_ACTION_FORBIDDEN",
            Denied::OwnerProtected => "OWNER_PROTECTED",
            Denied::Escalation => "KEY_ESCALATION",
        }
    }
}

impl Denied {
    /// The error a caller gets, for `action` in `tenant` (`None`: the
    /// installation).
    pub fn into_error(self, tenant: Option<&TenantId>, action: Action<'_>) -> DomainError {
        let place = tenant.map_or_else(|| "this installation".to_owned(), TenantId::resource_name);
        match self {
            Denied::TenantNotFound => DomainError::NotFound {
                kind: ResourceKind::Tenant,
                name: place,
            },
            Denied::Missing(permission) if tenant.is_none() => DomainError::PermissionDenied {
                permission,
                message: format!(
                    "only an operator's credential (one that reaches every tenant) may {permission}, and with \
                     the admin scope"
                ),
            },
            Denied::Missing(permission) => DomainError::PermissionDenied {
                permission,
                message: format!(
                    "the caller may not {permission} in {place}: the credential's scopes or the acting user's role \
                     do not allow it"
                ),
            },
            Denied::Escalation => DomainError::PermissionDenied {
                permission: action.permission(),
                message: "a key cannot be given more than the credential that creates it: scopes it lacks, acting \
                          for users when it may not, or every tenant when it reaches one"
                    .to_owned(),
            },
            Denied::SelfAction => DomainError::Precondition {
                reason: self.reason(),
                message: format!(
                    "nobody may {} themselves: ask another administrator",
                    match action {
                        Action::DeleteUser => "delete",
                        Action::SetRole(_) => "demote",
                        _ => "disable",
                    }
                ),
            },
            Denied::OwnerProtected => DomainError::Precondition {
                reason: self.reason(),
                message: format!(
                    "the owner of {place} cannot be deleted, disabled, demoted or edited by another user; the owner \
                     first hands the role on (TransferTenantOwnership)"
                ),
            },
        }
    }
}

/// The fields a member may change of their own record (seed 003: the
/// user's name, and other information).
fn self_editable(mask: &UserMask) -> bool {
    let name_parts = [ProfileField::GivenName, ProfileField::FamilyName];
    !mask.email
        && !mask.enabled
        && !mask.status
        && !mask.external_id
        && mask.custom.iter().all(|c| !c)
        && ProfileField::ALL
            .iter()
            .all(|f| !mask.profile[f.index()] || name_parts.contains(f))
}

/// Whether `actor` may manage (update, delete) a user of role `target`.
fn manages(actor: &ActingUser, target: TenantRole) -> bool {
    match target {
        TenantRole::Member => actor.role >= TenantRole::Admin || actor.capabilities.user_management,
        TenantRole::Admin => actor.role >= TenantRole::Admin,
        TenantRole::Owner => actor.role == TenantRole::Owner,
    }
}

/// The first half of [`decide`], for before the target is read: whether
/// the credential reaches `tenant` at all (else the tenant "does not exist")
/// and holds the scope `action` needs. Asked first, so a caller without
/// the right learns nothing of which users exist.
pub fn reaches(caller: &Caller, tenant: Option<&TenantId>, action: Action<'_>) -> Result<(), Denied> {
    let missing = Err(Denied::Missing(action.permission()));
    match (&caller.tenants, tenant) {
        (TenantScope::One(scoped), Some(tenant)) if scoped != tenant => return Err(Denied::TenantNotFound),
        (TenantScope::One(_), None) => return missing,
        _ => {}
    }
    if caller.scopes.has(action.scope()) {
        Ok(())
    } else {
        missing
    }
}

/// Whether `caller` may do `action` in `tenant` (`None`: installation-wide,
/// such as creating a tenant or an operator's key), to `target` for actions
/// about one user. Pure: the caller's rights, the target's role and the
/// action decide; counting (the last admin) is the store's, under its lock.
pub fn decide(
    caller: &Caller,
    tenant: Option<&TenantId>,
    action: Action<'_>,
    target: Option<Target>,
) -> Result<(), Denied> {
    let missing = Err(Denied::Missing(action.permission()));
    reaches(caller, tenant, action)?;
    if let Action::CreateApiKey(grant) = action {
        let within = Scopes::from_bits(grant.scopes.bits() & !caller.scopes.bits()) == Scopes::default();
        let acts = !grant.act_as_users
            || caller.acting.is_none() && (caller.act_as_users || caller.tenants == TenantScope::All);
        let reach = !grant.all_tenants || caller.tenants == TenantScope::All;
        if !(within && acts && reach) {
            return Err(Denied::Escalation);
        }
    }
    let acting = caller.acting.as_ref();
    let is_self = matches!((acting, target), (Some(a), Some(t)) if a.user == t.user);
    // Protections that hold for every caller, with or without an acting user.
    if let Some(target) = target {
        let disables = matches!(action, Action::UpdateUser(mask) if mask.enabled || mask.status);
        let removes = matches!(action, Action::DeleteUser | Action::SetRole(_));
        if is_self && (disables || removes) {
            return Err(Denied::SelfAction);
        }
        if target.role == TenantRole::Owner && (disables || removes || matches!(action, Action::SetCapabilities)) {
            return Err(Denied::OwnerProtected);
        }
    }
    // Without an acting user the credential's scopes are the rights.
    let Some(actor) = acting else {
        return Ok(());
    };
    let allowed = match action {
        Action::GetUser | Action::ListUsers | Action::GetTenant | Action::GetImportJobs => true,
        Action::CreateUser | Action::ImportUsers => manages(actor, TenantRole::Member),
        Action::UpdateUser(mask) => match target {
            Some(_) if is_self && self_editable(mask) => true,
            Some(t) if t.role == TenantRole::Owner && !is_self => return Err(Denied::OwnerProtected),
            Some(t) => manages(actor, t.role),
            None => false,
        },
        Action::DeleteUser => target.is_some_and(|t| manages(actor, t.role)),
        Action::ExportUsers => actor.role >= TenantRole::Admin || actor.capabilities.export_users,
        Action::SetRole(_)
        | Action::SetCapabilities
        | Action::UpdateTenant
        | Action::CreateApiKey(_)
        | Action::ListApiKeys
        | Action::RevokeApiKey => actor.role >= TenantRole::Admin,
        Action::TransferOwnership => actor.role == TenantRole::Owner,
        // Acting users belong to one tenant: never installation-wide.
        Action::CreateTenant => false,
    };
    if allowed { Ok(()) } else { missing }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use uuid::Uuid;

    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("tenant", "acme").unwrap()
    }

    const ME: u128 = 1;
    const OTHER: u128 = 2;

    /// An acting user: role, and capabilities as "um" (user management), "ex" (export).
    fn caller(role: Option<TenantRole>, caps: &str, scopes: Scopes) -> Caller {
        Caller {
            principal: "apikey:test".into(),
            tenants: TenantScope::One(tenant()),
            scopes,
            act_as_users: true,
            acting: role.map(|role| ActingUser {
                user: UserId(Uuid::from_u128(ME)),
                email: "me@example.com".into(),
                role,
                capabilities: Capabilities {
                    user_management: caps.contains("um"),
                    export_users: caps.contains("ex"),
                },
            }),
        }
    }

    fn target(who: u128, role: TenantRole) -> Option<Target> {
        Some(Target {
            user: UserId(Uuid::from_u128(who)),
            role,
        })
    }

    fn mask(fields: &[&str]) -> UserMask {
        let mut mask = UserMask::default();
        for f in fields {
            match *f {
                "email" => mask.email = true,
                "display_name" => mask.display_name = true,
                "enabled" => mask.enabled = true,
                "given_name" => mask.profile[ProfileField::GivenName.index()] = true,
                "department" => mask.profile[ProfileField::Department.index()] = true,
                "custom_01" => mask.custom[0] = true,
                _ => unreachable!("{f}"),
            }
        }
        mask
    }

    use TenantRole::{Admin, Member, Owner};

    const OK: Result<(), Denied> = Ok(());
    const SELF: Result<(), Denied> = Err(Denied::SelfAction);
    const OWNER: Result<(), Denied> = Err(Denied::OwnerProtected);

    fn no(permission: &'static str) -> Result<(), Denied> {
        Err(Denied::Missing(permission))
    }

    /// (acting role, capabilities, action, target, expected).
    type Row<'a> = (TenantRole, &'static str, Action<'a>, Option<Target>, Result<(), Denied>);

    /// The matrix, row by row.
    #[test]
    fn the_permission_matrix() {
        let name = mask(&["display_name"]);
        let own_name = mask(&["display_name", "given_name"]);
        let email = mask(&["email"]);
        let enabled = mask(&["enabled"]);
        let department = mask(&["department"]);
        let custom = mask(&["custom_01"]);
        #[rustfmt::skip]
        let rows: Vec<Row<'_>> = vec![
            // Reading: everyone in the tenant.
            (Member, "", Action::GetUser, target(OTHER, Admin), OK),
            (Member, "", Action::ListUsers, None, OK),
            // Creating and importing members: owner, admins, user managers.
            (Owner, "", Action::CreateUser, None, OK),
            (Admin, "", Action::CreateUser, None, OK),
            (Member, "um", Action::CreateUser, None, OK),
            (Member, "ex", Action::CreateUser, None, no("users.create")),
            (Member, "", Action::ImportUsers, None, no("users.import")),
            (Member, "um", Action::ImportUsers, None, OK),
            (Admin, "", Action::ImportUsers, None, OK),
            // Updating and deleting a member.
            (Admin, "", Action::UpdateUser(&email), target(OTHER, Member), OK),
            (Member, "um", Action::UpdateUser(&email), target(OTHER, Member), OK),
            (Member, "", Action::UpdateUser(&name), target(OTHER, Member), no("users.update")),
            (Member, "um", Action::DeleteUser, target(OTHER, Member), OK),
            (Member, "", Action::DeleteUser, target(OTHER, Member), no("users.delete")),
            // Admins: only the owner and admins touch them.
            (Admin, "", Action::UpdateUser(&email), target(OTHER, Admin), OK),
            (Owner, "", Action::DeleteUser, target(OTHER, Admin), OK),
            (Member, "um", Action::UpdateUser(&email), target(OTHER, Admin), no("users.update")),
            (Member, "um", Action::DeleteUser, target(OTHER, Admin), no("users.delete")),
            // Roles and capabilities: owner and admins.
            (Owner, "", Action::SetRole(Admin), target(OTHER, Member), OK),
            (Admin, "", Action::SetRole(Member), target(OTHER, Admin), OK),
            (Member, "um", Action::SetRole(Admin), target(OTHER, Member), no("users.setRole")),
            (Admin, "", Action::SetCapabilities, target(OTHER, Member), OK),
            (Member, "um", Action::SetCapabilities, target(OTHER, Member), no("users.setCapabilities")),
            // Ownership: the owner alone.
            (Owner, "", Action::TransferOwnership, target(OTHER, Admin), OK),
            (Admin, "", Action::TransferOwnership, target(OTHER, Admin), no("tenants.transferOwnership")),
            // A member on themselves: name and name parts, nothing else.
            (Member, "", Action::UpdateUser(&name), target(ME, Member), OK),
            (Member, "", Action::UpdateUser(&own_name), target(ME, Member), OK),
            (Member, "", Action::UpdateUser(&email), target(ME, Member), no("users.update")),
            (Member, "", Action::UpdateUser(&department), target(ME, Member), no("users.update")),
            (Member, "", Action::UpdateUser(&custom), target(ME, Member), no("users.update")),
            (Member, "um", Action::UpdateUser(&email), target(ME, Member), OK),
            // Nobody deletes, disables or demotes themselves.
            (Admin, "", Action::DeleteUser, target(ME, Admin), SELF),
            (Admin, "", Action::UpdateUser(&enabled), target(ME, Admin), SELF),
            (Admin, "", Action::SetRole(Member), target(ME, Admin), SELF),
            (Owner, "", Action::DeleteUser, target(ME, Owner), SELF),
            // Nobody deletes, disables, demotes or edits the owner.
            (Admin, "", Action::DeleteUser, target(OTHER, Owner), OWNER),
            (Admin, "", Action::UpdateUser(&enabled), target(OTHER, Owner), OWNER),
            (Admin, "", Action::SetRole(Member), target(OTHER, Owner), OWNER),
            (Admin, "", Action::UpdateUser(&email), target(OTHER, Owner), OWNER),
            (Owner, "", Action::UpdateUser(&email), target(ME, Owner), OK),
            // Export: owner, admins, members granted it.
            (Owner, "", Action::ExportUsers, None, OK),
            (Admin, "", Action::ExportUsers, None, OK),
            (Member, "ex", Action::ExportUsers, None, OK),
            (Member, "um", Action::ExportUsers, None, no("users.export")),
            // Tenant settings: owner and admins.
            (Admin, "", Action::UpdateTenant, None, OK),
            (Member, "um", Action::UpdateTenant, None, no("tenants.update")),
        ];
        for (i, (role, caps, action, target, expected)) in rows.into_iter().enumerate() {
            let got = decide(&caller(Some(role), caps, Scopes::ALL), Some(&tenant()), action, target);
            assert_eq!(got, expected, "row {i}: {role:?} {caps:?} {action:?} on {target:?}");
        }
    }

    /// Each refusal becomes the error the API answers with.
    #[test]
    fn refusals_become_errors() {
        let t = tenant();
        let err = Denied::Missing("users.delete").into_error(Some(&t), Action::DeleteUser);
        assert_eq!(err.reason(), "MISSING_PERMISSION");
        assert!(matches!(
            err,
            DomainError::PermissionDenied {
                permission: "users.delete",
                ..
            }
        ));
        let err = Denied::TenantNotFound.into_error(Some(&t), Action::ListUsers);
        assert_eq!(
            err.reason(),
            "TENANT_NOT_FOUND",
            "exactly as a tenant that does not exist"
        );
        let err = Denied::SelfAction.into_error(Some(&t), Action::DeleteUser);
        assert_eq!(err.reason(), "SELF_ACTION_FORBIDDEN");
        assert!(err.to_string().contains("delete themselves"), "{err}");
        let err = Denied::SelfAction.into_error(Some(&t), Action::SetRole(TenantRole::Member));
        assert!(err.to_string().contains("demote themselves"), "{err}");
        let err = Denied::OwnerProtected.into_error(Some(&t), Action::DeleteUser);
        assert_eq!(err.reason(), "OWNER_PROTECTED");
    }

    /// The credential bounds everything: its tenant (else the tenant "does
    /// not exist"), its scopes (intersected with the acting user's role),
    /// and without an acting user its scopes alone, the protections still on.
    #[test]
    fn the_credential_bounds_the_role() {
        let other_tenant = TenantId::parse("tenant", "globex").unwrap();
        let admin_key = caller(Some(Admin), "", Scopes::ALL);
        assert_eq!(
            decide(&admin_key, Some(&other_tenant), Action::ListUsers, None),
            Err(Denied::TenantNotFound)
        );
        let operator = Caller {
            tenants: TenantScope::All,
            ..caller(None, "", Scopes::ALL)
        };
        assert_eq!(decide(&operator, Some(&other_tenant), Action::ListUsers, None), OK);
        // A read-only key: an admin acting through it still only reads.
        let read_only = caller(Some(Admin), "", Scopes::of(&[Scope::Read]));
        assert_eq!(
            decide(&read_only, Some(&tenant()), Action::GetUser, target(OTHER, Member)),
            OK
        );
        assert_eq!(
            decide(&read_only, Some(&tenant()), Action::DeleteUser, target(OTHER, Member)),
            no("users.delete")
        );
        // An admin-scoped key acting for a member: the member's rights.
        let member_via_admin_key = caller(Some(Member), "", Scopes::ALL);
        assert_eq!(
            decide(
                &member_via_admin_key,
                Some(&tenant()),
                Action::SetRole(Admin),
                target(OTHER, Member)
            ),
            no("users.setRole")
        );
        // Without an acting user: the scopes decide, the owner stays protected.
        let service = caller(None, "", Scopes::of(&[Scope::Read, Scope::Write, Scope::Import]));
        assert_eq!(decide(&service, Some(&tenant()), Action::ImportUsers, None), OK);
        assert_eq!(
            decide(&service, Some(&tenant()), Action::ExportUsers, None),
            no("users.export")
        );
        assert_eq!(
            decide(&service, Some(&tenant()), Action::DeleteUser, target(OTHER, Admin)),
            OK
        );
        assert_eq!(
            decide(&service, Some(&tenant()), Action::DeleteUser, target(OTHER, Owner)),
            OWNER
        );
    }

    /// Installation-wide actions are an operator's; a key never mints a
    /// stronger one.
    #[test]
    fn operators_and_keys_that_make_keys() {
        let grant = |scopes: &[Scope], act_as_users: bool, all_tenants: bool| KeyGrant {
            scopes: Scopes::of(scopes),
            act_as_users,
            all_tenants,
        };
        let operator = Caller {
            tenants: TenantScope::All,
            act_as_users: false,
            ..caller(None, "", Scopes::ALL)
        };
        let tenant_admin = caller(None, "", Scopes::ALL);
        assert_eq!(decide(&operator, None, Action::CreateTenant, None), OK);
        assert_eq!(
            decide(&tenant_admin, None, Action::CreateTenant, None),
            no("tenants.create")
        );
        let read_operator = Caller {
            scopes: Scopes::of(&[Scope::Read]),
            ..operator.clone()
        };
        assert_eq!(
            decide(&read_operator, None, Action::CreateTenant, None),
            no("tenants.create")
        );
        // An operator key makes operator keys; a tenant key only its tenant's.
        let all = grant(&[Scope::Read], false, true);
        assert_eq!(decide(&operator, None, Action::CreateApiKey(&all), None), OK);
        assert_eq!(
            decide(&tenant_admin, Some(&tenant()), Action::CreateApiKey(&all), None),
            Err(Denied::Escalation)
        );
        let read = grant(&[Scope::Read], false, false);
        assert_eq!(
            decide(&tenant_admin, Some(&tenant()), Action::CreateApiKey(&read), None),
            OK
        );
        // Never a scope the caller lacks, nor acting for users when it may not.
        let writer = caller(None, "", Scopes::of(&[Scope::Read, Scope::Write, Scope::Admin]));
        let export = grant(&[Scope::Export], false, false);
        assert_eq!(
            decide(&writer, Some(&tenant()), Action::CreateApiKey(&export), None),
            Err(Denied::Escalation)
        );
        let acting_key = grant(&[Scope::Read], true, false);
        assert_eq!(
            decide(&operator, Some(&tenant()), Action::CreateApiKey(&acting_key), None),
            OK,
            "an operator makes a tenant's acting keys (it acts for nobody itself)"
        );
        let reader_key = caller(None, "", Scopes::of(&[Scope::Read, Scope::Admin]));
        let reader_key = Caller {
            act_as_users: false,
            ..reader_key
        };
        assert_eq!(
            decide(
                &reader_key,
                Some(&tenant()),
                Action::CreateApiKey(&grant(&[Scope::Read], true, false)),
                None
            ),
            Err(Denied::Escalation),
            "a tenant key that may not act for users makes no key that may"
        );
        assert_eq!(
            decide(&tenant_admin, Some(&tenant()), Action::CreateApiKey(&acting_key), None),
            OK
        );
        // Acting for a member: no keys at all; for an admin, within the key.
        let as_member = caller(Some(Member), "um", Scopes::ALL);
        assert_eq!(
            decide(&as_member, Some(&tenant()), Action::CreateApiKey(&read), None),
            no("apiKeys.create")
        );
        assert_eq!(
            decide(&as_member, Some(&tenant()), Action::ListApiKeys, None),
            no("apiKeys.list")
        );
        let as_admin = caller(Some(Admin), "", Scopes::ALL);
        assert_eq!(decide(&as_admin, Some(&tenant()), Action::RevokeApiKey, None), OK);
        // Reading a tenant and its import jobs: any reader in it.
        let reader = caller(None, "", Scopes::of(&[Scope::Read]));
        assert_eq!(decide(&reader, Some(&tenant()), Action::GetTenant, None), OK);
        assert_eq!(decide(&reader, Some(&tenant()), Action::GetImportJobs, None), OK);
        assert_eq!(
            decide(&reader, Some(&tenant()), Action::UpdateTenant, None),
            no("tenants.update")
        );
    }
}
