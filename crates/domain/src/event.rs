//! Events: every change to a tenant's data, recorded by the store in the
//! same transaction as the change, numbered densely per tenant in commit
//! order. Read two ways: the audit log (people) and the change feed
//! (programs). What an event may hold is decided here: never a secret.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::access::Caller;
use crate::apikey::ApiKey;
use crate::import::ImportJob;
use crate::tenant::{CUSTOM_SLOTS, Tenant, TenantId, custom_key};
use crate::text::Timestamp;
use crate::user::{ProfileField, User};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    UserCreated,
    UserUpdated,
    UserDeleted,
    UserRoleSet,
    UserCapabilitiesSet,
    TenantCreated,
    TenantUpdated,
    TenantOwnerTransferred,
    ApiKeyCreated,
    ApiKeyRevoked,
    ImportStarted,
    ImportFinished,
}

impl EventType {
    pub const ALL: [Self; 12] = [
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserDeleted,
        Self::UserRoleSet,
        Self::UserCapabilitiesSet,
        Self::TenantCreated,
        Self::TenantUpdated,
        Self::TenantOwnerTransferred,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::ImportStarted,
        Self::ImportFinished,
    ];

    /// `user.created`, as events and filters name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserDeleted => "user.deleted",
            Self::UserRoleSet => "user.role_set",
            Self::UserCapabilitiesSet => "user.capabilities_set",
            Self::TenantCreated => "tenant.created",
            Self::TenantUpdated => "tenant.updated",
            Self::TenantOwnerTransferred => "tenant.owner_transferred",
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::ImportStarted => "import.started",
            Self::ImportFinished => "import.finished",
        }
    }
}

impl EventType {
    /// An API key's event: only callers who may list keys see it in the feed.
    pub fn is_api_key(self) -> bool {
        matches!(self, Self::ApiKeyCreated | Self::ApiKeyRevoked)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not an event type"))
    }
}

/// Who made a change and through which request, as they were then: an
/// event reads right after its acting user is renamed or deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The API key of the call; `None` for the server itself (a job it
    /// recovers, the key a deployment supplies).
    pub key: Option<Uuid>,
    /// The certificate mapping that stood for the key.
    pub certificate: Option<String>,
    /// `tenants/{t}/users/{id}` the call acted for.
    pub acting_user: Option<String>,
    pub acting_user_email: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// The import whose rows made the change.
    pub import_job: Option<Uuid>,
}

impl Origin {
    /// The origin of changes made for `caller`.
    pub fn of(caller: &Caller) -> Self {
        let acting = caller.acting.as_ref();
        Self {
            key: Some(caller.principal.key),
            certificate: caller.principal.certificate.clone(),
            acting_user: caller.principal.acting_user.clone(),
            acting_user_email: acting.map(|a| a.email.clone()),
            request_id: caller.request.request_id.clone(),
            trace_id: caller.request.trace_id.clone(),
            import_job: None,
        }
    }

    /// Changes the server makes by itself.
    pub fn server() -> Self {
        Self::default()
    }

    /// The same origin, for the rows of import `job`.
    pub fn for_import(&self, job: Uuid) -> Self {
        Self {
            import_job: Some(job),
            ..self.clone()
        }
    }

    /// `apikey:…`, or `server` for the server's own changes.
    pub fn principal(&self) -> String {
        match self.key {
            Some(key) => format!("apikey:{}", key.simple()),
            None => "server".to_owned(),
        }
    }
}

/// The request a call came in, for events and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestIds {
    /// `x-request-id`, the caller's or one the server made.
    pub request_id: Option<String>,
    /// The W3C trace id of the call's span.
    pub trace_id: Option<String>,
}

/// The resource as the change left it (a deleted user: as it was when
/// deleted). An API key's image never holds its hash: see [`Image::api_key`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    User(Box<User>),
    Tenant(Box<Tenant>),
    ApiKey(ApiKey),
    ImportJob(ImportJob),
}

impl Image {
    /// A key's image: everything but its secret's hash.
    pub fn api_key(key: &ApiKey) -> Self {
        let mut key = key.clone();
        key.hash = crate::apikey::SecretHash::redacted();
        Self::ApiKey(key)
    }
}

/// One change, as a write path hands it to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: EventType,
    /// The resource's name (`tenants/acme/users/…`).
    pub resource: String,
    /// Its revision after the change (0 for resources without one).
    pub revision: i64,
    /// The fields the change wrote (field mask paths); empty for creations
    /// and deletions.
    pub paths: Vec<String>,
    /// The import row (1-based line or sheet row) that made it.
    pub line: Option<u64>,
    pub after: Image,
}

impl Change {
    /// A change of `user`, of `kind`, writing `paths`.
    pub fn user(kind: EventType, user: &User, paths: Vec<String>) -> Self {
        Self {
            kind,
            resource: user.name().to_string(),
            revision: user.revision.0,
            paths,
            line: None,
            after: Image::User(Box::new(user.clone())),
        }
    }

    pub fn tenant(kind: EventType, tenant: &Tenant, paths: Vec<String>) -> Self {
        Self {
            kind,
            resource: tenant.id.resource_name(),
            revision: tenant.revision.0,
            paths,
            line: None,
            after: Image::Tenant(Box::new(tenant.clone())),
        }
    }

    pub fn api_key(kind: EventType, key: &ApiKey) -> Self {
        Self {
            kind,
            resource: crate::keys::key_resource_name(key.id),
            revision: 0,
            paths: Vec::new(),
            line: None,
            after: Image::api_key(key),
        }
    }

    pub fn import_job(kind: EventType, job: &ImportJob) -> Self {
        Self {
            kind,
            resource: job.resource_name(),
            revision: 0,
            paths: Vec::new(),
            line: None,
            after: Image::ImportJob(job.clone()),
        }
    }

    /// The same change, made by import row `line`.
    pub fn at_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }
}

/// A recorded change: what the audit log and the change feed read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub tenant: TenantId,
    /// Dense per tenant, in commit order: 1, 2, 3…
    pub seq: i64,
    pub id: Uuid,
    pub time: Timestamp,
    pub change: Change,
    pub origin: Origin,
}

impl Event {
    /// `tenants/{t}/auditEvents/{seq}`.
    pub fn name(&self) -> String {
        format!("{}/auditEvents/{}", self.tenant.resource_name(), self.seq)
    }
}

/// The field mask paths in which `after` differs from `before`, in the
/// order of the `User` message (the fields an update or import row wrote).
pub fn changed_user_paths(before: &User, after: &User) -> Vec<String> {
    let mut paths = Vec::new();
    let mut differs = |changed: bool, path: &str| {
        if changed {
            paths.push(path.to_owned());
        }
    };
    differs(before.email != after.email, "email");
    differs(before.display_name != after.display_name, "display_name");
    differs(before.enabled != after.enabled, "enabled");
    differs(before.status != after.status, "status");
    for slot in 0..CUSTOM_SLOTS {
        // Named only when it differs: an imported update runs this per row.
        if before.custom[slot] != after.custom[slot] {
            differs(true, &format!("custom_attributes.{}", custom_key(slot)));
        }
    }
    differs(before.external_id != after.external_id, "external_id");
    for field in ProfileField::ALL {
        differs(before.profile(field) != after.profile(field), field.name());
    }
    differs(before.role != after.role, "role");
    differs(before.capabilities != after.capabilities, "capabilities");
    paths
}

/// The field mask paths in which tenant `after` differs from `before`.
pub fn changed_tenant_paths(before: &Tenant, after: &Tenant) -> Vec<String> {
    let mut paths = Vec::new();
    if before.display_name != after.display_name {
        paths.push("display_name".to_owned());
    }
    if before.seat_limit != after.seat_limit {
        paths.push("seat_limit".to_owned());
    }
    if before.audit_retention_days != after.audit_retention_days {
        paths.push("audit_retention_days".to_owned());
    }
    for slot in 0..CUSTOM_SLOTS {
        if before.custom_attributes[slot] != after.custom_attributes[slot] {
            paths.push(format!("custom_attributes.{}", custom_key(slot)));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn types_read_back_from_their_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
        }
        assert!("user.exploded".parse::<EventType>().is_err());
    }

    #[test]
    fn changed_paths_name_what_differs() {
        let before = User::sample(1, "a@example.com", "A");
        let mut after = before.clone();
        assert!(changed_user_paths(&before, &after).is_empty());
        after.display_name = "B".into();
        after.custom[2] = "x".into();
        after.profile[ProfileField::Note.index()] = "n".into();
        assert_eq!(
            changed_user_paths(&before, &after),
            ["display_name", "custom_attributes.custom_03", "note"]
        );
    }
}
