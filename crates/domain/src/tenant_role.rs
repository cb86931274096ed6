//! What a user is in their tenant (seeds 003 and 004): a role, and the
//! capabilities a member may be granted. The rules about them live in the
//! `access` module; each user carries them.

/// A user's role in their tenant, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TenantRole {
    Member,
    Admin,
    Owner,
}

impl TenantRole {
    /// As stored, filtered on and exported: `member`, `admin`, `owner`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantRole::Member => "member",
            TenantRole::Admin => "admin",
            TenantRole::Owner => "owner",
        }
    }
}

impl std::fmt::Display for TenantRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TenantRole {
    type Err = String;

    /// `member`, `admin` or `owner`, in any case.
    fn from_str(text: &str) -> Result<Self, String> {
        [TenantRole::Member, TenantRole::Admin, TenantRole::Owner]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| format!("{text:?} is not a role: member, admin or owner"))
    }
}

/// What a member may be granted beyond their role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Seed 004's user management: list, create, import and edit members.
    pub user_management: bool,
    /// Seed 003's per-user right to export the directory.
    pub export_users: bool,
}
