//! What the domain needs from persistence. The store crate implements these
//! traits; the rules stay here.

use std::future::Future;

use crate::error::DomainError;
use crate::list::UserQuery;
use crate::tenant::{Tenant, TenantId};
use crate::text::Revision;
use crate::user::{User, UserName};

/// Result alias for repository calls.
pub type RepoResult<T> = Result<T, DomainError>;

/// How to find one user besides its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey {
    /// By [`crate::email::email_key`] form.
    EmailKey(String),
    ExternalId(String),
}

/// Tenant persistence.
pub trait TenantRepository: Send + Sync + 'static {
    /// Inserts a new tenant; `AlreadyExists` when the id is taken.
    fn insert_tenant(&self, tenant: &Tenant) -> impl Future<Output = RepoResult<()>> + Send;
    /// `NotFound` when absent.
    fn get_tenant(&self, id: &TenantId) -> impl Future<Output = RepoResult<Tenant>> + Send;
    /// Tenants with id greater than `after`, ordered by id, at most `limit`.
    fn list_tenants(&self, after: Option<&str>, limit: u32) -> impl Future<Output = RepoResult<Vec<Tenant>>> + Send;
    /// Writes the settings of `tenant` if its stored revision is still `expected`
    /// (`EtagMismatch` otherwise); stores `tenant.revision` as the new revision.
    fn update_tenant(&self, tenant: &Tenant, expected: Revision) -> impl Future<Output = RepoResult<()>> + Send;
}

/// User persistence. Every call is scoped to one tenant.
pub trait UserRepository: Send + Sync + 'static {
    /// Inserts a user, taking a seat: `SeatLimitExceeded` when the tenant is full,
    /// `AlreadyExists` for a taken email key or external id, `NotFound` for a
    /// missing tenant. Atomic under concurrency.
    fn insert_user(&self, user: &User) -> impl Future<Output = RepoResult<()>> + Send;
    fn get_user(&self, name: &UserName) -> impl Future<Output = RepoResult<User>> + Send;
    fn find_user(&self, tenant: &TenantId, key: &UserKey) -> impl Future<Output = RepoResult<User>> + Send;
    /// Writes `user` if its stored revision is still `expected`.
    fn update_user(&self, user: &User, expected: Revision) -> impl Future<Output = RepoResult<()>> + Send;
    /// Deletes a user (and frees its seat), if `expected` is `None` or still current.
    fn delete_user(&self, name: &UserName, expected: Option<Revision>) -> impl Future<Output = RepoResult<()>> + Send;
    /// The users of `tenant` matching `query`, after its cursor, at most `limit`.
    fn list_users(
        &self,
        tenant: &TenantId,
        query: &UserQuery,
        limit: u32,
    ) -> impl Future<Output = RepoResult<Vec<User>>> + Send;
}

/// Liveness of the database, for health checks.
pub trait Ping: Send + Sync + 'static {
    fn ping(&self) -> impl Future<Output = RepoResult<()>> + Send;
}
