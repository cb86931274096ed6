//! TLS on the gRPC listener: a server started in-process with a certificate
//! from a CA generated here (rcgen), reached over real TCP by a tonic client
//! that trusts that CA, and by the CLI's connection code; plaintext and
//! untrusted clients are refused; with `--tls-client-ca` a client
//! certificate is required.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use userdir::cli::common::{ServerArgs, connect};
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::{CreateTenantRequest, Tenant};

use crate::common::pki::TestCa;

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A second client, `CN=other`, that no mapping names.
    other_cert: PathBuf,
    other_key: PathBuf,
    /// The CA, to issue more client certificates.
    issuer: crate::common::pki::TestCa,
}

fn pki(dir: &Path) -> Pki {
    let ca = TestCa::new("userdir test CA");
    let (server_cert, server_key) = ca.issue(&["127.0.0.1", "localhost"], "userdir");
    let (client_cert, client_key) = ca.issue(&["ops.example.com"], "ops");
    let (other_cert, other_key) = ca.issue(&["other.example.com"], "other");
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
        other_cert: write("other.pem", &other_cert),
        other_key: write("other.key", &other_key),
        issuer: ca,
    }
}

/// Starts `serve` on 127.0.0.1:0 with TLS over a fresh SQLite file; returns the port.
async fn tls_server(dir: &Path, pki: &Pki, client_ca: bool) -> (u16, tokio::sync::oneshot::Sender<()>) {
    tls_server_with(dir, pki, client_ca, Vec::new()).await
}

/// [`tls_server`] with `--client-cert-key` mappings.
async fn tls_server_with(
    dir: &Path,
    pki: &Pki,
    client_ca: bool,
    cert_keys: Vec<String>,
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("userdir.db").display());
    let mut config = crate::common::test_config(url);
    config.tls_cert = Some(pki.server_cert.clone());
    config.tls_key = Some(pki.server_key.clone());
    config.tls_client_ca = client_ca.then(|| pki.ca.clone());
    config.tls_reload_secs = 1;
    config.client_cert_key = cert_keys;
    let store = userdir_store::Store::open(&config.store_options()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        userdir::server::serve(listener, store, &config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (port, stop)
}

async fn create_tenant(channel: tonic::transport::Channel, id: &str) -> Result<(), tonic::Status> {
    TenantAdminClient::new(crate::common::with_key(&channel, Some(crate::common::operator_key())))
        .create_tenant(CreateTenantRequest {
            tenant_id: id.into(),
            tenant: Some(Tenant {
                display_name: id.into(),
                ..Default::default()
            }),
            initial_owner: None,
        })
        .await
        .map(|_| ())
}

fn trusting(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_serves_trusting_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (port, _stop) = tls_server(dir.path(), &pki, false).await;
    let url = format!("https://127.0.0.1:{port}");
    // A client that trusts the CA: the call goes through.
    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(trusting(&pki))
        .unwrap()
        .connect()
        .await
        .unwrap();
    create_tenant(channel, "acme").await.unwrap();
    // The CLI's connection, with --ca-cert: the same.
    let mut args = ServerArgs::plain(url.clone());
    args.ca_cert = Some(pki.ca.clone());
    connect(&args).await.unwrap();
    // Without the CA (the system's roots do not know it): refused, never
    // retried in plaintext.
    let err = connect(&ServerArgs::plain(url.clone())).await.unwrap_err();
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}");
    // A plaintext client gets nothing from a TLS listener.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let refused = match plain.connect().await {
        Ok(channel) => create_tenant(channel, "beta").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plaintext client was served by the TLS listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (port, _stop) = tls_server(dir.path(), &pki, true).await;
    let url = format!("https://127.0.0.1:{port}");
    // Without a client certificate: refused.
    let without = match Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(trusting(&pki))
        .unwrap()
        .connect()
        .await
    {
        Ok(channel) => create_tenant(channel, "acme").await.is_err(),
        Err(_) => true,
    };
    assert!(without, "a client without a certificate was served");
    // With one the CA signed: served, through the CLI's connection too.
    let identity = Identity::from_pem(
        std::fs::read(&pki.client_cert).unwrap(),
        std::fs::read(&pki.client_key).unwrap(),
    );
    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(trusting(&pki).identity(identity))
        .unwrap()
        .connect()
        .await
        .unwrap();
    create_tenant(channel, "acme").await.unwrap();
    let mut args = ServerArgs::plain(url);
    args.ca_cert = Some(pki.ca.clone());
    args.client_cert = Some(pki.client_cert.clone());
    args.client_key = Some(pki.client_key.clone());
    connect(&args).await.unwrap();
}

#[tokio::test]
async fn half_or_wrong_tls_settings_are_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut config = crate::common::test_config("sqlite::memory:");
    config.tls_cert = Some(pki.server_cert.clone());
    let err = userdir::tls::server_tls(&config).unwrap_err().to_string();
    assert!(err.contains("--tls-cert and --tls-key go together"), "{err}");
    // Certificate and key swapped.
    config.tls_cert = Some(pki.server_key.clone());
    config.tls_key = Some(pki.server_cert.clone());
    let err = userdir::tls::server_tls(&config).unwrap_err().to_string();
    assert!(
        err.contains("--tls-cert") && err.contains("no PEM CERTIFICATE"),
        "{err}"
    );
    config.tls_cert = Some(dir.path().join("missing.pem"));
    let err = userdir::tls::server_tls(&config).unwrap_err().to_string();
    assert!(err.contains("cannot read --tls-cert"), "{err}");
}

/// cert-manager rotates the certificate files: within the reload interval
/// new connections get the new certificate (a client that trusts only the
/// new CA gets in, one that trusts only the old one no longer does), and a
/// connection opened before goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_served_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old = pki(dir.path());
    let next_dir = tempfile::tempdir().unwrap();
    let next = pki(next_dir.path());
    let (port, _stop) = tls_server(dir.path(), &old, false).await;
    let url = format!("https://127.0.0.1:{port}");
    let connect_trusting = |pki: &Pki| {
        let endpoint = Endpoint::from_shared(url.clone())
            .unwrap()
            .tls_config(trusting(pki))
            .unwrap();
        async move { endpoint.connect().await }
    };
    let open = connect_trusting(&old).await.unwrap();
    create_tenant(open.clone(), "acme").await.unwrap();
    // Rotate: the files now hold a certificate of another CA.
    std::fs::copy(&next.server_cert, &old.server_cert).unwrap();
    std::fs::copy(&next.server_key, &old.server_key).unwrap();
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if let Ok(channel) = connect_trusting(&next).await
            && create_tenant(channel, "beta").await.is_ok()
        {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the rotated certificate was never served");
    let stale = match connect_trusting(&old).await {
        Ok(channel) => create_tenant(channel, "gamma").await.is_err(),
        Err(_) => true,
    };
    assert!(stale, "a new connection still got the old certificate");
    // The connection opened before the rotation still works.
    create_tenant(open, "delta").await.unwrap();
}

/// A rotation that leaves files that do not load (here a key of another
/// certificate) is refused and logged: the server goes on serving the pair it
/// had, to new connections too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rotation_keeps_the_certificate_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut config = crate::common::test_config("sqlite::memory:");
    config.tls_cert = Some(pki.server_cert.clone());
    config.tls_key = Some(pki.server_key.clone());
    let tls = userdir::tls::server_tls(&config).unwrap().unwrap();
    assert!(!tls.reload(false).unwrap(), "nothing changed, nothing reloaded");
    let (port, _stop) = tls_server(dir.path(), &pki, false).await;
    let connect = || async {
        Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(trusting(&pki))
            .unwrap()
            .connect()
            .await
    };
    // The server is up with the good pair before the files break.
    let mut up = None;
    for _ in 0..50 {
        if let Ok(channel) = connect().await {
            up = Some(channel);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    create_tenant(up.expect("the TLS server started"), "acme")
        .await
        .unwrap();
    std::fs::copy(&pki.client_key, &pki.server_key).unwrap();
    let err = tls.reload(true).unwrap_err().to_string();
    assert!(err.contains("--tls-key") && err.contains("does not match"), "{err}");
    // The running server's reloader (every second) met the same files.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    create_tenant(connect().await.unwrap(), "beta").await.unwrap();
}

/// With client certificates, each request carries the certificate's
/// identity: the RPC log line of a `userdir serve` process names its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_certificate_subject_reaches_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let port = crate::common::free_port();
    let log = dir.path().join("userdir.log");
    let path = |p: &PathBuf| p.display().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .args([
            "--database-url",
            &format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display()),
        ])
        .args([
            "--tls-cert",
            &path(&pki.server_cert),
            "--tls-key",
            &path(&pki.server_key),
        ])
        .args(["--tls-client-ca", &path(&pki.ca)])
        .env("RUST_LOG", "info")
        .env("USERDIR_OPERATOR_KEY", crate::common::operator_key())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let identity = Identity::from_pem(
        std::fs::read(&pki.client_cert).unwrap(),
        std::fs::read(&pki.client_key).unwrap(),
    );
    let mut channel = None;
    for _ in 0..200 {
        if let Ok(endpoint) = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(trusting(&pki).identity(identity.clone()))
            && let Ok(connected) = endpoint.connect().await
            && create_tenant(connected.clone(), "acme").await.is_ok()
        {
            channel = Some(connected);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A second call on the same connection carries the identity too.
    let second = match &channel {
        Some(channel) => create_tenant(channel.clone(), "beta").await,
        None => Ok(()),
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(channel.is_some(), "the mTLS call never went through: {text}");
    second.unwrap();
    let peers: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["method"] == "/userdir.v1.TenantAdmin/CreateTenant" && l["status"] == "Ok")
        .map(|l| l["peer"].clone())
        .collect();
    assert_eq!(peers, ["CN=ops", "CN=ops"], "{text}");
}

/// A channel to `port` presenting `cert`/`key` (mTLS), without an API key.
async fn mtls_channel(pki: &Pki, port: u16, cert: &Path, key: &Path) -> tonic::transport::Channel {
    let identity = Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap());
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(trusting(pki).identity(identity))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `--client-cert-key` maps a certificate to an API key: a call with that
/// certificate and no `authorization` header has the key's rights, and
/// loses them when the key is revoked; a bearer token wins over the
/// certificate; a certificate no mapping names is no credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_client_certificate_has_its_keys_rights() {
    use userdir::pb::api_keys_client::ApiKeysClient;
    use userdir::pb::{GetTenantRequest, RevokeApiKeyRequest};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // First start: a tenant and a read-only key of it.
    let (port, stop) = tls_server(dir.path(), &pki, true).await;
    let ops = mtls_channel(&pki, port, &pki.client_cert, &pki.client_key).await;
    create_tenant(ops.clone(), "acme").await.unwrap();
    let operator = crate::common::with_key(&ops, Some(crate::common::operator_key()));
    let (_, key) = crate::common::create_key(&operator, "acme", &[userdir::pb::Scope::Read], false).await;
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Second start, the certificate `CN=ops` mapped to that key.
    let mapping = format!("subject:CN=ops={}", key.name);
    let (port, _stop) = tls_server_with(dir.path(), &pki, true, vec![mapping]).await;
    let get = |channel: tonic::transport::Channel, tenant: &str| {
        let request = GetTenantRequest {
            name: format!("tenants/{tenant}"),
        };
        async move {
            userdir::pb::tenant_admin_client::TenantAdminClient::new(channel)
                .get_tenant(request)
                .await
                .map(|_| ())
        }
    };
    let ops = mtls_channel(&pki, port, &pki.client_cert, &pki.client_key).await;
    get(ops.clone(), "acme").await.unwrap();
    assert_eq!(
        get(ops.clone(), "globex").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let read_only = TenantAdminClient::new(ops.clone())
        .create_tenant(CreateTenantRequest {
            tenant_id: "beta".into(),
            tenant: Some(Tenant {
                display_name: "beta".into(),
                ..Default::default()
            }),
            initial_owner: None,
        })
        .await
        .unwrap_err();
    assert_eq!(read_only.code(), tonic::Code::PermissionDenied, "{read_only:?}");
    // A bearer token wins over the certificate.
    create_tenant(ops.clone(), "beta").await.unwrap();
    // A certificate no mapping names is no credential.
    let other = mtls_channel(&pki, port, &pki.other_cert, &pki.other_key).await;
    assert_eq!(
        get(other, "acme").await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // Revoking the key ends the certificate's rights within a refresh.
    ApiKeysClient::new(crate::common::with_key(&ops, Some(crate::common::operator_key())))
        .revoke_api_key(RevokeApiKeyRequest { name: key.name.clone() })
        .await
        .unwrap();
    let err = get(ops, "acme").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{err:?}");
}

/// A subject mapping compares the certificate's attributes, not its
/// subject as text: the README's form (`subject:CN=ops,O=Example`) matches
/// a certificate whose subject holds those two attributes, and a
/// certificate whose one common name reads `ops, O=Example` is no
/// credential (it was taken for that mapping when subjects were compared
/// as display text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_mapping_compares_attributes_not_text() {
    use rcgen::DnType::{CommonName, OrganizationName};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let operator_id = crate::common::operator_key().split('_').nth(1).unwrap().to_owned();
    let mappings = vec![format!("subject:CN=ops,O=Example=apiKeys/{operator_id}")];
    let (port, _stop) = tls_server_with(dir.path(), &pki, true, mappings).await;
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let (cert, key) = pki.issuer.issue_subject(
        &["ops.example.com"],
        &[(CommonName, "ops"), (OrganizationName, "Example")],
    );
    let (exact_cert, exact_key) = (write("exact.pem", &cert), write("exact.key", &key));
    let (cert, key) = pki
        .issuer
        .issue_subject(&["ops.example.com"], &[(CommonName, "ops, O=Example")]);
    let (spoof_cert, spoof_key) = (write("spoof.pem", &cert), write("spoof.key", &key));

    // No authorization header: the certificate alone is the credential.
    let list = |channel: tonic::transport::Channel| async move {
        TenantAdminClient::new(channel)
            .list_tenants(userdir::pb::ListTenantsRequest::default())
            .await
    };
    let exact = mtls_channel(&pki, port, &exact_cert, &exact_key).await;
    list(exact).await.unwrap();
    let spoof = mtls_channel(&pki, port, &spoof_cert, &spoof_key).await;
    let err = list(spoof).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}
