//! A cell as text, the way a person reads it in Excel: a whole number
//! without `.0`, a date as ISO 8601, a formula as its cached value. What
//! cannot become text faithfully stays marked: an error cell fails its row,
//! and a number in a column of digits that are not a number (a phone
//! number) fails its row rather than losing its leading zero.

use calamine::{Data, DataRef, ExcelDateTime};

/// One cell's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Text, a boolean or a date, as text.
    Text(String),
    /// A number cell, as a person reads it (`90`, `0.5`).
    Number(String),
    /// An error value (`#N/A`, `#DIV/0!`), a formula's cached result.
    Error(String),
}

impl Cell {
    /// The cell's text; an error's is its code.
    pub fn text(&self) -> &str {
        match self {
            Self::Text(t) | Self::Number(t) | Self::Error(t) => t,
        }
    }

    /// A streamed xlsx cell; `None` for an empty one.
    pub(super) fn of_ref(value: DataRef<'_>) -> Option<Self> {
        Some(match value {
            DataRef::Empty => return None,
            DataRef::String(s) => Self::Text(s),
            DataRef::SharedString(s) => Self::Text(s.to_owned()),
            DataRef::Int(i) => Self::Number(i.to_string()),
            DataRef::Float(f) => Self::Number(number(f)),
            DataRef::Bool(b) => Self::Text(b.to_string()),
            DataRef::DateTime(d) => Self::Text(date_time(&d)),
            DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Self::Text(s),
            DataRef::Error(e) => Self::Error(e.to_string()),
        })
    }

    /// An xls cell; `None` for an empty one.
    pub(super) fn of_data(value: &Data) -> Option<Self> {
        Some(match value {
            Data::Empty => return None,
            Data::String(s) => Self::Text(s.clone()),
            Data::Int(i) => Self::Number(i.to_string()),
            Data::Float(f) => Self::Number(number(*f)),
            Data::Bool(b) => Self::Text(b.to_string()),
            Data::DateTime(d) => Self::Text(date_time(d)),
            Data::DateTimeIso(s) | Data::DurationIso(s) => Self::Text(s.clone()),
            Data::Error(e) => Self::Error(e.to_string()),
        })
    }
}

/// A number as Excel shows it in General format: whole numbers without a
/// fraction (`90`, not `90.0`), others in their shortest exact form.
fn number(f: f64) -> String {
    // 2^53: every whole number below it is exact in an f64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.fract() == 0.0 && f.abs() < EXACT {
        #[allow(clippy::cast_possible_truncation)]
        let whole = f as i64;
        whole.to_string()
    } else {
        f.to_string()
    }
}

/// A date cell in ISO 8601: `2024-04-01` for a date alone, `09:30:00` for a
/// time alone, `2024-04-01T09:30:00` for both (milliseconds when there are
/// some); a duration as `[h]:mm:ss`.
fn date_time(d: &ExcelDateTime) -> String {
    if d.is_duration() {
        let seconds = (d.as_f64() * 86_400.0).round();
        #[allow(clippy::cast_possible_truncation)]
        let seconds = seconds as i64;
        let sign = if seconds < 0 { "-" } else { "" };
        let s = seconds.abs();
        return format!("{sign}{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    }
    let (year, month, day, hour, minute, second, milli) = d.to_ymd_hms_milli();
    let date = format!("{year:04}-{month:02}-{day:02}");
    let mut time = format!("{hour:02}:{minute:02}:{second:02}");
    if milli > 0 {
        time.push_str(&format!(".{milli:03}"));
    }
    if d.as_f64() < 1.0 && d.as_f64() >= 0.0 {
        time
    } else if (hour, minute, second, milli) == (0, 0, 0, 0) {
        date
    } else {
        format!("{date}T{time}")
    }
}

/// A column's letters, from its index: 0 is `A`, 26 is `AA`, 16,383 `XFD`.
pub fn column_name(index: usize) -> String {
    let mut name = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        let rest = (n - 1) % 26;
        name.push(b'A' + u8::try_from(rest).unwrap_or(0));
        n = (n - 1) / 26;
    }
    name.reverse();
    String::from_utf8(name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use calamine::{CellErrorType, ExcelDateTimeType};

    #[test]
    fn numbers_read_as_shown() {
        assert_eq!(number(90.0), "90");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(number(312_345_678.0), "312345678");
        assert_eq!(number(1e20), "100000000000000000000");
        assert_eq!(Cell::of_ref(DataRef::Int(7)), Some(Cell::Number("7".into())));
        assert_eq!(Cell::of_ref(DataRef::Empty), None);
        assert_eq!(Cell::of_ref(DataRef::Bool(true)), Some(Cell::Text("true".into())));
        assert_eq!(
            Cell::of_data(&Data::Error(CellErrorType::NA)),
            Some(Cell::Error("#N/A".into()))
        );
    }

    #[test]
    fn dates_read_as_iso_8601() {
        let at = |serial| date_time(&ExcelDateTime::new(serial, ExcelDateTimeType::DateTime, false));
        // 45383 is 2024-04-01 in the 1900 system.
        assert_eq!(at(45383.0), "2024-04-01");
        assert_eq!(at(45383.5), "2024-04-01T12:00:00");
        assert_eq!(at(0.25), "06:00:00");
        let in_1904 = date_time(&ExcelDateTime::new(43921.0, ExcelDateTimeType::DateTime, true));
        assert_eq!(in_1904, "2024-04-01");
        let duration = date_time(&ExcelDateTime::new(1.5, ExcelDateTimeType::TimeDelta, false));
        assert_eq!(duration, "36:00:00");
    }

    #[test]
    fn columns_are_named_by_letters() {
        assert_eq!(column_name(0), "A");
        assert_eq!(column_name(25), "Z");
        assert_eq!(column_name(26), "AA");
        assert_eq!(column_name(16_383), "XFD");
    }
}
