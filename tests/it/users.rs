//! CreateUser, GetUser, UpdateUser, DeleteUser, LookupUser: the rules of seed 001.

use std::collections::HashMap;

use tonic::Code;
use userdir::pb::lookup_user_request::Key;
use userdir::pb::{
    CustomAttributeDefinition, DeleteUserRequest, GetUserRequest, LookupUserRequest, Tenant, UpdateUserRequest, User,
    UserStatus,
};

use crate::common::{TestServer, reason, violation_fields};

fn user(email: &str, name: &str) -> User {
    User {
        email: email.into(),
        display_name: name.into(),
        ..Default::default()
    }
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn create_and_get_round_trip(s: TestServer) {
    s.tenant("acme").await;
    let mut input = user("Taro.Yamada@Example.COM", "山田 太郎");
    input.custom_attributes = HashMap::from([("custom_01".into(), "営業部".into()), ("custom_10".into(), "x".into())]);
    input.external_id = "HR-0001".into();
    input.title = "Manager".into();
    input.phone = "+81 3-1234-5678".into();
    input.time_zone = "Asia/Tokyo".into();
    input.status = UserStatus::Confirmed as i32;
    let created = s.create("acme", input).await.unwrap();
    assert!(created.name.starts_with("tenants/acme/users/"));
    let id = uuid::Uuid::parse_str(&created.user_id).unwrap();
    assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");
    assert_eq!(created.email, "Taro.Yamada@Example.COM", "email kept as typed");
    assert_eq!(created.enabled, Some(true), "enabled by default");
    assert_eq!(created.status, UserStatus::Confirmed as i32);
    assert!(!created.etag.is_empty());
    let got = s
        .users
        .clone()
        .get_user(GetUserRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    let defaulted = s.user("acme", "b@example.com", "B").await;
    assert_eq!(defaulted.status, UserStatus::Unconfirmed as i32);
}

async fn validation_follows_seed_001(s: TestServer) {
    s.tenant("acme").await;
    let label63 = "a".repeat(63);
    let ok = [
        format!("{}@{}.com", "a".repeat(60), "b".repeat(63)), // exactly 128 characters
        format!("u@{label63}.example.com"),
        format!("{}@example.com", "l".repeat(64)),
    ];
    for (i, email) in ok.iter().enumerate() {
        s.create("acme", user(email, &format!("ok {i}")))
            .await
            .unwrap_or_else(|e| panic!("{email}: {e:?}"));
    }
    let bad = [
        ("", "required"),
        ("taro.@example.com", "dot right before the @"),
        ("ta..ro@example.com", "two dots"),
        ("taro@example..com", "two dots"),
        ("taro@@example.com", "exactly one @"),
        ("taro example@example.com", "spaces"),
        ("taro@", "domain"),
        ("@example.com", "local part"),
    ];
    for (email, why) in bad {
        let err = s.create("acme", user(email, "X")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{email:?}");
        assert_eq!(violation_fields(&err), ["email"], "{email:?}");
        assert!(err.message().contains(why), "{email:?}: {}", err.message());
    }
    let too_long = format!("{}@{}.{}.com", "a".repeat(60), "b".repeat(40), "c".repeat(23));
    assert_eq!(too_long.chars().count(), 129);
    let err = s.create("acme", user(&too_long, "X")).await.unwrap_err();
    assert!(err.message().contains("at most 128"), "{}", err.message());
    let label64 = format!("u@{}.com", "a".repeat(64));
    assert!(
        s.create("acme", user(&label64, "X"))
            .await
            .unwrap_err()
            .message()
            .contains("at most 63")
    );
    let local65 = format!("{}@example.com", "l".repeat(65));
    assert!(
        s.create("acme", user(&local65, "X"))
            .await
            .unwrap_err()
            .message()
            .contains("64 octets")
    );

    // Every bad field is reported at once.
    let mut many = user("a..b@example.com", &"名".repeat(2049));
    many.custom_attributes = HashMap::from([("custom_02".into(), "v".repeat(2049)), ("custom_11".into(), "x".into())]);
    let err = s.create("acme", many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    let mut fields = violation_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "custom_attributes.custom_02",
            "custom_attributes.custom_11",
            "display_name",
            "email"
        ]
    );

    // 2048 characters are fine (multi-byte too).
    let mut max = user("max@example.com", &"名".repeat(2048));
    max.custom_attributes = HashMap::from([("custom_02".into(), "値".repeat(2048))]);
    s.create("acme", max).await.unwrap();
    assert_eq!(
        violation_fields(&s.create("acme", user("n@example.com", "")).await.unwrap_err()),
        ["display_name"]
    );
}

async fn required_custom_attributes(s: TestServer) {
    let mut tenant = Tenant {
        display_name: "Acme".into(),
        ..Default::default()
    };
    tenant.custom_attributes = vec![CustomAttributeDefinition {
        key: "custom_03".into(),
        label: "社員番号".into(),
        required: true,
        visible: true,
    }];
    s.tenant_with("acme", tenant).await;
    let err = s.create("acme", user("a@example.com", "A")).await.unwrap_err();
    assert_eq!(violation_fields(&err), ["custom_attributes.custom_03"]);
    assert!(err.message().contains("社員番号"), "{}", err.message());
    let mut ok = user("a@example.com", "A");
    ok.custom_attributes = HashMap::from([("custom_03".into(), "E-1".into())]);
    s.create("acme", ok).await.unwrap();
}

async fn email_unique_per_tenant_ignoring_case(s: TestServer) {
    s.tenant("acme").await;
    s.tenant("globex").await;
    s.user("acme", "Taro@Example.com", "Taro").await;
    let err = s.create("acme", user("taro@EXAMPLE.COM", "Other")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "EMAIL_ALREADY_EXISTS");
    // NFC: a decomposed é is the same address as the precomposed one.
    s.user("acme", "caf\u{e9}@example.com", "Cafe").await;
    let err = s
        .create("acme", user("CAFE\u{301}@example.com", "Cafe 2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // The same email in another tenant is another user.
    let other = s.user("globex", "taro@example.com", "Taro at Globex").await;
    assert!(other.name.starts_with("tenants/globex/"));
}

async fn racing_creates_one_winner(s: TestServer) {
    s.tenant("acme").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = s.users.clone();
        tasks.push(tokio::spawn(async move {
            let req = userdir::pb::CreateUserRequest {
                parent: "tenants/acme".into(),
                user: Some(user(
                    if i % 2 == 0 {
                        "race@example.com"
                    } else {
                        "RACE@example.com"
                    },
                    "Racer",
                )),
                validate_only: false,
            };
            client.clone().create_user(req).await.map(|_| ()).map_err(|e| e.code())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(code) => assert_eq!(code, Code::AlreadyExists),
        }
    }
    assert_eq!(ok, 1);
    let tenant = s
        .tenants
        .clone()
        .get_tenant(userdir::pb::GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await;
    assert_eq!(
        tenant.unwrap().into_inner().user_count,
        1,
        "seat count matches the users"
    );
}

async fn external_id_unique_and_lookup(s: TestServer) {
    s.tenant("acme").await;
    let mut a = user("a@example.com", "A");
    a.external_id = "HR-1".into();
    let a = s.create("acme", a).await.unwrap();
    let mut b = user("b@example.com", "B");
    b.external_id = "HR-1".into();
    let err = s.create("acme", b).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::AlreadyExists, "EXTERNAL_ID_ALREADY_EXISTS")
    );
    // Users without an external id do not collide.
    s.user("acme", "c@example.com", "C").await;
    s.user("acme", "d@example.com", "D").await;

    let lookup = |key| LookupUserRequest {
        parent: "tenants/acme".into(),
        key: Some(key),
    };
    let by_email = s
        .users
        .clone()
        .lookup_user(lookup(Key::Email("A@EXAMPLE.com".into())))
        .await
        .unwrap();
    assert_eq!(by_email.into_inner().name, a.name);
    let by_ext = s
        .users
        .clone()
        .lookup_user(lookup(Key::ExternalId("HR-1".into())))
        .await
        .unwrap();
    assert_eq!(by_ext.into_inner().name, a.name);
    let missing = s
        .users
        .clone()
        .lookup_user(lookup(Key::Email("zz@example.com".into())))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let no_key = LookupUserRequest {
        parent: "tenants/acme".into(),
        key: None,
    };
    assert_eq!(
        s.users.clone().lookup_user(no_key).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

async fn tenant_isolation(s: TestServer) {
    s.tenant("acme").await;
    s.tenant("globex").await;
    let a = s.user("acme", "a@example.com", "A").await;
    let foreign = a.name.replace("tenants/acme/", "tenants/globex/");
    let mut users = s.users.clone();

    let err = users
        .get_user(GetUserRequest { name: foreign.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "USER_NOT_FOUND");
    let update = UpdateUserRequest {
        user: Some(User {
            name: foreign.clone(),
            display_name: "Hacked".into(),
            ..Default::default()
        }),
        update_mask: mask(&["display_name"]),
    };
    assert_eq!(users.update_user(update).await.unwrap_err().code(), Code::NotFound);
    let delete = DeleteUserRequest {
        name: foreign.clone(),
        etag: String::new(),
    };
    assert_eq!(users.delete_user(delete).await.unwrap_err().code(), Code::NotFound);
    let lookup = LookupUserRequest {
        parent: "tenants/globex".into(),
        key: Some(Key::Email("a@example.com".into())),
    };
    assert_eq!(users.lookup_user(lookup).await.unwrap_err().code(), Code::NotFound);
    let list = userdir::pb::ListUsersRequest {
        parent: "tenants/globex".into(),
        ..Default::default()
    };
    assert!(users.list_users(list).await.unwrap().into_inner().users.is_empty());
    // Untouched in its own tenant.
    let still = users
        .get_user(GetUserRequest { name: a.name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, a);
    // Unknown tenant and malformed names.
    let err = s.create("nowhere", user("x@example.com", "X")).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "TENANT_NOT_FOUND")
    );
    let err = users
        .get_user(GetUserRequest {
            name: "users/123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), violation_fields(&err)),
        (Code::InvalidArgument, vec!["name".to_owned()])
    );
}

async fn update_with_mask_and_etag(s: TestServer) {
    s.tenant("acme").await;
    let mut input = user("a@example.com", "Before");
    input.department = "Sales".into();
    input.custom_attributes = HashMap::from([("custom_01".into(), "one".into()), ("custom_02".into(), "two".into())]);
    let created = s.create("acme", input).await.unwrap();
    let mut users = s.users.clone();

    // Only the masked fields change, even though others are sent.
    let change = User {
        name: created.name.clone(),
        etag: created.etag.clone(),
        display_name: "After".into(),
        email: "ignored@example.com".into(),
        department: String::new(),
        custom_attributes: HashMap::from([("custom_02".into(), "TWO".into())]),
        ..Default::default()
    };
    let req = UpdateUserRequest {
        user: Some(change),
        update_mask: mask(&["display_name", "custom_attributes.custom_02"]),
    };
    let updated = users.update_user(req).await.unwrap().into_inner();
    assert_eq!(updated.display_name, "After");
    assert_eq!(updated.email, "a@example.com");
    assert_eq!(updated.department, "Sales");
    assert_eq!(
        updated.custom_attributes.get("custom_01").map(String::as_str),
        Some("one")
    );
    assert_eq!(
        updated.custom_attributes.get("custom_02").map(String::as_str),
        Some("TWO")
    );
    assert_ne!(updated.etag, created.etag);
    let micros = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
    assert!(micros(&updated.update_time) > micros(&created.update_time));
    assert_eq!(updated.create_time, created.create_time);

    // The old etag is stale now.
    let stale = UpdateUserRequest {
        user: Some(User {
            name: created.name.clone(),
            etag: created.etag.clone(),
            title: "X".into(),
            ..Default::default()
        }),
        update_mask: mask(&["title"]),
    };
    let err = users.update_user(stale).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Aborted, "ETAG_MISMATCH"));

    // A write that changes nothing keeps etag and update_time.
    let same = UpdateUserRequest {
        user: Some(User {
            name: created.name.clone(),
            display_name: "After".into(),
            ..Default::default()
        }),
        update_mask: mask(&["display_name"]),
    };
    let unchanged = users.update_user(same).await.unwrap().into_inner();
    assert_eq!(
        (unchanged.etag, unchanged.update_time),
        (updated.etag.clone(), updated.update_time)
    );

    // Bad values and unknown paths are INVALID_ARGUMENT; clearing a field works.
    let bad = UpdateUserRequest {
        user: Some(User {
            name: created.name.clone(),
            email: "bad..@x".into(),
            ..Default::default()
        }),
        update_mask: mask(&["email"]),
    };
    assert_eq!(violation_fields(&users.update_user(bad).await.unwrap_err()), ["email"]);
    let unknown = UpdateUserRequest {
        user: Some(User {
            name: created.name.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["create_time"]),
    };
    assert_eq!(
        violation_fields(&users.update_user(unknown).await.unwrap_err()),
        ["update_mask"]
    );
    let clear = UpdateUserRequest {
        user: Some(User {
            name: created.name.clone(),
            enabled: Some(false),
            ..Default::default()
        }),
        update_mask: mask(&["department", "enabled"]),
    };
    let cleared = users.update_user(clear).await.unwrap().into_inner();
    assert_eq!((cleared.department.as_str(), cleared.enabled), ("", Some(false)));

    // Changing the email to one taken by another user is ALREADY_EXISTS.
    s.user("acme", "b@example.com", "B").await;
    let taken = UpdateUserRequest {
        user: Some(User {
            name: created.name.clone(),
            email: "B@example.com".into(),
            ..Default::default()
        }),
        update_mask: mask(&["email"]),
    };
    assert_eq!(users.update_user(taken).await.unwrap_err().code(), Code::AlreadyExists);
}

async fn delete_with_etag_frees_seat(s: TestServer) {
    s.tenant_with(
        "acme",
        Tenant {
            display_name: "Acme".into(),
            seat_limit: 2,
            ..Default::default()
        },
    )
    .await;
    let a = s.user("acme", "a@example.com", "A").await;
    s.user("acme", "b@example.com", "B").await;
    let err = s.create("acme", user("c@example.com", "C")).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "SEAT_LIMIT_EXCEEDED")
    );

    let mut users = s.users.clone();
    let stale = DeleteUserRequest {
        name: a.name.clone(),
        etag: "\"999\"".into(),
    };
    assert_eq!(users.delete_user(stale).await.unwrap_err().code(), Code::Aborted);
    users
        .delete_user(DeleteUserRequest {
            name: a.name.clone(),
            etag: a.etag.clone(),
        })
        .await
        .unwrap();
    let gone = users
        .get_user(GetUserRequest { name: a.name.clone() })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = users
        .delete_user(DeleteUserRequest {
            name: a.name.clone(),
            etag: String::new(),
        })
        .await;
    assert_eq!(again.unwrap_err().code(), Code::NotFound);
    // The seat is free again, and the email can be reused.
    s.user("acme", "a@example.com", "A again").await;
}

async fn validate_only_writes_nothing(s: TestServer) {
    s.tenant("acme").await;
    let req = userdir::pb::CreateUserRequest {
        parent: "tenants/acme".into(),
        user: Some(user("dry@example.com", "Dry")),
        validate_only: true,
    };
    let would_be = s.users.clone().create_user(req.clone()).await.unwrap().into_inner();
    assert_eq!(would_be.email, "dry@example.com");
    let list = userdir::pb::ListUsersRequest {
        parent: "tenants/acme".into(),
        ..Default::default()
    };
    assert!(
        s.users
            .clone()
            .list_users(list)
            .await
            .unwrap()
            .into_inner()
            .users
            .is_empty()
    );
    s.user("acme", "dry@example.com", "Real").await;
    assert_eq!(
        s.users.clone().create_user(req).await.unwrap_err().code(),
        Code::AlreadyExists
    );
}

/// Look-alike addresses (UTS #39 mixed scripts in the local part) are
/// refused on create, in an import row and in a lookup; single-script
/// local parts in any script pass (issue 23).
async fn look_alike_local_parts_are_refused(s: TestServer) {
    s.tenant("acme").await;
    s.user("acme", "paypal@x.test", "Real").await;
    s.user("acme", "иван@x.test", "Ivan").await;
    s.user("acme", "山田@x.test", "Yamada").await;
    let look_alike = "p\u{430}ypal@x.test";
    let err = s.create("acme", user(look_alike, "Fake")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(crate::common::violation_fields(&err), ["email"]);
    assert!(err.message().contains("Latin, Cyrillic"), "{err:?}");
    let err = s
        .users
        .clone()
        .lookup_user(LookupUserRequest {
            parent: "tenants/acme".into(),
            key: Some(Key::Email(look_alike.into())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let file = format!("email,name\n{look_alike},Fake\nother@x.test,Other\n");
    let (results, _) = crate::import::csv(
        &s,
        userdir::pb::ImportOptions {
            parent: "tenants/acme".into(),
            mode: userdir::pb::ImportMode::Upsert as i32,
            ..Default::default()
        },
        &file,
    )
    .await;
    let seen: Vec<(i64, i32, &str)> = results.iter().map(|r| (r.line, r.outcome, r.field.as_str())).collect();
    assert_eq!(
        seen,
        [
            (2, userdir::pb::ImportOutcome::Failed as i32, "email"),
            (3, userdir::pb::ImportOutcome::Created as i32, ""),
        ]
    );
    assert!(results[0].message.contains("mixes scripts"), "{:?}", results[0]);
}

crate::on_both_backends!(
    unique_violations_are_named_by_their_index,
    look_alike_local_parts_are_refused,
    create_and_get_round_trip,
    validation_follows_seed_001,
    required_custom_attributes,
    email_unique_per_tenant_ignoring_case,
    racing_creates_one_winner,
    external_id_unique_and_lookup,
    tenant_isolation,
    update_with_mask_and_etag,
    delete_with_etag_frees_seat,
    validate_only_writes_nothing,
);

/// A unique violation is mapped by the index it broke, never guessed from
/// the message: the email and external id name their field; a user id
/// taken already (the primary key) is no "email exists" but a storage
/// failure, logged.
async fn unique_violations_are_named_by_their_index(s: TestServer) {
    use userdir_domain::repo::UserRepository;
    s.tenant("acme").await;
    let first = s.user("acme", "first@example.com", "First").await;
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    let name = userdir_domain::user::UserName::parse("name", &first.name).unwrap();
    let stored = store.get_user(&name).await.unwrap();
    let same_id = userdir_domain::user::User {
        email: userdir_domain::email::Email::parse("email", "other@example.com").unwrap(),
        ..stored.clone()
    };
    let err = store
        .insert_user(&same_id, &userdir_domain::event::Origin::server())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "STORAGE_FAILURE", "{err:?}");
    let same_email = userdir_domain::user::User {
        id: userdir_domain::user::UserId::new(),
        ..stored.clone()
    };
    let err = store
        .insert_user(&same_email, &userdir_domain::event::Origin::server())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "EMAIL_ALREADY_EXISTS", "{err:?}");
    store.close().await.unwrap();
}
