//! Imports: starting one, and the import history.

use std::sync::Arc;

use super::directory::{Directory, Page, allow, invalid, next_token};
use crate::access::{Action, Caller};
use crate::admission::StreamKind;
use crate::error::DomainError;
use crate::import::engine::Importer;
use crate::import::{ImportJob, ImportOptions};
use crate::list::{SortKey, page_size};
use crate::repo::{ImportRepository, TenantRepository, UserRepository};
use crate::tenant::TenantId;
use crate::text::Timestamp;

impl<R: TenantRepository + UserRepository + ImportRepository> Directory<R> {
    /// Starts an import into `parent` (`tenants/{id}`); its job records the
    /// caller as its actor.
    pub async fn start_import(
        &self,
        caller: &Caller,
        parent: &str,
        options: ImportOptions,
    ) -> Result<Importer<R>, DomainError> {
        let tenant_id = invalid(TenantId::from_resource_name("options.parent", parent))?;
        allow(caller, &tenant_id, Action::ImportUsers, None)?;
        let tenant = self.repo.get_tenant(&tenant_id).await?;
        let slot = self.admission.admit(StreamKind::Import, &tenant_id)?;
        let caller = caller.clone();
        Importer::start(
            Arc::clone(&self.repo),
            tenant,
            options,
            caller,
            self.import_limits,
            slot,
        )
        .await
    }

    /// Marks the RUNNING import jobs whose server stopped (their heartbeat
    /// is older than `lease`) as INTERRUPTED; returns how many. Every replica
    /// runs this now and then with the job lease; a server on a SQLite file,
    /// the only one that can use it, runs it with a zero lease once at start.
    pub async fn interrupt_stale_imports(&self, lease: std::time::Duration) -> Result<u64, DomainError> {
        let stale_before = Timestamp::from_unix_micros(
            Timestamp::now()
                .unix_micros()
                .saturating_sub(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX)),
        );
        let why = "the server running this import stopped before it finished (killed, crashed, or cut off from \
                   the database); the rows it reported stay";
        self.repo.interrupt_import_jobs(stale_before, None, why).await
    }

    pub async fn get_import_job(&self, caller: &Caller, name: &str) -> Result<ImportJob, DomainError> {
        let (tenant, id) = invalid(ImportJob::parse_name("name", name))?;
        allow(caller, &tenant, Action::GetImportJobs, None)?;
        self.repo.get_import_job(&tenant, id).await
    }

    /// The import history of a tenant, newest first.
    pub async fn list_import_jobs(
        &self,
        caller: &Caller,
        parent: &str,
        requested_size: i32,
        page_token: &str,
    ) -> Result<Page<ImportJob>, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::GetImportJobs, None)?;
        let limit = page_size(requested_size)?;
        let scope = format!("{}/importJobs", tenant.resource_name());
        let before = if page_token.is_empty() {
            None
        } else {
            let key = self.tokens.decode(&scope, page_token)?;
            Some(uuid::Uuid::parse_str(&key.id).map_err(|_| DomainError::invalid("page_token", "is damaged"))?)
        };
        self.repo.get_tenant(&tenant).await?;
        let mut items = self.repo.list_import_jobs(&tenant, before, limit + 1).await?;
        let next_page_token = next_token(&mut items, limit, |j| {
            self.tokens.encode(
                &scope,
                SortKey {
                    text: None,
                    int: None,
                    id: j.id.to_string(),
                },
            )
        });
        Ok(Page { items, next_page_token })
    }
}
