//! Keyset paging in SQL: `(a, b) < ($1, $2)`, a row-value comparison that PostgreSQL and SQLite
//! both turn into one index range starting right after the cursor, so page 500 costs what page
//! 1 does (the `a < x OR (a = x AND id < y)` form makes PostgreSQL walk the index from its start).
//!
//! Written as a Diesel expression rather than an `sql()` literal because a literal marks the
//! whole query unsafe to cache: each page after the first would be parsed and planned again
//! (`make bench`: page 500 took 1.3× page 1's latency that way, all of it planning).

use diesel::{
    backend::Backend,
    expression::{AppearsOnTable, Expression, ValidGrouping},
    query_builder::{AstPass, QueryFragment, QueryId},
    sql_types::Bool,
};

/// `(columns) < (values)` or `(columns) > (values)`; made by [`past`].
#[derive(Debug, Clone, Copy)]
pub struct RowCompare<C, V> {
    columns: C,
    op: &'static str,
    values: V,
}

/// Rows past the cursor `values` in an ordering by `columns` (a tuple of columns, and one of
/// bound values of the same types, as made by `IntoSql::into_sql`): those sorting before it
/// when the order is descending, after it when ascending.
pub fn past<C, V>(columns: C, values: V, descending: bool) -> RowCompare<C, V> {
    RowCompare {
        columns,
        op: if descending { " < " } else { " > " },
        values,
    }
}

impl<C, V> Expression for RowCompare<C, V> {
    type SqlType = Bool;
}

impl<C, V, QS> AppearsOnTable<QS> for RowCompare<C, V>
where
    C: AppearsOnTable<QS>,
    V: AppearsOnTable<QS>,
{
}

impl<C, V> ValidGrouping<()> for RowCompare<C, V>
where
    C: ValidGrouping<()>,
{
    type IsAggregate = C::IsAggregate;
}

// No static id: the two operators must never share a prepared statement. Queries are cached
// by their SQL text instead, which holds the operator.
impl<C, V> QueryId for RowCompare<C, V> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C, V, DB> QueryFragment<DB> for RowCompare<C, V>
where
    DB: Backend,
    C: QueryFragment<DB>,
    V: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        out.push_sql("(");
        self.columns.walk_ast(out.reborrow())?;
        out.push_sql(")");
        out.push_sql(self.op);
        out.push_sql("(");
        self.values.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}
