//! PostgreSQL: drop the foreign key from users to tenants.
//!
//! PostgreSQL checks a foreign key with a trigger that runs a query per
//! inserted row; in a bulk import that was 16% of the database's time. The
//! store already guarantees the tenant: every write that adds users first
//! locks the tenant's row to take seats, and fails NOT_FOUND without it; and
//! tenants are never deleted. On SQLite, dropping a constraint means
//! rebuilding the table, so the declaration stays and the store's
//! connections do not enforce it (`PRAGMA foreign_keys = OFF`).

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE users DROP CONSTRAINT IF EXISTS fk_users_tenant")
            .await
            .map(|_| ())
    }
}
