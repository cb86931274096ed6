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
