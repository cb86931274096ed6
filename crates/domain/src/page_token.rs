//! Page tokens: opaque, tamper-proof keyset cursors. A token is the cursor
//! (the last row's sort key, and the request it belongs to) sealed with
//! XChaCha20-Poly1305 under a key that every replica shares (the store keeps
//! it in the database, made at the first migration): a client can neither
//! read it (the last row's email is personal data) nor forge or edit it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// The sort key of one row: the ordered field's value and the row id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// Text value (email key, display name, tenant id), when ordering by text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Integer value (microsecond time), when ordering by time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int: Option<i64>,
    /// The row id, the tie breaker.
    pub id: String,
}

/// Bytes of a page-token key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

#[derive(Serialize, Deserialize)]
struct TokenBody {
    /// What the token is valid for: resource, filter and order.
    scope: String,
    after: SortKey,
}

/// Seals and opens page tokens with one key.
#[derive(Clone)]
pub struct PageTokens {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(key hidden)")
    }
}

impl PageTokens {
    /// Tokens sealed with `key` (the one the replicas share).
    pub fn new(key: &[u8; KEY_BYTES]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Tokens under a fresh random key: valid in this process only.
    pub fn random() -> Self {
        Self::new(&Self::generate_key())
    }

    /// A new random key.
    pub fn generate_key() -> [u8; KEY_BYTES] {
        XChaCha20Poly1305::generate_key(&mut OsRng).into()
    }

    /// The token of the cursor after `after`, for requests of `scope`.
    pub fn encode(&self, scope: &str, after: SortKey) -> String {
        let body = TokenBody {
            scope: scope.to_owned(),
            after,
        };
        let plain = serde_json::to_vec(&body).unwrap_or_default();
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Sealing a byte string in memory cannot fail.
        let sealed = self.cipher.encrypt(&nonce, plain.as_slice()).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Opens a token; it must have been sealed with this key for exactly `scope`.
    pub fn decode(&self, scope: &str, token: &str) -> Result<SortKey, DomainError> {
        let bad = |m: &str| DomainError::invalid("page_token", m.to_owned());
        let foreign = "is not a page token this service issued (damaged, edited, or made with another key)";
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad(foreign))?;
        if bytes.len() <= NONCE_BYTES {
            return Err(bad(foreign));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce = XNonce::from(<[u8; NONCE_BYTES]>::try_from(nonce).map_err(|_| bad(foreign))?);
        let plain = self.cipher.decrypt(&nonce, sealed).map_err(|_| bad(foreign))?;
        let body: TokenBody = serde_json::from_slice(&plain).map_err(|_| bad(foreign))?;
        if body.scope != scope {
            return Err(bad(
                "belongs to a different request; parent, filter and order_by must stay the same while paging",
            ));
        }
        Ok(body.after)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn tokens_are_opaque_sealed_and_bound_to_scope_and_key() {
        let tokens = PageTokens::random();
        let key = SortKey {
            text: Some("secret.person@example.com".into()),
            int: None,
            id: "x".into(),
        };
        let t = tokens.encode("s1", key.clone());
        assert_eq!(tokens.decode("s1", &t).unwrap(), key);
        // Opaque: nothing of the cursor shows, not even base64-decoded.
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("secret"));
        assert!(!t.contains("secret"));
        assert!(
            tokens
                .decode("s2", &t)
                .unwrap_err()
                .to_string()
                .contains("different request")
        );
        // Any edited byte is refused.
        for at in [0, raw.len() / 2, raw.len() - 1] {
            let mut edited = raw.clone();
            edited[at] ^= 1;
            assert!(tokens.decode("s1", &URL_SAFE_NO_PAD.encode(edited)).is_err());
        }
        assert!(tokens.decode("s1", "!!!").is_err());
        assert!(tokens.decode("s1", "").is_err());
        // Another key (another deployment) cannot open it.
        assert!(PageTokens::random().decode("s1", &t).is_err());
        // The same key (another replica) can.
        let shared = PageTokens::generate_key();
        let (a, b) = (PageTokens::new(&shared), PageTokens::new(&shared));
        assert_eq!(b.decode("s1", &a.encode("s1", key.clone())).unwrap(), key);
    }
}
