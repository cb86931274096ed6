//! TLS for the gRPC server (rustls, through tonic): a certificate and key
//! in PEM files, and optionally a CA whose client certificates are then
//! required (mTLS). The peer's certificate chain reaches each request
//! (`tonic::Request::peer_certs`).

use std::path::Path;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::Config;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert and --tls-key go together: set both (PEM files) or neither")]
    Half,
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    NotPem {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
}

/// The server's TLS settings from `config`, or `None` for plaintext.
pub fn server_tls(config: &Config) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err(TlsError::Half),
    };
    let cert = read_pem("--tls-cert", cert, "CERTIFICATE")?;
    let key = read_pem("--tls-key", key, "PRIVATE KEY")?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_pem("--tls-client-ca", ca, "CERTIFICATE")?));
    }
    Ok(Some(tls))
}

/// The bytes of a PEM file, checked to hold a block of the `expected` kind
/// (`PRIVATE KEY` also matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`), so a
/// swapped or empty file is named at start rather than failing every handshake.
pub fn read_pem(what: &'static str, path: &Path, expected: &'static str) -> Result<Vec<u8>, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let holds = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{expected}-----")));
    if !holds {
        return Err(TlsError::NotPem {
            what,
            path: shown,
            expected,
        });
    }
    Ok(bytes)
}
