//! Protobuf messages <-> domain types.

use prost_types::Timestamp as PbTimestamp;
use userdir_domain::DomainError;
use userdir_domain::access::TenantRole;
use userdir_domain::tenant::{CUSTOM_SLOTS, CustomAttributeDef, Tenant, TenantSettings, custom_key};
use userdir_domain::text::Timestamp;
use userdir_domain::user::{ProfileField, User, UserInput, UserStatus};

use crate::pb;

pub fn timestamp(t: Timestamp) -> Option<PbTimestamp> {
    let (seconds, nanos) = t.seconds_nanos();
    Some(PbTimestamp { seconds, nanos })
}

pub fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

pub fn tenant_to_pb(t: Tenant) -> pb::Tenant {
    pb::Tenant {
        name: t.id.resource_name(),
        display_name: t.display_name,
        seat_limit: t.seat_limit,
        custom_attributes: t
            .custom_attributes
            .into_iter()
            .enumerate()
            .map(|(i, d)| pb::CustomAttributeDefinition {
                key: custom_key(i),
                label: d.label,
                required: d.required,
                visible: d.visible,
            })
            .collect(),
        user_count: t.user_count,
        create_time: timestamp(t.create_time),
        update_time: timestamp(t.update_time),
        etag: t.revision.etag(),
        audit_retention_days: t.audit_retention_days,
    }
}

pub fn tenant_settings(t: pb::Tenant) -> TenantSettings {
    TenantSettings {
        display_name: t.display_name,
        seat_limit: t.seat_limit,
        custom_attributes: t
            .custom_attributes
            .into_iter()
            .map(|d| {
                (
                    d.key,
                    CustomAttributeDef {
                        label: d.label,
                        required: d.required,
                        visible: d.visible,
                    },
                )
            })
            .collect(),
        audit_retention_days: t.audit_retention_days,
    }
}

fn status_to_pb(s: UserStatus) -> pb::UserStatus {
    match s {
        UserStatus::Unconfirmed => pb::UserStatus::Unconfirmed,
        UserStatus::Confirmed => pb::UserStatus::Confirmed,
        UserStatus::ExternalProvider => pb::UserStatus::ExternalProvider,
        UserStatus::ResetRequired => pb::UserStatus::ResetRequired,
        UserStatus::ForceChangePassword => pb::UserStatus::ForceChangePassword,
    }
}

fn status_from_pb(raw: i32) -> Result<Option<UserStatus>, DomainError> {
    Ok(match pb::UserStatus::try_from(raw) {
        Ok(pb::UserStatus::Unspecified) => None,
        Ok(pb::UserStatus::Unconfirmed) => Some(UserStatus::Unconfirmed),
        Ok(pb::UserStatus::Confirmed) => Some(UserStatus::Confirmed),
        Ok(pb::UserStatus::ExternalProvider) => Some(UserStatus::ExternalProvider),
        Ok(pb::UserStatus::ResetRequired) => Some(UserStatus::ResetRequired),
        Ok(pb::UserStatus::ForceChangePassword) => Some(UserStatus::ForceChangePassword),
        Err(_) => {
            return Err(DomainError::invalid(
                "status",
                format!("{raw} is not a UserStatus value"),
            ));
        }
    })
}

pub fn user_to_pb(u: User) -> pb::User {
    let name = u.name().to_string();
    let profile = |f: ProfileField| u.profile(f).to_owned();
    pb::User {
        user_id: u.id.to_string(),
        email: u.email.as_str().to_owned(),
        display_name: u.display_name.clone(),
        enabled: Some(u.enabled),
        status: status_to_pb(u.status) as i32,
        custom_attributes: (0..CUSTOM_SLOTS)
            .filter(|&i| !u.custom[i].is_empty())
            .map(|i| (custom_key(i), u.custom[i].clone()))
            .collect(),
        external_id: u.external_id.clone().unwrap_or_default(),
        given_name: profile(ProfileField::GivenName),
        family_name: profile(ProfileField::FamilyName),
        title: profile(ProfileField::Title),
        department: profile(ProfileField::Department),
        company: profile(ProfileField::Company),
        job_role: profile(ProfileField::JobRole),
        phone: profile(ProfileField::Phone),
        mobile: profile(ProfileField::Mobile),
        locale: profile(ProfileField::Locale),
        time_zone: profile(ProfileField::TimeZone),
        note: profile(ProfileField::Note),
        create_time: timestamp(u.create_time),
        update_time: timestamp(u.update_time),
        etag: u.revision.etag(),
        role: role_to_pb(u.role) as i32,
        capabilities: Some(pb::Capabilities {
            user_management: u.capabilities.user_management,
            export_users: u.capabilities.export_users,
        }),
        name,
    }
}

pub fn role_to_pb(role: TenantRole) -> pb::TenantRole {
    match role {
        TenantRole::Member => pb::TenantRole::Member,
        TenantRole::Admin => pb::TenantRole::Admin,
        TenantRole::Owner => pb::TenantRole::Owner,
    }
}

pub fn role_from_pb(raw: i32) -> Result<TenantRole, DomainError> {
    match pb::TenantRole::try_from(raw) {
        Ok(pb::TenantRole::Member) => Ok(TenantRole::Member),
        Ok(pb::TenantRole::Admin) => Ok(TenantRole::Admin),
        Ok(pb::TenantRole::Owner) => Ok(TenantRole::Owner),
        _ => Err(DomainError::invalid(
            "role",
            "is required: TENANT_ROLE_MEMBER or TENANT_ROLE_ADMIN",
        )),
    }
}

/// The writable fields of a protobuf user; output-only fields are ignored.
pub fn user_input(u: pb::User) -> Result<UserInput, DomainError> {
    let mut custom: Vec<(String, String)> = u.custom_attributes.into_iter().collect();
    custom.sort();
    let profile = [
        (ProfileField::GivenName, u.given_name),
        (ProfileField::FamilyName, u.family_name),
        (ProfileField::Title, u.title),
        (ProfileField::Department, u.department),
        (ProfileField::Company, u.company),
        (ProfileField::JobRole, u.job_role),
        (ProfileField::Phone, u.phone),
        (ProfileField::Mobile, u.mobile),
        (ProfileField::Locale, u.locale),
        (ProfileField::TimeZone, u.time_zone),
        (ProfileField::Note, u.note),
    ];
    Ok(UserInput {
        email: u.email,
        display_name: u.display_name,
        enabled: u.enabled,
        status: status_from_pb(u.status)?,
        custom,
        external_id: u.external_id,
        profile: profile.into(),
    })
}
