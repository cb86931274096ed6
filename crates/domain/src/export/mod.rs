//! Export: the columns and encodings of seed 001's CSV, formula protection,
//! the paged walk over a snapshot, and the workbook ([`xlsx`]).

pub mod xlsx;

use std::borrow::Cow;

use encoding_rs::SHIFT_JIS;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admission::Slot;
use crate::csvfmt::{push_field, push_record};
use crate::error::DomainError;
use crate::list::UserQuery;
use crate::repo::{RepoResult, UserSnapshot};
use crate::tenant::{TenantId, custom_key, custom_slot};
use crate::user::{ProfileField, User};

/// A column of an export, named as the import reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportColumn {
    UserId,
    Email,
    Name,
    Enabled,
    Status,
    Created,
    Updated,
    ExternalId,
    /// `member`, `admin` or `owner`: on request, not in seed 001's default.
    Role,
    Custom(usize),
    Profile(ProfileField),
}

/// Seed 001's export columns.
pub fn default_columns() -> Vec<ExportColumn> {
    let mut columns = vec![
        ExportColumn::UserId,
        ExportColumn::Email,
        ExportColumn::Name,
        ExportColumn::Enabled,
        ExportColumn::Status,
        ExportColumn::Created,
        ExportColumn::Updated,
    ];
    columns.extend((0..10).map(ExportColumn::Custom));
    columns
}

impl ExportColumn {
    pub fn parse(name: &str) -> Result<Self, DomainError> {
        let n = name.trim().to_ascii_lowercase();
        Ok(match n.as_str() {
            "userid" | "user_id" => Self::UserId,
            "email" => Self::Email,
            "name" | "display_name" => Self::Name,
            "enabled" => Self::Enabled,
            "status" => Self::Status,
            "created" | "create_time" => Self::Created,
            "updated" | "update_time" => Self::Updated,
            "external_id" => Self::ExternalId,
            "role" => Self::Role,
            other => match (custom_slot(other), ProfileField::from_name(other)) {
                (Some(slot), _) => Self::Custom(slot),
                (None, Some(field)) => Self::Profile(field),
                (None, None) => {
                    return Err(DomainError::invalid(
                        "columns",
                        format!("{name:?} is not an exportable user field"),
                    ));
                }
            },
        })
    }

    pub fn header(self) -> String {
        match self {
            Self::UserId => "userid".into(),
            Self::Email => "email".into(),
            Self::Name => "name".into(),
            Self::Enabled => "enabled".into(),
            Self::Status => "status".into(),
            Self::Created => "created".into(),
            Self::Updated => "updated".into(),
            Self::ExternalId => "external_id".into(),
            Self::Role => "role".into(),
            Self::Custom(slot) => custom_key(slot),
            Self::Profile(field) => field.name().into(),
        }
    }

    /// The cell of `u`; borrowed where the user holds the text as written.
    pub fn value(self, u: &User) -> Cow<'_, str> {
        match self {
            Self::UserId => Cow::Owned(u.id.to_string()),
            Self::Email => Cow::Borrowed(u.email.as_str()),
            Self::Name => Cow::Borrowed(&u.display_name),
            Self::Enabled => Cow::Borrowed(if u.enabled { "true" } else { "false" }),
            Self::Status => Cow::Borrowed(u.status.as_str()),
            Self::Created => Cow::Owned(u.create_time.to_rfc3339()),
            Self::Updated => Cow::Owned(u.update_time.to_rfc3339()),
            Self::ExternalId => Cow::Borrowed(u.external_id.as_deref().unwrap_or_default()),
            Self::Role => Cow::Borrowed(u.role.as_str()),
            Self::Custom(slot) => Cow::Borrowed(&u.custom[slot]),
            Self::Profile(field) => Cow::Borrowed(u.profile(field)),
        }
    }
}

/// OWASP CSV-injection protection: a leading `'` before `= + - @ TAB CR`,
/// and before a `'` that precedes one of those or another `'`, so the import's
/// [`crate::import::unprotect_formula`] gives back exactly the value.
pub fn protect_formula(value: &str) -> Cow<'_, str> {
    let trigger = |s: &str| {
        matches!(
            s.as_bytes().first(),
            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\n')
        )
    };
    let quoted = value
        .strip_prefix('\'')
        .is_some_and(|rest| trigger(rest) || rest.starts_with('\''));
    if trigger(value) || quoted {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// CSV encoding of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvEncoding {
    Utf8Bom,
    Utf8,
    ShiftJis,
}

/// Settings of a CSV export.
#[derive(Debug, Clone)]
pub struct CsvSettings {
    pub columns: Vec<ExportColumn>,
    pub encoding: CsvEncoding,
    pub crlf: bool,
    pub protect_formulas: bool,
    /// Shift-JIS: replace unmappable characters with `?` instead of failing.
    pub replace_unmappable: bool,
}

/// A cell Shift-JIS cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmappable {
    pub user: String,
    pub column: String,
}

/// Writes users as CSV bytes in the chosen encoding.
pub struct CsvWriter {
    settings: CsvSettings,
    line: String,
    /// Cells replaced (REPLACE) or refused (FAIL).
    pub unmappable: Vec<Unmappable>,
}

fn sjis_mappable(text: &str) -> bool {
    !SHIFT_JIS.encode(text).2
}

impl CsvWriter {
    pub fn new(settings: CsvSettings) -> Self {
        Self {
            settings,
            line: String::new(),
            unmappable: Vec::new(),
        }
    }

    fn ending(&self) -> &'static str {
        if self.settings.crlf { "\r\n" } else { "\n" }
    }

    fn encode(&self, text: &str, out: &mut Vec<u8>) {
        match self.settings.encoding {
            CsvEncoding::ShiftJis => out.extend_from_slice(&SHIFT_JIS.encode(text).0),
            _ => out.extend_from_slice(text.as_bytes()),
        }
    }

    /// The BOM (UTF8_BOM) and the header row.
    pub fn header(&mut self, out: &mut Vec<u8>) {
        if self.settings.encoding == CsvEncoding::Utf8Bom {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        let names: Vec<String> = self.settings.columns.iter().map(|c| c.header()).collect();
        let mut line = String::new();
        push_record(&mut line, names.iter().map(String::as_str), self.ending());
        self.encode(&line, out);
    }

    /// One user's row. With Shift-JIS and no replacement, a cell that cannot
    /// be encoded is recorded in `unmappable` and the row is not written.
    pub fn row(&mut self, user: &User, out: &mut Vec<u8>) -> bool {
        let mut ok = true;
        self.line.clear();
        for (i, &column) in self.settings.columns.iter().enumerate() {
            let mut value = column.value(user);
            if self.settings.protect_formulas
                && let Cow::Owned(protected) = protect_formula(&value)
            {
                value = Cow::Owned(protected);
            }
            if self.settings.encoding == CsvEncoding::ShiftJis && !value.is_ascii() && !sjis_mappable(&value) {
                self.unmappable.push(Unmappable {
                    user: user.name().to_string(),
                    column: column.header(),
                });
                if self.settings.replace_unmappable {
                    value = Cow::Owned(
                        value
                            .chars()
                            .map(|c| {
                                if sjis_mappable(c.encode_utf8(&mut [0; 4])) {
                                    c
                                } else {
                                    '?'
                                }
                            })
                            .collect(),
                    );
                } else {
                    ok = false;
                }
            }
            if i > 0 {
                self.line.push(',');
            }
            push_field(&mut self.line, &value);
        }
        if ok {
            self.line.push_str(self.ending());
            let line = std::mem::take(&mut self.line);
            self.encode(&line, out);
            self.line = line;
        }
        ok
    }
}

/// Walks a tenant's users over one snapshot, page by page, in the query's
/// order. A task of its own reads the pages, one or two ahead: the database
/// works on the next page while the caller formats and sends this one.
pub struct Exporter<S> {
    /// Until the first page is asked for.
    start: Option<(S, TenantId, UserQuery)>,
    /// `Ok(None)` marks the end; a channel closed without it is an error,
    /// so that an export can never look complete when it is not.
    pages: Option<mpsc::Receiver<RepoResult<Option<Vec<User>>>>>,
    reader: Option<JoinHandle<()>>,
    /// The change feed's cursor as of the snapshot.
    change_cursor: String,
    /// The export's place under the server's caps, given back when it ends.
    _slot: Slot,
}

/// Pages read ahead of the caller.
const READ_AHEAD: usize = 2;

impl<S> Drop for Exporter<S> {
    fn drop(&mut self) {
        // The snapshot (and its connection) is released at once.
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

impl<S: UserSnapshot> Exporter<S> {
    pub(crate) fn new(
        snapshot: S,
        tenant: TenantId,
        query: UserQuery,
        cursor: crate::feed::Cursor,
        slot: Slot,
    ) -> Self {
        Self {
            change_cursor: cursor.encode(&tenant),
            start: Some((snapshot, tenant, query)),
            pages: None,
            reader: None,
            _slot: slot,
        }
    }

    /// The change feed's cursor as of the export's snapshot: following the
    /// feed from it misses no change after the export and repeats none.
    pub fn change_cursor(&self) -> &str {
        &self.change_cursor
    }

    /// How many users the export selects, counting up to `cap` (so that a
    /// large tenant is not counted whole); before the first page only.
    pub async fn count_up_to(&mut self, cap: u64) -> Result<u64, DomainError> {
        let Some((snapshot, tenant, query)) = self.start.as_mut() else {
            return Err(DomainError::storage("an export is counted before its first page"));
        };
        snapshot.count_users(tenant, query, cap).await
    }

    /// The next page of at most `size` users (fixed by the first call), or
    /// `None` when every user was returned.
    pub async fn next_page(&mut self, size: u32) -> Result<Option<Vec<User>>, DomainError> {
        if let Some((snapshot, tenant, query)) = self.start.take() {
            let (tx, rx) = mpsc::channel(READ_AHEAD);
            self.reader = Some(tokio::spawn(snapshot.send_pages(tenant, query, size, tx)));
            self.pages = Some(rx);
        }
        let Some(pages) = self.pages.as_mut() else {
            return Ok(None);
        };
        match pages.recv().await {
            Some(Ok(Some(users))) => Ok(Some(users)),
            Some(Ok(None)) => {
                self.pages = None;
                Ok(None)
            }
            Some(Err(e)) => Err(e),
            None => Err(DomainError::storage("the export's reader stopped before the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::import::unprotect_formula;

    #[test]
    fn formula_protection_round_trips() {
        for v in [
            "=SUM(A1)", "+81", "-1", "@x", "\tx", "\rx", "\n=1", "'\n=1", "'=x", "''=x", "'abc", "'", "plain", "", "''",
        ] {
            assert_eq!(unprotect_formula(&protect_formula(v)), v, "{v:?}");
            if v.starts_with('\n') {
                assert_eq!(
                    protect_formula(v),
                    format!("'{v}"),
                    "a cell starting with LF is protected"
                );
            }
        }
        assert_eq!(protect_formula("=1"), "'=1");
        assert_eq!(protect_formula("'abc"), "'abc");
    }
}
