//! The OData subset Defender lists understand: `$top`, `$skip`, `$filter` (comparisons, `and`,
//! `or`, `not`, parentheses, `startswith`/`endswith`/`contains`, `any`/`all` lambdas over
//! collections) and server paging with an absolute `@odata.nextLink`.
//!
//! A handler extracts a [`ListQuery`], collects its items as JSON objects and answers
//! [`list_response`] (or [`count_response`] for `/$count`).

use std::borrow::Cow;
use std::cmp::Ordering;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Largest `$top` Defender accepts.
pub const MAX_TOP: usize = 10_000;

/// Deepest nesting of parentheses, `not` and lambdas a filter may use.
const MAX_DEPTH: usize = 64;

/// The OData options of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `$top`: the page size the caller asked for (1..=10000).
    pub top: Option<usize>,
    /// `$skip`: items to skip before the page.
    pub skip: usize,
    /// `$filter`, parsed.
    pub filter: Option<Filter>,
    /// `$orderby`: one property, ascending unless `desc`.
    pub orderby: Option<OrderBy>,
}

/// A parsed `$orderby` on one property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// The property.
    pub field: String,
    /// Descending (`desc`) rather than ascending.
    pub descending: bool,
}

impl OrderBy {
    /// Parses `field [asc|desc]`.
    fn parse(text: &str) -> Result<OrderBy, ApiError> {
        let mut words = text.split_whitespace();
        let field = words.next().unwrap_or_default();
        let valid_field = !field.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/');
        let descending = match words.next() {
            None => false,
            Some(w) if w.eq_ignore_ascii_case("asc") => false,
            Some(w) if w.eq_ignore_ascii_case("desc") => true,
            Some(_) => return Err(odata_error(format!("Invalid $orderby '{text}'."))),
        };
        if !valid_field || words.next().is_some() || field.contains(',') {
            return Err(odata_error(format!(
                "Invalid $orderby '{text}': one property, then asc or desc."
            )));
        }
        Ok(OrderBy {
            field: field.to_string(),
            descending,
        })
    }

    /// The text as sent again in a nextLink.
    pub fn text(&self) -> String {
        if self.descending {
            format!("{} desc", self.field)
        } else {
            format!("{} asc", self.field)
        }
    }

    /// Sorts `items` by the property (stable; items without it first when ascending).
    pub fn sort(&self, items: &mut [Value]) {
        let key = |v: &Value| -> Option<Value> {
            v.as_object().and_then(|o| lookup(o, &self.field)).cloned()
        };
        items.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            let ord = match (&ka, &kb) {
                (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
                (None | Some(Value::Null), _) => Ordering::Less,
                (_, None | Some(Value::Null)) => Ordering::Greater,
                (Some(x), Some(y)) => {
                    order(&Val::from_json(x), &Val::from_json(y)).unwrap_or(Ordering::Equal)
                }
            };
            if self.descending { ord.reverse() } else { ord }
        });
    }
}

/// A parsed `$filter` with its original text (kept for the nextLink).
#[derive(Debug, Clone)]
pub struct Filter {
    /// The text as the caller sent it (decoded).
    pub text: String,
    /// The expression tree.
    pub expr: Expr,
}

/// How a list answers: its `@odata.context` fragment, the fields `$filter` may use, page size.
#[derive(Debug, Clone, Copy)]
pub struct ListSpec<'a> {
    /// `@odata.context` fragment, e.g. `Machines`.
    pub context_fragment: &'a str,
    /// Entity type name used in error messages, e.g. `Machine`.
    pub entity: &'a str,
    /// Properties `$filter` may reference.
    pub filterable: &'a [&'a str],
    /// Page size when the caller gives no (or a larger) `$top`.
    pub page_size: usize,
}

/// A `$filter` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal value.
    Lit(Lit),
    /// A property path (`a/b/c`); the first segment may be a lambda variable.
    Path(Vec<String>),
    /// `a or b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a and b`.
    And(Box<Expr>, Box<Expr>),
    /// `not a`.
    Not(Box<Expr>),
    /// A comparison.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// A built-in function call.
    Call(Func, Vec<Expr>),
    /// `path/any(v: body)`, `path/all(v: body)`, or `path/any()` (no lambda).
    Lambda {
        /// True for `all`, false for `any`.
        all: bool,
        /// The collection property path.
        path: Vec<String>,
        /// Variable name and body; None for `any()`.
        body: Option<(String, Box<Expr>)>,
    },
}

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A quoted string (quotes removed, `''` unescaped).
    Str(String),
    /// An unquoted date-time literal (or `datetime'...'`).
    DateTime(String),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `eq`.
    Eq,
    /// `ne`.
    Ne,
    /// `gt`.
    Gt,
    /// `ge`.
    Ge,
    /// `lt`.
    Lt,
    /// `le`.
    Le,
}

/// Built-in functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `startswith(s, prefix)`.
    StartsWith,
    /// `endswith(s, suffix)`.
    EndsWith,
    /// `contains(s, part)`.
    Contains,
    /// `tolower(s)`.
    ToLower,
    /// `toupper(s)`.
    ToUpper,
}

impl Func {
    fn from_name(name: &str) -> Option<(Func, usize)> {
        match name.to_ascii_lowercase().as_str() {
            "startswith" => Some((Func::StartsWith, 2)),
            "endswith" => Some((Func::EndsWith, 2)),
            "contains" | "substringof" => Some((Func::Contains, 2)),
            "tolower" => Some((Func::ToLower, 1)),
            "toupper" => Some((Func::ToUpper, 1)),
            _ => None,
        }
    }
}

fn odata_error(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("ODataError", message)
}

impl ListQuery {
    /// Parses the raw (still percent-encoded) query string of a request.
    pub fn parse(raw: Option<&str>) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery::default();
        let Some(raw) = raw else {
            return Ok(q);
        };
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let key = key.to_ascii_lowercase();
            match key.as_str() {
                "$top" => {
                    let top = value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_TOP).contains(n))
                        .ok_or_else(|| {
                            odata_error(format!(
                                "Invalid value '{value}' for $top: it must be an integer between 1 and {MAX_TOP}."
                            ))
                        })?;
                    q.top = Some(top);
                }
                "$skip" => {
                    q.skip = value.trim().parse::<usize>().map_err(|_| {
                        odata_error(format!(
                            "Invalid value '{value}' for $skip: it must be a non-negative integer."
                        ))
                    })?;
                }
                "$orderby" => {
                    q.orderby = Some(OrderBy::parse(&value)?);
                }
                "$filter" => {
                    let expr = parse_filter(&value)?;
                    q.filter = Some(Filter {
                        text: value.into_owned(),
                        expr,
                    });
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// Refuses a `$filter` that references a property outside `spec.filterable`.
    /// `items` tell an unknown property from a known but non-filterable one (message only).
    pub fn check_filterable(&self, spec: &ListSpec<'_>, items: &[Value]) -> Result<(), ApiError> {
        let mut roots = Vec::new();
        if let Some(filter) = &self.filter {
            collect_roots(&filter.expr, &mut Vec::new(), &mut roots);
        }
        if let Some(o) = &self.orderby {
            roots.push(o.field.split('/').next().unwrap_or_default().to_string());
        }
        for root in roots {
            if spec
                .filterable
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&root))
            {
                continue;
            }
            let known = items
                .iter()
                .filter_map(Value::as_object)
                .any(|o| lookup(o, &root).is_some());
            return Err(odata_error(if known {
                format!("The property '{root}' cannot be used in the $filter query option.")
            } else {
                format!(
                    "Could not find a property named '{root}' on type '{}'.",
                    spec.entity
                )
            }));
        }
        Ok(())
    }

    /// Whether an item passes the `$filter` (always true without one).
    pub fn matches(&self, item: &Value) -> bool {
        match &self.filter {
            Some(f) => matches(&f.expr, item),
            None => true,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        ListQuery::parse(parts.uri.query())
    }
}

/// Whether `item` satisfies `expr`.
pub fn matches(expr: &Expr, item: &Value) -> bool {
    let env = Env {
        root: item,
        vars: Vec::new(),
    };
    matches!(eval(expr, &env), Val::Bool(true))
}

/// Applies `$filter`, `$skip` and paging to `items` and builds the list answer, with an
/// absolute `@odata.nextLink` (`http://{Host}{path}?$skip=..`) when more items remain.
pub fn list_response(
    items: Vec<Value>,
    query: &ListQuery,
    headers: &HeaderMap,
    path: &str,
    spec: &ListSpec<'_>,
) -> Result<Json<Value>, ApiError> {
    query.check_filterable(spec, &items)?;
    let mut filtered: Vec<Value> = items.into_iter().filter(|v| query.matches(v)).collect();
    if let Some(o) = &query.orderby {
        o.sort(&mut filtered);
    }
    let total = filtered.len();
    let page = query.top.unwrap_or(usize::MAX).min(spec.page_size.max(1));
    let start = query.skip.min(total);
    let end = start.saturating_add(page).min(total);
    let value: Vec<Value> = filtered.drain(start..end).collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(super::odata_context(headers, spec.context_fragment)),
    );
    body.insert("value".into(), Value::Array(value));
    if end < total {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(headers, path, end, query)),
        );
    }
    Ok(Json(Value::Object(body)))
}

/// The `/$count` answer: how many items pass the `$filter`, as a bare number.
pub fn count_response(
    items: Vec<Value>,
    query: &ListQuery,
    spec: &ListSpec<'_>,
) -> Result<Response, ApiError> {
    query.check_filterable(spec, &items)?;
    let n = items.iter().filter(|v| query.matches(v)).count();
    Ok((
        [("content-type", "text/plain; charset=utf-8")],
        n.to_string(),
    )
        .into_response())
}

/// `http://{Host}{path}?$skip=N[&$top=M][&$filter=...]`.
fn next_link(headers: &HeaderMap, path: &str, skip: usize, query: &ListQuery) -> String {
    let mut link = format!("{}{path}?$skip={skip}", super::base_url(headers));
    if let Some(top) = query.top {
        link.push_str(&format!("&$top={top}"));
    }
    if let Some(f) = &query.filter {
        link.push_str("&$filter=");
        link.push_str(&encode_component(&f.text));
    }
    if let Some(o) = &query.orderby {
        link.push_str("&$orderby=");
        link.push_str(&encode_component(&o.text()));
    }
    link
}

/// Percent-encodes a query value (spaces as `%20`, never `+`).
fn encode_component(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A property of an object: exact name first, then ignoring ASCII case.
fn lookup<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Root properties referenced by an expression (lambda variables excluded).
fn collect_roots(expr: &Expr, vars: &mut Vec<String>, out: &mut Vec<String>) {
    match expr {
        Expr::Lit(_) => {}
        Expr::Path(p) => push_root(p, vars, out),
        Expr::Or(a, b) | Expr::And(a, b) | Expr::Cmp(_, a, b) => {
            collect_roots(a, vars, out);
            collect_roots(b, vars, out);
        }
        Expr::Not(a) => collect_roots(a, vars, out),
        Expr::Call(_, args) => args.iter().for_each(|a| collect_roots(a, vars, out)),
        Expr::Lambda { path, body, .. } => {
            push_root(path, vars, out);
            if let Some((var, body)) = body {
                vars.push(var.clone());
                collect_roots(body, vars, out);
                vars.pop();
            }
        }
    }
}

fn push_root(path: &[String], vars: &[String], out: &mut Vec<String>) {
    if let Some(first) = path.first()
        && !vars.iter().any(|v| v == first)
        && !out.contains(first)
    {
        out.push(first.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Where paths resolve: the item and the lambda variables in scope (innermost last).
struct Env<'a> {
    root: &'a Value,
    vars: Vec<(&'a str, &'a Value)>,
}

/// A value during evaluation.
#[derive(Debug, Clone)]
enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    DateTime(Cow<'a, str>),
    /// An array or object (only comparable with null).
    Composite,
}

impl<'a> Val<'a> {
    fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => n.as_f64().map_or(Val::Null, Val::Num),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => Val::Composite,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Val::Str(s) | Val::DateTime(s) => Some(s),
            _ => None,
        }
    }
}

fn resolve<'a>(path: &'a [String], env: &Env<'a>) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = match env.vars.iter().rev().find(|(name, _)| *name == first) {
        Some((_, v)) => *v,
        None => lookup(env.root.as_object()?, first)?,
    };
    for seg in rest {
        cur = lookup(cur.as_object()?, seg)?;
    }
    Some(cur)
}

fn eval<'a>(expr: &'a Expr, env: &Env<'a>) -> Val<'a> {
    match expr {
        Expr::Lit(l) => match l {
            Lit::Null => Val::Null,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Num(n) => Val::Num(*n),
            Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
            Lit::DateTime(s) => Val::DateTime(Cow::Borrowed(s)),
        },
        Expr::Path(p) => resolve(p, env).map_or(Val::Null, Val::from_json),
        Expr::Or(a, b) => Val::Bool(truthy(a, env) || truthy(b, env)),
        Expr::And(a, b) => Val::Bool(truthy(a, env) && truthy(b, env)),
        Expr::Not(a) => match eval(a, env) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        Expr::Cmp(op, a, b) => compare(*op, &eval(a, env), &eval(b, env)),
        Expr::Call(f, args) => call(*f, args, env),
        Expr::Lambda { all, path, body } => {
            let items: &[Value] = match resolve(path, env) {
                Some(Value::Array(a)) => a,
                _ => &[],
            };
            match body {
                None => Val::Bool(!items.is_empty()),
                Some((var, body)) => {
                    let test = |item: &'a Value| {
                        let mut vars = env.vars.clone();
                        vars.push((var.as_str(), item));
                        let inner = Env {
                            root: env.root,
                            vars,
                        };
                        matches!(eval(body, &inner), Val::Bool(true))
                    };
                    Val::Bool(if *all {
                        items.iter().all(test)
                    } else {
                        items.iter().any(test)
                    })
                }
            }
        }
    }
}

fn truthy<'a>(expr: &'a Expr, env: &Env<'a>) -> bool {
    matches!(eval(expr, env), Val::Bool(true))
}

fn call<'a>(f: Func, args: &'a [Expr], env: &Env<'a>) -> Val<'a> {
    let vals: Vec<Val<'a>> = args.iter().map(|a| eval(a, env)).collect();
    let text = |i: usize| vals.get(i).and_then(Val::text);
    match f {
        Func::ToLower => text(0).map_or(Val::Null, |s| Val::Str(Cow::Owned(s.to_lowercase()))),
        Func::ToUpper => text(0).map_or(Val::Null, |s| Val::Str(Cow::Owned(s.to_uppercase()))),
        Func::StartsWith | Func::EndsWith | Func::Contains => match (text(0), text(1)) {
            (Some(s), Some(p)) => {
                let (s, p) = (s.to_lowercase(), p.to_lowercase());
                Val::Bool(match f {
                    Func::StartsWith => s.starts_with(&p),
                    Func::EndsWith => s.ends_with(&p),
                    _ => s.contains(&p),
                })
            }
            _ => Val::Bool(false),
        },
    }
}

/// Parses an RFC 3339 date-time (also a bare date) into unix nanoseconds.
fn instant(text: &str) -> Option<i128> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &fmt)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp_nanos())
}

/// Orders two values of compatible types; None when they cannot be compared.
fn order(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::DateTime(_), _) | (_, Val::DateTime(_)) => {
            let (x, y) = (a.text()?, b.text()?);
            match (instant(x), instant(y)) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => Some(x.cmp(y)),
            }
        }
        (Val::Str(x), Val::Str(y)) => {
            if x.eq_ignore_ascii_case(y) {
                return Some(Ordering::Equal);
            }
            match (instant(x), instant(y)) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => Some(x.to_lowercase().cmp(&y.to_lowercase())),
            }
        }
        _ => None,
    }
}

fn compare(op: CmpOp, a: &Val<'_>, b: &Val<'_>) -> Val<'static> {
    let a_null = matches!(a, Val::Null);
    let b_null = matches!(b, Val::Null);
    if a_null || b_null {
        let both = a_null && b_null;
        return Val::Bool(match op {
            CmpOp::Eq => both,
            CmpOp::Ne => !both,
            CmpOp::Ge | CmpOp::Le => both,
            CmpOp::Gt | CmpOp::Lt => false,
        });
    }
    let ord = order(a, b);
    Val::Bool(match op {
        CmpOp::Eq => ord == Some(Ordering::Equal),
        CmpOp::Ne => ord != Some(Ordering::Equal),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
    })
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Slash,
    Colon,
    Ident(String),
    Str(String),
    Num(f64),
    DateTime(String),
}

/// Parses a `$filter` expression.
pub fn parse_filter(text: &str) -> Result<Expr, ApiError> {
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err(odata_error("The $filter query option is empty."));
    }
    let mut p = Parser {
        text,
        toks,
        pos: 0,
        depth: 0,
    };
    let expr = p.or()?;
    if p.pos < p.toks.len() {
        return Err(p.syntax_error());
    }
    Ok(expr)
}

fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>, ApiError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let syntax = |pos: usize| {
        odata_error(format!(
            "Syntax error at position {pos} in '{text}' of the $filter query option."
        ))
    };
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((pos, Tok::RParen));
                i += 1;
            }
            ',' => {
                out.push((pos, Tok::Comma));
                i += 1;
            }
            '/' => {
                out.push((pos, Tok::Slash));
                i += 1;
            }
            ':' => {
                out.push((pos, Tok::Colon));
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(odata_error(format!(
                                "Unterminated string literal at position {pos} in '{text}'."
                            )));
                        }
                        Some((_, '\'')) if matches!(chars.get(i + 1), Some((_, '\''))) => {
                            s.push('\'');
                            i += 2;
                        }
                        Some((_, '\'')) => {
                            i += 1;
                            break;
                        }
                        Some((_, ch)) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                // `datetime'...'` and `datetimeoffset'...'` (OData v3) are date-time literals.
                let typed = matches!(
                    out.last(),
                    Some((_, Tok::Ident(name)))
                        if name.eq_ignore_ascii_case("datetime")
                            || name.eq_ignore_ascii_case("datetimeoffset")
                );
                if typed {
                    out.pop();
                    out.push((pos, Tok::DateTime(s)));
                } else {
                    out.push((pos, Tok::Str(s)));
                }
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|(_, d)| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while let Some((_, d)) = chars.get(i) {
                    if d.is_ascii_alphanumeric() || matches!(d, '.' | ':' | '-' | '+') {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let word: String = chars[start..i].iter().map(|(_, ch)| *ch).collect();
                if let Ok(n) = word.parse::<f64>() {
                    out.push((pos, Tok::Num(n)));
                } else if let Some(n) = word
                    .strip_suffix(['L', 'l', 'M', 'm', 'd', 'D', 'f', 'F'])
                    .and_then(|w| w.parse::<f64>().ok())
                {
                    out.push((pos, Tok::Num(n)));
                } else if instant(&word).is_some() {
                    out.push((pos, Tok::DateTime(word)));
                } else {
                    return Err(syntax(pos));
                }
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while let Some((_, d)) = chars.get(i) {
                    if d.is_alphanumeric() || matches!(d, '_' | '.' | '$') {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let word: String = chars[start..i].iter().map(|(_, ch)| *ch).collect();
                out.push((pos, Tok::Ident(word)));
            }
            _ => return Err(syntax(pos)),
        }
    }
    Ok(out)
}

struct Parser<'t> {
    text: &'t str,
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Tok> {
        self.toks.get(self.pos + ahead).map(|(_, t)| t)
    }

    fn syntax_error(&self) -> ApiError {
        let at = self
            .toks
            .get(self.pos)
            .map_or(self.text.len(), |(pos, _)| *pos);
        odata_error(format!(
            "Syntax error at position {at} in '{}' of the $filter query option.",
            self.text
        ))
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), ApiError> {
        if self.peek() == Some(tok) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    fn enter(&mut self) -> Result<(), ApiError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(odata_error(
                "The $filter query option is nested too deeply.",
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ApiError> {
        // `not` is only a keyword when an operand follows (a property may be named `not`).
        let is_not = matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("not"))
            && !matches!(self.peek_at(1), None | Some(Tok::RParen | Tok::Slash))
            && !matches!(self.peek_at(1), Some(Tok::Ident(w)) if cmp_op(w).is_some());
        if is_not {
            self.pos += 1;
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ApiError> {
        let left = self.primary()?;
        let op = match self.peek() {
            Some(Tok::Ident(w)) => cmp_op(w),
            _ => None,
        };
        match op {
            Some(op) => {
                self.pos += 1;
                let right = self.primary()?;
                Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
            }
            None => Ok(left),
        }
    }

    fn primary(&mut self) -> Result<Expr, ApiError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.syntax_error());
        };
        match tok {
            Tok::LParen => {
                self.pos += 1;
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect(&Tok::RParen)?;
                Ok(inner)
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Expr::Lit(Lit::Str(s)))
            }
            Tok::Num(n) => {
                self.pos += 1;
                Ok(Expr::Lit(Lit::Num(n)))
            }
            Tok::DateTime(s) => {
                self.pos += 1;
                Ok(Expr::Lit(Lit::DateTime(s)))
            }
            Tok::Ident(word) => {
                self.pos += 1;
                if self.peek() == Some(&Tok::LParen) {
                    return self.call(&word);
                }
                match word.to_ascii_lowercase().as_str() {
                    "null" => return Ok(Expr::Lit(Lit::Null)),
                    "true" => return Ok(Expr::Lit(Lit::Bool(true))),
                    "false" => return Ok(Expr::Lit(Lit::Bool(false))),
                    _ => {}
                }
                if is_reserved(&word) {
                    self.pos -= 1;
                    return Err(self.syntax_error());
                }
                self.path(word)
            }
            _ => Err(self.syntax_error()),
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, ApiError> {
        let Some((func, arity)) = Func::from_name(name) else {
            return Err(odata_error(format!(
                "Unknown function '{name}' in the $filter query option."
            )));
        };
        self.expect(&Tok::LParen)?;
        self.enter()?;
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                args.push(self.or()?);
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.depth -= 1;
        self.expect(&Tok::RParen)?;
        if args.len() != arity {
            return Err(odata_error(format!(
                "The function '{name}' takes {arity} argument(s), {} given.",
                args.len()
            )));
        }
        // `substringof('part', s)` (OData v3) has its arguments the other way round.
        if name.eq_ignore_ascii_case("substringof") {
            args.reverse();
        }
        Ok(Expr::Call(func, args))
    }

    fn path(&mut self, first: String) -> Result<Expr, ApiError> {
        let mut segs = vec![first];
        while self.peek() == Some(&Tok::Slash) {
            self.pos += 1;
            let seg = match self.peek() {
                Some(Tok::Ident(w)) => w.clone(),
                _ => return Err(self.syntax_error()),
            };
            self.pos += 1;
            let lambda = (seg.eq_ignore_ascii_case("any") || seg.eq_ignore_ascii_case("all"))
                && self.peek() == Some(&Tok::LParen);
            if lambda {
                return self.lambda(segs, seg.eq_ignore_ascii_case("all"));
            }
            segs.push(seg);
        }
        Ok(Expr::Path(segs))
    }

    fn lambda(&mut self, path: Vec<String>, all: bool) -> Result<Expr, ApiError> {
        self.expect(&Tok::LParen)?;
        if self.peek() == Some(&Tok::RParen) {
            self.pos += 1;
            if all {
                return Err(self.syntax_error());
            }
            return Ok(Expr::Lambda {
                all,
                path,
                body: None,
            });
        }
        let var = match self.peek() {
            Some(Tok::Ident(w)) if !is_reserved(w) => w.clone(),
            _ => return Err(self.syntax_error()),
        };
        self.pos += 1;
        self.expect(&Tok::Colon)?;
        self.enter()?;
        let body = self.or()?;
        self.depth -= 1;
        self.expect(&Tok::RParen)?;
        Ok(Expr::Lambda {
            all,
            path,
            body: Some((var, Box::new(body))),
        })
    }
}

fn cmp_op(word: &str) -> Option<CmpOp> {
    match word.to_ascii_lowercase().as_str() {
        "eq" => Some(CmpOp::Eq),
        "ne" => Some(CmpOp::Ne),
        "gt" => Some(CmpOp::Gt),
        "ge" => Some(CmpOp::Ge),
        "lt" => Some(CmpOp::Lt),
        "le" => Some(CmpOp::Le),
        _ => None,
    }
}

fn is_reserved(word: &str) -> bool {
    cmp_op(word).is_some() || word.eq_ignore_ascii_case("and") || word.eq_ignore_ascii_case("or")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn p(text: &str) -> Expr {
        parse_filter(text).unwrap()
    }

    fn path(segs: &[&str]) -> Box<Expr> {
        Box::new(Expr::Path(segs.iter().map(|s| s.to_string()).collect()))
    }

    fn s(text: &str) -> Box<Expr> {
        Box::new(Expr::Lit(Lit::Str(text.into())))
    }

    fn machine() -> Value {
        json!({
            "id": "f1eb97a430ca4c315e219960cd146874419fbefc",
            "computerDnsName": "ws-finance-01.contoso.com",
            "lastSeen": "2026-11-21T07:40:10.5120000Z",
            "healthStatus": "Active",
            "riskScore": "High",
            "rbacGroupId": 0,
            "rbacGroupName": null,
            "osBuild": 19045,
            "isAadJoined": true,
            "machineTags": ["finance", "vip"],
            "ipAddresses": [{"ipAddress": "10.1.4.21", "operationalStatus": "Up"}],
        })
    }

    fn eval_on(filter: &str, item: &Value) -> bool {
        matches(&p(filter), item)
    }

    fn code(e: ApiError) -> (u16, &'static str, String) {
        (e.status.as_u16(), e.code, e.message)
    }

    #[test]
    fn parses_a_comparison() {
        assert_eq!(
            p("status eq 'Pending'"),
            Expr::Cmp(CmpOp::Eq, path(&["status"]), s("Pending"))
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            p("a eq 'x' or b eq 'y' and c eq 'z'"),
            Expr::Or(
                Box::new(Expr::Cmp(CmpOp::Eq, path(&["a"]), s("x"))),
                Box::new(Expr::And(
                    Box::new(Expr::Cmp(CmpOp::Eq, path(&["b"]), s("y"))),
                    Box::new(Expr::Cmp(CmpOp::Eq, path(&["c"]), s("z"))),
                )),
            )
        );
    }

    #[test]
    fn parentheses_group() {
        assert_eq!(
            p("(a eq 'x' or b eq 'y') and c eq 'z'"),
            Expr::And(
                Box::new(Expr::Or(
                    Box::new(Expr::Cmp(CmpOp::Eq, path(&["a"]), s("x"))),
                    Box::new(Expr::Cmp(CmpOp::Eq, path(&["b"]), s("y"))),
                )),
                Box::new(Expr::Cmp(CmpOp::Eq, path(&["c"]), s("z"))),
            )
        );
    }

    #[test]
    fn string_literals_unescape_doubled_quotes() {
        assert_eq!(
            p("name eq 'O''Brien'"),
            Expr::Cmp(CmpOp::Eq, path(&["name"]), s("O'Brien"))
        );
        assert_eq!(
            p("name eq ''"),
            Expr::Cmp(CmpOp::Eq, path(&["name"]), s(""))
        );
    }

    #[test]
    fn literals_of_every_kind() {
        assert_eq!(
            p("a eq null"),
            Expr::Cmp(CmpOp::Eq, path(&["a"]), Box::new(Expr::Lit(Lit::Null)))
        );
        assert_eq!(
            p("a eq TRUE"),
            Expr::Cmp(
                CmpOp::Eq,
                path(&["a"]),
                Box::new(Expr::Lit(Lit::Bool(true)))
            )
        );
        assert_eq!(
            p("a ge -1.5"),
            Expr::Cmp(CmpOp::Ge, path(&["a"]), Box::new(Expr::Lit(Lit::Num(-1.5))))
        );
        assert_eq!(
            p("a lt 2026-01-01T00:00:00Z"),
            Expr::Cmp(
                CmpOp::Lt,
                path(&["a"]),
                Box::new(Expr::Lit(Lit::DateTime("2026-01-01T00:00:00Z".into())))
            )
        );
        assert_eq!(
            p("a lt datetime'2026-01-01T00:00:00Z'"),
            Expr::Cmp(
                CmpOp::Lt,
                path(&["a"]),
                Box::new(Expr::Lit(Lit::DateTime("2026-01-01T00:00:00Z".into())))
            )
        );
    }

    #[test]
    fn functions_and_lambdas() {
        assert_eq!(
            p("startswith(computerDnsName,'ws-')"),
            Expr::Call(
                Func::StartsWith,
                vec![*path(&["computerDnsName"]), *s("ws-")]
            )
        );
        assert_eq!(
            p("machineTags/any(tag: tag eq 'vip')"),
            Expr::Lambda {
                all: false,
                path: vec!["machineTags".into()],
                body: Some((
                    "tag".into(),
                    Box::new(Expr::Cmp(CmpOp::Eq, path(&["tag"]), s("vip")))
                )),
            }
        );
        assert_eq!(
            p("machineTags/any()"),
            Expr::Lambda {
                all: false,
                path: vec!["machineTags".into()],
                body: None,
            }
        );
    }

    #[test]
    fn not_negates() {
        assert_eq!(
            p("not startswith(a,'x')"),
            Expr::Not(Box::new(Expr::Call(
                Func::StartsWith,
                vec![*path(&["a"]), *s("x")]
            )))
        );
        assert_eq!(
            p("not (a eq 'x')"),
            Expr::Not(Box::new(Expr::Cmp(CmpOp::Eq, path(&["a"]), s("x"))))
        );
    }

    #[test]
    fn syntax_errors_are_odata_errors() {
        for bad in [
            "",
            "   ",
            "status eq",
            "status eq 'x",
            "eq 'x'",
            "(status eq 'x'",
            "status eq 'x')",
            "status eq 'x' and",
            "status == 'x'",
            "status eq 'x' 'y'",
            "frobnicate(status)",
            "startswith(status)",
            "machineTags/any(tag tag eq 'x')",
            "machineTags/all()",
            "a/",
        ] {
            let e = parse_filter(bad).unwrap_err();
            let (status, code, msg) = code(e);
            assert_eq!((status, code), (400, "ODataError"), "{bad}: {msg}");
            assert!(!msg.is_empty());
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}a eq 'x'{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(parse_filter(&deep).unwrap_err().code, "ODataError");
        let nots = format!("{}a eq 'x'", "not ".repeat(10_000));
        assert_eq!(parse_filter(&nots).unwrap_err().code, "ODataError");
    }

    #[test]
    fn evaluates_strings_numbers_booleans_and_null() {
        let m = machine();
        assert!(eval_on("healthStatus eq 'Active'", &m));
        assert!(eval_on("healthStatus eq 'active'", &m));
        assert!(!eval_on("healthStatus ne 'Active'", &m));
        assert!(eval_on("osBuild gt 19000 and osBuild lt 20000", &m));
        assert!(eval_on("osBuild ge 19045 and osBuild le 19045", &m));
        assert!(!eval_on("osBuild gt 19045", &m));
        assert!(eval_on("rbacGroupId eq 0", &m));
        assert!(eval_on("isAadJoined eq true", &m));
        assert!(eval_on("isAadJoined", &m));
        assert!(eval_on("rbacGroupName eq null", &m));
        assert!(!eval_on("rbacGroupName ne null", &m));
        assert!(eval_on("computerDnsName ne null", &m));
        assert!(!eval_on("missing eq 'x'", &m));
        assert!(eval_on("missing eq null", &m));
        assert!(!eval_on("osBuild eq '19045'", &m));
    }

    #[test]
    fn evaluates_datetimes() {
        let m = machine();
        assert!(eval_on("lastSeen gt 2026-11-01T00:00:00Z", &m));
        assert!(eval_on("lastSeen gt 2026-11-21", &m));
        assert!(!eval_on("lastSeen lt 2026-11-21T07:40:10Z", &m));
        assert!(eval_on("lastSeen ge '2026-11-21T07:40:10.512Z'", &m));
        assert!(eval_on(
            "lastSeen le datetime'2026-11-21T07:40:10.512Z'",
            &m
        ));
        assert!(eval_on("lastSeen gt 2026-11-21T08:40:10+02:00", &m));
    }

    #[test]
    fn evaluates_logic_functions_and_lambdas() {
        let m = machine();
        assert!(eval_on("startswith(computerDnsName,'WS-')", &m));
        assert!(!eval_on("startswith(computerDnsName,'srv-')", &m));
        assert!(eval_on("endswith(computerDnsName,'.contoso.com')", &m));
        assert!(eval_on("contains(computerDnsName,'finance')", &m));
        assert!(eval_on("tolower(riskScore) eq 'high'", &m));
        assert!(eval_on("machineTags/any(tag: tag eq 'vip')", &m));
        assert!(!eval_on("machineTags/any(tag: tag eq 'hr')", &m));
        assert!(eval_on("machineTags/any(t: startswith(t,'fin'))", &m));
        assert!(eval_on("machineTags/any()", &m));
        assert!(!eval_on("machineTags/all(t: t eq 'vip')", &m));
        assert!(eval_on(
            "ipAddresses/any(ip: ip/ipAddress eq '10.1.4.21')",
            &m
        ));
        assert!(eval_on("not (riskScore eq 'Low')", &m));
        assert!(eval_on("riskScore eq 'Low' or riskScore eq 'High'", &m));
        assert!(!eval_on("riskScore eq 'Low' and riskScore eq 'High'", &m));
        assert!(eval_on(
            "(riskScore eq 'Low' or healthStatus eq 'Active') and osBuild eq 19045",
            &m
        ));
        assert!(!eval_on("missing/any(t: t eq 'x')", &m));
    }

    #[test]
    fn field_names_tolerate_case() {
        let m = machine();
        assert!(eval_on(
            "ComputerDnsName eq 'ws-finance-01.contoso.com'",
            &m
        ));
        assert!(eval_on("MACHINETAGS/any(tag: tag eq 'finance')", &m));
    }

    #[test]
    fn query_options_parse_and_validate() {
        let q = ListQuery::parse(Some("$top=5&$skip=10&$filter=status%20eq%20'Pending'")).unwrap();
        assert_eq!(q.top, Some(5));
        assert_eq!(q.skip, 10);
        assert_eq!(q.filter.unwrap().text, "status eq 'Pending'");
        let q = ListQuery::parse(Some("$filter=status+eq+'x'&other=1")).unwrap();
        assert_eq!(q.filter.unwrap().text, "status eq 'x'");
        assert!(ListQuery::parse(None).unwrap().top.is_none());
        assert_eq!(
            ListQuery::parse(Some("$top=10000")).unwrap().top,
            Some(10_000)
        );
        for bad in [
            "$top=0",
            "$top=10001",
            "$top=abc",
            "$top=-1",
            "$skip=-3",
            "$skip=x",
        ] {
            let e = ListQuery::parse(Some(bad)).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "ODataError"), "{bad}");
        }
    }

    fn spec(page_size: usize) -> ListSpec<'static> {
        ListSpec {
            context_fragment: "Machines",
            entity: "Machine",
            filterable: &["id", "machineTags", "healthStatus"],
            page_size,
        }
    }

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("sim.test:8080"));
        h
    }

    fn items(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("m{i}"), "healthStatus": if i % 2 == 0 {"Active"} else {"Inactive"}, "osVersion": "10"}))
            .collect()
    }

    #[test]
    fn filter_on_non_filterable_or_unknown_field_is_refused() {
        let q = ListQuery::parse(Some("$filter=osVersion eq '10'")).unwrap();
        let e = list_response(items(2), &q, &headers(), "/api/machines", &spec(10)).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "ODataError"));
        assert!(e.message.contains("osVersion"), "{}", e.message);
        let q = ListQuery::parse(Some("$filter=nope eq '10'")).unwrap();
        let e = list_response(items(2), &q, &headers(), "/api/machines", &spec(10)).unwrap_err();
        assert!(e.message.contains("Could not find a property named 'nope'"));
        let q = ListQuery::parse(Some("$filter=machineTags/any(t: t eq 'x')")).unwrap();
        assert!(list_response(items(2), &q, &headers(), "/api/machines", &spec(10)).is_ok());
    }

    #[test]
    fn pages_with_next_links() {
        let q = ListQuery::parse(None).unwrap();
        let Json(body) =
            list_response(items(7), &q, &headers(), "/api/machines", &spec(3)).unwrap();
        assert_eq!(body["value"].as_array().unwrap().len(), 3);
        assert_eq!(
            body["@odata.context"],
            "http://sim.test:8080/api/$metadata#Machines"
        );
        assert_eq!(
            body["@odata.nextLink"],
            "http://sim.test:8080/api/machines?$skip=3"
        );
        let q = ListQuery::parse(Some("$skip=6")).unwrap();
        let Json(body) =
            list_response(items(7), &q, &headers(), "/api/machines", &spec(3)).unwrap();
        assert_eq!(body["value"][0]["id"], "m6");
        assert!(body.get("@odata.nextLink").is_none());

        let q = ListQuery::parse(Some("$top=2&$filter=healthStatus eq 'Active'")).unwrap();
        let Json(body) =
            list_response(items(7), &q, &headers(), "/api/machines", &spec(100)).unwrap();
        let ids: Vec<&str> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["m0", "m2"]);
        assert_eq!(
            body["@odata.nextLink"],
            "http://sim.test:8080/api/machines?$skip=2&$top=2&$filter=healthStatus%20eq%20%27Active%27"
        );
        // The link round-trips through the parser.
        let link = body["@odata.nextLink"].as_str().unwrap();
        let q = ListQuery::parse(link.split_once('?').map(|(_, q)| q)).unwrap();
        assert_eq!(q.skip, 2);
        assert_eq!(q.filter.unwrap().text, "healthStatus eq 'Active'");
    }

    #[test]
    fn skip_past_the_end_answers_an_empty_page() {
        let q = ListQuery::parse(Some("$skip=50")).unwrap();
        let Json(body) =
            list_response(items(3), &q, &headers(), "/api/machines", &spec(2)).unwrap();
        assert_eq!(body["value"], json!([]));
        assert!(body.get("@odata.nextLink").is_none());
    }

    #[tokio::test]
    async fn count_applies_the_filter_but_not_paging() {
        let q = ListQuery::parse(Some("$filter=healthStatus eq 'Inactive'&$top=1")).unwrap();
        let resp = count_response(items(7), &q, &spec(2)).unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"3");
    }
}
