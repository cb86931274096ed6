//! `userdir import`: streams a CSV file to a server's ImportUsers, shows
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
use crate::pb::user_directory_client::UserDirectoryClient;

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
    Utf8,
    ShiftJis,
}

/// Import users from a CSV file.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// Tenant id (`acme`).
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
    /// FULL_SYNC never deletes administrators (effective once roles exist).
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
    /// Server address.
    #[arg(long, env = "USERDIR_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Who runs the import, recorded with the job.
    #[arg(long, env = "USERDIR_ACTOR")]
    pub actor: Option<String>,
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
        parent: format!("tenants/{}", args.tenant),
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
    })
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs the import; exit code 0 when every row went through, 2 when some
/// rows failed, 1 when the import itself failed.
pub async fn run(args: ImportArgs) -> ExitCode {
    match import(&args).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("userdir import: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn import(args: &ImportArgs) -> Result<u64, String> {
    let options = options(args)?;
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut client = UserDirectoryClient::connect(args.server.clone())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.server))?
        .max_decoding_message_size(64 << 20);

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

    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(actor) = args.actor.as_deref().and_then(|a| a.parse().ok()) {
        request.metadata_mut().insert("x-userdir-actor", actor);
    }
    let started = Instant::now();
    let mut failures: BTreeMap<u64, Failure> = BTreeMap::new();
    let mut rows = 0u64;
    let mut summary = None;
    let outcome: Result<(), tonic::Status> = async {
        let mut stream = client.import_users(request).await?.into_inner();
        while let Some(message) = stream.message().await? {
            match message.payload {
                Some(Out::Results(batch)) => {
                    for r in batch.results {
                        if r.outcome != pb::ImportOutcome::Deleted as i32 {
                            rows += 1;
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
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    if let Ok(Err(e)) = sender.await {
        return Err(format!("reading {}: {e}", args.file.display()));
    }
    if let Err(status) = outcome {
        return Err(describe_status(&status));
    }
    let job = summary.ok_or("the server ended the import without a summary; it may be incomplete")?;
    print_summary(&job, started.elapsed());
    if !failures.is_empty() {
        let path = args.errors.clone().unwrap_or_else(|| errors_path(&args.file));
        let encoding = match args.encoding {
            Encoding::Auto => DeclaredEncoding::Auto,
            Encoding::Utf8 => DeclaredEncoding::Utf8,
            Encoding::ShiftJis => DeclaredEncoding::ShiftJis,
        };
        write_errors(&args.file, encoding, &failures, &path).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!(
            "{} failed rows written to {} (fix them and import that file again)",
            failures.len(),
            path.display()
        );
    }
    Ok(failures.len() as u64)
}

fn describe_status(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(info) = status.get_details_error_info() {
        text.push_str(&format!(" [{}]", info.reason));
    }
    text
}

fn print_summary(job: &pb::ImportJob, elapsed: Duration) {
    let state = pb::ImportJobState::try_from(job.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let c = job.counts.unwrap_or_default();
    let rate = c.rows as f64 / elapsed.as_secs_f64().max(1e-3);
    println!(
        "{}: {} in {:.1}s ({rate:.0} rows/s)",
        job.name,
        state.trim_start_matches("IMPORT_JOB_STATE_"),
        elapsed.as_secs_f64()
    );
    println!(
        "  rows {}  created {}  updated {}  unchanged {}  deleted {}  skipped {}  failed {}",
        c.rows, c.created, c.updated, c.unchanged, c.deleted, c.skipped, c.failed
    );
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
fn write_errors(
    file: &Path,
    encoding: DeclaredEncoding,
    failures: &BTreeMap<u64, Failure>,
    out: &Path,
) -> std::io::Result<()> {
    let bytes = std::fs::read(file)?;
    let mut decoder = CsvDecoder::new(encoding);
    let mut records = Vec::new();
    let bad_file = |e: userdir_domain::import::csv::FileError| std::io::Error::other(e.message);
    decoder.push(&bytes, &mut records).map_err(bad_file)?;
    decoder.finish(&mut records).map_err(bad_file)?;
    let mut text = String::new();
    let mut header = records.first().and_then(|r| r.fields.clone().ok()).unwrap_or_default();
    let width = header.len();
    header.extend(["import_line", "import_field", "import_reason", "import_message"].map(String::from));
    push_record(&mut text, header.iter().map(String::as_str), "\r\n");
    for record in records.iter().skip(1) {
        let Some(f) = failures.get(&record.line) else { continue };
        // A row that could not be decoded is written with empty values.
        let mut fields = record.fields.clone().unwrap_or_else(|_| vec![String::new(); width]);
        fields.extend([
            record.line.to_string(),
            f.field.clone(),
            f.reason.clone(),
            f.message.clone(),
        ]);
        push_record(&mut text, fields.iter().map(String::as_str), "\r\n");
    }
    let encoded = match decoder.encoding() {
        Some(FileEncoding::ShiftJis) => encoding_rs::SHIFT_JIS.encode(&text).0.into_owned(),
        _ => [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat(),
    };
    std::fs::write(out, encoded)
}
