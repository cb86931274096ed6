//! Secrets the service keeps for itself, shared by every replica: the key
//! that seals page tokens, made here once, at random, when the database is
//! first migrated.

use sea_orm::{ActiveValue::Set, EntityTrait};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use userdir_domain::page_token::PageTokens;

use crate::entity::service_key;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ServiceKeys {
    Table,
    Name,
    Secret,
}

/// The name of the page-token key's row.
pub(crate) const PAGE_TOKEN_KEY: &str = "page_token";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ServiceKeys::Table)
                    .col(text(ServiceKeys::Name).primary_key())
                    .col(text(ServiceKeys::Secret))
                    .to_owned(),
            )
            .await?;
        let key = PageTokens::generate_key();
        service_key::Entity::insert(service_key::ActiveModel {
            name: Set(PAGE_TOKEN_KEY.to_owned()),
            secret: Set(key.iter().map(|b| format!("{b:02x}")).collect()),
        })
        .exec_without_returning(manager.get_connection())
        .await?;
        Ok(())
    }
}
