//! `ApiKeyRepository` on sea-orm.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder};
use userdir_domain::access::Scopes;
use userdir_domain::apikey::{ApiKey, SecretHash};
use userdir_domain::repo::{ApiKeyRepository, RepoResult};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use uuid::Uuid;

use crate::Store;
use crate::convert::corrupt;
use crate::entity::api_key::{ActiveModel, Column, Entity, Model};

fn key_from_row(row: Model) -> RepoResult<ApiKey> {
    let micros = Timestamp::from_unix_micros;
    Ok(ApiKey {
        id: row.id,
        name: row.name,
        tenant: row
            .tenant_id
            .map(|t| TenantId::parse("tenant_id", &t).map_err(|e| corrupt("API key tenant", e)))
            .transpose()?,
        scopes: Scopes::from_bits(u8::try_from(row.scopes).unwrap_or(0)),
        act_as_users: row.act_as_users,
        creator: row.creator,
        create_time: micros(row.create_time),
        expire_time: row.expire_time.map(micros),
        last_used_time: row.last_used_time.map(micros),
        revoke_time: row.revoke_time.map(micros),
        hash: SecretHash::from_hex(&row.secret_hash).ok_or_else(|| corrupt("API key hash", "not 64 hex digits"))?,
    })
}

impl ApiKeyRepository for Store {
    async fn insert_api_key(&self, key: &ApiKey) -> RepoResult<()> {
        let row = ActiveModel {
            id: Set(key.id),
            name: Set(key.name.clone()),
            tenant_id: Set(key.tenant.as_ref().map(|t| t.as_str().to_owned())),
            scopes: Set(i32::from(key.scopes.bits())),
            act_as_users: Set(key.act_as_users),
            creator: Set(key.creator.clone()),
            create_time: Set(key.create_time.unix_micros()),
            expire_time: Set(key.expire_time.map(Timestamp::unix_micros)),
            last_used_time: Set(key.last_used_time.map(Timestamp::unix_micros)),
            revoke_time: Set(key.revoke_time.map(Timestamp::unix_micros)),
            secret_hash: Set(key.hash.to_hex()),
        };
        Entity::insert(row)
            .exec_without_returning(self.writer())
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    async fn list_api_keys(&self) -> RepoResult<Vec<ApiKey>> {
        Entity::find()
            .order_by_asc(Column::CreateTime)
            .order_by_asc(Column::Id)
            .all(self.connection())
            .await
            .map_err(|e| self.db_error(e))?
            .into_iter()
            .map(key_from_row)
            .collect()
    }

    async fn revoke_api_key(&self, id: Uuid, at: Timestamp) -> RepoResult<bool> {
        let result = Entity::update_many()
            .col_expr(Column::RevokeTime, sea_orm::sea_query::Expr::value(at.unix_micros()))
            .filter(Column::Id.eq(id))
            .filter(Column::RevokeTime.is_null())
            .exec(self.writer())
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(result.rows_affected == 1)
    }

    async fn touch_api_keys(&self, used: &[(Uuid, Timestamp)]) -> RepoResult<()> {
        for (id, at) in used {
            let at = at.unix_micros();
            Entity::update_many()
                .col_expr(Column::LastUsedTime, sea_orm::sea_query::Expr::value(at))
                .filter(Column::Id.eq(*id))
                .filter(Column::LastUsedTime.is_null().or(Column::LastUsedTime.lt(at)))
                .exec(self.writer())
                .await
                .map_err(|e| self.db_error(e))?;
        }
        Ok(())
    }
}
