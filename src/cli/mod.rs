//! The `userdir` command line.

pub mod common;
pub mod events;
pub mod export;
pub mod health;
pub mod import;
pub mod keys;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// userdir: a multi-tenant user directory service over gRPC.
#[derive(Parser)]
#[command(name = "userdir", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<Config>),
    /// Apply pending database migrations and exit (for a deployment's
    /// migration job; `serve` also migrates unless `--no-migrate`).
    Migrate(crate::config::MigrateArgs),
    /// Import users from a CSV file into a running server.
    Import(import::ImportArgs),
    /// Export users from a running server to a CSV file.
    Export(export::ExportArgs),
    /// Ask a running server whether it is SERVING (exit 0) or not (exit 1),
    /// for a container HEALTHCHECK.
    Health(health::HealthArgs),
    /// Make, list and revoke API keys; generate an operator key.
    Keys(keys::KeysArgs),
    /// Print a tenant's audit log, newest first.
    Audit(events::AuditArgs),
    /// Follow a tenant's change feed as JSON lines; the last cursor goes to
    /// stderr on exit, to resume from.
    Watch(events::WatchArgs),
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
