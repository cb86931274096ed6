//! The filter of the audit log and the change feed: comparisons joined by
//! AND (or juxtaposed), in the token syntax of the `ListUsers` filter.
//!
//! ```text
//! type = "user.created"       type = "user.*"       (every user.… event)
//! resource = "tenants/acme/users/0190…"
//! principal = "apikey:0190…"                        (the key; its id alone also works)
//! acting_user = "tenants/acme/users/0190…"
//! import_job = "tenants/acme/importJobs/0190…"      (or the job's id)
//! time >= "2026-12-01T00:00:00Z"   time < "…"       (also > and <=)
//! ```
//! Every comparison must hold. Each names a column the store filters on, so
//! a filter never makes a reader scan more than the tenant's events.

use uuid::Uuid;

use crate::error::DomainError;
use crate::event::{Event, EventType};
use crate::filter::{Op, Token, err, tokenize};
use crate::text::Timestamp;

/// Which event types a filter keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeMatch {
    Exact(EventType),
    /// Every type that starts with this (`user.`).
    Prefix(String),
}

impl TypeMatch {
    pub fn matches(&self, kind: EventType) -> bool {
        match self {
            Self::Exact(t) => *t == kind,
            Self::Prefix(p) => kind.as_str().starts_with(p.as_str()),
        }
    }
}

/// A parsed filter: every set part must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kind: Option<TypeMatch>,
    pub resource: Option<String>,
    pub api_key: Option<Uuid>,
    pub acting_user: Option<String>,
    pub import_job: Option<Uuid>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
}

impl EventFilter {
    /// Whether the filter keeps every event.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `event` passes every part.
    pub fn matches(&self, event: &Event) -> bool {
        let o = &event.origin;
        self.kind.as_ref().is_none_or(|k| k.matches(event.change.kind))
            && self.resource.as_ref().is_none_or(|r| *r == event.change.resource)
            && self.api_key.is_none_or(|k| o.key == Some(k))
            && self
                .acting_user
                .as_ref()
                .is_none_or(|u| o.acting_user.as_ref() == Some(u))
            && self.import_job.is_none_or(|j| o.import_job == Some(j))
            && self.since.is_none_or(|t| event.time >= t)
            && self.until.is_none_or(|t| event.time < t)
    }

    /// Parses `input` (empty: every event).
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        if input.len() > crate::filter::FILTER_MAX_LEN {
            return Err(DomainError::invalid(
                "filter",
                format!("is longer than {} bytes", crate::filter::FILTER_MAX_LEN),
            ));
        }
        let tokens = tokenize(input)?;
        let mut filter = Self::default();
        let mut at = 0;
        while at < tokens.len() {
            if matches!(&tokens[at].1, Token::Word(w) if w == "AND") && at > 0 {
                at += 1;
                continue;
            }
            let (pos, field) = match &tokens[at] {
                (pos, Token::Word(w)) => (*pos, w.as_str()),
                (pos, _) => {
                    return Err(err(
                        *pos,
                        "expected a field: type, resource, principal, acting_user, import_job or time",
                    ));
                }
            };
            let (op, value) = match (tokens.get(at + 1), tokens.get(at + 2)) {
                (Some((_, Token::Op(op))), Some((_, Token::Str(v) | Token::Word(v)))) => (*op, v.clone()),
                _ => {
                    return Err(err(
                        pos,
                        format!("expected {field} followed by an operator and a value"),
                    ));
                }
            };
            at += 3;
            filter.add(pos, field, op, &value)?;
        }
        Ok(filter)
    }

    fn add(&mut self, pos: usize, field: &str, op: Op, value: &str) -> Result<(), DomainError> {
        let equality = |name: &str| {
            if matches!(op, Op::Eq | Op::Has) {
                Ok(())
            } else {
                Err(err(pos, format!("{name} is compared with = only")))
            }
        };
        let once = |set: bool| {
            if set {
                Err(err(
                    pos,
                    format!("{field} is compared once (the comparisons are joined by AND)"),
                ))
            } else {
                Ok(())
            }
        };
        match field {
            "type" => {
                equality(field)?;
                once(self.kind.is_some())?;
                self.kind = Some(match value.strip_suffix('*') {
                    Some(prefix) => TypeMatch::Prefix(prefix.to_owned()),
                    None => TypeMatch::Exact(value.parse().map_err(|e| err(pos, e))?),
                });
            }
            "resource" => {
                equality(field)?;
                once(self.resource.is_some())?;
                self.resource = Some(value.to_owned());
            }
            "principal" => {
                equality(field)?;
                once(self.api_key.is_some())?;
                let id = value.strip_prefix("apikey:").unwrap_or(value);
                let id = Uuid::parse_str(id)
                    .map_err(|_| err(pos, format!("{value:?} is not a principal; expected apikey:<key id>")))?;
                self.api_key = Some(id);
            }
            "acting_user" => {
                equality(field)?;
                once(self.acting_user.is_some())?;
                self.acting_user = Some(value.to_owned());
            }
            "import_job" => {
                equality(field)?;
                once(self.import_job.is_some())?;
                let id = value.rsplit('/').next().unwrap_or(value);
                let id = Uuid::parse_str(id).map_err(|_| {
                    err(
                        pos,
                        format!("{value:?} is not an import job; expected tenants/{{t}}/importJobs/{{id}}"),
                    )
                })?;
                self.import_job = Some(id);
            }
            "time" => {
                let time = Timestamp::parse_rfc3339(value)
                    .ok_or_else(|| err(pos, format!("{value:?} is not an RFC 3339 time")))?;
                match op {
                    Op::Ge => self.since = Some(time),
                    Op::Gt => self.since = Some(Timestamp::from_unix_micros(time.unix_micros() + 1)),
                    Op::Lt => self.until = Some(time),
                    Op::Le => self.until = Some(Timestamp::from_unix_micros(time.unix_micros() + 1)),
                    _ => return Err(err(pos, "time is compared with >=, >, < or <=")),
                }
            }
            other => {
                return Err(err(
                    pos,
                    format!(
                        "{other:?} is not a field of events; use type, resource, principal, acting_user, import_job \
                         or time"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn comparisons_join_by_and() {
        let f = EventFilter::parse(
            r#"type = "user.*" AND resource = "tenants/acme/users/x" time >= "2026-12-01T00:00:00Z""#,
        )
        .unwrap();
        assert_eq!(f.kind, Some(TypeMatch::Prefix("user.".into())));
        assert_eq!(f.resource.as_deref(), Some("tenants/acme/users/x"));
        assert!(f.since.is_some() && f.until.is_none());
        assert!(EventFilter::parse("").unwrap().is_empty());
    }

    #[test]
    fn principals_and_jobs_read_by_name_or_id() {
        let id = Uuid::now_v7();
        let f = EventFilter::parse(&format!(
            "principal = \"apikey:{}\" import_job = \"tenants/acme/importJobs/{id}\"",
            id.simple()
        ))
        .unwrap();
        assert_eq!((f.api_key, f.import_job), (Some(id), Some(id)));
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("colour = \"red\"", "not a field of events"),
            ("type = \"user.exploded\"", "not an event type"),
            ("type != \"user.created\"", "compared with = only"),
            ("type = \"user.*\" type = \"tenant.*\"", "compared once"),
            ("time = \"2026-12-01T00:00:00Z\"", ">="),
            ("time >= \"yesterday\"", "RFC 3339"),
            ("principal = \"bob\"", "apikey:"),
            ("type", "followed by an operator"),
        ] {
            let e = EventFilter::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
