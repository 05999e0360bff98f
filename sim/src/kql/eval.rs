//! The evaluator: a parsed [`Query`] over [`Tables`]. Names are resolved per operator against
//! the columns flowing into it (so an unknown column is an error even over no rows), then the
//! operator runs over the rows.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use super::ast::{Agg, AggFn, BinOp, Expr, Named, Op, Query, SortKey, Source, Tabular};
use super::{ColType, Column, KqlError, ResultSet, Row, Tables, Value};

/// An expression with names bound to column indexes or values.
#[derive(Debug, Clone)]
enum B {
    Lit(Value),
    Col(usize),
    Neg(Box<B>),
    Bin(BinOp, Box<B>, Box<B>),
    In {
        expr: Box<B>,
        list: Vec<B>,
        negated: bool,
        ci: bool,
    },
    Between {
        expr: Box<B>,
        lo: Box<B>,
        hi: Box<B>,
        negated: bool,
    },
    Call(String, Vec<B>),
}

struct Ctx<'a> {
    tables: &'a Tables,
    lets: HashMap<String, Value>,
    now: i64,
    cutoff: Option<i64>,
}

struct Rel {
    columns: Vec<Column>,
    rows: Vec<Row>,
}

/// Evaluates `query` at `now` (ticks); rows with a `Timestamp` before `cutoff` are invisible.
pub fn evaluate(
    tables: &Tables,
    query: &Query,
    now: i64,
    cutoff: Option<i64>,
) -> Result<ResultSet, KqlError> {
    let mut ctx = Ctx {
        tables,
        lets: HashMap::new(),
        now,
        cutoff,
    };
    for (name, expr) in &query.lets {
        let b = bind(&ctx, expr, &[], "let")?;
        let v = eval(&ctx, &b, &[])?;
        ctx.lets.insert(name.clone(), v);
    }
    let rel = tabular(&ctx, &query.body)?;
    Ok(ResultSet {
        columns: rel.columns,
        rows: rel.rows,
    })
}

fn tabular(ctx: &Ctx<'_>, t: &Tabular) -> Result<Rel, KqlError> {
    let first_op = t.ops.first().map_or("table", Op::name);
    let mut rel = source(ctx, &t.source, first_op)?;
    for op in &t.ops {
        rel = operator(ctx, rel, op)?;
    }
    Ok(rel)
}

fn source(ctx: &Ctx<'_>, s: &Source, op: &str) -> Result<Rel, KqlError> {
    match s {
        Source::Table(name) => {
            let Some(table) = ctx.tables.get(name) else {
                return Err(KqlError::UnresolvedTable {
                    operator: op.to_string(),
                    name: name.clone(),
                });
            };
            let ts = table
                .column("Timestamp")
                .filter(|i| table.columns[*i].ty == ColType::DateTime);
            let rows = match (ctx.cutoff, ts) {
                (Some(cut), Some(i)) => table
                    .rows
                    .iter()
                    .filter(|r| !matches!(r[i], Value::DateTime(t) if t < cut))
                    .cloned()
                    .collect(),
                _ => table.rows.clone(),
            };
            Ok(Rel {
                columns: table.columns.clone(),
                rows,
            })
        }
        Source::Union(parts) => {
            let mut rels = Vec::new();
            for p in parts {
                let rel = match &p.source {
                    Source::Table(name) if p.ops.is_empty() => {
                        source(ctx, &Source::Table(name.clone()), "union")?
                    }
                    _ => tabular(ctx, p)?,
                };
                rels.push(rel);
            }
            if rels.len() == 1 {
                return Ok(rels.remove(0));
            }
            let mut columns: Vec<Column> = Vec::new();
            for r in &rels {
                for c in &r.columns {
                    if !columns.iter().any(|x| x.name == c.name) {
                        columns.push(c.clone());
                    }
                }
            }
            let mut rows = Vec::new();
            for r in rels {
                let map: Vec<Option<usize>> = columns
                    .iter()
                    .map(|c| r.columns.iter().position(|x| x.name == c.name))
                    .collect();
                for row in r.rows {
                    let new: Vec<Value> = map
                        .iter()
                        .map(|i| i.map_or(Value::Null, |i| row[i].clone()))
                        .collect();
                    rows.push(new.into());
                }
            }
            Ok(Rel { columns, rows })
        }
    }
}

fn unique_name(name: String, columns: &[Column]) -> String {
    if !columns.iter().any(|c| c.name == name) {
        return name;
    }
    (1..)
        .map(|i| format!("{name}{i}"))
        .find(|n| !columns.iter().any(|c| c.name == *n))
        .unwrap_or(name)
}

fn default_name(e: &Expr, n: usize) -> String {
    match e {
        Expr::Name(name) => name.clone(),
        Expr::Call(f, args) if f == "bin" => match args.first() {
            Some(Expr::Name(name)) => name.clone(),
            _ => format!("Column{n}"),
        },
        _ => format!("Column{n}"),
    }
}

fn operator(ctx: &Ctx<'_>, rel: Rel, op: &Op) -> Result<Rel, KqlError> {
    let name = op.name();
    match op {
        Op::Where(e) => {
            let b = bind(ctx, e, &rel.columns, name)?;
            let mut rows = Vec::new();
            for r in rel.rows {
                if matches!(eval(ctx, &b, &r)?, Value::Bool(true)) {
                    rows.push(r);
                }
            }
            Ok(Rel {
                columns: rel.columns,
                rows,
            })
        }
        Op::Project(items) | Op::Extend(items) => {
            let extend = matches!(op, Op::Extend(_));
            let mut columns = if extend {
                rel.columns.clone()
            } else {
                Vec::new()
            };
            // (target index, bound expression)
            let mut plan = Vec::new();
            for (n, Named { name: given, expr }) in items.iter().enumerate() {
                let b = bind(ctx, expr, &rel.columns, name)?;
                let ty = type_of(&b, &rel.columns);
                let col_name = given.clone().unwrap_or_else(|| default_name(expr, n + 1));
                match columns.iter().position(|c| c.name == col_name) {
                    Some(i) if extend || given.is_none() => {
                        columns[i].ty = ty;
                        plan.push((i, b));
                    }
                    Some(_) => {
                        return Err(KqlError::Semantic(format!(
                            "'{name}' operator: column '{col_name}' is named more than once"
                        )));
                    }
                    None => {
                        columns.push(Column { name: col_name, ty });
                        plan.push((columns.len() - 1, b));
                    }
                }
            }
            let mut rows = Vec::with_capacity(rel.rows.len());
            for r in &rel.rows {
                let mut new: Vec<Value> = if extend {
                    let mut v = r.to_vec();
                    v.resize(columns.len(), Value::Null);
                    v
                } else {
                    vec![Value::Null; columns.len()]
                };
                for (i, b) in &plan {
                    new[*i] = eval(ctx, b, r)?;
                }
                rows.push(new.into());
            }
            Ok(Rel { columns, rows })
        }
        Op::ProjectAway(names) => {
            let mut drop = HashSet::new();
            for n in names {
                match rel.columns.iter().position(|c| c.name == *n) {
                    Some(i) => {
                        drop.insert(i);
                    }
                    None => {
                        return Err(KqlError::UnresolvedColumn {
                            operator: name.into(),
                            name: n.clone(),
                        });
                    }
                }
            }
            let keep: Vec<usize> = (0..rel.columns.len())
                .filter(|i| !drop.contains(i))
                .collect();
            Ok(select(rel, &keep))
        }
        Op::Distinct(names) => {
            let keep: Vec<usize> = if names.is_empty() {
                (0..rel.columns.len()).collect()
            } else {
                names
                    .iter()
                    .map(|n| {
                        rel.columns
                            .iter()
                            .position(|c| c.name == *n)
                            .ok_or_else(|| KqlError::UnresolvedColumn {
                                operator: name.into(),
                                name: n.clone(),
                            })
                    })
                    .collect::<Result<_, _>>()?
            };
            let rel = select(rel, &keep);
            let mut seen = HashSet::new();
            let rows = rel
                .rows
                .into_iter()
                .filter(|r| seen.insert(key_of(r)))
                .collect();
            Ok(Rel {
                columns: rel.columns,
                rows,
            })
        }
        Op::Count => Ok(Rel {
            columns: vec![Column {
                name: "Count".into(),
                ty: ColType::Int64,
            }],
            rows: vec![vec![Value::Int(rel.rows.len() as i64)].into()],
        }),
        Op::Take(n) => {
            let n = count_arg(ctx, n, name)?;
            let mut rows = rel.rows;
            rows.truncate(n);
            Ok(Rel {
                columns: rel.columns,
                rows,
            })
        }
        Op::Sort(keys) => sort(ctx, rel, keys, name),
        Op::Top(n, key) => {
            let n = count_arg(ctx, n, name)?;
            let mut rel = sort(ctx, rel, std::slice::from_ref(key), name)?;
            rel.rows.truncate(n);
            Ok(rel)
        }
        Op::Summarize { aggs, by } => summarize(ctx, rel, aggs, by),
    }
}

fn select(rel: Rel, keep: &[usize]) -> Rel {
    Rel {
        columns: keep.iter().map(|i| rel.columns[*i].clone()).collect(),
        rows: rel
            .rows
            .iter()
            .map(|r| {
                keep.iter()
                    .map(|i| r[*i].clone())
                    .collect::<Vec<_>>()
                    .into()
            })
            .collect(),
    }
}

fn count_arg(ctx: &Ctx<'_>, e: &Expr, op: &str) -> Result<usize, KqlError> {
    let b = bind(ctx, e, &[], op)?;
    match eval(ctx, &b, &[])? {
        Value::Int(n) if n >= 0 => Ok(n as usize),
        _ => Err(KqlError::Semantic(format!(
            "'{op}' operator: the row count must be a non-negative integer"
        ))),
    }
}

fn sort(ctx: &Ctx<'_>, rel: Rel, keys: &[SortKey], op: &str) -> Result<Rel, KqlError> {
    let bound: Vec<B> = keys
        .iter()
        .map(|k| bind(ctx, &k.expr, &rel.columns, op))
        .collect::<Result<_, _>>()?;
    let mut keyed = Vec::with_capacity(rel.rows.len());
    for r in rel.rows {
        let vals: Vec<Value> = bound
            .iter()
            .map(|b| eval(ctx, b, &r))
            .collect::<Result<_, _>>()?;
        keyed.push((vals, r));
    }
    keyed.sort_by(|(a, _), (b, _)| {
        for (i, k) in keys.iter().enumerate() {
            let o = match (&a[i], &b[i]) {
                (Value::Null, Value::Null) => Ordering::Equal,
                (Value::Null, _) => {
                    if k.nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (_, Value::Null) => {
                    if k.nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (x, y) => {
                    let o = total_cmp(x, y);
                    if k.desc { o.reverse() } else { o }
                }
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    Ok(Rel {
        columns: rel.columns,
        rows: keyed.into_iter().map(|(_, r)| r).collect(),
    })
}

enum State {
    Count(i64),
    DCount(HashSet<String>),
    Min(Option<Value>),
    Max(Option<Value>),
    Set(Vec<serde_json::Value>, HashSet<String>),
    Sum(i64, f64, bool),
    Avg(f64, i64),
}

fn summarize(ctx: &Ctx<'_>, rel: Rel, aggs: &[Agg], by: &[Named]) -> Result<Rel, KqlError> {
    let op = "summarize";
    let mut columns: Vec<Column> = Vec::new();
    let mut by_bound = Vec::new();
    for (n, item) in by.iter().enumerate() {
        let b = bind(ctx, &item.expr, &rel.columns, op)?;
        let ty = type_of(&b, &rel.columns);
        let name = item
            .name
            .clone()
            .unwrap_or_else(|| default_name(&item.expr, n + 1));
        columns.push(Column {
            name: unique_name(name, &columns),
            ty,
        });
        by_bound.push(b);
    }
    let mut agg_bound = Vec::new();
    for a in aggs {
        let arg = match &a.arg {
            Some(e) => Some(bind(ctx, e, &rel.columns, op)?),
            None => None,
        };
        let arg_ty = arg.as_ref().map(|b| type_of(b, &rel.columns));
        let arg_name = match &a.arg {
            Some(Expr::Name(n)) => n.clone(),
            Some(_) => "expr".to_string(),
            None => String::new(),
        };
        let (default, ty) = match a.func {
            AggFn::Count => ("count_".to_string(), ColType::Int64),
            AggFn::DCount => (format!("dcount_{arg_name}"), ColType::Int64),
            AggFn::Min => (format!("min_{arg_name}"), arg_ty.unwrap_or(ColType::String)),
            AggFn::Max => (format!("max_{arg_name}"), arg_ty.unwrap_or(ColType::String)),
            AggFn::MakeSet => (format!("set_{arg_name}"), ColType::Dynamic),
            AggFn::Sum => (
                format!("sum_{arg_name}"),
                match arg_ty {
                    Some(ColType::Int64 | ColType::Int32) => ColType::Int64,
                    Some(ColType::TimeSpan) => ColType::TimeSpan,
                    _ => ColType::Double,
                },
            ),
            AggFn::Avg => (format!("avg_{arg_name}"), ColType::Double),
        };
        let name = a.name.clone().unwrap_or(default);
        columns.push(Column {
            name: unique_name(name, &columns),
            ty,
        });
        agg_bound.push((a.func.clone(), arg));
    }
    let fresh = || -> Vec<State> {
        agg_bound
            .iter()
            .map(|(f, _)| match f {
                AggFn::Count => State::Count(0),
                AggFn::DCount => State::DCount(HashSet::new()),
                AggFn::Min => State::Min(None),
                AggFn::Max => State::Max(None),
                AggFn::MakeSet => State::Set(Vec::new(), HashSet::new()),
                AggFn::Sum => State::Sum(0, 0.0, false),
                AggFn::Avg => State::Avg(0.0, 0),
            })
            .collect()
    };
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<(Vec<Value>, Vec<State>)> = Vec::new();
    if by.is_empty() {
        groups.push((Vec::new(), fresh()));
    }
    for r in &rel.rows {
        let keys: Vec<Value> = by_bound
            .iter()
            .map(|b| eval(ctx, b, r))
            .collect::<Result<_, _>>()?;
        let gi = if by.is_empty() {
            0
        } else {
            let k = key_of(&keys);
            match index.get(&k) {
                Some(i) => *i,
                None => {
                    groups.push((keys, fresh()));
                    index.insert(k, groups.len() - 1);
                    groups.len() - 1
                }
            }
        };
        let states = &mut groups[gi].1;
        for ((_, arg), st) in agg_bound.iter().zip(states.iter_mut()) {
            let v = match arg {
                Some(b) => eval(ctx, b, r)?,
                None => Value::Null,
            };
            match st {
                State::Count(n) => *n += 1,
                State::DCount(set) => {
                    if v != Value::Null {
                        set.insert(key_of(std::slice::from_ref(&v)));
                    }
                }
                State::Min(cur) => {
                    if v != Value::Null
                        && cur
                            .as_ref()
                            .is_none_or(|c| total_cmp(&v, c) == Ordering::Less)
                    {
                        *cur = Some(v);
                    }
                }
                State::Max(cur) => {
                    if v != Value::Null
                        && cur
                            .as_ref()
                            .is_none_or(|c| total_cmp(&v, c) == Ordering::Greater)
                    {
                        *cur = Some(v);
                    }
                }
                State::Set(items, seen) => {
                    if v != Value::Null && seen.insert(key_of(std::slice::from_ref(&v))) {
                        items.push(v.to_json());
                    }
                }
                State::Sum(i, f, real) => match v {
                    Value::Int(x) | Value::TimeSpan(x) => *i = i.saturating_add(x),
                    Value::Real(x) => {
                        *f += x;
                        *real = true;
                    }
                    _ => {}
                },
                State::Avg(s, n) => match v {
                    Value::Int(x) => {
                        *s += x as f64;
                        *n += 1;
                    }
                    Value::Real(x) => {
                        *s += x;
                        *n += 1;
                    }
                    _ => {}
                },
            }
        }
    }
    let nby = by.len();
    let rows = groups
        .into_iter()
        .map(|(mut keys, states)| {
            for (j, st) in states.into_iter().enumerate() {
                keys.push(match st {
                    State::Count(n) => Value::Int(n),
                    State::DCount(s) => Value::Int(s.len() as i64),
                    State::Min(v) | State::Max(v) => v.unwrap_or(Value::Null),
                    State::Set(items, _) => Value::Dynamic(serde_json::Value::Array(items)),
                    State::Sum(i, f, real) => match columns[nby + j].ty {
                        ColType::Int64 => Value::Int(i),
                        ColType::TimeSpan => Value::TimeSpan(i),
                        _ => Value::Real(if real { f + i as f64 } else { i as f64 }),
                    },
                    State::Avg(s, n) => {
                        if n == 0 {
                            Value::Null
                        } else {
                            Value::Real(s / n as f64)
                        }
                    }
                });
            }
            keys.into()
        })
        .collect();
    Ok(Rel { columns, rows })
}

/// A text key of values, for grouping and distinct.
fn key_of(values: &[Value]) -> String {
    let mut k = String::new();
    for v in values {
        let (tag, text) = match v {
            Value::Null => ('n', String::new()),
            Value::Bool(b) => ('b', b.to_string()),
            Value::Int(i) => ('i', i.to_string()),
            Value::Real(r) => ('r', r.to_string()),
            Value::Str(s) => ('s', s.clone()),
            Value::DateTime(t) => ('d', t.to_string()),
            Value::TimeSpan(t) => ('t', t.to_string()),
            Value::Dynamic(j) => ('j', j.to_string()),
        };
        k.push(tag);
        k.push_str(&text.len().to_string());
        k.push(':');
        k.push_str(&text);
    }
    k
}

fn bind(ctx: &Ctx<'_>, e: &Expr, cols: &[Column], op: &str) -> Result<B, KqlError> {
    let rec = |x: &Expr| bind(ctx, x, cols, op).map(Box::new);
    Ok(match e {
        Expr::Lit(v) => B::Lit(v.clone()),
        Expr::Name(n) => match cols.iter().position(|c| c.name == *n) {
            Some(i) => B::Col(i),
            None => match ctx.lets.get(n) {
                Some(v) => B::Lit(v.clone()),
                None => {
                    return Err(KqlError::UnresolvedColumn {
                        operator: op.to_string(),
                        name: n.clone(),
                    });
                }
            },
        },
        Expr::Neg(x) => B::Neg(rec(x)?),
        Expr::Bin(o, a, b) => B::Bin(*o, rec(a)?, rec(b)?),
        Expr::In {
            expr,
            list,
            negated,
            ci,
        } => B::In {
            expr: rec(expr)?,
            list: list
                .iter()
                .map(|x| bind(ctx, x, cols, op))
                .collect::<Result<_, _>>()?,
            negated: *negated,
            ci: *ci,
        },
        Expr::Between {
            expr,
            lo,
            hi,
            negated,
        } => B::Between {
            expr: rec(expr)?,
            lo: rec(lo)?,
            hi: rec(hi)?,
            negated: *negated,
        },
        Expr::Call(f, args) => B::Call(
            f.clone(),
            args.iter()
                .map(|x| bind(ctx, x, cols, op))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn type_of_value(v: &Value) -> ColType {
    match v {
        Value::Null | Value::Str(_) => ColType::String,
        Value::Bool(_) => ColType::Boolean,
        Value::Int(_) => ColType::Int64,
        Value::Real(_) => ColType::Double,
        Value::DateTime(_) => ColType::DateTime,
        Value::TimeSpan(_) => ColType::TimeSpan,
        Value::Dynamic(_) => ColType::Dynamic,
    }
}

fn type_of(b: &B, cols: &[Column]) -> ColType {
    use ColType as T;
    match b {
        B::Lit(v) => type_of_value(v),
        B::Col(i) => cols[*i].ty,
        B::Neg(x) => type_of(x, cols),
        B::In { .. } | B::Between { .. } => T::Boolean,
        B::Bin(op, a, c) => match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                match (type_of(a, cols), type_of(c, cols)) {
                    (T::DateTime, T::DateTime) => T::TimeSpan,
                    (T::DateTime, _) | (_, T::DateTime) => T::DateTime,
                    (T::TimeSpan, _) | (_, T::TimeSpan) => T::TimeSpan,
                    (T::Double, _) | (_, T::Double) => T::Double,
                    _ => T::Int64,
                }
            }
            _ => T::Boolean,
        },
        B::Call(f, args) => match f.as_str() {
            "ago" | "now" => T::DateTime,
            "strlen" => T::Int64,
            "isempty" | "isnotempty" | "isnull" | "isnotnull" | "not" => T::Boolean,
            "iff" | "iif" => args.get(1).map_or(T::String, |a| type_of(a, cols)),
            "bin" => args.first().map_or(T::String, |a| type_of(a, cols)),
            _ => T::String,
        },
    }
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// Ordering of two non-null values of comparable types.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Real(y)) => (*x as f64).partial_cmp(y),
        (Value::Real(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Real(x), Value::Real(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(y)),
        (Value::TimeSpan(x), Value::TimeSpan(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Dynamic(x), Value::Dynamic(y)) if x == y => Some(Ordering::Equal),
        _ => None,
    }
}

/// A total order for sorting: comparable values by value, otherwise by text.
fn total_cmp(a: &Value, b: &Value) -> Ordering {
    compare(a, b).unwrap_or_else(|| a.to_text().cmp(&b.to_text()))
}

/// `has`: `needle` appears in `hay` as a whole term (case-insensitive; the characters
/// around it are not letters or digits, where the needle starts or ends with one).
pub fn has_term(hay: &str, needle: &str) -> bool {
    let hay = hay.to_lowercase();
    let needle = needle.to_lowercase();
    if needle.is_empty() {
        return true;
    }
    let mut from = 0;
    while let Some(pos) = hay[from..].find(&needle) {
        let start = from + pos;
        let end = start + needle.len();
        // Boundaries matter only where the needle itself starts or ends with a term character.
        let before_ok = !needle.starts_with(char::is_alphanumeric)
            || hay[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric());
        let after_ok = hay[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

fn type_error(what: &str) -> KqlError {
    KqlError::Semantic(format!("{what}: argument has the wrong type"))
}

fn eval(ctx: &Ctx<'_>, b: &B, row: &[Value]) -> Result<Value, KqlError> {
    Ok(match b {
        B::Lit(v) => v.clone(),
        B::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
        B::Neg(x) => match eval(ctx, x, row)? {
            Value::Int(i) => Value::Int(-i),
            Value::Real(r) => Value::Real(-r),
            Value::TimeSpan(t) => Value::TimeSpan(-t),
            Value::Null => Value::Null,
            _ => return Err(type_error("unary '-'")),
        },
        B::Bin(op, l, r) => {
            let a = eval(ctx, l, row)?;
            match op {
                BinOp::And => {
                    if truth(&a) == Some(false) {
                        return Ok(Value::Bool(false));
                    }
                    let c = eval(ctx, r, row)?;
                    return Ok(match (truth(&a), truth(&c)) {
                        (_, Some(false)) => Value::Bool(false),
                        (Some(true), Some(true)) => Value::Bool(true),
                        _ => Value::Null,
                    });
                }
                BinOp::Or => {
                    if truth(&a) == Some(true) {
                        return Ok(Value::Bool(true));
                    }
                    let c = eval(ctx, r, row)?;
                    return Ok(match (truth(&a), truth(&c)) {
                        (_, Some(true)) => Value::Bool(true),
                        (Some(false), Some(false)) => Value::Bool(false),
                        _ => Value::Null,
                    });
                }
                _ => {}
            }
            let c = eval(ctx, r, row)?;
            binary(*op, a, c)?
        }
        B::In {
            expr,
            list,
            negated,
            ci,
        } => {
            let v = eval(ctx, expr, row)?;
            let mut found = false;
            for item in list {
                let cands = match eval(ctx, item, row)? {
                    Value::Dynamic(serde_json::Value::Array(items)) => {
                        items.iter().map(from_json).collect()
                    }
                    other => vec![other],
                };
                for c in cands {
                    let eq = if *ci {
                        v != Value::Null
                            && c != Value::Null
                            && v.to_text().to_lowercase() == c.to_text().to_lowercase()
                    } else {
                        compare(&v, &c) == Some(Ordering::Equal)
                    };
                    if eq {
                        found = true;
                        break;
                    }
                }
                if found {
                    break;
                }
            }
            Value::Bool(found != *negated)
        }
        B::Between {
            expr,
            lo,
            hi,
            negated,
        } => {
            let v = eval(ctx, expr, row)?;
            let lo = eval(ctx, lo, row)?;
            let hi = eval(ctx, hi, row)?;
            match (compare(&v, &lo), compare(&v, &hi)) {
                (Some(a), Some(b)) => {
                    Value::Bool((a != Ordering::Less && b != Ordering::Greater) != *negated)
                }
                _ => Value::Null,
            }
        }
        B::Call(f, args) => {
            let mut vals = Vec::with_capacity(args.len());
            if f == "iff" || f == "iif" {
                let c = eval(ctx, &args[0], row)?;
                let pick = if truth(&c) == Some(true) { 1 } else { 2 };
                return eval(ctx, &args[pick], row);
            }
            for a in args {
                vals.push(eval(ctx, a, row)?);
            }
            call(ctx, f, vals)?
        }
    })
}

fn from_json(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_f64().map(Value::Real))
            .unwrap_or(Value::Null),
        serde_json::Value::String(s) => Value::Str(s.clone()),
        other => Value::Dynamic(other.clone()),
    }
}

fn binary(op: BinOp, a: Value, c: Value) -> Result<Value, KqlError> {
    use Value as V;
    let text_op = |f: &dyn Fn(&str, &str) -> bool| -> Value {
        V::Bool(f(&a.to_text().to_lowercase(), &c.to_text().to_lowercase()))
    };
    Ok(match op {
        BinOp::Eq => match compare(&a, &c) {
            Some(o) => V::Bool(o == Ordering::Equal),
            None if a == V::Null || c == V::Null => V::Null,
            None => V::Bool(false),
        },
        BinOp::Ne => match compare(&a, &c) {
            Some(o) => V::Bool(o != Ordering::Equal),
            None if a == V::Null || c == V::Null => V::Null,
            None => V::Bool(true),
        },
        BinOp::EqCi => text_op(&|x, y| x == y),
        BinOp::NeCi => text_op(&|x, y| x != y),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => match compare(&a, &c) {
            Some(o) => V::Bool(match op {
                BinOp::Lt => o == Ordering::Less,
                BinOp::Le => o != Ordering::Greater,
                BinOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }),
            None => V::Null,
        },
        BinOp::Has => V::Bool(has_term(&a.to_text(), &c.to_text())),
        BinOp::NotHas => V::Bool(!has_term(&a.to_text(), &c.to_text())),
        BinOp::Contains => text_op(&|x, y| x.contains(y)),
        BinOp::NotContains => text_op(&|x, y| !x.contains(y)),
        BinOp::StartsWith => text_op(&|x, y| x.starts_with(y)),
        BinOp::NotStartsWith => text_op(&|x, y| !x.starts_with(y)),
        BinOp::EndsWith => text_op(&|x, y| x.ends_with(y)),
        BinOp::NotEndsWith => text_op(&|x, y| !x.ends_with(y)),
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => arithmetic(op, a, c)?,
        BinOp::And | BinOp::Or => V::Null,
    })
}

fn arithmetic(op: BinOp, a: Value, c: Value) -> Result<Value, KqlError> {
    use Value as V;
    let sym = match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        _ => "%",
    };
    let bad = || KqlError::Semantic(format!("Operator '{sym}' cannot be applied to these types"));
    let int = |x: i64, y: i64| -> Option<i64> {
        match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div => x.checked_div(y),
            _ => x.checked_rem(y),
        }
    };
    let real = |x: f64, y: f64| -> f64 {
        match op {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::Mul => x * y,
            BinOp::Div => x / y,
            _ => x % y,
        }
    };
    Ok(match (a, c) {
        (V::Null, _) | (_, V::Null) => V::Null,
        (V::Int(x), V::Int(y)) => int(x, y).map_or(V::Null, V::Int),
        (V::Int(x), V::Real(y)) => V::Real(real(x as f64, y)),
        (V::Real(x), V::Int(y)) => V::Real(real(x, y as f64)),
        (V::Real(x), V::Real(y)) => V::Real(real(x, y)),
        (V::DateTime(x), V::TimeSpan(y)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            int(x, y).map_or(V::Null, V::DateTime)
        }
        (V::TimeSpan(x), V::DateTime(y)) if op == BinOp::Add => {
            x.checked_add(y).map_or(V::Null, V::DateTime)
        }
        (V::DateTime(x), V::DateTime(y)) if op == BinOp::Sub => {
            x.checked_sub(y).map_or(V::Null, V::TimeSpan)
        }
        (V::TimeSpan(x), V::TimeSpan(y)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            int(x, y).map_or(V::Null, V::TimeSpan)
        }
        (V::TimeSpan(x), V::Int(y)) if matches!(op, BinOp::Mul | BinOp::Div) => {
            int(x, y).map_or(V::Null, V::TimeSpan)
        }
        _ => return Err(bad()),
    })
}

fn call(ctx: &Ctx<'_>, f: &str, mut v: Vec<Value>) -> Result<Value, KqlError> {
    use Value as V;
    let first = if v.is_empty() { V::Null } else { v.remove(0) };
    Ok(match f {
        "ago" => match first {
            V::TimeSpan(t) => V::DateTime(ctx.now - t),
            _ => return Err(type_error("ago()")),
        },
        "now" => match first {
            V::Null => V::DateTime(ctx.now),
            V::TimeSpan(t) => V::DateTime(ctx.now + t),
            _ => return Err(type_error("now()")),
        },
        "tolower" => V::Str(first.to_text().to_lowercase()),
        "toupper" => V::Str(first.to_text().to_uppercase()),
        "strlen" => V::Int(first.to_text().chars().count() as i64),
        "tostring" => V::Str(first.to_text()),
        "isempty" => {
            V::Bool(matches!(first, V::Null) || matches!(&first, V::Str(s) if s.is_empty()))
        }
        "isnotempty" => {
            V::Bool(!(matches!(first, V::Null) || matches!(&first, V::Str(s) if s.is_empty())))
        }
        "isnull" => V::Bool(first == V::Null),
        "isnotnull" => V::Bool(first != V::Null),
        "not" => match truth(&first) {
            Some(b) => V::Bool(!b),
            None => V::Null,
        },
        "strcat" => {
            let mut s = first.to_text();
            for x in &v {
                s.push_str(&x.to_text());
            }
            V::Str(s)
        }
        "bin" => {
            let size = v.first().cloned().unwrap_or(V::Null);
            match (first, size) {
                (V::DateTime(t), V::TimeSpan(s)) if s > 0 => V::DateTime(t.div_euclid(s) * s),
                (V::TimeSpan(t), V::TimeSpan(s)) if s > 0 => V::TimeSpan(t.div_euclid(s) * s),
                (V::Int(x), V::Int(s)) if s > 0 => V::Int(x.div_euclid(s) * s),
                (V::Real(x), V::Real(s)) if s > 0.0 => V::Real((x / s).floor() * s),
                (V::Real(x), V::Int(s)) if s > 0 => V::Real((x / s as f64).floor() * s as f64),
                (V::Int(x), V::Real(s)) if s > 0.0 => V::Real((x as f64 / s).floor() * s),
                (V::Null, _) => V::Null,
                _ => return Err(type_error("bin()")),
            }
        }
        other => return Err(KqlError::UnsupportedFunction(other.to_string())),
    })
}
