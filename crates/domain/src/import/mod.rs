//! Bulk import: options, the import job record, decoding, column mapping and
//! the per-row rules. The engine ([`engine::Importer`]) is fed file bytes or
//! parsed rows and hands back a result for every row as batches commit.

pub mod columns;
pub mod csv;
pub mod engine;
mod input;
mod job;
mod plan;
mod rights;
mod rows;
mod seen;
pub mod workbook;
mod writer;

pub use rows::unprotect_formula;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::tenant::TenantId;
use crate::text::Timestamp;

pub use self::csv::DeclaredEncoding;

/// At most this many creates and updates per import transaction (a
/// batch's plan is never split).
pub const GROUP_ROWS: usize = 20_000;

/// What an import does with the users of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportMode {
    CreateOnly,
    UpdateOnly,
    Upsert,
    FullSync,
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateOnly => "CREATE_ONLY",
            Self::UpdateOnly => "UPDATE_ONLY",
            Self::Upsert => "UPSERT",
            Self::FullSync => "FULL_SYNC",
        }
    }
}

/// How a row finds its existing user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MatchKey {
    #[default]
    Email,
    UserId,
    ExternalId,
}

/// The format of an import's file bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FileFormat {
    /// By the first bytes: a zip is an xlsx, an OLE compound file an xls,
    /// anything else CSV.
    #[default]
    Auto,
    Csv,
    Xlsx,
    Xls,
}

/// The options of one import, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOptions {
    pub mode: ImportMode,
    pub match_key: MatchKey,
    pub keep_admins: bool,
    pub skip_empty_values: bool,
    #[serde(with = "declared_encoding")]
    pub encoding: DeclaredEncoding,
    /// File header -> field name; "" ignores the column.
    pub column_mapping: BTreeMap<String, String>,
    pub validate_only: bool,
    pub allow_delete_all: bool,
    /// FULL_SYNC's delete guard, in percent of the tenant (0 = the default).
    #[serde(default)]
    pub max_delete_percent: u32,
    #[serde(default)]
    pub format: FileFormat,
    /// A workbook's sheet to read; empty for the first.
    #[serde(default)]
    pub sheet: String,
}

/// FULL_SYNC's delete guard: a file that would delete much of the tenant
/// (a truncated export, the wrong file) deletes nothing instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteGuard {
    /// The most users a FULL_SYNC may delete, in percent of the tenant.
    pub percent: u32,
}

impl DeleteGuard {
    /// The share a FULL_SYNC may delete unless told otherwise.
    pub const DEFAULT_PERCENT: u32 = 25;
    /// Deleting this many users is always allowed, whatever the share.
    pub const FLOOR: u64 = 10;

    /// The guard of `options` (`None`: no guard).
    pub fn of(options: &ImportOptions) -> Option<Self> {
        let percent = match options.max_delete_percent {
            0 => Self::DEFAULT_PERCENT,
            p => p,
        };
        (!options.allow_delete_all && percent < 100).then_some(Self { percent })
    }

    /// Whether deleting `would_delete` of a tenant's `users` is allowed;
    /// otherwise the error that says so, with the counts.
    pub fn check(self, would_delete: u64, users: u64) -> Result<(), crate::DomainError> {
        let limit = (users * u64::from(self.percent) / 100).max(Self::FLOOR);
        if would_delete <= limit {
            return Ok(());
        }
        Err(crate::DomainError::Precondition {
            reason: "FULL_SYNC_DELETE_GUARD",
            message: format!(
                "this FULL_SYNC would delete {would_delete} of the tenant's {users} users, more than the {}% \
                 ({limit} users) it may delete; nothing was deleted (the file's rows were imported). Check the \
                 file, or set max_delete_percent (--max-delete-percent) higher, 100 to turn the guard off",
                self.percent
            ),
        })
    }
}

mod declared_encoding {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::DeclaredEncoding;

    pub fn serialize<S: Serializer>(e: &DeclaredEncoding, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match e {
            DeclaredEncoding::Auto => "AUTO",
            DeclaredEncoding::Utf8 => "UTF8",
            DeclaredEncoding::ShiftJis => "SHIFT_JIS",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeclaredEncoding, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "UTF8" => DeclaredEncoding::Utf8,
            "SHIFT_JIS" => DeclaredEncoding::ShiftJis,
            _ => DeclaredEncoding::Auto,
        })
    }
}

/// What happened to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowOutcome {
    Created,
    Updated,
    Unchanged,
    Deleted,
    Skipped,
    Failed,
    /// FULL_SYNC kept a user the file does not list: the owner, the acting
    /// user, an admin under `keep_admins`, or one the caller may not delete.
    Protected,
}

/// The result of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowResult {
    /// Line where the row starts (or the position of a parsed row); 0 for
    /// users absent from a FULL_SYNC's file (deleted or protected).
    pub line: u64,
    pub outcome: RowOutcome,
    /// Resource name of the user, when known.
    pub user: String,
    pub email: String,
    /// For failures, and why a user was protected.
    pub failure: Option<RowFailure>,
}

/// Why a row failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFailure {
    pub reason: String,
    pub field: String,
    pub message: String,
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub skipped: u64,
    pub failed: u64,
    pub protected: u64,
}

impl ImportCounts {
    pub fn add(&mut self, outcome: RowOutcome) {
        match outcome {
            RowOutcome::Created => self.created += 1,
            RowOutcome::Updated => self.updated += 1,
            RowOutcome::Unchanged => self.unchanged += 1,
            RowOutcome::Deleted => self.deleted += 1,
            RowOutcome::Skipped => self.skipped += 1,
            RowOutcome::Failed => self.failed += 1,
            RowOutcome::Protected => self.protected += 1,
        }
        if !matches!(outcome, RowOutcome::Deleted | RowOutcome::Protected) {
            self.rows += 1;
        }
    }
}

/// Limits a server sets for every import (not the caller's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// The largest row, in bytes of values: a longer one fails alone with
    /// `RECORD_TOO_LARGE` and is never held in memory whole.
    pub max_record_bytes: usize,
    /// A RUNNING job whose heartbeat is older than this belongs to a server
    /// that stopped; running jobs renew theirs six times per lease.
    pub job_lease: std::time::Duration,
    /// An import that receives no new row for this long ends (ABORTED
    /// `IMPORT_IDLE_TIMEOUT`): a silent or trickling client cannot hold a
    /// FULL_SYNC lock, a transaction or a job for ever.
    pub idle_timeout: std::time::Duration,
    /// How large a workbook may be, spooled and inflated.
    pub workbook: workbook::WorkbookLimits,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: csv::DEFAULT_MAX_RECORD_BYTES,
            job_lease: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(60),
            workbook: workbook::WorkbookLimits::default(),
        }
    }
}

/// State of an import job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The server running it stopped (killed, crashed, or cut off from the
    /// database for longer than the job's lease) before it finished.
    Interrupted,
}

impl ImportState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Interrupted => "INTERRUPTED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The record an import leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportJob {
    pub tenant: TenantId,
    pub id: Uuid,
    pub actor: String,
    pub options: ImportOptions,
    pub state: ImportState,
    pub start_time: Timestamp,
    pub end_time: Option<Timestamp>,
    pub counts: ImportCounts,
    pub error: String,
}

impl ImportJob {
    pub fn resource_name(&self) -> String {
        format!("tenants/{}/importJobs/{}", self.tenant, self.id.hyphenated())
    }

    /// Parses `tenants/{tenant}/importJobs/{uuid}`.
    pub fn parse_name(field: &str, name: &str) -> Result<(TenantId, Uuid), crate::FieldViolation> {
        let bad = || {
            crate::FieldViolation::new(
                field,
                format!("{name:?} is not an import job name; expected tenants/{{tenant_id}}/importJobs/{{id}}"),
            )
        };
        let mut parts = name.split('/');
        let (Some("tenants"), Some(tenant), Some("importJobs"), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let tenant = TenantId::parse(field, tenant)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok((tenant, id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn options(max_delete_percent: u32, allow_delete_all: bool) -> ImportOptions {
        ImportOptions {
            mode: ImportMode::FullSync,
            match_key: MatchKey::Email,
            keep_admins: false,
            skip_empty_values: false,
            encoding: DeclaredEncoding::Auto,
            column_mapping: BTreeMap::new(),
            validate_only: false,
            allow_delete_all,
            max_delete_percent,
            format: FileFormat::Auto,
            sheet: String::new(),
        }
    }

    /// Which options have a guard, and at what share.
    #[test]
    fn the_delete_guard_of_the_options() {
        assert_eq!(DeleteGuard::of(&options(0, false)), Some(DeleteGuard { percent: 25 }));
        assert_eq!(DeleteGuard::of(&options(50, false)), Some(DeleteGuard { percent: 50 }));
        assert_eq!(DeleteGuard::of(&options(99, false)), Some(DeleteGuard { percent: 99 }));
        assert_eq!(DeleteGuard::of(&options(100, false)), None, "100 turns it off");
        assert_eq!(
            DeleteGuard::of(&options(0, true)),
            None,
            "allow_delete_all turns it off"
        );
    }

    /// The boundaries, exactly: the share (rounded down) or the floor of 10,
    /// whichever is more; one past it is refused, naming the counts.
    #[test]
    fn the_delete_guard_at_its_edges() {
        let guard = DeleteGuard { percent: 25 };
        for (users, limit) in [
            (0, 10),
            (7, 10),
            (40, 10),
            (43, 10),
            (44, 11),
            (100, 25),
            (1_000_001, 250_000),
        ] {
            assert!(guard.check(limit, users).is_ok(), "{limit} of {users}");
            let err = guard.check(limit + 1, users).unwrap_err();
            assert_eq!(err.reason(), "FULL_SYNC_DELETE_GUARD");
            let text = err.to_string();
            assert!(
                text.contains(&format!("delete {} of the tenant's {users} users", limit + 1)),
                "{text}"
            );
            assert!(text.contains(&format!("({limit} users)")), "{text}");
        }
        let half = DeleteGuard { percent: 50 };
        assert!(half.check(50, 100).is_ok());
        assert!(half.check(51, 100).is_err());
        assert!(half.check(10, 3).is_ok(), "the floor holds for a small tenant");
        assert!(half.check(11, 3).is_err());
    }
}
