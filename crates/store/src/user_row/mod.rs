//! A user's row, every way the store encodes it, in one place: the column
//! order every positional read and write shares ([`ROW_COLUMNS`]), the
//! entity model (single-user reads and writes), the PostgreSQL row read by
//! position, the SQLite packed text value, and the values of a bulk insert.
//! A new column of `users` is added here (and in the entity and a
//! migration); each encoding has a round-trip test.

use std::sync::LazyLock;

use crate::entity::user;

mod model;
mod packed;
mod positional;
mod values;

pub(crate) use model::{user_from_row, user_to_active};
pub(crate) use packed::{PACK_SQLITE, ROW_SQLITE, pack_user, unpack_user, unpack_users};
pub(crate) use positional::{select_row_columns, user_by_index};
pub(crate) use values::{INSERT_COLUMNS, array_type, insert_values};

/// The columns of a user in the one order every positional read and write
/// of the store uses: [`user_by_index`] (PostgreSQL rows), the SQLite packed
/// rows and the bulk inserts (`imports.rs`).
pub(crate) static ROW_COLUMNS: LazyLock<Vec<user::Column>> = LazyLock::new(|| {
    let mut columns = vec![
        user::Column::Id,
        user::Column::Email,
        user::Column::DisplayName,
        user::Column::Enabled,
        user::Column::Status,
        user::Column::ExternalId,
    ];
    columns.extend(user::CUSTOM_COLUMNS.iter().chain(&user::PROFILE_COLUMNS));
    columns.extend([
        user::Column::CreateTime,
        user::Column::UpdateTime,
        user::Column::Revision,
        user::Column::Role,
        user::Column::CapUserManagement,
        user::Column::CapExportUsers,
    ]);
    columns
});
