//! Import jobs get a heartbeat (a job whose heartbeat is older than its
//! lease belongs to a server that stopped: it becomes INTERRUPTED), and the
//! users a FULL_SYNC deleted are recorded with its job, in the deletion's
//! own transaction.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ImportJobs {
    Table,
    HeartbeatTime,
    State,
}

#[derive(DeriveIden)]
enum ImportDeletions {
    Table,
    JobId,
    TenantId,
    UserId,
    Email,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ImportJobs::Table)
                    .add_column(big_integer_null(ImportJobs::HeartbeatTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_import_jobs_state")
                    .table(ImportJobs::Table)
                    .col(ImportJobs::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ImportDeletions::Table)
                    .col(uuid(ImportDeletions::JobId))
                    .col(text(ImportDeletions::TenantId))
                    .col(uuid(ImportDeletions::UserId))
                    .col(text(ImportDeletions::Email))
                    .primary_key(Index::create().col(ImportDeletions::JobId).col(ImportDeletions::UserId))
                    .to_owned(),
            )
            .await
    }
}
