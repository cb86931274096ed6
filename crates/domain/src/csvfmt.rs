//! Writing CSV records (RFC 4180): a field is quoted only when it must be:
//! when it holds a comma, a double quote, CR or LF, or starts or ends with a
//! space; quotes inside are doubled.

/// Appends one field, quoted if needed.
pub fn push_field(out: &mut String, value: &str) {
    let needs_quotes = value.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
        || value.starts_with(' ')
        || value.ends_with(' ');
    if needs_quotes {
        out.push('"');
        for c in value.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends a record and its line ending.
pub fn push_record<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>, line_ending: &str) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(out, field);
    }
    out.push_str(line_ending);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        let mut out = String::new();
        push_record(
            &mut out,
            ["plain", "a,b", "say \"hi\"", " pad", "multi\nline", "山田"],
            "\n",
        );
        assert_eq!(out, "plain,\"a,b\",\"say \"\"hi\"\"\",\" pad\",\"multi\nline\",山田\n");
    }
}
