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
    /// The subject, written as an RFC 4514 distinguished name
    /// (`CN=ops,O=Example`): matched attribute by attribute, so a value
    /// holding `, O=Example` is never two attributes. The certificate must
    /// hold exactly these attributes (types and values, values exactly), in
    /// any order. Sorted (dotted OID, value) pairs.
    Subject(Vec<(String, String)>),
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
            Self::Subject(wanted) => {
                let mut held: Vec<(String, String)> = Vec::with_capacity(peer.subject_attributes.len());
                for (oid, value) in &peer.subject_attributes {
                    // A value that is not a string matches no selector.
                    let Some(value) = value else { return false };
                    held.push((oid.clone(), value.clone()));
                }
                held.sort();
                held == *wanted
            }
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
            "subject" => Selector::Subject(parse_dn(&value).map_err(|why| bad(&why))?),
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

/// Attribute types a subject selector may name, with their OIDs (others
/// are written as dotted OIDs: `2.5.4.97=...`).
const ATTRIBUTE_TYPES: [(&str, &str); 14] = [
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("GIVENNAME", "2.5.4.42"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
];

/// An attribute type as a dotted OID.
fn attribute_oid(name: &str) -> Result<String, String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Ok(name.to_owned());
    }
    ATTRIBUTE_TYPES
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
        .map(|(_, oid)| (*oid).to_owned())
        .ok_or_else(|| {
            format!(
                "the subject names the attribute type {name:?}, which is not one of {} nor a dotted OID",
                ATTRIBUTE_TYPES.map(|(short, _)| short).join(", ")
            )
        })
}

/// Reads an RFC 4514 distinguished name (`CN=ops,O=Example`, `CN=a\,b`,
/// `CN=x+UID=y`) into sorted (dotted OID, value) pairs. `\` escapes a
/// special character or gives a byte as two hex digits; spaces around
/// types and values are dropped unless escaped.
fn parse_dn(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut attributes = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut name = String::new();
        let mut typed = false;
        for c in chars.by_ref() {
            if c == '=' {
                typed = true;
                break;
            }
            if matches!(c, ',' | '+' | '\\' | '"') {
                return Err(format!(
                    "the subject has {c:?} inside an attribute type; write TYPE=value"
                ));
            }
            name.push(c);
        }
        let name = name.trim();
        if name.is_empty() || !typed {
            return Err("the subject has an attribute without a type; write TYPE=value".to_owned());
        }
        let oid = attribute_oid(name)?;
        // The value: bytes, since a hex escape gives one byte of UTF-8.
        let mut value: Vec<u8> = Vec::new();
        // Where the value's escaped part ends, so trailing spaces that were
        // escaped stay.
        let mut kept = 0;
        let mut ended = false;
        while let Some(c) = chars.next() {
            match c {
                ',' | '+' => {
                    ended = true;
                    break;
                }
                '\\' => {
                    let Some(next) = chars.next() else {
                        return Err("the subject ends with a lone \\".to_owned());
                    };
                    if next.is_ascii_hexdigit() {
                        let low = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or("the subject has \\ and one hex digit: write two (\\2C) or escape the character")?;
                        let byte = u8::from_str_radix(&format!("{next}{low}"), 16).map_err(|e| e.to_string())?;
                        value.push(byte);
                    } else {
                        let mut buf = [0u8; 4];
                        value.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                    }
                    kept = value.len();
                }
                '"' | ';' | '<' | '>' => {
                    return Err(format!("the subject has an unescaped {c:?} in a value; write \\{c}"));
                }
                '#' if value.iter().all(|b| *b == b' ') => {
                    return Err("the subject has a value in #hex form; write the value as text".to_owned());
                }
                ' ' if value.iter().all(|b| *b == b' ') && kept == 0 => {}
                c => {
                    let mut buf = [0u8; 4];
                    value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    if c != ' ' {
                        kept = value.len();
                    }
                }
            }
        }
        value.truncate(kept);
        let value =
            String::from_utf8(value).map_err(|_| "the subject has hex escapes that are not UTF-8".to_owned())?;
        attributes.push((oid, value));
        if !ended {
            break;
        }
    }
    attributes.sort();
    Ok(attributes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn peer() -> PeerIdentity {
        PeerIdentity {
            subject: "CN=ops, O=Example".into(),
            subject_attributes: vec![
                ("2.5.4.3".into(), Some("ops".into())),
                ("2.5.4.10".into(), Some("Example".into())),
            ],
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

    /// A certificate made by rcgen with these subject attributes, read as
    /// the server reads a client's.
    fn certificate(attributes: &[(rcgen::DnType, &str)]) -> PeerIdentity {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in attributes {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        PeerIdentity::from_der(cert.der()).unwrap()
    }

    fn matches(selector: &str, peer: &PeerIdentity) -> bool {
        CertKeys::parse(&[format!("{selector}=apiKeys/{ID}")])
            .unwrap()
            .key_for(peer)
            .is_some()
    }

    /// Subjects compare attribute by attribute: the README's form matches a
    /// two-attribute certificate in either order and spacing, and a single
    /// CN that reads like two attributes matches neither form.
    #[test]
    fn subjects_compare_attribute_by_attribute() {
        use rcgen::DnType::{CommonName, OrganizationName, OrganizationalUnitName};
        let real = certificate(&[(CommonName, "ops"), (OrganizationName, "Example")]);
        for selector in [
            "subject:CN=ops,O=Example",
            "subject:CN=ops, O=Example",
            "subject:O=Example,CN=ops",
            "subject:cn = ops , o = Example",
            "subject:2.5.4.3=ops,2.5.4.10=Example",
            "subject:CN=ops+O=Example",
        ] {
            assert!(matches(selector, &real), "{selector} should match {real:?}");
        }
        for selector in [
            "subject:CN=ops",
            "subject:CN=Ops,O=Example",
            "subject:CN=ops,O=Example,OU=x",
        ] {
            assert!(!matches(selector, &real), "{selector} should not match {real:?}");
        }
        let spoof = certificate(&[(CommonName, "ops, O=Example")]);
        assert!(spoof.subject.contains("ops, O=Example"), "{}", spoof.subject);
        for selector in ["subject:CN=ops, O=Example", "subject:CN=ops,O=Example"] {
            assert!(!matches(selector, &spoof), "{selector} must not match the spoofing CN");
        }
        assert!(
            matches("subject:CN=ops\\, O=Example", &spoof),
            "its own escaped form matches"
        );
        assert!(matches("subject:CN=ops\\2C O=Example", &spoof), "hex escapes too");
        let more = certificate(&[
            (CommonName, "ops"),
            (OrganizationName, "Example"),
            (OrganizationalUnitName, "x"),
        ]);
        assert!(
            !matches("subject:CN=ops,O=Example", &more),
            "every attribute must be named"
        );
        let unicode = certificate(&[(CommonName, "運用 係"), (OrganizationName, "例")]);
        assert!(matches("subject:CN=運用 係,O=例", &unicode));
        assert!(matches("subject:CN=\\E9\\81\\8B\\E7\\94\\A8 係,O=例", &unicode));
    }

    #[test]
    fn bad_subjects_are_named() {
        for (bad, says) in [
            ("subject:ops", "without a type"),
            ("subject:CN=ops,", "without a type"),
            ("subject:XX=ops", "not one of"),
            ("subject:CN=a\"b", "unescaped"),
            ("subject:CN=#0403", "#hex"),
            ("subject:CN=a\\", "lone"),
            ("subject:CN=\\4", "one hex digit"),
            ("subject:CN=\\ff", "not UTF-8"),
        ] {
            let err = CertKeys::parse(&[format!("{bad}=apiKeys/{ID}")]).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
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
