//! Small value types shared by tenants and users: text checks, timestamps, revisions.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::FieldViolation;

/// Checks a free-text value: at most `max` characters, no control characters
/// other than tab and line breaks, and never U+FFFD (the mark of a decoding error).
pub fn check_text(field: &str, value: &str, max: usize) -> Result<String, FieldViolation> {
    check_owned_text(field, value.to_owned(), max)
}

/// [`check_text`] of a value already owned, given back as it is when good.
pub fn check_owned_text(field: &str, value: String, max: usize) -> Result<String, FieldViolation> {
    match text_problem(&value, max) {
        None => Ok(value),
        Some(problem) => Err(FieldViolation::new(field, problem)),
    }
}

/// What is wrong with a free-text value, in one pass over it.
pub(crate) fn text_problem(value: &str, max: usize) -> Option<String> {
    let (mut n, mut control, mut replacement) = (0, false, false);
    for c in value.chars() {
        n += 1;
        control |= c.is_control() && !matches!(c, '\t' | '\n' | '\r');
        replacement |= c == '\u{FFFD}';
    }
    if n > max {
        return Some(format!("must be at most {max} characters (got {n})"));
    }
    if control {
        return Some("must not contain control characters".to_owned());
    }
    replacement.then(|| {
        "contains U+FFFD, the replacement character left by a decoding error; fix the source encoding".to_owned()
    })
}

/// A point in time with microsecond precision (what both databases store exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(micros)
    }

    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// Seconds and nanoseconds since the epoch (for `google.protobuf.Timestamp`).
    pub fn seconds_nanos(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1_000_000);
        let nanos = (self.0.rem_euclid(1_000_000) * 1000) as i32;
        (secs, nanos)
    }

    pub fn from_seconds_nanos(seconds: i64, nanos: i32) -> Self {
        Self(
            seconds
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(nanos) / 1000),
        )
    }

    /// Parses RFC 3339 (`2026-11-22T09:00:00Z`, `2026-11-22T18:00:00+09:00`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1000).ok().map(Self)
    }

    /// RFC 3339 in UTC with microseconds: `2026-11-22T09:00:00.123456Z`.
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    }
}

/// The version of a stored record, bumped by every write; its text form is the etag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub i64);

impl Revision {
    pub const FIRST: Self = Self(1);

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The opaque etag clients see.
    pub fn etag(self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Parses an etag previously returned; `None` when it cannot be ours.
    pub fn from_etag(etag: &str) -> Option<Self> {
        let inner = etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"');
        inner.parse().ok().map(Self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-22T18:00:00.5+09:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T09:00:00.5Z");
        let (s, n) = t.seconds_nanos();
        assert_eq!(Timestamp::from_seconds_nanos(s, n), t);
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn etags_round_trip() {
        assert_eq!(Revision::from_etag(&Revision(7).etag()), Some(Revision(7)));
        assert_eq!(Revision::from_etag("nonsense"), None);
    }
}
