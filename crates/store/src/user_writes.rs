//! The only writer of `users`. Every path (single calls, roles and
//! ownership, import batches, FULL_SYNC) writes users through these
//! functions, inside a [`TenantWrite`] (the tenant locked first), and each
//! records the events of what it wrote. The seat check and "the tenant keeps
//! an enabled admin" are written here once.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, ExprTrait, PaginatorTrait,
    QueryFilter, TransactionTrait,
};
use userdir_domain::access::TenantRole;
use userdir_domain::event::{Change, EventType};
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Revision;
use userdir_domain::user::{User, UserId};
use userdir_domain::{DomainError, ResourceKind};

use crate::bulk_insert::{CHUNK, UNNEST_CHUNK, insert_or_fail, insert_unnest};
use crate::db_error;
use crate::entity::user;
use crate::error::user_write_error;
use crate::query::users_by_ids;
use crate::seats::seat_error;
use crate::tenant_write::TenantWrite;
use crate::user_row::{user_from_row, user_to_active};

/// `Precondition LAST_ADMIN` unless the tenant still has an enabled admin or
/// owner, as `txn` sees it (under the tenant's lock).
pub(crate) async fn keep_an_admin(txn: &impl ConnectionTrait, tenant: &TenantId) -> RepoResult<()> {
    let left = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant.as_str()))
        .filter(user::Column::Enabled.eq(true))
        .filter(user::Column::Role.is_in(["admin", "owner"]))
        .count(txn)
        .await
        .map_err(db_error)?;
    if left == 0 {
        return Err(DomainError::Precondition {
            reason: "LAST_ADMIN",
            message: format!(
                "this would leave {} without an enabled administrator (seed 004: there is always at least one); \
                 make another user an admin first",
                tenant.resource_name()
            ),
        });
    }
    Ok(())
}

/// Whether the tenant has a free seat for one more user.
pub(crate) fn seat_free(w: &TenantWrite) -> bool {
    w.seats.free != Some(0)
}

/// Inserts `user` into a free seat ([`seat_free`]) and records `user.created`.
/// A unique violation comes back as the database's error.
pub(crate) async fn insert(w: &mut TenantWrite, user: &User) -> Result<(), DbErr> {
    user::Entity::insert(user_to_active(user))
        .exec_without_returning(&w.txn)
        .await?;
    w.seats.take(1);
    w.record(&Change::user(EventType::UserCreated, user, Vec::new()));
    Ok(())
}

async fn update_row(conn: &impl ConnectionTrait, user: &User, expected: Revision) -> Result<bool, DbErr> {
    let result = user::Entity::update_many()
        .set(user_to_active(user))
        .filter(user::Column::Id.eq(user.id.0))
        .filter(user::Column::TenantId.eq(user.tenant.as_str()))
        .filter(user::Column::Revision.eq(expected.0))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Writes `user` if its stored revision is still `expected`; with
/// `keep_an_admin` behind a savepoint, undone (`LAST_ADMIN`) when the tenant
/// is then left without an enabled admin.
async fn update_guarded(
    conn: &DatabaseTransaction,
    user: &User,
    expected: Revision,
    keep_an_admin: bool,
) -> Result<RepoResult<()>, DbErr> {
    if !keep_an_admin {
        return Ok(if update_row(conn, user, expected).await? {
            Ok(())
        } else {
            Err(stale(user))
        });
    }
    let savepoint = conn.begin().await?;
    if !update_row(&savepoint, user, expected).await? {
        savepoint.rollback().await?;
        return Ok(Err(stale(user)));
    }
    if let Err(last) = keep_an_admin_in(&savepoint, &user.tenant).await? {
        savepoint.rollback().await?;
        return Ok(Err(last));
    }
    savepoint.commit().await?;
    Ok(Ok(()))
}

/// [`keep_an_admin`] with the database's errors apart.
async fn keep_an_admin_in(conn: &impl ConnectionTrait, tenant: &TenantId) -> Result<RepoResult<()>, DbErr> {
    match keep_an_admin(conn, tenant).await {
        Err(DomainError::Precondition { reason, message }) => Ok(Err(DomainError::Precondition { reason, message })),
        Err(e) => Err(DbErr::Custom(e.to_string())),
        Ok(()) => Ok(Ok(())),
    }
}

/// One update of a user, as the write path records it.
pub(crate) struct Update<'a> {
    pub(crate) user: &'a User,
    pub(crate) expected: Revision,
    pub(crate) kind: EventType,
    pub(crate) paths: Vec<String>,
    pub(crate) line: Option<u64>,
    /// The user's image, packed already.
    pub(crate) packed: Option<String>,
    /// The write may leave the tenant without an enabled admin (it disables
    /// or demotes one): refused `LAST_ADMIN` when it would.
    pub(crate) keep_an_admin: bool,
}

/// Writes `u.user` if its stored revision is still `u.expected` (`Ok(Err
/// EtagMismatch)` otherwise). With `keep_an_admin` it runs behind a
/// savepoint and is undone (`LAST_ADMIN`) when the tenant is then left
/// without an enabled admin.
pub(crate) async fn update(w: &mut TenantWrite, u: Update<'_>) -> Result<RepoResult<()>, DbErr> {
    let user = u.user;
    if let Err(refused) = update_guarded(&w.txn, user, u.expected, u.keep_an_admin).await? {
        return Ok(Err(refused));
    }
    match u.packed {
        Some(packed) => {
            let resource = user.name().to_string();
            w.events
                .record_encoded(u.kind, &resource, user.revision.0, &u.paths, u.line, packed);
        }
        None => {
            let mut change = Change::user(u.kind, user, u.paths);
            change.line = u.line;
            w.record(&change);
        }
    }
    Ok(Ok(()))
}

pub(crate) fn stale(user: &User) -> DomainError {
    DomainError::EtagMismatch {
        kind: ResourceKind::User,
        name: user.name().to_string(),
    }
}

/// Deletes the user `id` (if its revision is still `expected`, when given),
/// frees its seat and records `user.deleted` with the user as it was.
/// `None` when no such user (at that revision) was there.
pub(crate) async fn delete(
    w: &mut TenantWrite,
    id: UserId,
    expected: Option<Revision>,
    line: Option<u64>,
) -> RepoResult<Option<User>> {
    let row = user::Entity::find_by_id(id.0)
        .filter(user::Column::TenantId.eq(w.tenant.as_str()))
        .one(&w.txn)
        .await
        .map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    if expected.is_some_and(|r| r.0 != row.revision) {
        return Ok(None);
    }
    let user = user_from_row(row)?;
    user::Entity::delete_many()
        .filter(user::Column::TenantId.eq(w.tenant.as_str()))
        .filter(user::Column::Id.eq(id.0))
        .exec(&w.txn)
        .await
        .map_err(db_error)?;
    w.seats.give_back(1);
    let mut change = Change::user(EventType::UserDeleted, &user, Vec::new());
    change.line = line;
    w.record(&change);
    Ok(Some(user))
}

/// Deletes users (a FULL_SYNC's absent users), frees their seats and
/// records a `user.deleted` for each, with the user as it was.
pub(crate) async fn delete_many(w: &mut TenantWrite, ids: &[uuid::Uuid]) -> RepoResult<u64> {
    let mut deleted = 0u64;
    for chunk in ids.chunks(CHUNK) {
        let backend = w.txn.get_database_backend();
        let rows = user::Entity::find()
            .filter(users_by_ids(backend, &w.tenant, chunk))
            .all(&w.txn)
            .await
            .map_err(db_error)?;
        let result = user::Entity::delete_many()
            .filter(users_by_ids(backend, &w.tenant, chunk))
            .exec(&w.txn)
            .await
            .map_err(db_error)?;
        deleted += result.rows_affected;
        for row in rows {
            let user = user_from_row(row)?;
            w.record(&Change::user(EventType::UserDeleted, &user, Vec::new()));
        }
    }
    w.seats.give_back(deleted);
    Ok(deleted)
}

/// An imported row to create: the user, its line, and its packed image.
pub(crate) struct Create<'a> {
    pub(crate) user: &'a User,
    pub(crate) line: u64,
    pub(crate) packed: String,
}

/// Inserts users with multi-row statements, as many as the seats allow, and
/// records a `user.created` for each; returns how many (the first ones). A
/// unique violation comes back as the database's error: the caller rolls
/// the transaction back and redoes the rows one by one.
pub(crate) async fn insert_many(w: &mut TenantWrite, rows: Vec<Create<'_>>) -> Result<usize, DbErr> {
    let allowed = w
        .seats
        .free
        .map_or(rows.len(), |f| rows.len().min(usize::try_from(f).unwrap_or(usize::MAX)));
    let pg = w.txn.get_database_backend() == DbBackend::Postgres;
    let users: Vec<User> = rows[..allowed].iter().map(|c| c.user.clone()).collect();
    for chunk in users.chunks(if pg { UNNEST_CHUNK } else { CHUNK }) {
        if pg {
            insert_unnest(&w.txn, &w.tenant, chunk).await?;
        } else {
            insert_or_fail(&w.txn, &w.tenant, chunk).await?;
        }
    }
    w.seats.take(allowed as u64);
    for row in rows.into_iter().take(allowed) {
        let resource = row.user.name().to_string();
        w.events.record_encoded(
            EventType::UserCreated,
            &resource,
            row.user.revision.0,
            &[],
            Some(row.line),
            row.packed,
        );
    }
    Ok(allowed)
}

/// Whether an imported update may leave the tenant without an enabled
/// admin (it disables one; an import never changes roles).
pub(crate) fn disables_an_admin(user: &User) -> bool {
    !user.enabled && user.role >= TenantRole::Admin
}

/// An imported row written alone (the row-by-row redo of a bulk write).
pub(crate) struct Row {
    pub(crate) user: User,
    /// `None` for a create.
    pub(crate) expected: Option<Revision>,
    pub(crate) line: u64,
    pub(crate) paths: Vec<String>,
    pub(crate) packed: String,
}

/// Writes `row` behind a savepoint of its own, so that a row that violates
/// a unique constraint fails alone (the inner result); a create takes a
/// seat if one is free. Its event is recorded once the row stands.
pub(crate) async fn write_alone(w: &mut TenantWrite, row: Row) -> RepoResult<RepoResult<()>> {
    if row.expected.is_none() && !seat_free(w) {
        return Ok(Err(no_seat(w)));
    }
    let savepoint = w.txn.begin().await.map_err(db_error)?;
    let written = match row.expected {
        None => user::Entity::insert(user_to_active(&row.user))
            .exec_without_returning(&savepoint)
            .await
            .map(|_| Ok(())),
        Some(expected) => {
            let keep = disables_an_admin(&row.user);
            update_guarded(&savepoint, &row.user, expected, keep).await
        }
    };
    let outcome = match written {
        Ok(outcome) => {
            savepoint.commit().await.map_err(db_error)?;
            outcome
        }
        Err(e) => {
            savepoint.rollback().await.map_err(db_error)?;
            return Ok(Err(user_write_error(
                e,
                row.user.email.as_str(),
                row.user.external_id.as_deref(),
            )));
        }
    };
    if outcome.is_ok() {
        let kind = match row.expected {
            None => {
                w.seats.take(1);
                EventType::UserCreated
            }
            Some(_) => EventType::UserUpdated,
        };
        let resource = row.user.name().to_string();
        w.events.record_encoded(
            kind,
            &resource,
            row.user.revision.0,
            &row.paths,
            Some(row.line),
            row.packed,
        );
    }
    Ok(outcome)
}

/// The seat error of a create the tenant has no seat for.
pub(crate) fn no_seat(w: &TenantWrite) -> DomainError {
    seat_error(&w.tenant, &w.seats)
}

/// Sets the role of user `id` (revision and update time move with it) and
/// returns the user as written; `None` when `only_if` (the role it must
/// have now) or `enabled_only` does not hold, or there is no such user.
pub(crate) async fn set_role(
    w: &mut TenantWrite,
    id: UserId,
    role: TenantRole,
    only_if: Option<TenantRole>,
    enabled_only: bool,
    now: userdir_domain::text::Timestamp,
) -> Result<Option<User>, DbErr> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::Role, Expr::value(role.as_str()))
        .col_expr(user::Column::Revision, Expr::col(user::Column::Revision).add(1))
        .col_expr(user::Column::UpdateTime, Expr::value(now.unix_micros()))
        .filter(user::Column::Id.eq(id.0))
        .filter(user::Column::TenantId.eq(w.tenant.as_str()));
    if let Some(current) = only_if {
        update = update.filter(user::Column::Role.eq(current.as_str()));
    }
    if enabled_only {
        update = update.filter(user::Column::Enabled.eq(true));
    }
    if update.exec(&w.txn).await?.rows_affected != 1 {
        return Ok(None);
    }
    let row = user::Entity::find_by_id(id.0)
        .filter(user::Column::TenantId.eq(w.tenant.as_str()))
        .one(&w.txn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let user = user_from_row(row).map_err(|e| DbErr::Custom(e.to_string()))?;
    w.record(&Change::user(EventType::UserRoleSet, &user, vec!["role".to_owned()]));
    Ok(Some(user))
}
