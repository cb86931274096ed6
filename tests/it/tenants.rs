//! TenantAdmin: create, get, list, update with etag, custom attribute schema.

use tonic::Code;
use userdir::pb::{CustomAttributeDefinition, GetTenantRequest, ListTenantsRequest, Tenant, UpdateTenantRequest};

use crate::common::{TestServer, reason, violation_fields};

async fn tenant_lifecycle(s: TestServer) {
    let created = s
        .tenant_with(
            "acme",
            Tenant {
                display_name: "Acme Corp".into(),
                seat_limit: 10,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(created.name, "tenants/acme");
    assert_eq!(created.custom_attributes.len(), 10, "all ten slots are listed");
    assert_eq!(created.custom_attributes[0].key, "custom_01");
    assert!(created.custom_attributes.iter().all(|d| d.visible && !d.required));

    let mut admin = s.tenants.clone();
    let dup = userdir::pb::CreateTenantRequest {
        tenant_id: "acme".into(),
        tenant: Some(Tenant {
            display_name: "X".into(),
            ..Default::default()
        }),
        initial_owner: None,
    };
    assert_eq!(admin.create_tenant(dup).await.unwrap_err().code(), Code::AlreadyExists);
    for bad_id in ["A", "Acme", "1acme", "acme-", "ac me", ""] {
        let req = userdir::pb::CreateTenantRequest {
            tenant_id: bad_id.into(),
            tenant: Some(Tenant {
                display_name: "X".into(),
                ..Default::default()
            }),
            initial_owner: None,
        };
        let err = admin.create_tenant(req).await.unwrap_err();
        assert_eq!(
            (err.code(), violation_fields(&err)),
            (Code::InvalidArgument, vec!["tenant_id".to_owned()]),
            "{bad_id}"
        );
    }
    let no_name = userdir::pb::CreateTenantRequest {
        tenant_id: "nameless".into(),
        tenant: None,
        initial_owner: None,
    };
    assert_eq!(
        violation_fields(&admin.create_tenant(no_name).await.unwrap_err()),
        ["display_name"]
    );

    let update = UpdateTenantRequest {
        tenant: Some(Tenant {
            name: "tenants/acme".into(),
            etag: created.etag.clone(),
            display_name: "ignored".into(),
            custom_attributes: vec![CustomAttributeDefinition {
                key: "custom_02".into(),
                label: "部署".into(),
                required: true,
                visible: false,
            }],
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["custom_attributes".into()],
        }),
    };
    let updated = admin.update_tenant(update.clone()).await.unwrap().into_inner();
    assert_eq!(updated.display_name, "Acme Corp");
    assert_eq!(
        updated.custom_attributes[1],
        CustomAttributeDefinition {
            key: "custom_02".into(),
            label: "部署".into(),
            required: true,
            visible: false
        }
    );
    assert_eq!(updated.seat_limit, 10);
    let err = admin.update_tenant(update).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Aborted, "ETAG_MISMATCH"));

    let bad_slot = UpdateTenantRequest {
        tenant: Some(Tenant {
            name: "tenants/acme".into(),
            custom_attributes: vec![CustomAttributeDefinition {
                key: "custom_11".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        update_mask: None,
    };
    assert_eq!(
        violation_fields(&admin.update_tenant(bad_slot).await.unwrap_err()),
        ["custom_attributes.custom_11"]
    );

    let got = admin
        .get_tenant(GetTenantRequest {
            name: "tenants/acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, updated);
    let missing = admin
        .get_tenant(GetTenantRequest {
            name: "tenants/nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

async fn list_tenants_pages(s: TestServer) {
    for id in ["delta", "alpha", "charlie", "bravo", "echo"] {
        s.tenant(id).await;
    }
    let mut admin = s.tenants.clone();
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_tenants(ListTenantsRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.tenants.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        [
            "tenants/alpha",
            "tenants/bravo",
            "tenants/charlie",
            "tenants/delta",
            "tenants/echo"
        ]
    );
    let bad = admin
        .list_tenants(ListTenantsRequest {
            page_size: 2,
            page_token: "nope".into(),
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
}

crate::on_both_backends!(tenant_lifecycle, list_tenants_pages);
