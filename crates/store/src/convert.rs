//! Entity rows <-> domain types.

use std::sync::LazyLock;

use sea_orm::ActiveValue::Set;
use sea_orm::{QueryResult, QuerySelect, Select};
use userdir_domain::DomainError;
use userdir_domain::access::Capabilities;
use userdir_domain::email::Email;
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::{CUSTOM_SLOTS, CustomAttributeDef, CustomAttributeSchema, Tenant, TenantId};
use userdir_domain::text::{Revision, Timestamp};
use userdir_domain::user::{ProfileField, User, UserId, UserStatus};
use uuid::Uuid;

use crate::entity::{tenant, user};

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> DomainError {
    DomainError::storage(format!("stored {what} is unreadable: {detail}"))
}

fn count(n: u32) -> i64 {
    i64::from(n)
}

fn to_u32(what: &str, n: i64) -> Result<u32, DomainError> {
    u32::try_from(n).map_err(|_| corrupt(what, n))
}

pub(crate) fn tenant_from_row(row: tenant::Model) -> Result<Tenant, DomainError> {
    let defs: Vec<CustomAttributeDef> =
        serde_json::from_str(&row.custom_attributes).map_err(|e| corrupt("custom attribute schema", e))?;
    let custom_attributes: CustomAttributeSchema = defs
        .try_into()
        .map_err(|v: Vec<_>| corrupt("custom attribute schema", format!("{} slots", v.len())))?;
    Ok(Tenant {
        id: TenantId::parse("id", &row.id).map_err(|e| corrupt("tenant id", e))?,
        display_name: row.display_name,
        seat_limit: to_u32("seat limit", row.seat_limit)?,
        custom_attributes,
        user_count: to_u32("user count", row.user_count)?,
        create_time: Timestamp::from_unix_micros(row.create_time),
        update_time: Timestamp::from_unix_micros(row.update_time),
        revision: Revision(row.revision),
    })
}

/// The writable columns of a tenant (not `user_count`, which only the store moves).
pub(crate) fn tenant_to_active(t: &Tenant) -> tenant::ActiveModel {
    tenant::ActiveModel {
        id: Set(t.id.as_str().to_owned()),
        display_name: Set(t.display_name.clone()),
        seat_limit: Set(count(t.seat_limit)),
        custom_attributes: Set(serde_json::to_string(&t.custom_attributes).unwrap_or_else(|_| "[]".into())),
        create_time: Set(t.create_time.unix_micros()),
        update_time: Set(t.update_time.unix_micros()),
        revision: Set(t.revision.0),
        ..Default::default()
    }
}

pub(crate) fn user_from_row(row: user::Model) -> Result<User, DomainError> {
    Ok(User {
        tenant: TenantId::parse("tenant_id", &row.tenant_id).map_err(|e| corrupt("tenant id", e))?,
        id: UserId(row.id),
        email: Email::from_trusted(row.email),
        display_name: row.display_name,
        enabled: row.enabled,
        status: row.status.parse::<UserStatus>().map_err(|e| corrupt("status", e))?,
        custom: [
            row.custom_01,
            row.custom_02,
            row.custom_03,
            row.custom_04,
            row.custom_05,
            row.custom_06,
            row.custom_07,
            row.custom_08,
            row.custom_09,
            row.custom_10,
        ],
        external_id: row.external_id,
        profile: [
            row.given_name,
            row.family_name,
            row.title,
            row.department,
            row.company,
            row.job_role,
            row.phone,
            row.mobile,
            row.locale,
            row.time_zone,
            row.note,
        ],
        create_time: Timestamp::from_unix_micros(row.create_time),
        update_time: Timestamp::from_unix_micros(row.update_time),
        revision: Revision(row.revision),
        role: row.role.parse().map_err(|e| corrupt("role", e))?,
        capabilities: Capabilities {
            user_management: row.cap_user_management,
            export_users: row.cap_export_users,
        },
    })
}

pub(crate) fn user_to_active(u: &User) -> user::ActiveModel {
    let [c1, c2, c3, c4, c5, c6, c7, c8, c9, c10] = u.custom.clone();
    let [
        given,
        family,
        title,
        department,
        company,
        job_role,
        phone,
        mobile,
        locale,
        time_zone,
        note,
    ] = u.profile.clone();
    user::ActiveModel {
        id: Set(u.id.0),
        tenant_id: Set(u.tenant.as_str().to_owned()),
        email: Set(u.email.as_str().to_owned()),
        email_key: Set(u.email.key().to_owned()),
        display_name: Set(u.display_name.clone()),
        enabled: Set(u.enabled),
        status: Set(u.status.as_str().to_owned()),
        external_id: Set(u.external_id.clone()),
        custom_01: Set(c1),
        custom_02: Set(c2),
        custom_03: Set(c3),
        custom_04: Set(c4),
        custom_05: Set(c5),
        custom_06: Set(c6),
        custom_07: Set(c7),
        custom_08: Set(c8),
        custom_09: Set(c9),
        custom_10: Set(c10),
        given_name: Set(given),
        family_name: Set(family),
        title: Set(title),
        department: Set(department),
        company: Set(company),
        job_role: Set(job_role),
        phone: Set(phone),
        mobile: Set(mobile),
        locale: Set(locale),
        time_zone: Set(time_zone),
        note: Set(note),
        create_time: Set(u.create_time.unix_micros()),
        update_time: Set(u.update_time.unix_micros()),
        revision: Set(u.revision.0),
        role: Set(u.role.as_str().to_owned()),
        cap_user_management: Set(u.capabilities.user_management),
        cap_export_users: Set(u.capabilities.export_users),
    }
}

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
