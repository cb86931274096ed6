//! `import_jobs`: the record every import leaves behind.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "import_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub actor: String,
    /// The options as JSON.
    pub options: String,
    pub state: String,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub rows: i64,
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub skipped: i64,
    pub failed: i64,
    /// FULL_SYNC: users absent from the file but kept (owner, acting user, admins).
    pub protected: i64,
    pub error: String,
    /// Last sign of life of the server running the job (unix micros).
    pub heartbeat_time: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
