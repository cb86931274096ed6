//! The TOML config file as an operator writes it: a server configured only
//! by a file, the order in which flags, environment and file win, and what
//! a wrong file says (never what its values are).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{TestServer, free_port};

/// Runs `userdir args...` with `env` set (and no `USERDIR_*` of the test's own).
async fn userdir(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_userdir"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("USERDIR_")) {
            command.env_remove(key);
        }
        command.args(args).envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server whose listen address and database come only from a file serves.
async fn a_server_runs_from_its_config_file(s: TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let o = &s.store_options;
    let file = dir.path().join("userdir.toml");
    std::fs::write(
        &file,
        format!(
            "# userdir settings\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = {url:?}\npg-schema = {schema:?}\n\
             db_max_connections = 4\nno_migrate = false\n",
            url = o.url,
            schema = o.pg_schema.as_deref().unwrap_or(""),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_userdir"))
        .args(["serve", "--config", &file.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serving = false;
    for _ in 0..200 {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        if let Ok(channel) = endpoint.connect().await
            && let Ok(answer) = HealthClient::new(channel).check(HealthCheckRequest::default()).await
        {
            serving = answer.into_inner().status == 1;
            if serving {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "the server from the config file never reported SERVING");
}

crate::on_both_backends!(a_server_runs_from_its_config_file);

/// Flags beat the environment, the environment beats the file, the file
/// beats the defaults; `migrate` takes its settings from the same file.
#[tokio::test]
async fn flags_then_environment_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("userdir.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:6001\"\nmax_imports = 3\nlog-format = \"json\"\nno_migrate = true\n\
         database_url = \"postgres://app:SENTINEL_PASSWORD@db.internal/userdir\"\n\
         tls_cert = \"/etc/userdir/tls.pem\"\ntls_key = \"/etc/userdir/tls.key\"\n\
         tls_client_ca = \"/etc/userdir/ca.pem\"\n\
         client_cert_key = [\"subject:CN=ops,O=Example=apiKeys/0193a1b2c3d4e5f60718293a4b5c6d7e\", \
         \"dns:robot.example.com=apiKeys/0193a1b2c3d4e5f60718293a4b5c6d7f\"]\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let out = userdir(&["serve", "--config", &path, "--print-config"], &[]).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(shown.contains("listen: 127.0.0.1:6001"), "{shown}");
    assert!(shown.contains("max_imports: Some(\n        3,\n    )"), "{shown}");
    assert!(shown.contains("log_format: Json"), "{shown}");
    assert!(shown.contains("no_migrate: true"), "{shown}");
    assert!(
        shown.contains("\"subject:CN=ops,O=Example=apiKeys/0193a1b2c3d4e5f60718293a4b5c6d7e\",\n        \"dns:robot"),
        "a list in the file is each of its values: {shown}"
    );
    assert!(shown.contains("db_max_connections: 16"), "a default stays: {shown}");
    assert!(!shown.contains("SENTINEL"), "secrets are never printed: {shown}");

    let out = userdir(
        &["serve", "--config", &path, "--print-config"],
        &[("USERDIR_LISTEN", "127.0.0.1:6002"), ("USERDIR_MAX_IMPORTS", "5")],
    )
    .await;
    let shown = text(&out.stdout);
    assert!(shown.contains("listen: 127.0.0.1:6002"), "{shown}");
    assert!(shown.contains("max_imports: Some(\n        5,\n    )"), "{shown}");

    let out = userdir(
        &[
            "serve",
            "--config",
            &path,
            "--listen",
            "127.0.0.1:6003",
            "--print-config",
        ],
        &[("USERDIR_LISTEN", "127.0.0.1:6002")],
    )
    .await;
    assert!(text(&out.stdout).contains("listen: 127.0.0.1:6003"), "{out:?}");

    // The file named by the environment works the same.
    let out = userdir(&["serve", "--print-config"], &[("USERDIR_CONFIG", &path)]).await;
    assert!(text(&out.stdout).contains("listen: 127.0.0.1:6001"), "{out:?}");

    // migrate reads the database from the same file (and ignores `listen`).
    let out = userdir(&["migrate", "--config", &path], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stderr);
    assert!(said.contains("postgres://app:***@db.internal/userdir"), "{said}");
    assert!(!said.contains("SENTINEL"), "{said}");
}

/// A typo, a syntax error, a bad value or a wrong type: the file and key
/// are named, the command exits 64, and no value of the file is echoed.
#[tokio::test]
async fn a_wrong_config_file_is_named_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let cases = [
        (write("typo.toml", "lisen = \"127.0.0.1:1\"\n"), "unknown key `lisen`"),
        (
            write(
                "syntax.toml",
                "listen = \"127.0.0.1:1\"\ndatabase_url = \"postgres://u:SENTINEL_PASSWORD@h/db\n",
            ),
            "not valid TOML at line 2",
        ),
        (
            write("value.toml", "listen = \"not-an-address\"\n"),
            "the value of `listen`",
        ),
        (
            write("type.toml", "no_migrate = \"yes\"\n"),
            "`no_migrate` must be true or false",
        ),
        (
            write("nested.toml", "[server]\nlisten = \"x\"\n"),
            "unknown key `server`",
        ),
        (write("self.toml", "config = \"other.toml\"\n"), "unknown key `config`"),
    ];
    for (path, expected) in cases {
        let out = userdir(&["serve", "--config", &path], &[]).await;
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{path}: {said}");
        assert!(said.contains(expected), "{path}: {said}");
        if !expected.contains("value of") {
            assert!(!said.contains("SENTINEL"), "{path}: {said}");
        }
    }
    let out = userdir(&["serve", "--config", "/nonexistent/userdir.toml"], &[]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("cannot read the config file /nonexistent/userdir.toml"));
}
