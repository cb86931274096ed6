//! `events`: every change to a tenant's data, numbered densely per tenant
//! (see migration 13).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub id: Uuid,
    /// Microseconds since the epoch.
    pub time: i64,
    /// `user.created`...
    pub r#type: String,
    pub resource: String,
    pub revision: i64,
    pub api_key: Option<Uuid>,
    pub certificate: Option<String>,
    pub acting_user: Option<String>,
    pub acting_user_email: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub import_job: Option<Uuid>,
    pub import_line: Option<i64>,
    /// Field mask paths, comma-separated.
    pub changed_paths: String,
    /// The resource after the change: a user packed as `user_row::pack_user`
    /// does, anything else as the JSON of its row.
    pub after: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
