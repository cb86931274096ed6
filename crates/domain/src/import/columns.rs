//! Which user field each column (or parsed-row key) holds.

use std::collections::BTreeMap;

use crate::tenant::custom_slot;
use crate::user::ProfileField;

use super::MatchKey;

/// A user field a column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// `userid`: the id of an existing user (the match key for USER_ID).
    UserId,
    Email,
    /// `name` (seed 001) or `display_name`.
    DisplayName,
    Enabled,
    Status,
    ExternalId,
    Custom(usize),
    Profile(ProfileField),
    /// `role`: checked, never written (an import never changes a role).
    Role,
    /// Read-only columns of our export (`created`, `updated`): accepted, ignored.
    ReadOnly,
    /// Mapped to "" by the caller: ignored.
    Ignored,
}

impl Column {
    /// The column of a field name, ignoring case and surrounding spaces.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        Some(match name.as_str() {
            "userid" | "user_id" => Self::UserId,
            "email" => Self::Email,
            "name" | "display_name" => Self::DisplayName,
            "enabled" => Self::Enabled,
            "status" => Self::Status,
            "external_id" => Self::ExternalId,
            "role" => Self::Role,
            "created" | "updated" | "create_time" | "update_time" => Self::ReadOnly,
            // The columns `userdir import` adds to its errors file, so a fixed
            // errors file imports back as is.
            "import_line" | "import_field" | "import_reason" | "import_message" | "import_raw" => Self::ReadOnly,
            other => match custom_slot(other) {
                Some(slot) => Self::Custom(slot),
                None => Self::Profile(ProfileField::from_name(other)?),
            },
        })
    }

    /// The API field name, for row errors.
    pub fn field(self) -> String {
        match self {
            Self::UserId => "userid".into(),
            Self::Email => "email".into(),
            Self::DisplayName => "display_name".into(),
            Self::Enabled => "enabled".into(),
            Self::Status => "status".into(),
            Self::ExternalId => "external_id".into(),
            Self::Role => "role".into(),
            Self::Custom(slot) => format!("custom_attributes.{}", crate::tenant::custom_key(slot)),
            Self::Profile(p) => p.name().into(),
            Self::ReadOnly | Self::Ignored => String::new(),
        }
    }

    /// The column that identifies a row's user under `key`.
    pub fn for_key(key: MatchKey) -> Self {
        match key {
            MatchKey::Email => Self::Email,
            MatchKey::UserId => Self::UserId,
            MatchKey::ExternalId => Self::ExternalId,
        }
    }
}

/// Names the known columns, for error messages.
pub const KNOWN_COLUMNS: &str = "userid, email, name (or display_name), enabled, status, external_id, \
     custom_01..custom_10, given_name, family_name, title, department, company, job_role, phone, mobile, \
     locale, time_zone, note, role (checked: an import never changes a role), and the read-only created, updated";

/// Resolves a header (or row key) through the caller's mapping, then by name.
pub fn resolve(header: &str, mapping: &BTreeMap<String, String>) -> Result<Column, String> {
    let trimmed = header.trim();
    let mapped = mapping.get(trimmed).or_else(|| {
        mapping
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(trimmed))
            .map(|(_, v)| v)
    });
    match mapped {
        Some(target) if target.trim().is_empty() => Ok(Column::Ignored),
        Some(target) => Column::from_name(target).ok_or_else(|| {
            format!("column_mapping maps {trimmed:?} to {target:?}, which is not a field; known: {KNOWN_COLUMNS}")
        }),
        None => Column::from_name(trimmed).ok_or_else(|| {
            format!(
                "unknown column {trimmed:?}; known columns are {KNOWN_COLUMNS}; map other headers with column_mapping"
            )
        }),
    }
}

/// The header of a file, resolved.
#[derive(Debug, Clone)]
pub struct ColumnMap {
    pub columns: Vec<Column>,
}

impl ColumnMap {
    /// Resolves every header; any unknown, empty or duplicate header, or a
    /// missing key column, is a file-level error.
    pub fn from_header(header: &[String], mapping: &BTreeMap<String, String>, key: MatchKey) -> Result<Self, String> {
        let mut columns = Vec::with_capacity(header.len());
        for (i, h) in header.iter().enumerate() {
            if h.trim().is_empty() {
                return Err(format!("column {} has no header name", i + 1));
            }
            let column = resolve(h, mapping).map_err(|e| format!("column {}: {e}", i + 1))?;
            if !matches!(column, Column::Ignored | Column::ReadOnly)
                && let Some(j) = columns.iter().position(|c| *c == column)
            {
                return Err(format!(
                    "columns {} ({:?}) and {} ({:?}) both hold {}",
                    j + 1,
                    header[j].trim(),
                    i + 1,
                    h.trim(),
                    column.field()
                ));
            }
            columns.push(column);
        }
        let key_column = Column::for_key(key);
        if !columns.contains(&key_column) {
            return Err(format!(
                "the header has no {} column, which this import matches users by",
                key_column.field()
            ));
        }
        Ok(Self { columns })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn header(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn seed_headers() {
        let seed001 = header(&["name", "email", "custom_01", "custom_10"]);
        let map = ColumnMap::from_header(&seed001, &BTreeMap::new(), MatchKey::Email).unwrap();
        assert_eq!(
            map.columns,
            [Column::DisplayName, Column::Email, Column::Custom(0), Column::Custom(9)]
        );
        let export = header(&[" UserID ", "Email", "name", "enabled", "status", "created", "updated"]);
        assert!(ColumnMap::from_header(&export, &BTreeMap::new(), MatchKey::UserId).is_ok());
    }

    #[test]
    fn header_errors() {
        let none = BTreeMap::new();
        let e = ColumnMap::from_header(&header(&["email", "nickname"]), &none, MatchKey::Email).unwrap_err();
        assert!(e.contains("column 2: unknown column \"nickname\""), "{e}");
        let e = ColumnMap::from_header(&header(&["email", "name", "Email"]), &none, MatchKey::Email).unwrap_err();
        assert!(e.contains("columns 1") && e.contains("both hold email"), "{e}");
        let e = ColumnMap::from_header(&header(&["name"]), &none, MatchKey::Email).unwrap_err();
        assert!(e.contains("no email column"), "{e}");
        let e = ColumnMap::from_header(&header(&["email", ""]), &none, MatchKey::Email).unwrap_err();
        assert!(e.contains("no header name"), "{e}");
    }

    #[test]
    fn mapping() {
        let mapping = BTreeMap::from([
            ("氏名".to_owned(), "display_name".to_owned()),
            ("メール".to_owned(), "email".to_owned()),
            ("備考".to_owned(), String::new()),
        ]);
        let map = ColumnMap::from_header(&header(&["氏名", "メール", "備考"]), &mapping, MatchKey::Email).unwrap();
        assert_eq!(map.columns, [Column::DisplayName, Column::Email, Column::Ignored]);
        let bad = BTreeMap::from([("x".to_owned(), "nope".to_owned())]);
        assert!(ColumnMap::from_header(&header(&["x", "email"]), &bad, MatchKey::Email).is_err());
    }
}
