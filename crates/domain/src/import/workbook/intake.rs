//! A workbook import's intake: bytes into the spool while the input comes,
//! then, once it has ended, the sheet's rows through the header's column map
//! into rows waiting for their batch, a batch at a time.

use std::collections::BTreeMap;

use super::cell::{Cell, column_name};
use super::read::{Row, SheetRows};
use super::spool::Spool;
use super::{Workbook, WorkbookLimits};
use crate::error::DomainError;
use crate::import::MatchKey;
use crate::import::columns::{Column, ColumnMap};
use crate::import::rows::{Pending, failure};
use crate::user::ProfileField;

/// A workbook being received, then read.
pub(in crate::import) struct WorkbookIntake {
    kind: Workbook,
    sheet: String,
    limits: WorkbookLimits,
    max_row_bytes: usize,
    state: State,
    columns: Option<ColumnMap>,
}

enum State {
    Receiving(Spool),
    Reading(SheetRows),
    Read,
}

impl WorkbookIntake {
    pub(in crate::import) fn new(
        kind: Workbook,
        sheet: String,
        limits: WorkbookLimits,
        max_row_bytes: usize,
    ) -> Result<Self, DomainError> {
        Ok(Self {
            kind,
            sheet,
            limits,
            max_row_bytes,
            state: State::Receiving(Spool::new(limits.max_bytes)?),
            columns: None,
        })
    }

    /// The next bytes of the file.
    pub(in crate::import) fn push(&mut self, bytes: &[u8]) -> Result<(), DomainError> {
        match &mut self.state {
            State::Receiving(spool) => spool.write(bytes),
            State::Reading(_) | State::Read => Err(DomainError::invalid("chunk", "file bytes after the end message")),
        }
    }

    /// The input ended: reads the next rows of the sheet into `out` (the
    /// first call starts the reading); how many, or `None` once the sheet
    /// is read whole.
    pub(in crate::import) async fn read(
        &mut self,
        mapping: &BTreeMap<String, String>,
        key: MatchKey,
        out: &mut Vec<Pending>,
    ) -> Result<Option<usize>, DomainError> {
        if matches!(self.state, State::Receiving(_)) {
            let State::Receiving(spool) = std::mem::replace(&mut self.state, State::Read) else {
                return Ok(None);
            };
            let file = spool.into_file()?;
            let sheet = std::mem::take(&mut self.sheet);
            self.state = State::Reading(SheetRows::open(file, self.kind, sheet, self.limits, self.max_row_bytes));
        }
        let State::Reading(rows) = &mut self.state else {
            return Ok(None);
        };
        let Some(batch) = rows.next().await else {
            self.state = State::Read;
            if self.columns.is_none() {
                return Err(DomainError::invalid("file", "the sheet is empty: it has no header row"));
            }
            return Ok(None);
        };
        let mut read = 0;
        for row in batch? {
            read += usize::from(self.take(row, mapping, key, out)?);
        }
        Ok(Some(read))
    }

    /// The header row makes the column map; a later row goes to `out`
    /// (`true`).
    fn take(
        &mut self,
        row: Row,
        mapping: &BTreeMap<String, String>,
        key: MatchKey,
        out: &mut Vec<Pending>,
    ) -> Result<bool, DomainError> {
        let Some(map) = &self.columns else {
            self.columns = Some(header(row, mapping, key, self.max_row_bytes)?);
            return Ok(false);
        };
        let line = row.line;
        let cells = if row.oversized {
            Err(failure(
                "RECORD_TOO_LARGE",
                "",
                format!(
                    "the row holds more than the {} bytes of text a row may have",
                    self.max_row_bytes
                ),
            ))
        } else {
            values(row, &map.columns)
        };
        out.push(Pending {
            line,
            cells,
            attempt: 0,
        });
        Ok(true)
    }
}

/// The column map of the header row.
fn header(
    row: Row,
    mapping: &BTreeMap<String, String>,
    key: MatchKey,
    max_row_bytes: usize,
) -> Result<ColumnMap, DomainError> {
    let at = |m: String| DomainError::invalid("file", format!("row {} (the header): {m}", row.line));
    if row.oversized {
        return Err(at(format!("it holds more than {max_row_bytes} bytes of text")));
    }
    let width = row.cells.last().map_or(0, |(c, _)| c + 1);
    let mut names = vec![String::new(); width];
    for (column, cell) in &row.cells {
        if let Cell::Error(e) = cell {
            return Err(at(format!(
                "cell {}{} holds the error {e}",
                column_name(*column),
                row.line
            )));
        }
        if let Some(name) = names.get_mut(*column) {
            cell.text().clone_into(name);
        }
    }
    ColumnMap::from_header(&names, mapping, key).map_err(at)
}

/// A data row's values by column, or why it fails.
fn values(row: Row, columns: &[Column]) -> Result<Vec<(Column, String)>, crate::import::RowFailure> {
    let mut values: Vec<Option<String>> = vec![None; columns.len()];
    for (index, cell) in row.cells {
        let at = || format!("{}{}", column_name(index), row.line);
        let Some(&column) = columns.get(index) else {
            return Err(failure(
                "RAGGED_ROW",
                "",
                format!(
                    "cell {} holds a value, right of the header's last column ({})",
                    at(),
                    column_name(columns.len().saturating_sub(1))
                ),
            ));
        };
        if matches!(column, Column::Ignored | Column::ReadOnly) {
            continue;
        }
        match cell {
            Cell::Error(e) => {
                return Err(failure(
                    "CELL_ERROR",
                    column.field(),
                    format!("cell {} holds the error {e}: correct its formula or value", at()),
                ));
            }
            Cell::Number(n) if matches!(column, Column::Profile(ProfileField::Phone | ProfileField::Mobile)) => {
                return Err(failure(
                    "NUMBER_IN_TEXT_COLUMN",
                    column.field(),
                    format!(
                        "cell {} is a number ({n}), and a phone number stored as a number has lost any leading \
                         zero (03 1234 5678 becomes 312345678): format the column as Text in Excel, type the \
                         numbers again, and import again",
                        at()
                    ),
                ));
            }
            Cell::Text(t) | Cell::Number(t) => {
                if let Some(slot) = values.get_mut(index) {
                    *slot = Some(t);
                }
            }
        }
    }
    Ok(columns
        .iter()
        .zip(values)
        .filter(|(c, _)| !matches!(c, Column::Ignored | Column::ReadOnly))
        .map(|(c, v)| (*c, v.unwrap_or_default()))
        .collect())
}
