//! Issue 22, black-box: nobody gains through a key they make more than they
//! hold. A key made while acting for an admin is bound to that admin (and
//! shrinks or stops with them); ownership is the owner's or an operator's;
//! a key never outlives its maker; an import key imports, and an import
//! refused row by row fails; a revoked key's stream ends; TestPermissions
//! needs the read scope to name a user; a tenant's keys have a quota.

use std::time::{Duration, Instant};

use tonic::Code;
use userdir::pb::api_keys_client::ApiKeysClient;
use userdir::pb::import_users_request::Payload;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{
    ApiKey, CreateApiKeyRequest, CreateTenantRequest, GetImportJobRequest, GetUserRequest, ImportJobState, ImportMode,
    ImportOptions, ImportUsersRequest, RevokeApiKeyRequest, Scope, Tenant, TenantRole, TestPermissionsRequest,
    TransferTenantOwnershipRequest, UpdateUserRequest, User,
};

use crate::common::{TestServer, create_key, reason, with_key};
use crate::roles::{console, set_role};

/// `message` sent acting for `who`.
fn acting<T>(message: T, who: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-userdir-acting-user", who.parse().unwrap());
    request
}

fn key_request(tenant: &str, scopes: &[Scope]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        api_key: Some(ApiKey {
            display_name: "minted".into(),
            tenant: format!("tenants/{tenant}"),
            scopes: scopes.iter().map(|s| *s as i32).collect(),
            ..Default::default()
        }),
    }
}

fn edit_email(name: &str, email: &str) -> UpdateUserRequest {
    UpdateUserRequest {
        user: Some(User {
            name: name.into(),
            email: email.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["email".into()],
        }),
    }
}

fn disable(name: &str) -> UpdateUserRequest {
    UpdateUserRequest {
        user: Some(User {
            name: name.into(),
            enabled: Some(false),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["enabled".into()],
        }),
    }
}

fn transfer(tenant: &str, to: &str) -> TransferTenantOwnershipRequest {
    TransferTenantOwnershipRequest {
        tenant: format!("tenants/{tenant}"),
        new_owner: to.into(),
    }
}

/// A tenant with an owner, two admins and a member.
async fn tenant_with_owner(s: &TestServer, id: &str) -> (User, User, User, User) {
    s.tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant_id: id.into(),
            tenant: Some(Tenant {
                display_name: id.into(),
                ..Default::default()
            }),
            initial_owner: Some(User {
                email: format!("owner@{id}.example"),
                display_name: "Owner".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let owner = crate::import::by_email(&crate::import::users_of(s, id).await)[&format!("owner@{id}.example")].clone();
    let a = s.user(id, &format!("a@{id}.example"), "Admin A").await;
    let a = set_role(s, &a.name, TenantRole::Admin).await.unwrap();
    let b = s.user(id, &format!("b@{id}.example"), "Admin B").await;
    let b = set_role(s, &b.name, TenantRole::Admin).await.unwrap();
    let m = s.user(id, &format!("m@{id}.example"), "Member").await;
    (owner, a, b, m)
}

/// Calls `call` until it fails, for at most 5 s (the test servers refresh
/// keys every 200 ms); the failure.
async fn until_refused<F, Fut, T>(mut call: F) -> tonic::Status
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let since = Instant::now();
    loop {
        match call().await {
            Err(e) => return e,
            Ok(_) if since.elapsed() < Duration::from_secs(5) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(_) => panic!("still allowed after 5 s"),
        }
    }
}

/// The review's finding, reproduced: an admin acting through the console
/// mints a key with every scope. The key is bound to that admin: it edits
/// members, never the owner, never hands ownership on, and stops or
/// shrinks with the admin. The console acting for nobody cannot take
/// ownership either; it may name the first owner of a tenant with none.
async fn an_admin_cannot_seize_ownership_through_a_minted_key(s: TestServer) {
    let (owner, a, b, m) = tenant_with_owner(&s, "acme").await;
    let console = console(&s, "acme").await;
    let all = [Scope::Read, Scope::Write, Scope::Admin];
    let minted = ApiKeysClient::new(console.clone())
        .create_api_key(acting(key_request("acme", &all), &a.name))
        .await
        .unwrap()
        .into_inner();
    let key = minted.api_key.unwrap();
    assert_eq!(key.user, a.name, "a key made while acting is bound to that user");
    let minted = with_key(&s.plain, Some(&minted.token));
    let users = || UserDirectoryClient::new(minted.clone());
    let tenants = || TenantAdminClient::new(minted.clone());

    // The minted key is the admin: it manages members...
    users()
        .update_user(edit_email(&m.name, "m2@acme.example"))
        .await
        .unwrap();
    // ...and never the owner.
    let err = users()
        .update_user(edit_email(&owner.name, "seized@acme.example"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "OWNER_PROTECTED"),
        "{err:?}"
    );
    let err = tenants()
        .transfer_tenant_ownership(transfer("acme", &a.name))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // It acts for its user alone: it cannot name another.
    let err = users()
        .get_user(acting(GetUserRequest { name: m.name.clone() }, &b.name))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The console acting for nobody: ownership is not its either.
    let plain_console = || UserDirectoryClient::new(console.clone());
    let err = plain_console()
        .update_user(edit_email(&owner.name, "seized@acme.example"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "OWNER_PROTECTED", "{err:?}");
    let err = TenantAdminClient::new(console.clone())
        .transfer_tenant_ownership(transfer("acme", &a.name))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("owner"), "{err:?}");
    let stored = s
        .users
        .clone()
        .get_user(GetUserRequest {
            name: owner.name.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        (stored.get_ref().email.as_str(), stored.get_ref().role),
        ("owner@acme.example", TenantRole::Owner as i32),
        "the owner is untouched"
    );
    // The owner, acting as themselves, may; so may an operator.
    s.users
        .clone()
        .update_user(edit_email(&owner.name, "boss@acme.example"))
        .await
        .unwrap();
    UserDirectoryClient::new(console.clone())
        .update_user(acting(edit_email(&owner.name, "owner@acme.example"), &owner.name))
        .await
        .unwrap();

    // Admin B mints a key, is then disabled: the key stops within the refresh.
    let minted_b = ApiKeysClient::new(console.clone())
        .create_api_key(acting(key_request("acme", &all), &b.name))
        .await
        .unwrap()
        .into_inner()
        .token;
    let as_b = with_key(&s.plain, Some(&minted_b));
    let read_m = || {
        let client = UserDirectoryClient::new(as_b.clone());
        let name = m.name.clone();
        async move { client.clone().get_user(GetUserRequest { name }).await }
    };
    read_m().await.unwrap();
    s.users.clone().update_user(disable(&b.name)).await.unwrap();
    let err = until_refused(read_m).await;
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Admin A is demoted: the key A minted now has a member's rights only.
    set_role(&s, &a.name, TenantRole::Member).await.unwrap();
    let err = until_refused(|| {
        let client = users();
        let name = m.name.clone();
        async move { client.clone().update_user(edit_email(&name, "m3@acme.example")).await }
    })
    .await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A is deleted: the key opens nothing.
    s.users
        .clone()
        .delete_user(userdir::pb::DeleteUserRequest {
            name: a.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = until_refused(|| {
        let client = users();
        let name = m.name.clone();
        async move { client.clone().get_user(GetUserRequest { name }).await }
    })
    .await;
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A tenant created without an owner: its console names the first one,
    // and after that only the owner (or an operator) hands it on.
    s.tenant("newco").await;
    let first = s.user("newco", "first@newco.example", "First").await;
    let second = s.user("newco", "second@newco.example", "Second").await;
    let newco = crate::roles::console(&s, "newco").await;
    TenantAdminClient::new(newco.clone())
        .transfer_tenant_ownership(transfer("newco", &first.name))
        .await
        .unwrap();
    let err = TenantAdminClient::new(newco.clone())
        .transfer_tenant_ownership(transfer("newco", &second.name))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    TenantAdminClient::new(newco)
        .transfer_tenant_ownership(acting(transfer("newco", &second.name), &first.name))
        .await
        .unwrap();
}

/// Keys are revoked only by a caller that could have made them: an admin
/// acting through the console cannot revoke the owner's key or the console
/// itself, but may revoke a member's key and a plain service key.
async fn keys_are_revoked_only_by_who_could_make_them(s: TestServer) {
    let (owner, a, _, m) = tenant_with_owner(&s, "acme").await;
    let console = console(&s, "acme").await;
    let keys = || ApiKeysClient::new(console.clone());
    let mint = |who: String, scopes: Vec<Scope>| {
        let keys = keys();
        async move {
            keys.clone()
                .create_api_key(acting(key_request("acme", &scopes), &who))
                .await
                .unwrap()
                .into_inner()
                .api_key
                .unwrap()
        }
    };
    let owners = mint(owner.name.clone(), vec![Scope::Read, Scope::Admin]).await;
    // A member makes no keys; the console (acting for nobody) binds one to them.
    let members = keys()
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(ApiKey {
                user: m.name.clone(),
                ..key_request("acme", &[Scope::Read]).api_key.unwrap()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert_eq!(members.user, m.name);
    let (_, service) = create_key(&s.channel, "acme", &[Scope::Read], false).await;
    let console_key = keys()
        .list_api_keys(userdir::pb::ListApiKeysRequest {
            tenant: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys
        .into_iter()
        .find(|k| k.act_as_users)
        .unwrap();
    let revoke = |name: &str| {
        let keys = keys();
        let request = acting(RevokeApiKeyRequest { name: name.into() }, &a.name);
        async move { keys.clone().revoke_api_key(request).await }
    };
    for protected in [&owners.name, &console_key.name] {
        let err = revoke(protected).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::PermissionDenied, "KEY_ESCALATION"),
            "{err:?}"
        );
    }
    revoke(&members.name).await.unwrap();
    revoke(&service.name).await.unwrap();
}

/// A key never outlives the key that makes it: asked for no expiry, it
/// takes its maker's; asked for a later one, it is refused.
async fn a_key_never_outlives_its_maker(s: TestServer) {
    s.tenant("acme").await;
    let in_an_hour_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    let at = |offset: i64| prost_types::Timestamp {
        seconds: in_an_hour_s + offset,
        nanos: 0,
    };
    let expiring = |scopes: &[Scope], expire_time: Option<prost_types::Timestamp>| CreateApiKeyRequest {
        api_key: Some(ApiKey {
            expire_time,
            ..key_request("acme", scopes).api_key.unwrap()
        }),
    };
    let in_an_hour = at(0);
    let maker = s
        .keys
        .clone()
        .create_api_key(expiring(&[Scope::Read, Scope::Admin], Some(in_an_hour)))
        .await
        .unwrap()
        .into_inner();
    let keys = || ApiKeysClient::new(with_key(&s.plain, Some(&maker.token)));
    let child = |expire_time| {
        let request = expiring(&[Scope::Read], expire_time);
        async move {
            keys()
                .create_api_key(request)
                .await
                .map(|r| r.into_inner().api_key.unwrap())
        }
    };
    let made = child(None).await.unwrap();
    assert_eq!(made.expire_time, Some(in_an_hour), "no expiry asked: the maker's");
    let err = child(Some(at(60))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(crate::common::violation_fields(&err), ["api_key.expire_time"]);
    let made = child(Some(at(-60))).await.unwrap();
    assert_eq!(made.expire_time, Some(at(-60)));
}

/// An import's whole request stream: `options`, the file `csv`, the end.
fn import_requests(
    options: ImportOptions,
    csv: &str,
) -> tonic::Request<tokio_stream::Iter<std::vec::IntoIter<ImportUsersRequest>>> {
    let mut all = vec![ImportUsersRequest {
        payload: Some(Payload::Options(options)),
    }];
    all.extend(crate::import::chunks(csv.as_bytes(), 64));
    all.push(crate::import::end());
    tonic::Request::new(tokio_stream::iter(all))
}

fn upsert(tenant: &str) -> ImportOptions {
    ImportOptions {
        parent: format!("tenants/{tenant}"),
        mode: ImportMode::Upsert as i32,
        ..Default::default()
    }
}

/// An import whose every row is refused for the caller's rights fails
/// (PERMISSION_DENIED, the job FAILED), instead of a SUCCEEDED that wrote
/// nothing; one allowed row among them makes it a normal import.
async fn an_import_refused_row_by_row_fails(s: TestServer) {
    let (owner, ..) = tenant_with_owner(&s, "acme").await;
    let console = UserDirectoryClient::new(console(&s, "acme").await);
    let refused = format!("email,name\n{},Renamed Owner\n", "owner@acme.example");
    let request = import_requests(upsert("acme"), &refused);
    let stream = console.clone().import_users(request).await.unwrap();
    let job = stream
        .metadata()
        .get("x-userdir-import-job")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut stream = stream.into_inner();
    let mut results = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if let Some(userdir::pb::import_users_response::Payload::Results(batch)) = message.payload {
                    results.extend(batch.results);
                }
            }
            Ok(None) => panic!("an import whose every row was refused ended OK"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("every row"), "{err:?}");
    assert_eq!(results.len(), 1, "the row's result came first");
    assert_eq!(results[0].reason, "OWNER_PROTECTED");
    let job = s
        .users
        .clone()
        .get_import_job(GetImportJobRequest { name: job })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state, ImportJobState::Failed as i32, "{job:?}");
    let stored = s
        .users
        .clone()
        .get_user(GetUserRequest { name: owner.name })
        .await
        .unwrap();
    assert_eq!(stored.get_ref().display_name, "Owner");

    let mixed = format!(
        "email,name\n{},Renamed Owner\nnew@acme.example,New\n",
        "owner@acme.example"
    );
    let request = import_requests(upsert("acme"), &mixed);
    let (results, job) = crate::import::results_of(console, request).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(job.state, ImportJobState::Succeeded as i32);
}

/// A `read,import` key (the README's `ci-import`) imports: it creates and
/// updates rows, and a FULL_SYNC with it deletes the users absent from the
/// file (it deleted no one, every row refused, before the import scope
/// counted for the rows).
async fn an_import_key_imports_and_syncs(s: TestServer) {
    s.tenant("acme").await;
    s.user("acme", "stays@acme.example", "Stays").await;
    s.user("acme", "goes@acme.example", "Goes").await;
    let (token, _) = create_key(&s.channel, "acme", &[Scope::Read, Scope::Import], false).await;
    let client = UserDirectoryClient::new(with_key(&s.plain, Some(&token)));
    let file = "email,name\nstays@acme.example,Stays Renamed\nnew@acme.example,New\n";
    let request = import_requests(
        ImportOptions {
            mode: ImportMode::FullSync as i32,
            ..upsert("acme")
        },
        file,
    );
    let (results, job) = crate::import::results_of(client, request).await.unwrap();
    let outcomes: Vec<(String, i32)> = results.iter().map(|r| (r.email.clone(), r.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (
                "stays@acme.example".to_owned(),
                userdir::pb::ImportOutcome::Updated as i32
            ),
            (
                "new@acme.example".to_owned(),
                userdir::pb::ImportOutcome::Created as i32
            ),
            (
                "goes@acme.example".to_owned(),
                userdir::pb::ImportOutcome::Deleted as i32
            ),
        ]
    );
    assert_eq!(job.state, ImportJobState::Succeeded as i32);
    let left: Vec<String> = crate::import::users_of(&s, "acme")
        .await
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(left, ["new@acme.example", "stays@acme.example"]);
}

/// An import running with a key that is then revoked ends within the key
/// refresh (UNAUTHENTICATED, the job CANCELLED), rows already reported stay.
async fn a_revoked_keys_import_ends(s: TestServer) {
    s.tenant("acme").await;
    let (token, key) = create_key(&s.channel, "acme", &[Scope::Read, Scope::Import], false).await;
    let client = UserDirectoryClient::new(with_key(&s.plain, Some(&token)));
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportUsersRequest>(8);
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Options(upsert("acme"))),
    })
    .await
    .unwrap();
    tx.send(ImportUsersRequest {
        payload: Some(Payload::Chunk(b"email,name\nfirst@acme.example,First\n".to_vec())),
    })
    .await
    .unwrap();
    let response = client
        .clone()
        .import_users(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    let job = response
        .metadata()
        .get("x-userdir-import-job")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut stream = response.into_inner();
    // The first row is reported (the client paused), then the key goes.
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.payload,
        Some(userdir::pb::import_users_response::Payload::Results(_))
    ));
    s.keys
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { name: key.name })
        .await
        .unwrap();
    let since = Instant::now();
    let err = loop {
        // The client keeps the stream open (and sends nothing): the server ends it.
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the import ended OK"),
            Ok(Err(e)) => break e,
            Err(_) => panic!("a revoked key's import still runs after 10 s"),
        }
    };
    assert!(since.elapsed() < Duration::from_secs(5), "{:?}", since.elapsed());
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{err:?}");
    drop(tx);
    let job = s
        .users
        .clone()
        .get_import_job(GetImportJobRequest { name: job })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state, ImportJobState::Cancelled as i32, "{job:?}");
    assert!(job.error.contains("revoked"), "{job:?}");
    assert_eq!(
        crate::import::users_of(&s, "acme").await.len(),
        1,
        "the reported row stays"
    );
}

/// An export running with a key that is then revoked ends within the key
/// refresh: a reader that paused finds UNAUTHENTICATED where the trailer
/// would be, not the rest of the tenant.
async fn a_revoked_keys_export_ends(s: TestServer) {
    s.tenant("acme").await;
    let mut file = String::from("email,name\n");
    for i in 0..20_000 {
        file.push_str(&format!("user{i:05}@acme.example,User {i}\n"));
    }
    let (_, job) = crate::import::csv(&s, upsert("acme"), &file).await;
    assert_eq!(job.counts.unwrap().created, 20_000);
    let (token, key) = create_key(&s.channel, "acme", &[Scope::Export], false).await;
    let mut stream = UserDirectoryClient::new(with_key(&s.plain, Some(&token)))
        .export_users(crate::export::request("acme"))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    s.keys
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { name: key.name })
        .await
        .unwrap();
    // The reader pauses past the key refresh, then reads on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                assert!(
                    !matches!(
                        message.payload,
                        Some(userdir::pb::export_users_response::Payload::Trailer(_))
                    ),
                    "a revoked key's export ran to its end"
                );
            }
            Ok(None) => panic!("a revoked key's export ended OK"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{err:?}");
}

/// TestPermissions names a user only for a caller that may read users:
/// an import-only key learns nothing of which users exist, or who owns.
async fn test_permissions_needs_the_read_scope_to_name_a_user(s: TestServer) {
    let (owner, ..) = tenant_with_owner(&s, "acme").await;
    let (token, _) = create_key(&s.channel, "acme", &[Scope::Import], false).await;
    let client = || UserDirectoryClient::new(with_key(&s.plain, Some(&token)));
    for name in [
        owner.name.clone(),
        "tenants/acme/users/01936c7e-0000-7000-8000-000000000000".to_owned(),
    ] {
        let err = client()
            .test_permissions(TestPermissionsRequest {
                resource: name,
                permissions: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    let held = client()
        .test_permissions(TestPermissionsRequest {
            resource: "tenants/acme".into(),
            permissions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .permissions;
    assert_eq!(held, ["users.import"]);
}

crate::on_both_backends!(
    an_admin_cannot_seize_ownership_through_a_minted_key,
    keys_are_revoked_only_by_who_could_make_them,
    a_key_never_outlives_its_maker,
    an_import_refused_row_by_row_fails,
    an_import_key_imports_and_syncs,
    a_revoked_keys_import_ends,
    a_revoked_keys_export_ends,
    test_permissions_needs_the_read_scope_to_name_a_user,
);

/// A tenant holds at most --max-api-keys-per-tenant live keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_keys_have_a_quota() {
    let s = crate::common::spawn_with(crate::common::Backend::Sqlite, |c| c.max_api_keys_per_tenant = 3)
        .await
        .unwrap();
    s.tenant("acme").await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(create_key(&s.channel, "acme", &[Scope::Read], false).await.1);
    }
    let err = s
        .keys
        .clone()
        .create_api_key(key_request("acme", &[Scope::Read]))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::ResourceExhausted, "API_KEY_QUOTA"),
        "{err:?}"
    );
    assert!(err.message().contains("--max-api-keys-per-tenant"), "{err:?}");
    s.keys
        .clone()
        .revoke_api_key(RevokeApiKeyRequest {
            name: made[0].name.clone(),
        })
        .await
        .unwrap();
    s.keys
        .clone()
        .create_api_key(key_request("acme", &[Scope::Read]))
        .await
        .unwrap();
}
