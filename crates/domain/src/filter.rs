//! The `ListUsers` filter language: a subset of AIP-160.
//!
//! ```text
//! filter     := expression
//! expression := sequence ("AND" sequence)*
//! sequence   := factor factor*                 juxtaposition also means AND
//! factor     := unary ("OR" unary)*            OR binds tighter than AND (AIP-160)
//! unary      := ("NOT" | "-") unary | "(" expression ")" | comparison
//! comparison := FIELD OP VALUE                 OP: = != < > <= >= :
//! VALUE      := "quoted string" | bare word    `field:*` tests that a field is set
//! ```
//! Fields: email, display_name, status, enabled, external_id, create_time,
//! update_time, role, custom_01..custom_10, and the profile fields
//! (given_name, family_name, title, department, company, job_role, phone,
//! mobile, locale, time_zone, note). Times are RFC 3339 strings (quote them:
//! `create_time >= "2026-01-01T00:00:00Z"`).

use crate::error::DomainError;
use crate::tenant::custom_slot;
use crate::text::Timestamp;
use crate::user::{ProfileField, UserStatus};

/// Longest filter accepted, in bytes.
pub const FILTER_MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses and NOT accepted.
const MAX_DEPTH: usize = 32;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare(Comparison),
}

/// `field op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: FilterField,
    pub op: Op,
    pub value: Value,
}

/// Fields a filter may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterField {
    Email,
    DisplayName,
    Status,
    Enabled,
    ExternalId,
    CreateTime,
    UpdateTime,
    /// The tenant role: `role = "admin"`.
    Role,
    /// 0-based custom attribute slot.
    Custom(usize),
    /// A profile field: `department = "Sales"`, `note : "vegetarian"`.
    Profile(ProfileField),
}

/// Comparison operators; `Has` is `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Has,
}

/// A typed comparison value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text; for `email` it is already the lower-cased NFC key form.
    Text(String),
    /// `:*`, "the field is set".
    Present,
    Bool(bool),
    Status(UserStatus),
    Role(crate::access::TenantRole),
    Time(Timestamp),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    LParen,
    RParen,
    Op(Op),
    Word(String),
    Str(String),
}

pub(crate) fn err(pos: usize, msg: impl std::fmt::Display) -> DomainError {
    DomainError::invalid("filter", format!("at character {}: {msg}", pos + 1))
}

pub(crate) fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, DomainError> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                out.push((pos, if c == '(' { Token::LParen } else { Token::RParen }));
            }
            '=' | ':' => {
                chars.next();
                out.push((pos, Token::Op(if c == '=' { Op::Eq } else { Op::Has })));
            }
            '!' | '<' | '>' => {
                chars.next();
                let eq = chars.next_if(|&(_, c)| c == '=').is_some();
                let op = match (c, eq) {
                    ('!', true) => Op::Ne,
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    _ => return Err(err(pos, "'!' must be followed by '=' (use NOT to negate)")),
                };
                out.push((pos, Token::Op(op)));
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(err(pos, "unterminated string")),
                        Some((_, q)) if q == c => break,
                        Some((p, '\\')) => match chars.next() {
                            Some((_, e)) => s.push(e),
                            None => return Err(err(p, "unterminated string")),
                        },
                        Some((_, ch)) => s.push(ch),
                    }
                }
                out.push((pos, Token::Str(s)));
            }
            _ => {
                let mut s = String::new();
                while let Some((_, ch)) = chars.next_if(|&(_, ch)| !ch.is_whitespace() && !"()=:!<>\"'".contains(ch)) {
                    s.push(ch);
                }
                out.push((pos, Token::Word(s)));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(x)) if x == w)
    }

    /// `sequence ("AND" sequence)*`.
    fn expression(&mut self, depth: usize) -> Result<Filter, DomainError> {
        let mut terms = vec![self.sequence(depth)?];
        while self.is_word("AND") {
            self.at += 1;
            terms.push(self.sequence(depth)?);
        }
        Ok(all(terms, Filter::And))
    }

    /// Factors side by side, each ANDed with the next.
    fn sequence(&mut self, depth: usize) -> Result<Filter, DomainError> {
        let mut terms = vec![self.factor(depth)?];
        while self.peek().is_some() && !self.is_word("AND") && self.peek() != Some(&Token::RParen) {
            terms.push(self.factor(depth)?);
        }
        Ok(all(terms, Filter::And))
    }

    /// `unary ("OR" unary)*`: in AIP-160, OR binds tighter than AND.
    fn factor(&mut self, depth: usize) -> Result<Filter, DomainError> {
        let mut terms = vec![self.unary(depth)?];
        while self.is_word("OR") {
            self.at += 1;
            terms.push(self.unary(depth)?);
        }
        Ok(all(terms, Filter::Or))
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, DomainError> {
        if depth > MAX_DEPTH {
            return Err(err(self.pos(), format!("nested deeper than {MAX_DEPTH} levels")));
        }
        if self.is_word("NOT") || self.is_word("-") {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        // `-field = value`: the minus sign written against the field name.
        if let Some((pos, Token::Word(w))) = self.tokens.get(self.at)
            && let Some(field) = w.strip_prefix('-')
            && parse_field(field).is_some()
        {
            let field = Token::Word(field.to_owned());
            self.tokens[self.at] = (pos + 1, field);
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.peek() == Some(&Token::LParen) {
            let open = self.pos();
            self.at += 1;
            let inner = self.expression(depth + 1)?;
            if self.peek() != Some(&Token::RParen) {
                return Err(err(open, "'(' is never closed"));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, DomainError> {
        let pos = self.pos();
        let field = match self.tokens.get(self.at) {
            Some((_, Token::Word(w))) if w == "AND" || w == "OR" => {
                return Err(err(pos, format!("expected a comparison before {w}")));
            }
            Some((_, Token::Word(w))) => parse_field(w).ok_or_else(|| {
                err(
                    pos,
                    format!(
                        "unknown field {w:?}; filterable fields: email, display_name, status, enabled, external_id, \
                         create_time, update_time, role, custom_01..custom_10, {}",
                        ProfileField::ALL.map(ProfileField::name).join(", ")
                    ),
                )
            })?,
            Some((_, t)) => return Err(err(pos, format!("expected a field name, found {}", describe(t)))),
            None => return Err(err(pos, "expected a comparison, found the end of the filter")),
        };
        self.at += 1;
        let op_pos = self.pos();
        let Some(Token::Op(op)) = self.peek().cloned() else {
            return Err(err(
                op_pos,
                "expected an operator (= != < > <= >= :) after the field name",
            ));
        };
        self.at += 1;
        let value_pos = self.pos();
        let raw = match self.tokens.get(self.at) {
            Some((_, Token::Word(w))) => RawValue {
                text: w.clone(),
                quoted: false,
            },
            Some((_, Token::Str(s))) => RawValue {
                text: s.clone(),
                quoted: true,
            },
            Some((_, t)) => {
                return Err(err(value_pos, format!("expected a value, found {}", describe(t))));
            }
            None => {
                return Err(err(value_pos, "expected a value, found the end of the filter"));
            }
        };
        self.at += 1;
        let value = typed_value(field, op, raw).map_err(|m| err(value_pos, m))?;
        Ok(Filter::Compare(Comparison { field, op, value }))
    }
}

struct RawValue {
    text: String,
    quoted: bool,
}

fn describe(t: &Token) -> String {
    match t {
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::Op(_) => "an operator".into(),
        Token::Word(w) => format!("{w:?}"),
        Token::Str(s) => format!("the string {s:?}"),
    }
}

/// One term as itself, several joined by `join`.
fn all(mut terms: Vec<Filter>, join: fn(Vec<Filter>) -> Filter) -> Filter {
    if terms.len() == 1 { terms.remove(0) } else { join(terms) }
}

fn parse_field(w: &str) -> Option<FilterField> {
    Some(match w {
        "email" => FilterField::Email,
        "display_name" => FilterField::DisplayName,
        "status" => FilterField::Status,
        "enabled" => FilterField::Enabled,
        "external_id" => FilterField::ExternalId,
        "create_time" => FilterField::CreateTime,
        "update_time" => FilterField::UpdateTime,
        "role" => FilterField::Role,
        other if ProfileField::from_name(other).is_some() => FilterField::Profile(ProfileField::from_name(other)?),
        other => FilterField::Custom(custom_slot(other.strip_prefix("custom_attributes.").unwrap_or(other))?),
    })
}

fn typed_value(field: FilterField, op: Op, raw: RawValue) -> Result<Value, String> {
    use FilterField::*;
    if op == Op::Has && raw.text == "*" && !raw.quoted {
        return Ok(Value::Present);
    }
    match field {
        Email | DisplayName | ExternalId | Custom(_) | Profile(_) => {
            let text = if field == Email {
                crate::email::email_key(&raw.text)
            } else {
                raw.text
            };
            Ok(Value::Text(text))
        }
        Status => {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err("status only supports = and !=".into());
            }
            raw.text.parse().map(Value::Status)
        }
        Role => {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err("role only supports = and !=".into());
            }
            raw.text.parse().map(Value::Role)
        }
        Enabled => {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err("enabled only supports = and !=".into());
            }
            match raw.text.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                other => Err(format!("enabled is compared with true or false, not {other:?}")),
            }
        }
        CreateTime | UpdateTime => {
            if op == Op::Has {
                return Err("times support = != < > <= >=, not ':'".into());
            }
            Timestamp::parse_rfc3339(&raw.text).map(Value::Time).ok_or_else(|| {
                format!(
                    "{:?} is not an RFC 3339 time; write it quoted, like \"2026-01-31T09:00:00Z\"",
                    raw.text
                )
            })
        }
    }
}

/// Parses a filter; an empty or blank filter is `None` (match everything).
pub fn parse_filter(input: &str) -> Result<Option<Filter>, DomainError> {
    if input.len() > FILTER_MAX_LEN {
        return Err(DomainError::invalid(
            "filter",
            format!("must be at most {FILTER_MAX_LEN} bytes"),
        ));
    }
    if input.trim().is_empty() {
        return Ok(None);
    }
    let tokens = tokenize(input)?;
    let mut p = Parser {
        tokens,
        at: 0,
        end: input.len(),
    };
    let filter = p.expression(0)?;
    if let Some(t) = p.peek() {
        let what = describe(t);
        return Err(err(p.pos(), format!("unexpected {what}")));
    }
    Ok(Some(filter))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cmp(field: FilterField, op: Op, value: Value) -> Filter {
        Filter::Compare(Comparison { field, op, value })
    }

    /// AIP-160: OR binds tighter than AND (and than juxtaposition).
    #[test]
    fn precedence_and_grouping() {
        let f = parse_filter(
            r#"status = CONFIRMED AND (email : "@Example.com" OR custom_02 = "x") OR NOT enabled = false"#,
        )
        .unwrap()
        .unwrap();
        let expected = Filter::And(vec![
            cmp(FilterField::Status, Op::Eq, Value::Status(UserStatus::Confirmed)),
            Filter::Or(vec![
                Filter::Or(vec![
                    cmp(FilterField::Email, Op::Has, Value::Text("@example.com".into())),
                    cmp(FilterField::Custom(1), Op::Eq, Value::Text("x".into())),
                ]),
                Filter::Not(Box::new(cmp(FilterField::Enabled, Op::Eq, Value::Bool(false)))),
            ]),
        ]);
        assert_eq!(f, expected);
        let a = cmp(FilterField::Custom(0), Op::Eq, Value::Text("1".into()));
        let b = cmp(FilterField::Custom(1), Op::Eq, Value::Text("2".into()));
        let c = cmp(FilterField::Custom(2), Op::Eq, Value::Text("3".into()));
        let parsed = |f: &str| parse_filter(f).unwrap().unwrap();
        assert_eq!(
            parsed("custom_01 = 1 OR custom_02 = 2 AND custom_03 = 3"),
            Filter::And(vec![Filter::Or(vec![a.clone(), b.clone()]), c.clone()])
        );
        assert_eq!(
            parsed("custom_01 = 1 custom_02 = 2 OR custom_03 = 3"),
            Filter::And(vec![a.clone(), Filter::Or(vec![b.clone(), c.clone()])])
        );
        for negated in ["-custom_01 = 1", "- custom_01 = 1", "NOT custom_01 = 1"] {
            assert_eq!(parsed(negated), Filter::Not(Box::new(a.clone())), "{negated}");
        }
    }

    #[test]
    fn implicit_and_presence_and_times() {
        let f = parse_filter(r#"external_id:* create_time >= "2026-01-01T00:00:00Z""#)
            .unwrap()
            .unwrap();
        let Filter::And(terms) = f else { panic!("{f:?}") };
        assert_eq!(terms[0], cmp(FilterField::ExternalId, Op::Has, Value::Present));
        assert!(matches!(
            terms[1],
            Filter::Compare(Comparison {
                op: Op::Ge,
                value: Value::Time(_),
                ..
            })
        ));
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |f: &str| parse_filter(f).unwrap_err().to_string();
        assert!(msg("nope = 1").contains("unknown field \"nope\""));
        assert!(msg("email =").contains("expected a value"));
        assert!(msg("(email = a").contains("never closed"));
        assert!(msg("email = a)").contains("unexpected ')'"));
        assert!(msg("enabled = yes").contains("true or false"));
        assert!(msg("status > CONFIRMED").contains("only supports"));
        assert!(msg("create_time > yesterday").contains("RFC 3339"));
        assert!(msg(r#"email = "abc"#).contains("unterminated"));
        assert!(msg("email ! a").contains("'!'"));
        assert!(msg(&"(".repeat(100)).contains("nested deeper"));
        assert_eq!(parse_filter("  ").unwrap(), None);
    }
}
