//! API keys: who may call, and what they may do. Only the SHA-256 of each
//! key's secret is stored; the secret itself is shown once, when made.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    /// NULL: every tenant (an operator's key).
    TenantId,
    /// Bits of `userdir_domain::access::Scopes`.
    Scopes,
    ActAsUsers,
    CreateTime,
    ExpireTime,
    LastUsedTime,
    RevokeTime,
    /// Hex SHA-256 of the secret.
    SecretHash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(text(ApiKeys::Name))
                    .col(text_null(ApiKeys::TenantId))
                    .col(integer(ApiKeys::Scopes))
                    .col(boolean(ApiKeys::ActAsUsers))
                    .col(big_integer(ApiKeys::CreateTime))
                    .col(big_integer_null(ApiKeys::ExpireTime))
                    .col(big_integer_null(ApiKeys::LastUsedTime))
                    .col(big_integer_null(ApiKeys::RevokeTime))
                    .col(text(ApiKeys::SecretHash))
                    .to_owned(),
            )
            .await
    }
}
