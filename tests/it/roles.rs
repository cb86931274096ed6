//! Tenant roles as a client meets them: the owner named at creation, roles
//! and capabilities set through their own RPCs (never UpdateUser), ownership
//! handed on atomically, the owner protected, the last admin kept whatever
//! runs at once, and TestPermissions for a console's buttons.

use tonic::Code;
use userdir::pb::{
    Capabilities, CreateTenantRequest, DeleteUserRequest, ListUsersRequest, SetUserCapabilitiesRequest,
    SetUserRoleRequest, Tenant, TenantRole, TestPermissionsRequest, TransferTenantOwnershipRequest, UpdateUserRequest,
    User,
};

use crate::common::{TestServer, reason};

pub(crate) async fn set_role(s: &TestServer, name: &str, role: TenantRole) -> Result<User, tonic::Status> {
    s.users
        .clone()
        .set_user_role(SetUserRoleRequest {
            name: name.into(),
            role: role as i32,
            etag: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn with_role(s: &TestServer, tenant: &str, role: &str) -> Vec<User> {
    s.users
        .clone()
        .list_users(ListUsersRequest {
            parent: format!("tenants/{tenant}"),
            filter: format!("role = \"{role}\""),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users
}

async fn roles_are_set_by_their_own_rpcs(s: TestServer) {
    let tenant = s
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant_id: "acme".into(),
            tenant: Some(Tenant {
                display_name: "Acme".into(),
                ..Default::default()
            }),
            initial_owner: Some(User {
                email: "owner@example.com".into(),
                display_name: "代表 太郎".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenant.user_count, 1);
    let owners = with_role(&s, "acme", "owner").await;
    assert_eq!(owners.len(), 1);
    let owner = &owners[0];
    assert_eq!(owner.role, TenantRole::Owner as i32);
    let member = s.user("acme", "hanako@example.com", "Hanako").await;
    assert_eq!(member.role, TenantRole::Member as i32, "new users are members");

    // Admin, then visible to a filter; the etag moves.
    let admin = set_role(&s, &member.name, TenantRole::Admin).await.unwrap();
    assert_eq!(admin.role, TenantRole::Admin as i32);
    assert_ne!(admin.etag, member.etag);
    let admins = with_role(&s, "acme", "admin").await;
    assert_eq!(admins.iter().map(|u| &u.name).collect::<Vec<_>>(), [&member.name]);
    // Not through UpdateUser, and the owner role only by transfer.
    let err = s
        .users
        .clone()
        .update_user(UpdateUserRequest {
            user: Some(User {
                name: member.name.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["role".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("SetUserRole"), "{err:?}");
    let err = set_role(&s, &member.name, TenantRole::Owner).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("TransferTenantOwnership"), "{err:?}");

    // Capabilities.
    let other = s.user("acme", "jiro@example.com", "Jiro").await;
    let granted = s
        .users
        .clone()
        .set_user_capabilities(SetUserCapabilitiesRequest {
            name: other.name.clone(),
            capabilities: Some(Capabilities {
                user_management: true,
                export_users: false,
            }),
            etag: other.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(granted.capabilities.unwrap().user_management);

    // Nobody deletes, disables or demotes the owner.
    let err = s
        .users
        .clone()
        .delete_user(DeleteUserRequest {
            name: owner.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "OWNER_PROTECTED")
    );
    let err = set_role(&s, &owner.name, TenantRole::Member).await.unwrap_err();
    assert_eq!(reason(&err), "OWNER_PROTECTED");

    // A console asks what it may show: not delete, for the owner.
    let held = s
        .users
        .clone()
        .test_permissions(TestPermissionsRequest {
            resource: owner.name.clone(),
            permissions: vec!["users.get".into(), "users.delete".into(), "users.update".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .permissions;
    assert_eq!(held, ["users.get", "users.update"]);
    let err = s
        .users
        .clone()
        .test_permissions(TestPermissionsRequest {
            resource: owner.name.clone(),
            permissions: vec!["users.fly".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Ownership moves in one step: the old owner is an admin.
    let moved = s
        .tenants
        .clone()
        .transfer_tenant_ownership(TransferTenantOwnershipRequest {
            tenant: "tenants/acme".into(),
            new_owner: other.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.owner.unwrap().role, TenantRole::Owner as i32);
    assert_eq!(moved.previous_owner.unwrap().role, TenantRole::Admin as i32);
    assert_eq!(with_role(&s, "acme", "owner").await.len(), 1);
}

/// Many admins demoted at once: exactly one stays, whatever the
/// interleaving; the last one is not deleted either.
async fn the_last_admin_stays(s: TestServer) {
    s.tenant("acme").await;
    let mut admins = Vec::new();
    for i in 0..8 {
        let user = s.user("acme", &format!("admin{i}@example.com"), "Admin").await;
        set_role(&s, &user.name, TenantRole::Admin).await.unwrap();
        admins.push(user.name);
    }
    let tasks: Vec<_> = admins
        .iter()
        .map(|name| {
            let users = s.users.clone();
            let name = name.clone();
            tokio::spawn(async move {
                users
                    .clone()
                    .set_user_role(SetUserRoleRequest {
                        name,
                        role: TenantRole::Member as i32,
                        etag: String::new(),
                    })
                    .await
            })
        })
        .collect();
    let (mut ok, mut kept) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(
                    (e.code(), reason(&e).as_str()),
                    (Code::FailedPrecondition, "LAST_ADMIN"),
                    "{e:?}"
                );
                kept += 1;
            }
        }
    }
    assert_eq!((ok, kept), (7, 1));
    let left = with_role(&s, "acme", "admin").await;
    assert_eq!(left.len(), 1);
    let err = s
        .users
        .clone()
        .delete_user(DeleteUserRequest {
            name: left[0].name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "LAST_ADMIN");
    let err = s
        .users
        .clone()
        .update_user(UpdateUserRequest {
            user: Some(User {
                name: left[0].name.clone(),
                enabled: Some(false),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["enabled".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "LAST_ADMIN", "disabling counts as removing");
}

/// Transfers to eight users at once: the tenant ends with exactly one owner.
async fn transfers_race_to_one_owner(s: TestServer) {
    s.tenant("acme").await;
    let mut names = Vec::new();
    for i in 0..8 {
        names.push(s.user("acme", &format!("u{i}@example.com"), "U").await.name);
    }
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let mut tenants = s.tenants.clone();
            let name = name.clone();
            tokio::spawn(async move {
                tenants
                    .transfer_tenant_ownership(TransferTenantOwnershipRequest {
                        tenant: "tenants/acme".into(),
                        new_owner: name,
                    })
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(reason(&e), "OWNER_CHANGED", "{e:?}"),
        }
    }
    assert!(ok >= 1);
    let owners = with_role(&s, "acme", "owner").await;
    assert_eq!(owners.len(), 1);
    // Every successful transfer but the last left an admin behind.
    assert_eq!(with_role(&s, "acme", "admin").await.len(), ok - 1);
}

/// A client that names an acting user on every call.
struct ActingClient {
    users: userdir::pb::user_directory_client::UserDirectoryClient<userdir::client::AuthedChannel>,
    who: String,
}

impl ActingClient {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("x-userdir-acting-user", self.who.parse().unwrap());
        request
    }

    async fn update_user(&mut self, message: UpdateUserRequest) -> Result<User, tonic::Status> {
        let request = self.request(message);
        self.users.update_user(request).await.map(tonic::Response::into_inner)
    }

    async fn delete_user(&mut self, message: DeleteUserRequest) -> Result<(), tonic::Status> {
        let request = self.request(message);
        self.users.delete_user(request).await.map(|_| ())
    }

    async fn get_user(&mut self, message: userdir::pb::GetUserRequest) -> Result<User, tonic::Status> {
        let request = self.request(message);
        self.users.get_user(request).await.map(tonic::Response::into_inner)
    }
}

/// A channel with a key of `tenant` that has every scope and may act for
/// its users, as a console that signs its users in would hold.
pub(crate) async fn console(s: &TestServer, tenant: &str) -> userdir::client::AuthedChannel {
    let (token, _) = crate::common::create_key(&s.channel, tenant, &crate::auth::ALL, true).await;
    crate::common::with_key(&s.plain, Some(&token))
}

/// A key that may act for users, with a member, an admin and strangers
/// named in `x-userdir-acting-user`: the user's own rights apply.
async fn acting_users_have_their_own_rights(s: TestServer) {
    use userdir::pb::user_directory_client::UserDirectoryClient;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let member = s.user("acme", "member@example.com", "Member").await;
    let admin = s.user("acme", "admin@example.com", "Admin").await;
    set_role(&s, &admin.name, TenantRole::Admin).await.unwrap();
    let stranger = s.user("globex", "stranger@example.com", "Stranger").await;
    let console = console(&s, "acme").await;
    let as_user = |who: &str| {
        let who = who.to_owned();
        let channel = console.clone();
        move || ActingClient {
            users: UserDirectoryClient::new(channel.clone()),
            who: who.clone(),
        }
    };
    let rename = |name: &str, field: &str| UpdateUserRequest {
        user: Some(User {
            name: name.into(),
            display_name: "Renamed".into(),
            email: "renamed@example.com".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![field.into()],
        }),
    };
    let as_member = as_user(&member.name);
    // A member renames themselves, and nothing more.
    as_member()
        .update_user(rename(&member.name, "display_name"))
        .await
        .unwrap();
    let err = as_member()
        .update_user(rename(&member.name, "email"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = as_member()
        .update_user(rename(&admin.name, "display_name"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = as_member()
        .delete_user(DeleteUserRequest {
            name: admin.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // An admin may, but not on themselves.
    let as_admin = as_user(&admin.name);
    as_admin().update_user(rename(&member.name, "email")).await.unwrap();
    let err = as_admin()
        .delete_user(DeleteUserRequest {
            name: admin.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SELF_ACTION_FORBIDDEN", "{err:?}");
    // Users of another tenant, unknown users and nonsense: UNAUTHENTICATED.
    for who in [
        stranger.name.as_str(),
        "tenants/acme/users/01936c7e-0000-7000-8000-000000000000",
        "me",
    ] {
        let err = as_user(who)()
            .get_user(userdir::pb::GetUserRequest {
                name: member.name.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{who}: {err:?}");
    }
    // A key that may not act for users is told so.
    let err = ActingClient {
        users: UserDirectoryClient::new(s.channel.clone()),
        who: member.name.clone(),
    }
    .get_user(userdir::pb::GetUserRequest {
        name: member.name.clone(),
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A user disabled or demoted stops acting so within the key refresh.
    let acting_admin = as_user(&admin.name);
    let read = userdir::pb::GetUserRequest {
        name: member.name.clone(),
    };
    acting_admin().get_user(read.clone()).await.unwrap();
    s.users
        .clone()
        .update_user(UpdateUserRequest {
            user: Some(User {
                name: member.name.clone(),
                enabled: Some(false),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["enabled".into()],
            }),
        })
        .await
        .unwrap();
    let since = std::time::Instant::now();
    let err = loop {
        match as_user(&member.name)().get_user(read.clone()).await {
            Err(e) => break e,
            Ok(_) if since.elapsed() < std::time::Duration::from_secs(5) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(_) => panic!("a disabled user still acts after 5 s"),
        }
    };
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let second = s.user("acme", "second@example.com", "Second").await;
    set_role(&s, &second.name, TenantRole::Admin).await.unwrap();
    set_role(&s, &admin.name, TenantRole::Member).await.unwrap();
    let since = std::time::Instant::now();
    loop {
        match acting_admin().update_user(rename(&member.name, "display_name")).await {
            Err(e) if e.code() == Code::PermissionDenied => break,
            Err(e) => panic!("{e:?}"),
            Ok(_) if since.elapsed() < std::time::Duration::from_secs(5) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(_) => panic!("a demoted admin still edits others after 5 s"),
        }
    }
}

/// A member promoting themselves is told they may not set roles
/// (PERMISSION_DENIED), not the self rule; an admin demoting themselves is
/// told the self rule, naming what was tried.
async fn the_self_rule_is_for_those_who_hold_the_right(s: TestServer) {
    s.tenant("acme").await;
    let member = s.user("acme", "member@example.com", "Member").await;
    let admin = s.user("acme", "admin@example.com", "Admin").await;
    set_role(&s, &admin.name, TenantRole::Admin).await.unwrap();
    let console = console(&s, "acme").await;
    let set = |who: &str, role: TenantRole| {
        let mut request = tonic::Request::new(SetUserRoleRequest {
            name: who.into(),
            role: role as i32,
            etag: String::new(),
        });
        request
            .metadata_mut()
            .insert("x-userdir-acting-user", who.parse().unwrap());
        let mut client = userdir::pb::user_directory_client::UserDirectoryClient::new(console.clone());
        async move { client.set_user_role(request).await }
    };
    let err = set(&member.name, TenantRole::Admin).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "MISSING_PERMISSION"),
        "{err:?}"
    );
    let err = set(&admin.name, TenantRole::Member).await.unwrap_err();
    assert_eq!(reason(&err), "SELF_ACTION_FORBIDDEN", "{err:?}");
    assert!(err.message().contains("demote themselves"), "{err:?}");
}

crate::on_both_backends!(
    a_members_note,
    the_self_rule_is_for_those_who_hold_the_right,
    acting_users_have_their_own_rights,
    roles_are_set_by_their_own_rpcs,
    the_last_admin_stays,
    transfers_race_to_one_owner,
);

/// Seed 003's other information: `note`, free text of at most 1,000
/// characters that a member edits on themselves (with their names, and
/// nothing else), that an import reads and an export writes as a column,
/// and that a filter searches with `:`.
async fn a_members_note(s: TestServer) {
    use userdir::pb::{ExportUsersRequest, ImportMode, ImportOptions};
    s.tenant("acme").await;
    let member = s.user("acme", "member@example.com", "Member").await;
    let other = s.user("acme", "other@example.com", "Other").await;
    let console = console(&s, "acme").await;
    let edit_note = |who: &str, target: &str, note: String| {
        let mut request = tonic::Request::new(UpdateUserRequest {
            user: Some(User {
                name: target.into(),
                note,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["note".into()],
            }),
        });
        request
            .metadata_mut()
            .insert("x-userdir-acting-user", who.parse().unwrap());
        let mut client = userdir::pb::user_directory_client::UserDirectoryClient::new(console.clone());
        async move { client.update_user(request).await.map(tonic::Response::into_inner) }
    };
    let note = "Vegetarian; prefers the Osaka office.\n出張は月曜日から。".to_owned();
    let updated = edit_note(&member.name, &member.name, note.clone()).await.unwrap();
    assert_eq!(updated.note, note);
    let err = edit_note(&member.name, &other.name, "x".into()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = edit_note(&member.name, &member.name, "あ".repeat(1001))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(crate::common::violation_fields(&err), ["note"]);
    edit_note(&member.name, &member.name, "あ".repeat(1000)).await.unwrap();
    edit_note(&member.name, &member.name, note.clone()).await.unwrap();

    // The filter finds it with `:`, ignoring case.
    let found = s
        .users
        .clone()
        .list_users(ListUsersRequest {
            parent: "tenants/acme".into(),
            filter: r#"note : "VEGETARIAN""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(
        found.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
        ["member@example.com"]
    );

    // An export carries it as a column, and imports back unchanged; an
    // import sets it.
    let (csv, _) = crate::export::export_csv(
        &s,
        ExportUsersRequest {
            parent: "tenants/acme".into(),
            columns: vec!["email".into(), "name".into(), "note".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let text = String::from_utf8(csv).unwrap();
    assert!(text.contains("出張は月曜日から。"), "{text}");
    let upsert = ImportOptions {
        parent: "tenants/acme".into(),
        mode: ImportMode::Upsert as i32,
        ..Default::default()
    };
    let (results, _) = crate::import::csv(&s, upsert.clone(), &text).await;
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r.outcome == userdir::pb::ImportOutcome::Unchanged as i32),
        "{results:?}"
    );
    let (results, _) = crate::import::csv(&s, upsert, "email,name,note\nnew@example.com,New,Speaks Finnish\n").await;
    assert_eq!(
        results[0].outcome,
        userdir::pb::ImportOutcome::Created as i32,
        "{results:?}"
    );
    let new = s
        .users
        .clone()
        .get_user(userdir::pb::GetUserRequest {
            name: results[0].user.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new.note, "Speaks Finnish");
}
