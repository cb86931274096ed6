//! The planner: decides every row of a batch against the users stored,
//! without touching the database. The rules of the modes, the match keys,
//! empty cells, uniqueness in the file and in the tenant, and seats on paper
//! for dry runs all live here.

use crate::repo::Imported;
use std::collections::{HashMap, HashSet};

use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

use super::columns::Column;
use super::rights;
use super::rows::{Key, PackedCells, Pending, Prepared, cell, failure, row_failure, row_input};
use super::seen::SeenKeys;
use super::{ImportMode, ImportOptions, MatchKey, RowFailure, RowOutcome, RowResult};
use crate::access::Caller;
use crate::email::Email;
use crate::error::DomainError;
use crate::repo::{Protection, RepoResult};
use crate::tenant::Tenant;
use crate::text::{Revision, Timestamp};
use crate::user::{User, UserMask};

/// What a written row needs to run again: its cells, packed while its
/// write is in flight (a transaction holds up to 20,000 rows), and its next attempt.
type Retry = (PackedCells, u8);

/// Runs of a row whose write keeps losing races with other writers (a
/// create beaten by another create of the same user, an update by another
/// update) before it fails.
pub(super) const ROW_ATTEMPTS: u8 = 3;

/// A decided batch: the results known before writing, and the writes. Once
/// written, only the results are kept until the transaction commits.
pub(super) struct Plan {
    pub(super) results: Vec<Option<RowResult>>,
    /// (slot in `results`, result if written) of each create and update.
    create_results: Vec<(usize, RowResult)>,
    /// The cells and attempt of each create and update that runs again if
    /// another writer gets there first between its lookup and its write.
    retries: Vec<Option<Retry>>,
    pub(super) creates: Vec<Imported>,
    update_results: Vec<(usize, RowResult)>,
    update_retries: Vec<Option<Retry>>,
    pub(super) updates: Vec<(Imported, Revision)>,
}

impl Plan {
    /// Rows this plan writes.
    pub(super) fn writes(&self) -> usize {
        self.creates.len() + self.updates.len()
    }

    /// Creates decided, written or not.
    pub(super) fn create_count(&self) -> usize {
        self.create_results.len()
    }

    /// Updates decided, written or not.
    pub(super) fn update_count(&self) -> usize {
        self.update_results.len()
    }
}

/// A batch checked by [`Planner::prepare`]: rows failed already, the
/// others, and the keys to look their users up by.
pub(super) struct Prepare {
    pub(super) results: Vec<Option<RowResult>>,
    pub(super) prepared: Vec<(usize, Prepared)>,
    pub(super) email_keys: Vec<String>,
    pub(super) external_ids: Vec<String>,
    pub(super) ids: Vec<Uuid>,
}

/// The decisions of one import: its tenant and options, and what it
/// remembers of the file so far.
pub(super) struct Planner {
    pub(super) tenant: Tenant,
    options: ImportOptions,
    /// Who imports: every row asks [`access::decide`] for them.
    caller: Caller,
    /// Match-key hash -> line of its first row.
    seen_keys: SeenKeys,
    /// Email-key hash -> line, when emails are not the match key.
    seen_emails: SeenKeys,
    /// External-id hash -> line, when external ids are not the match key.
    seen_external: SeenKeys,
    /// FULL_SYNC only: users the file names (16 bytes a user).
    pub(super) keep: HashSet<Uuid>,
    /// Dry runs: seats the file would take.
    dry_created: u64,
}

impl Planner {
    pub(super) fn new(tenant: Tenant, options: ImportOptions, caller: Caller) -> Self {
        Self {
            tenant,
            options,
            caller,
            seen_keys: SeenKeys::default(),
            seen_emails: SeenKeys::default(),
            seen_external: SeenKeys::default(),
            keep: HashSet::new(),
            dry_created: 0,
        }
    }

    /// Checks a batch's keys (format, duplicates in the file): the rows that
    /// failed already, the others, and the keys to look their users up by.
    pub(super) fn prepare(&mut self, batch: Vec<Pending>) -> Prepare {
        let mut results: Vec<Option<RowResult>> = vec![None; batch.len()];
        let mut prepared = Vec::with_capacity(batch.len());
        let (mut email_keys, mut external_ids, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (i, row) in batch.into_iter().enumerate() {
            let fail = |f: RowFailure| Some(RowResult::failed(row.line, String::new(), f));
            let cells = match row.cells {
                Ok(cells) => cells,
                Err(f) => {
                    results[i] = fail(f);
                    continue;
                }
            };
            let key = match self.key_of(&cells) {
                Ok(key) => key,
                Err(f) => {
                    results[i] = fail(f);
                    continue;
                }
            };
            if row.attempt == 0
                && let Some(hash) = key.hash()
                && let Some(first) = self.seen_keys.first_or_insert(hash, row.line)
            {
                let field = Column::for_key(self.options.match_key).field();
                results[i] = fail(failure(
                    "DUPLICATE_IN_FILE",
                    &field,
                    format!("the same {field} is on {first}"),
                ));
                continue;
            }
            match &key {
                Key::Email(e) => email_keys.push(e.key().to_owned()),
                Key::Id(id) => ids.push(*id),
                Key::External(x) => external_ids.push(x.clone()),
                Key::NewId => {}
            }
            // Secondary unique fields are looked up too, to report conflicts per row.
            if !matches!(key, Key::Email(_))
                && let Some(Ok(e)) = cell(&cells, Column::Email)
                    .filter(|v| !v.is_empty())
                    .map(|v| Email::parse("email", v.trim()))
            {
                email_keys.push(e.key().to_owned());
            }
            if let Some(x) = cell(&cells, Column::ExternalId).filter(|v| !v.is_empty()) {
                external_ids.push(x.to_owned());
            }
            prepared.push((
                i,
                Prepared {
                    line: row.line,
                    key,
                    cells,
                    attempt: row.attempt,
                },
            ));
        }

        email_keys.sort();
        email_keys.dedup();
        external_ids.sort();
        external_ids.dedup();
        Prepare {
            results,
            prepared,
            email_keys,
            external_ids,
            ids,
        }
    }

    /// Decides a staged batch whose lookup is done: every row's outcome,
    /// leaving creates and updates to write.
    pub(super) fn plan(
        &mut self,
        mut results: Vec<Option<RowResult>>,
        prepared: Vec<(usize, Prepared)>,
        existing: &[User],
    ) -> Plan {
        let by_id: HashMap<Uuid, &User> = existing.iter().map(|u| (u.id.0, u)).collect();
        let by_email: HashMap<&str, &User> = existing.iter().map(|u| (u.email.key(), u)).collect();
        let by_external: HashMap<&str, &User> = existing
            .iter()
            .filter_map(|u| u.external_id.as_deref().map(|x| (x, u)))
            .collect();

        let now = Timestamp::now();
        let mode = self.options.mode;
        let skip_empty = self.options.skip_empty_values;
        let mut plan = Plan {
            results: Vec::new(),
            create_results: Vec::new(),
            retries: Vec::new(),
            creates: Vec::new(),
            update_results: Vec::new(),
            update_retries: Vec::new(),
            updates: Vec::new(),
        };
        for (i, row) in prepared {
            let current = match &row.key {
                Key::Email(e) => by_email.get(e.key()).copied(),
                Key::Id(id) => by_id.get(id).copied(),
                Key::External(x) => by_external.get(x.as_str()).copied(),
                Key::NewId => None,
            };
            if let (None, Key::Id(id)) = (current, &row.key) {
                // Ids are the service's: a userid that names no user of
                // this tenant fails the same way whether it exists in
                // another tenant or nowhere (no oracle), and never becomes
                // the id of a new user.
                let f = failure(
                    "USER_NOT_FOUND",
                    "userid",
                    format!(
                        "no user of {} has id {id}; leave userid empty to create a new user",
                        self.tenant.id.resource_name()
                    ),
                );
                let email = cell(&row.cells, Column::Email).unwrap_or_default().to_owned();
                results[i] = Some(RowResult::failed(row.line, email, f));
                continue;
            }
            let outcome = match (current, mode) {
                (Some(user), ImportMode::CreateOnly) => Err(RowResult::done(row.line, RowOutcome::Skipped, user)),
                (None, ImportMode::UpdateOnly) => Err(RowResult {
                    line: row.line,
                    outcome: RowOutcome::Skipped,
                    user: String::new(),
                    email: cell(&row.cells, Column::Email).unwrap_or_default().to_owned(),
                    failure: None,
                }),
                (Some(user), _) => {
                    if mode == ImportMode::FullSync {
                        self.keep.insert(user.id.0);
                    }
                    Ok(self.update_of(user, &row, skip_empty))
                }
                (None, _) => Ok(self.create_of(&row, now)),
            };
            let outcome = outcome.map(|planned| planned.and_then(|p| self.permit(&row, current, p)));
            let planned = match outcome {
                Err(result) => {
                    results[i] = Some(result);
                    continue;
                }
                Ok(Err(f)) => {
                    let email = cell(&row.cells, Column::Email).unwrap_or_default().to_owned();
                    let user = current.map(|u| u.name().to_string()).unwrap_or_default();
                    results[i] = Some(RowResult {
                        line: row.line,
                        outcome: RowOutcome::Failed,
                        user,
                        email,
                        failure: Some(f),
                    });
                    continue;
                }
                Ok(Ok(planned)) => planned,
            };
            // Unique fields the row would take from another user, in the database or earlier in the file.
            if let Err(f) = self.check_unique(&planned, current, &by_email, &by_external, &row) {
                results[i] = Some(RowResult::failed(row.line, planned.email.as_str().to_owned(), f));
                continue;
            }
            match current {
                None => {
                    plan.create_results
                        .push((i, RowResult::done(row.line, RowOutcome::Created, &planned)));
                    let attempt = row.attempt + 1;
                    plan.retries
                        .push((attempt < ROW_ATTEMPTS).then(|| (PackedCells::pack(row.cells), attempt)));
                    plan.creates.push(Imported {
                        user: planned,
                        line: row.line,
                        paths: Vec::new(),
                    });
                }
                Some(user) if planned == *user => {
                    results[i] = Some(RowResult::done(row.line, RowOutcome::Unchanged, user));
                }
                Some(user) => {
                    let mut updated = planned;
                    updated.update_time = now;
                    updated.revision = user.revision.next();
                    plan.update_results
                        .push((i, RowResult::done(row.line, RowOutcome::Updated, &updated)));
                    let paths = crate::event::changed_user_paths(user, &updated);
                    plan.updates.push((
                        Imported {
                            user: updated,
                            line: row.line,
                            paths,
                        },
                        user.revision,
                    ));
                    let attempt = row.attempt + 1;
                    plan.update_retries
                        .push((attempt < ROW_ATTEMPTS).then(|| (PackedCells::pack(row.cells), attempt)));
                }
            }
        }

        plan.results = results;
        plan
    }

    fn key_of(&self, cells: &[(Column, String)]) -> Result<Key, RowFailure> {
        let value = |column: Column| cell(cells, column).unwrap_or_default().trim();
        match self.options.match_key {
            MatchKey::Email => Email::parse("email", value(Column::Email))
                .map(Key::Email)
                .map_err(|v| failure("INVALID_ARGUMENT", v.field, v.description)),
            MatchKey::UserId => match value(Column::UserId) {
                "" => Ok(Key::NewId),
                id => Uuid::parse_str(id).map(Key::Id).map_err(|_| {
                    failure(
                        "INVALID_ARGUMENT",
                        "userid",
                        format!("{id:?} is not a user id (a UUID)"),
                    )
                }),
            },
            MatchKey::ExternalId => match cell(cells, Column::ExternalId).unwrap_or_default() {
                "" => Err(failure(
                    "INVALID_ARGUMENT",
                    "external_id",
                    "external_id is empty; it is the match key",
                )),
                x => Ok(Key::External(x.to_owned())),
            },
        }
    }

    fn update_of(&self, user: &User, row: &Prepared, skip_empty: bool) -> Result<(User, UserMask), RowFailure> {
        let (input, mut mask) = row_input(&row.cells, skip_empty)?;
        let mut updated = user.clone();
        updated
            .write(input, &mask, &self.tenant.custom_attributes)
            .map_err(row_failure)?;
        // An export's `enabled` and `status` cells are in every row: only a
        // change of them disables anyone.
        mask.enabled &= updated.enabled != user.enabled;
        mask.status &= updated.status != user.status;
        Ok((updated, mask))
    }

    fn create_of(&self, row: &Prepared, now: Timestamp) -> Result<(User, UserMask), RowFailure> {
        let (input, mask) = row_input(&row.cells, false)?;
        let user =
            User::create(self.tenant.id.clone(), input, &self.tenant.custom_attributes, now).map_err(row_failure)?;
        Ok((user, mask))
    }

    /// The row as planned, if the caller may write it ([`rights::permit`]).
    fn permit(&self, row: &Prepared, current: Option<&User>, planned: (User, UserMask)) -> Result<User, RowFailure> {
        let (planned, mask) = planned;
        rights::permit(&self.caller, &self.tenant.id, &row.cells, current, &planned, &mask)?;
        Ok(planned)
    }

    /// Who a FULL_SYNC keeps although the file does not list them ([`rights::protection`]).
    pub(super) fn protection(&self) -> Result<Protection, DomainError> {
        rights::protection(&self.caller, &self.tenant.id, self.options.keep_admins, &self.keep)
    }

    /// The row's email and external id must not belong to another user, in
    /// the database or on an earlier line.
    fn check_unique(
        &mut self,
        planned: &User,
        current: Option<&User>,
        by_email: &HashMap<&str, &User>,
        by_external: &HashMap<&str, &User>,
        row: &Prepared,
    ) -> Result<(), RowFailure> {
        let line = row.line;
        let other = |found: Option<&&User>| found.is_some_and(|u| u.id != planned.id);
        if other(by_email.get(planned.email.key())) {
            return Err(failure(
                "EMAIL_ALREADY_EXISTS",
                "email",
                format!("{} belongs to another user of the tenant", planned.email),
            ));
        }
        if let Some(x) = &planned.external_id
            && other(by_external.get(x.as_str()))
        {
            return Err(failure(
                "EXTERNAL_ID_ALREADY_EXISTS",
                "external_id",
                format!("external id {x:?} belongs to another user of the tenant"),
            ));
        }
        let key = self.options.match_key;
        let email_changes = current.is_none_or(|c| c.email.key() != planned.email.key());
        // A row running again was checked against the file the first time.
        if key != MatchKey::Email && email_changes && row.attempt == 0 {
            let hash = xxh3_64(planned.email.key().as_bytes());
            if let Some(first) = self.seen_emails.first_or_insert(hash, line) {
                return Err(failure(
                    "DUPLICATE_IN_FILE",
                    "email",
                    format!("the same email is on {first}"),
                ));
            }
        }
        if key != MatchKey::ExternalId
            && row.attempt == 0
            && let Some(x) = &planned.external_id
            && current.is_none_or(|c| c.external_id.as_ref() != Some(x))
        {
            let hash = xxh3_64(x.as_bytes());
            if let Some(first) = self.seen_external.first_or_insert(hash, line) {
                return Err(failure(
                    "DUPLICATE_IN_FILE",
                    "external_id",
                    format!("the same external_id is on {first}"),
                ));
            }
        }
        Ok(())
    }

    /// A dry run's write outcomes: seats are taken on paper, in file order.
    pub(super) fn dry_run_outcomes(&mut self, plan: &Plan) -> Vec<RepoResult<()>> {
        let limit = u64::from(self.tenant.seat_limit);
        let mut outcomes = Vec::with_capacity(plan.writes());
        for _ in &plan.creates {
            if limit != 0 && u64::from(self.tenant.user_count) + self.dry_created >= limit {
                outcomes.push(Err(DomainError::SeatLimitExceeded {
                    tenant: self.tenant.id.to_string(),
                    limit: self.tenant.seat_limit,
                }));
            } else {
                self.dry_created += 1;
                outcomes.push(Ok(()));
            }
        }
        outcomes.extend(plan.updates.iter().map(|_| Ok(())));
        outcomes
    }

    /// The results of a written plan, in file order. Rows that lost a race
    /// with another writer go to `again`, to run once more.
    pub(super) fn complete(
        &mut self,
        plan: Plan,
        outcomes: Vec<RepoResult<()>>,
        again: &mut Vec<Pending>,
    ) -> Vec<RowResult> {
        let Plan {
            mut results,
            create_results,
            mut retries,
            update_results,
            update_retries,
            ..
        } = plan;
        retries.extend(update_retries);
        for (((i, done), written), retry) in create_results
            .into_iter()
            .chain(update_results)
            .zip(outcomes)
            .zip(retries)
        {
            results[i] = Some(match (written, retry) {
                (Ok(()), _) => done,
                // Another writer got there between this row's lookup and its
                // write: it created the same user (UPSERT: the row becomes an
                // update of that user, or unchanged; CREATE_ONLY: skipped),
                // or changed the user (the row applies to the new state, as
                // an UpdateUser without an etag does). The row runs again.
                (Err(DomainError::AlreadyExists { .. } | DomainError::EtagMismatch { .. }), Some((cells, attempt))) => {
                    again.push(Pending {
                        line: done.line,
                        cells: Ok(cells.unpack()),
                        attempt,
                    });
                    continue;
                }
                (Err(e), _) => RowResult::failed(done.line, done.email, row_failure(e)),
            });
        }
        results.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::access::{Principal, Scope, Scopes, TenantScope};
    use crate::import::DeclaredEncoding;
    use crate::tenant::TenantId;

    fn tenant() -> Tenant {
        Tenant {
            id: TenantId::parse("tenant", "acme").unwrap(),
            display_name: "Acme".into(),
            seat_limit: 0,
            custom_attributes: Default::default(),
            user_count: 0,
            audit_retention_days: 0,
            create_time: Timestamp::from_unix_micros(0),
            update_time: Timestamp::from_unix_micros(0),
            revision: Revision(1),
        }
    }

    fn options(mode: ImportMode, match_key: MatchKey, skip_empty_values: bool) -> ImportOptions {
        ImportOptions {
            mode,
            match_key,
            keep_admins: false,
            skip_empty_values,
            encoding: DeclaredEncoding::Auto,
            column_mapping: BTreeMap::new(),
            validate_only: false,
            allow_delete_all: false,
            max_delete_percent: 0,
            format: crate::import::FileFormat::Auto,
            sheet: String::new(),
        }
    }

    fn importer() -> Caller {
        Caller {
            request: Default::default(),
            principal: Principal::key(Uuid::from_u128(99)),
            tenants: TenantScope::One(tenant().id),
            scopes: Scopes::of(&[Scope::Read, Scope::Import]),
            act_as_users: false,
            expire_time: None,
            acting: None,
        }
    }

    fn stored(id: u128, email: &str, name: &str) -> User {
        User::sample(id, email, name)
    }

    fn row(line: u64, cells: &[(Column, &str)]) -> Pending {
        Pending {
            line,
            cells: Ok(cells.iter().map(|(c, v)| (*c, (*v).to_owned())).collect()),
            attempt: 0,
        }
    }

    /// Plans `rows` against `existing`: (line, outcome, failure reason) by line.
    fn decide(planner: &mut Planner, rows: Vec<Pending>, existing: &[User]) -> Vec<(u64, RowOutcome, String)> {
        let prepared = planner.prepare(rows);
        let plan = planner.plan(prepared.results, prepared.prepared, existing);
        let mut seen: Vec<(u64, RowOutcome, String)> = plan
            .results
            .iter()
            .flatten()
            .chain(plan.create_results.iter().map(|(_, r)| r))
            .chain(plan.update_results.iter().map(|(_, r)| r))
            .map(|r| {
                (
                    r.line,
                    r.outcome,
                    r.failure.as_ref().map(|f| f.reason.clone()).unwrap_or_default(),
                )
            })
            .collect();
        seen.sort_by_key(|s| s.0);
        seen
    }

    fn out(line: u64, outcome: RowOutcome, reason: &str) -> (u64, RowOutcome, String) {
        (line, outcome, reason.to_owned())
    }

    use Column::{DisplayName as Name, Email as Mail, UserId as Id};
    use RowOutcome::{Created, Failed, Skipped, Unchanged, Updated};

    /// Each mode's rule, row by row, against the users stored.
    #[test]
    fn the_modes() {
        let existing = [
            stored(1, "same@example.com", "Same"),
            stored(2, "old@example.com", "Old"),
        ];
        let rows = || {
            vec![
                row(2, &[(Mail, "same@example.com"), (Name, "Same")]),
                row(3, &[(Mail, "old@example.com"), (Name, "New name")]),
                row(4, &[(Mail, "new@example.com"), (Name, "New")]),
                row(5, &[(Mail, "NEW@example.com"), (Name, "Again")]),
                row(6, &[(Mail, "bad..dots@example.com"), (Name, "Bad")]),
            ]
        };
        let duplicate = out(5, Failed, "DUPLICATE_IN_FILE");
        let bad = out(6, Failed, "INVALID_ARGUMENT");
        let mut upsert = Planner::new(
            tenant(),
            options(ImportMode::Upsert, MatchKey::Email, false),
            importer(),
        );
        assert_eq!(
            decide(&mut upsert, rows(), &existing),
            [
                out(2, Unchanged, ""),
                out(3, Updated, ""),
                out(4, Created, ""),
                duplicate.clone(),
                bad.clone()
            ]
        );
        let mut create = Planner::new(
            tenant(),
            options(ImportMode::CreateOnly, MatchKey::Email, false),
            importer(),
        );
        assert_eq!(
            decide(&mut create, rows(), &existing),
            [
                out(2, Skipped, ""),
                out(3, Skipped, ""),
                out(4, Created, ""),
                duplicate.clone(),
                bad.clone()
            ]
        );
        let mut update = Planner::new(
            tenant(),
            options(ImportMode::UpdateOnly, MatchKey::Email, false),
            importer(),
        );
        assert_eq!(
            decide(&mut update, rows(), &existing),
            [
                out(2, Unchanged, ""),
                out(3, Updated, ""),
                out(4, Skipped, ""),
                duplicate.clone(),
                bad.clone()
            ]
        );
        let mut sync = Planner::new(
            tenant(),
            options(ImportMode::FullSync, MatchKey::Email, false),
            importer(),
        );
        decide(&mut sync, rows(), &existing);
        let kept: HashSet<Uuid> = [Uuid::from_u128(1), Uuid::from_u128(2)].into();
        assert_eq!(sync.keep, kept, "a FULL_SYNC keeps the users its file names");
        // A later batch of the same file still knows its earlier keys.
        assert_eq!(
            decide(
                &mut upsert,
                vec![row(7, &[(Mail, "new@example.com"), (Name, "Late")])],
                &existing
            ),
            [out(7, Failed, "DUPLICATE_IN_FILE")]
        );
    }

    /// Empty cells: written as empty, or (skip_empty_values) left alone.
    #[test]
    fn empty_cells() {
        let mut user = stored(1, "a@example.com", "A");
        user.profile[crate::user::ProfileField::Department.index()] = "Sales".into();
        let existing = [user];
        let cells = [
            (Mail, "a@example.com"),
            (Name, "A"),
            (Column::Profile(crate::user::ProfileField::Department), ""),
        ];
        let mut clear = Planner::new(
            tenant(),
            options(ImportMode::Upsert, MatchKey::Email, false),
            importer(),
        );
        assert_eq!(
            decide(&mut clear, vec![row(2, &cells)], &existing),
            [out(2, Updated, "")]
        );
        let mut keep = Planner::new(tenant(), options(ImportMode::Upsert, MatchKey::Email, true), importer());
        assert_eq!(
            decide(&mut keep, vec![row(2, &cells)], &existing),
            [out(2, Unchanged, "")]
        );
    }

    /// Matching by user id: an id no user of the tenant has fails (never a
    /// new user with that id); an empty id creates one.
    #[test]
    fn matching_by_user_id() {
        let existing = [stored(1, "a@example.com", "A")];
        let mut planner = Planner::new(
            tenant(),
            options(ImportMode::Upsert, MatchKey::UserId, false),
            importer(),
        );
        let known = Uuid::from_u128(1).to_string();
        let unknown = Uuid::from_u128(42).to_string();
        assert_eq!(
            decide(
                &mut planner,
                vec![
                    row(2, &[(Id, &known), (Mail, "a@example.com"), (Name, "A renamed")]),
                    row(3, &[(Id, &unknown), (Mail, "x@example.com"), (Name, "X")]),
                    row(4, &[(Id, ""), (Mail, "y@example.com"), (Name, "Y")]),
                    row(5, &[(Id, "not-a-uuid"), (Mail, "z@example.com"), (Name, "Z")]),
                    row(6, &[(Id, ""), (Mail, "a@example.com"), (Name, "Takes A's email")]),
                ],
                &existing,
            ),
            [
                out(2, Updated, ""),
                out(3, Failed, "USER_NOT_FOUND"),
                out(4, Created, ""),
                out(5, Failed, "INVALID_ARGUMENT"),
                out(6, Failed, "EMAIL_ALREADY_EXISTS"),
            ]
        );
    }
}
