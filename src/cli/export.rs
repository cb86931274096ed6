//! `userdir export`: streams a tenant's users to a CSV file (or an Excel
//! workbook, for an output named `.xlsx`) and checks the
//! trailer (count and checksum) before calling it done. The file is written
//! under a temporary name and renamed only when complete, so a cut export
//! never leaves a plausible-looking file behind.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use xxhash_rust::xxh3::Xxh3Default;

use crate::pb;
use crate::pb::export_users_response::Payload;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Encoding {
    /// UTF-8 with a byte order mark (seed 001, Excel-friendly).
    #[value(alias = "utf-8-bom", alias = "utf8bom")]
    Utf8Bom,
    #[value(alias = "utf-8")]
    Utf8,
    /// Shift-JIS (Windows-31J) for Japanese Excel; also shift_jis, sjis, cp932.
    #[value(alias = "shift_jis", alias = "sjis", alias = "cp932", alias = "windows-31j")]
    ShiftJis,
}

/// Export users to a CSV file, or to an Excel workbook for `-o users.xlsx`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Tenant id (`acme` or `tenants/acme`).
    #[arg(long)]
    pub tenant: String,
    /// Output file; `-` writes to standard output (checked all the same:
    /// the exit status is 1 if the stream was cut or damaged).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = Encoding::Utf8Bom)]
    pub encoding: Encoding,
    /// ListUsers filter, e.g. `status = CONFIRMED`.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// ListUsers order, e.g. `email desc`.
    #[arg(long, default_value = "")]
    pub order_by: String,
    /// Columns, comma-separated; default seed 001's export columns.
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// CRLF line endings instead of LF.
    #[arg(long)]
    pub crlf: bool,
    /// Write cells starting with = + - @ as they are.
    #[arg(long)]
    pub no_formula_protection: bool,
    /// Shift-JIS: write `?` for characters it cannot hold instead of failing.
    #[arg(long)]
    pub replace_unmappable: bool,
    #[command(flatten)]
    pub server: super::common::ServerArgs,
}

/// Whether the output is named as a workbook.
fn is_xlsx(output: &std::path::Path) -> bool {
    output
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("xlsx"))
}

pub async fn run(args: ExportArgs) -> ExitCode {
    match export(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("userdir export: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn export(args: &ExportArgs) -> Result<(), String> {
    let request = pb::ExportUsersRequest {
        parent: super::common::tenant_parent(&args.tenant)?,
        filter: args.filter.clone(),
        order_by: args.order_by.clone(),
        format: if is_xlsx(&args.output) {
            pb::ExportFormat::Xlsx
        } else {
            pb::ExportFormat::Csv
        } as i32,
        encoding: match args.encoding {
            Encoding::Utf8Bom => pb::ExportEncoding::Utf8Bom,
            Encoding::Utf8 => pb::ExportEncoding::Utf8,
            Encoding::ShiftJis => pb::ExportEncoding::ShiftJis,
        } as i32,
        columns: args.columns.clone(),
        line_ending: if args.crlf {
            pb::LineEnding::Crlf
        } else {
            pb::LineEnding::Lf
        } as i32,
        disable_formula_protection: args.no_formula_protection,
        unmappable: if args.replace_unmappable {
            pb::UnmappablePolicy::Replace
        } else {
            pb::UnmappablePolicy::Fail
        } as i32,
    };
    let mut client = super::common::connect(&args.server).await?;
    let to_stdout = args.output.as_os_str() == "-";
    let partial = args.output.with_extension("partial");
    let mut file: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(&partial)
                .await
                .map_err(|e| format!("{}: {e}", partial.display()))?,
        )
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let mut hasher = Xxh3Default::new();
    let mut trailer = None;
    let outcome: Result<(), String> = async {
        let mut stream = client
            .export_users(request)
            .await
            .map_err(|s| describe(&s))?
            .into_inner();
        while let Some(message) = stream.message().await.map_err(|s| describe(&s))? {
            match message.payload {
                Some(Payload::Chunk(bytes)) => {
                    hasher.update(&bytes);
                    file.write_all(&bytes).await.map_err(|e| e.to_string())?;
                    bar.inc(bytes.len() as u64);
                }
                Some(Payload::Trailer(t)) => trailer = Some(t),
                _ => {}
            }
        }
        file.flush().await.map_err(|e| e.to_string())
    }
    .await;
    bar.finish_and_clear();
    let checked = outcome.and_then(|()| {
        let t = trailer.ok_or("the stream ended without a trailer: the export is incomplete")?;
        let sum = format!("{:016x}", hasher.digest());
        if sum != t.checksum {
            return Err(format!(
                "checksum mismatch ({sum} received, {} announced): the export is damaged",
                t.checksum
            ));
        }
        Ok(t)
    });
    let t = match checked {
        Ok(t) => t,
        Err(e) if to_stdout => return Err(format!("{e}; what was written to standard output is not to be used")),
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    let summary = if to_stdout {
        format!(
            "{} users exported to standard output in {:.1}s (checksum {} verified)",
            t.user_count,
            started.elapsed().as_secs_f64(),
            t.checksum
        )
    } else {
        tokio::fs::rename(&partial, &args.output)
            .await
            .map_err(|e| format!("{}: {e}", args.output.display()))?;
        format!(
            "{} users exported to {} in {:.1}s (checksum {} verified)",
            t.user_count,
            args.output.display(),
            started.elapsed().as_secs_f64(),
            t.checksum
        )
    };
    // With the data on standard output, the report goes to standard error.
    let report = |line: &str| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    report(&summary);
    for cell in &t.replaced {
        report(&format!(
            "  replaced unmappable characters: {} ({})",
            cell.user, cell.column
        ));
    }
    Ok(())
}

fn describe(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let mut text = super::common::describe_status(status);
    // The server names the API field; this command's flag does the same.
    if status
        .get_details_error_info()
        .is_some_and(|i| i.reason == "SHIFT_JIS_UNMAPPABLE")
    {
        text = text.replace("set unmappable to REPLACE", "pass --replace-unmappable");
        text.push_str(" (or export with --encoding utf8-bom)");
    }
    text
}
