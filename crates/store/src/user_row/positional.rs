//! A user as a PostgreSQL row of [`ROW_COLUMNS`], read by position.

use sea_orm::{QueryResult, QuerySelect, Select};
use userdir_domain::DomainError;
use userdir_domain::access::Capabilities;
use userdir_domain::email::Email;
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::{CUSTOM_SLOTS, TenantId};
use userdir_domain::text::{Revision, Timestamp};
use userdir_domain::user::{ProfileField, User, UserId};
use uuid::Uuid;

use super::ROW_COLUMNS;
use crate::convert::corrupt;
use crate::entity::user;

/// `select` narrowed to [`ROW_COLUMNS`], for [`user_by_index`].
pub(crate) fn select_row_columns(select: Select<user::Entity>) -> Select<user::Entity> {
    select.select_only().columns(ROW_COLUMNS.iter().copied())
}

/// A user of `tenant` from a PostgreSQL row of [`ROW_COLUMNS`], read by
/// position and without sqlx's per-value type check (by name and checked,
/// finding and checking the values cost more than decoding them): the
/// statement selected these columns, whose types the migrations fix.
pub(crate) fn user_by_index(row: &QueryResult, tenant: &TenantId) -> RepoResult<User> {
    use sea_orm::sqlx::Row;
    let row = row
        .try_as_pg_row()
        .ok_or_else(|| DomainError::storage("typed user rows are read on PostgreSQL only"))?;
    let unreadable = |e: sea_orm::sqlx::Error| DomainError::storage(format!("stored user unreadable: {e}"));
    let text = |i: usize| row.try_get_unchecked::<String, _>(i).map_err(unreadable);
    fn texts<const N: usize>(text: impl Fn(usize) -> RepoResult<String>, from: usize) -> RepoResult<[String; N]> {
        let mut out: [String; N] = std::array::from_fn(|_| String::new());
        for (i, cell) in out.iter_mut().enumerate() {
            *cell = text(from + i)?;
        }
        Ok(out)
    }
    // Positions of ROW_COLUMNS: id, email, display_name, enabled, status,
    // external_id, the custom slots, the profile fields, then the rest.
    const CUSTOM_AT: usize = 6;
    const PROFILE_AT: usize = CUSTOM_AT + CUSTOM_SLOTS;
    const REST_AT: usize = PROFILE_AT + ProfileField::ALL.len();
    let int = |i: usize| row.try_get_unchecked::<i64, _>(i).map_err(unreadable);
    let id: Uuid = row.try_get_unchecked(0).map_err(unreadable)?;
    let status = text(4)?;
    let role = text(REST_AT + 3)?;
    Ok(User {
        tenant: tenant.clone(),
        id: UserId(id),
        email: Email::from_trusted(text(1)?),
        display_name: text(2)?,
        // Checked: sqlx's unchecked bool decode would index an empty value.
        enabled: row.try_get(3).map_err(unreadable)?,
        status: status.parse().map_err(|_| corrupt("status", &status))?,
        external_id: row.try_get_unchecked(5).map_err(unreadable)?,
        custom: texts(text, CUSTOM_AT)?,
        profile: texts(text, PROFILE_AT)?,
        create_time: Timestamp::from_unix_micros(int(REST_AT)?),
        update_time: Timestamp::from_unix_micros(int(REST_AT + 1)?),
        revision: Revision(int(REST_AT + 2)?),
        role: role.parse().map_err(|_| corrupt("role", &role))?,
        capabilities: Capabilities {
            user_management: row.try_get(REST_AT + 4).map_err(unreadable)?,
            export_users: row.try_get(REST_AT + 5).map_err(unreadable)?,
        },
    })
}
