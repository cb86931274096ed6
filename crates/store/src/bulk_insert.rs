//! Multi-row inserts of users for bulk imports: SQLite's `INSERT OR FAIL`
//! with many `VALUES`, PostgreSQL's `unnest` of one array per column.

use std::sync::LazyLock;

use sea_orm::sea_query::Value;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, IdenStatic, Statement};
use userdir_domain::tenant::TenantId;
use userdir_domain::user::User;

use crate::user_row::{INSERT_COLUMNS, array_type, insert_values};

/// Rows per multi-row INSERT and per `IN (...)` list.
pub(crate) const CHUNK: usize = 500;
/// Rows per PostgreSQL `unnest` insert.
pub(crate) const UNNEST_CHUNK: usize = 5_000;

/// `head` (`INSERT INTO t (a, b)`) and a `VALUES` list of `rows` rows of
/// `width` parameters each (SQLite's `?`).
pub(crate) fn values_sql(head: &str, width: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    format!("{head} VALUES {}", vec![row.as_str(); rows].join(", "))
}

/// SQLite: `INSERT OR FAIL INTO users (...) VALUES (...), ...` for `rows` rows.
fn insert_or_fail_sql(rows: usize) -> String {
    let names: Vec<&str> = INSERT_COLUMNS.iter().map(|c| c.as_str()).collect();
    let head = format!("INSERT OR FAIL INTO users (tenant_id, {})", names.join(", "));
    values_sql(&head, names.len() + 1, rows)
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
pub(crate) async fn insert_or_fail(txn: &DatabaseTransaction, tenant: &TenantId, users: &[User]) -> Result<(), DbErr> {
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
pub(crate) async fn insert_unnest(txn: &DatabaseTransaction, tenant: &TenantId, users: &[User]) -> Result<(), DbErr> {
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
