//! What the `import` and `export` commands share: the server address, the
//! tenant, and errors an operator can act on.

use std::path::PathBuf;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::client::{AuthedChannel, BearerAuth, authed};
use crate::pb::user_directory_client::UserDirectoryClient;

/// Exit status of a command line that could not be parsed (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit status of an import that some rows failed.
pub const EXIT_ROWS_FAILED: u8 = 2;
/// Exit status after Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// `acme` or `tenants/acme` -> `tenants/acme`.
pub fn tenant_parent(tenant: &str) -> Result<String, String> {
    let id = tenant.strip_prefix("tenants/").unwrap_or(tenant);
    if id.is_empty() || id.contains('/') {
        return Err(format!(
            "--tenant {tenant:?} is not a tenant id; write acme or tenants/acme"
        ));
    }
    Ok(format!("tenants/{id}"))
}

/// How a command reaches the server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Server address: `http://HOST:PORT`, or `https://HOST:PORT` for TLS
    /// (never tried in plaintext).
    #[arg(long, env = "USERDIR_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// PEM CA certificate that signed the server's certificate (https);
    /// without it, the system's trusted roots.
    #[arg(long, env = "USERDIR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate this client presents, for a server that requires
    /// client certificates (with `--client-key`).
    #[arg(long, env = "USERDIR_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `--client-cert`.
    #[arg(long, env = "USERDIR_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// The API key to call with (`udk_...`); better given as USERDIR_API_KEY,
    /// which stays out of the shell history and the process list. A fresh
    /// SQLite install saves its first operator key to `userdir.operator-key`.
    #[arg(long, env = "USERDIR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl ServerArgs {
    /// Plaintext to `server`, with no TLS settings.
    pub fn plain(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            ca_cert: None,
            client_cert: None,
            client_key: None,
            api_key: None,
        }
    }

    /// The same, calling with `key`.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

/// Connects to the server, saying what is wrong and what to type when it cannot.
pub async fn connect(args: &ServerArgs) -> Result<UserDirectoryClient<AuthedChannel>, String> {
    Ok(UserDirectoryClient::new(authed_channel(args).await?).max_decoding_message_size(64 << 20))
}

/// A connection whose calls carry `--api-key`.
pub async fn authed_channel(args: &ServerArgs) -> Result<AuthedChannel, String> {
    let auth = BearerAuth::new(args.api_key.as_deref()).map_err(|e| format!("--api-key: {e}"))?;
    Ok(authed(channel(args).await?, auth))
}

/// A connection to the server (TLS for `https://`), or what to do when there is none.
pub async fn channel(args: &ServerArgs) -> Result<Channel, String> {
    let server = &args.server;
    let scheme = server.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let tls = match scheme.as_deref() {
        Some("http") => {
            if args.ca_cert.is_some() || args.client_cert.is_some() {
                return Err(format!(
                    "--server {server} is plaintext (http://) but TLS settings were given; write https://..."
                ));
            }
            false
        }
        Some("https") => true,
        _ => {
            return Err(format!(
                "--server {server:?} has no scheme; write http://{server} or https://{server} (a URL, as \
                 USERDIR_SERVER too)"
            ));
        }
    };
    let mut endpoint = Endpoint::from_shared(server.clone()).map_err(|e| format!("--server {server:?}: {e}"))?;
    if tls {
        // An https:// address is only ever contacted over TLS.
        endpoint = endpoint
            .tls_config(client_tls(args)?)
            .map_err(|e| format!("--server {server}: TLS settings: {}", causes(&e)))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot reach the userdir server at {server}: {}. Is `userdir serve` running there{}? \
             (--server or USERDIR_SERVER picks another)",
            causes(&e),
            if tls {
                " with TLS, and is --ca-cert the CA that signed its certificate"
            } else {
                ""
            }
        )
    })?;
    Ok(channel)
}

/// The client's TLS settings: the CA to trust (or the system's roots) and
/// the client certificate, if any.
fn client_tls(args: &ServerArgs) -> Result<ClientTlsConfig, String> {
    let read = |what: &'static str, path: &PathBuf, expected: &'static str| {
        crate::tls::read_pem(what, path, expected).map_err(|e| e.to_string())
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &args.ca_cert {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--ca-cert", ca, "CERTIFICATE")?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(Identity::from_pem(
            read("--client-cert", cert, "CERTIFICATE")?,
            read("--client-key", key, "PRIVATE KEY")?,
        ));
    }
    Ok(tls)
}

/// An error and its causes, innermost last ("transport error: connection refused").
pub fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// A failed call as an operator reads it: code, message, reason, and for
/// the codes that call for it, what to do.
pub fn describe_status(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(info) = status.get_details_error_info() {
        text.push_str(&format!(" [{}]", info.reason));
    }
    let hint = match status.code() {
        tonic::Code::Unauthenticated => {
            " (give an API key: USERDIR_API_KEY=udk_... or --api-key; a fresh SQLite install saved its first one \
             to userdir.operator-key)"
        }
        tonic::Code::Unavailable if status.message().contains("transport") || status.message().is_empty() => {
            " (the server is unreachable or went away; is `userdir serve` running?)"
        }
        tonic::Code::Unavailable => " (retry once the database is back)",
        tonic::Code::ResourceExhausted => " (retry later, or with smaller pieces)",
        _ => "",
    };
    text.push_str(hint);
    if let Some(e) = std::error::Error::source(status) {
        text.push_str(&format!(" ({})", causes(e)));
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tenants_either_way() {
        assert_eq!(tenant_parent("acme").unwrap(), "tenants/acme");
        assert_eq!(tenant_parent("tenants/acme").unwrap(), "tenants/acme");
        assert!(tenant_parent("tenants/").is_err());
        assert!(tenant_parent("a/b").is_err());
    }

    #[tokio::test]
    async fn servers_without_a_scheme_or_down_are_explained() {
        let err = connect(&ServerArgs::plain("127.0.0.1:50051")).await.unwrap_err();
        assert!(err.contains("write http://127.0.0.1:50051"), "{err}");
        let mut tls_on_http = ServerArgs::plain("http://127.0.0.1:1");
        tls_on_http.ca_cert = Some("ca.pem".into());
        let err = connect(&tls_on_http).await.unwrap_err();
        assert!(err.contains("write https://"), "{err}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = connect(&ServerArgs::plain(format!("http://127.0.0.1:{port}")))
            .await
            .unwrap_err();
        assert!(err.contains("refused") && err.contains("userdir serve"), "{err}");
    }
}
