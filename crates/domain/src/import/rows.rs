//! One row of an import, from cells to what the row asks for: the match
//! key, the writable fields, and the failures a row can have on its own.

use xxhash_rust::xxh3::xxh3_64;

use super::columns::Column;
use super::csv::FileError;
use super::{RowFailure, RowOutcome, RowResult};
use crate::email::Email;
use crate::error::DomainError;
use crate::tenant::custom_key;
use crate::user::{User, UserInput, UserMask, UserStatus};

/// A row waiting for its batch.
pub(super) struct Pending {
    pub(super) line: u64,
    pub(super) cells: Result<Vec<(Column, String)>, RowFailure>,
    /// How often the row ran before: a row whose write lost a race with
    /// another writer runs again (up to the planner's `ROW_ATTEMPTS`); its key
    /// was checked for duplicates in the file the first time.
    pub(super) attempt: u8,
}

/// A row's cells as one string and an index: about half the memory of the
/// cells themselves, in two allocations instead of one per cell. What a
/// row whose write is in flight keeps, to run again if it loses a race.
pub(super) struct PackedCells {
    text: String,
    /// Each cell's column and where its value ends in `text`.
    ends: Vec<(Column, u32)>,
}

impl PackedCells {
    pub(super) fn pack(cells: Vec<(Column, String)>) -> Self {
        let mut text = String::with_capacity(cells.iter().map(|(_, v)| v.len()).sum());
        let mut ends = Vec::with_capacity(cells.len());
        for (column, value) in cells {
            if matches!(column, Column::Ignored | Column::ReadOnly) {
                continue;
            }
            text.push_str(&value);
            ends.push((column, u32::try_from(text.len()).unwrap_or(u32::MAX)));
        }
        Self { text, ends }
    }

    pub(super) fn unpack(self) -> Vec<(Column, String)> {
        let mut start = 0;
        self.ends
            .into_iter()
            .map(|(column, end)| {
                let end = end as usize;
                let value = self.text.get(start..end).unwrap_or_default().to_owned();
                start = end;
                (column, value)
            })
            .collect()
    }
}

/// What a row's match key resolved to.
pub(super) enum Key {
    Email(Email),
    Id(uuid::Uuid),
    /// USER_ID matching, empty cell: a new user.
    NewId,
    External(String),
}

impl Key {
    /// The hash the in-file duplicate check keeps (`None`: no key).
    pub(super) fn hash(&self) -> Option<u64> {
        match self {
            Key::Email(e) => Some(xxh3_64(e.key().as_bytes())),
            Key::Id(id) => Some(xxh3_64(id.as_bytes())),
            Key::External(x) => Some(xxh3_64(x.as_bytes())),
            Key::NewId => None,
        }
    }
}

/// A validated row, ready to compare with the stored user.
pub(super) struct Prepared {
    pub(super) line: u64,
    pub(super) key: Key,
    pub(super) cells: Vec<(Column, String)>,
    pub(super) attempt: u8,
}

pub(super) fn failure(reason: &str, field: impl Into<String>, message: impl Into<String>) -> RowFailure {
    RowFailure {
        reason: reason.to_owned(),
        field: field.into(),
        message: message.into(),
    }
}

pub(super) fn file_error(e: FileError) -> DomainError {
    DomainError::invalid("file", format!("line {}: {}", e.line, e.message))
}

/// A domain error about one row, as a row failure.
pub(super) fn row_failure(err: DomainError) -> RowFailure {
    match err {
        DomainError::Invalid(v) => {
            let field = v.first().map(|v| v.field.clone()).unwrap_or_default();
            let message = v
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ");
            failure("INVALID_ARGUMENT", field, message)
        }
        DomainError::AlreadyExists { field, .. } => {
            let reason = err.reason();
            failure(reason, field, err.to_string())
        }
        DomainError::EtagMismatch { .. } => failure(
            "CONCURRENT_MODIFICATION",
            "",
            "the user was changed by someone else during the import; run the import again",
        ),
        // Never the database's own text in a row result: it stays in the log.
        other => {
            if let DomainError::Storage(source) | DomainError::Unavailable(source) | DomainError::StorageFull(source) =
                &other
            {
                tracing::error!(error = %source, "an import row failed in the database");
            }
            failure(other.reason(), "", other.public_message())
        }
    }
}

/// Undoes the export's formula protection: `'=1` -> `=1`, `''x` -> `'x`.
pub fn unprotect_formula(value: &str) -> &str {
    match value.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r', '\n', '\'']) => rest,
        _ => value,
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "enabled" | "有効" => Some(true),
        "false" | "0" | "no" | "n" | "disabled" | "無効" => Some(false),
        _ => None,
    }
}

/// The writable fields of a row and, for updates, which of them it writes.
/// Empty cells never clear `email`, `external_id`, `enabled` or `status`
/// (seed 000: identifiers cannot be blanked by import); with
/// `skip_empty_values` no empty cell writes anything.
pub(super) fn row_input(cells: &[(Column, String)], skip_empty: bool) -> Result<(UserInput, UserMask), RowFailure> {
    let mut input = UserInput::default();
    let mut mask = UserMask::default();
    for (column, value) in cells {
        let empty = value.is_empty();
        if empty
            && (skip_empty
                || matches!(
                    column,
                    Column::Email | Column::ExternalId | Column::Enabled | Column::Status
                ))
        {
            continue;
        }
        match *column {
            Column::Email => {
                input.email = value.trim().to_owned();
                mask.email = true;
            }
            Column::DisplayName => {
                input.display_name = value.clone();
                mask.display_name = true;
            }
            Column::Enabled => {
                let enabled = parse_bool(value)
                    .ok_or_else(|| failure("INVALID_ARGUMENT", "enabled", format!("{value:?} is not true or false")))?;
                input.enabled = Some(enabled);
                mask.enabled = true;
            }
            Column::Status => {
                let status: UserStatus = value
                    .parse()
                    .map_err(|e: String| failure("INVALID_ARGUMENT", "status", e))?;
                input.status = Some(status);
                mask.status = true;
            }
            Column::ExternalId => {
                input.external_id = value.clone();
                mask.external_id = true;
            }
            Column::Custom(slot) => {
                input.custom.push((custom_key(slot), value.clone()));
                mask.custom[slot] = true;
            }
            Column::Profile(field) => {
                input.profile.push((field, value.clone()));
                mask.profile[field as usize] = true;
            }
            // The planner checks the role against the stored one.
            Column::UserId | Column::Role | Column::ReadOnly | Column::Ignored => {}
        }
    }
    Ok((input, mask))
}

pub(super) fn cell(cells: &[(Column, String)], column: Column) -> Option<&str> {
    cells.iter().find(|(c, _)| *c == column).map(|(_, v)| v.as_str())
}

impl RowResult {
    pub(super) fn done(line: u64, outcome: RowOutcome, user: &User) -> Self {
        Self {
            line,
            outcome,
            user: user.name().to_string(),
            email: user.email.as_str().to_owned(),
            failure: None,
        }
    }

    pub(super) fn failed(line: u64, email: String, failure: RowFailure) -> Self {
        Self {
            line,
            outcome: RowOutcome::Failed,
            user: String::new(),
            email,
            failure: Some(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn formula_protection_is_undone_exactly() {
        assert_eq!(unprotect_formula("'=SUM(A1)"), "=SUM(A1)");
        assert_eq!(unprotect_formula("'+81 3"), "+81 3");
        assert_eq!(unprotect_formula("''=x"), "'=x");
        assert_eq!(unprotect_formula("'abc"), "'abc");
        assert_eq!(unprotect_formula("'"), "'");
        assert_eq!(unprotect_formula("=raw"), "=raw");
    }

    #[test]
    fn packed_cells_unpack_exactly() {
        let cells = vec![
            (Column::Email, "a@example.com".to_owned()),
            (Column::DisplayName, String::new()),
            (Column::Ignored, "dropped".to_owned()),
            (Column::Custom(2), "髙橋, \"x\"".to_owned()),
        ];
        let kept: Vec<_> = cells.iter().filter(|(c, _)| *c != Column::Ignored).cloned().collect();
        assert_eq!(PackedCells::pack(cells).unpack(), kept);
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("無効"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}

#[cfg(test)]
mod storage_text_tests {
    use super::*;

    /// The database's own text never reaches a row result.
    #[test]
    fn row_failures_carry_public_messages() {
        let sentinel = "INSERT INTO users VALUES ('sentinel-6d1f')";
        for err in [
            DomainError::storage(sentinel),
            DomainError::Unavailable(sentinel.into()),
            DomainError::StorageFull(sentinel.into()),
        ] {
            let reason = err.reason();
            let f = row_failure(err);
            assert_eq!(f.reason, reason);
            assert!(!f.message.contains("sentinel"), "{f:?}");
            assert!(!f.message.is_empty());
        }
    }
}
