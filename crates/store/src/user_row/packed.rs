//! Users packed into one text value: how SQLite hands a batch of users over
//! in one value, and what a bulk write keeps of each row it may redo.

use std::fmt::Write as _;
use std::sync::LazyLock;

use sea_orm::IdenStatic;
use userdir_domain::DomainError;
use userdir_domain::access::Capabilities;
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::CUSTOM_SLOTS;
use userdir_domain::tenant::TenantId;
use userdir_domain::text::{Revision, Timestamp};
use userdir_domain::user::{ProfileField, User, UserId};
use uuid::Uuid;

use super::ROW_COLUMNS;
use crate::entity::user;

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
pub(crate) static PACK_SQLITE: LazyLock<String> = LazyLock::new(|| format!("group_concat({}, char(30))", *ROW_SQLITE));

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
pub(crate) fn unpack_user(record: &str, tenant: &TenantId) -> RepoResult<User> {
    let fields: Vec<&str> = record.split('\u{1f}').collect();
    // `split` yields at least one field: the id, or what stands in its place.
    let corrupt = |what: &str| DomainError::storage(format!("stored user {} has an unreadable {what}", fields[0]));
    let [id, email, display_name, enabled, status, external_id, rest @ ..] = fields.as_slice() else {
        return Err(corrupt("packed row"));
    };
    let [
        texts @ ..,
        created,
        updated,
        revision,
        role,
        user_management,
        export_users,
    ] = rest
    else {
        return Err(corrupt("packed row"));
    };
    if texts.len() != CUSTOM_SLOTS + ProfileField::ALL.len() {
        return Err(corrupt("packed row"));
    }
    fn strings<const N: usize>(values: &[&str]) -> [String; N] {
        std::array::from_fn(|i| values[i].to_owned())
    }
    let number = |what: &str, v: &str| v.parse::<i64>().map_err(|_| corrupt(what));
    Ok(User {
        tenant: tenant.clone(),
        id: UserId(Uuid::parse_str(id).map_err(|_| corrupt("id"))?),
        email: userdir_domain::email::Email::from_trusted((*email).to_owned()),
        display_name: (*display_name).to_owned(),
        enabled: number("enabled flag", enabled)? != 0,
        status: status.parse().map_err(|_| corrupt("status"))?,
        custom: strings(&texts[..CUSTOM_SLOTS]),
        external_id: external_id.strip_prefix('=').map(str::to_owned),
        profile: strings(&texts[CUSTOM_SLOTS..]),
        create_time: Timestamp::from_unix_micros(number("create time", created)?),
        update_time: Timestamp::from_unix_micros(number("update time", updated)?),
        revision: Revision(number("revision", revision)?),
        role: role.parse().map_err(|_| corrupt("role"))?,
        capabilities: Capabilities {
            user_management: number("capability", user_management)? != 0,
            export_users: number("capability", export_users)? != 0,
        },
    })
}

/// A user as one record of [`ROW_SQLITE`], for [`unpack_user`]: what a bulk
/// write keeps of each row it may have to redo. Built in one string: it runs
/// for every row an import writes.
pub(crate) fn pack_user(user: &User) -> String {
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
    let flag = |on: bool| if on { "\u{1f}1" } else { "\u{1f}0" };
    packed.push('\u{1f}');
    packed.push_str(user.role.as_str());
    packed.push_str(flag(user.capabilities.user_management));
    packed.push_str(flag(user.capabilities.export_users));
    packed
}
