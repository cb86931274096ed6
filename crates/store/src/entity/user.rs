//! `users`: one row per user, scoped by `tenant_id`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub email: String,
    /// Lower-cased NFC email: unique per tenant.
    pub email_key: String,
    pub display_name: String,
    pub enabled: bool,
    pub status: String,
    /// NULL when unset, so the unique index ignores it.
    pub external_id: Option<String>,
    pub custom_01: String,
    pub custom_02: String,
    pub custom_03: String,
    pub custom_04: String,
    pub custom_05: String,
    pub custom_06: String,
    pub custom_07: String,
    pub custom_08: String,
    pub custom_09: String,
    pub custom_10: String,
    pub given_name: String,
    pub family_name: String,
    pub title: String,
    pub department: String,
    pub company: String,
    pub job_role: String,
    pub phone: String,
    pub mobile: String,
    pub locale: String,
    pub time_zone: String,
    /// Other information (seed 003), migration 12.
    pub note: String,
    pub create_time: i64,
    pub update_time: i64,
    pub revision: i64,
    /// `member`, `admin` or `owner` (one per tenant).
    pub role: String,
    pub cap_user_management: bool,
    pub cap_export_users: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The custom attribute columns, in slot order.
pub const CUSTOM_COLUMNS: [Column; 10] = [
    Column::Custom01,
    Column::Custom02,
    Column::Custom03,
    Column::Custom04,
    Column::Custom05,
    Column::Custom06,
    Column::Custom07,
    Column::Custom08,
    Column::Custom09,
    Column::Custom10,
];

/// The profile columns, in `ProfileField::ALL` order.
pub const PROFILE_COLUMNS: [Column; 11] = [
    Column::GivenName,
    Column::FamilyName,
    Column::Title,
    Column::Department,
    Column::Company,
    Column::JobRole,
    Column::Phone,
    Column::Mobile,
    Column::Locale,
    Column::TimeZone,
    Column::Note,
];
