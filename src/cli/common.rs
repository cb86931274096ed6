//! What the `import` and `export` commands share: the server address, the
//! tenant, and errors an operator can act on.

use tonic::transport::{Channel, Endpoint};

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

/// Connects to `server`, saying what is wrong and what to type when it cannot.
pub async fn connect(server: &str) -> Result<UserDirectoryClient<Channel>, String> {
    let scheme = server.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") => {}
        Some("https") => {
            // Never fall back to plaintext for an https:// address.
            return Err(format!(
                "--server {server}: this build of userdir has no TLS yet, and an https:// address is never \
                 contacted in plaintext; use http://... for a server without TLS"
            ));
        }
        _ => {
            return Err(format!(
                "--server {server:?} has no scheme; write http://{server} (a URL, as USERDIR_SERVER too)"
            ));
        }
    }
    let endpoint = Endpoint::from_shared(server.to_owned()).map_err(|e| format!("--server {server:?}: {e}"))?;
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot reach the userdir server at {server}: {}. Is `userdir serve` running there? \
             (--server or USERDIR_SERVER picks another)",
            causes(&e)
        )
    })?;
    Ok(UserDirectoryClient::new(channel).max_decoding_message_size(64 << 20))
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
        let err = connect("127.0.0.1:50051").await.unwrap_err();
        assert!(err.contains("write http://127.0.0.1:50051"), "{err}");
        let err = connect("https://127.0.0.1:1").await.unwrap_err();
        assert!(err.contains("never"), "{err}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = connect(&format!("http://127.0.0.1:{port}")).await.unwrap_err();
        assert!(err.contains("refused") && err.contains("userdir serve"), "{err}");
    }
}
