//! Exports: one snapshot of a tenant's users, streamed.

use super::directory::{Directory, allow, invalid};
use crate::access::{Action, Caller};
use crate::admission::StreamKind;
use crate::error::DomainError;
use crate::list::UserQuery;
use crate::repo::{TenantRepository, UserRepository, UserSnapshot};
use crate::tenant::TenantId;

impl<R: TenantRepository + UserRepository + crate::repo::SnapshotRepository> Directory<R> {
    /// Starts an export of `parent`'s users matching `filter`, in `order_by`,
    /// over one snapshot taken now.
    pub async fn start_export(
        &self,
        caller: &Caller,
        parent: &str,
        filter: &str,
        order_by: &str,
    ) -> Result<crate::export::Exporter<R::Snapshot>, DomainError> {
        let tenant = invalid(TenantId::from_resource_name("parent", parent))?;
        allow(caller, &tenant, Action::ExportUsers, None)?;
        let query = UserQuery::parse(tenant.as_str(), filter, order_by, 0, "", &self.tokens)?;
        self.repo.get_tenant(&tenant).await?;
        let slot = self.admission.admit(StreamKind::Export, &tenant)?;
        let mut snapshot = self.repo.snapshot().await?;
        // The snapshot's first read: the feed's position and the users agree.
        let cursor = snapshot.change_cursor(&tenant).await?;
        Ok(crate::export::Exporter::new(snapshot, tenant, query, cursor, slot))
    }
}
