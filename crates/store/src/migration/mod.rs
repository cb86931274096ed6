//! Schema migrations, append-only: never edit a migration that has shipped.

use sea_orm_migration::prelude::*;

mod m20261122_000001_tenants_users;
mod m20261122_000002_import_jobs;
mod m20261123_000003_users_tenant_fk;
mod m20261202_000004_email_keys;
mod m20261202_000005_import_job_lease;
pub(crate) mod m20261202_000006_service_keys;
mod m20261202_000007_api_keys;
mod m20261202_000008_api_key_creator;
mod m20261202_000009_user_roles;
mod m20261203_000010_import_protected;
mod m20261206_000011_api_key_changes;
mod m20261207_000012_user_note;
mod m20261208_000013_events;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_tenants_users::Migration),
            Box::new(m20261122_000002_import_jobs::Migration),
            Box::new(m20261123_000003_users_tenant_fk::Migration),
            Box::new(m20261202_000004_email_keys::Migration),
            Box::new(m20261202_000005_import_job_lease::Migration),
            Box::new(m20261202_000006_service_keys::Migration),
            Box::new(m20261202_000007_api_keys::Migration),
            Box::new(m20261202_000008_api_key_creator::Migration),
            Box::new(m20261202_000009_user_roles::Migration),
            Box::new(m20261203_000010_import_protected::Migration),
            Box::new(m20261206_000011_api_key_changes::Migration),
            Box::new(m20261207_000012_user_note::Migration),
            Box::new(m20261208_000013_events::Migration),
        ]
    }
}
