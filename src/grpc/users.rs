//! `userdir.v1.UserDirectory`.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use userdir_domain::Directory;
use userdir_domain::repo::UserKey;
use userdir_store::Store;

use super::convert::{mask_paths, role_from_pb, user_input, user_to_pb};
use super::ending::Ending;
use super::exports::{export_format, spawn_export};
use super::imports::{job_to_pb, read_options, spawn_import};
use super::{caller, to_status};
use crate::deadline::Deadline;
use crate::pb::lookup_user_request::Key;
use crate::pb::user_directory_server::UserDirectory;
use crate::pb::{
    CreateUserRequest, DeleteUserRequest, ExportUsersRequest, ExportUsersResponse, GetImportJobRequest, GetUserRequest,
    ImportJob, ImportUsersRequest, ImportUsersResponse, ListImportJobsRequest, ListImportJobsResponse,
    ListUsersRequest, ListUsersResponse, LookupUserRequest, SetUserCapabilitiesRequest, SetUserRoleRequest,
    TestPermissionsRequest, TestPermissionsResponse, UpdateUserRequest, User,
};
use crate::telemetry::metrics::Metrics;

/// Response header of ImportUsers: the name of the import's job.
pub const IMPORT_JOB_HEADER: &str = "x-userdir-import-job";

pub struct UserDirectoryService {
    dir: Directory<Store>,
    /// Becomes true when a shutdown's grace period is over: open imports
    /// and exports end then.
    closing: tokio::sync::watch::Receiver<bool>,
    /// How long an export may wait for a reader that takes nothing.
    export_stall: std::time::Duration,
    /// Rows imported and exported, for the metrics.
    metrics: Metrics,
    /// Asked while a stream runs whether its caller may still go on.
    auth: std::sync::Arc<crate::auth::Auth>,
}

impl UserDirectoryService {
    pub fn new(
        dir: Directory<Store>,
        closing: tokio::sync::watch::Receiver<bool>,
        export_stall: std::time::Duration,
        metrics: Metrics,
        auth: std::sync::Arc<crate::auth::Auth>,
    ) -> Self {
        Self {
            dir,
            closing,
            export_stall,
            metrics,
            auth,
        }
    }
}

#[tonic::async_trait]
impl UserDirectory for UserDirectoryService {
    type ImportUsersStream = ReceiverStream<Result<ImportUsersResponse, Status>>;
    type ExportUsersStream = ReceiverStream<Result<ExportUsersResponse, Status>>;

    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let input = user_input(req.user.unwrap_or_default()).map_err(to_status)?;
        let user = self
            .dir
            .create_user(&caller, &req.parent, input, req.validate_only)
            .await
            .map_err(to_status)?;
        Ok(Response::new(user_to_pb(user)))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&request)?;
        let user = self
            .dir
            .get_user(&caller, &request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(user_to_pb(user)))
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let user = req.user.unwrap_or_default();
        let (name, etag) = (user.name.clone(), user.etag.clone());
        let input = user_input(user).map_err(to_status)?;
        let updated = self
            .dir
            .update_user(&caller, &name, input, &mask_paths(req.update_mask), &etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(user_to_pb(updated)))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Result<Response<()>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        self.dir
            .delete_user(&caller, &req.name, &req.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = self
            .dir
            .list_users(
                &caller,
                &req.parent,
                &req.filter,
                &req.order_by,
                req.page_size,
                &req.page_token,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListUsersResponse {
            users: page.items.into_iter().map(user_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn lookup_user(&self, request: Request<LookupUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let key = match req.key {
            Some(Key::Email(email)) => UserKey::EmailKey(email),
            Some(Key::ExternalId(id)) => UserKey::ExternalId(id),
            None => {
                return Err(to_status(userdir_domain::DomainError::invalid(
                    "key",
                    "set email or external_id",
                )));
            }
        };
        let user = self
            .dir
            .lookup_user(&caller, &req.parent, key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(user_to_pb(user)))
    }

    async fn import_users(
        &self,
        request: Request<Streaming<ImportUsersRequest>>,
    ) -> Result<Response<Self::ImportUsersStream>, Status> {
        let caller = caller(&request)?;
        let deadline = Deadline::of(&request);
        let mut inbound = request.into_inner();
        let (parent, options) = read_options(&mut inbound).await?;
        let importer = self
            .dir
            .start_import(&caller, &parent, options)
            .await
            .map_err(to_status)?;
        let job = importer.job().resource_name();
        let mut response = Response::new(ReceiverStream::new(spawn_import(
            importer,
            inbound,
            Ending::new(self.closing.clone(), deadline).while_valid(&self.auth, &caller),
            self.metrics.clone(),
        )));
        // The job's name comes first, in the response headers, so a client
        // can name it even if the call ends before the summary.
        if let Ok(value) = job.parse() {
            response.metadata_mut().insert(IMPORT_JOB_HEADER, value);
        }
        Ok(response)
    }

    async fn get_import_job(&self, request: Request<GetImportJobRequest>) -> Result<Response<ImportJob>, Status> {
        let caller = caller(&request)?;
        let job = self
            .dir
            .get_import_job(&caller, &request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn list_import_jobs(
        &self,
        request: Request<ListImportJobsRequest>,
    ) -> Result<Response<ListImportJobsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = self
            .dir
            .list_import_jobs(&caller, &req.parent, req.page_size, &req.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListImportJobsResponse {
            import_jobs: page.items.iter().map(job_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn export_users(
        &self,
        request: Request<ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        let caller = caller(&request)?;
        let deadline = Deadline::of(&request);
        let req = request.into_inner();
        let format = export_format(&req).map_err(to_status)?;
        let exporter = self
            .dir
            .start_export(&caller, &req.parent, &req.filter, &req.order_by)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ReceiverStream::new(spawn_export(
            exporter,
            format,
            Ending::new(self.closing.clone(), deadline).while_valid(&self.auth, &caller),
            self.export_stall,
            self.metrics.clone(),
        ))))
    }

    async fn set_user_role(&self, request: Request<SetUserRoleRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role = role_from_pb(req.role).map_err(to_status)?;
        let user = self
            .dir
            .set_user_role(&caller, &req.name, role, &req.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(user_to_pb(user)))
    }

    async fn set_user_capabilities(
        &self,
        request: Request<SetUserCapabilitiesRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let given = req.capabilities.unwrap_or_default();
        let capabilities = userdir_domain::access::Capabilities {
            user_management: given.user_management,
            export_users: given.export_users,
        };
        let user = self
            .dir
            .set_user_capabilities(&caller, &req.name, capabilities, &req.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(user_to_pb(user)))
    }

    async fn test_permissions(
        &self,
        request: Request<TestPermissionsRequest>,
    ) -> Result<Response<TestPermissionsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let permissions = self
            .dir
            .test_permissions(&caller, &req.resource, &req.permissions)
            .await
            .map_err(to_status)?;
        Ok(Response::new(TestPermissionsResponse { permissions }))
    }
}
