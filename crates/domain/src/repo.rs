//! What the domain needs from persistence. The store crate implements these
//! traits; the rules stay here.

use std::collections::HashSet;
use std::future::Future;

use uuid::Uuid;

use crate::access::TenantRole;
use crate::apikey::ApiKey;
use crate::error::DomainError;
use crate::event::{EventType, Origin};
use crate::import::{DeleteGuard, ImportJob};
use crate::list::UserQuery;
use crate::tenant::{Tenant, TenantId};
use crate::text::{Revision, Timestamp};
use crate::user::{User, UserId, UserName};

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
    /// Inserts a new tenant (its feed starts with `tenant.created`);
    /// `AlreadyExists` when the id is taken.
    fn insert_tenant(&self, tenant: &Tenant, origin: &Origin) -> impl Future<Output = RepoResult<()>> + Send;
    /// `NotFound` when absent.
    fn get_tenant(&self, id: &TenantId) -> impl Future<Output = RepoResult<Tenant>> + Send;
    /// Tenants with id greater than `after`, ordered by id, at most `limit`.
    fn list_tenants(&self, after: Option<&str>, limit: u32) -> impl Future<Output = RepoResult<Vec<Tenant>>> + Send;
    /// Writes the settings of `tenant` if its stored revision is still `expected`
    /// (`EtagMismatch` otherwise); stores `tenant.revision` as the new
    /// revision, and records `tenant.updated` writing `paths`.
    fn update_tenant(
        &self,
        tenant: &Tenant,
        expected: Revision,
        paths: Vec<String>,
        origin: &Origin,
    ) -> impl Future<Output = RepoResult<()>> + Send;
}

/// User persistence. Every call is scoped to one tenant.
pub trait UserRepository: Send + Sync + 'static {
    /// Inserts a user, taking a seat: `SeatLimitExceeded` when the tenant is full,
    /// `AlreadyExists` for a taken email key or external id, `NotFound` for a
    /// missing tenant. Atomic under concurrency. Records `user.created`.
    fn insert_user(&self, user: &User, origin: &Origin) -> impl Future<Output = RepoResult<()>> + Send;
    fn get_user(&self, name: &UserName) -> impl Future<Output = RepoResult<User>> + Send;
    fn find_user(&self, tenant: &TenantId, key: &UserKey) -> impl Future<Output = RepoResult<User>> + Send;
    /// Writes `update.user` if its stored revision is still `expected`, and
    /// records its event. With `keep_an_admin` (the write demotes or
    /// disables an admin) it is refused `Precondition LAST_ADMIN` when no
    /// enabled admin or owner would remain in the tenant, decided under the
    /// tenant's lock so two such writes at once cannot both pass.
    fn update_user(&self, update: UserUpdate<'_>) -> impl Future<Output = RepoResult<()>> + Send;
    /// Deletes a user (and frees its seat), if `expected` is `None` or still
    /// current; `keep_an_admin` as for [`Self::update_user`]. Records
    /// `user.deleted`.
    fn delete_user(
        &self,
        name: &UserName,
        expected: Option<Revision>,
        keep_an_admin: bool,
        origin: &Origin,
    ) -> impl Future<Output = RepoResult<()>> + Send;
    /// Makes `to` the owner of `tenant`, and `from` (the owner now; `None`:
    /// the tenant has none) an admin, in one transaction at `now`.
    /// `Conflict OWNER_CHANGED` when the owner is no longer `from`;
    /// `Precondition USER_DISABLED` when `to` is disabled; `NotFound` when
    /// `to` is not a user of the tenant.
    fn transfer_ownership(
        &self,
        tenant: &TenantId,
        from: Option<UserId>,
        to: UserId,
        now: Timestamp,
        origin: &Origin,
    ) -> impl Future<Output = RepoResult<()>> + Send;
    /// The tenant's owner, if it has one.
    fn find_owner(&self, tenant: &TenantId) -> impl Future<Output = RepoResult<Option<User>>> + Send;
    /// The users of `tenant` matching `query`, after its cursor, at most `limit`.
    fn list_users(
        &self,
        tenant: &TenantId,
        query: &UserQuery,
        limit: u32,
    ) -> impl Future<Output = RepoResult<Vec<User>>> + Send;
}

/// One update of a user, and what its event says.
#[derive(Debug, Clone)]
pub struct UserUpdate<'a> {
    pub user: &'a User,
    pub expected: Revision,
    /// The write may leave the tenant without an enabled admin.
    pub keep_an_admin: bool,
    /// `user.updated`, `user.role_set`, `user.capabilities_set`.
    pub kind: EventType,
    /// The fields it writes.
    pub paths: Vec<String>,
    pub origin: &'a Origin,
}

/// Which API keys a list reads: by id, after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    /// One tenant's keys, or (`None`) every key.
    pub tenant: Option<TenantId>,
    pub show_revoked: bool,
    pub after: Option<Uuid>,
    pub limit: usize,
}

/// Keys written (made, revoked) after a change number, for servers that
/// hold keys in memory and re-read only what changed.
#[derive(Debug, Clone, Default)]
pub struct KeyChanges {
    /// The keys as written, in change order.
    pub keys: Vec<ApiKey>,
    /// Rows that changed but do not decode (a hand-edited row): the server
    /// forgets these keys, so they open nothing, and logs their ids.
    pub undecodable: Vec<Uuid>,
    /// The highest change number read (the next read starts after it).
    pub last: i64,
}

/// How a revocation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Now,
    /// Revoked before, or no such key: nothing changed.
    Unchanged,
    /// Refused: it is the last live operator key with the admin scope, and
    /// without one nobody can administer the installation.
    LastOperatorKey,
}

/// API keys: only their hashes are stored. Every write takes one lock (see
/// the store's migration 11), so the checks made under it hold under races.
pub trait ApiKeyRepository: Send + Sync + 'static {
    /// A new key (its id is new), unless its tenant (`None`: operators)
    /// already holds `quota` live keys: then `Exhausted` `API_KEY_QUOTA`.
    /// A tenant's key records `api_key.created`.
    fn insert_api_key(&self, key: &ApiKey, quota: u32, origin: &Origin) -> impl Future<Output = RepoResult<()>> + Send;
    /// One key, revoked or not.
    fn get_api_key(&self, id: Uuid) -> impl Future<Output = RepoResult<Option<ApiKey>>> + Send;
    /// Keys by id, as `query` says.
    fn list_api_keys(&self, query: &KeyQuery) -> impl Future<Output = RepoResult<Vec<ApiKey>>> + Send;
    /// Whether a live operator key with the admin scope is stored.
    fn has_operator_admin_key(&self, now: Timestamp) -> impl Future<Output = RepoResult<bool>> + Send;
    /// Marks a key revoked at `at`, unless that would leave no live operator
    /// key with the admin scope.
    /// A tenant's key records `api_key.revoked`.
    fn revoke_api_key(
        &self,
        id: Uuid,
        at: Timestamp,
        origin: &Origin,
    ) -> impl Future<Output = RepoResult<Revoked>> + Send;
    /// Keys written after change number `since` (every key for -1).
    fn api_key_changes(&self, since: i64) -> impl Future<Output = RepoResult<KeyChanges>> + Send;
    /// Records when keys were last used (a later time only).
    fn touch_api_keys(&self, used: &[(Uuid, Timestamp)]) -> impl Future<Output = RepoResult<()>> + Send;
}

/// Which events a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub tenant: TenantId,
    pub order: EventOrder,
    pub filter: crate::event_filter::EventFilter,
    pub limit: u32,
}

/// The order of an event read, and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOrder {
    /// The change feed: numbers after `after` and at most `upto`, oldest first.
    Ascending { after: i64, upto: i64 },
    /// The audit log: numbers below `before` (all with `None`), newest first.
    Descending { before: Option<i64> },
}

/// Where a tenant's change feed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedHead {
    /// Changes when the feed restarts (a restore); cursors name it.
    pub epoch: i64,
    /// The number of the last event (0: none yet).
    pub last: i64,
    /// The number of the oldest event kept (`last + 1` when none is).
    pub oldest: i64,
}

/// Events: read by the audit log and the change feed, purged past their
/// tenant's retention. Written only by the store's write paths.
pub trait EventRepository: Send + Sync + 'static {
    fn list_events(&self, query: &EventQuery) -> impl Future<Output = RepoResult<Vec<crate::event::Event>>> + Send;
    /// Event `seq` of `tenant`, if it is kept.
    fn get_event(
        &self,
        tenant: &TenantId,
        seq: i64,
    ) -> impl Future<Output = RepoResult<Option<crate::event::Event>>> + Send;
    /// `NotFound` for an unknown tenant.
    fn feed_head(&self, tenant: &TenantId) -> impl Future<Output = RepoResult<FeedHead>> + Send;
    /// Deletes up to `limit` events older, at `now`, than their tenant's
    /// retention (its `audit_retention_days`, or `default_days`), oldest
    /// first; returns how many.
    fn purge_events(
        &self,
        now: Timestamp,
        default_days: u32,
        limit: u32,
    ) -> impl Future<Output = RepoResult<u64>> + Send;
    /// Moves whenever events may have been written (a hint: readers read
    /// the events themselves, and poll too).
    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Liveness of the database, for health checks.
pub trait Ping: Send + Sync + 'static {
    fn ping(&self) -> impl Future<Output = RepoResult<()>> + Send;
}

/// Import persistence: job records, the FULL_SYNC lock, batch reads and writes.
pub trait ImportRepository: Send + Sync + 'static {
    /// Records `import.started`.
    fn insert_import_job(&self, job: &ImportJob, origin: &Origin) -> impl Future<Output = RepoResult<()>> + Send;
    /// Overwrites state, end time, error and counts of a job, and renews its
    /// heartbeat; except for dry runs, `created`, `updated` and `deleted`
    /// stay as the write transactions counted them. The write that ends a
    /// running job records `import.finished`.
    fn update_import_job(&self, job: &ImportJob, origin: &Origin) -> impl Future<Output = RepoResult<()>> + Send;
    /// Renews the heartbeat of a running job.
    fn touch_import_job(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: Timestamp,
    ) -> impl Future<Output = RepoResult<()>> + Send;
    /// Marks RUNNING jobs whose heartbeat is older than `stale_before` (all
    /// of them with `job`, or just that one) as INTERRUPTED with `why`;
    /// returns how many.
    fn interrupt_import_jobs(
        &self,
        stale_before: Timestamp,
        job: Option<(&TenantId, Uuid)>,
        why: &str,
    ) -> impl Future<Output = RepoResult<u64>> + Send;
    fn get_import_job(&self, tenant: &TenantId, id: Uuid) -> impl Future<Output = RepoResult<ImportJob>> + Send;
    /// Jobs of a tenant, newest first, with id below `before`, at most `limit`.
    fn list_import_jobs(
        &self,
        tenant: &TenantId,
        before: Option<Uuid>,
        limit: u32,
    ) -> impl Future<Output = RepoResult<Vec<ImportJob>>> + Send;

    /// Takes the tenant's FULL_SYNC lock for `job` if it is free or its holder
    /// last refreshed it before `stale_before`. Returns the previous holder
    /// when a stale lock was taken over, `Err(AlreadyRunning)` when it is held.
    fn acquire_sync_lock(
        &self,
        tenant: &TenantId,
        job: Uuid,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> impl Future<Output = RepoResult<SyncLock>> + Send;
    /// Refreshes the lock; `false` when `job` no longer holds it.
    fn refresh_sync_lock(
        &self,
        tenant: &TenantId,
        job: Uuid,
        now: Timestamp,
    ) -> impl Future<Output = RepoResult<bool>> + Send;
    fn release_sync_lock(&self, tenant: &TenantId, job: Uuid) -> impl Future<Output = RepoResult<()>> + Send;

    /// Users of `tenant` whose email key, external id or id is in the lists.
    fn find_import_matches(
        &self,
        tenant: &TenantId,
        email_keys: &[String],
        external_ids: &[String],
        ids: &[Uuid],
    ) -> impl Future<Output = RepoResult<Vec<User>>> + Send;

    /// The bulk write of an import in progress: a transaction that the
    /// import's writer feeds batch after batch, until it commits.
    type ImportWrite: ImportWrite;

    /// Opens a bulk write of users of `tenant` for import `job` (its seats
    /// are held until the write commits or is dropped). The commit adds the
    /// rows it created and updated to the job's counts.
    fn begin_import_write(
        &self,
        tenant: &TenantId,
        job: Uuid,
        origin: &Origin,
    ) -> impl Future<Output = RepoResult<Self::ImportWrite>> + Send;

    /// Whether a single-user write (CreateUser, UpdateUser...) is waiting for
    /// the writer an import holds: the import then commits what it has at
    /// its next step instead of growing its transaction, so that write takes
    /// its turn. False where imports and other writes do not queue for one
    /// writer.
    fn writer_wanted(&self) -> bool {
        false
    }

    /// FULL_SYNC: in one transaction, deletes every user of `tenant` created
    /// before `sweep.created_before` whose id is not in `sweep.keep` and
    /// whom `sweep.protect` does not keep, records them (id and email) with
    /// the job and adds them to its `deleted` count, and returns them with
    /// the users protected. With `dry_run` nothing is deleted or recorded.
    /// When `guard` refuses that many deletions of the tenant's users
    /// (counted under the same lock), nothing is deleted and its error is
    /// returned; so too (`LAST_ADMIN`) when the deletions would leave the
    /// tenant without an enabled admin or owner.
    fn delete_absent_users(
        &self,
        tenant: &TenantId,
        sweep: AbsentSweep<'_>,
    ) -> impl Future<Output = RepoResult<Swept>> + Send;
}

/// What a FULL_SYNC's deletion is told: which users the file listed, who
/// stays anyway, and its guards.
#[derive(Debug, Clone, Copy)]
pub struct AbsentSweep<'a> {
    pub job: Uuid,
    pub created_before: Timestamp,
    pub keep: &'a HashSet<Uuid>,
    pub protect: &'a Protection,
    pub guard: Option<DeleteGuard>,
    pub dry_run: bool,
    /// Whose deletions they are (their events name the job).
    pub origin: &'a Origin,
}

/// Why a FULL_SYNC keeps a user its file does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The owner is never deleted.
    Owner,
    /// The user who runs the FULL_SYNC.
    ActingUser,
    /// An admin, with `keep_admins`.
    KeepAdmins,
    /// The caller may not delete users of this role.
    MissingPermission,
}

impl Kept {
    /// The result's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Kept::Owner => "OWNER",
            Kept::ActingUser => "ACTING_USER",
            Kept::KeepAdmins => "KEEP_ADMINS",
            Kept::MissingPermission => "MISSING_PERMISSION",
        }
    }

    /// The result's `message`.
    pub fn message(self) -> &'static str {
        match self {
            Kept::Owner => {
                "the tenant's owner is never deleted; the owner first hands the role on (TransferTenantOwnership)"
            }
            Kept::ActingUser => "the user who runs the FULL_SYNC is never deleted by it",
            Kept::KeepAdmins => "an admin, and keep_admins is set: admins absent from the file stay",
            Kept::MissingPermission => {
                "the caller may not delete this user (users.delete): their role is above what the caller manages"
            }
        }
    }
}

/// Users a FULL_SYNC keeps although its file does not list them, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// By id, asked first.
    pub users: Vec<(Uuid, Kept)>,
    /// By role.
    pub roles: Vec<(TenantRole, Kept)>,
}

impl Protection {
    /// Why the user `id` of `role` stays, if it does.
    pub fn reason(&self, id: Uuid, role: TenantRole) -> Option<Kept> {
        let by_id = self.users.iter().find(|(u, _)| *u == id).map(|(_, why)| *why);
        by_id.or_else(|| self.roles.iter().find(|(r, _)| *r == role).map(|(_, why)| *why))
    }
}

/// The users a FULL_SYNC deleted and those it kept, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub deleted: Vec<(UserId, String)>,
    pub protected: Vec<(UserId, String, Kept)>,
}

/// One transaction of an import's writes; dropped without [`Self::commit`],
/// it rolls back.
pub trait ImportWrite: Send + 'static {
    /// Adds creates and updates to the transaction. Creates take seats while
    /// the seat limit allows (`SeatLimitExceeded` for the rest, in order);
    /// updates apply if the stored revision is still the expected one.
    fn write(
        &mut self,
        creates: &[Imported],
        updates: &[(Imported, Revision)],
    ) -> impl Future<Output = RepoResult<()>> + Send;

    /// Commits, and returns one result per row written, in the order written
    /// (each call's creates, then its updates). A row that fails leaves the
    /// others of the transaction intact.
    fn commit(self) -> impl Future<Output = RepoResult<Vec<RepoResult<()>>>> + Send;
}

/// An imported row to write: the user, its line, and the fields an update
/// changes (empty for a create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub user: User,
    pub line: u64,
    pub paths: Vec<String>,
}

/// Result of taking the FULL_SYNC lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncLock {
    Acquired,
    /// Taken over from a job that stopped refreshing it (its server died).
    TakenOver(Uuid),
    /// Another FULL_SYNC of the tenant is running.
    Held(Uuid),
}

/// A consistent read view of the database, for exports.
pub trait SnapshotRepository: Send + Sync + 'static {
    type Snapshot: UserSnapshot;
    /// Starts a read-only snapshot; it holds one connection until dropped.
    fn snapshot(&self) -> impl Future<Output = RepoResult<Self::Snapshot>> + Send;
}

/// Where an export's reader sends pages: `Ok(Some(page))` for each page,
/// then `Ok(None)` at the end, or one `Err` that ends it. A channel closed
/// without `Ok(None)` is a cut export, never a complete one.
pub type PageSender = tokio::sync::mpsc::Sender<RepoResult<Option<Vec<User>>>>;

/// Reads inside one snapshot.
pub trait UserSnapshot: Send + Sized + 'static {
    /// The change feed's cursor of `tenant` as the snapshot sees it.
    fn change_cursor(&mut self, tenant: &TenantId) -> impl Future<Output = RepoResult<crate::feed::Cursor>> + Send;

    /// How many users of `tenant` `query` selects, inside the snapshot,
    /// counting at most `cap` of them.
    fn count_users(
        &mut self,
        tenant: &TenantId,
        query: &UserQuery,
        cap: u64,
    ) -> impl Future<Output = RepoResult<u64>> + Send;

    /// As [`UserRepository::list_users`], inside the snapshot.
    fn list_users(
        &mut self,
        tenant: &TenantId,
        query: &UserQuery,
        limit: u32,
    ) -> impl Future<Output = RepoResult<Vec<User>>> + Send;

    /// Sends every user of `tenant` that `query` selects, in its order, in
    /// pages of at most `size`, to `pages` (see [`PageSender`]); stops when
    /// the receiver is gone. By default a keyset walk over
    /// [`Self::list_users`]; a store that can stream rows does better.
    fn send_pages(
        self,
        tenant: TenantId,
        query: UserQuery,
        size: u32,
        pages: PageSender,
    ) -> impl Future<Output = ()> + Send {
        walk_pages(self, tenant, query, size, pages)
    }
}

/// Sends pages of `query`'s users to `pages` by a keyset walk over
/// [`UserSnapshot::list_users`], one page per query.
pub async fn walk_pages<S: UserSnapshot>(
    mut snapshot: S,
    tenant: TenantId,
    mut query: UserQuery,
    size: u32,
    pages: PageSender,
) {
    loop {
        let users = match snapshot.list_users(&tenant, &query, size).await {
            Ok(users) => users,
            Err(e) => {
                let _ = pages.send(Err(e)).await;
                return;
            }
        };
        let last_page = users.len() < size as usize;
        if let Some(last) = users.last() {
            query.after = Some(crate::list::sort_key(last, query.order.field));
            // A failed send: the caller is gone.
            if pages.send(Ok(Some(users))).await.is_err() {
                return;
            }
        }
        if last_page {
            let _ = pages.send(Ok(None)).await;
            return;
        }
    }
}
