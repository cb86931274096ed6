use std::process::ExitCode;

/// mimalloc: bulk imports allocate and free many small strings; glibc's
/// allocator spent a quarter of an import's CPU time on that. Its v2 line
/// (the crate's `v2` feature) returns freed memory to the OS after 10 ms
/// where v3 waits a second: 1M new users on SQLite peaked at 155 MiB RSS
/// instead of 175-204, at the same speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use userdir::cli::{Cli, Command, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let (args, from_file) = match userdir::config::file::apply(std::env::args_os().collect()) {
        Ok(applied) => applied,
        Err(e) => {
            eprintln!("userdir: {e}");
            return ExitCode::from(userdir::cli::common::EXIT_USAGE);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(note) = from_file.explain(&e) {
                eprintln!("userdir: {note}");
            }
            // Help and --version are not errors; a bad command line has a
            // code of its own, apart from an import whose rows failed (2).
            let code = if e.use_stderr() {
                userdir::cli::common::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve(config) if config.print_config => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Command::Serve(config) => {
            let telemetry = match userdir::telemetry::init(config.log_format) {
                Ok(telemetry) => telemetry,
                Err(e) => {
                    eprintln!("userdir: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = match userdir::server::run(*config, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "userdir failed");
                    eprintln!("userdir: {e}");
                    ExitCode::FAILURE
                }
            };
            telemetry.shutdown();
            code
        }
        Command::Migrate(args) => match userdir::server::migrate(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("userdir migrate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Import(args) => userdir::cli::import::run(args).await,
        Command::Export(args) => userdir::cli::export::run(args).await,
        Command::Health(args) => userdir::cli::health::run(args).await,
        Command::Keys(args) => userdir::cli::keys::run(args).await,
        Command::Audit(args) => userdir::cli::events::audit(args).await,
        Command::Watch(args) => userdir::cli::events::watch(args).await,
    }
}
