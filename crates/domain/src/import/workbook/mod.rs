//! Excel workbooks (`.xlsx`, `.xls`) as an import's input. A workbook is
//! read by random access (an xlsx's index is at its end), so its bytes are
//! first spooled to an owner-only temporary file ([`Spool`]); once the
//! input ends, one sheet is read row by row on a thread of its own
//! ([`SheetRows`]) and its cells become text the way a person reads them
//! ([`cell`]).

mod cell;
mod intake;
mod read;
mod spool;

pub use cell::{Cell, column_name};
pub(super) use intake::WorkbookIntake;
pub use read::{Row, SheetRows};
pub use spool::Spool;

/// The first bytes of a zip archive (an xlsx).
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
/// The first bytes of an OLE compound file (an xls, or a workbook saved
/// with a password, whatever its extension).
const OLE_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
/// Bytes [`sniff`] needs to decide.
pub const SNIFF_BYTES: usize = OLE_MAGIC.len();

/// A workbook's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workbook {
    Xlsx,
    Xls,
}

/// What a file's first bytes say it is: a workbook, or (`None`) text.
pub fn sniff(first: &[u8]) -> Option<Workbook> {
    if first.starts_with(&ZIP_MAGIC) {
        Some(Workbook::Xlsx)
    } else if first.starts_with(&OLE_MAGIC) {
        Some(Workbook::Xls)
    } else {
        None
    }
}

/// Limits a server sets on the workbooks it imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkbookLimits {
    /// The largest workbook file, in bytes: a larger one fails
    /// `RESOURCE_EXHAUSTED` `WORKBOOK_TOO_LARGE`.
    pub max_bytes: u64,
    /// The most an xlsx may inflate to, all its parts together (a zip bomb:
    /// a small file that inflates past this fails `WORKBOOK_INFLATES_TOO_FAR`
    /// before a row is read). Its shared strings, which are held in memory
    /// while the sheet is read, may take an eighth of it.
    pub max_inflated_bytes: u64,
}

impl Default for WorkbookLimits {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            max_inflated_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn first_bytes_name_the_kind() {
        assert_eq!(sniff(b"PK\x03\x04\x14\x00"), Some(Workbook::Xlsx));
        assert_eq!(sniff(&OLE_MAGIC), Some(Workbook::Xls));
        assert_eq!(sniff(b"email,display_name\n"), None);
        assert_eq!(sniff(b"PK"), None);
        assert_eq!(sniff(b""), None);
    }
}
