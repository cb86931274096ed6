use std::process::ExitCode;

use clap::Parser;
use userdir::cli::{Cli, Command, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            userdir::telemetry::init(config.log_format);
            match userdir::server::run(config, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "userdir failed");
                    eprintln!("userdir: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
