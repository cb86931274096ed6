//! `ImportRepository` on sea-orm: job records, the FULL_SYNC lock, and batch
//! reads and writes of users.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::LazyLock;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::extension::postgres::PgFunc;
use sea_orm::sea_query::{ArrayType, Expr, Value};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, ExprTrait, IdenStatic,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, SqlErr, Statement, TransactionTrait,
};
use userdir_domain::import::{ImportCounts, ImportJob, ImportOptions, ImportState};
use userdir_domain::repo::{ImportRepository, ImportWrite, RepoResult, SyncLock};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::{Revision, Timestamp};
use userdir_domain::user::{User, UserId};
use userdir_domain::{DomainError, ResourceKind};
use uuid::Uuid;

use crate::convert::{ROW_COLUMNS, select_row_columns, user_by_index, user_to_active};
use crate::entity::{import_job, tenant, user};
use crate::error::user_write_error;
use crate::tenants::tenant_not_found;
use crate::{Store, db_error};

/// The columns of a user ([`ROW_COLUMNS`], as [`unpack_user`] reads them) as one SQLite text value,
/// separated by U+001F (unit separator); [`PACK_SQLITE`] joins users with
/// U+001E (record separator). SQLite hands rows over from its own thread one
/// value at a time, so a batch comes back as one value; PostgreSQL sends
/// typed rows ([`select_row_columns`]), cheaper for it to produce. Stored
/// text never holds either separator: the domain refuses control characters
/// in every field, and a record with a wrong number of fields is reported as
/// unreadable, never misread. Joining text is cheaper on both sides than the
/// JSON arrays this replaced (SQLite's `json_array`, then `serde_json`: 16% of
/// the server's CPU in an unchanged re-import).
pub(crate) static ROW_SQLITE: LazyLock<String> = LazyLock::new(|| {
    let fields: Vec<&str> = ROW_COLUMNS
        .iter()
        .map(|column| match column {
            user::Column::Id => "hex(id)",
            // `concat_ws` skips NULLs: an unset external id packs as '', a set one as '=' || id.
            user::Column::ExternalId => "ifnull('=' || external_id, '')",
            column => column.as_str(),
        })
        .collect();
    format!("concat_ws(char(31), {})", fields.join(", "))
});
static PACK_SQLITE: LazyLock<String> = LazyLock::new(|| format!("group_concat({}, char(30))", *ROW_SQLITE));

/// Parses users of `tenant` packed by [`PACK_SQLITE`] (`None`: no users).
pub(crate) fn unpack_users(packed: Option<String>, tenant: &TenantId) -> RepoResult<Vec<User>> {
    match packed {
        None => Ok(Vec::new()),
        Some(packed) => packed
            .split('\u{1e}')
            .map(|record| unpack_user(record, tenant))
            .collect(),
    }
}

/// One user of [`ROW_SQLITE`].
fn unpack_user(record: &str, tenant: &TenantId) -> RepoResult<User> {
    let fields: Vec<&str> = record.split('\u{1f}').collect();
    // `split` yields at least one field: the id, or what stands in its place.
    let corrupt = |what: &str| DomainError::storage(format!("stored user {} has an unreadable {what}", fields[0]));
    let [id, email, display_name, enabled, status, external_id, rest @ ..] = fields.as_slice() else {
        return Err(corrupt("packed row"));
    };
    let [texts @ .., created, updated, revision] = rest else {
        return Err(corrupt("packed row"));
    };
    if texts.len() != 20 {
        return Err(corrupt("packed row"));
    }
    let strings = |values: &[&str]| -> [String; 10] { std::array::from_fn(|i| values[i].to_owned()) };
    let number = |what: &str, v: &str| v.parse::<i64>().map_err(|_| corrupt(what));
    Ok(User {
        tenant: tenant.clone(),
        id: UserId(Uuid::parse_str(id).map_err(|_| corrupt("id"))?),
        email: userdir_domain::email::Email::from_trusted((*email).to_owned()),
        display_name: (*display_name).to_owned(),
        enabled: number("enabled flag", enabled)? != 0,
        status: status.parse().map_err(|_| corrupt("status"))?,
        custom: strings(&texts[..10]),
        external_id: external_id.strip_prefix('=').map(str::to_owned),
        profile: strings(&texts[10..]),
        create_time: Timestamp::from_unix_micros(number("create time", created)?),
        update_time: Timestamp::from_unix_micros(number("update time", updated)?),
        revision: Revision(number("revision", revision)?),
    })
}

/// A user as one record of [`ROW_SQLITE`], for [`unpack_user`]: what a bulk
/// write keeps of each row it may have to redo. Built in one string: it runs
/// for every row an import writes.
fn pack_user(user: &User) -> String {
    let mut packed = String::with_capacity(256);
    packed.push_str(user.id.0.simple().encode_lower(&mut Uuid::encode_buffer()));
    let flag = if user.enabled { "1" } else { "0" };
    for text in [user.email.as_str(), &user.display_name, flag, user.status.as_str()] {
        packed.push('\u{1f}');
        packed.push_str(text);
    }
    packed.push('\u{1f}');
    if let Some(x) = &user.external_id {
        packed.push('=');
        packed.push_str(x);
    }
    for text in user.custom.iter().chain(&user.profile) {
        packed.push('\u{1f}');
        packed.push_str(text);
    }
    for n in [
        user.create_time.unix_micros(),
        user.update_time.unix_micros(),
        user.revision.0,
    ] {
        // Writing to a String cannot fail.
        let _ = write!(packed, "\u{1f}{n}");
    }
    packed
}

/// Rows per multi-row INSERT and per `IN (...)` list.
const CHUNK: usize = 500;
/// Rows per PostgreSQL `unnest` insert.
const UNNEST_CHUNK: usize = 5_000;

/// The columns a bulk insert fills after `tenant_id`, in the order of
/// [`insert_values`]: a user's [`ROW_COLUMNS`], then the email key.
static INSERT_COLUMNS: LazyLock<Vec<user::Column>> =
    LazyLock::new(|| ROW_COLUMNS.iter().copied().chain([user::Column::EmailKey]).collect());

/// The PostgreSQL element type of a bulk-insert column's `unnest` array.
fn array_type(column: user::Column) -> (ArrayType, &'static str) {
    match column {
        user::Column::Id => (ArrayType::Uuid, "uuid"),
        user::Column::Enabled => (ArrayType::Bool, "bool"),
        user::Column::CreateTime | user::Column::UpdateTime | user::Column::Revision => (ArrayType::BigInt, "int8"),
        _ => (ArrayType::String, "text"),
    }
}

/// A user's values for [`INSERT_COLUMNS`], appended to `out`.
fn insert_values(user: &User, out: &mut Vec<Value>) {
    let text = |s: &str| Value::String(Some(s.to_owned()));
    out.extend([
        Value::Uuid(Some(user.id.0)),
        text(user.email.as_str()),
        text(&user.display_name),
        Value::Bool(Some(user.enabled)),
        text(user.status.as_str()),
        Value::String(user.external_id.clone()),
    ]);
    out.extend(user.custom.iter().chain(&user.profile).map(|v| text(v)));
    out.extend([
        Value::BigInt(Some(user.create_time.unix_micros())),
        Value::BigInt(Some(user.update_time.unix_micros())),
        Value::BigInt(Some(user.revision.0)),
        text(user.email.key()),
    ]);
}

/// SQLite: `INSERT OR FAIL INTO users (...) VALUES (...), ...` for `rows` rows.
fn insert_or_fail_sql(rows: usize) -> String {
    let names: Vec<&str> = INSERT_COLUMNS.iter().map(|c| c.as_str()).collect();
    let row = format!("({})", vec!["?"; names.len() + 1].join(", "));
    format!(
        "INSERT OR FAIL INTO users (tenant_id, {}) VALUES {}",
        names.join(", "),
        vec![row.as_str(); rows].join(", ")
    )
}

/// The statement of a full [`CHUNK`].
static INSERT_OR_FAIL_CHUNK: LazyLock<String> = LazyLock::new(|| insert_or_fail_sql(CHUNK));

/// `INSERT ... SELECT ... FROM unnest($2::uuid[], ...)`: one array per column.
static INSERT_UNNEST: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = INSERT_COLUMNS.iter().map(|c| c.as_str()).collect();
    let arrays: Vec<String> = INSERT_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, &column)| format!("${}::{}[]", i + 2, array_type(column).1))
        .collect();
    let values: Vec<String> = names
        .iter()
        .map(|n| match *n {
            "external_id" => "NULLIF(u.external_id, '')".to_owned(),
            n => format!("u.{n}"),
        })
        .collect();
    format!(
        "INSERT INTO users (tenant_id, {}) SELECT $1, {} FROM unnest({}) AS u({})",
        names.join(", "),
        values.join(", "),
        arrays.join(", "),
        names.join(", ")
    )
});

/// SQLite: inserts users with one multi-row `INSERT OR FAIL`, its SQL made
/// once and its values taken straight from the users (building it through
/// sea-orm's insert builder took a quarter of the writer's time, on the
/// writer's path). A plain `INSERT` (`OR ABORT`) in a transaction of several
/// statements makes SQLite copy every page the statement touches into a
/// statement journal first, so that a failing statement can be undone alone
/// (10% of the writer's time in a bulk load). `OR FAIL` needs no journal; on
/// a unique violation it stops where it is, and the caller rolls the whole
/// transaction back anyway.
async fn insert_or_fail(txn: &DatabaseTransaction, tenant: &TenantId, users: &[User]) -> Result<(), DbErr> {
    let mut values = Vec::with_capacity(users.len() * (INSERT_COLUMNS.len() + 1));
    for user in users {
        values.push(Value::String(Some(tenant.as_str().to_owned())));
        insert_values(user, &mut values);
    }
    let sql = if users.len() == CHUNK {
        INSERT_OR_FAIL_CHUNK.clone()
    } else {
        insert_or_fail_sql(users.len())
    };
    txn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
        .await
        .map(|_| ())
}

/// PostgreSQL: inserts users with one array per column, unpacked by
/// `unnest`. The statement has 32 parameters whatever the number of rows,
/// so it is planned in microseconds, where a 500-row `VALUES` list of
/// 15,500 parameters was planned again on every execution (11% of a bulk
/// load's database time). An unset external id travels as `''` (sea-query
/// binds text arrays without NULLs) and is stored as NULL.
async fn insert_unnest(txn: &DatabaseTransaction, tenant: &TenantId, users: &[User]) -> Result<(), DbErr> {
    let mut columns: Vec<Vec<Value>> = INSERT_COLUMNS.iter().map(|_| Vec::with_capacity(users.len())).collect();
    let mut row = Vec::with_capacity(INSERT_COLUMNS.len());
    for user in users {
        insert_values(user, &mut row);
        for (column, value) in columns.iter_mut().zip(row.drain(..)) {
            column.push(match value {
                Value::String(None) => Value::String(Some(String::new())),
                value => value,
            });
        }
    }
    let mut values = vec![Value::String(Some(tenant.as_str().to_owned()))];
    values.extend(
        INSERT_COLUMNS
            .iter()
            .zip(columns)
            .map(|(&column, array)| Value::Array(array_type(column).0, Some(Box::new(array)))),
    );
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        INSERT_UNNEST.as_str(),
        values,
    ))
    .await
    .map(|_| ())
}

fn job_to_active(job: &ImportJob) -> import_job::ActiveModel {
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
        error: Set(job.error.clone()),
    }
}

fn job_from_row(row: import_job::Model) -> RepoResult<ImportJob> {
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
        },
        error: row.error,
    })
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Seats of a tenant, read under its lock.
struct Seats {
    limit: i64,
    /// `None` = no limit.
    free: Option<u64>,
}

/// Locks the tenant row for the rest of `txn` (a write, so SQLite takes its
/// write lock before anything is read) and returns its seats.
async fn lock_seats(txn: &DatabaseTransaction, tenant: &TenantId) -> RepoResult<Seats> {
    let touched = tenant::Entity::update_many()
        .col_expr(tenant::Column::UserCount, Expr::col(tenant::Column::UserCount))
        .filter(tenant::Column::Id.eq(tenant.as_str()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if touched.rows_affected == 0 {
        return Err(tenant_not_found(tenant));
    }
    let row = tenant::Entity::find_by_id(tenant.as_str())
        .one(txn)
        .await
        .map_err(db_error)?;
    let row = row.ok_or_else(|| tenant_not_found(tenant))?;
    let free = (row.seat_limit != 0).then(|| u64::try_from(row.seat_limit - row.user_count).unwrap_or(0));
    Ok(Seats {
        limit: row.seat_limit,
        free,
    })
}

async fn add_seats(txn: &DatabaseTransaction, tenant: &TenantId, delta: i64) -> RepoResult<()> {
    if delta != 0 {
        tenant::Entity::update_many()
            .col_expr(
                tenant::Column::UserCount,
                Expr::col(tenant::Column::UserCount).add(delta),
            )
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .exec(txn)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

async fn update_one(conn: &impl ConnectionTrait, user: &User, expected: Revision) -> Result<bool, DbErr> {
    let result = user::Entity::update_many()
        .set(user_to_active(user))
        .filter(user::Column::Id.eq(user.id.0))
        .filter(user::Column::TenantId.eq(user.tenant.as_str()))
        .filter(user::Column::Revision.eq(expected.0))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

fn seat_error(tenant: &TenantId, seats: &Seats) -> DomainError {
    DomainError::SeatLimitExceeded {
        tenant: tenant.to_string(),
        limit: u32::try_from(seats.limit).unwrap_or(u32::MAX),
    }
}

fn stale(user: &User) -> DomainError {
    DomainError::EtagMismatch {
        kind: ResourceKind::User,
        name: user.name().to_string(),
    }
}

/// PostgreSQL statistics are refreshed when the rows inserted by imports
/// reach this many, then twice as many, and so on.
const ANALYZE_FIRST: u64 = 25_000;

/// Which refresh of the statistics `inserted` rows call for: 0 below
/// [`ANALYZE_FIRST`], then one more at every doubling.
fn analyze_level(inserted: u64) -> u32 {
    match inserted / ANALYZE_FIRST {
        0 => 0,
        n => 1 + n.ilog2(),
    }
}

/// The statistics an import's plans depend on: those of the columns its
/// lookups filter on (and the table's size, which every ANALYZE updates).
/// All 31 columns took six times as long; autovacuum analyzes the rest.
const ANALYZE_LOOKUP_COLUMNS: &str = "ANALYZE users (tenant_id, id, email_key, external_id)";

impl Store {
    /// Keeps PostgreSQL's statistics in step with a bulk load. Without them
    /// the planner goes on believing the table is as small as it was when
    /// last analyzed, and looks users up by scanning the whole tenant
    /// (measured: lookups growing to 200 ms per batch at 850k users). The
    /// planner scales row counts by the table's current size, so statistics
    /// are refreshed only as the table doubles: ANALYZE reads a sample of the
    /// same size each time, and every 25,000 rows it took 11% of a load.
    /// It runs beside the import, on a connection of its own.
    fn note_inserts(&self, rows: u64) {
        if self.backend() != DbBackend::Postgres || rows == 0 {
            return;
        }
        let before = self.inserted.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        if analyze_level(before + rows) > analyze_level(before) {
            let db = self.connection().clone();
            tokio::spawn(async move {
                if let Err(e) = db.execute_unprepared(ANALYZE_LOOKUP_COLUMNS).await {
                    tracing::warn!(error = %e, "ANALYZE users failed");
                }
            });
        }
    }

    /// Redoes a bulk write's rows one by one, each behind its own savepoint,
    /// so that a row that violates a unique constraint fails alone; creates
    /// take seats in order while there are any. Returns the outcomes and the
    /// users inserted.
    async fn write_rowwise(&self, tenant: &TenantId, writes: &[RowWrite]) -> RepoResult<(Vec<RepoResult<()>>, u64)> {
        let txn = self.writer().begin().await.map_err(db_error)?;
        let seats = lock_seats(&txn, tenant).await?;
        let mut free = seats.free;
        let mut inserted = 0u64;
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            let user = match write {
                RowWrite::Create(_) if free == Some(0) => {
                    results.push(Err(seat_error(tenant, &seats)));
                    continue;
                }
                RowWrite::Create(user) | RowWrite::Update(user, _) => user,
            };
            let savepoint = txn.begin().await.map_err(db_error)?;
            let written = match write {
                RowWrite::Create(_) => user::Entity::insert(user_to_active(user))
                    .exec_without_returning(&savepoint)
                    .await
                    .map(|_| true),
                RowWrite::Update(_, expected) => update_one(&savepoint, user, *expected).await,
            };
            match written {
                Ok(written) => {
                    savepoint.commit().await.map_err(db_error)?;
                    if matches!(write, RowWrite::Create(_)) {
                        inserted += 1;
                        free = free.map(|f| f - 1);
                    }
                    results.push(if written { Ok(()) } else { Err(stale(user)) });
                }
                Err(e) => {
                    savepoint.rollback().await.map_err(db_error)?;
                    results.push(Err(user_write_error(
                        e,
                        user.email.as_str(),
                        user.external_id.as_deref(),
                    )));
                }
            }
        }
        add_seats(&txn, tenant, inserted as i64).await?;
        txn.commit().await.map_err(db_error)?;
        Ok((results, inserted))
    }
}

/// A row of a bulk write, for the row-by-row redo.
enum RowWrite {
    Create(User),
    Update(User, Revision),
}

/// An import's bulk write: one transaction of multi-row inserts and updates,
/// fed batch after batch ([`ImportWrite`]). Every row is also kept packed
/// ([`pack_user`], a few hundred bytes), so that when a unique constraint
/// fires (a row raced with another writer between the import's lookup and
/// its write) the transaction can be rolled back and redone row by row,
/// where the racing row fails alone.
pub struct StoreImportWrite {
    store: Store,
    tenant: TenantId,
    /// `None` once a unique constraint fired: later rows are only kept for the redo.
    txn: Option<DatabaseTransaction>,
    seats: Seats,
    inserted: u64,
    outcomes: Vec<RepoResult<()>>,
    /// Every row handed over, in order: packed user, and the expected revision of an update.
    redo: Vec<(String, Option<Revision>)>,
}

impl StoreImportWrite {
    /// Writes rows into the open transaction; `Ok(false)` when a unique
    /// constraint fired.
    async fn write_fast(
        &mut self,
        txn: &DatabaseTransaction,
        creates: &[User],
        updates: &[(User, Revision)],
    ) -> RepoResult<bool> {
        let allowed = self.seats.free.map_or(creates.len(), |f| {
            creates.len().min(usize::try_from(f).unwrap_or(usize::MAX))
        });
        let pg = self.store.backend() == DbBackend::Postgres;
        for chunk in creates[..allowed].chunks(if pg { UNNEST_CHUNK } else { CHUNK }) {
            let insert = if pg {
                insert_unnest(txn, &self.tenant, chunk).await
            } else {
                insert_or_fail(txn, &self.tenant, chunk).await
            };
            match insert {
                Ok(()) => {}
                Err(e) if is_unique_violation(&e) => return Ok(false),
                Err(e) => return Err(db_error(e)),
            }
        }
        self.seats.free = self.seats.free.map(|f| f - allowed as u64);
        self.inserted += allowed as u64;
        let (tenant, seats) = (&self.tenant, &self.seats);
        self.outcomes.extend((0..creates.len()).map(|i| {
            if i < allowed {
                Ok(())
            } else {
                Err(seat_error(tenant, seats))
            }
        }));
        for (user, expected) in updates {
            match update_one(txn, user, *expected).await {
                Ok(true) => self.outcomes.push(Ok(())),
                Ok(false) => self.outcomes.push(Err(stale(user))),
                Err(e) if is_unique_violation(&e) => return Ok(false),
                Err(e) => return Err(db_error(e)),
            }
        }
        Ok(true)
    }
}

impl ImportWrite for StoreImportWrite {
    async fn write(&mut self, creates: &[User], updates: &[(User, Revision)]) -> RepoResult<()> {
        self.redo.extend(creates.iter().map(|u| (pack_user(u), None)));
        self.redo.extend(updates.iter().map(|(u, r)| (pack_user(u), Some(*r))));
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        if self.write_fast(&txn, creates, updates).await? {
            self.txn = Some(txn);
        } else {
            txn.rollback().await.map_err(db_error)?;
        }
        Ok(())
    }

    async fn commit(self) -> RepoResult<Vec<RepoResult<()>>> {
        let (outcomes, inserted) = match self.txn {
            Some(txn) => {
                add_seats(&txn, &self.tenant, self.inserted as i64).await?;
                txn.commit().await.map_err(db_error)?;
                (self.outcomes, self.inserted)
            }
            None => {
                let writes = self
                    .redo
                    .iter()
                    .map(|(packed, revision)| {
                        let user = unpack_user(packed, &self.tenant)?;
                        Ok(match revision {
                            None => RowWrite::Create(user),
                            Some(r) => RowWrite::Update(user, *r),
                        })
                    })
                    .collect::<RepoResult<Vec<_>>>()?;
                self.store.write_rowwise(&self.tenant, &writes).await?
            }
        };
        self.store.note_inserts(inserted);
        self.store.checkpoint_soon();
        Ok(outcomes)
    }
}

impl ImportRepository for Store {
    async fn insert_import_job(&self, job: &ImportJob) -> RepoResult<()> {
        import_job::Entity::insert(job_to_active(job))
            .exec_without_returning(self.writer())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn update_import_job(&self, job: &ImportJob) -> RepoResult<()> {
        import_job::Entity::update(job_to_active(job))
            .exec(self.writer())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn get_import_job(&self, tenant: &TenantId, id: Uuid) -> RepoResult<ImportJob> {
        let row = import_job::Entity::find_by_id(id)
            .filter(import_job::Column::TenantId.eq(tenant.as_str()))
            .one(self.connection())
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => job_from_row(row),
            None => Err(DomainError::NotFound {
                kind: ResourceKind::ImportJob,
                name: format!("{}/importJobs/{id}", tenant.resource_name()),
            }),
        }
    }

    async fn list_import_jobs(
        &self,
        tenant: &TenantId,
        before: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<ImportJob>> {
        let mut query = import_job::Entity::find()
            .filter(import_job::Column::TenantId.eq(tenant.as_str()))
            .order_by_desc(import_job::Column::Id)
            .limit(u64::from(limit));
        if let Some(before) = before {
            query = query.filter(import_job::Column::Id.lt(before));
        }
        let rows = query.all(self.connection()).await.map_err(db_error)?;
        rows.into_iter().map(job_from_row).collect()
    }

    async fn acquire_sync_lock(
        &self,
        tenant: &TenantId,
        job: Uuid,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> RepoResult<SyncLock> {
        let row = tenant::Entity::find_by_id(tenant.as_str())
            .one(self.connection())
            .await
            .map_err(db_error)?;
        let row = row.ok_or_else(|| tenant_not_found(tenant))?;
        if let (Some(holder), Some(beat)) = (row.sync_job, row.sync_heartbeat)
            && beat >= stale_before.unix_micros()
        {
            return Ok(SyncLock::Held(holder));
        }
        // Compare-and-swap on the holder we saw, so two starters cannot both win.
        let holder_unchanged = match row.sync_job {
            Some(holder) => tenant::Column::SyncJob.eq(holder),
            None => tenant::Column::SyncJob.is_null(),
        };
        let result = tenant::Entity::update_many()
            .col_expr(tenant::Column::SyncJob, Expr::value(job))
            .col_expr(tenant::Column::SyncHeartbeat, Expr::value(now.unix_micros()))
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .filter(holder_unchanged)
            .exec(self.writer())
            .await
            .map_err(db_error)?;
        if result.rows_affected == 1 {
            return Ok(row.sync_job.map_or(SyncLock::Acquired, SyncLock::TakenOver));
        }
        let now_row = tenant::Entity::find_by_id(tenant.as_str())
            .one(self.connection())
            .await
            .map_err(db_error)?;
        Ok(SyncLock::Held(now_row.and_then(|r| r.sync_job).unwrap_or(job)))
    }

    async fn refresh_sync_lock(&self, tenant: &TenantId, job: Uuid, now: Timestamp) -> RepoResult<bool> {
        let result = tenant::Entity::update_many()
            .col_expr(tenant::Column::SyncHeartbeat, Expr::value(now.unix_micros()))
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .filter(tenant::Column::SyncJob.eq(job))
            .exec(self.writer())
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected == 1)
    }

    async fn release_sync_lock(&self, tenant: &TenantId, job: Uuid) -> RepoResult<()> {
        tenant::Entity::update_many()
            .col_expr(tenant::Column::SyncJob, Expr::value(Option::<Uuid>::None))
            .col_expr(tenant::Column::SyncHeartbeat, Expr::value(Option::<i64>::None))
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .filter(tenant::Column::SyncJob.eq(job))
            .exec(self.writer())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_import_matches(
        &self,
        tenant: &TenantId,
        email_keys: &[String],
        external_ids: &[String],
        ids: &[Uuid],
    ) -> RepoResult<Vec<User>> {
        // PostgreSQL takes each list as one array parameter (`= ANY($n)`), so the
        // statement stays small and cheap to plan; SQLite gets `IN (...)`.
        let pg = self.backend() == DbBackend::Postgres;
        let strings = |v: &[String]| {
            let values = v.iter().map(|s| Value::String(Some(s.clone()))).collect();
            Expr::val(Value::Array(ArrayType::String, Some(Box::new(values))))
        };
        let mut any = Condition::any();
        if !email_keys.is_empty() {
            any = any.add(if pg {
                Expr::col(user::Column::EmailKey).eq(PgFunc::any(strings(email_keys)))
            } else {
                user::Column::EmailKey.is_in(email_keys.iter().map(String::as_str))
            });
        }
        if !external_ids.is_empty() {
            any = any.add(if pg {
                Expr::col(user::Column::ExternalId).eq(PgFunc::any(strings(external_ids)))
            } else {
                user::Column::ExternalId.is_in(external_ids.iter().map(String::as_str))
            });
        }
        if !ids.is_empty() {
            any = any.add(if pg {
                let values = ids.iter().map(|id| Value::Uuid(Some(*id))).collect();
                Expr::col(user::Column::Id).eq(PgFunc::any(Expr::val(Value::Array(
                    ArrayType::Uuid,
                    Some(Box::new(values)),
                ))))
            } else {
                user::Column::Id.is_in(ids.iter().copied())
            });
        }
        if any.is_empty() {
            return Ok(Vec::new());
        }
        let select = user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant.as_str()))
            .filter(any);
        if pg {
            let rows = self
                .connection()
                .query_all(select_row_columns(select).as_query())
                .await
                .map_err(db_error)?;
            return rows.iter().map(|row| user_by_index(row, tenant)).collect();
        }
        // SQLite: the whole batch comes back as one packed text value in one
        // row: for 500 users that is one value to decode instead of 14,500.
        let packed: Option<Option<String>> = select
            .select_only()
            .column_as(Expr::cust(PACK_SQLITE.as_str()), "users")
            .into_tuple()
            .one(self.connection())
            .await
            .map_err(db_error)?;
        unpack_users(packed.flatten(), tenant)
    }

    type ImportWrite = StoreImportWrite;

    async fn begin_import_write(&self, tenant: &TenantId) -> RepoResult<StoreImportWrite> {
        let txn = self.writer().begin().await.map_err(db_error)?;
        let seats = lock_seats(&txn, tenant).await?;
        Ok(StoreImportWrite {
            store: self.clone(),
            tenant: tenant.clone(),
            txn: Some(txn),
            seats,
            inserted: 0,
            outcomes: Vec::new(),
            redo: Vec::new(),
        })
    }

    async fn delete_absent_users(
        &self,
        tenant: &TenantId,
        created_before: Timestamp,
        keep: &HashSet<Uuid>,
        dry_run: bool,
    ) -> RepoResult<Vec<(UserId, String)>> {
        let txn = self.writer().begin().await.map_err(db_error)?;
        if !dry_run {
            lock_seats(&txn, tenant).await?;
        }
        let mut absent: Vec<(Uuid, String)> = Vec::new();
        let mut after: Option<Uuid> = None;
        loop {
            let mut page = user::Entity::find()
                .select_only()
                .column(user::Column::Id)
                .column(user::Column::Email)
                .filter(user::Column::TenantId.eq(tenant.as_str()))
                .filter(user::Column::CreateTime.lt(created_before.unix_micros()))
                .order_by_asc(user::Column::Id)
                .limit(5000);
            if let Some(after) = after {
                page = page.filter(user::Column::Id.gt(after));
            }
            let rows: Vec<(Uuid, String)> = page.into_tuple().all(&txn).await.map_err(db_error)?;
            let Some(last) = rows.last() else { break };
            after = Some(last.0);
            absent.extend(rows.into_iter().filter(|(id, _)| !keep.contains(id)));
        }
        if !dry_run {
            let mut deleted = 0u64;
            for chunk in absent.chunks(CHUNK) {
                let result = user::Entity::delete_many()
                    .filter(user::Column::TenantId.eq(tenant.as_str()))
                    .filter(user::Column::Id.is_in(chunk.iter().map(|(id, _)| *id)))
                    .exec(&txn)
                    .await
                    .map_err(db_error)?;
                deleted += result.rows_affected;
            }
            add_seats(&txn, tenant, -(deleted as i64)).await?;
        }
        txn.commit().await.map_err(db_error)?;
        if !dry_run {
            self.checkpoint_soon();
        }
        Ok(absent.into_iter().map(|(id, email)| (UserId(id), email)).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use userdir_domain::email::Email;
    use userdir_domain::user::UserStatus;

    use super::*;
    use crate::StoreOptions;

    fn user(tenant: &TenantId, email: &str, external_id: Option<&str>) -> User {
        User {
            tenant: tenant.clone(),
            id: UserId::new(),
            email: Email::from_trusted(email.to_owned()),
            display_name: String::new(),
            enabled: true,
            status: UserStatus::default(),
            custom: Default::default(),
            external_id: external_id.map(str::to_owned),
            profile: Default::default(),
            create_time: Timestamp::from_unix_micros(1),
            update_time: Timestamp::from_unix_micros(2),
            revision: Revision(3),
        }
    }

    /// What SQLite packs into one text value reads back as the same users,
    /// whatever the text holds (commas, quotes, line breaks, tabs, `=`,
    /// non-ASCII) and with the external id unset, set, or starting with `=`.
    /// A user with nothing set, and one with text that quoting, escaping or
    /// separators could get wrong.
    fn awkward_users(tenant: &TenantId) -> [User; 2] {
        let mut plain = user(tenant, "plain@example.com", None);
        plain.enabled = false;
        let mut busy = user(tenant, "Busy+Tag@Example.com", Some("=HR,1"));
        busy.display_name = "髙橋 \"Ünïcødé\", Jr.\nline two\ttab".to_owned();
        busy.status = UserStatus::Confirmed;
        busy.custom[0] = "a,b;c".to_owned();
        busy.custom[9] = "=SUM(A1)".to_owned();
        busy.profile[0] = "Pia".to_owned();
        busy.profile[9] = "Asia/Tokyo".to_owned();
        [plain, busy]
    }

    /// What a bulk write keeps for its row-by-row redo reads back as the
    /// same user.
    #[test]
    fn users_packed_for_the_redo_read_back_exactly() {
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        for user in awkward_users(&tenant) {
            assert_eq!(unpack_user(&pack_user(&user), &tenant).unwrap(), user);
        }
    }

    /// A migrated store on a SQLite file of its own, and the file's path.
    async fn sqlite_file_store(name: &str) -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("userdir-{name}-{}.db", Uuid::now_v7()));
        let store = Store::open(&StoreOptions::new(format!("sqlite://{}?mode=rwc", path.display())))
            .await
            .unwrap();
        (store, path)
    }

    /// Closes the store and removes its database files.
    async fn close_and_remove(store: Store, path: &std::path::Path) {
        store.close().await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn sqlite_packed_users_read_back_exactly() {
        let (store, path) = sqlite_file_store("pack").await;
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        let [plain, busy] = awkward_users(&tenant);
        let other = user(&tenant, "other@example.com", Some("HR-2"));
        let txn = store.writer().begin().await.unwrap();
        insert_or_fail(&txn, &tenant, &[plain.clone(), busy.clone(), other])
            .await
            .unwrap();
        txn.commit().await.unwrap();

        let keys = [plain.email.key().to_owned(), busy.email.key().to_owned()];
        let mut found = store.find_import_matches(&tenant, &keys, &[], &[]).await.unwrap();
        found.sort_by(|a, b| a.email.key().cmp(b.email.key()));
        assert_eq!(found, [busy, plain]);
        let nobody = ["nobody@example.com".to_owned()];
        let none = store.find_import_matches(&tenant, &nobody, &[], &[]).await.unwrap();
        assert_eq!(none, []);
        close_and_remove(store, &path).await;
    }

    /// The checkpoints run, once `n` have or after 5 s.
    async fn checkpoints_after_waiting_for(checkpointer: &crate::checkpoint::Checkpointer, n: u64) -> u64 {
        for _ in 0..500 {
            if checkpointer.done() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        checkpointer.done()
    }

    /// An import's commit, and a FULL_SYNC's deletions, leave the WAL
    /// checkpoint to the checkpointer task, off the writer's path.
    #[tokio::test]
    async fn sqlite_import_commits_are_checkpointed_beside_the_writer() {
        use userdir_domain::repo::TenantRepository;
        use userdir_domain::tenant::{Tenant, TenantSettings};

        let (store, path) = sqlite_file_store("checkpoint").await;
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        let settings = TenantSettings {
            display_name: "Acme".to_owned(),
            ..Default::default()
        };
        let acme = Tenant::create(tenant.clone(), settings, Timestamp::now()).unwrap();
        store.insert_tenant(&acme).await.unwrap();
        let checkpointer = store.checkpointer.clone().unwrap();
        assert_eq!(checkpointer.done(), 0);

        let mut write = store.begin_import_write(&tenant).await.unwrap();
        write.write(&[user(&tenant, "a@example.com", None)], &[]).await.unwrap();
        assert_eq!(write.commit().await.unwrap().len(), 1);
        assert_eq!(checkpoints_after_waiting_for(&checkpointer, 1).await, 1);

        let deleted = store
            .delete_absent_users(&tenant, Timestamp::now(), &HashSet::new(), false)
            .await
            .unwrap();
        assert_eq!(deleted.len(), 1);
        assert_eq!(checkpoints_after_waiting_for(&checkpointer, 2).await, 2);
        close_and_remove(store, &path).await;
    }

    #[test]
    fn statistics_are_refreshed_at_each_doubling() {
        let levels: Vec<u32> = [0, 24_999, 25_000, 49_999, 50_000, 99_999, 100_000, 1_000_000]
            .into_iter()
            .map(analyze_level)
            .collect();
        assert_eq!(levels, [0, 0, 1, 1, 2, 2, 3, 6]);
    }
}
