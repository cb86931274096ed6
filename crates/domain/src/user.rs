//! Users: the resource, its validation rules (seed 001) and partial updates.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::email::Email;
use crate::error::{DomainError, FieldViolation, Violations};
use crate::tenant::{CUSTOM_SLOTS, CustomAttributeSchema, TenantId, custom_key, custom_slot};
use crate::tenant_role::{Capabilities, TenantRole};
use crate::text::{Revision, Timestamp, check_owned_text, check_text, text_problem};

/// Most characters in a display name (seed 001).
pub const DISPLAY_NAME_MAX_CHARS: usize = 2048;
/// Most characters in a custom attribute value (seed 001).
pub const CUSTOM_VALUE_MAX_CHARS: usize = 2048;
/// Most characters in an external id and the free-text profile fields.
pub const PROFILE_MAX_CHARS: usize = 256;
/// Longest `note` (other information, seed 003), in characters.
pub const NOTE_MAX_CHARS: usize = 1000;

/// The service-wide unique id of a user: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

impl UserId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// `tenants/{tenant}/users/{uuid}`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName {
    pub tenant: TenantId,
    pub id: UserId,
}

impl UserName {
    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        let bad = || {
            FieldViolation::new(
                field,
                format!("{name:?} is not a user name; expected tenants/{{tenant_id}}/users/{{user_id}}"),
            )
        };
        let mut parts = name.split('/');
        let (Some("tenants"), Some(tenant), Some("users"), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let tenant = TenantId::parse(field, tenant)?;
        let id =
            Uuid::parse_str(id).map_err(|_| FieldViolation::new(field, format!("{id:?} is not a user id (a UUID)")))?;
        Ok(Self { tenant, id: UserId(id) })
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenants/{}/users/{}", self.tenant, self.id)
    }
}

/// Account status (seed 001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UserStatus {
    #[default]
    Unconfirmed,
    Confirmed,
    ExternalProvider,
    ResetRequired,
    ForceChangePassword,
}

impl UserStatus {
    pub const ALL: [Self; 5] = [
        Self::Unconfirmed,
        Self::Confirmed,
        Self::ExternalProvider,
        Self::ResetRequired,
        Self::ForceChangePassword,
    ];

    /// The stored and filterable name, `CONFIRMED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unconfirmed => "UNCONFIRMED",
            Self::Confirmed => "CONFIRMED",
            Self::ExternalProvider => "EXTERNAL_PROVIDER",
            Self::ResetRequired => "RESET_REQUIRED",
            Self::ForceChangePassword => "FORCE_CHANGE_PASSWORD",
        }
    }
}

impl FromStr for UserStatus {
    type Err = String;

    /// Accepts `CONFIRMED`, `USER_STATUS_CONFIRMED` and the seed's `Confirmed`,
    /// `Force Change Password`, ignoring case, spaces and underscores.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The stored form, as every stored user and most files have it.
        if let Some(status) = Self::ALL.into_iter().find(|st| st.as_str() == s) {
            return Ok(status);
        }
        let norm: String = s
            .trim()
            .trim_start_matches("USER_STATUS_")
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .collect::<String>()
            .to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().replace('_', "") == norm)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?}; use one of UNCONFIRMED, CONFIRMED, EXTERNAL_PROVIDER, RESET_REQUIRED, FORCE_CHANGE_PASSWORD"
                )
            })
    }
}

/// The profile fields of seeds 002 and 004, all optional free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileField {
    GivenName,
    FamilyName,
    Title,
    Department,
    Company,
    JobRole,
    Phone,
    Mobile,
    Locale,
    TimeZone,
    /// Other information, free text (seed 003's その他の情報).
    Note,
}

impl ProfileField {
    pub const ALL: [Self; 11] = [
        Self::GivenName,
        Self::FamilyName,
        Self::Title,
        Self::Department,
        Self::Company,
        Self::JobRole,
        Self::Phone,
        Self::Mobile,
        Self::Locale,
        Self::TimeZone,
        Self::Note,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::GivenName => "given_name",
            Self::FamilyName => "family_name",
            Self::Title => "title",
            Self::Department => "department",
            Self::Company => "company",
            Self::JobRole => "job_role",
            Self::Phone => "phone",
            Self::Mobile => "mobile",
            Self::Locale => "locale",
            Self::TimeZone => "time_zone",
            Self::Note => "note",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The field's place in [`Self::ALL`] and in a [`Profile`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Validates a value of this field; empty is always allowed.
    fn check(self, value: &str) -> Result<String, FieldViolation> {
        let field = self.name();
        let (max, allowed): (usize, fn(char) -> bool) = match self {
            Self::Phone | Self::Mobile => (64, |c| c.is_ascii_digit() || " +-().#*xXetEXT".contains(c)),
            Self::Locale => (35, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            Self::TimeZone => (64, |c| c.is_ascii_alphanumeric() || "/_+-".contains(c)),
            Self::Note => (NOTE_MAX_CHARS, |_| true),
            _ => (PROFILE_MAX_CHARS, |_| true),
        };
        let value = check_text(field, value, max)?;
        match value.chars().find(|&c| !allowed(c)) {
            Some(c) => Err(FieldViolation::new(field, format!("must not contain {c:?}"))),
            None => Ok(value),
        }
    }
}

/// Profile values indexed by [`ProfileField`]; empty string = not set.
pub type Profile = [String; ProfileField::ALL.len()];

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub tenant: TenantId,
    pub id: UserId,
    pub email: Email,
    pub display_name: String,
    pub enabled: bool,
    pub status: UserStatus,
    /// Values of `custom_01`..`custom_10`; empty = not set.
    pub custom: [String; CUSTOM_SLOTS],
    pub external_id: Option<String>,
    pub profile: Profile,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
    pub revision: Revision,
    /// Changed only through the role operations (never by an update or an import).
    pub role: TenantRole,
    pub capabilities: Capabilities,
}

impl User {
    /// Whether the user counts as one of the tenant's administrators: an
    /// enabled admin or owner.
    pub fn administers(&self) -> bool {
        self.enabled && self.role >= TenantRole::Admin
    }

    pub fn name(&self) -> UserName {
        UserName {
            tenant: self.tenant.clone(),
            id: self.id,
        }
    }

    pub fn profile(&self, field: ProfileField) -> &str {
        &self.profile[field.index()]
    }
}

#[cfg(test)]
impl User {
    /// For tests: an enabled member of tenant `acme`, id `id`, `email`,
    /// named `name`, with nothing else set.
    #[allow(clippy::unwrap_used)]
    pub(crate) fn sample(id: u128, email: &str, name: &str) -> Self {
        Self {
            tenant: TenantId::parse("tenant", "acme").unwrap(),
            id: UserId(Uuid::from_u128(id)),
            email: Email::parse("email", email).unwrap(),
            display_name: name.to_owned(),
            enabled: true,
            status: UserStatus::default(),
            custom: Default::default(),
            external_id: None,
            profile: Default::default(),
            create_time: Timestamp::from_unix_micros(0),
            update_time: Timestamp::from_unix_micros(0),
            revision: Revision(1),
            role: TenantRole::Member,
            capabilities: Capabilities::default(),
        }
    }
}

/// The writable fields of a user as a caller sends them, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct UserInput {
    pub email: String,
    pub display_name: String,
    pub enabled: Option<bool>,
    pub status: Option<UserStatus>,
    /// `(key, value)` pairs such as `("custom_03", "Sales")`.
    pub custom: Vec<(String, String)>,
    pub external_id: String,
    pub profile: Vec<(ProfileField, String)>,
}

/// Which fields an update writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMask {
    pub email: bool,
    pub display_name: bool,
    pub enabled: bool,
    pub status: bool,
    pub external_id: bool,
    /// Slots to write; a slot masked but absent from the input is cleared.
    pub custom: [bool; CUSTOM_SLOTS],
    pub profile: [bool; ProfileField::ALL.len()],
}

impl UserMask {
    /// Every writable field.
    pub fn all() -> Self {
        Self {
            email: true,
            display_name: true,
            enabled: true,
            status: true,
            external_id: true,
            custom: [true; CUSTOM_SLOTS],
            profile: [true; ProfileField::ALL.len()],
        }
    }

    /// Parses update-mask paths. An empty mask means every field that is set
    /// (non-empty) in `input`, as AIP-134 describes; `*` means all fields.
    pub fn parse(paths: &[String], input: &UserInput) -> Result<Self, DomainError> {
        if paths.is_empty() {
            let mut mask = Self {
                email: !input.email.is_empty(),
                display_name: !input.display_name.is_empty(),
                enabled: input.enabled.is_some(),
                status: input.status.is_some(),
                external_id: !input.external_id.is_empty(),
                ..Self::default()
            };
            for (key, _) in &input.custom {
                match custom_slot(key) {
                    Some(slot) => mask.custom[slot] = true,
                    None => return Err(unknown_custom(key)),
                }
            }
            for (field, value) in &input.profile {
                mask.profile[field.index()] = !value.is_empty();
            }
            return Ok(mask);
        }
        let mut mask = Self::default();
        for path in paths {
            match path.as_str() {
                "*" => mask = Self::all(),
                "email" => mask.email = true,
                "display_name" => mask.display_name = true,
                "enabled" => mask.enabled = true,
                "status" => mask.status = true,
                "external_id" => mask.external_id = true,
                "custom_attributes" => mask.custom = [true; CUSTOM_SLOTS],
                "role" | "capabilities" => {
                    return Err(DomainError::invalid(
                        "update_mask",
                        format!(
                            "{path:?} is not changed by UpdateUser: use SetUserRole, SetUserCapabilities or \
                             TransferTenantOwnership"
                        ),
                    ));
                }
                other => {
                    if let Some(key) = other.strip_prefix("custom_attributes.") {
                        let slot = custom_slot(key).ok_or_else(|| unknown_custom(key))?;
                        mask.custom[slot] = true;
                    } else if let Some(field) = ProfileField::from_name(other) {
                        mask.profile[field.index()] = true;
                    } else {
                        return Err(DomainError::invalid(
                            "update_mask",
                            format!(
                                "unknown or read-only field {other:?}; writable: email, display_name, enabled, status, \
                                 external_id, custom_attributes, custom_attributes.custom_NN and the profile fields"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(mask)
    }
}

fn unknown_custom(key: &str) -> DomainError {
    DomainError::invalid(
        format!("custom_attributes.{key}"),
        format!("{key:?} is not a custom attribute; use custom_01 to custom_10"),
    )
}

impl User {
    /// Builds a new user from caller input, applying every rule.
    pub fn create(
        tenant: TenantId,
        input: UserInput,
        schema: &CustomAttributeSchema,
        now: Timestamp,
    ) -> Result<Self, DomainError> {
        let mut user = Self {
            tenant,
            id: UserId::new(),
            email: Email::from_trusted(String::new()),
            display_name: String::new(),
            enabled: true,
            status: UserStatus::default(),
            custom: Default::default(),
            external_id: None,
            profile: Default::default(),
            create_time: now,
            update_time: now,
            revision: Revision::FIRST,
            role: TenantRole::Member,
            capabilities: Capabilities::default(),
        };
        let enabled = input.enabled.unwrap_or(true);
        let status = input.status.unwrap_or_default();
        user.write(
            UserInput {
                enabled: Some(enabled),
                status: Some(status),
                ..input
            },
            &UserMask::all(),
            schema,
        )?;
        Ok(user)
    }

    /// Writes the masked fields of `input` into `self`, checking every rule and
    /// reporting all bad fields at once. Returns whether anything changed.
    /// On error `self` may be partly written; callers drop it.
    pub fn apply(
        &mut self,
        input: UserInput,
        mask: &UserMask,
        schema: &CustomAttributeSchema,
    ) -> Result<bool, DomainError> {
        let before = self.clone();
        self.write(input, mask, schema)?;
        Ok(*self != before)
    }

    /// [`Self::apply`] for callers that compare for themselves (an import
    /// compares the stored user with the written one anyway).
    pub fn write(
        &mut self,
        input: UserInput,
        mask: &UserMask,
        schema: &CustomAttributeSchema,
    ) -> Result<(), DomainError> {
        let mut v = Violations::default();
        if mask.email
            && let Some(email) = v.check(Email::parse("email", &input.email))
        {
            self.email = email;
        }
        if mask.display_name {
            if input.display_name.trim().is_empty() {
                v.add("display_name", "display name is required");
            } else if input.display_name.chars().any(crate::email::is_bidi_control) {
                v.add(
                    "display_name",
                    "display name must not contain bidirectional override or isolate characters (U+202A..U+202E, \
                     U+2066..U+2069): they make a name display as something it is not",
                );
            } else if let Some(name) = v.check(check_owned_text(
                "display_name",
                input.display_name,
                DISPLAY_NAME_MAX_CHARS,
            )) {
                self.display_name = name;
            }
        }
        if mask.enabled {
            self.enabled = input.enabled.unwrap_or(true);
        }
        if mask.status {
            self.status = input.status.unwrap_or_default();
        }
        if mask.external_id
            && let Some(id) = v.check(check_owned_text("external_id", input.external_id, PROFILE_MAX_CHARS))
        {
            self.external_id = (!id.is_empty()).then_some(id);
        }
        let mut custom_given = [false; CUSTOM_SLOTS];
        for (key, value) in input.custom {
            let field = || format!("custom_attributes.{key}");
            let Some(slot) = custom_slot(&key) else {
                v.add(
                    field(),
                    format!("{key:?} is not a custom attribute; use custom_01 to custom_10"),
                );
                continue;
            };
            custom_given[slot] = true;
            if mask.custom[slot] {
                // The field is named only when the value is bad.
                match text_problem(&value, CUSTOM_VALUE_MAX_CHARS) {
                    None => self.custom[slot] = value,
                    Some(problem) => v.add(field(), problem),
                }
            }
        }
        for slot in 0..CUSTOM_SLOTS {
            if mask.custom[slot] && !custom_given[slot] {
                self.custom[slot].clear();
            }
            // Only slots this write touches: a slot made required later does not
            // block unrelated edits of older users.
            if mask.custom[slot] && schema[slot].required && self.custom[slot].is_empty() {
                let label = &schema[slot].label;
                let named = if label.is_empty() {
                    String::new()
                } else {
                    format!(" ({label})")
                };
                v.add(
                    format!("custom_attributes.{}", custom_key(slot)),
                    format!(
                        "{}{named} is required by the tenant's custom attribute settings",
                        custom_key(slot)
                    ),
                );
            }
        }
        let mut profile_given = [false; ProfileField::ALL.len()];
        for (field, value) in input.profile {
            profile_given[field.index()] = true;
            if mask.profile[field.index()]
                && let Some(value) = v.check(field.check(&value))
            {
                self.profile[field.index()] = value;
            }
        }
        for (i, given) in profile_given.iter().enumerate() {
            if mask.profile[i] && !given {
                self.profile[i].clear();
            }
        }
        v.finish(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("t", "acme").unwrap()
    }

    fn input() -> UserInput {
        UserInput {
            email: "a@example.com".into(),
            display_name: "A".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_defaults() {
        let u = User::create(tenant(), input(), &Default::default(), Timestamp::now()).unwrap();
        assert!(u.enabled);
        assert_eq!(u.status, UserStatus::Unconfirmed);
        assert_eq!(u.id.0.get_version_num(), 7);
    }

    #[test]
    fn all_violations_reported_at_once() {
        let bad = UserInput {
            email: "a..b@x".into(),
            display_name: "x".repeat(DISPLAY_NAME_MAX_CHARS + 1),
            custom: vec![("custom_01".into(), "y".repeat(2049)), ("custom_11".into(), "z".into())],
            ..Default::default()
        };
        let Err(DomainError::Invalid(v)) = User::create(tenant(), bad, &Default::default(), Timestamp::now()) else {
            panic!("expected invalid");
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "email",
                "display_name",
                "custom_attributes.custom_01",
                "custom_attributes.custom_11"
            ]
        );
    }

    #[test]
    fn required_custom_attribute() {
        let mut schema: CustomAttributeSchema = Default::default();
        schema[2].required = true;
        schema[2].label = "Department code".into();
        let err = User::create(tenant(), input(), &schema, Timestamp::now()).unwrap_err();
        assert!(
            err.to_string().contains("custom_03 (Department code) is required"),
            "{err}"
        );
        let ok = UserInput {
            custom: vec![("custom_03".into(), "D1".into())],
            ..input()
        };
        assert!(User::create(tenant(), ok, &schema, Timestamp::now()).is_ok());
    }

    #[test]
    fn masks() {
        let mut u = User::create(tenant(), input(), &Default::default(), Timestamp::now()).unwrap();
        let change = UserInput {
            display_name: "B".into(),
            email: "ignored@example.com".into(),
            ..Default::default()
        };
        let mask = UserMask::parse(&["display_name".into()], &change).unwrap();
        assert!(u.apply(change, &mask, &Default::default()).unwrap());
        assert_eq!(u.display_name, "B");
        assert_eq!(u.email.as_str(), "a@example.com");
        assert!(UserMask::parse(&["create_time".into()], &UserInput::default()).is_err());
    }

    #[test]
    fn status_names() {
        assert_eq!("Force Change Password".parse(), Ok(UserStatus::ForceChangePassword));
        assert_eq!("USER_STATUS_CONFIRMED".parse(), Ok(UserStatus::Confirmed));
        assert!("nope".parse::<UserStatus>().is_err());
    }

    #[test]
    fn user_names() {
        let id = UserId::new();
        let name = UserName::parse("name", &format!("tenants/acme/users/{id}")).unwrap();
        assert_eq!(name.id, id);
        assert!(UserName::parse("name", "tenants/acme/users/nope").is_err());
        assert!(UserName::parse("name", "tenants/acme").is_err());
    }
}
