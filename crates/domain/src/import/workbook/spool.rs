//! A workbook's bytes on their way in: an unnamed temporary file, readable
//! by its owner only and removed by the system once closed, however the
//! import ends.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use crate::error::DomainError;

/// The spooled bytes of one workbook, at most `limit` of them.
pub struct Spool {
    file: File,
    len: u64,
    limit: u64,
}

impl Spool {
    pub fn new(limit: u64) -> Result<Self, DomainError> {
        // Unnamed (O_TMPFILE where it exists): no path another process
        // could open, mode 0600, gone when the last handle closes.
        let file = tempfile::tempfile()
            .map_err(|e| DomainError::storage(format!("could not make a temporary file for the workbook: {e}")))?;
        Ok(Self { file, len: 0, limit })
    }

    /// Appends `bytes`; a workbook past the limit fails `RESOURCE_EXHAUSTED`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DomainError> {
        let len = self.len + bytes.len() as u64;
        if len > self.limit {
            return Err(DomainError::Exhausted {
                reason: "WORKBOOK_TOO_LARGE",
                message: format!(
                    "the workbook is larger than the {} the server takes (--import-max-workbook-mib); save the \
                     sheet as CSV (a CSV file streams without a size limit) or split it",
                    mib(self.limit)
                ),
            });
        }
        self.file
            .write_all(bytes)
            .map_err(|e| DomainError::storage(format!("could not spool the workbook: {e}")))?;
        self.len = len;
        Ok(())
    }

    /// The file, from its start.
    pub fn into_file(mut self) -> Result<File, DomainError> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| DomainError::storage(format!("could not read the spooled workbook: {e}")))?;
        Ok(self.file)
    }
}

/// `bytes` for a person: "100 MiB", or "1.5 KiB".
pub(super) fn mib(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::io::Read;

    #[test]
    fn a_spool_keeps_its_bytes_and_refuses_past_its_limit() {
        let mut spool = Spool::new(10).unwrap();
        spool.write(b"hello ").unwrap();
        spool.write(b"book").unwrap();
        let err = spool.write(b"!").unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::Exhausted {
                    reason: "WORKBOOK_TOO_LARGE",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("10 bytes"), "{err}");
        let mut text = String::new();
        spool.into_file().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello book");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(mib(100 * 1024 * 1024), "100 MiB");
        assert_eq!(mib(1536 * 1024), "1.5 MiB");
        assert_eq!(mib(512), "512 bytes");
    }
}
