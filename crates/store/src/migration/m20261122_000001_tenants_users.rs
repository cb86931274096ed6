//! Tenants and users.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    DisplayName,
    SeatLimit,
    UserCount,
    CustomAttributes,
    CreateTime,
    UpdateTime,
    Revision,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    TenantId,
    Email,
    EmailKey,
    DisplayName,
    Enabled,
    Status,
    ExternalId,
    CreateTime,
    UpdateTime,
    Revision,
}

const TEXT_COLUMNS: [&str; 20] = [
    "custom_01",
    "custom_02",
    "custom_03",
    "custom_04",
    "custom_05",
    "custom_06",
    "custom_07",
    "custom_08",
    "custom_09",
    "custom_10",
    "given_name",
    "family_name",
    "title",
    "department",
    "company",
    "job_role",
    "phone",
    "mobile",
    "locale",
    "time_zone",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(text(Tenants::Id).primary_key())
                    .col(text(Tenants::DisplayName))
                    .col(big_integer(Tenants::SeatLimit).default(0))
                    .col(big_integer(Tenants::UserCount).default(0))
                    .col(text(Tenants::CustomAttributes))
                    .col(big_integer(Tenants::CreateTime))
                    .col(big_integer(Tenants::UpdateTime))
                    .col(big_integer(Tenants::Revision))
                    .to_owned(),
            )
            .await?;

        let mut users = Table::create();
        users
            .table(Users::Table)
            .col(uuid(Users::Id).primary_key())
            .col(text(Users::TenantId))
            .col(text(Users::Email))
            .col(text(Users::EmailKey))
            .col(text(Users::DisplayName))
            .col(boolean(Users::Enabled))
            .col(text(Users::Status))
            .col(text_null(Users::ExternalId));
        for name in TEXT_COLUMNS {
            users.col(text(Alias::new(name)).default(""));
        }
        users
            .col(big_integer(Users::CreateTime))
            .col(big_integer(Users::UpdateTime))
            .col(big_integer(Users::Revision))
            .foreign_key(
                ForeignKey::create()
                    .name("fk_users_tenant")
                    .from(Users::Table, Users::TenantId)
                    .to(Tenants::Table, Tenants::Id),
            );
        manager.create_table(users.to_owned()).await?;

        // Uniqueness per tenant; the index names are matched in error mapping.
        let unique = [
            ("ux_users_email_key", Users::EmailKey),
            ("ux_users_external_id", Users::ExternalId),
        ];
        for (name, column) in unique {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Users::Table)
                        .col(Users::TenantId)
                        .col(column)
                        .unique()
                        .to_owned(),
                )
                .await?;
        }
        // Keyset paging in each supported order.
        let ordered = [
            ("ix_users_create_time", Users::CreateTime),
            ("ix_users_update_time", Users::UpdateTime),
            ("ix_users_display_name", Users::DisplayName),
        ];
        for (name, column) in ordered {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Users::Table)
                        .col(Users::TenantId)
                        .col(column)
                        .col(Users::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
