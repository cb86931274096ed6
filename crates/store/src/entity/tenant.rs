//! `tenants`: one row per customer organization.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub display_name: String,
    pub seat_limit: i64,
    /// Seats in use, kept in step with inserts and deletes of users.
    pub user_count: i64,
    /// The custom attribute schema as JSON: ten `{label, required, visible}`.
    pub custom_attributes: String,
    pub create_time: i64,
    pub update_time: i64,
    pub revision: i64,
    /// The import job holding the tenant's FULL_SYNC lock, if any.
    pub sync_job: Option<Uuid>,
    /// When the lock holder last said it is alive (microseconds).
    pub sync_heartbeat: Option<i64>,
    /// The number of the tenant's last event (see migration 13).
    pub event_seq: i64,
    /// Changes when the tenant's change feed restarts (a restore).
    pub event_epoch: i64,
    /// Days its events are kept; 0 = the server's default.
    pub audit_retention_days: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
