//! `userdir health`: asks a running server's gRPC health service, for a
//! container's HEALTHCHECK or a script. Exit 0 when SERVING, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Check a running server's health.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The service to ask about (`userdir.v1.UserDirectory`); empty for the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub server: super::common::ServerArgs,
}

pub async fn run(args: HealthArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let asked = async {
        let channel = super::common::channel(&args.server).await?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: args.service.clone(),
        });
        request.set_timeout(timeout);
        HealthClient::new(channel)
            .check(request)
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| super::common::describe_status(&s))
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(status)) => {
            let name = tonic_health::pb::health_check_response::ServingStatus::try_from(status)
                .map_or_else(|_| status.to_string(), |s| s.as_str_name().to_owned());
            println!("{name}");
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("userdir health: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "userdir health: no answer from {} within {} s",
                args.server.server,
                timeout.as_secs()
            );
            ExitCode::FAILURE
        }
    }
}
