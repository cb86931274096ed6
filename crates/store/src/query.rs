//! The domain's filter and keyset cursor as SQL conditions.

use sea_orm::sea_query::{Expr, Func, LikeExpr, SimpleExpr};
use sea_orm::{
    ColumnTrait, Condition, DbBackend, EntityTrait, ExprTrait, Order, QueryFilter, QueryOrder, QuerySelect, Select,
};
use userdir_domain::DomainError;
use userdir_domain::filter::{Comparison, Filter, FilterField, Op, Value};
use userdir_domain::list::{OrderBy, OrderField, SortKey, UserQuery};
use userdir_domain::tenant::TenantId;
use uuid::Uuid;

use crate::entity::user::{CUSTOM_COLUMNS, Column, Entity, PROFILE_COLUMNS};

/// `tenant_id = tenant AND id IN ids`, led by the primary key. SQLite,
/// without statistics, takes a `(tenant_id, ...)` index for the tenant's
/// term instead and reads the whole tenant for every list of ids (a 900k
/// re-import of an export by user id took 80 s instead of 6); a unary `+`
/// keeps that term off the indexes there. PostgreSQL needs no help (and has
/// no `+` for text).
pub(crate) fn users_by_ids(backend: DbBackend, tenant: &TenantId, ids: &[Uuid]) -> Condition {
    let of_tenant = if backend == DbBackend::Sqlite {
        Expr::cust_with_values("+tenant_id = ?", [tenant.as_str()])
    } else {
        Column::TenantId.eq(tenant.as_str())
    };
    Condition::all()
        .add(of_tenant)
        .add(Column::Id.is_in(ids.iter().copied()))
}

/// The SQL condition of a parsed filter.
pub(crate) fn filter_condition(filter: &Filter) -> SimpleExpr {
    match filter {
        Filter::And(terms) => fold(terms, SimpleExpr::and),
        Filter::Or(terms) => fold(terms, SimpleExpr::or),
        Filter::Not(inner) => filter_condition(inner).not(),
        Filter::Compare(c) => comparison(c),
    }
}

fn fold(terms: &[Filter], op: fn(SimpleExpr, SimpleExpr) -> SimpleExpr) -> SimpleExpr {
    let mut exprs = terms.iter().map(filter_condition);
    let first = exprs.next().unwrap_or_else(|| Expr::value(true));
    exprs.fold(first, op)
}

fn column(field: FilterField) -> Column {
    match field {
        FilterField::Email => Column::EmailKey,
        FilterField::DisplayName => Column::DisplayName,
        FilterField::Status => Column::Status,
        FilterField::Enabled => Column::Enabled,
        FilterField::ExternalId => Column::ExternalId,
        FilterField::CreateTime => Column::CreateTime,
        FilterField::UpdateTime => Column::UpdateTime,
        FilterField::Role => Column::Role,
        FilterField::Custom(slot) => CUSTOM_COLUMNS[slot.min(CUSTOM_COLUMNS.len() - 1)],
        FilterField::Profile(field) => PROFILE_COLUMNS[field.index()],
    }
}

/// `%`, `_` and `\` taken literally inside a LIKE pattern.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn compare(col: SimpleExpr, op: Op, value: SimpleExpr) -> SimpleExpr {
    match op {
        Op::Eq | Op::Has => col.eq(value),
        Op::Ne => col.ne(value),
        Op::Lt => col.lt(value),
        Op::Gt => col.gt(value),
        Op::Le => col.lte(value),
        Op::Ge => col.gte(value),
    }
}

fn comparison(c: &Comparison) -> SimpleExpr {
    let col = column(c.field);
    // An unset external id is NULL; compare it as the empty string so that
    // `external_id != "x"` includes users without one.
    let text_col = || match c.field {
        FilterField::ExternalId => SimpleExpr::from(Func::coalesce([Expr::col(col), Expr::value("")])),
        _ => Expr::col(col),
    };
    match (&c.value, c.op) {
        (Value::Present, _) => text_col().ne(""),
        (Value::Text(text), Op::Has) => {
            let pattern = format!("%{}%", like_escape(&text.to_lowercase()));
            SimpleExpr::from(Func::lower(text_col())).like(LikeExpr::new(pattern).escape('\\'))
        }
        (Value::Text(text), op) => compare(text_col(), op, Expr::value(text.clone())),
        (Value::Bool(b), op) => compare(Expr::col(col), op, Expr::value(*b)),
        (Value::Status(s), op) => compare(Expr::col(col), op, Expr::value(s.as_str())),
        (Value::Role(r), op) => compare(Expr::col(col), op, Expr::value(r.as_str())),
        (Value::Time(t), op) => compare(Expr::col(col), op, Expr::value(t.unix_micros())),
    }
}

/// The column a `ListUsers` order sorts by.
pub(crate) fn order_column(field: OrderField) -> Column {
    match field {
        OrderField::Email => Column::EmailKey,
        OrderField::DisplayName => Column::DisplayName,
        OrderField::CreateTime => Column::CreateTime,
        OrderField::UpdateTime => Column::UpdateTime,
    }
}

/// One page of a `ListUsers` query: tenant, filter, order, keyset, limit.
pub(crate) fn page_select(tenant: &TenantId, query: &UserQuery, limit: u32) -> Result<Select<Entity>, DomainError> {
    let mut select = Entity::find().filter(Column::TenantId.eq(tenant.as_str()));
    if let Some(filter) = &query.filter {
        select = select.filter(filter_condition(filter));
    }
    Ok(apply_order_and_cursor(select, query.order, query.after.as_ref())?.limit(u64::from(limit)))
}

/// Orders by the requested field then id, and starts strictly after `after`.
pub(crate) fn apply_order_and_cursor(
    select: Select<Entity>,
    order: OrderBy,
    after: Option<&SortKey>,
) -> Result<Select<Entity>, DomainError> {
    let col = order_column(order.field);
    let dir = if order.descending { Order::Desc } else { Order::Asc };
    let mut select = select.order_by(col, dir.clone()).order_by(Column::Id, dir);
    if let Some(key) = after {
        let bad = || DomainError::invalid("page_token", "does not fit this request's order_by");
        let id = Uuid::parse_str(&key.id).map_err(|_| bad())?;
        let value: SimpleExpr = match (order.field, &key.text, key.int) {
            (OrderField::Email | OrderField::DisplayName, Some(text), None) => Expr::value(text.clone()),
            (OrderField::CreateTime | OrderField::UpdateTime, None, Some(int)) => Expr::value(int),
            _ => return Err(bad()),
        };
        // A row-value comparison, `(field, id) > (value, last_id)`: both
        // databases turn it into a range on the (tenant, field, id) index, so
        // every page starts where the last ended (an OR of the two conditions
        // was only a filter: each page rescanned the tenant from its start).
        let key = Expr::tuple([Expr::col(col), Expr::col(Column::Id)]);
        let last = Expr::tuple([value, Expr::value(id)]);
        let cursor = if order.descending { key.lt(last) } else { key.gt(last) };
        select = select.filter(cursor);
    }
    Ok(select)
}
