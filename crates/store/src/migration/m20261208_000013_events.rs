//! Events: every change to a tenant's data, in the transaction of the
//! change. `tenants.event_seq` is the number of the tenant's last event:
//! every write of a tenant locks its row first (`seats::lock_tenant`), reads
//! the number there and numbers its events after it, so numbers are dense
//! and in commit order per tenant (a writer waits for the previous one's
//! commit before it reads the number). `tenants.event_epoch` changes when
//! the feed restarts (a restore): a cursor from another epoch is refused.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    EventSeq,
    EventEpoch,
    AuditRetentionDays,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    TenantId,
    Seq,
    Id,
    Time,
    Type,
    Resource,
    Revision,
    ApiKey,
    Certificate,
    ActingUser,
    ActingUserEmail,
    RequestId,
    TraceId,
    ImportJob,
    ImportLine,
    ChangedPaths,
    After,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(ColumnDef::new(Tenants::EventSeq).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(ColumnDef::new(Tenants::EventEpoch).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(
                        ColumnDef::new(Tenants::AuditRetentionDays)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        let mut events = Table::create();
        events
            .table(Events::Table)
            .col(string(Events::TenantId))
            .col(big_integer(Events::Seq))
            .col(uuid(Events::Id))
            .col(big_integer(Events::Time))
            .col(string(Events::Type))
            .col(string(Events::Resource))
            .col(big_integer(Events::Revision))
            .col(uuid_null(Events::ApiKey))
            .col(string_null(Events::Certificate))
            .col(string_null(Events::ActingUser))
            .col(string_null(Events::ActingUserEmail))
            .col(string_null(Events::RequestId))
            .col(string_null(Events::TraceId))
            .col(uuid_null(Events::ImportJob))
            .col(big_integer_null(Events::ImportLine))
            .col(string(Events::ChangedPaths))
            .col(text(Events::After))
            .primary_key(Index::create().col(Events::TenantId).col(Events::Seq));
        if manager.get_database_backend() == sea_orm::DbBackend::Sqlite {
            // The table is its primary key's tree (events arrive in its
            // order): one tree less to write per event than a rowid table
            // with a separate primary-key index.
            events.extra("WITHOUT ROWID");
        }
        manager.create_table(events).await?;
        // A resource's history (the audit log's `resource = ...`). The
        // other filters read the tenant's events newest first and keep the
        // matches; time follows the numbers, so the purge walks them in
        // order too. Every index costs each imported row one more write.
        manager
            .create_index(
                Index::create()
                    .name("ix_events_resource")
                    .table(Events::Table)
                    .col(Events::TenantId)
                    .col(Events::Resource)
                    .col(Events::Seq)
                    .to_owned(),
            )
            .await
    }
}
