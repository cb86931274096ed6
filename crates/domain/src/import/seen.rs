//! The keys an import has seen, each with the line it was first seen on, in
//! about 15 bytes per key: the one part of an import that grows with the file.
//!
//! Keys are 64-bit xxh3 hashes of the key text (a false duplicate needs two
//! of a file's keys to collide: about one chance in 10^7 for 1M keys), held
//! in 12-byte entries. A full table is frozen and a new one started instead
//! of growing it: a growing hash table holds its old and its new storage at
//! once, half again its size, which for 1M keys was the largest allocation of
//! a whole import.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A key hash as two words, so that an entry is 12 bytes, not 16.
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyHash([u32; 2]);

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((u64::from(self.0[0]) << 32) | u64::from(self.0[1]));
    }
}

/// The key is already a uniform hash: use it as it is.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Table = HashMap<KeyHash, u32, BuildHasherDefault<PassThrough>>;

/// Entries per table before it is frozen (a table of 2^20 buckets is full
/// at 7/8 of them).
const TABLE_KEYS: usize = 7 << 17;

/// Key hash -> first line.
#[derive(Default)]
pub(super) struct SeenKeys {
    frozen: Vec<Table>,
    current: Table,
}

/// Lines past `u32::MAX` are stored as `u32::MAX`, reported as "a line
/// after 4294967294".
fn stored_line(line: u64) -> u32 {
    u32::try_from(line).unwrap_or(u32::MAX)
}

/// The line of a key's first row, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FirstLine(u32);

impl std::fmt::Display for FirstLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == u32::MAX {
            write!(f, "a line after {}", u32::MAX - 1)
        } else {
            write!(f, "line {}", self.0)
        }
    }
}

impl SeenKeys {
    /// The first line of `hash`, or `None` after recording `line` as its first.
    pub(super) fn first_or_insert(&mut self, hash: u64, line: u64) -> Option<FirstLine> {
        let key = KeyHash([(hash >> 32) as u32, hash as u32]);
        if let Some(&first) = self.current.get(&key) {
            return Some(FirstLine(first));
        }
        if let Some(&first) = self.frozen.iter().find_map(|t| t.get(&key)) {
            return Some(FirstLine(first));
        }
        if self.current.len() >= TABLE_KEYS {
            self.frozen.push(std::mem::take(&mut self.current));
        }
        self.current.insert(key, stored_line(line));
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn remembers_first_lines_across_frozen_tables() {
        let mut seen = SeenKeys::default();
        let n = TABLE_KEYS as u64 * 2 + 10;
        let hash = |i: u64| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        for i in 0..n {
            assert_eq!(seen.first_or_insert(hash(i), i + 2), None);
        }
        assert_eq!(seen.frozen.len(), 2);
        for i in [0, 1, TABLE_KEYS as u64, n - 1] {
            assert_eq!(seen.first_or_insert(hash(i), 99), Some(FirstLine((i + 2) as u32)));
        }
        assert_eq!(seen.first_or_insert(1 << 40, u64::MAX), None);
        let first = seen.first_or_insert(1 << 40, 5).unwrap();
        assert_eq!(first.to_string(), "a line after 4294967294");
        assert_eq!(FirstLine(7).to_string(), "line 7");
    }
}
