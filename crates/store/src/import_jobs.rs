//! Import job records: rows <-> domain, and the counts that the write
//! transactions keep exact.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter};
use userdir_domain::DomainError;
use userdir_domain::import::{ImportCounts, ImportJob, ImportOptions, ImportState};
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use uuid::Uuid;

use crate::db_error;
use crate::entity::import_job;

pub(crate) fn job_to_active(job: &ImportJob) -> import_job::ActiveModel {
    let c = &job.counts;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    import_job::ActiveModel {
        id: Set(job.id),
        tenant_id: Set(job.tenant.as_str().to_owned()),
        actor: Set(job.actor.clone()),
        options: Set(serde_json::to_string(&job.options).unwrap_or_default()),
        state: Set(job.state.as_str().to_owned()),
        start_time: Set(job.start_time.unix_micros()),
        end_time: Set(job.end_time.map(Timestamp::unix_micros)),
        rows: Set(n(c.rows)),
        created: Set(n(c.created)),
        updated: Set(n(c.updated)),
        unchanged: Set(n(c.unchanged)),
        deleted: Set(n(c.deleted)),
        skipped: Set(n(c.skipped)),
        failed: Set(n(c.failed)),
        protected: Set(n(c.protected)),
        error: Set(job.error.clone()),
        heartbeat_time: Set(Some(Timestamp::now().unix_micros())),
    }
}

pub(crate) fn job_from_row(row: import_job::Model) -> RepoResult<ImportJob> {
    let corrupt = |what: &str| DomainError::storage(format!("stored import job {} has an unreadable {what}", row.id));
    let options: ImportOptions = serde_json::from_str(&row.options).map_err(|_| corrupt("options"))?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(ImportJob {
        tenant: TenantId::parse("tenant_id", &row.tenant_id).map_err(|_| corrupt("tenant"))?,
        id: row.id,
        actor: row.actor,
        options,
        state: ImportState::parse(&row.state).ok_or_else(|| corrupt("state"))?,
        start_time: Timestamp::from_unix_micros(row.start_time),
        end_time: row.end_time.map(Timestamp::from_unix_micros),
        counts: ImportCounts {
            rows: n(row.rows),
            created: n(row.created),
            updated: n(row.updated),
            unchanged: n(row.unchanged),
            deleted: n(row.deleted),
            skipped: n(row.skipped),
            failed: n(row.failed),
            protected: n(row.protected),
        },
        error: row.error,
    })
}

/// Adds rows a transaction wrote to job `job`'s counts, inside that
/// transaction, and renews its heartbeat: the counts never lag what was
/// committed, whatever happens to the server after the commit.
pub(crate) async fn add_job_counts(
    conn: &impl ConnectionTrait,
    job: Uuid,
    created: i64,
    updated: i64,
    deleted: i64,
) -> RepoResult<()> {
    if created == 0 && updated == 0 && deleted == 0 {
        return Ok(());
    }
    let add = |column: import_job::Column, n: i64| Expr::col(column).add(n);
    import_job::Entity::update_many()
        .col_expr(import_job::Column::Created, add(import_job::Column::Created, created))
        .col_expr(import_job::Column::Updated, add(import_job::Column::Updated, updated))
        .col_expr(import_job::Column::Deleted, add(import_job::Column::Deleted, deleted))
        .col_expr(
            import_job::Column::HeartbeatTime,
            Expr::value(Timestamp::now().unix_micros()),
        )
        .filter(import_job::Column::Id.eq(job))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}
