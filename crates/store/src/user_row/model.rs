//! A user as the sea-orm entity's model, for single-user reads and writes.

use sea_orm::ActiveValue::Set;
use userdir_domain::DomainError;
use userdir_domain::access::Capabilities;
use userdir_domain::email::Email;
use userdir_domain::tenant::TenantId;
use userdir_domain::text::{Revision, Timestamp};
use userdir_domain::user::{User, UserId, UserStatus};

use crate::convert::corrupt;
use crate::entity::user;

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
