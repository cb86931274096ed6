//! Tenants: one per customer organization, with a seat limit and the custom
//! attribute schema of seed 001.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, FieldViolation, Violations};
use crate::text::{Revision, Timestamp, check_text};

/// Number of custom attribute slots (`custom_01`..`custom_10`, seed 001).
pub const CUSTOM_SLOTS: usize = 10;
/// Most characters in a tenant display name or a custom attribute label.
pub const TENANT_TEXT_MAX_CHARS: usize = 256;

/// A tenant id: a readable slug such as `acme`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// 2..=63 characters of `a-z`, `0-9` and `-`, starting with a letter and not
    /// ending with `-` (usable in DNS names and URLs as is).
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let valid = (2..=63).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && !raw.ends_with('-')
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(
                field,
                format!(
                    "tenant id {raw:?} is invalid: use 2 to 63 lower-case letters, digits and '-', \
                     starting with a letter and not ending with '-'"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The resource name, `tenants/{id}`.
    pub fn resource_name(&self) -> String {
        format!("tenants/{}", self.0)
    }

    /// Parses a resource name `tenants/{id}`.
    pub fn from_resource_name(field: &str, name: &str) -> Result<Self, FieldViolation> {
        match name.strip_prefix("tenants/") {
            Some(id) if !id.contains('/') => Self::parse(field, id),
            _ => Err(FieldViolation::new(
                field,
                format!("{name:?} is not a tenant name; expected tenants/{{tenant_id}}"),
            )),
        }
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Settings of one custom attribute slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomAttributeDef {
    pub label: String,
    pub required: bool,
    pub visible: bool,
}

impl Default for CustomAttributeDef {
    fn default() -> Self {
        Self {
            label: String::new(),
            required: false,
            visible: true,
        }
    }
}

/// The key of slot `index` (0-based): `custom_01` for 0.
pub fn custom_key(index: usize) -> String {
    format!("custom_{:02}", index + 1)
}

/// The 0-based slot of a key such as `custom_07`, if it is one.
pub fn custom_slot(key: &str) -> Option<usize> {
    let n: usize = key.strip_prefix("custom_")?.parse().ok()?;
    let index = n.checked_sub(1)?;
    (index < CUSTOM_SLOTS && key.len() == 9).then_some(index)
}

/// The schema of all ten slots.
pub type CustomAttributeSchema = [CustomAttributeDef; CUSTOM_SLOTS];

/// The longest a tenant may keep its events: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub display_name: String,
    /// 0 = no limit.
    pub seat_limit: u32,
    pub custom_attributes: CustomAttributeSchema,
    /// Seats in use; maintained by the store.
    pub user_count: u32,
    /// Days its events are kept; 0 = the server's default.
    pub audit_retention_days: u32,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
    pub revision: Revision,
}

/// The writable settings of a tenant, as a caller sends them.
#[derive(Debug, Clone, Default)]
pub struct TenantSettings {
    pub display_name: String,
    pub seat_limit: u32,
    /// `(key, definition)` pairs; slots not listed keep their current settings.
    pub custom_attributes: Vec<(String, CustomAttributeDef)>,
    /// 0 = the server's default.
    pub audit_retention_days: u32,
}

/// Which settings an update touches.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantMask {
    pub display_name: bool,
    pub seat_limit: bool,
    pub custom_attributes: bool,
    pub audit_retention_days: bool,
}

impl TenantMask {
    /// Parses update-mask paths; an empty mask means every field set in `settings`.
    pub fn parse(paths: &[String], settings: &TenantSettings) -> Result<Self, DomainError> {
        if paths.is_empty() {
            return Ok(Self {
                display_name: !settings.display_name.is_empty(),
                seat_limit: settings.seat_limit != 0,
                custom_attributes: !settings.custom_attributes.is_empty(),
                audit_retention_days: settings.audit_retention_days != 0,
            });
        }
        let mut mask = Self::default();
        for path in paths {
            match path.as_str() {
                "display_name" => mask.display_name = true,
                "seat_limit" => mask.seat_limit = true,
                "custom_attributes" => mask.custom_attributes = true,
                "audit_retention_days" => mask.audit_retention_days = true,
                "*" => {
                    mask = Self {
                        display_name: true,
                        seat_limit: true,
                        custom_attributes: true,
                        audit_retention_days: true,
                    }
                }
                other => {
                    return Err(DomainError::invalid(
                        "update_mask",
                        format!(
                            "unknown field {other:?}; allowed: display_name, seat_limit, custom_attributes, \
                             audit_retention_days"
                        ),
                    ));
                }
            }
        }
        Ok(mask)
    }
}

impl Tenant {
    /// Builds a new tenant from validated settings.
    pub fn create(id: TenantId, settings: TenantSettings, now: Timestamp) -> Result<Self, DomainError> {
        let mut tenant = Self {
            id,
            display_name: String::new(),
            seat_limit: 0,
            custom_attributes: Default::default(),
            user_count: 0,
            audit_retention_days: 0,
            create_time: now,
            update_time: now,
            revision: Revision::FIRST,
        };
        let all = TenantMask {
            display_name: true,
            seat_limit: true,
            custom_attributes: true,
            audit_retention_days: true,
        };
        tenant.apply(settings, all, now)?;
        Ok(tenant)
    }

    /// Applies the masked settings, validating them all at once.
    pub fn apply(&mut self, settings: TenantSettings, mask: TenantMask, now: Timestamp) -> Result<(), DomainError> {
        let mut v = Violations::default();
        if mask.display_name
            && let Some(name) = v.check(check_text(
                "display_name",
                &settings.display_name,
                TENANT_TEXT_MAX_CHARS,
            ))
        {
            if name.trim().is_empty() {
                v.add("display_name", "display name is required");
            }
            self.display_name = name;
        }
        if mask.seat_limit {
            self.seat_limit = settings.seat_limit;
        }
        if mask.audit_retention_days {
            if settings.audit_retention_days > MAX_RETENTION_DAYS {
                v.add(
                    "audit_retention_days",
                    format!("at most {MAX_RETENTION_DAYS} days (0: the server's default)"),
                );
            } else {
                self.audit_retention_days = settings.audit_retention_days;
            }
        }
        if mask.custom_attributes {
            let mut seen = [false; CUSTOM_SLOTS];
            for (key, def) in settings.custom_attributes {
                let field = format!("custom_attributes.{key}");
                let Some(slot) = custom_slot(&key) else {
                    v.add(
                        field,
                        format!("{key:?} is not a custom attribute slot; use custom_01 to custom_10"),
                    );
                    continue;
                };
                if std::mem::replace(&mut seen[slot], true) {
                    v.add(field, format!("{key} is listed twice"));
                    continue;
                }
                if let Some(label) = v.check(check_text(&format!("{field}.label"), &def.label, TENANT_TEXT_MAX_CHARS)) {
                    self.custom_attributes[slot] = CustomAttributeDef { label, ..def };
                }
            }
        }
        v.finish(())?;
        self.update_time = now;
        Ok(())
    }
}
