//! PostgreSQL over TLS: a throw-away cluster started by the test itself
//! (initdb as the `postgres` user, a certificate from a CA generated here,
//! `hostssl` only), reached with `sslmode=require` and `verify-full`; a
//! plaintext connection is refused by the cluster, and a certificate the
//! client does not trust is refused by the client.

use std::path::{Path, PathBuf};
use std::process::Command;

use userdir_domain::repo::TenantRepository;
use userdir_domain::tenant::{Tenant, TenantId, TenantSettings};
use userdir_domain::text::Timestamp;
use userdir_store::{Store, StoreOptions};

use crate::common::pki::TestCa;

/// A PostgreSQL cluster of the test's own, stopped when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Where PostgreSQL's server programs are (`pg_config --bindir`).
fn pg_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.join("initdb").exists().then_some(dir)
}

fn uid_gid(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Writes a CA and a server certificate for 127.0.0.1 into `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = TestCa::new("userdir test PostgreSQL CA");
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"], "127.0.0.1");
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("server.crt", &cert),
        write("server.key", &key),
    )
}

/// Starts the cluster, or `None` where this machine cannot (not root, no
/// PostgreSQL server programs); in CI that fails the test instead.
fn start_cluster() -> Option<Cluster> {
    use std::os::unix::fs::{PermissionsExt, chown};
    let skip = |why: &str| {
        crate::common::skip(&format!("the PostgreSQL TLS test: {why}"));
        None
    };
    let Some(bin) = pg_bindir() else {
        return skip("no PostgreSQL server programs (pg_config --bindir)");
    };
    let Some((uid, gid)) = uid_gid("postgres") else {
        return skip("no postgres user");
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ca, crt, key) = certificates(dir.path());
    for file in [&crt, &key] {
        if chown(file, Some(uid), Some(gid)).is_err() {
            return skip("cannot hand files to the postgres user (not root)");
        }
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chown(&data, Some(uid), Some(gid)).unwrap();
    let as_postgres = |program: &str| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin.join(program));
        cmd
    };
    let out = as_postgres("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = crate::common::free_port();
    let conf = format!(
        "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nssl = on\n\
         ssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
        data.display(),
        crt.display(),
        key.display()
    );
    let mut postgresql_conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    postgresql_conf.push_str(&conf);
    std::fs::write(data.join("postgresql.conf"), postgresql_conf).unwrap();
    // TLS connections only: a plaintext one is refused by the server.
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    let out = as_postgres("pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(data.join("log"))
        .args(["-w", "start"])
        .output()
        .unwrap();
    let log = std::fs::read_to_string(data.join("log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "pg_ctl start: {} {log}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Cluster {
        bin,
        data,
        port,
        ca,
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_sslmode() {
    let Some(cluster) = tokio::task::spawn_blocking(start_cluster).await.unwrap() else {
        return;
    };
    let url = |params: &str| format!("postgres://postgres@127.0.0.1:{}/postgres?{params}", cluster.port);
    // sslmode=verify-full with the CA: migrations run, a tenant is written and read.
    let verified = url(&format!("sslmode=verify-full&sslrootcert={}", cluster.ca.display()));
    let store = Store::open(&StoreOptions::new(&verified)).await.unwrap();
    let id = TenantId::parse("tenant_id", "acme").unwrap();
    let settings = TenantSettings {
        display_name: "Acme".into(),
        ..Default::default()
    };
    let tenant = Tenant::create(id.clone(), settings, Timestamp::now()).unwrap();
    store
        .insert_tenant(&tenant, &userdir_domain::event::Origin::server())
        .await
        .unwrap();
    assert_eq!(store.get_tenant(&id).await.unwrap().id, id);
    store.close().await.unwrap();
    // sslmode=require: encrypted, the certificate not checked.
    let store = Store::connect(&StoreOptions::new(url("sslmode=require")))
        .await
        .unwrap();
    store.get_tenant(&id).await.unwrap();
    store.close().await.unwrap();
    // Plaintext: the cluster refuses it (hostnossl reject).
    let err = Store::connect(&StoreOptions::new(url("sslmode=disable")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pg_hba.conf") || err.contains("reject"), "{err}");
    // verify-full without the CA: the client refuses the unknown certificate.
    let err = Store::connect(&StoreOptions::new(url("sslmode=verify-full")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("tls") || err.contains("TLS"),
        "{err}"
    );
}
