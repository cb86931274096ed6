//! Caps on the long streams (imports and exports), per tenant and in total:
//! each holds a database connection (an export its snapshot, an import its
//! lookups and its share of the writer) for as long as it runs, so without a
//! cap one caller that opens hundreds of them takes the pool, and every
//! other request of every tenant waits behind them. Over a cap the stream is
//! refused at once with a retryable error, before it holds anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::DomainError;
use crate::tenant::TenantId;

/// How many streams of one kind may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// In the whole server.
    pub total: u32,
    /// For one tenant.
    pub per_tenant: u32,
}

/// The caps of both kinds of stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub imports: Cap,
    pub exports: Cap,
}

impl StreamLimits {
    /// A quarter of the connection pool for each kind (at least one), two
    /// per tenant: half the pool stays free for everything else.
    pub fn for_pool(max_connections: u32) -> Self {
        let total = (max_connections / 4).max(1);
        let cap = Cap {
            total,
            per_tenant: total.min(2),
        };
        Self {
            imports: cap,
            exports: cap,
        }
    }
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self::for_pool(16)
    }
}

/// How long a refused caller is told to wait before it tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The kinds of long streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Import,
    Export,
}

impl StreamKind {
    /// `n imports`, `1 import`.
    fn count(self, n: u32) -> String {
        let noun = match self {
            Self::Import => "import",
            Self::Export => "export",
        };
        format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Import => "TOO_MANY_IMPORTS",
            Self::Export => "TOO_MANY_EXPORTS",
        }
    }
}

/// Counts the streams that run; hands out [`Slot`]s within the caps.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    limits: StreamLimits,
    running: Arc<Mutex<Running>>,
}

#[derive(Debug, Default)]
struct Running {
    imports: Counts,
    exports: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_tenant: HashMap<TenantId, u32>,
}

impl Running {
    fn of(&mut self, kind: StreamKind) -> &mut Counts {
        match kind {
            StreamKind::Import => &mut self.imports,
            StreamKind::Export => &mut self.exports,
        }
    }
}

impl Admission {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            running: Arc::default(),
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// A slot for one stream of `kind` for `tenant`, held until it drops;
    /// `Busy` when the tenant or the server runs as many as it may.
    pub fn admit(&self, kind: StreamKind, tenant: &TenantId) -> Result<Slot, DomainError> {
        let cap = match kind {
            StreamKind::Import => self.limits.imports,
            StreamKind::Export => self.limits.exports,
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = running.of(kind);
        let mine = counts.per_tenant.get(tenant).copied().unwrap_or(0);
        let refusal = if mine >= cap.per_tenant {
            Some(format!(
                "tenant {tenant} already runs {} (at most {} at once per tenant)",
                kind.count(mine),
                cap.per_tenant
            ))
        } else if counts.total >= cap.total {
            Some(format!(
                "the server already runs {} (at most {} at once)",
                kind.count(counts.total),
                cap.total
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            return Err(DomainError::Busy {
                reason: kind.reason(),
                message: format!(
                    "{why}; retry in {} s, once one of them has finished",
                    RETRY_AFTER.as_secs()
                ),
                retry_after: RETRY_AFTER,
            });
        }
        counts.total += 1;
        *counts.per_tenant.entry(tenant.clone()).or_default() += 1;
        Ok(Slot {
            kind,
            tenant: tenant.clone(),
            running: Arc::clone(&self.running),
        })
    }
}

/// One running stream's place under the caps; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    kind: StreamKind,
    tenant: TenantId,
    running: Arc<Mutex<Running>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = running.of(self.kind);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_tenant.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse("tenant_id", id).unwrap()
    }

    #[test]
    fn caps_hold_per_tenant_and_in_total_and_slots_come_back() {
        let admission = Admission::new(StreamLimits {
            imports: Cap {
                total: 3,
                per_tenant: 2,
            },
            exports: Cap {
                total: 1,
                per_tenant: 1,
            },
        });
        let (a, b, c) = (tenant("aa"), tenant("bb"), tenant("cc"));
        let a1 = admission.admit(StreamKind::Import, &a).unwrap();
        let _a2 = admission.admit(StreamKind::Import, &a).unwrap();
        let err = admission.admit(StreamKind::Import, &a).unwrap_err();
        assert_eq!(err.reason(), "TOO_MANY_IMPORTS");
        assert!(err.to_string().contains("tenant aa already runs 2 imports"), "{err}");
        let _b1 = admission.admit(StreamKind::Import, &b).unwrap();
        let err = admission.admit(StreamKind::Import, &c).unwrap_err();
        assert!(err.to_string().contains("the server already runs 3 imports"), "{err}");
        // Exports are counted apart from imports.
        let e = admission.admit(StreamKind::Export, &c).unwrap();
        assert_eq!(
            admission.admit(StreamKind::Export, &b).unwrap_err().reason(),
            "TOO_MANY_EXPORTS"
        );
        drop(a1);
        drop(e);
        admission.admit(StreamKind::Import, &c).unwrap();
        admission.admit(StreamKind::Export, &b).unwrap();
    }

    #[test]
    fn pool_sized_defaults_leave_half_the_pool() {
        let limits = StreamLimits::for_pool(16);
        assert_eq!(
            limits.imports,
            Cap {
                total: 4,
                per_tenant: 2
            }
        );
        assert_eq!(limits.exports, limits.imports);
        assert_eq!(StreamLimits::for_pool(1).imports.total, 1);
        assert_eq!(StreamLimits::for_pool(1).imports.per_tenant, 1);
    }
}
