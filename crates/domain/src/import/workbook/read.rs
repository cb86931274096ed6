//! One sheet of a spooled workbook, read row by row on a blocking thread
//! and handed over a batch at a time through a small channel: memory holds
//! a few batches, whatever the sheet's size (an xlsx is streamed; an xls,
//! at most 65,536 rows by the format, is read whole by calamine).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use calamine::{Reader, Xls, XlsError, Xlsx, XlsxError};
use tokio::sync::mpsc;

use super::cell::Cell;
use super::spool::mib;
use super::{Workbook, WorkbookLimits};
use crate::error::DomainError;

/// Rows per batch handed over.
const ROWS_PER_BATCH: usize = 500;
/// Batches read ahead of the import.
const AHEAD: usize = 2;

/// A sheet row with at least one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The sheet's row number (1-based).
    pub line: u64,
    /// Its non-empty cells, by column index (0 is A), left to right.
    pub cells: Vec<(usize, Cell)>,
    /// Bytes of text in the row; past the limit its cells are dropped and
    /// this counts on (the row fails alone).
    pub bytes: usize,
    pub oversized: bool,
}

impl Row {
    fn new(line: u64) -> Self {
        Self {
            line,
            cells: Vec::new(),
            bytes: 0,
            oversized: false,
        }
    }

    fn add(&mut self, column: usize, cell: Cell, max_bytes: usize) {
        self.bytes = self.bytes.saturating_add(cell.text().len());
        if self.bytes > max_bytes {
            self.oversized = true;
            self.cells = Vec::new();
        } else if !self.oversized {
            self.cells.push((column, cell));
        }
    }
}

/// The rows of one sheet, as they are read.
pub struct SheetRows {
    rx: mpsc::Receiver<Result<Vec<Row>, DomainError>>,
}

impl SheetRows {
    /// Starts reading `sheet` (the first when empty) of the `kind` workbook
    /// in `file`; a row over `max_row_bytes` of text comes without its cells.
    pub fn open(file: File, kind: Workbook, sheet: String, limits: WorkbookLimits, max_row_bytes: usize) -> Self {
        let (tx, rx) = mpsc::channel(AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut gather = Gather {
                tx: &tx,
                batch: Vec::new(),
                row: None,
                max_row_bytes,
            };
            let read = match kind {
                Workbook::Xlsx => read_xlsx(file, &sheet, limits, &mut gather),
                Workbook::Xls => read_xls(file, &sheet, &mut gather),
            };
            match read {
                // The import stopped listening: stop reading.
                Ok(false) => {}
                Ok(true) => {
                    gather.finish();
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
        Self { rx }
    }

    /// The next batch of rows; `None` once the sheet is read.
    pub async fn next(&mut self) -> Option<Result<Vec<Row>, DomainError>> {
        self.rx.recv().await
    }
}

/// Cells into rows, rows into batches.
struct Gather<'a> {
    tx: &'a mpsc::Sender<Result<Vec<Row>, DomainError>>,
    batch: Vec<Row>,
    row: Option<Row>,
    max_row_bytes: usize,
}

impl Gather<'_> {
    /// Adds a cell (rows come in order); `false` once nobody listens.
    fn cell(&mut self, row: u32, column: u32, cell: Cell) -> bool {
        let line = u64::from(row) + 1;
        if self.row.as_ref().is_some_and(|r| r.line != line) && !self.end_row() {
            return false;
        }
        let max = self.max_row_bytes;
        self.row
            .get_or_insert_with(|| Row::new(line))
            .add(column as usize, cell, max);
        true
    }

    fn end_row(&mut self) -> bool {
        if let Some(row) = self.row.take() {
            self.batch.push(row);
            if self.batch.len() >= ROWS_PER_BATCH {
                return self.tx.blocking_send(Ok(std::mem::take(&mut self.batch))).is_ok();
            }
        }
        true
    }

    fn finish(mut self) {
        if self.end_row() && !self.batch.is_empty() {
            let _ = self.tx.blocking_send(Ok(self.batch));
        }
    }
}

/// Reads an xlsx's sheet into `gather`; `false` when the import stopped.
fn read_xlsx(file: File, sheet: &str, limits: WorkbookLimits, gather: &mut Gather<'_>) -> Result<bool, DomainError> {
    check_inflation(&file, limits)?;
    let mut book = Xlsx::new(BufReader::new(file)).map_err(xlsx_error)?;
    let name = pick_sheet(&book.sheet_names(), sheet)?;
    let mut cells = book.worksheet_cells_reader(&name).map_err(xlsx_error)?;
    while let Some(cell) = cells.next_cell().map_err(xlsx_error)? {
        let (row, column) = cell.get_position();
        if let Some(value) = Cell::of_ref(cell.get_value().clone())
            && !gather.cell(row, column, value)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Cells an xls sheet may span: calamine reads an xls whole, every sheet
/// at once, into a grid from its first cell to its last, so a 6 KB file
/// with two cells in opposite corners (65,536 rows by 256 columns) took 1 GB.
/// 65,536 rows of 32 columns is more than a sheet of users needs.
pub(super) const XLS_MAX_CELLS: u64 = 65_536 * 32;

/// Refuses an xls any of whose sheets spans more than [`XLS_MAX_CELLS`],
/// by the extent its own records declare (`DIMENSIONS`) and the one its
/// cells take, read from the record headers before calamine allocates.
fn check_xls_extent(file: &File) -> Result<(), DomainError> {
    let copy = file
        .try_clone()
        .map_err(|e| DomainError::storage(format!("could not read the workbook: {e}")))?;
    // Not an OLE file calamine can read: it says why itself.
    let Ok(mut ole) = cfb::CompoundFile::open(BufReader::new(copy)) else {
        return Ok(());
    };
    let Some(stream) = ["/Workbook", "/Book"].into_iter().find(|s| ole.is_stream(s)) else {
        return Ok(());
    };
    let mut biff = Vec::new();
    ole.open_stream(stream)
        .and_then(|mut s| s.read_to_end(&mut biff))
        .map_err(|e| damaged(&e))?;
    let mut extent = Extent::default();
    let mut at = 0usize;
    while let Some(header) = biff.get(at..at + 4) {
        let kind = u16::from_le_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let data = biff.get(at + 4..at + 4 + len).unwrap_or_default();
        at += 4 + len;
        match kind {
            // BOF: a sheet (or the globals) starts.
            0x0809 => extent = Extent::default(),
            // DIMENSIONS (BIFF8): first row, last row + 1, first column, last column + 1.
            0x0200 if data.len() >= 12 => {
                let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
                let rows = u64::from(u32_at(4).saturating_sub(u32_at(0)));
                let cols = u64::from(u16_at(10).saturating_sub(u16_at(8)));
                extent.check(rows.saturating_mul(cols))?;
            }
            // Cell records: each starts with its row and column.
            0x0203 | 0x0204 | 0x00D6 | 0x0205 | 0x027E | 0x00FD | 0x00BD | 0x0006 if data.len() >= 4 => {
                let row = u16::from_le_bytes([data[0], data[1]]);
                let col = u16::from_le_bytes([data[2], data[3]]);
                // A MULRK names its last column at its end.
                let last = if kind == 0x00BD && data.len() >= 6 {
                    u16::from_le_bytes([data[data.len() - 2], data[data.len() - 1]])
                } else {
                    col
                };
                extent.add(row, col.min(last), col.max(last))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The rows and columns one sheet's cells span so far.
#[derive(Default)]
struct Extent {
    rows: Option<(u16, u16)>,
    cols: Option<(u16, u16)>,
}

impl Extent {
    fn add(&mut self, row: u16, first: u16, last: u16) -> Result<(), DomainError> {
        let (r0, r1) = self.rows.unwrap_or((row, row));
        let (c0, c1) = self.cols.unwrap_or((first, last));
        let rows = (r0.min(row), r1.max(row));
        let cols = (c0.min(first), c1.max(last));
        self.rows = Some(rows);
        self.cols = Some(cols);
        let span = |(a, b): (u16, u16)| u64::from(b - a) + 1;
        self.check(span(rows) * span(cols))
    }

    fn check(&self, cells: u64) -> Result<(), DomainError> {
        if cells <= XLS_MAX_CELLS {
            return Ok(());
        }
        Err(DomainError::Exhausted {
            reason: "WORKBOOK_SHEET_TOO_LARGE",
            message: format!(
                "a sheet of the .xls workbook spans {cells} cells from its first to its last, more than the \
                 {XLS_MAX_CELLS} (65,536 rows of 32 columns) an .xls may (it is read whole): delete the stray \
                 cells far from the data, or save the workbook as .xlsx or CSV"
            ),
        })
    }
}

/// Reads an xls's sheet into `gather`; `false` when the import stopped.
fn read_xls(mut file: File, sheet: &str, gather: &mut Gather<'_>) -> Result<bool, DomainError> {
    check_xls_extent(&file)?;
    let copy = file
        .try_clone()
        .map_err(|e| DomainError::storage(format!("could not read the workbook: {e}")))?;
    let mut book = match Xls::new(BufReader::new(copy)) {
        Ok(book) => book,
        Err(XlsError::Password) => return Err(password_protected()),
        Err(e) => {
            // A workbook saved with a password is an OLE file whatever its
            // format: an xlsx so saved reads as a damaged xls.
            let _ = file.seek(SeekFrom::Start(0));
            if matches!(Xlsx::new(BufReader::new(file)), Err(XlsxError::Password)) {
                return Err(password_protected());
            }
            return Err(damaged(&e));
        }
    };
    let name = pick_sheet(&book.sheet_names(), sheet)?;
    let range = book.worksheet_range(&name).map_err(|e| match e {
        XlsError::Password => password_protected(),
        e => damaged(&e),
    })?;
    let (top, left) = range.start().unwrap_or((0, 0));
    for (row, column, value) in range.used_cells() {
        let (row, column) = (top + row as u32, left + column as u32);
        if let Some(value) = Cell::of_data(value)
            && !gather.cell(row, column, value)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The sheet named `wanted`, or the first.
fn pick_sheet(names: &[String], wanted: &str) -> Result<String, DomainError> {
    if wanted.is_empty() {
        return names
            .first()
            .cloned()
            .ok_or_else(|| DomainError::invalid("file", "the workbook has no sheet"));
    }
    names.iter().find(|n| *n == wanted).cloned().ok_or_else(|| {
        DomainError::invalid(
            "options.sheet",
            format!("the workbook has no sheet named {wanted:?}; its sheets are {names:?}"),
        )
    })
}

/// Inflates every part of an xlsx once, counting, before anything is kept:
/// a zip bomb fails here, at the limit, in bounded memory. The shared
/// strings, held in memory while the sheet is read, get an eighth.
fn check_inflation(file: &File, limits: WorkbookLimits) -> Result<(), DomainError> {
    let copy = file
        .try_clone()
        .map_err(|e| DomainError::storage(format!("could not read the workbook: {e}")))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(copy)).map_err(|e| damaged(&e))?;
    let strings_limit = limits.max_inflated_bytes / 8;
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut part = zip.by_index(i).map_err(|e| damaged(&e))?;
        let shared_strings = part.name().map_err(|e| damaged(&e))?.ends_with("sharedStrings.xml");
        let left = limits.max_inflated_bytes.saturating_sub(total);
        let cap = if shared_strings { left.min(strings_limit) } else { left };
        let inflated = std::io::copy(&mut (&mut part).take(cap.saturating_add(1)), &mut std::io::sink())
            .map_err(|e| damaged(&e))?;
        if inflated > cap {
            let (what, limit) = if shared_strings && cap == strings_limit {
                ("its shared strings", strings_limit)
            } else {
                ("it", limits.max_inflated_bytes)
            };
            return Err(DomainError::Exhausted {
                reason: "WORKBOOK_INFLATES_TOO_FAR",
                message: format!(
                    "the workbook is compressed, and {what} would inflate to more than {} (the server's limit, \
                     from --import-max-inflated-mib): a file this compressed is not a sheet of users. Save the \
                     sheet as CSV and import that",
                    mib(limit)
                ),
            });
        }
        total += inflated;
    }
    Ok(())
}

fn password_protected() -> DomainError {
    DomainError::invalid(
        "file",
        "the workbook is protected by a password, so it cannot be read: open it in Excel, remove the password \
         (File > Info > Protect Workbook > Encrypt with Password), save it, and import it again",
    )
}

fn damaged(e: &dyn std::fmt::Display) -> DomainError {
    DomainError::invalid(
        "file",
        format!("the workbook cannot be read: it is damaged, cut short, or not a workbook ({e})"),
    )
}

fn xlsx_error(e: XlsxError) -> DomainError {
    match e {
        XlsxError::Password => password_protected(),
        e => damaged(&e),
    }
}
