//! `userdir.v1.ApiKeys`.

use tonic::{Request, Response, Status};
use userdir_domain::access::{Scope, Scopes};
use userdir_domain::apikey::ApiKey;
use userdir_domain::keys::{KeyRequest, key_resource_name};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use userdir_domain::user::UserName;
use userdir_domain::{Directory, DomainError};
use userdir_store::Store;

use super::convert::timestamp;
use super::{caller, to_status};
use crate::pb;
use crate::pb::api_keys_server::ApiKeys;

pub struct ApiKeysService {
    dir: Directory<Store>,
    /// Re-read after a change, so it holds on this server at once (and on
    /// the others within their refresh).
    auth: std::sync::Arc<crate::auth::Auth>,
}

impl ApiKeysService {
    pub fn new(dir: Directory<Store>, auth: std::sync::Arc<crate::auth::Auth>) -> Self {
        Self { dir, auth }
    }
}

const SCOPES: [(pb::Scope, Scope); 5] = [
    (pb::Scope::Read, Scope::Read),
    (pb::Scope::Write, Scope::Write),
    (pb::Scope::Import, Scope::Import),
    (pb::Scope::Export, Scope::Export),
    (pb::Scope::Admin, Scope::Admin),
];

fn scopes_from_pb(raw: &[i32]) -> Result<Scopes, DomainError> {
    let mut scopes = Vec::new();
    for value in raw {
        let scope = SCOPES
            .iter()
            .find(|(p, _)| *p as i32 == *value)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                DomainError::invalid(
                    "api_key.scopes",
                    format!("{value} is not a scope: use READ, WRITE, IMPORT, EXPORT or ADMIN"),
                )
            })?;
        scopes.push(scope);
    }
    Ok(Scopes::of(&scopes))
}

pub fn key_to_pb(key: ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        name: key_resource_name(key.id),
        display_name: key.name,
        tenant: key.tenant.as_ref().map(TenantId::resource_name).unwrap_or_default(),
        scopes: SCOPES
            .iter()
            .filter(|(_, s)| key.scopes.has(*s))
            .map(|(p, _)| *p as i32)
            .collect(),
        act_as_users: key.act_as_users,
        creator: key.creator,
        create_time: timestamp(key.create_time),
        expire_time: key.expire_time.and_then(timestamp),
        last_used_time: key.last_used_time.and_then(timestamp),
        revoke_time: key.revoke_time.and_then(timestamp),
        user: match (&key.tenant, key.user) {
            (Some(tenant), Some(id)) => UserName {
                tenant: tenant.clone(),
                id,
            }
            .to_string(),
            _ => String::new(),
        },
    }
}

#[tonic::async_trait]
impl ApiKeys for ApiKeysService {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let key = request.into_inner().api_key.unwrap_or_default();
        let request = KeyRequest {
            display_name: key.display_name,
            tenant: key.tenant,
            scopes: scopes_from_pb(&key.scopes).map_err(to_status)?,
            act_as_users: key.act_as_users,
            expire_time: key
                .expire_time
                .map(|t| Timestamp::from_seconds_nanos(t.seconds, t.nanos)),
            user: key.user,
        };
        let created = self.dir.create_api_key(&caller, request).await.map_err(to_status)?;
        self.auth.refresh().await;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(key_to_pb(created.key)),
            token: created.token,
        }))
    }

    async fn get_api_key(&self, request: Request<pb::GetApiKeyRequest>) -> Result<Response<pb::ApiKey>, Status> {
        let caller = caller(&request)?;
        let key = self
            .dir
            .get_api_key(&caller, &request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(key_to_pb(key)))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = self
            .dir
            .list_api_keys(&caller, &req.tenant, req.show_revoked, req.page_size, &req.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: page.items.into_iter().map(key_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Result<Response<pb::ApiKey>, Status> {
        let caller = caller(&request)?;
        let key = self
            .dir
            .revoke_api_key(&caller, &request.into_inner().name)
            .await
            .map_err(to_status)?;
        self.auth.refresh().await;
        Ok(Response::new(key_to_pb(key)))
    }
}
