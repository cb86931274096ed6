//! Tenant roles (seeds 003 and 004): each user is a `member`, an `admin` or
//! the tenant's one `owner` (a partial unique index keeps it one, whatever
//! races), and members may hold two capabilities: user management and
//! export. Existing users become members.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
#[allow(clippy::enum_variant_names)] // column names: `cap_export_users`
enum Users {
    Table,
    Role,
    CapUserManagement,
    CapExportUsers,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Users::Role)
                .text()
                .not_null()
                .default("member")
                .to_owned(),
            ColumnDef::new(Users::CapUserManagement)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(Users::CapExportUsers)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        ];
        // One column per statement: SQLite alters a table one column at a time.
        for column in columns {
            manager
                .alter_table(Table::alter().table(Users::Table).add_column(column).to_owned())
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared("CREATE UNIQUE INDEX ux_users_one_owner ON users (tenant_id) WHERE role = 'owner'")
            .await?;
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX ix_users_role ON users (tenant_id, role) WHERE role <> 'member'")
            .await
            .map(|_| ())
    }
}
