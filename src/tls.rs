//! TLS for the gRPC server (rustls with ring): a certificate and key in PEM
//! files, and optionally a CA whose client certificates are then required
//! (mTLS). The files are read again when they change (checked every few
//! seconds) or on SIGHUP, so a rotated certificate (cert-manager) is served
//! to new connections without a restart and without dropping the open
//! ones; a file that does not load keeps the certificate in use and is
//! logged. The peer's certificate chain reaches each request
//! (`tonic::Request::peer_certs`), and its identity ([`crate::peer`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

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
    #[error("{what} {path}: {message}")]
    Invalid {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("TLS settings: {0}")]
    Rustls(String),
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS: the rustls configuration and the certificate it serves now.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    current: Arc<CurrentCert>,
}

/// The certificate new handshakes get; swapped when the files change.
#[derive(Debug)]
struct CurrentCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    key: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files as last loaded.
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.key.read().unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads a certificate chain and its private key.
fn load_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let invalid = |what, path: &Path, message: String| TlsError::Invalid {
        what,
        path: path.display().to_string(),
        message,
    };
    let cert_pem = read_pem("--tls-cert", cert_path, "CERTIFICATE")?;
    let key_pem = read_pem("--tls-key", key_path, "PRIVATE KEY")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("--tls-cert", cert_path, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("--tls-key", key_path, e.to_string()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid("--tls-key", key_path, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| invalid("--tls-key", key_path, format!("does not match --tls-cert: {e}")))?;
    Ok(certified)
}

/// The server's TLS settings from `config`, or `None` for plaintext.
pub fn server_tls(config: &Config) -> Result<Option<ServerTls>, TlsError> {
    let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => return Err(TlsError::Half),
    };
    let loaded = (modified(&cert_path), modified(&key_path));
    let key = load_key(&cert_path, &key_path)?;
    let current = Arc::new(CurrentCert {
        cert_path,
        key_path,
        key: RwLock::new(Arc::new(key)),
        loaded: RwLock::new(loaded),
    });
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &config.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let pem = read_pem("--tls-client-ca", ca, "CERTIFICATE")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::Invalid {
                    what: "--tls-client-ca",
                    path: ca.display().to_string(),
                    message: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| TlsError::Invalid {
                    what: "--tls-client-ca",
                    path: ca.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder.with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(ServerTls {
        config: Arc::new(tls),
        current,
    }))
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.current.cert_path)
            .field("key", &self.current.key_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate files again if they changed since they were
    /// loaded (or always, with `force`); a file that does not load keeps the
    /// certificate in use. `Ok(true)` when a new certificate is served.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let c = &self.current;
        let now = (modified(&c.cert_path), modified(&c.key_path));
        let last = *c.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !force && now == last {
            return Ok(false);
        }
        let key = load_key(&c.cert_path, &c.key_path)?;
        *c.key.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
        *c.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
        Ok(true)
    }

    /// Reloads when the files change (checked every `every`) or on SIGHUP,
    /// until dropped.
    pub fn spawn_reloader(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let force = tokio::select! {
                    () = tokio::time::sleep(every) => false,
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                match tls.reload(force) {
                    Ok(true) => tracing::info!(
                        cert = %tls.current.cert_path.display(),
                        "TLS certificate reloaded; new connections get it, open ones keep theirs"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the one in use stays"),
                }
            }
        })
    }

    /// The TLS connections over `tcp`: each handshake runs on a task of its
    /// own (a slow client does not hold up the others) and must finish within
    /// [`HANDSHAKE_TIMEOUT`]; failed handshakes are logged and dropped.
    pub fn incoming(&self, mut tcp: TcpIncoming) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(accepted) = tcp.next().await {
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepting a connection failed");
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, sender) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
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
