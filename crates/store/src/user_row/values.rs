//! A user's values for a bulk insert, in the order of [`INSERT_COLUMNS`].

use std::sync::LazyLock;

use sea_orm::sea_query::{ArrayType, Value};
use userdir_domain::user::User;

use super::ROW_COLUMNS;
use crate::entity::user;

/// The columns a bulk insert fills after `tenant_id`, in the order of
/// [`insert_values`]: a user's [`ROW_COLUMNS`], then the email key.
pub(crate) static INSERT_COLUMNS: LazyLock<Vec<user::Column>> =
    LazyLock::new(|| ROW_COLUMNS.iter().copied().chain([user::Column::EmailKey]).collect());

/// The PostgreSQL element type of a bulk-insert column's `unnest` array.
pub(crate) fn array_type(column: user::Column) -> (ArrayType, &'static str) {
    match column {
        user::Column::Id => (ArrayType::Uuid, "uuid"),
        user::Column::Enabled | user::Column::CapUserManagement | user::Column::CapExportUsers => {
            (ArrayType::Bool, "bool")
        }
        user::Column::CreateTime | user::Column::UpdateTime | user::Column::Revision => (ArrayType::BigInt, "int8"),
        _ => (ArrayType::String, "text"),
    }
}

/// A user's values for [`INSERT_COLUMNS`], appended to `out`.
pub(crate) fn insert_values(user: &User, out: &mut Vec<Value>) {
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
        text(user.role.as_str()),
        Value::Bool(Some(user.capabilities.user_management)),
        Value::Bool(Some(user.capabilities.export_users)),
        text(user.email.key()),
    ]);
}
