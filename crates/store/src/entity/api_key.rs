//! `api_keys`: one row per API key, its secret only as a SHA-256 (hex).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub tenant_id: Option<String>,
    pub scopes: i32,
    pub act_as_users: bool,
    pub creator: String,
    pub create_time: i64,
    pub expire_time: Option<i64>,
    pub last_used_time: Option<i64>,
    pub revoke_time: Option<i64>,
    pub secret_hash: String,
    /// The user the key acts for (a key made while acting).
    pub user_id: Option<Uuid>,
    /// The number of the key's last write (see migration 11).
    pub change_seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
