//! FULL_SYNC's last step: in one transaction, under the tenant's lock,
//! delete the users the file did not list (but those protected), record
//! them with the job, and refuse when a guard says no (the delete guard,
//! or LAST_ADMIN when no enabled admin would be left).

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use userdir_domain::DomainError;
use userdir_domain::access::TenantRole;
use userdir_domain::repo::{AbsentSweep, Kept, RepoResult, Swept};
use userdir_domain::tenant::TenantId;
use userdir_domain::user::UserId;
use uuid::Uuid;

use crate::bulk_insert::CHUNK;
use crate::entity::{import_deletion, tenant, user};
use crate::import_jobs::add_job_counts;
use crate::tenant_write::TenantWrite;
use crate::tenants::tenant_not_found;
use crate::user_writes;
use crate::{Store, db_error};

/// The users a FULL_SYNC would delete (id, email), those it keeps, and how
/// many of the first are enabled admins or owners.
struct Absent {
    absent: Vec<(Uuid, String)>,
    protected: Vec<(UserId, String, Kept)>,
    admins: u64,
}

/// Reads, page by page in `conn`, the users of `tenant` made before the
/// sweep began that its file did not list.
async fn find_absent(conn: &DatabaseTransaction, tenant: &TenantId, sweep: &AbsentSweep<'_>) -> RepoResult<Absent> {
    let mut found = Absent {
        absent: Vec::new(),
        protected: Vec::new(),
        admins: 0,
    };
    let mut after: Option<Uuid> = None;
    loop {
        let mut page = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .column(user::Column::Email)
            .column(user::Column::Role)
            .column(user::Column::Enabled)
            .filter(user::Column::TenantId.eq(tenant.as_str()))
            .filter(user::Column::CreateTime.lt(sweep.created_before.unix_micros()))
            .order_by_asc(user::Column::Id)
            .limit(5000);
        if let Some(after) = after {
            page = page.filter(user::Column::Id.gt(after));
        }
        let rows: Vec<(Uuid, String, String, bool)> = page.into_tuple().all(conn).await.map_err(db_error)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.0);
        for (id, email, role, enabled) in rows {
            if sweep.keep.contains(&id) {
                continue;
            }
            let role: TenantRole = role
                .parse()
                .map_err(|e| DomainError::storage(format!("stored user {id} has an unreadable role: {e}")))?;
            match sweep.protect.reason(id, role) {
                Some(why) => found.protected.push((UserId(id), email, why)),
                None => {
                    found.admins += u64::from(enabled && role >= TenantRole::Admin);
                    found.absent.push((id, email));
                }
            }
        }
    }
    Ok(found)
}

/// The guards: the delete guard on `users` (the tenant's count), and
/// LAST_ADMIN when no enabled admin or owner would be left.
async fn check(
    conn: &DatabaseTransaction,
    tenant: &TenantId,
    sweep: &AbsentSweep<'_>,
    found: &Absent,
    users: i64,
) -> RepoResult<()> {
    if let Some(guard) = sweep.guard {
        guard.check(found.absent.len() as u64, u64::try_from(users).unwrap_or(0))?;
    }
    if found.admins == 0 {
        return Ok(());
    }
    let admins = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant.as_str()))
        .filter(user::Column::Enabled.eq(true))
        .filter(user::Column::Role.is_in(["admin", "owner"]))
        .count(conn)
        .await
        .map_err(db_error)?;
    if admins <= found.admins {
        return Err(DomainError::Precondition {
            reason: "LAST_ADMIN",
            message: format!(
                "this FULL_SYNC would delete every enabled admin of {} (seed 004: there is always at least \
                 one); nothing was deleted (the file's rows were imported). List an admin in the file, or \
                 set keep_admins",
                tenant.resource_name()
            ),
        });
    }
    Ok(())
}

fn swept(found: Absent) -> Swept {
    Swept {
        deleted: found
            .absent
            .into_iter()
            .map(|(id, email)| (UserId(id), email))
            .collect(),
        protected: found.protected,
    }
}

/// See `ImportRepository::delete_absent_users`.
pub(crate) async fn delete_absent_users(store: &Store, tenant: &TenantId, sweep: AbsentSweep<'_>) -> RepoResult<Swept> {
    if sweep.dry_run {
        // Nothing is written: no lock, so the tenant's writers go on.
        let txn = store.begin_on(store.writer(), "delete_absent_users").await?;
        let row = tenant::Entity::find_by_id(tenant.as_str())
            .one(&txn)
            .await
            .map_err(db_error)?;
        let users = row.ok_or_else(|| tenant_not_found(tenant))?.user_count;
        let found = find_absent(&txn, tenant, &sweep).await?;
        check(&txn, tenant, &sweep, &found, users).await?;
        txn.commit().await.map_err(db_error)?;
        return Ok(swept(found));
    }
    // The tenant's lock: the admins counted stay counted.
    let mut w = TenantWrite::begin(store, tenant, sweep.origin, "delete_absent_users").await?;
    let found = find_absent(&w.txn, tenant, &sweep).await?;
    check(&w.txn, tenant, &sweep, &found, w.seats.users).await?;
    let ids: Vec<Uuid> = found.absent.iter().map(|(id, _)| *id).collect();
    let deleted = user_writes::delete_many(&mut w, &ids).await?;
    // Which users, and how many, go with the deletion: a server that dies
    // before replying leaves a job that says what it deleted.
    for chunk in found.absent.chunks(CHUNK) {
        let rows = chunk.iter().map(|(id, email)| import_deletion::ActiveModel {
            job_id: Set(sweep.job),
            user_id: Set(*id),
            tenant_id: Set(tenant.as_str().to_owned()),
            email: Set(email.clone()),
        });
        import_deletion::Entity::insert_many(rows)
            .exec_without_returning(&w.txn)
            .await
            .map_err(db_error)?;
    }
    add_job_counts(&w.txn, sweep.job, 0, 0, i64::try_from(deleted).unwrap_or(i64::MAX)).await?;
    w.commit(store).await?;
    store.checkpoint_soon();
    Ok(swept(found))
}
