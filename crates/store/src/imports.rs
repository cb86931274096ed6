//! `ImportRepository` on sea-orm: job records, the FULL_SYNC lock, and batch
//! reads and writes of users; the bulk write, packed rows, seats, job counts
//! and FULL_SYNC's deletion live in modules of their own.

use sea_orm::ActiveValue::NotSet;
use sea_orm::sea_query::extension::postgres::PgFunc;
use sea_orm::sea_query::{ArrayType, Expr, Value};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};
use userdir_domain::event::{Change, EventType, Origin};
use userdir_domain::import::{ImportJob, ImportState};
use userdir_domain::repo::{AbsentSweep, ImportRepository, RepoResult, Swept, SyncLock};
use userdir_domain::tenant::TenantId;
use userdir_domain::text::Timestamp;
use userdir_domain::user::User;
use userdir_domain::{DomainError, ResourceKind};
use uuid::Uuid;

use crate::entity::{import_job, tenant, user};
use crate::import_jobs::{job_from_row, job_to_active};
use crate::import_write::StoreImportWrite;
use crate::query::users_by_ids;
use crate::tenant_write::TenantWrite;
use crate::tenants::tenant_not_found;
use crate::user_row::{PACK_SQLITE, unpack_users};
use crate::user_row::{select_row_columns, user_by_index};
use crate::{Store, db_error};

/// Records `import.finished` for job `id`, as its row now reads in `w`.
async fn record_job_end(w: &mut TenantWrite, id: Uuid) -> RepoResult<()> {
    let row = import_job::Entity::find_by_id(id)
        .one(&w.txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| DomainError::storage(format!("import job {id} vanished while it ended")))?;
    let job = job_from_row(row)?;
    w.record(&Change::import_job(EventType::ImportFinished, &job));
    Ok(())
}

impl ImportRepository for Store {
    async fn insert_import_job(&self, job: &ImportJob, origin: &Origin) -> RepoResult<()> {
        let mut w = TenantWrite::begin(self, &job.tenant, origin, "insert_import_job").await?;
        import_job::Entity::insert(job_to_active(job))
            .exec_without_returning(&w.txn)
            .await
            .map_err(|e| self.db_error(e))?;
        w.record(&Change::import_job(EventType::ImportStarted, job));
        w.commit(self).await
    }

    async fn update_import_job(&self, job: &ImportJob, origin: &Origin) -> RepoResult<()> {
        let mut row = job_to_active(job);
        if !job.options.validate_only {
            // Counted by the transactions that wrote the rows.
            row.created = NotSet;
            row.updated = NotSet;
            row.deleted = NotSet;
        }
        if job.state == ImportState::Running {
            import_job::Entity::update(row)
                .exec(self.writer())
                .await
                .map_err(|e| self.db_error(e))?;
            return Ok(());
        }
        // The write that ends the job records how it ended, with the
        // counts as the write transactions kept them.
        let mut w = TenantWrite::begin(self, &job.tenant, origin, "end_import_job").await?;
        let ended = import_job::Entity::update_many()
            .set(row.clone())
            .filter(import_job::Column::Id.eq(job.id))
            .filter(import_job::Column::TenantId.eq(job.tenant.as_str()))
            .filter(import_job::Column::State.eq(ImportState::Running.as_str()))
            .exec(&w.txn)
            .await
            .map_err(|e| self.db_error(e))?;
        if ended.rows_affected == 1 {
            record_job_end(&mut w, job.id).await?;
        } else {
            // Marked INTERRUPTED meanwhile (its lease ran out): this server
            // knows better how it ended, and says so; the end was recorded.
            import_job::Entity::update(row)
                .exec(&w.txn)
                .await
                .map_err(|e| self.db_error(e))?;
        }
        w.commit(self).await
    }

    async fn touch_import_job(&self, tenant: &TenantId, id: Uuid, now: Timestamp) -> RepoResult<()> {
        import_job::Entity::update_many()
            .col_expr(import_job::Column::HeartbeatTime, Expr::value(now.unix_micros()))
            .filter(import_job::Column::Id.eq(id))
            .filter(import_job::Column::TenantId.eq(tenant.as_str()))
            .filter(import_job::Column::State.eq(ImportState::Running.as_str()))
            .exec(self.writer())
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    async fn interrupt_import_jobs(
        &self,
        stale_before: Timestamp,
        job: Option<(&TenantId, Uuid)>,
        why: &str,
    ) -> RepoResult<u64> {
        let stale = Condition::all()
            .add(import_job::Column::State.eq(ImportState::Running.as_str()))
            .add(
                Condition::any()
                    .add(import_job::Column::HeartbeatTime.is_null())
                    .add(import_job::Column::HeartbeatTime.lt(stale_before.unix_micros())),
            );
        let mut find = import_job::Entity::find()
            .select_only()
            .column(import_job::Column::TenantId)
            .column(import_job::Column::Id)
            .filter(stale.clone());
        if let Some((tenant, id)) = job {
            find = find
                .filter(import_job::Column::Id.eq(id))
                .filter(import_job::Column::TenantId.eq(tenant.as_str()));
        }
        let jobs: Vec<(String, Uuid)> = find
            .into_tuple()
            .all(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        let mut interrupted = 0;
        // One job at a time, each in its tenant's write with its event.
        for (tenant, id) in jobs {
            let tenant = TenantId::parse("tenant_id", &tenant)
                .map_err(|e| DomainError::storage(format!("stored import job {id} has an unreadable tenant: {e}")))?;
            let mut w = TenantWrite::begin(self, &tenant, &Origin::server(), "interrupt_import_job").await?;
            let result = import_job::Entity::update_many()
                .col_expr(
                    import_job::Column::State,
                    Expr::value(ImportState::Interrupted.as_str()),
                )
                .col_expr(import_job::Column::EndTime, Expr::value(Timestamp::now().unix_micros()))
                .col_expr(import_job::Column::Error, Expr::value(why))
                .filter(stale.clone())
                .filter(import_job::Column::Id.eq(id))
                .exec(&w.txn)
                .await
                .map_err(|e| self.db_error(e))?;
            if result.rows_affected == 1 {
                record_job_end(&mut w, id).await?;
                interrupted += 1;
            }
            w.commit(self).await?;
        }
        Ok(interrupted)
    }

    async fn get_import_job(&self, tenant: &TenantId, id: Uuid) -> RepoResult<ImportJob> {
        let row = import_job::Entity::find_by_id(id)
            .filter(import_job::Column::TenantId.eq(tenant.as_str()))
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        match row {
            Some(row) => job_from_row(row),
            None => Err(DomainError::NotFound {
                kind: ResourceKind::ImportJob,
                name: format!("{}/importJobs/{id}", tenant.resource_name()),
            }),
        }
    }

    async fn list_import_jobs(
        &self,
        tenant: &TenantId,
        before: Option<Uuid>,
        limit: u32,
    ) -> RepoResult<Vec<ImportJob>> {
        let mut query = import_job::Entity::find()
            .filter(import_job::Column::TenantId.eq(tenant.as_str()))
            .order_by_desc(import_job::Column::Id)
            .limit(u64::from(limit));
        if let Some(before) = before {
            query = query.filter(import_job::Column::Id.lt(before));
        }
        let rows = query.all(self.connection()).await.map_err(|e| self.db_error(e))?;
        rows.into_iter().map(job_from_row).collect()
    }

    async fn acquire_sync_lock(
        &self,
        tenant: &TenantId,
        job: Uuid,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> RepoResult<SyncLock> {
        let row = tenant::Entity::find_by_id(tenant.as_str())
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        let row = row.ok_or_else(|| tenant_not_found(tenant))?;
        if let (Some(holder), Some(beat)) = (row.sync_job, row.sync_heartbeat)
            && beat >= stale_before.unix_micros()
        {
            return Ok(SyncLock::Held(holder));
        }
        // Compare-and-swap on the holder we saw, so two starters cannot both win.
        let holder_unchanged = match row.sync_job {
            Some(holder) => tenant::Column::SyncJob.eq(holder),
            None => tenant::Column::SyncJob.is_null(),
        };
        let result = tenant::Entity::update_many()
            .col_expr(tenant::Column::SyncJob, Expr::value(job))
            .col_expr(tenant::Column::SyncHeartbeat, Expr::value(now.unix_micros()))
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .filter(holder_unchanged)
            .exec(self.writer())
            .await
            .map_err(|e| self.db_error(e))?;
        if result.rows_affected == 1 {
            return Ok(row.sync_job.map_or(SyncLock::Acquired, SyncLock::TakenOver));
        }
        let now_row = tenant::Entity::find_by_id(tenant.as_str())
            .one(self.connection())
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(SyncLock::Held(now_row.and_then(|r| r.sync_job).unwrap_or(job)))
    }

    async fn refresh_sync_lock(&self, tenant: &TenantId, job: Uuid, now: Timestamp) -> RepoResult<bool> {
        let result = tenant::Entity::update_many()
            .col_expr(tenant::Column::SyncHeartbeat, Expr::value(now.unix_micros()))
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .filter(tenant::Column::SyncJob.eq(job))
            .exec(self.writer())
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(result.rows_affected == 1)
    }

    async fn release_sync_lock(&self, tenant: &TenantId, job: Uuid) -> RepoResult<()> {
        tenant::Entity::update_many()
            .col_expr(tenant::Column::SyncJob, Expr::value(Option::<Uuid>::None))
            .col_expr(tenant::Column::SyncHeartbeat, Expr::value(Option::<i64>::None))
            .filter(tenant::Column::Id.eq(tenant.as_str()))
            .filter(tenant::Column::SyncJob.eq(job))
            .exec(self.writer())
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    async fn find_import_matches(
        &self,
        tenant: &TenantId,
        email_keys: &[String],
        external_ids: &[String],
        ids: &[Uuid],
    ) -> RepoResult<Vec<User>> {
        // PostgreSQL takes each list as one array parameter (`= ANY($n)`), so the
        // statement stays small and cheap to plan; SQLite gets `IN (...)`.
        let pg = self.backend() == DbBackend::Postgres;
        let strings = |v: &[String]| {
            let values = v.iter().map(|s| Value::String(Some(s.clone()))).collect();
            Expr::val(Value::Array(ArrayType::String, Some(Box::new(values))))
        };
        let mut terms = Vec::new();
        if !email_keys.is_empty() {
            terms.push(if pg {
                Expr::col(user::Column::EmailKey).eq(PgFunc::any(strings(email_keys)))
            } else {
                user::Column::EmailKey.is_in(email_keys.iter().map(String::as_str))
            });
        }
        if !external_ids.is_empty() {
            terms.push(if pg {
                Expr::col(user::Column::ExternalId).eq(PgFunc::any(strings(external_ids)))
            } else {
                user::Column::ExternalId.is_in(external_ids.iter().map(String::as_str))
            });
        }
        if pg && !ids.is_empty() {
            let values = ids.iter().map(|id| Value::Uuid(Some(*id))).collect();
            terms.push(Expr::col(user::Column::Id).eq(PgFunc::any(Expr::val(Value::Array(
                ArrayType::Uuid,
                Some(Box::new(values)),
            )))));
        }
        let of_tenant = || user::Entity::find().filter(user::Column::TenantId.eq(tenant.as_str()));
        if pg {
            if terms.is_empty() {
                return Ok(Vec::new());
            }
            let any = terms.into_iter().fold(Condition::any(), Condition::add);
            let rows = self
                .connection()
                .query_all(select_row_columns(of_tenant().filter(any)).as_query())
                .await
                .map_err(db_error)?;
            return rows.iter().map(|row| user_by_index(row, tenant)).collect();
        }
        // SQLite: one query per key, each on its own index (an OR of `id IN`
        // and `email_key IN` made SQLite scan the tenant for every batch: a
        // 100k re-import of an export by user id took 13.2 s instead of
        // 0.7 s; the ids by the primary key, see `users_by_ids`), each
        // batch coming back as one packed text value in one row: for 500
        // users one value to decode instead of 14,500.
        let mut found: Vec<User> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let by_id =
            (!ids.is_empty()).then(|| user::Entity::find().filter(users_by_ids(DbBackend::Sqlite, tenant, ids)));
        for select in terms.into_iter().map(|term| of_tenant().filter(term)).chain(by_id) {
            let packed: Option<Option<String>> = select
                .select_only()
                .column_as(Expr::cust(PACK_SQLITE.as_str()), "users")
                .into_tuple()
                .one(self.connection())
                .await
                .map_err(|e| self.db_error(e))?;
            let users = unpack_users(packed.flatten(), tenant)?;
            found.extend(users.into_iter().filter(|u| seen.insert(u.id.0)));
        }
        Ok(found)
    }

    type ImportWrite = StoreImportWrite;

    async fn begin_import_write(&self, tenant: &TenantId, job: Uuid, origin: &Origin) -> RepoResult<StoreImportWrite> {
        StoreImportWrite::begin(self, tenant, job, origin).await
    }

    fn writer_wanted(&self) -> bool {
        self.interactive_waiting()
    }

    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.system.name = self.system_name(), db.operation.name = "delete_absent_users"))]
    async fn delete_absent_users(&self, tenant: &TenantId, sweep: AbsentSweep<'_>) -> RepoResult<Swept> {
        crate::full_sync::delete_absent_users(self, tenant, sweep).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sea_orm::TransactionTrait;
    use userdir_domain::email::Email;
    use userdir_domain::repo::ImportWrite;
    use userdir_domain::text::Revision;
    use userdir_domain::user::UserStatus;

    use super::*;
    use crate::StoreOptions;
    use crate::bulk_insert::insert_or_fail;
    use crate::import_write::analyze_level;
    use crate::user_row::{pack_user, unpack_user};

    fn user(tenant: &TenantId, email: &str, external_id: Option<&str>) -> User {
        User {
            tenant: tenant.clone(),
            id: userdir_domain::user::UserId::new(),
            email: Email::from_trusted(email.to_owned()),
            display_name: String::new(),
            enabled: true,
            status: UserStatus::default(),
            custom: Default::default(),
            external_id: external_id.map(str::to_owned),
            profile: Default::default(),
            create_time: Timestamp::from_unix_micros(1),
            update_time: Timestamp::from_unix_micros(2),
            revision: Revision(3),
            role: userdir_domain::access::TenantRole::Member,
            capabilities: userdir_domain::access::Capabilities {
                user_management: true,
                export_users: false,
            },
        }
    }

    /// What SQLite packs into one text value reads back as the same users,
    /// whatever the text holds (commas, quotes, line breaks, tabs, `=`,
    /// non-ASCII) and with the external id unset, set, or starting with `=`.
    /// A user with nothing set, and one with text that quoting, escaping or
    /// separators could get wrong.
    fn awkward_users(tenant: &TenantId) -> [User; 2] {
        let mut plain = user(tenant, "plain@example.com", None);
        plain.enabled = false;
        let mut busy = user(tenant, "Busy+Tag@Example.com", Some("=HR,1"));
        busy.display_name = "髙橋 \"Ünïcødé\", Jr.\nline two\ttab".to_owned();
        busy.status = UserStatus::Confirmed;
        busy.custom[0] = "a,b;c".to_owned();
        busy.custom[9] = "=SUM(A1)".to_owned();
        busy.profile[0] = "Pia".to_owned();
        busy.profile[9] = "Asia/Tokyo".to_owned();
        busy.profile[userdir_domain::user::ProfileField::Note.index()] =
            "vegetarian, \"no\" nuts;\nsecond line 出張".to_owned();
        [plain, busy]
    }

    /// What a bulk write keeps for its row-by-row redo reads back as the
    /// same user.
    #[test]
    fn users_packed_for_the_redo_read_back_exactly() {
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        for user in awkward_users(&tenant) {
            assert_eq!(unpack_user(&pack_user(&user), &tenant).unwrap(), user);
        }
    }

    /// A user as the entity's model reads back as the same user (every
    /// field, the note included).
    #[test]
    fn users_as_entity_models_read_back_exactly() {
        use sea_orm::TryIntoModel as _;
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        for user in awkward_users(&tenant) {
            let model = crate::user_row::user_to_active(&user).try_into_model().unwrap();
            assert_eq!(crate::user_row::user_from_row(model).unwrap(), user);
        }
    }

    /// A migrated store on a SQLite file of its own, and the file's path.
    async fn sqlite_file_store(name: &str) -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("userdir-{name}-{}.db", Uuid::now_v7()));
        let store = Store::open(&StoreOptions::new(format!("sqlite://{}?mode=rwc", path.display())))
            .await
            .unwrap();
        (store, path)
    }

    /// Closes the store and removes its database files.
    async fn close_and_remove(store: Store, path: &std::path::Path) {
        store.close().await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn sqlite_packed_users_read_back_exactly() {
        let (store, path) = sqlite_file_store("pack").await;
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        let [plain, busy] = awkward_users(&tenant);
        let other = user(&tenant, "other@example.com", Some("HR-2"));
        let txn = store.writer().begin().await.unwrap();
        insert_or_fail(&txn, &tenant, &[plain.clone(), busy.clone(), other])
            .await
            .unwrap();
        txn.commit().await.unwrap();

        let keys = [plain.email.key().to_owned(), busy.email.key().to_owned()];
        let mut found = store.find_import_matches(&tenant, &keys, &[], &[]).await.unwrap();
        found.sort_by(|a, b| a.email.key().cmp(b.email.key()));
        assert_eq!(found, [busy, plain]);
        let nobody = ["nobody@example.com".to_owned()];
        let none = store.find_import_matches(&tenant, &nobody, &[], &[]).await.unwrap();
        assert_eq!(none, []);
        close_and_remove(store, &path).await;
    }

    /// The checkpoints run, once `n` have or after 5 s.
    async fn checkpoints_after_waiting_for(checkpointer: &crate::checkpoint::Checkpointer, n: u64) -> u64 {
        for _ in 0..500 {
            if checkpointer.done() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        checkpointer.done()
    }

    /// An import's commit, and a FULL_SYNC's deletions, leave the WAL
    /// checkpoint to the checkpointer task, off the writer's path.
    #[tokio::test]
    async fn sqlite_import_commits_are_checkpointed_beside_the_writer() {
        use userdir_domain::repo::TenantRepository;
        use userdir_domain::tenant::{Tenant, TenantSettings};

        let (store, path) = sqlite_file_store("checkpoint").await;
        let tenant = TenantId::parse("tenant_id", "acme").unwrap();
        let settings = TenantSettings {
            display_name: "Acme".to_owned(),
            ..Default::default()
        };
        let acme = Tenant::create(tenant.clone(), settings, Timestamp::now()).unwrap();
        let origin = userdir_domain::event::Origin::server();
        store.insert_tenant(&acme, &origin).await.unwrap();
        let checkpointer = store.checkpointer.clone().unwrap();
        assert_eq!(checkpointer.done(), 0);

        let mut write = store
            .begin_import_write(&tenant, Uuid::now_v7(), &origin)
            .await
            .unwrap();
        let row = userdir_domain::repo::Imported {
            user: user(&tenant, "a@example.com", None),
            line: 2,
            paths: Vec::new(),
        };
        write.write(&[row], &[]).await.unwrap();
        assert_eq!(write.commit().await.unwrap().len(), 1);
        assert_eq!(checkpoints_after_waiting_for(&checkpointer, 1).await, 1);

        let sweep = userdir_domain::repo::AbsentSweep {
            job: Uuid::now_v7(),
            created_before: Timestamp::now(),
            keep: &std::collections::HashSet::new(),
            protect: &userdir_domain::repo::Protection::default(),
            guard: None,
            dry_run: false,
            origin: &origin,
        };
        let swept = store.delete_absent_users(&tenant, sweep).await.unwrap();
        assert_eq!(swept.deleted.len(), 1);
        assert_eq!(checkpoints_after_waiting_for(&checkpointer, 2).await, 2);
        close_and_remove(store, &path).await;
    }

    #[test]
    fn statistics_are_refreshed_at_each_doubling() {
        let levels: Vec<u32> = [0, 24_999, 25_000, 49_999, 50_000, 99_999, 100_000, 1_000_000]
            .into_iter()
            .map(analyze_level)
            .collect();
        assert_eq!(levels, [0, 0, 1, 1, 2, 2, 3, 6]);
    }
}
