//! The change feed's cursor: where a consumer stands in a tenant's feed.
//! Opaque to consumers (base64url), but not secret: it names the tenant,
//! the feed's epoch, an event number and the id of the event there, so a
//! resume can tell a feed that restarted or lost events from one that
//! simply moved on.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::DomainError;
use crate::tenant::TenantId;

/// A position in a tenant's feed: after event `seq` (0: before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: i64,
    pub seq: i64,
    /// The id of event `seq` (nil for 0).
    pub event: Uuid,
}

const VERSION: &str = "c1";

impl Cursor {
    pub fn encode(&self, tenant: &TenantId) -> String {
        let text = format!(
            "{VERSION}:{}:{}:{}:{}",
            tenant.as_str(),
            self.epoch,
            self.seq,
            self.event.simple()
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Reads a cursor of `tenant`'s feed; `field` names it in errors.
    pub fn decode(field: &str, tenant: &TenantId, text: &str) -> Result<Self, DomainError> {
        let bad = |why: &str| {
            DomainError::invalid(
                field,
                format!("{why}: pass a cursor exactly as an event, a bookmark, ListChanges or an export returned it"),
            )
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| bad("is not a cursor"))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("is not a cursor"))?;
        let parts: Vec<&str> = text.split(':').collect();
        let [version, owner, epoch, seq, event] = parts[..] else {
            return Err(bad("is not a cursor"));
        };
        if version != VERSION {
            return Err(bad("is not a cursor of this server version"));
        }
        if owner != tenant.as_str() {
            return Err(bad(&format!(
                "is a cursor of another tenant's feed, not of {}",
                tenant.resource_name()
            )));
        }
        let cursor = Self {
            epoch: epoch.parse().map_err(|_| bad("is not a cursor"))?,
            seq: seq.parse().map_err(|_| bad("is not a cursor"))?,
            event: Uuid::parse_str(event).map_err(|_| bad("is not a cursor"))?,
        };
        if cursor.seq < 0 {
            return Err(bad("is not a cursor"));
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cursors_read_back_for_their_tenant_only() {
        let acme = TenantId::parse("t", "acme").unwrap();
        let other = TenantId::parse("t", "globex").unwrap();
        let c = Cursor {
            epoch: 42,
            seq: 7,
            event: Uuid::now_v7(),
        };
        let text = c.encode(&acme);
        assert_eq!(Cursor::decode("cursor", &acme, &text).unwrap(), c);
        let e = Cursor::decode("cursor", &other, &text).unwrap_err().to_string();
        assert!(e.contains("another tenant"), "{e}");
        for junk in [
            "",
            "!!",
            "YWJj",
            &URL_SAFE_NO_PAD.encode("c1:acme:1:-5:00000000000000000000000000000000"),
        ] {
            assert!(Cursor::decode("cursor", &acme, junk).is_err(), "{junk}");
        }
    }
}
