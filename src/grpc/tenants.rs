//! `userdir.v1.TenantAdmin`.

use tonic::{Request, Response, Status};
use userdir_domain::Directory;
use userdir_store::Store;

use super::convert::{mask_paths, tenant_settings, tenant_to_pb, user_input, user_to_pb};
use super::{caller, to_status};
use crate::pb::tenant_admin_server::TenantAdmin;
use crate::pb::{
    CreateTenantRequest, GetTenantRequest, ListTenantsRequest, ListTenantsResponse, Tenant,
    TransferTenantOwnershipRequest, TransferTenantOwnershipResponse, UpdateTenantRequest,
};

pub struct TenantAdminService {
    dir: Directory<Store>,
}

impl TenantAdminService {
    pub fn new(dir: Directory<Store>) -> Self {
        Self { dir }
    }
}

#[tonic::async_trait]
impl TenantAdmin for TenantAdminService {
    async fn create_tenant(&self, request: Request<CreateTenantRequest>) -> Result<Response<Tenant>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let settings = tenant_settings(req.tenant.unwrap_or_default());
        let owner = req.initial_owner.map(user_input).transpose().map_err(to_status)?;
        let tenant = self
            .dir
            .create_tenant(&caller, &req.tenant_id, settings, owner)
            .await
            .map_err(to_status)?;
        Ok(Response::new(tenant_to_pb(tenant)))
    }

    async fn get_tenant(&self, request: Request<GetTenantRequest>) -> Result<Response<Tenant>, Status> {
        let caller = caller(&request)?;
        let tenant = self
            .dir
            .get_tenant(&caller, &request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(tenant_to_pb(tenant)))
    }

    async fn list_tenants(
        &self,
        request: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = self
            .dir
            .list_tenants(&caller, req.page_size, &req.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListTenantsResponse {
            tenants: page.items.into_iter().map(tenant_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_tenant(&self, request: Request<UpdateTenantRequest>) -> Result<Response<Tenant>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let tenant = req.tenant.unwrap_or_default();
        let (name, etag) = (tenant.name.clone(), tenant.etag.clone());
        let updated = self
            .dir
            .update_tenant(
                &caller,
                &name,
                tenant_settings(tenant),
                &mask_paths(req.update_mask),
                &etag,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(tenant_to_pb(updated)))
    }

    async fn transfer_tenant_ownership(
        &self,
        request: Request<TransferTenantOwnershipRequest>,
    ) -> Result<Response<TransferTenantOwnershipResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (owner, previous) = self
            .dir
            .transfer_ownership(&caller, &req.tenant, &req.new_owner)
            .await
            .map_err(to_status)?;
        Ok(Response::new(TransferTenantOwnershipResponse {
            owner: Some(user_to_pb(owner)),
            previous_owner: previous.map(user_to_pb),
        }))
    }
}
