//! `userdir import`: streams a CSV file or an Excel workbook to a server's ImportUsers, shows
//! progress, prints the summary and writes the failed rows to an errors file
//! that can be fixed and imported again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use userdir_domain::csvfmt::push_record;
use userdir_domain::import::csv::{CsvDecoder, DeclaredEncoding, FileEncoding};

use crate::pb;
use crate::pb::import_users_request::Payload;
use crate::pb::import_users_response::Payload as Out;

/// Bytes per request message.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// Add new users only.
    CreateOnly,
    /// Update existing users only.
    UpdateOnly,
    /// Add new users and update existing ones.
    Upsert,
    /// Upsert, then delete the users absent from the file.
    FullSync,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Key {
    Email,
    UserId,
    ExternalId,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Encoding {
    Auto,
    #[value(alias = "utf-8")]
    Utf8,
    /// Shift-JIS (Windows-31J); also spelled shift_jis, sjis, cp932.
    #[value(alias = "shift_jis", alias = "sjis", alias = "cp932", alias = "windows-31j")]
    ShiftJis,
}

/// Import users from a CSV file or an Excel workbook (.xlsx, .xls).
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The CSV file or workbook; its format comes from its name (.csv,
    /// .xlsx, .xls), else from its first bytes.
    pub file: PathBuf,
    /// A workbook's sheet to import; default the first.
    #[arg(long)]
    pub sheet: Option<String>,
    /// Tenant id (`acme` or `tenants/acme`).
    #[arg(long)]
    pub tenant: String,
    /// What to do with the users of the file.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// How rows find existing users.
    #[arg(long, value_enum, default_value_t = Key::Email)]
    pub match_key: Key,
    /// Encoding of the file.
    #[arg(long, value_enum, default_value_t = Encoding::Auto)]
    pub encoding: Encoding,
    /// Check every row and report, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Empty cells leave stored values alone.
    #[arg(long)]
    pub skip_empty_values: bool,
    /// FULL_SYNC keeps admins absent from the file (reported as protected).
    #[arg(long)]
    pub keep_admins: bool,
    /// FULL_SYNC with a file without rows deletes every user.
    #[arg(long)]
    pub allow_delete_all: bool,
    /// FULL_SYNC deletes at most this share of the tenant's users (default
    /// 25; 100 turns the guard off); past it, nothing is deleted.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_delete_percent: Option<u32>,
    /// Map a file header to a field: `--map 氏名=display_name`; `--map 備考=` ignores a column.
    #[arg(long = "map", value_name = "HEADER=FIELD")]
    pub mappings: Vec<String>,
    #[command(flatten)]
    pub server: super::common::ServerArgs,
    /// Where to write failed rows; default `<file>.errors.csv` next to the file.
    #[arg(long)]
    pub errors: Option<PathBuf>,
}

/// A failed row as the server reported it.
struct Failure {
    field: String,
    reason: String,
    message: String,
}

fn options(args: &ImportArgs) -> Result<pb::ImportOptions, String> {
    let mut column_mapping = HashMap::new();
    for m in &args.mappings {
        let (header, field) = m
            .split_once('=')
            .ok_or_else(|| format!("--map {m:?} is not HEADER=FIELD"))?;
        column_mapping.insert(header.to_owned(), field.to_owned());
    }
    Ok(pb::ImportOptions {
        parent: super::common::tenant_parent(&args.tenant)?,
        mode: match args.mode {
            Mode::CreateOnly => pb::ImportMode::CreateOnly,
            Mode::UpdateOnly => pb::ImportMode::UpdateOnly,
            Mode::Upsert => pb::ImportMode::Upsert,
            Mode::FullSync => pb::ImportMode::FullSync,
        } as i32,
        match_key: match args.match_key {
            Key::Email => pb::MatchKey::Email,
            Key::UserId => pb::MatchKey::UserId,
            Key::ExternalId => pb::MatchKey::ExternalId,
        } as i32,
        keep_admins: args.keep_admins,
        skip_empty_values: args.skip_empty_values,
        encoding: match args.encoding {
            Encoding::Auto => pb::ImportEncoding::Auto,
            Encoding::Utf8 => pb::ImportEncoding::Utf8,
            Encoding::ShiftJis => pb::ImportEncoding::ShiftJis,
        } as i32,
        column_mapping,
        validate_only: args.dry_run,
        allow_delete_all: args.allow_delete_all,
        max_delete_percent: args.max_delete_percent.unwrap_or(0),
        format: file_format(&args.file) as i32,
        sheet: args.sheet.clone().unwrap_or_default(),
    })
}

/// The format a file's name says (AUTO: the server looks at its first bytes).
fn file_format(file: &Path) -> pb::ImportFormat {
    let extension = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "csv" => pb::ImportFormat::Csv,
        "xlsx" | "xlsm" => pb::ImportFormat::Xlsx,
        "xls" => pb::ImportFormat::Xls,
        _ => pb::ImportFormat::Auto,
    }
}

/// Whether `file` is a workbook, by its first bytes.
fn is_workbook(file: &Path) -> bool {
    let mut first = [0u8; userdir_domain::import::workbook::SNIFF_BYTES];
    std::fs::File::open(file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut first))
        .is_ok_and(|()| userdir_domain::import::workbook::sniff(&first).is_some())
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// How an import ended, for the exit status.
enum Ended {
    /// Every row went through (0) or some failed (2).
    Done { failed: u64 },
    /// Ctrl-C (130).
    Interrupted,
}

/// Runs the import; exit code 0 when every row went through, 2 when some
/// rows failed, 1 when the import itself failed, 130 after Ctrl-C, 64 for
/// a bad command line.
pub async fn run(args: ImportArgs) -> ExitCode {
    match import(&args).await {
        Ok(Ended::Done { failed: 0 }) => ExitCode::SUCCESS,
        Ok(Ended::Done { .. }) => ExitCode::from(super::common::EXIT_ROWS_FAILED),
        Ok(Ended::Interrupted) => ExitCode::from(super::common::EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("userdir import: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn import(args: &ImportArgs) -> Result<Ended, String> {
    let options = options(args)?;
    let dry_run = options.validate_only;
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut client = super::common::connect(&args.server).await?;

    let (tx, rx) = mpsc::channel(8);
    let bar = progress(size);
    let send_bar = bar.clone();
    let sender = tokio::spawn(async move {
        let first = pb::ImportUsersRequest {
            payload: Some(Payload::Options(options)),
        };
        if tx.send(first).await.is_err() {
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if tx
                .send(pb::ImportUsersRequest {
                    payload: Some(Payload::Chunk(buf[..n].to_vec())),
                })
                .await
                .is_err()
            {
                return Ok(()); // the server ended the call; its status says why
            }
            send_bar.inc(n as u64);
        }
        let _ = tx
            .send(pb::ImportUsersRequest {
                payload: Some(Payload::End(pb::ImportEnd {})),
            })
            .await;
        Ok::<(), std::io::Error>(())
    });

    let request = tonic::Request::new(ReceiverStream::new(rx));
    let started = Instant::now();
    let mut failures: BTreeMap<u64, Failure> = BTreeMap::new();
    let mut rows = 0u64;
    let mut written = 0u64;
    // FULL_SYNC: users absent from the file that stayed, and why.
    let mut protected: Vec<String> = Vec::new();
    let mut summary = None;
    let mut job_name = None;
    let reading = async {
        let response = client.import_users(request).await?;
        job_name = response
            .metadata()
            .get(crate::grpc::users::IMPORT_JOB_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut stream = response.into_inner();
        while let Some(message) = stream.message().await? {
            match message.payload {
                Some(Out::Results(batch)) => {
                    for r in batch.results {
                        if r.outcome == pb::ImportOutcome::Protected as i32 {
                            protected.push(format!("{} {} ({}: {})", r.user, r.email, r.reason, r.message));
                            continue;
                        }
                        if r.outcome != pb::ImportOutcome::Deleted as i32 {
                            rows += 1;
                        }
                        if [
                            pb::ImportOutcome::Created,
                            pb::ImportOutcome::Updated,
                            pb::ImportOutcome::Deleted,
                        ]
                        .iter()
                        .any(|o| *o as i32 == r.outcome)
                        {
                            written += 1;
                        }
                        if r.outcome == pb::ImportOutcome::Failed as i32 {
                            let line = u64::try_from(r.line).unwrap_or(0);
                            failures.insert(
                                line,
                                Failure {
                                    field: r.field,
                                    reason: r.reason,
                                    message: r.message,
                                },
                            );
                        }
                    }
                    let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!("{rows} rows ({rate:.0} rows/s), {} failed", failures.len()));
                }
                Some(Out::Summary(job)) => summary = Some(job),
                None => {}
            }
        }
        Ok::<(), tonic::Status>(())
    };
    // Ctrl-C cancels the call (the server keeps the rows it reported,
    // writes nothing after them, and records the job as CANCELLED).
    let outcome = tokio::select! {
        outcome = reading => Some(outcome),
        _ = tokio::signal::ctrl_c() => None,
    };
    bar.finish_and_clear();
    let job_label = job_name.clone().unwrap_or_else(|| "its job".to_owned());
    let Some(outcome) = outcome else {
        sender.abort();
        eprintln!(
            "userdir import: interrupted. {rows} rows were reported before Ctrl-C, {written} of them written \
             (they stay); rows the server was committing at that moment may be written too ({job_label}, \
             CANCELLED, counts every row written). Run the same import again to finish: rows already imported \
             come back UNCHANGED."
        );
        return Ok(Ended::Interrupted);
    };
    if let Ok(Err(e)) = sender.await {
        return Err(format!("reading {}: {e}", args.file.display()));
    }
    if let Err(status) = outcome {
        let mut text = super::common::describe_status(&status);
        if !status.message().contains("importJobs/") {
            text.push_str(&format!(
                "; {rows} rows were reported before the error, {written} of them written (they stay); see {job_label}"
            ));
        }
        return Err(text);
    }
    let job = summary.ok_or("the server ended the import without a summary; it may be incomplete")?;
    print_summary(&job, started.elapsed(), dry_run);
    for line in protected.iter().take(PROTECTED_SHOWN) {
        println!("  kept, not in the file: {line}");
    }
    if protected.len() > PROTECTED_SHOWN {
        println!("  ... and {} more kept", protected.len() - PROTECTED_SHOWN);
    }
    let path = args.errors.clone().unwrap_or_else(|| errors_path(&args.file));
    if failures.is_empty() {
        // A clean run leaves no errors file of an earlier run behind.
        if args.errors.is_none() && path.exists() && std::fs::remove_file(&path).is_ok() {
            println!(
                "removed {} (left by an earlier run; every row went through now)",
                path.display()
            );
        }
    } else {
        let encoding = match args.encoding {
            Encoding::Auto => DeclaredEncoding::Auto,
            Encoding::Utf8 => DeclaredEncoding::Utf8,
            Encoding::ShiftJis => DeclaredEncoding::ShiftJis,
        };
        let written = if is_workbook(&args.file) {
            write_workbook_errors(&failures, &path)
        } else {
            write_errors(&args.file, encoding, &failures, &path)
        };
        written.map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!(
            "{} failed rows written to {} (fix them and import that file again)",
            failures.len(),
            path.display()
        );
    }
    Ok(Ended::Done {
        failed: failures.len() as u64,
    })
}

/// Users a FULL_SYNC kept that the summary lists one by one.
const PROTECTED_SHOWN: usize = 20;

fn print_summary(job: &pb::ImportJob, elapsed: Duration, dry_run: bool) {
    let state = pb::ImportJobState::try_from(job.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let c = job.counts.unwrap_or_default();
    let rate = c.rows as f64 / elapsed.as_secs_f64().max(1e-3);
    let state = state.trim_start_matches("IMPORT_JOB_STATE_");
    if dry_run {
        println!(
            "DRY RUN, nothing was written. {}: {state} in {:.1}s ({rate:.0} rows/s)",
            job.name,
            elapsed.as_secs_f64()
        );
        println!(
            "  rows {}  would create {}  would update {}  unchanged {}  would delete {}  skipped {}  failed {}  protected {}",
            c.rows, c.created, c.updated, c.unchanged, c.deleted, c.skipped, c.failed, c.protected
        );
    } else {
        println!(
            "{}: {state} in {:.1}s ({rate:.0} rows/s)",
            job.name,
            elapsed.as_secs_f64()
        );
        println!(
            "  rows {}  created {}  updated {}  unchanged {}  deleted {}  skipped {}  failed {}  protected {}",
            c.rows, c.created, c.updated, c.unchanged, c.deleted, c.skipped, c.failed, c.protected
        );
    }
    if !job.error.is_empty() {
        println!("  note: {}", job.error);
    }
}

/// `users.csv` -> `users.errors.csv`.
pub fn errors_path(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "import".into());
    file.with_file_name(format!("{stem}.errors.csv"))
}

/// Writes the header and every failed row of `file`, each followed by the
/// line, field, reason and message the server gave, in the file's encoding.
/// A row that could not be read as CSV (a stray quote, bytes not in the
/// encoding) keeps its raw text in `import_raw`, with its values empty: fix
/// the values from it and import the file again (the import ignores the
/// `import_*` columns).
fn write_errors(
    file: &Path,
    encoding: DeclaredEncoding,
    failures: &BTreeMap<u64, Failure>,
    out: &Path,
) -> std::io::Result<()> {
    let bytes = std::fs::read(file)?;
    let mut decoder = CsvDecoder::new(encoding).with_max_record(usize::MAX / 2);
    let mut records = Vec::new();
    let bad_file = |e: userdir_domain::import::csv::FileError| std::io::Error::other(e.message);
    decoder.push(&bytes, &mut records).map_err(bad_file)?;
    decoder.finish(&mut records).map_err(bad_file)?;
    let shift_jis = decoder.encoding() == Some(FileEncoding::ShiftJis);
    let text_of_file = if shift_jis {
        encoding_rs::SHIFT_JIS
            .decode_without_bom_handling(&bytes)
            .0
            .into_owned()
    } else {
        String::from_utf8_lossy(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes)).into_owned()
    };
    let lines = split_lines(&text_of_file);
    let mut text = String::new();
    let mut header = records.first().and_then(|r| r.fields.clone().ok()).unwrap_or_default();
    let width = header.len();
    header.extend(
        [
            "import_line",
            "import_field",
            "import_reason",
            "import_message",
            "import_raw",
        ]
        .map(String::from),
    );
    push_record(&mut text, header.iter().map(String::as_str), "\r\n");
    for (i, record) in records.iter().enumerate().skip(1) {
        let Some(f) = failures.get(&record.line) else { continue };
        let (mut fields, raw) = match &record.fields {
            Ok(fields) => (fields.clone(), String::new()),
            Err(_) => {
                // The record's lines, up to where the next record starts.
                let first = usize::try_from(record.line).unwrap_or(usize::MAX).saturating_sub(1);
                let end = records
                    .get(i + 1)
                    .map_or(lines.len(), |next| usize::try_from(next.line).unwrap_or(usize::MAX) - 1);
                let raw = lines
                    .get(first..end.min(lines.len()).max(first))
                    .unwrap_or_default()
                    .join("\n");
                (vec![String::new(); width], raw)
            }
        };
        fields.resize(width, String::new());
        fields.extend([
            record.line.to_string(),
            f.field.clone(),
            f.reason.clone(),
            f.message.clone(),
            raw,
        ]);
        push_record(&mut text, fields.iter().map(String::as_str), "\r\n");
    }
    let encoded = if shift_jis {
        encoding_rs::SHIFT_JIS.encode(&text).0.into_owned()
    } else {
        [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat()
    };
    std::fs::write(out, encoded)
}

/// The failed rows of a workbook, by row number, with the field, reason
/// and message the server gave (UTF-8 with a BOM, for Excel): fix those rows
/// in the workbook and import it again.
fn write_workbook_errors(failures: &BTreeMap<u64, Failure>, out: &Path) -> std::io::Result<()> {
    let mut text = String::from("\u{FEFF}");
    push_record(
        &mut text,
        ["import_line", "import_field", "import_reason", "import_message"],
        "\r\n",
    );
    for (line, f) in failures {
        let line = line.to_string();
        push_record(
            &mut text,
            [line.as_str(), f.field.as_str(), f.reason.as_str(), f.message.as_str()],
            "\r\n",
        );
    }
    std::fs::write(out, text)
}

/// The lines of a text: LF, CR LF and a lone CR end a line, as the import counts them.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The errors file keeps a malformed row's raw text, and re-imports as is.
    #[test]
    fn errors_file_keeps_raw_text_of_malformed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.csv");
        std::fs::write(
            &file,
            "name,email\r\nGood,g@example.com\r\nBad \"quote,b@example.com\r\nNo email,\r\n",
        )
        .unwrap();
        let mut failures = BTreeMap::new();
        for (line, reason) in [(3, "MALFORMED_CSV"), (4, "INVALID_ARGUMENT")] {
            let f = Failure {
                field: String::new(),
                reason: reason.into(),
                message: "m".into(),
            };
            failures.insert(line, f);
        }
        let out = dir.path().join("users.errors.csv");
        write_errors(&file, DeclaredEncoding::Auto, &failures, &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let text = text.trim_start_matches('\u{feff}');
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "name,email,import_line,import_field,import_reason,import_message,import_raw"
        );
        assert_eq!(lines[1], ",,3,,MALFORMED_CSV,m,\"Bad \"\"quote,b@example.com\"");
        assert_eq!(lines[2], "No email,,4,,INVALID_ARGUMENT,m,");
        // What the import reads of it: the data columns, the rest ignored.
        let mut decoder = CsvDecoder::new(DeclaredEncoding::Auto);
        let mut records = Vec::new();
        decoder.push(text.as_bytes(), &mut records).unwrap();
        decoder.finish(&mut records).unwrap();
        assert!(records.iter().all(|r| r.fields.is_ok()));
        let header = records[0].fields.clone().unwrap();
        userdir_domain::import::columns::ColumnMap::from_header(
            &header,
            &Default::default(),
            userdir_domain::import::MatchKey::Email,
        )
        .unwrap();
    }

    #[test]
    fn lines_as_the_import_counts_them() {
        assert_eq!(split_lines("a\r\nb\rc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(split_lines("a\n"), ["a"]);
    }
}
