//! Import jobs (the import history) and the per-tenant FULL_SYNC lock.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    SyncJob,
    SyncHeartbeat,
}

#[derive(DeriveIden)]
enum ImportJobs {
    Table,
    Id,
    TenantId,
    Actor,
    Options,
    State,
    StartTime,
    EndTime,
    Rows,
    Created,
    Updated,
    Unchanged,
    Deleted,
    Skipped,
    Failed,
    Error,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(uuid_null(Tenants::SyncJob))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(big_integer_null(Tenants::SyncHeartbeat))
                    .to_owned(),
            )
            .await?;
        let mut jobs = Table::create();
        jobs.table(ImportJobs::Table)
            .col(uuid(ImportJobs::Id).primary_key())
            .col(text(ImportJobs::TenantId))
            .col(text(ImportJobs::Actor))
            .col(text(ImportJobs::Options))
            .col(text(ImportJobs::State))
            .col(big_integer(ImportJobs::StartTime))
            .col(big_integer_null(ImportJobs::EndTime));
        for count in [
            ImportJobs::Rows,
            ImportJobs::Created,
            ImportJobs::Updated,
            ImportJobs::Unchanged,
            ImportJobs::Deleted,
            ImportJobs::Skipped,
            ImportJobs::Failed,
        ] {
            jobs.col(big_integer(count).default(0));
        }
        jobs.col(text(ImportJobs::Error));
        manager.create_table(jobs.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_import_jobs_tenant")
                    .table(ImportJobs::Table)
                    .col(ImportJobs::TenantId)
                    .col(ImportJobs::Id)
                    .to_owned(),
            )
            .await
    }
}
