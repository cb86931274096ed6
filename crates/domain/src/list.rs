//! Ordering and keyset paging for list RPCs.
//!
//! A page token is an encoded keyset cursor: the sort key and id of the last
//! row returned, plus the scope (tenant, filter and order) it belongs to. The
//! next page starts strictly after that key, so rows created or deleted between
//! pages never make a row appear twice.

use crate::error::DomainError;
use crate::filter::{Filter, parse_filter};
use crate::page_token::PageTokens;
pub use crate::page_token::SortKey;
use crate::user::User;

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size; larger requests are capped (AIP-158).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Resolves a requested page size: 0 = default, negative = error, capped at the max.
pub fn page_size(requested: i32) -> Result<u32, DomainError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(DomainError::invalid("page_size", "must not be negative")),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

/// Fields users can be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderField {
    /// By the case-insensitive email key.
    Email,
    DisplayName,
    #[default]
    CreateTime,
    UpdateTime,
}

/// `order_by`, parsed. Ties are broken by user id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderBy {
    pub field: OrderField,
    pub descending: bool,
}

impl OrderBy {
    /// Parses `field [asc|desc]`; empty means `create_time asc` (creation order).
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let bad = |m: String| DomainError::invalid("order_by", m);
        let words: Vec<&str> = input.split_whitespace().collect();
        let (field, dir) = match words.as_slice() {
            [] => return Ok(Self::default()),
            [f] => (*f, None),
            [f, d] => (*f, Some(*d)),
            _ if input.contains(',') => {
                return Err(bad("only one order_by field is supported".into()));
            }
            _ => return Err(bad(format!("{input:?} is not `field [asc|desc]`"))),
        };
        let field = match field {
            "email" => OrderField::Email,
            "display_name" => OrderField::DisplayName,
            "create_time" => OrderField::CreateTime,
            "update_time" => OrderField::UpdateTime,
            other => {
                return Err(bad(format!(
                    "cannot order by {other:?}; use email, display_name, create_time or update_time"
                )));
            }
        };
        let descending = match dir.map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(bad(format!("direction {other:?} must be asc or desc"))),
        };
        Ok(Self { field, descending })
    }
}

/// A parsed `ListUsers` request.
#[derive(Debug, Clone)]
pub struct UserQuery {
    pub filter: Option<Filter>,
    pub order: OrderBy,
    /// Start strictly after this key.
    pub after: Option<SortKey>,
    pub limit: u32,
    /// Scope string for page tokens.
    pub scope: String,
}

impl UserQuery {
    /// Parses and checks the list parameters of `tenant`.
    pub fn parse(
        tenant: &str,
        filter: &str,
        order_by: &str,
        page_size: i32,
        page_token: &str,
        tokens: &PageTokens,
    ) -> Result<Self, DomainError> {
        let parsed_filter = parse_filter(filter)?;
        let order = OrderBy::parse(order_by)?;
        let limit = self::page_size(page_size)?;
        let scope = format!("tenants/{tenant}/users\u{0}{}\u{0}{order:?}", filter.trim());
        let after = if page_token.is_empty() {
            None
        } else {
            Some(tokens.decode(&scope, page_token)?)
        };
        Ok(Self {
            filter: parsed_filter,
            order,
            after,
            limit,
            scope,
        })
    }
}

/// The keyset position of `user` in the given order.
pub fn sort_key(user: &User, field: OrderField) -> SortKey {
    let id = user.id.to_string();
    match field {
        OrderField::Email => SortKey {
            text: Some(user.email.key().to_owned()),
            int: None,
            id,
        },
        OrderField::DisplayName => SortKey {
            text: Some(user.display_name.clone()),
            int: None,
            id,
        },
        OrderField::CreateTime => SortKey {
            text: None,
            int: Some(user.create_time.unix_micros()),
            id,
        },
        OrderField::UpdateTime => SortKey {
            text: None,
            int: Some(user.update_time.unix_micros()),
            id,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn order_by() {
        assert_eq!(OrderBy::parse("").unwrap(), OrderBy::default());
        assert_eq!(
            OrderBy::parse("email desc").unwrap(),
            OrderBy {
                field: OrderField::Email,
                descending: true
            }
        );
        assert!(OrderBy::parse("password").is_err());
        assert!(OrderBy::parse("email sideways").is_err());
        assert!(OrderBy::parse("email, display_name").is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).unwrap(), 100);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
