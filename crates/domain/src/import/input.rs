//! An import's intake: file bytes through the CSV decoder and the header's
//! column map, or a workbook spooled and then read ([`super::workbook`]), or
//! parsed rows by field name, into rows waiting for their batch
//! ([`Pending`]). Which an import takes is fixed by its first data message
//! (and, for file bytes, by the format option or the file's first bytes).

use std::collections::BTreeMap;

use super::columns::{Column, ColumnMap, resolve};
use super::csv::{CsvDecoder, DeclaredEncoding, Record};
use super::rows::{Pending, cell, failure, file_error, unprotect_formula};
use super::workbook::{SNIFF_BYTES, Workbook, WorkbookIntake, WorkbookLimits, sniff};
use super::{FileFormat, ImportOptions, MatchKey};
use crate::error::DomainError;

/// Where rows come from; fixed by the first data message.
enum Input {
    Unknown,
    /// AUTO: the file's first bytes, until there are enough to tell a
    /// workbook from text.
    Sniffing(Vec<u8>),
    Csv {
        decoder: Box<CsvDecoder>,
        columns: Option<ColumnMap>,
    },
    Workbook(Box<WorkbookIntake>),
    Rows {
        next_line: u64,
    },
}

/// Reads an import's input into rows.
pub(super) struct Intake {
    input: Input,
    encoding: DeclaredEncoding,
    mapping: BTreeMap<String, String>,
    match_key: MatchKey,
    max_record_bytes: usize,
    format: FileFormat,
    sheet: String,
    workbook_limits: WorkbookLimits,
}

impl Intake {
    pub(super) fn new(options: &ImportOptions, max_record_bytes: usize, workbook_limits: WorkbookLimits) -> Self {
        Self {
            input: Input::Unknown,
            encoding: options.encoding,
            mapping: options.column_mapping.clone(),
            match_key: options.match_key,
            max_record_bytes,
            format: options.format,
            sheet: options.sheet.clone(),
            workbook_limits,
        }
    }

    /// The input for file bytes whose kind is known (`None`: CSV).
    fn file_input(&self, kind: Option<Workbook>) -> Result<Input, DomainError> {
        Ok(match kind {
            None => Input::Csv {
                decoder: Box::new(CsvDecoder::new(self.encoding).with_max_record(self.max_record_bytes)),
                columns: None,
            },
            Some(kind) => Input::Workbook(Box::new(WorkbookIntake::new(
                kind,
                self.sheet.clone(),
                self.workbook_limits,
                self.max_record_bytes,
            )?)),
        })
    }

    /// AUTO decides on the first bytes it holds, and hands them on; their
    /// rows go to `out`; how many.
    fn decide(&mut self, out: &mut Vec<Pending>) -> Result<usize, DomainError> {
        let Input::Sniffing(first) = &mut self.input else {
            return Ok(0);
        };
        let first = std::mem::take(first);
        self.input = self.file_input(sniff(&first))?;
        self.push_bytes(&first, out)
    }

    /// Whether the decoder holds bytes it has not made rows of yet (a
    /// partial line, or the start of a file whose encoding is not decided).
    pub(super) fn holds_bytes(&self) -> bool {
        match &self.input {
            Input::Csv { decoder, .. } => decoder.holds_bytes(),
            Input::Sniffing(first) => !first.is_empty(),
            _ => false,
        }
    }

    /// The client paused: AUTO decides on the bytes it has, and the rows
    /// read so far go to `out`; how many.
    pub(super) fn decide_early(&mut self, out: &mut Vec<Pending>) -> Result<usize, DomainError> {
        let decided = self.decide(out)?;
        let Input::Csv { decoder, .. } = &mut self.input else {
            return Ok(decided);
        };
        let mut records = Vec::new();
        decoder.decide_early(&mut records).map_err(file_error)?;
        Ok(decided + self.take_records(records, out)?)
    }

    /// The next bytes of a file; its rows (a CSV's) go to `out`; how many.
    pub(super) fn push_chunk(&mut self, bytes: &[u8], out: &mut Vec<Pending>) -> Result<usize, DomainError> {
        if matches!(self.input, Input::Unknown) {
            self.input = match self.format {
                FileFormat::Auto => Input::Sniffing(Vec::new()),
                FileFormat::Csv => self.file_input(None)?,
                FileFormat::Xlsx => self.file_input(Some(Workbook::Xlsx))?,
                FileFormat::Xls => self.file_input(Some(Workbook::Xls))?,
            };
        }
        if let Input::Sniffing(first) = &mut self.input {
            first.extend_from_slice(bytes);
            if first.len() < SNIFF_BYTES {
                return Ok(0);
            }
            return self.decide(out);
        }
        self.push_bytes(bytes, out)
    }

    /// File bytes to the input decided on.
    fn push_bytes(&mut self, bytes: &[u8], out: &mut Vec<Pending>) -> Result<usize, DomainError> {
        match &mut self.input {
            Input::Csv { decoder, .. } => {
                let mut records = Vec::new();
                decoder.push(bytes, &mut records).map_err(file_error)?;
                self.take_records(records, out)
            }
            Input::Workbook(workbook) => workbook.push(bytes).map(|()| 0),
            _ => Err(DomainError::invalid(
                "chunk",
                "an import takes file chunks or parsed rows, not both",
            )),
        }
    }

    /// Parsed rows, each a list of (field name, value), to `out`; how many.
    pub(super) fn push_rows(
        &mut self,
        rows: Vec<Vec<(String, String)>>,
        out: &mut Vec<Pending>,
    ) -> Result<usize, DomainError> {
        if matches!(self.input, Input::Unknown) {
            self.input = Input::Rows { next_line: 1 };
        }
        let Input::Rows { next_line } = &mut self.input else {
            return Err(DomainError::invalid(
                "rows",
                "an import takes file chunks or parsed rows, not both",
            ));
        };
        let key_column = Column::for_key(self.match_key);
        let read = rows.len();
        for row in rows {
            let line = *next_line;
            *next_line += 1;
            let mut cells = Vec::with_capacity(row.len());
            let mut bad = None;
            let size: usize = row.iter().map(|(name, value)| name.len() + value.len()).sum();
            if size > self.max_record_bytes {
                bad = Some(failure(
                    "RECORD_TOO_LARGE",
                    "",
                    format!(
                        "the row holds {size} bytes of names and values, more than the {} a row may have",
                        self.max_record_bytes
                    ),
                ));
            }
            for (name, value) in row {
                match resolve(&name, &self.mapping) {
                    Ok(column) if cells.iter().any(|(c, _)| *c == column) && column != Column::Ignored => {
                        bad = Some(failure(
                            "DUPLICATE_FIELD",
                            column.field(),
                            format!("{name:?} is given twice"),
                        ));
                    }
                    Ok(column) => cells.push((column, value)),
                    Err(message) => bad = Some(failure("UNKNOWN_FIELD", name, message)),
                }
            }
            let cells = match bad {
                Some(f) => Err(f),
                None if key_column != Column::UserId && cell(&cells, key_column).is_none() => Err(failure(
                    "MISSING_KEY",
                    key_column.field(),
                    format!("the row has no {} to match users by", key_column.field()),
                )),
                None => Ok(cells),
            };
            out.push(Pending {
                line,
                cells,
                attempt: 0,
            });
        }
        Ok(read)
    }

    /// The end of the input: the decoder's last rows go to `out` (a
    /// workbook's are read next, by [`Self::read_more`]). An import that
    /// received nothing, or a CSV file without a header, is an error.
    pub(super) fn finish(&mut self, out: &mut Vec<Pending>) -> Result<(), DomainError> {
        self.decide(out)?;
        match &mut self.input {
            Input::Unknown => Err(DomainError::invalid(
                "file",
                "the import received neither file bytes nor rows",
            )),
            Input::Rows { .. } | Input::Workbook(_) | Input::Sniffing(_) => Ok(()),
            Input::Csv { decoder, .. } => {
                let mut records = Vec::new();
                decoder.finish(&mut records).map_err(file_error)?;
                self.take_records(records, out)?;
                if matches!(&self.input, Input::Csv { columns: None, .. }) {
                    return Err(DomainError::invalid("file", "the file is empty: it has no header row"));
                }
                Ok(())
            }
        }
    }

    /// After [`Self::finish`]: the next rows of a workbook to `out`; how
    /// many, or `None` once there are no more (at once for other inputs).
    pub(super) async fn read_more(&mut self, out: &mut Vec<Pending>) -> Result<Option<usize>, DomainError> {
        match &mut self.input {
            Input::Workbook(workbook) => workbook.read(&self.mapping, self.match_key, out).await,
            _ => Ok(None),
        }
    }

    /// The header (the first record) makes the column map; each later
    /// record becomes a row in `out`; how many.
    fn take_records(&mut self, records: Vec<Record>, out: &mut Vec<Pending>) -> Result<usize, DomainError> {
        let Input::Csv { columns, .. } = &mut self.input else {
            return Ok(0);
        };
        let mut read = 0;
        for record in records {
            let Some(map) = columns.as_ref() else {
                let header = record.fields.map_err(|e| {
                    DomainError::invalid(
                        "file",
                        format!("line {}: the header row is unreadable: {}", record.line, e.message),
                    )
                })?;
                let map = ColumnMap::from_header(&header, &self.mapping, self.match_key)
                    .map_err(|m| DomainError::invalid("file", format!("line {}: {m}", record.line)))?;
                *columns = Some(map);
                continue;
            };
            let cells = match record.fields {
                Err(e) => Err(failure(e.reason, "", e.message)),
                Ok(fields) if fields.len() != map.columns.len() => Err(failure(
                    "RAGGED_ROW",
                    "",
                    format!(
                        "the row has {} values but the header has {} columns",
                        fields.len(),
                        map.columns.len()
                    ),
                )),
                Ok(fields) => Ok(map
                    .columns
                    .iter()
                    .zip(fields)
                    .filter(|(c, _)| !matches!(c, Column::Ignored | Column::ReadOnly))
                    .map(|(c, v)| (*c, unprotect_formula(&v).to_owned()))
                    .collect()),
            };
            read += 1;
            out.push(Pending {
                line: record.line,
                cells,
                attempt: 0,
            });
        }
        Ok(read)
    }
}
