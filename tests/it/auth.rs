//! Who is calling, as a client meets it: every RPC wants a credential; a
//! key reaches one tenant (others "do not exist") or all, holds scopes
//! (else PERMISSION_DENIED naming the permission), is shown once, stored
//! hashed, revoked within seconds on every server; the first operator key
//! comes from configuration or is made at first start.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use userdir::pb::api_keys_client::ApiKeysClient;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{
    ApiKey, CreateApiKeyRequest, CreateUserRequest, DeleteUserRequest, ExportUsersRequest, GetApiKeyRequest,
    GetTenantRequest, GetUserRequest, ListApiKeysRequest, ListImportJobsRequest, ListTenantsRequest, ListUsersRequest,
    RevokeApiKeyRequest, Scope, Tenant, UpdateTenantRequest, UpdateUserRequest, User,
};

use crate::common::{TestServer, operator_key, reason, with_key};

/// A client of every service, calling with one key.
struct As {
    users: UserDirectoryClient<userdir::client::AuthedChannel>,
    tenants: TenantAdminClient<userdir::client::AuthedChannel>,
    keys: ApiKeysClient<userdir::client::AuthedChannel>,
}

fn as_key(s: &TestServer, key: Option<&str>) -> As {
    let channel = with_key(&s.plain, key);
    As {
        users: UserDirectoryClient::new(channel.clone()),
        tenants: TenantAdminClient::new(channel.clone()),
        keys: ApiKeysClient::new(channel),
    }
}

/// Makes a key as the operator; returns its token and record.
pub(crate) async fn make_key(s: &TestServer, tenant: &str, scopes: &[Scope]) -> (String, ApiKey) {
    crate::common::create_key(&s.channel, tenant, scopes, false).await
}

pub(crate) const ALL: [Scope; 5] = [Scope::Read, Scope::Write, Scope::Import, Scope::Export, Scope::Admin];

/// The `grpc-status` and `grpc-message` of one call of `path` with an
/// empty message and `authorization` if given.
async fn raw_call(addr: std::net::SocketAddr, path: &str, authorization: Option<&str>) -> (String, String) {
    let headers: Vec<(&str, String)> = authorization
        .map(|a| ("authorization", a.to_owned()))
        .into_iter()
        .collect();
    crate::common::raw_call(addr, path, &[], &headers).await
}

/// Every method of every `userdir.v1` service, from the descriptor set
/// reflection serves (so a new RPC is covered the day it is added).
pub(crate) fn every_method() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(userdir::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut paths = Vec::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
            }
        }
    }
    paths
}

/// No credential, a malformed one, an unknown one, another scheme: each
/// RPC answers UNAUTHENTICATED; health needs none; reflection is open on
/// this loopback listener.
async fn every_rpc_needs_a_credential(s: TestServer) {
    let methods = every_method();
    assert!(methods.len() >= 18, "{methods:?}");
    let unknown = userdir_domain::apikey::NewApiKey::generate().unwrap().token();
    let unknown = format!("Bearer {unknown}");
    for path in &methods {
        for credential in [
            None,
            Some("Bearer udk_nope"),
            Some(unknown.as_str()),
            Some("Basic b3A6cGFzcw=="),
        ] {
            let (status, message) = raw_call(s.addr, path, credential).await;
            assert_eq!(status, "16", "{path} with {credential:?}: {message}");
            assert!(
                message.contains("Bearer udk_") || message.contains("API key"),
                "says what to send: {message}"
            );
        }
    }
    // The operator key goes through (an empty request: a validation error, not 16).
    let operator = format!("Bearer {}", operator_key());
    let (status, _) = raw_call(s.addr, "/userdir.v1.TenantAdmin/ListTenants", Some(&operator)).await;
    assert_eq!(status, "0");
    // Health needs nothing; reflection is open on loopback.
    assert_eq!(s.health_status("").await, 1);
    let (status, message) = raw_call(
        s.addr,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        None,
    )
    .await;
    assert_ne!(
        status, "16",
        "reflection wants no key here (an empty request is just invalid): {message}"
    );
    // A tonic client without a key: the status, its reason.
    let err = as_key(&s, None)
        .tenants
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "UNAUTHENTICATED");
}

/// A key of another tenant: every call about acme answers exactly as for a
/// tenant that does not exist.
async fn another_tenants_key_finds_nothing(s: TestServer) {
    s.tenant("acme").await;
    s.tenant("globex").await;
    let user = s.user("acme", "taro@example.com", "Taro").await;
    let (token, _) = make_key(&s, "globex", &ALL).await;
    let mut globex = as_key(&s, Some(&token));
    let same_as_missing = |err: tonic::Status, missing: tonic::Status, what: &str| {
        assert_eq!(err.code(), Code::NotFound, "{what}: {err:?}");
        assert_eq!(reason(&err), reason(&missing), "{what}");
        assert_eq!(
            err.message().replace("acme", "X"),
            missing.message().replace("nosuch", "X"),
            "{what}: no oracle"
        );
    };
    for tenant in ["acme", "nosuch"] {
        let err = globex
            .tenants
            .get_tenant(GetTenantRequest {
                name: format!("tenants/{tenant}"),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{tenant}");
        assert_eq!(reason(&err), "TENANT_NOT_FOUND");
    }
    let list = |tenant: &str| ListUsersRequest {
        parent: format!("tenants/{tenant}"),
        ..Default::default()
    };
    same_as_missing(
        globex.users.list_users(list("acme")).await.unwrap_err(),
        globex.users.list_users(list("nosuch")).await.unwrap_err(),
        "ListUsers",
    );
    let err = globex
        .users
        .get_user(GetUserRequest {
            name: user.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        reason(&err),
        "TENANT_NOT_FOUND",
        "the tenant, not the user, is what is missing"
    );
    let err = globex
        .users
        .delete_user(DeleteUserRequest {
            name: user.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = globex
        .users
        .create_user(CreateUserRequest {
            parent: "tenants/acme".into(),
            user: Some(User {
                email: "intruder@example.com".into(),
                display_name: "Intruder".into(),
                ..Default::default()
            }),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = globex
        .users
        .export_users(ExportUsersRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = globex
        .users
        .list_import_jobs(ListImportJobsRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = globex
        .tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                name: "tenants/acme".into(),
                display_name: "Mine".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Its own tenant works; the list of tenants is its own.
    let listed = globex
        .tenants
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["tenants/globex"]);
    globex.users.list_users(list("globex")).await.unwrap();
    // Installation-wide: not for a tenant's key.
    let err = globex
        .tenants
        .create_tenant(userdir::pb::CreateTenantRequest {
            tenant_id: "initech".into(),
            tenant: Some(Tenant {
                display_name: "Initech".into(),
                ..Default::default()
            }),
            initial_owner: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Keys of other tenants and operator keys do not exist for it.
    let operator_name = format!("apiKeys/{}", &operator_key()[4..36]);
    let err = globex
        .keys
        .get_api_key(GetApiKeyRequest { name: operator_name })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "API_KEY_NOT_FOUND")
    );
    let keys = globex
        .keys
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!keys.api_keys.is_empty(), "globex sees its own key");
    assert!(keys.api_keys.iter().all(|k| k.tenant == "tenants/globex"), "{keys:?}");
}

/// A read-only key reads; anything else is PERMISSION_DENIED with
/// `MISSING_PERMISSION` and the permission in the error's metadata.
async fn a_read_only_key_only_reads(s: TestServer) {
    use tonic_types::StatusExt as _;
    s.tenant("acme").await;
    let user = s.user("acme", "taro@example.com", "Taro").await;
    let (token, _) = make_key(&s, "acme", &[Scope::Read]).await;
    let mut reader = as_key(&s, Some(&token));
    reader
        .users
        .get_user(GetUserRequest {
            name: user.name.clone(),
        })
        .await
        .unwrap();
    reader
        .tenants
        .get_tenant(GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await
        .unwrap();
    let denied = |err: tonic::Status, permission: &str| {
        assert_eq!(err.code(), Code::PermissionDenied, "{permission}: {err:?}");
        let info = err.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "MISSING_PERMISSION");
        assert_eq!(info.metadata.get("permission").map(String::as_str), Some(permission));
    };
    denied(
        reader
            .users
            .create_user(CreateUserRequest {
                parent: "tenants/acme".into(),
                user: Some(User {
                    email: "new@example.com".into(),
                    display_name: "New".into(),
                    ..Default::default()
                }),
                validate_only: false,
            })
            .await
            .unwrap_err(),
        "users.create",
    );
    denied(
        reader
            .users
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: user.name.clone(),
                    display_name: "Changed".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            })
            .await
            .unwrap_err(),
        "users.update",
    );
    denied(
        reader
            .users
            .delete_user(DeleteUserRequest {
                name: user.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        "users.delete",
    );
    denied(
        reader
            .users
            .export_users(ExportUsersRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        "users.export",
    );
    let import = reader
        .users
        .import_users(tokio_stream::iter(vec![
            userdir::pb::ImportUsersRequest {
                payload: Some(userdir::pb::import_users_request::Payload::Options(
                    crate::import::options(userdir::pb::ImportMode::Upsert),
                )),
            },
            crate::import::end(),
        ]))
        .await;
    denied(import.expect_err("refused"), "users.import");
    denied(
        reader
            .keys
            .create_api_key(CreateApiKeyRequest {
                api_key: Some(ApiKey {
                    display_name: "mine".into(),
                    tenant: "tenants/acme".into(),
                    scopes: vec![Scope::Read as i32],
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err(),
        "apiKeys.create",
    );
    // Nothing changed.
    let got = s
        .users
        .clone()
        .get_user(GetUserRequest { name: user.name })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.display_name, "Taro");
}

/// Keys through the API: the token once, never again; no key mints a
/// stronger one; revoking is immediate enough and the last operator key
/// stays.
async fn keys_are_made_shown_once_and_revoked(s: TestServer) {
    s.tenant("acme").await;
    let (admin_token, admin_key) = make_key(&s, "acme", &[Scope::Read, Scope::Write, Scope::Admin]).await;
    assert!(admin_token.starts_with("udk_"));
    assert_eq!(admin_key.name, format!("apiKeys/{}", &admin_token[4..36]));
    assert_eq!(admin_key.creator, crate::common::operator_principal());
    let mut admin = as_key(&s, Some(&admin_token));
    // The tenant's admin key makes a narrower key for its tenant...
    let made = admin
        .keys
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(ApiKey {
                display_name: "reader".into(),
                tenant: "tenants/acme".into(),
                scopes: vec![Scope::Read as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let reader_key = made.api_key.unwrap();
    // ...but never a stronger one, nor an operator's.
    for (tenant, scopes) in [("tenants/acme", vec![Scope::Export]), ("", vec![Scope::Read])] {
        let err = admin
            .keys
            .create_api_key(CreateApiKeyRequest {
                api_key: Some(ApiKey {
                    display_name: "stronger".into(),
                    tenant: tenant.into(),
                    scopes: scopes.iter().map(|s| *s as i32).collect(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{tenant} {scopes:?}: {err:?}");
    }
    // Bad requests name their fields.
    let err = admin
        .keys
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(ApiKey::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = crate::common::violation_fields(&err);
    assert!(
        fields.contains(&"api_key.display_name".to_owned()) && fields.contains(&"api_key.scopes".to_owned()),
        "{fields:?}"
    );
    // Never shown again: not in get, not in list.
    let listed = s
        .keys
        .clone()
        .list_api_keys(ListApiKeysRequest {
            tenant: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys.len(), 2);
    let shown = format!("{listed:?}");
    assert!(!shown.contains(&made.token[36..]) && !shown.contains(&admin_token[36..]));
    // Revoked: refused within a refresh, still listed with its time.
    let mut reader = as_key(&s, Some(&made.token));
    reader
        .tenants
        .get_tenant(GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await
        .unwrap();
    let revoked = admin
        .keys
        .revoke_api_key(RevokeApiKeyRequest {
            name: reader_key.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    let refused = wait_refused(&mut reader.tenants).await;
    assert!(refused < Duration::from_secs(5), "{refused:?}");
    let again = admin
        .keys
        .revoke_api_key(RevokeApiKeyRequest {
            name: reader_key.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revoke_time, revoked.revoke_time, "revoking twice changes nothing");
    // The last live operator key is not revoked.
    let err = s
        .keys
        .clone()
        .revoke_api_key(RevokeApiKeyRequest {
            name: format!("apiKeys/{}", &operator_key()[4..36]),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "LAST_OPERATOR_KEY")
    );
}

/// Calls GetTenant with a revoked key until it is refused; how long that took.
async fn wait_refused(tenants: &mut TenantAdminClient<userdir::client::AuthedChannel>) -> Duration {
    let start = std::time::Instant::now();
    loop {
        match tenants
            .get_tenant(GetTenantRequest {
                name: "tenants/acme".into(),
            })
            .await
        {
            Err(e) if e.code() == Code::Unauthenticated => {
                assert!(e.message().contains("revoked"), "{e:?}");
                return start.elapsed();
            }
            _ if start.elapsed() > Duration::from_secs(10) => panic!("the revoked key still works"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Two servers on one database: a key revoked through one stops working on
/// the other within its key refresh.
async fn revocation_reaches_every_server(s: TestServer) {
    s.tenant("acme").await;
    let (token, key) = make_key(&s, "acme", &[Scope::Read]).await;
    let (addr, _stop) = s.replica_at().await;
    let mut other = TenantAdminClient::new(with_key(&connect_plain(addr).await, Some(&token)));
    other
        .get_tenant(GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await
        .unwrap();
    s.keys
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { name: key.name })
        .await
        .unwrap();
    let took = wait_refused(&mut other).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
}

async fn connect_plain(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

crate::on_both_backends!(
    every_rpc_needs_a_credential,
    another_tenants_key_finds_nothing,
    a_read_only_key_only_reads,
    keys_are_made_shown_once_and_revoked,
    revocation_reaches_every_server,
);

/// A `userdir serve` process with `env`, its output to `log`; `Ok(port)` once it
/// answers health, `Err(stderr)` when it exits first.
pub(crate) async fn start_serve(
    args: &[&str],
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> (std::process::Child, Result<u16, String>) {
    let port = crate::common::free_port();
    // Logs (stdout) and what the server says at start (stderr), in one file.
    let file = std::fs::File::create(log).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env_remove("USERDIR_OPERATOR_KEY")
        .env_remove("USERDIR_OPERATOR_KEY_FILE")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    for _ in 0..300 {
        if let Ok(Some(_)) = child.try_wait() {
            return (child, Err(std::fs::read_to_string(log).unwrap_or_default()));
        }
        // Serving, not merely listening: the port opens before start-up ends.
        if let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            && let Ok(answer) = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
            && answer.into_inner().status == 1
        {
            return (child, Ok(port));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!(
        "userdir serve neither listened nor exited: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn tenants_as(port: u16, key: &str) -> Result<(), tonic::Status> {
    let channel = connect_plain(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    TenantAdminClient::new(with_key(&channel, Some(key)))
        .list_tenants(ListTenantsRequest::default())
        .await
        .map(|_| ())
}

pub(crate) fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The README's first command on a fresh SQLite file: an operator key is
/// made, printed once and saved owner-only beside the database; a restart
/// makes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_makes_one_operator_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("userdir.db").display());
    let log = dir.path().join("first.log");
    let (child, port) = start_serve(&["--database-url", &url], &[], &log).await;
    let port = port.unwrap();
    // The banner comes before the listener: it is in the log by now.
    let said = std::fs::read_to_string(&log).unwrap();
    let printed: Vec<&str> = said.split_whitespace().filter(|w| w.starts_with("udk_")).collect();
    assert_eq!(printed.len(), 1, "printed once: {said}");
    let file = dir.path().join("userdir.operator-key");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert_eq!(saved.trim(), printed[0]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "owner-only");
    }
    tenants_as(port, saved.trim()).await.unwrap();
    stop(child);
    // Again: nothing new printed, the file and key unchanged.
    let log = dir.path().join("second.log");
    let (child, port) = start_serve(&["--database-url", &url], &[], &log).await;
    let port = port.unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains("udk_"), "{said}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), saved);
    tenants_as(port, saved.trim()).await.unwrap();
    stop(child);
}

/// PostgreSQL has no file to keep a key in: with no operator key stored and
/// none configured the server refuses to start and says what to set; the
/// hash `userdir keys generate` prints is enough; a configured key whose id
/// is stored with another secret is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_takes_its_operator_key_from_configuration() {
    let Some(s) = crate::common::spawn_bare_postgres_schema().await else {
        return;
    };
    let (url, schema) = s;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--database-url", url.as_str(), "--pg-schema", schema.as_str()];
    let (child, refused) = start_serve(&args, &[], &dir.path().join("none.log")).await;
    stop(child);
    let said = refused.expect_err("no key, no start");
    assert!(
        said.contains("USERDIR_OPERATOR_KEY") && said.contains("userdir keys generate"),
        "{said}"
    );

    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"))
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let lines: Vec<String> = String::from_utf8(generated.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (token, hash) = (&lines[0], &lines[1]);
    assert!(token.starts_with("udk_") && hash.starts_with("udkh_"), "{lines:?}");
    let hash_file = dir.path().join("operator-key-hash");
    std::fs::write(&hash_file, format!("{hash}\n")).unwrap();
    let (child, port) = start_serve(
        &args,
        &[("USERDIR_OPERATOR_KEY_FILE", hash_file.to_str().unwrap())],
        &dir.path().join("hash.log"),
    )
    .await;
    let port = port.unwrap();
    tenants_as(port, token).await.unwrap();
    let wrong = userdir_domain::apikey::NewApiKey::generate().unwrap().token();
    let err = tenants_as(port, &wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    stop(child);
    // Its id with another secret: refused at start, the value never echoed.
    let other = format!("{}_{}", &hash[..37], "0".repeat(64));
    let (child, refused) = start_serve(
        &args,
        &[("USERDIR_OPERATOR_KEY", other.as_str())],
        &dir.path().join("mismatch.log"),
    )
    .await;
    stop(child);
    let said = refused.expect_err("a mismatched key, no start");
    assert!(said.contains("another secret"), "{said}");
    assert!(!said.contains(&"0".repeat(64)), "{said}");
    crate::common::drop_pg_schema(&schema).await;
}

/// `--reflection authenticated`: reflection wants a key like the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_require_a_key() {
    let Some(s) = crate::common::spawn_with(crate::common::Backend::Sqlite, |c| {
        c.reflection = userdir::config::ReflectionAccess::Authenticated;
    })
    .await
    else {
        return;
    };
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let (status, _) = raw_call(s.addr, path, None).await;
    assert_eq!(status, "16");
    let operator = format!("Bearer {}", operator_key());
    let (status, message) = raw_call(s.addr, path, Some(&operator)).await;
    assert_ne!(status, "16", "{message}");
}
