//! The directory: the domain's entry point, generic over the store, and
//! what its services share (the permission checks as errors, page
//! tokens). The operations live beside it, one file per resource.

use std::sync::Arc;

use crate::access::{self, Action, Caller, Target};
use crate::admission::{Admission, StreamLimits};
use crate::error::{DomainError, ResourceKind};
use crate::import::ImportLimits;
use crate::page_token::PageTokens;
use crate::repo::{TenantRepository, UserRepository};
use crate::tenant::TenantId;
use crate::text::Revision;
use crate::user::User;

/// A page of results and the token of the next one (empty on the last page).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// Entry point of the domain, generic over the store.
pub struct Directory<R> {
    pub(super) repo: Arc<R>,
    pub(super) import_limits: ImportLimits,
    pub(super) tokens: PageTokens,
    pub(super) admission: Admission,
    /// Live API keys a tenant (or the operators) may hold at once.
    pub(super) key_quota: u32,
}

impl<R> Clone for Directory<R> {
    fn clone(&self) -> Self {
        Self {
            repo: Arc::clone(&self.repo),
            import_limits: self.import_limits,
            tokens: self.tokens.clone(),
            admission: self.admission.clone(),
            key_quota: self.key_quota,
        }
    }
}

pub(super) fn check_etag(etag: &str, current: Revision, kind: ResourceKind, name: String) -> Result<(), DomainError> {
    if etag.is_empty() || Revision::from_etag(etag) == Some(current) {
        Ok(())
    } else {
        Err(DomainError::EtagMismatch { kind, name })
    }
}

pub(super) fn invalid<T>(r: Result<T, crate::error::FieldViolation>) -> Result<T, DomainError> {
    r.map_err(|v| DomainError::Invalid(vec![v]))
}

/// [`access::reaches`] as the error the caller gets.
pub(crate) fn reach(caller: &Caller, tenant: Option<&TenantId>, action: Action<'_>) -> Result<(), DomainError> {
    access::reaches(caller, tenant, action).map_err(|d| d.into_error(tenant, action))
}

/// [`access::decide`] as the error the caller gets.
pub(crate) fn allow(
    caller: &Caller,
    tenant: &TenantId,
    action: Action<'_>,
    target: Option<&User>,
) -> Result<(), DomainError> {
    access::decide(caller, Some(tenant), action, target.map(Target::of)).map_err(|d| d.into_error(Some(tenant), action))
}

/// A user as the permission rules see them.
impl<R: TenantRepository + UserRepository> Directory<R> {
    pub fn new(repo: Arc<R>) -> Self {
        Self {
            repo,
            import_limits: ImportLimits::default(),
            tokens: PageTokens::random(),
            admission: Admission::default(),
            key_quota: crate::keys::DEFAULT_KEY_QUOTA,
        }
    }

    /// Caps the imports and exports that run at once (by default
    /// [`StreamLimits::default`]).
    pub fn with_stream_limits(mut self, limits: StreamLimits) -> Self {
        self.admission = Admission::new(limits);
        self
    }

    /// Seals page tokens with `tokens` (the key every replica shares; by
    /// default a random key, good in this process only).
    pub fn with_page_tokens(mut self, tokens: PageTokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// The limits every import runs under.
    pub fn import_limits(&self) -> ImportLimits {
        self.import_limits
    }

    /// Sets the limits every import runs under.
    /// At most `quota` live API keys per tenant (and for operators).
    pub fn with_key_quota(mut self, quota: u32) -> Self {
        self.key_quota = quota;
        self
    }

    pub(crate) fn key_quota(&self) -> u32 {
        self.key_quota
    }

    pub fn with_import_limits(mut self, limits: ImportLimits) -> Self {
        self.import_limits = limits;
        self
    }

    pub fn repo(&self) -> &Arc<R> {
        &self.repo
    }

    /// The sealer of this directory's page tokens.
    pub(crate) fn tokens(&self) -> &PageTokens {
        &self.tokens
    }
}

/// Trims a fetched `limit + 1` rows to `limit` and builds the next token if
/// there was an extra row.
pub(super) fn next_token<T>(items: &mut Vec<T>, limit: u32, token: impl Fn(&T) -> String) -> String {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}
