//! Multi-row inserts of events, as the users' bulk insert does them: the
//! SQL made once per shape, the values taken straight from the events (an
//! import writes one event per row, on the writer's path). The origin is the
//! same for every event of a transaction: PostgreSQL takes it once, as
//! plain parameters beside the `unnest` arrays of what varies.

use std::sync::LazyLock;

use sea_orm::sea_query::{ArrayType, Value};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement};

use crate::bulk_insert::values_sql;
use userdir_domain::event::Origin;
use userdir_domain::tenant::TenantId;
use uuid::Uuid;

/// An event numbered and encoded, not inserted yet.
pub(crate) struct Pending {
    pub(crate) seq: i64,
    pub(crate) id: Uuid,
    pub(crate) time: i64,
    pub(crate) kind: &'static str,
    pub(crate) resource: String,
    pub(crate) revision: i64,
    pub(crate) line: Option<i64>,
    pub(crate) paths: String,
    pub(crate) after: String,
}

/// Every column: the tenant, the origin (the same for every event of a
/// transaction), then what varies by event ([`varying`]), in the order of
/// the SQLite values and of PostgreSQL's statement.
const COLUMNS: [&str; 17] = [
    "tenant_id",
    "api_key",
    "certificate",
    "acting_user",
    "acting_user_email",
    "request_id",
    "trace_id",
    "import_job",
    "seq",
    "id",
    "time",
    "type",
    "resource",
    "revision",
    "import_line",
    "changed_paths",
    "after",
];

/// The rows of a SQLite statement: a batch is cut into statements of these
/// sizes, largest first, so that each shape is compiled once and cached (a
/// statement of a new size for every batch was compiled each time: a
/// 300k-row import ran at a fifth of its speed).
const SQLITE_SIZES: [usize; 5] = [1_000, 200, 40, 8, 1];

fn sqlite_sql(rows: usize) -> String {
    values_sql(
        &format!("INSERT INTO events ({})", COLUMNS.join(", ")),
        COLUMNS.len(),
        rows,
    )
}

/// The statement of each size in [`SQLITE_SIZES`].
static SQLITE_SQL: LazyLock<Vec<String>> = LazyLock::new(|| SQLITE_SIZES.iter().map(|&n| sqlite_sql(n)).collect());

/// The origin's values, in column order (`api_key` .. `import_job`).
fn origin_values(o: &Origin) -> [Value; 7] {
    [
        Value::Uuid(o.key),
        Value::String(o.certificate.clone()),
        Value::String(o.acting_user.clone()),
        Value::String(o.acting_user_email.clone()),
        Value::String(o.request_id.clone()),
        Value::String(o.trace_id.clone()),
        Value::Uuid(o.import_job),
    ]
}

/// An event's own values, in column order (`seq` .. `after`), with `line`
/// for its import line.
fn varying(e: Pending, line: Value) -> [Value; 9] {
    [
        Value::BigInt(Some(e.seq)),
        Value::Uuid(Some(e.id)),
        Value::BigInt(Some(e.time)),
        Value::String(Some(e.kind.to_owned())),
        Value::String(Some(e.resource)),
        Value::BigInt(Some(e.revision)),
        line,
        Value::String(Some(e.paths)),
        Value::String(Some(e.after)),
    ]
}

async fn insert_sqlite(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    origin: &Origin,
    events: Vec<Pending>,
) -> Result<(), DbErr> {
    let origin = origin_values(origin);
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let left = events.len();
        let (shape, &rows) = SQLITE_SIZES
            .iter()
            .enumerate()
            .find(|(_, size)| **size <= left)
            .unwrap_or((SQLITE_SIZES.len() - 1, &1));
        let mut values = Vec::with_capacity(rows * COLUMNS.len());
        for e in events.by_ref().take(rows) {
            values.push(Value::String(Some(tenant.as_str().to_owned())));
            values.extend(origin.iter().cloned());
            let line = Value::BigInt(e.line);
            values.extend(varying(e, line));
        }
        let sql = SQLITE_SQL.get(shape).cloned().unwrap_or_else(|| sqlite_sql(rows));
        txn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
            .await?;
    }
    Ok(())
}

/// `INSERT ... SELECT` of the origin as parameters `$2`..`$8` and one
/// `unnest` array per varying column (`import_line` -1 for none).
static POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events ({}) SELECT $1, $2::uuid, $3, $4, $5, $6, $7, $8::uuid, u.seq, u.id, u.time, u.type, u.resource, u.revision, \
     NULLIF(u.import_line, -1), u.changed_paths, u.after \
     FROM unnest($9::int8[], $10::uuid[], $11::int8[], $12::text[], $13::text[], $14::int8[], $15::int8[], \
     $16::text[], $17::text[]) AS u(seq, id, time, type, resource, revision, import_line, changed_paths, after)",
        COLUMNS.join(", ")
    )
});

async fn insert_postgres(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    origin: &Origin,
    events: Vec<Pending>,
) -> Result<(), DbErr> {
    let n = events.len();
    let mut columns: [Vec<Value>; 9] = std::array::from_fn(|_| Vec::with_capacity(n));
    for e in events {
        let line = Value::BigInt(Some(e.line.unwrap_or(-1)));
        for (column, value) in columns.iter_mut().zip(varying(e, line)) {
            column.push(value);
        }
    }
    let kinds = [
        ArrayType::BigInt,
        ArrayType::Uuid,
        ArrayType::BigInt,
        ArrayType::String,
        ArrayType::String,
        ArrayType::BigInt,
        ArrayType::BigInt,
        ArrayType::String,
        ArrayType::String,
    ];
    let mut values = vec![Value::String(Some(tenant.as_str().to_owned()))];
    values.extend(origin_values(origin));
    values.extend(
        kinds
            .into_iter()
            .zip(columns)
            .map(|(kind, column)| Value::Array(kind, Some(Box::new(column)))),
    );
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        POSTGRES.as_str(),
        values,
    ))
    .await
    .map(|_| ())
}

/// Inserts `events` of `tenant`, all made by `origin`.
pub(crate) async fn insert(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    origin: &Origin,
    events: Vec<Pending>,
) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return insert_sqlite(txn, tenant, origin, events).await;
    }
    // One statement of any size: PostgreSQL's unnest statement is the same
    // whatever the number of rows.
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<Pending> = events.by_ref().take(POSTGRES_ROWS).collect();
        insert_postgres(txn, tenant, origin, chunk).await?;
    }
    Ok(())
}

/// Events per PostgreSQL statement.
const POSTGRES_ROWS: usize = 5_000;
