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
//!
//! Keys and ownership (the rules that keep a caller from gaining, through
//! a key it makes, more than it holds):
//! - a new key never has a scope, a reach or an expiry beyond its maker's,
//!   nor acts for users unless its maker may and acts for nobody;
//! - a key made while acting for a user is **bound** to that user: every
//!   call with it acts for them, judged by their role and state as they are
//!   now (a disabled, demoted or deleted user's keys stop or shrink with
//!   them);
//! - ownership (handing it on, editing the owner) is the owner's or an
//!   operator's, never a tenant key's acting for nobody: such a key may only
//!   name the first owner of a tenant that has none.

use std::fmt;

use uuid::Uuid;

use crate::error::{DomainError, ResourceKind};
use crate::tenant::TenantId;
pub use crate::tenant_role::{Capabilities, TenantRole};
use crate::text::Timestamp;
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

/// Who a call comes from, as logs, job records and key records name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The API key of the credential (a mapped certificate stands for one).
    pub key: Uuid,
    /// The user the call acts for (`tenants/{t}/users/{id}`): named in the
    /// acting-user header, or the user the key is bound to.
    pub acting_user: Option<String>,
    /// The certificate mapping that stood for the key, as configured.
    pub certificate: Option<String>,
}

impl Principal {
    /// The principal of key `key`, acting for nobody, without a certificate.
    pub fn key(key: Uuid) -> Self {
        Self {
            key,
            acting_user: None,
            certificate: None,
        }
    }
}

/// `tenants/acme/users/… via apikey:… (certificate subject:CN=ops)`.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.acting_user {
            write!(f, "{user} via ")?;
        }
        write!(f, "apikey:{}", self.key.simple())?;
        if let Some(selector) = &self.certificate {
            write!(f, " (certificate {selector})")?;
        }
        Ok(())
    }
}

/// Who is calling: built once per request by the gRPC layer, passed to
/// every domain operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Who the credential belongs to, for events and logs.
    pub principal: Principal,
    pub tenants: TenantScope,
    pub scopes: Scopes,
    /// The credential may act for users of its tenant (named per call).
    pub act_as_users: bool,
    /// When the credential stops working; a key it makes stops no later.
    pub expire_time: Option<Timestamp>,
    /// The user the call acts for: named by a key that may act for users,
    /// or the user the key is bound to.
    pub acting: Option<ActingUser>,
    /// The request the call came in (its events name it).
    pub request: crate::event::RequestIds,
}

impl Caller {
    /// An operator's credential: it reaches every tenant.
    pub fn is_operator(&self) -> bool {
        self.tenants == TenantScope::All
    }
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
    /// Handing the owner role to a user; `first` when the tenant has no
    /// owner yet (naming the first one).
    TransferOwnership {
        first: bool,
    },
    GetTenant,
    UpdateTenant,
    /// Installation-wide: only operator credentials.
    CreateTenant,
    /// Reading import jobs (their row errors name users, as a list does).
    GetImportJobs,
    /// A new API key with these rights: never more than the caller's own.
    CreateApiKey(&'a KeyGrant),
    ListApiKeys,
    /// Revoking a key with these rights: only a caller that could have
    /// made it (so an admin's console cannot cut the owner's keys).
    RevokeApiKey(&'a KeyGrant),
    /// Reading the audit log: who changed what (administrators).
    ReadAuditLog,
    /// Reading the change feed (ListChanges, WatchChanges): every change
    /// to users, as a list shows them.
    ReadChanges,
}

/// What an API key is (or would be) allowed: what [`Action::CreateApiKey`]
/// checks against the caller's own credential, so no key mints a stronger
/// one, and [`Action::RevokeApiKey`] against the revoker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    pub scopes: Scopes,
    pub act_as_users: bool,
    /// Reaching every tenant (an operator's key).
    pub all_tenants: bool,
    pub expire_time: Option<Timestamp>,
    /// The user the key is bound to, and their role now (a key made while
    /// acting; a gone user counts as a member).
    pub bound_to: Option<Target>,
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
            Action::TransferOwnership { .. } => "tenants.transferOwnership",
            Action::GetTenant => "tenants.get",
            Action::UpdateTenant => "tenants.update",
            Action::CreateTenant => "tenants.create",
            Action::GetImportJobs => "importJobs.get",
            Action::CreateApiKey(_) => "apiKeys.create",
            Action::ListApiKeys => "apiKeys.list",
            Action::RevokeApiKey(_) => "apiKeys.revoke",
            Action::ReadAuditLog => "auditEvents.list",
            Action::ReadChanges => "changes.list",
        }
    }

    /// The credential scope the action needs.
    fn scope(&self) -> Scope {
        match self {
            Action::GetUser | Action::ListUsers | Action::GetTenant | Action::GetImportJobs | Action::ReadChanges => {
                Scope::Read
            }
            Action::CreateUser | Action::UpdateUser(_) | Action::DeleteUser => Scope::Write,
            Action::ImportUsers => Scope::Import,
            Action::ExportUsers => Scope::Export,
            Action::SetRole(_)
            | Action::SetCapabilities
            | Action::TransferOwnership { .. }
            | Action::UpdateTenant
            | Action::CreateTenant
            | Action::CreateApiKey(_)
            | Action::ListApiKeys
            | Action::RevokeApiKey(_)
            | Action::ReadAuditLog => Scope::Admin,
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
    /// PERMISSION_DENIED `MISSING_PERMISSION`: ownership is the owner's
    /// (acting as themselves) or an operator's, not a tenant key's acting
    /// for nobody.
    OwnersOnly(&'static str),
    /// FAILED_PRECONDITION `SELF_ACTION_FORBIDDEN`: deleting, disabling or
    /// changing the role of oneself, for a caller who holds the right over
    /// others; what was tried (`delete`, `disable`, `promote`, `demote`).
    SelfAction(&'static str),
    /// FAILED_PRECONDITION `OWNER_PROTECTED`: the owner is not deleted,
    /// disabled, demoted or edited by anyone else.
    OwnerProtected,
    /// PERMISSION_DENIED `KEY_ESCALATION`: a key would be allowed more than
    /// the credential that makes (or revokes) it; says what.
    Escalation(&'static str),
}

impl Denied {
    /// Whether `reason` is that of a refusal for rights (an import row's
    /// failure, say), not of bad data.
    pub fn is_reason(reason: &str) -> bool {
        [
            Denied::Missing(""),
            Denied::OwnersOnly(""),
            Denied::SelfAction(""),
            Denied::OwnerProtected,
            Denied::Escalation(""),
        ]
        .iter()
        .any(|d| d.reason() == reason)
    }

    /// The `ErrorInfo.reason` of the refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::TenantNotFound => "TENANT_NOT_FOUND",
            Denied::Missing(_) | Denied::OwnersOnly(_) => "MISSING_PERMISSION",
            Denied::SelfAction(_) => "SELF_ACTION_FORBIDDEN",
            Denied::OwnerProtected => "OWNER_PROTECTED",
            Denied::Escalation(_) => "KEY_ESCALATION",
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
                reason: self.reason(),
                permission,
                message: format!(
                    "only an operator's credential (one that reaches every tenant) may {permission}, and with \
                     the admin scope"
                ),
            },
            Denied::Missing(permission) => DomainError::PermissionDenied {
                reason: self.reason(),
                permission,
                message: format!(
                    "the caller may not {permission} in {place}: the credential's scopes or the acting user's role \
                     do not allow it"
                ),
            },
            Denied::OwnersOnly(permission) => DomainError::PermissionDenied {
                reason: self.reason(),
                permission,
                message: format!(
                    "only the owner of {place} (acting as themselves) or an operator's key may {permission}; a \
                     tenant key acting for nobody may only name the first owner of a tenant that has none"
                ),
            },
            Denied::Escalation(what) => DomainError::PermissionDenied {
                reason: self.reason(),
                permission: action.permission(),
                message: format!(
                    "a key cannot be given more than the credential that {}: {what}",
                    if matches!(action, Action::RevokeApiKey(_)) {
                        "revokes it holds (only a caller that could have made a key revokes it)"
                    } else {
                        "creates it"
                    }
                ),
            },
            Denied::SelfAction(tried) => DomainError::Precondition {
                reason: self.reason(),
                message: format!("nobody may {tried} themselves: ask another administrator"),
            },
            Denied::OwnerProtected => DomainError::Precondition {
                reason: self.reason(),
                message: format!(
                    "the owner of {place} is never deleted, disabled or demoted, and is edited only by themselves \
                     or an operator's key; the owner first hands the role on (TransferTenantOwnership)"
                ),
            },
        }
    }
}

/// The fields a member may change of their own record (seed 003: the
/// user's name, and other information).
fn self_editable(mask: &UserMask) -> bool {
    let name_parts = [ProfileField::GivenName, ProfileField::FamilyName, ProfileField::Note];
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
    reaches_with(caller, tenant, action, action.scope())
}

fn reaches_with(caller: &Caller, tenant: Option<&TenantId>, action: Action<'_>, scope: Scope) -> Result<(), Denied> {
    let missing = Err(Denied::Missing(action.permission()));
    match (&caller.tenants, tenant) {
        (TenantScope::One(scoped), Some(tenant)) if scoped != tenant => return Err(Denied::TenantNotFound),
        (TenantScope::One(_), None) => return missing,
        _ => {}
    }
    if caller.scopes.has(scope) { Ok(()) } else { missing }
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
    decide_with(caller, tenant, action, target, action.scope())
}

/// [`decide`] for a row of an import, or a user a FULL_SYNC deletes: the
/// `import` scope is what the credential needs for the writes (so a
/// `read,import` key imports), and the acting user's role still applies.
pub fn decide_imported(
    caller: &Caller,
    tenant: &TenantId,
    action: Action<'_>,
    target: Option<Target>,
) -> Result<(), Denied> {
    decide_with(caller, Some(tenant), action, target, Scope::Import)
}

/// Whether `grant` stays within what `caller` holds: no scope, reach or
/// expiry beyond it, no acting for users unless it may act for them and
/// acts for nobody, bound to no user it could not act for. A caller acting
/// for a user makes only keys bound to a user; it may revoke an unbound key
/// within its rights (an admin cutting off a leaked service key).
fn within(caller: &Caller, grant: &KeyGrant, revoking: bool) -> Result<(), Denied> {
    if Scopes::from_bits(grant.scopes.bits() & !caller.scopes.bits()) != Scopes::default() {
        return Err(Denied::Escalation("a scope the caller's credential does not hold"));
    }
    if grant.all_tenants && !caller.is_operator() {
        return Err(Denied::Escalation("every tenant, from a credential that reaches one"));
    }
    let may_act = caller.acting.is_none() && (caller.act_as_users || caller.is_operator());
    if grant.act_as_users && !may_act {
        return Err(Denied::Escalation(
            "acting for users, from a credential that may not or that acts for a user itself",
        ));
    }
    if !revoking
        && let Some(limit) = caller.expire_time
        && grant.expire_time.is_none_or(|t| t > limit)
    {
        return Err(Denied::Escalation("a later expiry than the caller's credential has"));
    }
    match (grant.bound_to, &caller.acting) {
        (None, Some(_)) if !revoking => Err(Denied::Escalation(
            "no bound user, from a caller acting for a user (its keys act for that user)",
        )),
        (Some(_), None) if !may_act => Err(Denied::Escalation(
            "a bound user, from a credential that may not act for users",
        )),
        (Some(bound), Some(actor)) if bound.user != actor.user && (!revoking || !manages(actor, bound.role)) => {
            Err(Denied::Escalation("a user other than the one the caller acts for"))
        }
        _ => Ok(()),
    }
}

fn decide_with(
    caller: &Caller,
    tenant: Option<&TenantId>,
    action: Action<'_>,
    target: Option<Target>,
    scope: Scope,
) -> Result<(), Denied> {
    let missing = Err(Denied::Missing(action.permission()));
    reaches_with(caller, tenant, action, scope)?;
    let acting = caller.acting.as_ref();
    let is_self = matches!((acting, target), (Some(a), Some(t)) if a.user == t.user);
    // First whether the caller holds the right at all (a member may not set
    // roles, so a member promoting themselves is told that); the owner
    // counts as an admin here, so an admin is told the owner is protected.
    if let Some(actor) = acting
        && !holds(actor, action, target, is_self)
    {
        return missing;
    }
    // Then the protections, for every caller that holds the right.
    if let Some(target) = target {
        let disables = matches!(action, Action::UpdateUser(mask) if mask.enabled || mask.status);
        let removes = matches!(action, Action::DeleteUser | Action::SetRole(_));
        if is_self && (disables || removes) {
            return Err(Denied::SelfAction(match action {
                Action::DeleteUser => "delete",
                Action::SetRole(role) if role > target.role => "promote",
                Action::SetRole(role) if role < target.role => "demote",
                Action::SetRole(_) => "change the role of",
                _ => "disable",
            }));
        }
        if target.role == TenantRole::Owner {
            if disables || removes || matches!(action, Action::SetCapabilities) {
                return Err(Denied::OwnerProtected);
            }
            // Editing the owner: the owner themselves, or an operator.
            if matches!(action, Action::UpdateUser(_)) && !is_self && !caller.is_operator() {
                return Err(Denied::OwnerProtected);
            }
        }
    }
    // Without an acting user the credential's scopes are the rights, but
    // ownership stays the owner's or an operator's.
    if acting.is_none() && matches!(action, Action::TransferOwnership { first: false }) && !caller.is_operator() {
        return Err(Denied::OwnersOnly(action.permission()));
    }
    keys_within(caller, action)
}

/// Whether the acting user's role allows `action` (on `target`), the
/// owner counted as an admin (the protections come after).
fn holds(actor: &ActingUser, action: Action<'_>, target: Option<Target>, is_self: bool) -> bool {
    let role_of = |t: Target| {
        if t.role == TenantRole::Owner {
            TenantRole::Admin
        } else {
            t.role
        }
    };
    match action {
        Action::GetUser | Action::ListUsers | Action::GetTenant | Action::GetImportJobs | Action::ReadChanges => true,
        Action::CreateUser | Action::ImportUsers => manages(actor, TenantRole::Member),
        Action::UpdateUser(mask) => match target {
            Some(_) if is_self && self_editable(mask) => true,
            Some(t) => manages(actor, role_of(t)),
            None => false,
        },
        Action::DeleteUser => target.is_some_and(|t| manages(actor, role_of(t))),
        Action::ExportUsers => actor.role >= TenantRole::Admin || actor.capabilities.export_users,
        Action::SetRole(_)
        | Action::SetCapabilities
        | Action::UpdateTenant
        | Action::CreateApiKey(_)
        | Action::ListApiKeys
        | Action::RevokeApiKey(_)
        | Action::ReadAuditLog => actor.role >= TenantRole::Admin,
        // Naming the first owner is an admin's; handing it on, the owner's.
        Action::TransferOwnership { first: true } => actor.role >= TenantRole::Admin,
        Action::TransferOwnership { first: false } => actor.role == TenantRole::Owner,
        // Acting users belong to one tenant: never installation-wide.
        Action::CreateTenant => false,
    }
}

/// For a caller who holds the right to make or revoke keys: whether this
/// key is within what it holds.
fn keys_within(caller: &Caller, action: Action<'_>) -> Result<(), Denied> {
    match action {
        Action::CreateApiKey(grant) => within(caller, grant, false),
        Action::RevokeApiKey(grant) => within(caller, grant, true),
        _ => Ok(()),
    }
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
            request: Default::default(),
            principal: Principal::key(Uuid::from_u128(99)),
            tenants: TenantScope::One(tenant()),
            scopes,
            act_as_users: true,
            expire_time: None,
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
    const fn itself(tried: &'static str) -> Result<(), Denied> {
        Err(Denied::SelfAction(tried))
    }
    const OWNER: Result<(), Denied> = Err(Denied::OwnerProtected);

    fn escalates(result: &Result<(), Denied>) -> bool {
        matches!(result, Err(Denied::Escalation(_)))
    }

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
            (Owner, "", Action::TransferOwnership { first: false }, target(OTHER, Admin), OK),
            (Admin, "", Action::TransferOwnership { first: false }, target(OTHER, Admin), no("tenants.transferOwnership")),
            // A member on themselves: name and name parts, nothing else.
            (Member, "", Action::UpdateUser(&name), target(ME, Member), OK),
            (Member, "", Action::UpdateUser(&own_name), target(ME, Member), OK),
            (Member, "", Action::UpdateUser(&email), target(ME, Member), no("users.update")),
            (Member, "", Action::UpdateUser(&department), target(ME, Member), no("users.update")),
            (Member, "", Action::UpdateUser(&custom), target(ME, Member), no("users.update")),
            (Member, "um", Action::UpdateUser(&email), target(ME, Member), OK),
            // Nobody deletes, disables or demotes themselves.
            (Admin, "", Action::DeleteUser, target(ME, Admin), itself("delete")),
            (Admin, "", Action::UpdateUser(&enabled), target(ME, Admin), itself("disable")),
            (Admin, "", Action::SetRole(Member), target(ME, Admin), itself("demote")),
            (Owner, "", Action::DeleteUser, target(ME, Owner), itself("delete")),
            // ...but a caller without the right is told that first (issue 23).
            (Member, "", Action::SetRole(Admin), target(ME, Member), no("users.setRole")),
            (Member, "um", Action::SetRole(Admin), target(ME, Member), no("users.setRole")),
            (Member, "", Action::UpdateUser(&enabled), target(ME, Member), no("users.update")),
            (Member, "", Action::DeleteUser, target(ME, Member), no("users.delete")),
            (Member, "um", Action::DeleteUser, target(ME, Member), itself("delete")),
            (Member, "um", Action::DeleteUser, target(OTHER, Owner), no("users.delete")),
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
        let err = Denied::SelfAction("delete").into_error(Some(&t), Action::DeleteUser);
        assert_eq!(err.reason(), "SELF_ACTION_FORBIDDEN");
        assert!(err.to_string().contains("delete themselves"), "{err}");
        let err = Denied::SelfAction("promote").into_error(Some(&t), Action::SetRole(TenantRole::Admin));
        assert!(err.to_string().contains("promote themselves"), "{err}");
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
            expire_time: None,
            bound_to: None,
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
        assert!(escalates(&decide(
            &tenant_admin,
            Some(&tenant()),
            Action::CreateApiKey(&all),
            None
        )));
        let read = grant(&[Scope::Read], false, false);
        assert_eq!(
            decide(&tenant_admin, Some(&tenant()), Action::CreateApiKey(&read), None),
            OK
        );
        // Never a scope the caller lacks, nor acting for users when it may not.
        let writer = caller(None, "", Scopes::of(&[Scope::Read, Scope::Write, Scope::Admin]));
        let export = grant(&[Scope::Export], false, false);
        assert!(escalates(&decide(
            &writer,
            Some(&tenant()),
            Action::CreateApiKey(&export),
            None
        )));
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
        assert!(
            escalates(&decide(
                &reader_key,
                Some(&tenant()),
                Action::CreateApiKey(&grant(&[Scope::Read], true, false)),
                None
            )),
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
        let bound_member = KeyGrant {
            bound_to: target(OTHER, Member),
            ..read
        };
        assert_eq!(
            decide(&as_admin, Some(&tenant()), Action::RevokeApiKey(&bound_member), None),
            OK
        );
        // Reading a tenant and its import jobs: any reader in it.
        let reader = caller(None, "", Scopes::of(&[Scope::Read]));
        assert_eq!(decide(&reader, Some(&tenant()), Action::GetTenant, None), OK);
        assert_eq!(decide(&reader, Some(&tenant()), Action::GetImportJobs, None), OK);
        assert_eq!(
            decide(&reader, Some(&tenant()), Action::UpdateTenant, None),
            no("tenants.update")
        );
    }

    /// Keys made while acting, and ownership: nobody gains, through a key
    /// it makes or acting for nobody, more than it holds (issue 22).
    #[test]
    fn keys_made_while_acting_and_ownership() {
        let t = tenant();
        let owner_target = target(OTHER, Owner);
        let email = mask(&["email"]);
        let name = mask(&["display_name"]);
        // A console key acting for nobody: all scopes, yet ownership is not its.
        let console = caller(None, "", Scopes::ALL);
        let transfer = Action::TransferOwnership { first: false };
        assert_eq!(
            decide(&console, Some(&t), transfer, target(OTHER, Admin)),
            Err(Denied::OwnersOnly("tenants.transferOwnership"))
        );
        assert_eq!(
            decide(
                &console,
                Some(&t),
                Action::TransferOwnership { first: true },
                target(OTHER, Admin)
            ),
            OK,
            "it may name the first owner of a tenant that has none"
        );
        assert_eq!(
            decide(&console, Some(&t), Action::UpdateUser(&email), owner_target),
            OWNER
        );
        assert_eq!(
            decide(&console, Some(&t), Action::UpdateUser(&name), owner_target),
            OWNER
        );
        // An operator may hand ownership on and edit the owner, never disable or delete them.
        let operator = Caller {
            tenants: TenantScope::All,
            act_as_users: false,
            ..caller(None, "", Scopes::ALL)
        };
        assert_eq!(decide(&operator, Some(&t), transfer, target(OTHER, Admin)), OK);
        assert_eq!(
            decide(&operator, Some(&t), Action::UpdateUser(&email), owner_target),
            OK
        );
        assert_eq!(
            decide(
                &operator,
                Some(&t),
                Action::UpdateUser(&mask(&["enabled"])),
                owner_target
            ),
            OWNER
        );
        assert_eq!(decide(&operator, Some(&t), Action::DeleteUser, owner_target), OWNER);
        // The owner acting as themselves.
        let owner = caller(Some(Owner), "", Scopes::ALL);
        assert_eq!(decide(&owner, Some(&t), transfer, target(OTHER, Admin)), OK);

        // An admin acting through the console makes keys bound to themselves only.
        let admin = caller(Some(Admin), "", Scopes::ALL);
        let grant = |bound_to: Option<Target>, act_as_users: bool| KeyGrant {
            scopes: Scopes::ALL,
            act_as_users,
            all_tenants: false,
            expire_time: None,
            bound_to,
        };
        let own = grant(target(ME, Admin), false);
        assert_eq!(decide(&admin, Some(&t), Action::CreateApiKey(&own), None), OK);
        for wrong in [
            grant(None, false),
            grant(target(OTHER, Member), false),
            grant(target(ME, Admin), true),
        ] {
            assert!(
                escalates(&decide(&admin, Some(&t), Action::CreateApiKey(&wrong), None)),
                "{wrong:?}"
            );
        }
        // The key it made acts for that admin at every call: no more than an admin.
        let bound = Caller {
            act_as_users: false,
            ..admin.clone()
        };
        assert_eq!(
            decide(&bound, Some(&t), transfer, target(OTHER, Admin)),
            no("tenants.transferOwnership")
        );
        assert_eq!(
            decide(&bound, Some(&t), Action::UpdateUser(&email), owner_target),
            OWNER
        );
        assert_eq!(decide(&bound, Some(&t), Action::CreateApiKey(&own), None), OK);
        // Demoted: the same key now has a member's rights (the layer reads the
        // role anew each key refresh; disabled or deleted, it is refused there).
        let demoted = caller(Some(Member), "", Scopes::ALL);
        let demoted = Caller {
            act_as_users: false,
            ..demoted
        };
        let as_member = grant(target(ME, Member), false);
        assert_eq!(
            decide(&demoted, Some(&t), Action::CreateApiKey(&as_member), None),
            no("apiKeys.create")
        );
        assert_eq!(
            decide(&demoted, Some(&t), Action::DeleteUser, target(OTHER, Member)),
            no("users.delete")
        );
        // A key never outlives its maker.
        let at = |s: i64| Some(Timestamp::from_unix_micros(s * 1_000_000));
        let expiring = Caller {
            expire_time: at(100),
            ..console.clone()
        };
        let read = |expire_time| KeyGrant {
            scopes: Scopes::of(&[Scope::Read]),
            act_as_users: false,
            all_tenants: false,
            expire_time,
            bound_to: None,
        };
        assert_eq!(
            decide(&expiring, Some(&t), Action::CreateApiKey(&read(at(100))), None),
            OK
        );
        assert!(escalates(&decide(
            &expiring,
            Some(&t),
            Action::CreateApiKey(&read(at(101))),
            None
        )));
        assert!(escalates(&decide(
            &expiring,
            Some(&t),
            Action::CreateApiKey(&read(None)),
            None
        )));
        // Revoking: only what the caller could have made (an admin never
        // cuts the owner's or the console's keys; it may cut a leaked
        // service key within its scopes).
        let revoke = |c: &Caller, g: &KeyGrant| decide(c, Some(&t), Action::RevokeApiKey(g), None);
        assert!(escalates(&revoke(&admin, &grant(owner_target, false))));
        assert!(escalates(&revoke(&admin, &grant(None, true))));
        assert_eq!(revoke(&admin, &grant(target(OTHER, Member), false)), OK);
        assert_eq!(revoke(&admin, &read(None)), OK);
        assert_eq!(
            revoke(&admin, &read(at(1))),
            OK,
            "a key's expiry does not matter to revoke it"
        );
        let plain_admin_key = Caller {
            act_as_users: false,
            ..console.clone()
        };
        assert!(escalates(&revoke(
            &plain_admin_key,
            &grant(target(OTHER, Member), false)
        )));
        assert_eq!(revoke(&operator, &grant(owner_target, false)), OK);
    }

    /// An import's rows need the import scope, not write: a `read,import`
    /// key imports, and the acting user's role still applies row by row.
    #[test]
    fn import_rows_need_the_import_scope() {
        let t = tenant();
        let importer = caller(None, "", Scopes::of(&[Scope::Read, Scope::Import]));
        assert_eq!(decide_imported(&importer, &t, Action::CreateUser, None), OK);
        assert_eq!(
            decide_imported(&importer, &t, Action::DeleteUser, target(OTHER, Admin)),
            OK
        );
        assert_eq!(
            decide(&importer, Some(&t), Action::CreateUser, None),
            no("users.create")
        );
        let writer = caller(None, "", Scopes::of(&[Scope::Read, Scope::Write]));
        assert_eq!(
            decide_imported(&writer, &t, Action::CreateUser, None),
            no("users.create")
        );
        let member = caller(Some(Member), "um", Scopes::of(&[Scope::Read, Scope::Import]));
        assert_eq!(
            decide_imported(&member, &t, Action::UpdateUser(&mask(&["email"])), target(OTHER, Admin)),
            no("users.update")
        );
        assert_eq!(
            decide_imported(
                &importer,
                &t,
                Action::UpdateUser(&mask(&["email"])),
                target(OTHER, Owner)
            ),
            OWNER,
            "a tenant key acting for nobody does not edit the owner, in an import either"
        );
    }
}
