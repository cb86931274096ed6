//! An event's `after`: the resource as the change left it. A user is packed
//! as the import's redo packs it ([`pack_user`]: compact, and already built
//! for every imported row); anything else is the JSON of its row, read back
//! through the row's own conversion. A key's row never carries its hash.

use sea_orm::ActiveValue::Set;
use sea_orm::TryIntoModel;
use userdir_domain::event::Image;
use userdir_domain::repo::RepoResult;
use userdir_domain::tenant::TenantId;

use crate::api_keys::{key_from_row, key_to_active};
use crate::convert::{corrupt, tenant_from_row, tenant_to_active};
use crate::import_jobs::{job_from_row, job_to_active};
use crate::user_row::{pack_user, unpack_user};

/// Which kind of image an event type carries: its type's prefix.
fn kind(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or_default()
}

fn json<M: serde::Serialize>(model: Result<M, sea_orm::DbErr>) -> String {
    // Every field is set, and a row's fields always serialize.
    model
        .ok()
        .and_then(|m| serde_json::to_string(&m).ok())
        .unwrap_or_default()
}

pub(crate) fn encode(image: &Image) -> String {
    match image {
        Image::User(user) => pack_user(user),
        Image::Tenant(tenant) => {
            let mut row = tenant_to_active(tenant);
            row.user_count = Set(i64::from(tenant.user_count));
            row.sync_job = Set(None);
            row.sync_heartbeat = Set(None);
            row.event_seq = Set(0);
            row.event_epoch = Set(0);
            json(row.try_into_model())
        }
        Image::ApiKey(key) => {
            let mut row = key_to_active(key, 0);
            row.secret_hash = Set(userdir_domain::apikey::SecretHash::redacted().to_hex());
            json(row.try_into_model())
        }
        Image::ImportJob(job) => json(job_to_active(job).try_into_model()),
    }
}

pub(crate) fn decode(event_type: &str, after: &str, tenant: &TenantId) -> RepoResult<Image> {
    let bad = |e: serde_json::Error| corrupt("event image", e);
    Ok(match kind(event_type) {
        "user" => Image::User(Box::new(unpack_user(after, tenant)?)),
        "tenant" => Image::Tenant(Box::new(tenant_from_row(serde_json::from_str(after).map_err(bad)?)?)),
        "api_key" => Image::ApiKey(key_from_row(serde_json::from_str(after).map_err(bad)?)?),
        "import" => Image::ImportJob(job_from_row(serde_json::from_str(after).map_err(bad)?)?),
        other => return Err(corrupt("event type", other)),
    })
}
