//! An import's rights, row by row: the same permission function as the
//! single-user RPCs ([`access::decide`]) for every write, the `role`
//! column (an import never grants or changes a role: seed 000's
//! 新規管理者の作成 is not possible by import), and who a FULL_SYNC keeps
//! although its file does not list them.

use std::collections::HashSet;

use uuid::Uuid;

use super::RowFailure;
use super::columns::Column;
use super::rows::{cell, failure, row_failure};
use crate::access::{self, Action, Caller, Target, TenantRole};
use crate::error::DomainError;
use crate::repo::{Kept, Protection};
use crate::tenant::TenantId;
use crate::user::{User, UserId, UserMask};

/// Whether `caller` may write a row of `cells` as `planned` over the
/// stored `current` (`None`: a new user), `mask` naming the fields it
/// changes; a row that changes nothing needs no right. Checks the row's
/// `role` cell first: empty or the stored role (member for a new user)
/// passes, anything else fails `ROLE_NOT_ASSIGNABLE_BY_IMPORT`.
pub(super) fn permit(
    caller: &Caller,
    tenant: &TenantId,
    cells: &[(Column, String)],
    current: Option<&User>,
    planned: &User,
    mask: &UserMask,
) -> Result<(), RowFailure> {
    if let Some(asked) = cell(cells, Column::Role).map(str::trim).filter(|v| !v.is_empty()) {
        let asked: TenantRole = asked
            .parse()
            .map_err(|e: String| failure("INVALID_ARGUMENT", "role", e))?;
        let stored = current.map_or(TenantRole::Member, |u| u.role);
        if asked != stored {
            let message = match current {
                None => format!(
                    "an import creates members only, not the role {asked}: import the user as a member (or with \
                     the role cell empty), then SetUserRole"
                ),
                Some(_) => format!(
                    "the user's role is {stored} and the row says {asked}: an import never changes a role; use \
                     SetUserRole or TransferTenantOwnership, or leave the role cell empty"
                ),
            };
            return Err(failure("ROLE_NOT_ASSIGNABLE_BY_IMPORT", "role", message));
        }
    }
    let (action, target) = match current {
        None => (Action::CreateUser, None),
        Some(user) if user == planned => return Ok(()),
        Some(user) => (Action::UpdateUser(mask), Some(Target::of(user))),
    };
    access::decide_imported(caller, tenant, action, target)
        .map_err(|denied| row_failure(denied.into_error(Some(tenant), action)))
}

/// Who a FULL_SYNC by `caller` keeps although the file does not list them
/// (`listed`: the ids it matched): the owner, the acting user, and admins
/// with `keep_admins` or when the caller may not delete them. Without
/// `keep_admins`, a file that does not list the acting user is an error
/// (seed 000: 操作中の管理者が CSV ファイルに含まれていないとエラー).
pub(super) fn protection(
    caller: &Caller,
    tenant: &TenantId,
    keep_admins: bool,
    listed: &HashSet<Uuid>,
) -> Result<Protection, DomainError> {
    let mut protect = Protection::default();
    if let Some(acting) = &caller.acting {
        if !keep_admins && !listed.contains(&acting.user.0) {
            return Err(DomainError::Precondition {
                reason: "OPERATING_ADMIN_ABSENT",
                message: format!(
                    "the file does not list the acting user, {} ({}): a FULL_SYNC without keep_admins must list \
                     the user who runs it (seed 000). Nothing was deleted (the file's rows were imported); add \
                     that user to the file, or set keep_admins",
                    acting.email, acting.user
                ),
            });
        }
        protect.users.push((acting.user.0, Kept::ActingUser));
    }
    protect.roles.push((TenantRole::Owner, Kept::Owner));
    for role in [TenantRole::Admin, TenantRole::Member] {
        let someone = Target {
            user: UserId(Uuid::nil()),
            role,
        };
        if role == TenantRole::Admin && keep_admins {
            protect.roles.push((role, Kept::KeepAdmins));
        } else if access::decide_imported(caller, tenant, Action::DeleteUser, Some(someone)).is_err() {
            protect.roles.push((role, Kept::MissingPermission));
        }
    }
    Ok(protect)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::access::{ActingUser, Capabilities, Principal, Scope, Scopes, TenantScope};

    fn tenant() -> TenantId {
        TenantId::parse("tenant", "acme").unwrap()
    }

    fn user(id: u128, role: TenantRole) -> User {
        User {
            role,
            ..User::sample(id, &format!("u{id}@example.com"), &format!("User {id}"))
        }
    }

    /// A key of acme with `scopes`, acting for user 1 of `role` (with
    /// `user_management` for a member) or for nobody.
    fn caller(scopes: &[Scope], acting: Option<TenantRole>) -> Caller {
        Caller {
            request: Default::default(),
            principal: Principal::key(Uuid::from_u128(99)),
            tenants: TenantScope::One(tenant()),
            scopes: Scopes::of(scopes),
            act_as_users: true,
            expire_time: None,
            acting: acting.map(|role| ActingUser {
                user: UserId(Uuid::from_u128(1)),
                email: "u1@example.com".into(),
                role,
                capabilities: Capabilities {
                    user_management: true,
                    export_users: false,
                },
            }),
        }
    }

    fn renamed(u: &User) -> (User, UserMask) {
        let planned = User {
            display_name: "Renamed".into(),
            ..u.clone()
        };
        let mask = UserMask {
            display_name: true,
            ..UserMask::default()
        };
        (planned, mask)
    }

    fn reason(r: Result<(), RowFailure>) -> String {
        r.err().map(|f| f.reason).unwrap_or_default()
    }

    /// A row asks the caller's rights under the import scope; an unchanged
    /// row needs none; a role cell is checked, never written.
    #[test]
    fn a_rows_rights() {
        let t = tenant();
        let import_key = caller(&[Scope::Read, Scope::Import], None);
        let write_key = caller(&[Scope::Read, Scope::Write], None);
        let member = user(2, TenantRole::Member);
        let admin = user(3, TenantRole::Admin);
        let owner = user(4, TenantRole::Owner);
        let (planned, mask) = renamed(&member);
        assert_eq!(reason(permit(&import_key, &t, &[], None, &member, &mask)), "");
        assert_eq!(reason(permit(&import_key, &t, &[], Some(&member), &planned, &mask)), "");
        assert_eq!(
            reason(permit(&write_key, &t, &[], None, &member, &mask)),
            "MISSING_PERMISSION",
            "writing through an import needs the import scope"
        );
        assert_eq!(
            reason(permit(
                &write_key,
                &t,
                &[],
                Some(&member),
                &member,
                &UserMask::default()
            )),
            "",
            "an unchanged row needs no right"
        );
        // The owner is edited only by themselves or an operator.
        let (planned, mask) = renamed(&owner);
        assert_eq!(
            reason(permit(&import_key, &t, &[], Some(&owner), &planned, &mask)),
            "OWNER_PROTECTED"
        );
        // A user manager acting: members yes, admins no.
        let manager = caller(&[Scope::Read, Scope::Import], Some(TenantRole::Member));
        let (planned, mask) = renamed(&admin);
        assert_eq!(
            reason(permit(&manager, &t, &[], Some(&admin), &planned, &mask)),
            "MISSING_PERMISSION"
        );
        let (planned, mask) = renamed(&member);
        assert_eq!(reason(permit(&manager, &t, &[], Some(&member), &planned, &mask)), "");
        // The role cell: empty or the stored role passes, anything else fails.
        let role = |v: &str| vec![(Column::Role, v.to_owned())];
        assert_eq!(reason(permit(&import_key, &t, &role(""), None, &member, &mask)), "");
        assert_eq!(
            reason(permit(&import_key, &t, &role("member"), None, &member, &mask)),
            ""
        );
        assert_eq!(
            reason(permit(&import_key, &t, &role("admin"), None, &member, &mask)),
            "ROLE_NOT_ASSIGNABLE_BY_IMPORT"
        );
        assert_eq!(
            reason(permit(
                &import_key,
                &t,
                &role("admin"),
                Some(&admin),
                &admin,
                &UserMask::default()
            )),
            ""
        );
        assert_eq!(
            reason(permit(&import_key, &t, &role("boss"), None, &member, &mask)),
            "INVALID_ARGUMENT"
        );
    }

    /// Who a FULL_SYNC keeps although its file does not list them.
    #[test]
    fn whom_a_full_sync_keeps() {
        let t = tenant();
        let listed_acting: HashSet<Uuid> = [Uuid::from_u128(1)].into();
        let none: HashSet<Uuid> = HashSet::new();
        // An import key acting for nobody: the owner only.
        let import_key = caller(&[Scope::Read, Scope::Import], None);
        let p = protection(&import_key, &t, false, &none).unwrap();
        assert_eq!(p.roles, [(TenantRole::Owner, Kept::Owner)]);
        assert!(p.users.is_empty());
        // A key without the import scope deletes nobody: every role kept.
        let reader = caller(&[Scope::Read, Scope::Write], None);
        let p = protection(&reader, &t, false, &none).unwrap();
        assert_eq!(
            p.roles,
            [
                (TenantRole::Owner, Kept::Owner),
                (TenantRole::Admin, Kept::MissingPermission),
                (TenantRole::Member, Kept::MissingPermission)
            ]
        );
        // keep_admins keeps admins.
        let p = protection(&import_key, &t, true, &none).unwrap();
        assert_eq!(p.reason(Uuid::from_u128(7), TenantRole::Admin), Some(Kept::KeepAdmins));
        assert_eq!(p.reason(Uuid::from_u128(7), TenantRole::Member), None);
        // An acting admin: must be in the file without keep_admins, and is kept.
        let admin = caller(&[Scope::Read, Scope::Import], Some(TenantRole::Admin));
        let err = protection(&admin, &t, false, &none).unwrap_err();
        assert_eq!(err.reason(), "OPERATING_ADMIN_ABSENT");
        let p = protection(&admin, &t, false, &listed_acting).unwrap();
        assert_eq!(p.reason(Uuid::from_u128(1), TenantRole::Admin), Some(Kept::ActingUser));
        assert_eq!(p.reason(Uuid::from_u128(5), TenantRole::Admin), None, "other admins go");
        assert!(
            protection(&admin, &t, true, &none).is_ok(),
            "keep_admins lifts the rule"
        );
        // A user manager acting: admins are not theirs to delete.
        let manager = caller(&[Scope::Read, Scope::Import], Some(TenantRole::Member));
        let p = protection(&manager, &t, false, &listed_acting).unwrap();
        assert_eq!(
            p.reason(Uuid::from_u128(5), TenantRole::Admin),
            Some(Kept::MissingPermission)
        );
        assert_eq!(p.reason(Uuid::from_u128(6), TenantRole::Member), None);
    }
}
