//! Recomputes every user's email key with the stricter rule of December
//! 2026: the local part folded by NFKC, the domain in its DNS form (UTS #46
//! A-labels). Only addresses with non-ASCII characters or Punycode labels can
//! change. Two users whose addresses now share a key (`bob@bücher.example`
//! and `bob@xn--bcher-kva.example`, both created before the rule) cannot both
//! hold it: the first to hold it (in creation order, or because its key did
//! not change) keeps it, the other keeps its old key, and a warning names
//! both so an operator can merge or rename them.
//!
//! This migration calls the domain's live `email_key`; if that rule ever
//! changes again, a new migration recomputes the keys again.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use sea_orm_migration::prelude::*;
use userdir_domain::email::email_key;
use uuid::Uuid;

use crate::entity::user;

#[derive(DeriveMigrationName)]
pub struct Migration;

const PAGE: u64 = 5000;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let mut after: Option<Uuid> = None;
        let mut changed = 0u64;
        loop {
            // Ids are UUIDv7: this walks users in creation order.
            let mut page = user::Entity::find()
                .select_only()
                .columns([
                    user::Column::Id,
                    user::Column::TenantId,
                    user::Column::Email,
                    user::Column::EmailKey,
                ])
                .order_by_asc(user::Column::Id)
                .limit(PAGE);
            if let Some(after) = after {
                page = page.filter(user::Column::Id.gt(after));
            }
            let rows: Vec<(Uuid, String, String, String)> = page.into_tuple().all(db).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.0);
            for (id, tenant, email, old_key) in rows {
                let new_key = email_key(&email);
                if new_key == old_key {
                    continue;
                }
                let holder: Option<Uuid> = user::Entity::find()
                    .select_only()
                    .column(user::Column::Id)
                    .filter(user::Column::TenantId.eq(tenant.as_str()))
                    .filter(user::Column::EmailKey.eq(new_key.as_str()))
                    .into_tuple()
                    .one(db)
                    .await?;
                if let Some(holder) = holder {
                    tracing::warn!(
                        tenant = %tenant,
                        user = %id,
                        other = %holder,
                        "two users' emails are now the same address; this one keeps its old key: merge or rename them"
                    );
                    continue;
                }
                user::Entity::update_many()
                    .col_expr(user::Column::EmailKey, Expr::value(new_key))
                    .filter(user::Column::Id.eq(id))
                    .exec(db)
                    .await?;
                changed += 1;
            }
        }
        if changed > 0 {
            tracing::info!(changed, "email keys recomputed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sea_orm::ActiveValue::Set;
    use sea_orm::{Database, EntityTrait};
    use sea_orm_migration::MigratorTrait;
    use userdir_domain::email::Email;
    use userdir_domain::tenant::TenantId;
    use userdir_domain::text::{Revision, Timestamp};
    use userdir_domain::user::{User, UserId, UserStatus};

    use crate::entity::user;
    use crate::migration::Migrator;
    use crate::user_row::user_to_active;

    /// Keys stored by the old rule (NFC, lower case) are recomputed; of two
    /// users that now collide, the one already holding the key keeps it.
    #[tokio::test]
    async fn old_keys_are_recomputed_and_collisions_kept_apart() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, Some(3)).await.unwrap();
        // The store's connections do not enforce users -> tenants either.
        sea_orm::ConnectionTrait::execute_unprepared(&db, "PRAGMA foreign_keys = OFF")
            .await
            .unwrap();
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        let mut ids = Vec::new();
        for email in [
            "plain@example.com",
            "ｂｏｂ@bücher.example",
            "bob@xn--bcher-kva.example",
            "Ｃａｒｏｌ@Bücher.example",
        ] {
            let u = User {
                tenant: tenant.clone(),
                id: UserId::new(),
                email: Email::from_trusted(email.to_owned()),
                display_name: "x".into(),
                enabled: true,
                status: UserStatus::default(),
                custom: Default::default(),
                external_id: None,
                profile: Default::default(),
                create_time: Timestamp::now(),
                update_time: Timestamp::now(),
                revision: Revision(1),
                role: userdir_domain::access::TenantRole::Member,
                capabilities: userdir_domain::access::Capabilities::default(),
            };
            let mut row = user_to_active(&u);
            // Columns of later migrations.
            row.role = sea_orm::ActiveValue::NotSet;
            row.cap_user_management = sea_orm::ActiveValue::NotSet;
            row.cap_export_users = sea_orm::ActiveValue::NotSet;
            row.note = sea_orm::ActiveValue::NotSet;
            row.tenant_id = Set("acme".into());
            row.email_key = Set(email.to_lowercase());
            user::Entity::insert(row).exec_without_returning(&db).await.unwrap();
            ids.push(u.id.0);
        }
        Migrator::up(&db, None).await.unwrap();
        let mut keys = Vec::new();
        for id in ids {
            let row = user::Entity::find_by_id(id).one(&db).await.unwrap().unwrap();
            keys.push(row.email_key);
        }
        assert_eq!(
            keys,
            [
                "plain@example.com",
                "ｂｏｂ@bücher.example",
                "bob@xn--bcher-kva.example",
                "carol@xn--bcher-kva.example"
            ]
        );
    }
}
