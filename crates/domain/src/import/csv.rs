//! Streaming CSV decoding: bytes in chunks of any size -> records of strings
//! with the line each starts on. Parsing runs on the raw bytes (csv-core):
//! in Shift-JIS, as in UTF-8, the bytes of `,` `"` CR and LF never occur
//! inside a multi-byte character, so each field is decoded on its own after
//! splitting, without ever producing U+FFFD.

use csv_core::{ReadRecordResult, Reader};
use encoding_rs::SHIFT_JIS;

/// The resolved encoding of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEncoding {
    Utf8,
    ShiftJis,
}

/// What the caller declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeclaredEncoding {
    #[default]
    Auto,
    Utf8,
    ShiftJis,
}

/// The default largest record (row) a file may hold, in bytes: a longer one
/// fails alone with `RECORD_TOO_LARGE`, and no more than about this much of
/// it is ever held in memory.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;

/// How much of the file start is inspected to detect or check the encoding.
const SNIFF_BYTES: usize = 64 * 1024;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A problem with the whole file: nothing may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub line: u64,
    pub message: String,
}

/// A problem with one record: that row fails, the import goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub reason: &'static str,
    pub message: String,
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Line of the file the record starts on (1-based).
    pub line: u64,
    pub fields: Result<Vec<String>, RecordError>,
}

/// Push-style CSV decoder.
pub struct CsvDecoder {
    declared: DeclaredEncoding,
    encoding: Option<FileEncoding>,
    /// Bytes held back until the encoding is known.
    sniff: Vec<u8>,
    reader: Reader,
    buf: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    /// Line breaks consumed so far: LF, CR LF and a lone CR each count once.
    newlines: u64,
    /// The last byte consumed was a CR (an LF right after it ends the same line).
    after_cr: bool,
    /// `"` bytes consumed in the current record.
    quotes: u64,
    finished: bool,
    /// Records longer than this fail with `RECORD_TOO_LARGE`.
    max_record: usize,
    /// Bytes of the current record already dropped for being over the limit.
    dropped: u64,
    /// Line breaks inside the dropped bytes (quoted values).
    dropped_newlines: u64,
    /// The current record went over the limit (in bytes or in fields).
    too_large: bool,
}

impl CsvDecoder {
    pub fn new(declared: DeclaredEncoding) -> Self {
        Self {
            declared,
            encoding: None,
            sniff: Vec::new(),
            reader: Reader::new(),
            buf: vec![0; 4096],
            ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            newlines: 0,
            after_cr: false,
            quotes: 0,
            finished: false,
            max_record: DEFAULT_MAX_RECORD_BYTES,
            dropped: 0,
            dropped_newlines: 0,
            too_large: false,
        }
    }

    /// Sets the largest record kept, in bytes (at least 1 KiB).
    pub fn with_max_record(mut self, bytes: usize) -> Self {
        self.max_record = bytes.max(1024);
        self
    }

    /// The encoding in use, once known.
    pub fn encoding(&self) -> Option<FileEncoding> {
        self.encoding
    }

    /// Feeds the next bytes; complete records are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Record>) -> Result<(), FileError> {
        if self.encoding.is_none() {
            self.sniff.extend_from_slice(bytes);
            if self.sniff.len() < SNIFF_BYTES {
                return Ok(());
            }
            let held = std::mem::take(&mut self.sniff);
            self.resolve(&held, false)?;
            self.parse(&held, out);
            return Ok(());
        }
        self.parse(bytes, out);
        Ok(())
    }

    /// Whether bytes wait for the encoding to be known (see [`Self::decide_early`]).
    pub fn holds_bytes(&self) -> bool {
        self.encoding.is_none() && self.sniff.contains(&b'\n')
    }

    /// The client paused before 64 KiB arrived: let its complete lines
    /// through now instead of waiting for more. With a BOM, or with bytes
    /// beyond ASCII among them, the encoding is decided on what is there (by
    /// the same rules); while everything so far is ASCII (the same bytes in
    /// either encoding) the complete lines are parsed and the decision waits.
    pub fn decide_early(&mut self, out: &mut Vec<Record>) -> Result<(), FileError> {
        if self.encoding.is_some() || self.sniff.is_empty() {
            return Ok(());
        }
        if self.sniff.starts_with(UTF8_BOM) || !self.sniff.is_ascii() {
            let held = std::mem::take(&mut self.sniff);
            self.resolve(&held, false)?;
            self.parse(&held, out);
            return Ok(());
        }
        if let Some(end) = self.sniff.iter().rposition(|&b| b == b'\n' || b == b'\r') {
            let rest = self.sniff.split_off(end + 1);
            let lines = std::mem::replace(&mut self.sniff, rest);
            // ASCII reads the same in UTF-8 and Shift-JIS.
            self.parse(&lines, out);
        }
        Ok(())
    }

    /// Signals the end of the file; the last record (if unterminated) is appended.
    pub fn finish(&mut self, out: &mut Vec<Record>) -> Result<(), FileError> {
        if self.finished {
            return Ok(());
        }
        if self.encoding.is_none() {
            let held = std::mem::take(&mut self.sniff);
            self.resolve(&held, true)?;
            self.parse(&held, out);
        }
        self.finished = true;
        self.parse(&[], out);
        Ok(())
    }

    fn resolve(&mut self, start: &[u8], eof: bool) -> Result<(), FileError> {
        let bom = start.starts_with(UTF8_BOM);
        let body = if bom { &start[UTF8_BOM.len()..] } else { start };
        let utf8 = Tally::utf8(body, eof);
        let sjis = Tally::shift_jis(body, eof);
        let wrong = |message: &str| {
            Err(FileError {
                line: 1,
                message: message.to_owned(),
            })
        };
        let encoding = match self.declared {
            // AUTO never guesses Shift-JIS for a UTF-8 file: a few bad bytes
            // among valid multi-byte characters are bad rows of a UTF-8 file.
            DeclaredEncoding::Auto if bom || utf8.plausible() => FileEncoding::Utf8,
            DeclaredEncoding::Auto if sjis.plausible() => FileEncoding::ShiftJis,
            DeclaredEncoding::Auto => {
                return wrong(&format!(
                    "cannot tell the file's encoding: it is neither UTF-8 ({} invalid byte sequences in the first {} bytes) \
                     nor Shift-JIS ({} invalid); set the encoding option (UTF8 or SHIFT_JIS; --encoding with the CLI)",
                    utf8.bad,
                    body.len(),
                    sjis.bad
                ));
            }
            DeclaredEncoding::Utf8 if !utf8.valid() && sjis.valid() => {
                return wrong(
                    "the file was declared UTF-8 but is not valid UTF-8; it looks like Shift-JIS (set encoding SHIFT_JIS or AUTO)",
                );
            }
            DeclaredEncoding::Utf8 => FileEncoding::Utf8,
            DeclaredEncoding::ShiftJis if bom => {
                return wrong(
                    "the file was declared SHIFT_JIS but starts with a UTF-8 byte order mark (set encoding UTF8 or AUTO)",
                );
            }
            DeclaredEncoding::ShiftJis if utf8.valid() && !body.is_ascii() => {
                return wrong("the file was declared SHIFT_JIS but is UTF-8 text (set encoding UTF8 or AUTO)");
            }
            DeclaredEncoding::ShiftJis => FileEncoding::ShiftJis,
        };
        // csv-core strips a leading UTF-8 BOM by itself.
        self.encoding = Some(encoding);
        Ok(())
    }

    fn parse(&mut self, mut input: &[u8], out: &mut Vec<Record>) {
        loop {
            let (res, nin, nout, nend) =
                self.reader
                    .read_record(input, &mut self.buf[self.out_len..], &mut self.ends[self.ends_len..]);
            let consumed = &input[..nin];
            self.newlines += line_breaks(consumed, &mut self.after_cr);
            self.quotes += count(consumed, b'"');
            let last = consumed.last().copied();
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty => return,
                // Over the limit, the record's bytes are dropped as they come:
                // it fails alone and never takes more memory than the limit.
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull if self.out_len >= self.max_record => {
                    self.drop_record_bytes();
                }
                ReadRecordResult::OutputFull => {
                    let len = (self.buf.len() * 2).min(self.max_record + 4096);
                    self.buf.resize(len, 0);
                }
                ReadRecordResult::OutputEndsFull if self.ends.len() >= self.max_record / 2 => {
                    // As many fields as bytes: a record of empty values.
                    self.drop_record_bytes();
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len() * 2;
                    self.ends.resize(len, 0);
                }
                ReadRecordResult::Record => {
                    let terminated = matches!(last, Some(b'\n' | b'\r'));
                    out.push(self.take_record(terminated));
                }
                ReadRecordResult::End => return,
            }
        }
    }

    fn drop_record_bytes(&mut self) {
        self.dropped += self.out_len as u64;
        self.dropped_newlines += line_breaks(&self.buf[..self.out_len], &mut false);
        self.out_len = 0;
        self.ends_len = 0;
        self.too_large = true;
    }

    fn take_record(&mut self, terminated: bool) -> Record {
        let raw = &self.buf[..self.out_len];
        // The line the record ends on, less the line breaks inside its quoted values.
        let end_line = if terminated { self.newlines } else { self.newlines + 1 };
        let line = end_line.saturating_sub(line_breaks(raw, &mut false) + self.dropped_newlines);
        let size = self.dropped + raw.len() as u64;
        let fields = if self.too_large || size > self.max_record as u64 {
            Err(RecordError {
                reason: "RECORD_TOO_LARGE",
                message: format!(
                    "the row is too large: at least {size} bytes of values (a row may have {}) or too many columns",
                    self.max_record
                ),
            })
        } else if self.quotes % 2 == 1 {
            let message = if terminated {
                "stray double quote: a value containing \" must be enclosed in double quotes, with the quote doubled (\"\")"
            } else {
                "unterminated double quote: a quoted value is never closed before the end of the file"
            };
            Err(RecordError {
                reason: "MALFORMED_CSV",
                message: message.to_owned(),
            })
        } else if raw.contains(&0) {
            Err(RecordError {
                reason: "NUL_BYTE",
                message: "the row contains a NUL byte".to_owned(),
            })
        } else {
            let mut fields = Vec::with_capacity(self.ends_len);
            let mut start = 0;
            let mut failed = None;
            for (i, &end) in self.ends[..self.ends_len].iter().enumerate() {
                match decode(&raw[start..end], self.encoding.unwrap_or(FileEncoding::Utf8)) {
                    Some(text) => fields.push(text),
                    None => {
                        failed = Some(i + 1);
                        break;
                    }
                }
                start = end;
            }
            match failed {
                None => Ok(fields),
                Some(column) => Err(RecordError {
                    reason: "ENCODING_ERROR",
                    message: format!(
                        "column {column} holds bytes that are not valid {}; check the file's encoding",
                        match self.encoding {
                            Some(FileEncoding::ShiftJis) => "Shift-JIS",
                            _ => "UTF-8",
                        }
                    ),
                }),
            }
        };
        self.out_len = 0;
        self.ends_len = 0;
        self.quotes = 0;
        self.dropped = 0;
        self.dropped_newlines = 0;
        self.too_large = false;
        Record { line, fields }
    }
}

/// Line breaks in `bytes`: LF, CR LF and a lone CR (old Mac files) each
/// count once; `after_cr` carries a CR at the end over to the next bytes.
fn line_breaks(bytes: &[u8], after_cr: &mut bool) -> u64 {
    let Some(&last) = bytes.last() else {
        return 0;
    };
    // Counted a byte value at a time (which vectorises, on every byte of a
    // file); CR LF pairs are looked for only when there is a CR.
    let mut n = count(bytes, b'\n');
    let cr = count(bytes, b'\r');
    if cr > 0 {
        n += cr - bytes.windows(2).filter(|w| w == b"\r\n").count() as u64;
    }
    if *after_cr && bytes[0] == b'\n' {
        n -= 1;
    }
    *after_cr = last == b'\r';
    n
}

fn count(bytes: &[u8], b: u8) -> u64 {
    bytes.iter().filter(|&&x| x == b).count() as u64
}

fn decode(bytes: &[u8], encoding: FileEncoding) -> Option<String> {
    match encoding {
        FileEncoding::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_owned),
        FileEncoding::ShiftJis => SHIFT_JIS
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|c| c.into_owned()),
    }
}

/// How well a file start reads in one encoding: multi-byte characters that
/// decode, and byte sequences that do not. A character cut at the end of a
/// partial buffer counts as neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    good: u64,
    bad: u64,
}

impl Tally {
    fn valid(self) -> bool {
        self.bad == 0
    }

    /// No bad sequence, or a few among many good ones (at most one in five):
    /// a text in this encoding with some broken rows. A file in the other
    /// encoding reads as mostly bad sequences.
    fn plausible(self) -> bool {
        self.bad == 0 || self.good >= 4 * self.bad
    }

    fn utf8(mut bytes: &[u8], eof: bool) -> Self {
        let mut tally = Self::default();
        loop {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    tally.good += text.chars().filter(|c| !c.is_ascii()).count() as u64;
                    return tally;
                }
                Err(e) => {
                    let (valid, rest) = bytes.split_at(e.valid_up_to());
                    // The prefix is valid UTF-8: counted by the same rule.
                    tally.good += valid.iter().filter(|&&b| b >= 0xC0).count() as u64;
                    match e.error_len() {
                        Some(n) => {
                            tally.bad += 1;
                            bytes = &rest[n..];
                        }
                        None => {
                            tally.bad += u64::from(eof);
                            return tally;
                        }
                    }
                }
            }
        }
    }

    fn shift_jis(mut bytes: &[u8], eof: bool) -> Self {
        let mut tally = Self::default();
        let mut decoder = SHIFT_JIS.new_decoder_without_bom_handling();
        let mut out = String::with_capacity(bytes.len() * 3);
        loop {
            let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, eof);
            bytes = &bytes[read..];
            match result {
                encoding_rs::DecoderResult::InputEmpty => break,
                encoding_rs::DecoderResult::OutputFull => out.reserve(bytes.len() * 3 + 16),
                encoding_rs::DecoderResult::Malformed(..) => tally.bad += 1,
            }
        }
        tally.good = out.chars().filter(|c| !c.is_ascii()).count() as u64;
        tally
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn decode_all(bytes: &[u8], declared: DeclaredEncoding, chunk: usize) -> Result<Vec<Record>, FileError> {
        let mut d = CsvDecoder::new(declared);
        let mut out = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.push(c, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    fn ok_fields(r: &Record) -> Vec<&str> {
        r.fields.as_ref().unwrap().iter().map(String::as_str).collect()
    }

    #[test]
    fn quotes_crlf_bom_and_lines_in_any_chunking() {
        let text = "\u{FEFF}name,email\r\n\"Yamada, Taro\",taro@example.com\r\n\"say \"\"hi\"\"\nsecond line\",b@example.com\r\nlast,c@example.com";
        for chunk in [1, 2, 3, 7, 1000] {
            let recs = decode_all(text.as_bytes(), DeclaredEncoding::Auto, chunk).unwrap();
            assert_eq!(recs.len(), 4, "chunk {chunk}");
            assert_eq!(ok_fields(&recs[0]), ["name", "email"]);
            assert_eq!(recs[0].line, 1);
            assert_eq!(ok_fields(&recs[1]), ["Yamada, Taro", "taro@example.com"]);
            assert_eq!(recs[1].line, 2);
            assert_eq!(ok_fields(&recs[2]), ["say \"hi\"\nsecond line", "b@example.com"]);
            assert_eq!(recs[2].line, 3);
            assert_eq!(recs[3].line, 5);
        }
    }

    #[test]
    fn shift_jis_split_anywhere() {
        let (bytes, _, unmappable) =
            SHIFT_JIS.encode("name,email\n髙橋 ①,a@example.com\nソニー㈱ 表 能 ～,b@example.com\n");
        assert!(!unmappable);
        for declared in [DeclaredEncoding::ShiftJis, DeclaredEncoding::Auto] {
            for chunk in [1, 2, 5] {
                let recs = decode_all(&bytes, declared, chunk).unwrap();
                assert_eq!(ok_fields(&recs[1]), ["髙橋 ①", "a@example.com"]);
                assert_eq!(ok_fields(&recs[2]), ["ソニー㈱ 表 能 ～", "b@example.com"]);
            }
        }
        let err = decode_all(&bytes, DeclaredEncoding::Utf8, 3).unwrap_err();
        assert!(err.message.contains("looks like Shift-JIS"), "{}", err.message);
        let utf8 = "name,email\n山田,a@example.com\n".as_bytes();
        assert!(
            decode_all(utf8, DeclaredEncoding::ShiftJis, 4)
                .unwrap_err()
                .message
                .contains("UTF-8")
        );
    }

    #[test]
    fn row_level_problems() {
        let mut bytes = b"name,email\nok,a@example.com\nbad\xff\xfe,b@example.com\nn\0ul,c@example.com\nab\"c,d@example.com\nfine,e@example.com\n\"open,f@example.com\n".to_vec();
        bytes.extend_from_slice(b"more\n");
        let recs = decode_all(&bytes, DeclaredEncoding::Utf8, 4).unwrap();
        let reasons: Vec<_> = recs.iter().map(|r| r.fields.as_ref().err().map(|e| e.reason)).collect();
        assert_eq!(
            reasons,
            [
                None,
                None,
                Some("ENCODING_ERROR"),
                Some("NUL_BYTE"),
                Some("MALFORMED_CSV"),
                None,
                Some("MALFORMED_CSV")
            ]
        );
        assert_eq!(recs[6].line, 7);
        assert!(recs[6].fields.as_ref().unwrap_err().message.contains("unterminated"));
    }

    /// AUTO reads a UTF-8 file with a bad byte as UTF-8 (that row fails),
    /// a Shift-JIS file as Shift-JIS (also with a bad byte), and refuses
    /// what is neither.
    #[test]
    fn auto_never_garbles_a_file() {
        // Names whose UTF-8 bytes also read as (wrong) Shift-JIS: 山田 -> 螻ｱ逕ｰ.
        let names = ["山田", "佐藤", "鈴木", "伊藤", "渡辺", "小林", "吉田"];
        let mut text = String::from("name,email\n");
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!("{name},u{i}@example.com\n"));
        }
        let utf8 = text.as_bytes().to_vec();
        let sjis = SHIFT_JIS.encode(&text).0.into_owned();
        let with_bad_byte = |bytes: &[u8], at: &str, bad: u8| {
            let pos = text.find(at).unwrap();
            let mut v = bytes.to_vec();
            // The same row in either encoding starts at the same line.
            let line_start = bytes
                .split(|&b| b == b'\n')
                .take(text[..pos].matches('\n').count())
                .map(|l| l.len() + 1)
                .sum::<usize>();
            v.insert(line_start, bad);
            v
        };
        for (bytes, expected, bad_line) in [
            (utf8.clone(), "UTF-8", None),
            (sjis.clone(), "Shift-JIS", None),
            // 0xB1 alone is a half-width katakana in Shift-JIS, which
            // made AUTO read the whole file as Shift-JIS.
            (with_bad_byte(&utf8, "佐藤", 0xB1), "UTF-8", Some(3)),
            (with_bad_byte(&sjis, "佐藤", 0xFF), "Shift-JIS", Some(3)),
        ] {
            for chunk in [3, 1000] {
                let recs = decode_all(&bytes, DeclaredEncoding::Auto, chunk).unwrap();
                let decoded: Vec<String> = recs[1..]
                    .iter()
                    .filter_map(|r| r.fields.as_ref().ok().map(|f| f[0].clone()))
                    .collect();
                let failed: Vec<u64> = recs.iter().filter(|r| r.fields.is_err()).map(|r| r.line).collect();
                assert_eq!(failed, bad_line.into_iter().collect::<Vec<_>>(), "{expected}");
                for name in &decoded {
                    assert!(names.contains(&name.as_str()), "{expected}: garbled {name:?}");
                }
                assert_eq!(decoded.len(), names.len() - usize::from(bad_line.is_some()));
            }
        }
        // Neither: Latin-1 bytes in ASCII text.
        let latin1 = b"name,email\nJos\xe9 \xff\xfe,a@example.com\n";
        let err = decode_all(latin1, DeclaredEncoding::Auto, 100).unwrap_err();
        assert!(err.message.contains("UTF8 or SHIFT_JIS"), "{}", err.message);
    }

    /// A record over the limit fails alone, the lines after it keep their
    /// numbers, and the decoder never holds much more than the limit.
    #[test]
    fn oversized_records_fail_alone_in_bounded_memory() {
        let mut d = CsvDecoder::new(DeclaredEncoding::Utf8).with_max_record(4096);
        let mut out = Vec::new();
        d.push(b"name,email\nok,a@example.com\n\"", &mut out).unwrap();
        for _ in 0..1000 {
            d.push(&[b'x'; 1000], &mut out).unwrap();
            d.push(b"\n", &mut out).unwrap();
            assert!(d.buf.len() <= 4096 * 2 + 4096, "{}", d.buf.len());
        }
        d.push(b"\",b@example.com\n", &mut out).unwrap();
        let many_empty = format!("{}\n", ",".repeat(20_000));
        d.push(many_empty.as_bytes(), &mut out).unwrap();
        d.push(b"last,c@example.com\n", &mut out).unwrap();
        d.finish(&mut out).unwrap();
        let summary: Vec<(u64, Option<&str>)> = out
            .iter()
            .map(|r| (r.line, r.fields.as_ref().err().map(|e| e.reason)))
            .collect();
        assert_eq!(
            summary,
            [
                (1, None),
                (2, None),
                (3, Some("RECORD_TOO_LARGE")),
                (1004, Some("RECORD_TOO_LARGE")),
                (1005, None)
            ]
        );
        assert!(d.ends.len() <= 4096, "{}", d.ends.len());
    }

    /// Lone CR (old Mac), CR LF and LF line endings, mixed, split anywhere:
    /// every row reports the line it starts on.
    #[test]
    fn line_numbers_for_every_line_ending() {
        let text =
            "name,email\ra,a@example.com\rb,b@example.com\r\nc,c@example.com\n\"d\rd\",d@example.com\re,e@example.com";
        for chunk in [1, 2, 3, 100] {
            let recs = decode_all(text.as_bytes(), DeclaredEncoding::Utf8, chunk).unwrap();
            let lines: Vec<u64> = recs.iter().map(|r| r.line).collect();
            assert_eq!(lines, [1, 2, 3, 4, 5, 7], "chunk {chunk}");
            assert_eq!(ok_fields(&recs[4]), ["d\rd", "d@example.com"]);
        }
    }

    #[test]
    fn empty_and_blank_lines() {
        assert!(decode_all(b"", DeclaredEncoding::Auto, 10).unwrap().is_empty());
        let recs = decode_all(b"a,b\n\n1,2\n", DeclaredEncoding::Auto, 10).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].line, 3);
    }
}
