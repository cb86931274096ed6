//! ListUsers: paging, ordering, filtering, and tokens that stay correct while
//! data changes.

use std::collections::{HashMap, HashSet};

use tonic::Code;
use userdir::pb::{DeleteUserRequest, ListUsersRequest, ListUsersResponse, User};

use crate::common::{TestServer, violation_fields};

fn req(filter: &str, order_by: &str, page_size: i32, page_token: &str) -> ListUsersRequest {
    ListUsersRequest {
        parent: "tenants/acme".into(),
        page_size,
        page_token: page_token.into(),
        filter: filter.into(),
        order_by: order_by.into(),
    }
}

async fn list(s: &TestServer, r: ListUsersRequest) -> Result<ListUsersResponse, tonic::Status> {
    s.users.clone().list_users(r).await.map(tonic::Response::into_inner)
}

/// Every page of a filter/order, concatenated.
async fn all_pages(s: &TestServer, filter: &str, order_by: &str, page_size: i32) -> Vec<User> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(s, req(filter, order_by, page_size, &token)).await.unwrap();
        assert!(page.users.len() <= page_size as usize);
        out.extend(page.users);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn emails(users: &[User]) -> Vec<String> {
    users.iter().map(|u| u.email.clone()).collect()
}

async fn seed(s: &TestServer) -> Vec<User> {
    s.tenant("acme").await;
    let people = [
        ("carol@example.com", "Carol", "Sales", true),
        ("Alice@Example.com", "alice", "Dev", true),
        ("bob@corp.example", "Bob", "Sales", false),
        ("dave@example.com", "Dave", "", true),
        ("eve@corp.example", "Eve", "Dev", true),
    ];
    let mut out = Vec::new();
    for (email, name, dept, enabled) in people {
        let mut u = User {
            email: email.into(),
            display_name: name.into(),
            enabled: Some(enabled),
            ..Default::default()
        };
        if !dept.is_empty() {
            u.custom_attributes = HashMap::from([("custom_01".into(), dept.into())]);
            u.external_id = format!("HR-{name}");
        }
        out.push(s.create("acme", u).await.unwrap());
    }
    out
}

async fn pages_and_orders(s: TestServer) {
    let created = seed(&s).await;
    // Default order: creation order.
    assert_eq!(emails(&all_pages(&s, "", "", 2).await), emails(&created));
    let by_email = emails(&all_pages(&s, "", "email", 2).await);
    assert_eq!(
        by_email,
        [
            "Alice@Example.com",
            "bob@corp.example",
            "carol@example.com",
            "dave@example.com",
            "eve@corp.example"
        ]
    );
    let mut desc = by_email.clone();
    desc.reverse();
    assert_eq!(emails(&all_pages(&s, "", "email desc", 3).await), desc);
    let newest_first = emails(&all_pages(&s, "", "create_time desc", 1).await);
    let mut expected = emails(&created);
    expected.reverse();
    assert_eq!(newest_first, expected);
    let by_name = all_pages(&s, "", "display_name", 4).await;
    assert_eq!(by_name.len(), 5);
    assert_eq!(all_pages(&s, "", "update_time", 2).await.len(), 5);

    // Page size: default 100, capped at 1000, negative refused.
    let page = list(&s, req("", "", 0, "")).await.unwrap();
    assert_eq!((page.users.len(), page.next_page_token.as_str()), (5, ""));
    assert_eq!(list(&s, req("", "", 5000, "")).await.unwrap().users.len(), 5);
    assert_eq!(
        list(&s, req("", "", -1, "")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = list(&s, req("", "password", 0, "")).await.unwrap_err();
    assert_eq!(violation_fields(&err), ["order_by"]);
}

async fn filters(s: TestServer) {
    let created = seed(&s).await;
    let matching = |filter: &'static str| {
        let s = &s;
        async move {
            let mut e = emails(&all_pages(s, filter, "email", 100).await);
            e.sort();
            e
        }
    };
    assert_eq!(matching(r#"email = "ALICE@example.com""#).await, ["Alice@Example.com"]);
    assert_eq!(
        matching(r#"email : "@corp.""#).await,
        ["bob@corp.example", "eve@corp.example"]
    );
    assert_eq!(matching("enabled = false").await, ["bob@corp.example"]);
    assert_eq!(
        matching(r#"custom_01 = "Sales" AND enabled = true"#).await,
        ["carol@example.com"]
    );
    assert_eq!(
        matching(r#"custom_01 = "Dev" OR display_name = "Bob""#).await,
        ["Alice@Example.com", "bob@corp.example", "eve@corp.example"]
    );
    assert_eq!(
        matching(r#"NOT (custom_01 = "Sales" OR custom_01 = "Dev")"#).await,
        ["dave@example.com"]
    );
    assert_eq!(matching("NOT external_id:*").await, ["dave@example.com"]);
    assert_eq!(
        matching(r#"external_id != "HR-Bob""#).await.len(),
        4,
        "unset external ids are included"
    );
    assert_eq!(
        matching(r#"display_name : "ALI""#).await,
        ["Alice@Example.com"],
        "substring ignores case"
    );
    assert_eq!(
        matching(r#"email : "100%""#).await,
        Vec::<String>::new(),
        "% is literal"
    );
    assert_eq!(matching("status = UNCONFIRMED").await.len(), 5);
    assert_eq!(matching("status = USER_STATUS_CONFIRMED").await.len(), 0);
    assert_eq!(
        matching(r#"display_name >= "C" AND display_name < "E""#).await,
        ["carol@example.com", "dave@example.com"]
    );

    let third = &created[2];
    let t = third.create_time.as_ref().unwrap();
    let at = userdir_domain::text::Timestamp::from_seconds_nanos(t.seconds, t.nanos).to_rfc3339();
    assert_eq!(
        emails(&all_pages(&s, &format!(r#"create_time >= "{at}""#), "", 100).await),
        emails(&created[2..])
    );
    assert_eq!(
        emails(&all_pages(&s, &format!(r#"create_time < "{at}""#), "", 100).await),
        emails(&created[..2])
    );

    for (bad, says) in [
        ("nickname = x", "unknown field"),
        ("email = ", "expected a value"),
        ("(email = a", "never closed"),
        ("enabled = maybe", "true or false"),
        ("create_time > \"yesterday\"", "RFC 3339"),
        ("status = SLEEPING", "unknown status"),
        ("email = a OR", "found the end"),
    ] {
        let err = list(&s, req(bad, "", 0, "")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(violation_fields(&err), ["filter"], "{bad}");
        assert!(err.message().contains(says), "{bad}: {}", err.message());
    }
}

async fn page_tokens_are_bound_and_checked(s: TestServer) {
    seed(&s).await;
    let first = list(&s, req("enabled = true", "email", 2, "")).await.unwrap();
    assert!(!first.next_page_token.is_empty());
    let token = first.next_page_token;
    for other in [
        req("enabled = false", "email", 2, &token),
        req("enabled = true", "email desc", 2, &token),
    ] {
        let err = list(&s, other).await.unwrap_err();
        assert_eq!(
            (err.code(), violation_fields(&err)),
            (Code::InvalidArgument, vec!["page_token".to_owned()])
        );
    }
    let mut other_tenant = req("enabled = true", "email", 2, &token);
    s.tenant("globex").await;
    other_tenant.parent = "tenants/globex".into();
    assert_eq!(list(&s, other_tenant).await.unwrap_err().code(), Code::InvalidArgument);
    let mut tampered = token.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        list(&s, req("enabled = true", "email", 2, &tampered))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        list(&s, req("enabled = true", "email", 2, "garbage!"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // The genuine token still works.
    assert_eq!(
        list(&s, req("enabled = true", "email", 2, &token))
            .await
            .unwrap()
            .users
            .len(),
        2
    );
}

async fn paging_while_data_changes_never_repeats(s: TestServer) {
    s.tenant("acme").await;
    let mut originals = Vec::new();
    for i in 0..40 {
        originals.push(
            s.user("acme", &format!("u{i:02}@example.com"), &format!("User {i}"))
                .await,
        );
    }
    for order in ["", "email", "email desc", "create_time desc", "display_name"] {
        let mut seen = HashSet::new();
        let mut token = String::new();
        let mut round = 0;
        loop {
            let page = list(&s, req("", order, 7, &token)).await.unwrap();
            for u in &page.users {
                assert!(
                    seen.insert(u.name.clone()),
                    "{} returned twice with order {order:?}",
                    u.email
                );
            }
            // Between pages: create some users and delete some, ahead of and behind the cursor.
            round += 1;
            s.user(
                "acme",
                &format!("new-{order}-{round}@example.com").replace(' ', ""),
                "New",
            )
            .await;
            s.user(
                "acme",
                &format!("a-{order}-{round}@example.com").replace(' ', ""),
                "A New",
            )
            .await;
            if let Some(victim) = originals.pop() {
                s.users
                    .clone()
                    .delete_user(DeleteUserRequest {
                        name: victim.name,
                        etag: String::new(),
                    })
                    .await
                    .unwrap();
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert!(round > 1);
    }
}

crate::on_both_backends!(
    pages_and_orders,
    filters,
    page_tokens_are_bound_and_checked,
    paging_while_data_changes_never_repeats
);
