//! Every RPC, one by one, against the keys of the matrix: a key of
//! another tenant learns nothing of acme (NOT_FOUND, as for a tenant that
//! does not exist), and a read-only key of acme may only read
//! (PERMISSION_DENIED with the missing permission). The table names every
//! method the descriptor set holds, so a new RPC fails here until it is
//! placed in it.

use std::collections::BTreeMap;

use prost::Message;
use userdir::pb::import_users_request::Payload;
use userdir::pb::*;

use crate::auth::{ALL, every_method, make_key};
use crate::common::{TestServer, raw_call};

/// What one call of the table addresses, and whether it only reads.
struct Call {
    message: Vec<u8>,
    reads: bool,
    /// Installation-wide (no tenant in the request): not in the tenant matrix.
    installation: bool,
    /// It names something that does not exist: a reader gets NOT_FOUND.
    absent: bool,
    /// A stream that never ends by itself (a watch): called with a short
    /// deadline, a reader's stream stays open until it (DEADLINE_EXCEEDED).
    endless: bool,
}

fn call(message: impl Message, reads: bool) -> Call {
    Call {
        message: message.encode_to_vec(),
        reads,
        installation: false,
        absent: false,
        endless: false,
    }
}

/// Every method, with a request about tenant acme (its user `user`, its key `key`).
fn table(user: &str, key: &str) -> BTreeMap<&'static str, Call> {
    let acme = || "tenants/acme".to_owned();
    let mut t = BTreeMap::new();
    let named = |name: &str| GetUserRequest { name: name.into() };
    t.insert(
        "CreateUser",
        call(
            CreateUserRequest {
                parent: acme(),
                user: Some(User {
                    email: "new@example.com".into(),
                    display_name: "New".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            false,
        ),
    );
    t.insert("GetUser", call(named(user), true));
    t.insert(
        "UpdateUser",
        call(
            UpdateUserRequest {
                user: Some(User {
                    name: user.into(),
                    display_name: "X".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            false,
        ),
    );
    t.insert(
        "DeleteUser",
        call(
            DeleteUserRequest {
                name: user.into(),
                ..Default::default()
            },
            false,
        ),
    );
    t.insert(
        "ListUsers",
        call(
            ListUsersRequest {
                parent: acme(),
                ..Default::default()
            },
            true,
        ),
    );
    t.insert(
        "LookupUser",
        call(
            LookupUserRequest {
                parent: acme(),
                key: Some(lookup_user_request::Key::Email("taro@example.com".into())),
            },
            true,
        ),
    );
    t.insert(
        "ImportUsers",
        call(
            ImportUsersRequest {
                payload: Some(Payload::Options(ImportOptions {
                    parent: acme(),
                    mode: ImportMode::Upsert as i32,
                    ..Default::default()
                })),
            },
            false,
        ),
    );
    t.insert(
        "GetImportJob",
        Call {
            absent: true,
            ..call(
                GetImportJobRequest {
                    name: "tenants/acme/importJobs/01936c7e-0000-7000-8000-000000000000".into(),
                },
                true,
            )
        },
    );
    t.insert(
        "ListImportJobs",
        call(
            ListImportJobsRequest {
                parent: acme(),
                ..Default::default()
            },
            true,
        ),
    );
    t.insert(
        "ExportUsers",
        call(
            ExportUsersRequest {
                parent: acme(),
                ..Default::default()
            },
            false,
        ),
    );
    t.insert(
        "SetUserRole",
        call(
            SetUserRoleRequest {
                name: user.into(),
                role: TenantRole::Admin as i32,
                ..Default::default()
            },
            false,
        ),
    );
    t.insert(
        "SetUserCapabilities",
        call(
            SetUserCapabilitiesRequest {
                name: user.into(),
                capabilities: Some(Capabilities {
                    user_management: true,
                    export_users: false,
                }),
                ..Default::default()
            },
            false,
        ),
    );
    t.insert(
        "TestPermissions",
        call(
            TestPermissionsRequest {
                resource: user.into(),
                ..Default::default()
            },
            true,
        ),
    );
    t.insert(
        "CreateTenant",
        Call {
            installation: true,
            ..call(
                CreateTenantRequest {
                    tenant_id: "beta".into(),
                    tenant: Some(Tenant {
                        display_name: "Beta".into(),
                        ..Default::default()
                    }),
                    initial_owner: None,
                },
                false,
            )
        },
    );
    t.insert("GetTenant", call(GetTenantRequest { name: acme() }, true));
    t.insert(
        "ListTenants",
        Call {
            installation: true,
            ..call(ListTenantsRequest::default(), true)
        },
    );
    t.insert(
        "UpdateTenant",
        call(
            UpdateTenantRequest {
                tenant: Some(Tenant {
                    name: acme(),
                    display_name: "Acme 2".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            false,
        ),
    );
    t.insert(
        "TransferTenantOwnership",
        call(
            TransferTenantOwnershipRequest {
                tenant: acme(),
                new_owner: user.into(),
            },
            false,
        ),
    );
    t.insert(
        "CreateApiKey",
        call(
            CreateApiKeyRequest {
                api_key: Some(ApiKey {
                    display_name: "k".into(),
                    tenant: acme(),
                    scopes: vec![Scope::Read as i32],
                    ..Default::default()
                }),
            },
            false,
        ),
    );
    t.insert("GetApiKey", call(GetApiKeyRequest { name: key.into() }, false));
    t.insert(
        "ListApiKeys",
        call(
            ListApiKeysRequest {
                tenant: acme(),
                ..Default::default()
            },
            false,
        ),
    );
    t.insert("RevokeApiKey", call(RevokeApiKeyRequest { name: key.into() }, false));
    t.insert(
        "ListAuditEvents",
        call(
            ListAuditEventsRequest {
                parent: acme(),
                ..Default::default()
            },
            false,
        ),
    );
    t.insert(
        "GetAuditEvent",
        call(
            GetAuditEventRequest {
                name: "tenants/acme/auditEvents/1".into(),
            },
            false,
        ),
    );
    t.insert(
        "ListChanges",
        call(
            ListChangesRequest {
                parent: acme(),
                ..Default::default()
            },
            true,
        ),
    );
    t.insert(
        "WatchChanges",
        Call {
            endless: true,
            ..call(
                WatchChangesRequest {
                    parent: acme(),
                    ..Default::default()
                },
                true,
            )
        },
    );
    t
}

/// The service path of `method` among `paths`.
fn path_of<'a>(paths: &'a [String], method: &str) -> &'a str {
    paths
        .iter()
        .find(|p| p.rsplit('/').next() == Some(method))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{method} is not a method of the API"))
}

async fn every_rpc_obeys_the_keys_reach_and_scopes(s: TestServer) {
    s.tenant("acme").await;
    s.tenant("globex").await;
    let user = s.user("acme", "taro@example.com", "Taro").await;
    let (_, acme_key) = make_key(&s, "acme", &[Scope::Read]).await;
    let (globex, _) = make_key(&s, "globex", &ALL).await;
    let (reader, _) = make_key(&s, "acme", &[Scope::Read]).await;
    let table = table(&user.name, &acme_key.name);
    let methods: Vec<String> = every_method()
        .into_iter()
        .filter(|p| p.starts_with("/userdir."))
        .collect();
    let named: Vec<&str> = methods.iter().map(|p| p.rsplit('/').next().unwrap()).collect();
    let mut missing: Vec<&str> = named.iter().copied().filter(|m| !table.contains_key(m)).collect();
    missing.sort();
    assert!(missing.is_empty(), "methods the matrix does not place: {missing:?}");

    for (method, call) in &table {
        let path = path_of(&methods, method);
        let bearer = |token: &str| {
            let mut headers = vec![("authorization", format!("Bearer {token}"))];
            if call.endless {
                headers.push(("grpc-timeout", "700m".to_owned()));
            }
            headers
        };
        let (status, message) = raw_call(s.addr, path, &call.message, &bearer(&globex)).await;
        if !call.installation {
            assert_eq!(status, "5", "{method} with globex's key: {message}");
            assert!(!message.contains("Taro"), "{method}: {message}");
        }
        let (status, message) = raw_call(s.addr, path, &call.message, &bearer(&reader)).await;
        if call.reads {
            // A read succeeds; only a job that does not exist is NOT_FOUND
            // (INTERNAL or any other code is a defect).
            let expected = match (call.absent, call.endless) {
                (true, _) => "5",
                (false, true) => "4",
                (false, false) => "0",
            };
            assert_eq!(status, expected, "{method} reads, read-only key: {message}");
        } else {
            assert_eq!(status, "7", "{method} with a read-only key: {message}");
        }
    }
    // Nothing was written by any of it.
    let again = s
        .users
        .clone()
        .get_user(GetUserRequest {
            name: user.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.display_name.as_str(), again.role),
        ("Taro", TenantRole::Member as i32)
    );
}

crate::on_both_backends!(every_rpc_obeys_the_keys_reach_and_scopes);
