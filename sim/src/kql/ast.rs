//! The syntax tree of a parsed query.

use super::Value;

/// A whole query: `let` statements, then one tabular expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `let name = <scalar>;` in order.
    pub lets: Vec<(String, Expr)>,
    /// The tabular expression that produces the result.
    pub body: Tabular,
}

/// A source followed by `| operator` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Tabular {
    /// Where rows come from.
    pub source: Source,
    /// The operators, in order.
    pub ops: Vec<Op>,
}

/// A tabular source.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A table by name.
    Table(String),
    /// `union A, (B | where ...)`.
    Union(Vec<Tabular>),
}

/// A named expression (`name = expr` or a bare expression).
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// The name given, if any.
    pub name: Option<String>,
    /// The expression.
    pub expr: Expr,
}

/// An aggregate of `summarize`.
#[derive(Debug, Clone, PartialEq)]
pub enum AggFn {
    /// `count()`.
    Count,
    /// `dcount(x)`.
    DCount,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `make_set(x)`.
    MakeSet,
    /// `sum(x)`.
    Sum,
    /// `avg(x)`.
    Avg,
}

/// One aggregate column of `summarize`.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// Result column name, if given.
    pub name: Option<String>,
    /// The function.
    pub func: AggFn,
    /// Its argument (none for `count()`).
    pub arg: Option<Expr>,
}

/// A sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// What to sort by.
    pub expr: Expr,
    /// Descending (the default).
    pub desc: bool,
    /// Nulls first (default: first ascending, last descending).
    pub nulls_first: bool,
}

/// A tabular operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `where <predicate>`.
    Where(Expr),
    /// `project a, b = expr`.
    Project(Vec<Named>),
    /// `project-away a, b`.
    ProjectAway(Vec<String>),
    /// `extend x = expr`.
    Extend(Vec<Named>),
    /// `summarize aggs by keys`.
    Summarize {
        /// Aggregates.
        aggs: Vec<Agg>,
        /// Group keys.
        by: Vec<Named>,
    },
    /// `order by` / `sort by`.
    Sort(Vec<SortKey>),
    /// `take N` / `limit N`.
    Take(Expr),
    /// `top N by key`.
    Top(Expr, SortKey),
    /// `distinct a, b` (empty: `distinct *`).
    Distinct(Vec<String>),
    /// `count`.
    Count,
}

impl Op {
    /// The operator's name in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Where(_) => "where",
            Op::Project(_) => "project",
            Op::ProjectAway(_) => "project-away",
            Op::Extend(_) => "extend",
            Op::Summarize { .. } => "summarize",
            Op::Sort(_) => "order",
            Op::Take(_) => "take",
            Op::Top(..) => "top",
            Op::Distinct(_) => "distinct",
            Op::Count => "count",
        }
    }
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `and`.
    And,
    /// `or`.
    Or,
    /// `==`.
    Eq,
    /// `!=` / `<>`.
    Ne,
    /// `=~`.
    EqCi,
    /// `!~`.
    NeCi,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `has`.
    Has,
    /// `!has`.
    NotHas,
    /// `contains`.
    Contains,
    /// `!contains`.
    NotContains,
    /// `startswith`.
    StartsWith,
    /// `!startswith`.
    NotStartsWith,
    /// `endswith`.
    EndsWith,
    /// `!endswith`.
    NotEndsWith,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Mod,
}

/// A scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A column or `let` name.
    Name(String),
    /// Unary minus.
    Neg(Box<Expr>),
    /// A binary operation.
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `x in (...)` and its forms.
    In {
        /// The tested value.
        expr: Box<Expr>,
        /// The candidates (a `dynamic` list or let name expands in place).
        list: Vec<Expr>,
        /// `!in`.
        negated: bool,
        /// `in~`.
        ci: bool,
    },
    /// `x between (lo .. hi)` / `!between`.
    Between {
        /// The tested value.
        expr: Box<Expr>,
        /// Low bound (inclusive).
        lo: Box<Expr>,
        /// High bound (inclusive).
        hi: Box<Expr>,
        /// `!between`.
        negated: bool,
    },
    /// A function call.
    Call(String, Vec<Expr>),
}
