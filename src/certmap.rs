//! mTLS callers: a configured mapping from what a verified client
//! certificate says (its subject, or a URI, DNS or email subject
//! alternative name) to an API key. A call over such a connection that
//! sends no `authorization` header has that key's rights, so a certificate
//! is revoked, scoped and expired through its key (`userdir keys revoke`),
//! and its last use is recorded the same way. A bearer token, when sent,
//! wins: the certificate is then only the connection's.

use uuid::Uuid;

use crate::peer::PeerIdentity;

/// What part of a certificate a mapping matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Selector {
    /// The subject as the server renders it (RFC 4514: `CN=ops,O=Example`), exactly.
    Subject(String),
    /// A URI subject alternative name (a SPIFFE id), exactly.
    Uri(String),
    /// A DNS subject alternative name, ignoring case.
    Dns(String),
    /// An email subject alternative name, ignoring case.
    Email(String),
}

impl Selector {
    fn matches(&self, peer: &PeerIdentity) -> bool {
        match self {
            Self::Subject(s) => peer.subject == *s,
            Self::Uri(u) => peer.uris.iter().any(|x| x == u),
            Self::Dns(d) => peer.dns_names.iter().any(|x| x.eq_ignore_ascii_case(d)),
            Self::Email(e) => peer.emails.iter().any(|x| x.eq_ignore_ascii_case(e)),
        }
    }
}

/// One mapping: the certificate it matches, the key it stands for, and
/// how it was written (for the principal in logs and job records).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapping {
    selector: Selector,
    key: Uuid,
    text: String,
}

/// The mappings of a server, first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertKeys(Vec<Mapping>);

/// How a mapping is written, for error messages.
const FORM: &str = "SELECTOR=apiKeys/ID, SELECTOR one of subject:CN=ops,O=Example, uri:spiffe://..., dns:host, \
                    email:addr";

impl CertKeys {
    /// Reads `--client-cert-key` values; an error names the value at fault.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| Self::parse_one(e.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn parse_one(entry: &str) -> Result<Mapping, String> {
        let bad = |why: &str| format!("--client-cert-key {entry:?}: {why}; write {FORM}");
        // Subjects hold `=`; the key never does.
        let (selector, key) = entry.rsplit_once('=').ok_or_else(|| bad("no `=` before the key"))?;
        let id = key.trim().strip_prefix("apiKeys/").unwrap_or(key.trim());
        let key = Uuid::try_parse(id)
            .ok()
            .filter(|_| id.len() == 32)
            .ok_or_else(|| bad("the key is not apiKeys/ and 32 hex digits"))?;
        let text = selector.trim().to_owned();
        let (kind, value) = selector
            .split_once(':')
            .ok_or_else(|| bad("the selector has no kind"))?;
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(bad("the selector is empty"));
        }
        let selector = match kind.trim().to_ascii_lowercase().as_str() {
            "subject" => Selector::Subject(value),
            "uri" => Selector::Uri(value),
            "dns" => Selector::Dns(value),
            "email" => Selector::Email(value),
            _ => return Err(bad("unknown selector kind")),
        };
        Ok(Mapping { selector, key, text })
    }

    /// The key a certificate stands for, and the mapping's selector as
    /// written; `None` when no mapping matches.
    pub fn key_for(&self, peer: &PeerIdentity) -> Option<(Uuid, &str)> {
        self.0
            .iter()
            .find(|m| m.selector.matches(peer))
            .map(|m| (m.key, m.text.as_str()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn peer() -> PeerIdentity {
        PeerIdentity {
            subject: "CN=ops,O=Example".into(),
            dns_names: vec!["Ops.Example.com".into()],
            uris: vec!["spiffe://cluster/ns/x/sa/y".into()],
            emails: vec!["ops@example.com".into()],
        }
    }

    const ID: &str = "0193a1b2c3d4e5f60718293a4b5c6d7e";

    #[test]
    fn each_selector_finds_its_key() {
        for selector in [
            "subject:CN=ops,O=Example",
            "uri:spiffe://cluster/ns/x/sa/y",
            "dns:ops.example.com",
            "email:OPS@example.com",
        ] {
            let keys = CertKeys::parse(&[format!("{selector}=apiKeys/{ID}")]).unwrap();
            let (key, text) = keys.key_for(&peer()).unwrap();
            assert_eq!((key.simple().to_string().as_str(), text), (ID, selector));
        }
        let keys = CertKeys::parse(&[format!("subject:CN=ops={ID}")]).unwrap();
        assert_eq!(keys.key_for(&peer()), None, "subjects match exactly");
    }

    #[test]
    fn bad_mappings_are_named() {
        for bad in [
            "subject:CN=ops",
            "CN=ops=apiKeys/0193a1b2c3d4e5f60718293a4b5c6d7e",
            "host:x=apiKeys/0193a1b2c3d4e5f60718293a4b5c6d7e",
            "dns:=apiKeys/0193a1b2c3d4e5f60718293a4b5c6d7e",
            "dns:x=apiKeys/xyz",
        ] {
            let err = CertKeys::parse(&[bad.to_owned()]).unwrap_err();
            assert!(err.contains(bad) && err.contains("SELECTOR="), "{err}");
        }
    }
}
