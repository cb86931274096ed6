//! API keys bound to a user (a key made while acting for them acts for
//! them, judged by their role and state at each call), and a change number
//! on every key row so servers re-read only the keys that changed.
//!
//! `api_key_counter` holds the last change number. Every key write takes it
//! (`UPDATE ... SET seq = seq + 1`) first in its transaction, so key writes
//! run one at a time and their numbers are in commit order: a server that
//! has read up to number N and reads `change_seq > N` never skips a write
//! that committed later with a smaller number. The same lock makes the
//! per-tenant key quota and the last-operator-key guard exact under races.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    ChangeSeq,
    TenantId,
}

#[derive(DeriveIden)]
enum ApiKeyCounter {
    Table,
    Id,
    Seq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::UserId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::ChangeSeq).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_change_seq")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::ChangeSeq)
                    .col(ApiKeys::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_tenant")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::TenantId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeyCounter::Table)
                    .col(integer(ApiKeyCounter::Id).primary_key())
                    .col(big_integer(ApiKeyCounter::Seq))
                    .to_owned(),
            )
            .await?;
        let mut first = Query::insert();
        first
            .into_table(ApiKeyCounter::Table)
            .columns([ApiKeyCounter::Id, ApiKeyCounter::Seq])
            .values([1.into(), 0.into()])
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        manager.exec_stmt(first).await
    }
}
