//! An export as an Excel workbook: one sheet, the chosen columns' header,
//! then a row per user, every cell written as text (a string cell is never
//! a formula, so no formula protection is needed), in rust_xlsxwriter's
//! constant-memory mode: each row goes to a temporary file as it is
//! written, and the finished workbook is assembled from it at the end.

use std::io::Write;

use rust_xlsxwriter::{Workbook, XlsxError};

use super::ExportColumn;
use crate::error::DomainError;
use crate::user::User;

/// Rows a sheet holds, the header's included.
pub const SHEET_ROWS: u64 = 1_048_576;
/// Users a workbook export holds: a sheet's rows but the header.
pub const MAX_USERS: u64 = SHEET_ROWS - 1;

/// Writes users into a workbook being built.
pub struct XlsxWriter {
    workbook: Workbook,
    columns: Vec<ExportColumn>,
    /// The next row to write (0 is the header's).
    row: u32,
}

impl XlsxWriter {
    /// A workbook with one sheet and `columns`' header row.
    pub fn new(columns: Vec<ExportColumn>) -> Result<Self, DomainError> {
        let mut workbook = Workbook::new();
        let sheet = workbook.add_worksheet_with_constant_memory().map_err(failed)?;
        sheet.set_name("users").map_err(failed)?;
        for (i, column) in columns.iter().enumerate() {
            sheet.write_string(0, col(i), column.header()).map_err(failed)?;
        }
        Ok(Self {
            workbook,
            columns,
            row: 1,
        })
    }

    /// Writes `user` as the next row.
    pub fn row(&mut self, user: &User) -> Result<(), DomainError> {
        let sheet = self.workbook.worksheet_from_index(0).map_err(failed)?;
        for (i, column) in self.columns.iter().enumerate() {
            let value = column.value(user);
            if !value.is_empty() {
                sheet.write_string(self.row, col(i), value.as_ref()).map_err(failed)?;
            }
        }
        self.row += 1;
        Ok(())
    }

    /// Assembles the workbook into `out`. Blocking: run it off the runtime.
    pub fn finish(mut self, out: &mut (impl Write + Send)) -> Result<(), DomainError> {
        self.workbook.save_to_writer(out).map_err(failed)
    }
}

fn col(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

fn failed(e: XlsxError) -> DomainError {
    DomainError::storage(format!("could not write the workbook: {e}"))
}
