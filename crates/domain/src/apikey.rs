//! API keys as callers present them: `udk_<id>_<secret>_<check>`, where
//! `id` is the key's UUIDv7 in hex (it names the key; not a secret),
//! `secret` 32 random bytes in base64url, and `check` 8 hex digits of a
//! digest of both, so a mistyped or truncated key is told apart from an
//! unknown one without asking the database (and secret scanners can find
//! them by shape). The service keeps only the SHA-256 of the secret and
//! compares in constant time; the secret is shown once, when the key is made.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::access::Scopes;
use crate::tenant::TenantId;
use crate::text::Timestamp;
use crate::user::UserId;

/// The prefix of every key.
pub const PREFIX: &str = "udk_";
const SECRET_BYTES: usize = 32;

/// A key as the service keeps it: who it is for, what it may do, and the
/// hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    /// A name for people (`ci-import`, `console`), 1 to 100 characters.
    pub name: String,
    /// The one tenant it reaches, or `None` for every tenant (an operator's key).
    pub tenant: Option<TenantId>,
    pub scopes: Scopes,
    /// May send `x-userdir-acting-user` to act for a user of its tenant.
    pub act_as_users: bool,
    /// The user every call with the key acts for (a key made while acting
    /// for them): judged by that user's role and state at each call.
    pub user: Option<UserId>,
    /// The principal that made it (`apikey:…`, or `configuration` for the
    /// operator key a deployment supplies).
    pub creator: String,
    pub create_time: Timestamp,
    pub expire_time: Option<Timestamp>,
    /// Written at most about once a minute.
    pub last_used_time: Option<Timestamp>,
    pub revoke_time: Option<Timestamp>,
    pub hash: SecretHash,
}

impl ApiKey {
    /// Whether the key may be used at `now`: not revoked, not expired.
    pub fn live_at(&self, now: Timestamp) -> bool {
        self.revoke_time.is_none() && self.expire_time.is_none_or(|expiry| now < expiry)
    }
}

/// A new key: its id and secret. Shown once; never logged (its `Debug`
/// prints the id only).
pub struct NewApiKey {
    pub id: Uuid,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
}

/// The SHA-256 of a key's secret: what the service stores.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(…)")
    }
}

impl SecretHash {
    fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// No hash at all: what an event's image of a key holds.
    pub fn redacted() -> Self {
        Self([0; 32])
    }

    /// Hex, for storage.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// From storage.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }

    /// Whether `self` and `other` are equal, in time that does not depend
    /// on where they differ.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A key as presented in a request: its id and the hash of its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedKey {
    pub id: Uuid,
    pub hash: SecretHash,
}

/// Why a presented credential is not a well-formed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("an API key starts with udk_")]
    Prefix,
    #[error("the API key is cut short or has extra characters")]
    Shape,
    #[error("the API key's check digits do not match: it was mistyped or cut short")]
    Check,
}

fn check_digits(id: &str, secret: &str) -> String {
    let digest = Sha256::digest(format!("{id}_{secret}").as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl NewApiKey {
    /// A new key with a random secret from the operating system.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret)?;
        Ok(Self {
            id: Uuid::now_v7(),
            secret,
        })
    }

    /// The token the caller sends (`authorization: Bearer <token>`).
    pub fn token(&self) -> String {
        let id = self.id.simple().to_string();
        let secret = URL_SAFE_NO_PAD.encode(self.secret);
        let check = check_digits(&id, &secret);
        format!("{PREFIX}{id}_{secret}_{check}")
    }

    /// What the service stores.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.secret)
    }
}

impl PresentedKey {
    /// Reads a token; a malformed one is refused before any lookup.
    pub fn parse(token: &str) -> Result<Self, KeyFormatError> {
        let rest = token.strip_prefix(PREFIX).ok_or(KeyFormatError::Prefix)?;
        // The secret's base64url may itself hold `_`: the id is the first
        // 32 characters and the check the last 8.
        if rest.len() != 32 + 1 + 43 + 1 + 8 || !rest.is_ascii() {
            return Err(KeyFormatError::Shape);
        }
        let (id, rest) = rest.split_at(32);
        let (secret, check) = (&rest[1..44], &rest[45..]);
        if !rest.starts_with('_') || rest.as_bytes()[44] != b'_' {
            return Err(KeyFormatError::Shape);
        }
        if check_digits(id, secret) != check {
            return Err(KeyFormatError::Check);
        }
        let id = Uuid::try_parse(id).map_err(|_| KeyFormatError::Shape)?;
        let secret = URL_SAFE_NO_PAD.decode(secret).map_err(|_| KeyFormatError::Shape)?;
        Ok(Self {
            id,
            hash: SecretHash::of(&secret),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_key_round_trips_and_only_its_hash_is_kept() {
        let key = NewApiKey::generate().unwrap();
        let token = key.token();
        assert!(token.starts_with("udk_"), "{token}");
        let presented = PresentedKey::parse(&token).unwrap();
        assert_eq!(presented.id, key.id);
        assert!(presented.hash.matches(&key.hash()));
        let stored = SecretHash::from_hex(&key.hash().to_hex()).unwrap();
        assert!(stored.matches(&presented.hash));
        // Another key's secret under this id does not match.
        let other = NewApiKey::generate().unwrap();
        assert!(!other.hash().matches(&stored));
        // Two keys never share a secret.
        assert_ne!(key.token(), other.token());
    }

    #[test]
    fn a_mistyped_key_is_told_apart_from_an_unknown_one() {
        let token = NewApiKey::generate().unwrap().token();
        assert_eq!(PresentedKey::parse("Bearer x"), Err(KeyFormatError::Prefix));
        assert_eq!(
            PresentedKey::parse(&token[..token.len() - 1]),
            Err(KeyFormatError::Shape)
        );
        assert_eq!(PresentedKey::parse(&format!("{token}x")), Err(KeyFormatError::Shape));
        // One character of the secret changed: the check digits say so.
        let mut typo = token.clone().into_bytes();
        let at = 4 + 32 + 1 + 5;
        typo[at] = if typo[at] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            PresentedKey::parse(&String::from_utf8(typo).unwrap()),
            Err(KeyFormatError::Check)
        );
        assert_eq!(PresentedKey::parse("udk_é"), Err(KeyFormatError::Shape));
    }

    #[test]
    fn secrets_never_print() {
        let key = NewApiKey::generate().unwrap();
        let token = key.token();
        let secret = &token[4 + 33..4 + 33 + 43];
        for shown in [
            format!("{key:?}"),
            format!("{:?}", key.hash()),
            format!("{:?}", PresentedKey::parse(&token)),
        ] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(&key.hash().to_hex()), "{shown}");
        }
    }
}
