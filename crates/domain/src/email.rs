//! The sign-in email: validation per seed 001 plus RFC 5321 basics, and the
//! case-insensitive key that makes it unique per tenant.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::error::FieldViolation;

/// Most characters in an email (seed 001).
pub const EMAIL_MAX_CHARS: usize = 128;
/// Most octets in the local part (RFC 5321 4.5.3.1.1).
pub const LOCAL_PART_MAX_OCTETS: usize = 64;
/// Most characters in one domain label (seed 001, RFC 1035).
pub const DOMAIN_LABEL_MAX_CHARS: usize = 63;

/// A valid email address, as the user typed it (NFC-normalised), with its
/// uniqueness key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    value: String,
    key: String,
}

impl Email {
    /// Validates `raw` (surrounding whitespace is an error, not trimmed away).
    ///
    /// Rules: required; at most 128 characters; exactly one `@`; a local part of
    /// 1..=64 octets that neither starts nor ends with `.`; a domain of labels
    /// separated by `.`, each 1..=63 characters, not starting or ending with `-`;
    /// no `..` anywhere; no whitespace or control characters.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let bad = |msg: &str| Err(FieldViolation::new(field, msg));
        if raw.is_empty() {
            return bad("email is required");
        }
        let value: String = if raw.is_ascii() {
            raw.to_owned()
        } else {
            raw.nfc().collect()
        };
        let chars = value.chars().count();
        if chars > EMAIL_MAX_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("email must be at most {EMAIL_MAX_CHARS} characters (got {chars})"),
            ));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("email must not contain spaces or control characters");
        }
        // Every invisible character is beyond ASCII.
        if let Some(c) = value.chars().find(|&c| !c.is_ascii() && is_invisible(c)) {
            return Err(FieldViolation::new(
                field,
                format!(
                    "email must not contain invisible or text-direction characters (found U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
        if value.contains("..") {
            return bad("email must not contain two dots in a row (..)");
        }
        let mut parts = value.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return bad("email must contain exactly one @");
        };
        if local.is_empty() {
            return bad("email needs a local part before the @");
        }
        if local.len() > LOCAL_PART_MAX_OCTETS {
            return Err(FieldViolation::new(
                field,
                format!(
                    "the part before @ must be at most {LOCAL_PART_MAX_OCTETS} octets (got {})",
                    local.len()
                ),
            ));
        }
        if local.ends_with('.') {
            return bad("email must not have a dot right before the @");
        }
        if local.starts_with('.') {
            return bad("email must not start with a dot");
        }
        // Look-alikes (UTS #39): a local part in one script (`山田`, `иван`,
        // `やまだ太郎` as Japanese) is fine; one that mixes scripts, such as a
        // Cyrillic `а` among Latin letters, reads as another address.
        if !local.is_ascii() && !unicode_security::MixedScript::is_single_script(local) {
            return Err(FieldViolation::new(
                field,
                format!(
                    "the part before @ mixes scripts ({}), so it can pass for another address: write it in one script",
                    scripts_of(local).join(", ")
                ),
            ));
        }
        if domain.is_empty() {
            return bad("email needs a domain after the @");
        }
        // The domain as DNS knows it (UTS #46: A-labels, lower case): what
        // the key compares, so `bücher.example` and `xn--bcher-kva.example`
        // are one domain, and a label that is not valid Punycode is refused.
        // A plain ASCII domain is its own DNS form: the label checks below
        // are all it needs (and this runs for every imported row).
        let ascii = if domain.is_ascii() && !has_punycode_label(domain) {
            std::borrow::Cow::Borrowed(domain)
        } else {
            match idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::URL) {
                Ok(ascii) => ascii,
                Err(_) => {
                    return Err(FieldViolation::new(
                        field,
                        format!("the domain {domain:?} is not a valid (internationalized) domain name"),
                    ));
                }
            }
        };
        if let Some(label) = ascii.split('.').find(|l| l.len() > DOMAIN_LABEL_MAX_CHARS) {
            return Err(FieldViolation::new(
                field,
                format!(
                    "domain label {label:?} is {} characters in DNS form; each label may have at most {DOMAIN_LABEL_MAX_CHARS}",
                    label.len()
                ),
            ));
        }
        for label in domain.split('.') {
            if label.is_empty() {
                return bad("the domain must not start or end with a dot");
            }
            let n = label.chars().count();
            if n > DOMAIN_LABEL_MAX_CHARS {
                return Err(FieldViolation::new(
                    field,
                    format!(
                        "domain label {label:?} is {n} characters; each label may have at most {DOMAIN_LABEL_MAX_CHARS}"
                    ),
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(FieldViolation::new(
                    field,
                    format!("domain label {label:?} must not start or end with a hyphen"),
                ));
            }
        }
        let key = email_key(&value);
        Ok(Self { value, key })
    }

    /// The address as stored and shown.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The uniqueness key: see [`email_key`].
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Rebuilds an email read back from storage (already validated once).
    pub fn from_trusted(value: String) -> Self {
        let key = email_key(&value);
        Self { value, key }
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// Characters no one can see or that turn text around: default-ignorable
/// code points (soft hyphen, zero-width space and joiners, word joiner, BOM,
/// variation selectors, tags, Hangul fillers...) and bidirectional controls.
/// Two addresses that differ only by them look identical.
pub fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
            | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Bidirectional embedding, override and isolate controls: they reorder how
/// the text around them is shown ("Trojan Source"), so a name can display as
/// something it is not.
pub fn is_bidi_control(c: char) -> bool {
    matches!(u32::from(c), 0x202A..=0x202E | 0x2066..=0x2069)
}

/// The scripts of `text`'s letters, in order of first use (not Common or
/// Inherited: digits, punctuation, marks).
fn scripts_of(text: &str) -> Vec<&'static str> {
    use unicode_script::{Script, UnicodeScript as _};
    let mut scripts: Vec<&'static str> = Vec::new();
    for script in text.chars().map(|c| c.script()) {
        if !matches!(script, Script::Common | Script::Inherited) && !scripts.contains(&script.full_name()) {
            scripts.push(script.full_name());
        }
    }
    scripts
}

/// The key that makes emails unique within a tenant: the local part folded
/// by Unicode NFKC (full-width `ａｄｍｉｎ` is `admin`) and lower-cased
/// (locale independent), `@`, and the domain in its DNS form (UTS #46 to
/// A-labels, lower case: `Bücher.example` is `xn--bcher-kva.example`).
/// `Taro.Yamada@Example.COM` and `taro.yamada@example.com` are the same user.
pub fn email_key(email: &str) -> String {
    // The common case, once per row of every import and export: ASCII with
    // no Punycode label, keyed by lower case alone, in one allocation.
    if email.is_ascii() && !has_punycode_label(email) {
        return email.to_ascii_lowercase();
    }
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let mut key = if local.is_ascii() {
        local.to_ascii_lowercase()
    } else {
        let folded: String = local.nfkc().collect::<String>().to_lowercase();
        folded.nfkc().collect()
    };
    if email.contains('@') {
        key.push('@');
        if domain.is_ascii() && !has_punycode_label(domain) {
            key.push_str(&domain.to_ascii_lowercase());
        } else {
            match idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::URL) {
                Ok(ascii) => key.push_str(&ascii),
                // Not a domain (only for values that never passed `Email::parse`).
                Err(_) => key.push_str(&domain.nfkc().collect::<String>().to_lowercase()),
            }
        }
    }
    key
}

/// Whether a label of the domain part is Punycode (`xn--`, any case).
fn has_punycode_label(email: &str) -> bool {
    let domain = email.rsplit_once('@').map_or(email, |(_, d)| d);
    domain
        .split('.')
        .any(|label| label.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ok(s: &str) -> bool {
        Email::parse("email", s).is_ok()
    }

    #[test]
    fn seed_001_rules() {
        assert!(ok("a@example.com"));
        assert!(ok("taro.yamada+tag@sub.example.co.jp"));
        assert!(!ok(""));
        assert!(!ok("a.@example.com"), "dot right before @");
        assert!(!ok("a..b@example.com"), "double dot");
        assert!(!ok("a@example..com"));
        let label63 = "a".repeat(63);
        let label64 = "a".repeat(64);
        assert!(ok(&format!("u@{label63}.com")));
        assert!(!ok(&format!("u@{label64}.com")));
        let long = format!("{}@{}.com", "a".repeat(60), "b".repeat(63));
        assert_eq!(long.chars().count(), 128);
        assert!(ok(&long));
        let too_long = format!("{}@{}.{}.com", "a".repeat(60), "b".repeat(40), "c".repeat(23));
        assert_eq!(too_long.chars().count(), 129);
        assert!(!ok(&too_long));
    }

    /// UTS #39: one script per local part, any script (issue 23).
    #[test]
    fn mixed_script_local_parts_are_refused() {
        for fine in [
            "paypal@x.test",
            "山田@example.jp",
            "иван@example.ru",
            "やまだ太郎@example.jp",
            "ヤマダ.タロウ2@example.jp",
            "müller-1@example.de",
            "δοκιμή@example.gr",
        ] {
            assert!(ok(fine), "{fine}");
        }
        for (mixed, scripts) in [
            ("p\u{430}ypal@x.test", "Latin, Cyrillic"),
            ("\u{3b1}lpha@x.test", "Greek, Latin"),
            ("иван\u{61}@x.test", "Cyrillic, Latin"),
        ] {
            let err = Email::parse("email", mixed).unwrap_err();
            assert!(err.description.contains(scripts), "{mixed}: {err:?}");
            assert!(err.description.contains("mixes scripts"), "{err:?}");
        }
    }

    #[test]
    fn rfc_basics() {
        assert!(!ok("no-at.example.com"));
        assert!(!ok("a@b@example.com"));
        assert!(!ok("a b@example.com"));
        assert!(!ok(" a@example.com"));
        assert!(!ok("a\u{0}@example.com"));
        assert!(!ok(&format!("{}@example.com", "a".repeat(65))));
        assert!(ok(&format!("{}@example.com", "a".repeat(64))));
        assert!(!ok("@example.com"));
        assert!(!ok("a@"));
        assert!(!ok(".a@example.com"));
        assert!(!ok("a@-example.com"));
    }

    #[test]
    fn key_ignores_case_and_normal_form() {
        let a = Email::parse("email", "Taro@Example.COM").unwrap();
        let b = Email::parse("email", "taro@example.com").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.as_str(), "Taro@Example.COM");
        // "é" precomposed vs e + combining acute
        let c = Email::parse("email", "caf\u{e9}@example.com").unwrap();
        let d = Email::parse("email", "cafe\u{301}@example.com").unwrap();
        assert_eq!(c.key(), d.key());
    }

    /// What the outside tests found accepted beside an existing address.
    #[test]
    fn lookalikes_share_a_key_or_are_refused() {
        let key = |s: &str| Email::parse("email", s).unwrap().key().to_owned();
        assert_eq!(key("bob@bücher.example"), key("bob@xn--bcher-kva.example"));
        assert_eq!(key("bob@BÜCHER.example"), "bob@xn--bcher-kva.example");
        assert_eq!(key("ａｄｍｉｎ@example.com"), key("admin@example.com"));
        assert_eq!(key("admin@ｅｘａｍｐｌｅ.com"), key("admin@example.com"));
        assert_eq!(
            Email::parse("email", "bob@bücher.example").unwrap().as_str(),
            "bob@bücher.example"
        );
        for bad in [
            "ad\u{200B}min@example.com",
            "\u{FEFF}admin@example.com",
            "ad\u{AD}min@example.com",
            "ad\u{2060}min@example.com",
            "admin\u{202E}@example.com",
            "admin@exa\u{200D}mple.com",
            "v@xn--zz.example",
        ] {
            assert!(!ok(bad), "{bad:?} was accepted");
        }
        assert_eq!(email_key("X@Example.COM"), "x@example.com");
    }
}
