//! The import's role rules (seed 000): an import never grants or changes a
//! role, every row asks the caller's rights, FULL_SYNC never deletes the
//! owner or the acting user, `keep_admins` protects admins (PROTECTED, not
//! silently), a file without the acting user is an error without
//! `keep_admins`, and no import removes the last admin.

use tonic::Code;
use userdir::client::AuthedChannel;
use userdir::pb::import_users_request::Payload;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{
    Capabilities, CreateTenantRequest, ImportJob, ImportMode, ImportOptions, ImportOutcome, ImportRowResult,
    ImportUsersRequest, SetUserCapabilitiesRequest, Tenant, TenantRole, User,
};

use crate::common::{TestServer, reason};
use crate::export::{export_csv, request};
use crate::import::{by_email, chunks, end, results_of, users};
use crate::roles::{console, set_role};

/// An import of `csv` into acme, acting for `acting` (a user's resource
/// name) through `client`, or with the operator's key when `None`.
async fn import_as(
    s: &TestServer,
    acting: Option<(&UserDirectoryClient<AuthedChannel>, &str)>,
    opts: ImportOptions,
    csv: &str,
) -> Result<(Vec<ImportRowResult>, ImportJob), tonic::Status> {
    let mut all = vec![ImportUsersRequest {
        payload: Some(Payload::Options(opts)),
    }];
    all.extend(chunks(csv.as_bytes(), 11));
    all.push(end());
    let mut request = tonic::Request::new(tokio_stream::iter(all));
    let Some((client, who)) = acting else {
        return results_of(s.users.clone(), request).await;
    };
    request
        .metadata_mut()
        .insert("x-userdir-acting-user", who.parse().unwrap());
    results_of(client.clone(), request).await
}

fn opts(mode: ImportMode, keep_admins: bool) -> ImportOptions {
    ImportOptions {
        parent: "tenants/acme".into(),
        mode: mode as i32,
        keep_admins,
        ..Default::default()
    }
}

/// (email, outcome, reason) of every result, sorted by email.
fn seen(results: &[ImportRowResult]) -> Vec<(String, ImportOutcome, String)> {
    let mut seen: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r.email.clone(),
                ImportOutcome::try_from(r.outcome).unwrap(),
                r.reason.clone(),
            )
        })
        .collect();
    seen.sort();
    seen
}

fn row(email: &str, outcome: ImportOutcome, reason: &str) -> (String, ImportOutcome, String) {
    (email.to_owned(), outcome, reason.to_owned())
}

/// acme with an owner, two admins and two members; and a key that acts for users.
async fn acme(s: &TestServer) -> (UserDirectoryClient<AuthedChannel>, [User; 5]) {
    s.tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant_id: "acme".into(),
            tenant: Some(Tenant {
                display_name: "Acme".into(),
                ..Default::default()
            }),
            initial_owner: Some(User {
                email: "owner@example.com".into(),
                display_name: "Owner".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let owner = by_email(&users(s).await)["owner@example.com"].clone();
    let a1 = s.user("acme", "a1@example.com", "A1").await;
    let a1 = set_role(s, &a1.name, TenantRole::Admin).await.unwrap();
    let a2 = s.user("acme", "a2@example.com", "A2").await;
    let a2 = set_role(s, &a2.name, TenantRole::Admin).await.unwrap();
    let m1 = s.user("acme", "m1@example.com", "M1").await;
    let m2 = s.user("acme", "m2@example.com", "M2").await;
    let console = UserDirectoryClient::new(console(s, "acme").await);
    (console, [owner, a1, a2, m1, m2])
}

async fn role_of(s: &TestServer, email: &str) -> i32 {
    by_email(&users(s).await)[email].role
}

async fn import_never_grants_or_changes_a_role(s: TestServer) {
    use ImportOutcome::*;
    let (_, [owner, a1, ..]) = acme(&s).await;
    let file = "email,name,role\n\
                new-admin@example.com,New,admin\n\
                new-member@example.com,New,member\n\
                new-blank@example.com,New,\n\
                a1@example.com,A1 renamed,\n\
                m1@example.com,M1,admin\n\
                a2@example.com,A2,member\n\
                m2@example.com,M2,boss\n\
                owner@example.com,Owner,owner\n";
    let (results, _) = import_as(&s, None, opts(ImportMode::Upsert, false), file)
        .await
        .unwrap();
    assert_eq!(
        seen(&results),
        [
            row("a1@example.com", Updated, ""),
            row("a2@example.com", Failed, "ROLE_NOT_ASSIGNABLE_BY_IMPORT"),
            row("m1@example.com", Failed, "ROLE_NOT_ASSIGNABLE_BY_IMPORT"),
            row("m2@example.com", Failed, "INVALID_ARGUMENT"),
            row("new-admin@example.com", Failed, "ROLE_NOT_ASSIGNABLE_BY_IMPORT"),
            row("new-blank@example.com", Created, ""),
            row("new-member@example.com", Created, ""),
            row("owner@example.com", Unchanged, ""),
        ]
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.field.is_empty())
        .map(|r| r.field.as_str())
        .collect();
    assert_eq!(failed, ["role"; 4], "the role cell is named");
    let now = by_email(&users(&s).await);
    assert_eq!(
        now["a1@example.com"].role,
        TenantRole::Admin as i32,
        "an admin updated by import stays an admin"
    );
    assert_eq!(now["a1@example.com"].display_name, "A1 renamed");
    assert_eq!(now["m1@example.com"].role, TenantRole::Member as i32);
    assert_eq!(now["a2@example.com"].role, TenantRole::Admin as i32);
    assert_eq!(now["new-member@example.com"].role, TenantRole::Member as i32);
    assert!(!now.contains_key("new-admin@example.com"));
    assert_eq!(now[&owner.email].role, TenantRole::Owner as i32);
    assert_eq!(a1.role, TenantRole::Admin as i32);

    // An export with the role column imports back unchanged.
    let mut req = request("acme");
    req.columns = vec!["email".into(), "name".into(), "role".into()];
    let (bytes, _) = export_csv(&s, req).await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("a1@example.com,A1 renamed,admin"), "{text}");
    assert!(text.contains("owner@example.com,Owner,owner"), "{text}");
    let (results, job) = import_as(
        &s,
        None,
        opts(ImportMode::Upsert, false),
        text.trim_start_matches('\u{feff}'),
    )
    .await
    .unwrap();
    assert_eq!(results.len(), 7, "{results:?}");
    assert!(results.iter().all(|r| r.outcome == Unchanged as i32), "{results:?}");
    assert_eq!(job.counts.unwrap().rows, 7);
}

async fn every_row_asks_the_callers_rights(s: TestServer) {
    use ImportOutcome::*;
    let (console, [owner, a1, _, m1, _]) = acme(&s).await;
    // A member with user management manages members, not admins.
    s.users
        .clone()
        .set_user_capabilities(SetUserCapabilitiesRequest {
            name: m1.name.clone(),
            capabilities: Some(Capabilities {
                user_management: true,
                export_users: false,
            }),
            etag: String::new(),
        })
        .await
        .unwrap();
    let file = "email,name\n\
                a1@example.com,A1 by a manager\n\
                a2@example.com,A2\n\
                m2@example.com,M2 by a manager\n\
                new@example.com,New\n";
    let (results, _) = import_as(&s, Some((&console, &m1.name)), opts(ImportMode::Upsert, false), file)
        .await
        .unwrap();
    assert_eq!(
        seen(&results),
        [
            row("a1@example.com", Failed, "MISSING_PERMISSION"),
            row("a2@example.com", Unchanged, ""),
            row("m2@example.com", Updated, ""),
            row("new@example.com", Created, ""),
        ]
    );
    assert_eq!(by_email(&users(&s).await)["a1@example.com"].display_name, "A1");

    // An admin disables neither themselves nor the owner; an export's
    // unchanged `enabled` cell is no change.
    let file = "email,name,enabled\n\
                a1@example.com,A1,false\n\
                owner@example.com,Owner,false\n\
                m2@example.com,M2 by a manager,true\n\
                new@example.com,New,false\n";
    let (results, _) = import_as(&s, Some((&console, &a1.name)), opts(ImportMode::Upsert, false), file)
        .await
        .unwrap();
    assert_eq!(
        seen(&results),
        [
            row("a1@example.com", Failed, "SELF_ACTION_FORBIDDEN"),
            row("m2@example.com", Unchanged, ""),
            row("new@example.com", Updated, ""),
            row(&owner.email, Failed, "OWNER_PROTECTED"),
        ]
    );
    let now = by_email(&users(&s).await);
    assert_eq!(
        (now["a1@example.com"].enabled, now[&owner.email].enabled),
        (Some(true), Some(true))
    );
    assert_eq!(now["new@example.com"].enabled, Some(false));

    // A member without user management may not import at all.
    let err = import_as(
        &s,
        Some((&console, &by_email(&users(&s).await)["m2@example.com"].name)),
        opts(ImportMode::Upsert, false),
        "email\nx@example.com\n",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

async fn full_sync_keeps_the_owner_the_acting_user_and_admins(s: TestServer) {
    use ImportOutcome::*;
    let (console, [owner, a1, a2, _, _]) = acme(&s).await;
    let as_a1 = Some((&console, a1.name.as_str()));

    // keep_admins: admins and the owner stay, reported PROTECTED with why.
    let file = "email,name\nm1@example.com,M1\n";
    let (results, job) = import_as(&s, as_a1, opts(ImportMode::FullSync, true), file)
        .await
        .unwrap();
    assert_eq!(
        seen(&results),
        [
            row("a1@example.com", Protected, "ACTING_USER"),
            row("a2@example.com", Protected, "KEEP_ADMINS"),
            row("m1@example.com", Unchanged, ""),
            row("m2@example.com", Deleted, ""),
            row(&owner.email, Protected, "OWNER"),
        ]
    );
    assert!(
        results
            .iter()
            .filter(|r| r.outcome == Protected as i32)
            .all(|r| r.line == 0 && !r.message.is_empty())
    );
    let counts = job.counts.unwrap();
    assert_eq!((counts.rows, counts.deleted, counts.protected), (1, 1, 3));
    assert_eq!(users(&s).await.len(), 4);

    // Without keep_admins the acting user must be in the file (seed 000).
    s.user("acme", "m3@example.com", "M3").await;
    let err = import_as(&s, as_a1, opts(ImportMode::FullSync, false), file)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "OPERATING_ADMIN_ABSENT"),
        "{err:?}"
    );
    assert!(err.message().contains("a1@example.com"), "names whom to add: {err:?}");
    assert_eq!(users(&s).await.len(), 5, "nothing was deleted");

    // With them in it, absent admins go like anyone; the owner stays.
    let file = "email,name\na1@example.com,A1\nm1@example.com,M1\n";
    let (results, _) = import_as(&s, as_a1, opts(ImportMode::FullSync, false), file)
        .await
        .unwrap();
    assert_eq!(
        seen(&results),
        [
            row("a1@example.com", Unchanged, ""),
            row("a2@example.com", Deleted, ""),
            row("m1@example.com", Unchanged, ""),
            row("m3@example.com", Deleted, ""),
            row(&owner.email, Protected, "OWNER"),
        ]
    );
    assert!(!by_email(&users(&s).await).contains_key(&a2.email));
}

async fn no_import_removes_the_last_admin(s: TestServer) {
    use ImportOutcome::*;
    s.tenant("acme").await;
    let a1 = s.user("acme", "a1@example.com", "A1").await;
    set_role(&s, &a1.name, TenantRole::Admin).await.unwrap();
    let a2 = s.user("acme", "a2@example.com", "A2").await;
    set_role(&s, &a2.name, TenantRole::Admin).await.unwrap();
    s.user("acme", "m1@example.com", "M1").await;

    // Disabling both admins in one file: the second is refused.
    let file = "email,enabled\na1@example.com,false\na2@example.com,false\n";
    let (results, _) = import_as(&s, None, opts(ImportMode::UpdateOnly, false), file)
        .await
        .unwrap();
    assert_eq!(
        seen(&results),
        [
            row("a1@example.com", Updated, ""),
            row("a2@example.com", Failed, "LAST_ADMIN")
        ]
    );
    let now = by_email(&users(&s).await);
    assert_eq!(
        (now["a1@example.com"].enabled, now["a2@example.com"].enabled),
        (Some(false), Some(true))
    );
    assert_eq!(role_of(&s, "a2@example.com").await, TenantRole::Admin as i32);

    // A FULL_SYNC that would delete every enabled admin deletes nothing.
    let file = "email,name\nm1@example.com,M1\n";
    let err = import_as(&s, None, opts(ImportMode::FullSync, false), file)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "LAST_ADMIN"),
        "{err:?}"
    );
    assert_eq!(users(&s).await.len(), 3, "nothing was deleted");
    // The dry run says so too.
    let dry = ImportOptions {
        validate_only: true,
        ..opts(ImportMode::FullSync, false)
    };
    let err = import_as(&s, None, dry, file).await.unwrap_err();
    assert_eq!(reason(&err), "LAST_ADMIN");
}

crate::on_both_backends!(
    every_row_asks_the_callers_rights,
    full_sync_keeps_the_owner_the_acting_user_and_admins,
    import_never_grants_or_changes_a_role,
    no_import_removes_the_last_admin,
);
