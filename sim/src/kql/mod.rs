//! A documented subset of the Kusto Query Language (KQL) for advanced hunting: [`lexer`] →
//! [`parser`] (an AST, [`ast`]) → [`eval`] over in-memory [`Tables`].
//!
//! Entry points: [`parse`] checks a query's syntax without data; [`run`] evaluates it over
//! tables. Anything outside the subset (an operator such as `join`, a function such as
//! `parse_json`) is refused with a [`KqlError`] naming it, never answered wrongly. Errors carry
//! Kusto-style messages (see [`KqlError`]).
//!
//! Datetimes are ticks of 100 ns since the unix epoch and are written like Kusto does:
//! `2026-11-20T10:01:02.1234567Z` (always 7 fractional digits, UTC).

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod ast;
pub mod eval;
pub mod lexer;
pub mod parser;

pub use ast::Query;
pub use lexer::{TICKS_PER_MS, TICKS_PER_SEC};

/// A KQL scalar value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null (a missing value).
    Null,
    /// `bool`.
    Bool(bool),
    /// `long` / `int`.
    Int(i64),
    /// `real`.
    Real(f64),
    /// `string`.
    Str(String),
    /// `datetime`: ticks (100 ns) since the unix epoch.
    DateTime(i64),
    /// `timespan`: ticks (100 ns).
    TimeSpan(i64),
    /// `dynamic` (a JSON value).
    Dynamic(serde_json::Value),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// The value as JSON, as the hunting APIs answer it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Real(r) => serde_json::Number::from_f64(*r)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::DateTime(t) => serde_json::Value::String(format_datetime(*t)),
            Value::TimeSpan(t) => serde_json::Value::String(format_timespan(*t)),
            Value::Dynamic(v) => v.clone(),
        }
    }

    /// `tostring()`: the text of a value (empty for null).
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Str(s) => s.clone(),
            Value::Dynamic(serde_json::Value::String(s)) => s.clone(),
            other => match other.to_json() {
                serde_json::Value::String(s) => s,
                j => j.to_string(),
            },
        }
    }
}

/// Column types, named as the hunting schemas name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// `DateTime`.
    DateTime,
    /// `String`.
    String,
    /// `Int64` (long).
    Int64,
    /// `Int32` (int).
    Int32,
    /// `Double` (real).
    Double,
    /// `Boolean`.
    Boolean,
    /// `TimeSpan`.
    TimeSpan,
    /// `Dynamic` (arrays, e.g. `make_set`).
    Dynamic,
}

impl ColType {
    /// The name in a `Schema` entry.
    pub fn name(self) -> &'static str {
        match self {
            ColType::DateTime => "DateTime",
            ColType::String => "String",
            ColType::Int64 => "Int64",
            ColType::Int32 => "Int32",
            ColType::Double => "Double",
            ColType::Boolean => "Boolean",
            ColType::TimeSpan => "TimeSpan",
            ColType::Dynamic => "Dynamic",
        }
    }
}

/// A column: name and type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Name (case-sensitive).
    pub name: String,
    /// Type.
    pub ty: ColType,
}

/// One row: values in column order (shared, so passing rows along is cheap).
pub type Row = Arc<[Value]>;

/// A table: its columns and rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Rows, each with one value per column.
    pub rows: Vec<Row>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(columns: &[(&str, ColType)]) -> Table {
        Table {
            columns: columns
                .iter()
                .map(|(n, t)| Column {
                    name: n.to_string(),
                    ty: *t,
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Index of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Appends a row given as (column, value) pairs; columns not named are null.
    pub fn push(&mut self, values: Vec<(&str, Value)>) {
        let mut row = vec![Value::Null; self.columns.len()];
        for (name, v) in values {
            if let Some(i) = self.column(name) {
                row[i] = v;
            }
        }
        self.rows.push(row.into());
    }

    /// The values of one column, for tests and checks.
    pub fn values(&self, name: &str) -> Vec<Value> {
        match self.column(name) {
            Some(i) => self.rows.iter().map(|r| r[i].clone()).collect(),
            None => Vec::new(),
        }
    }
}

/// The tables a query can name, by (case-sensitive) name; shared, so copying is cheap.
pub type Tables = BTreeMap<String, Arc<Table>>;

/// A query's answer: columns and rows.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    /// Result columns.
    pub columns: Vec<Column>,
    /// Result rows.
    pub rows: Vec<Row>,
}

impl ResultSet {
    /// Rows as JSON objects with keys in column order.
    pub fn rows_json(&self) -> Vec<serde_json::Value> {
        self.rows
            .iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                for (c, v) in self.columns.iter().zip(r.iter()) {
                    m.insert(c.name.clone(), v.to_json());
                }
                serde_json::Value::Object(m)
            })
            .collect()
    }

    /// The values of one column.
    pub fn values(&self, name: &str) -> Vec<Value> {
        match self.columns.iter().position(|c| c.name == name) {
            Some(i) => self.rows.iter().map(|r| r[i].clone()).collect(),
            None => Vec::new(),
        }
    }
}

/// Why a query was refused; `to_string()` is the Kusto-style message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KqlError {
    /// The text does not parse.
    #[error("Query could not be parsed at '{token}' on line [{line},{col}]")]
    Syntax {
        /// The offending token's text (empty at the end of the query).
        token: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
    },
    /// A column, let name or function that does not exist.
    #[error("'{operator}' operator: Failed to resolve column or scalar expression named '{name}'")]
    UnresolvedColumn {
        /// The operator where it was used.
        operator: String,
        /// The name.
        name: String,
    },
    /// A table that does not exist.
    #[error("'{operator}' operator: Failed to resolve table expression named '{name}'")]
    UnresolvedTable {
        /// The operator where it was used.
        operator: String,
        /// The name.
        name: String,
    },
    /// An operator outside the subset.
    #[error("Operator '{0}' is not supported")]
    UnsupportedOperator(String),
    /// A function outside the subset.
    #[error("Function '{0}' is not supported")]
    UnsupportedFunction(String),
    /// Any other semantic error (wrong argument count or type, ...).
    #[error("{0}")]
    Semantic(String),
    /// The result has more rows than allowed.
    #[error("Query result set has exceeded the internal record count limit {0} records")]
    RowLimit(usize),
}

/// Parses a query (syntax and the subset's operators and functions; names are resolved by
/// [`run`]).
pub fn parse(query: &str) -> Result<Query, KqlError> {
    parser::parse(query)
}

/// Runs a query over `tables` at `now` (ticks since the epoch): rows whose `Timestamp` is
/// older than `now - timespan` (ticks) are invisible when a timespan is given. No row limit.
pub fn run(
    tables: &Tables,
    query: &str,
    now: i64,
    timespan: Option<i64>,
) -> Result<ResultSet, KqlError> {
    run_limited(tables, query, now, timespan, usize::MAX)
}

/// [`run`] with a row limit: a result of more than `max_rows` rows is a
/// [`KqlError::RowLimit`].
pub fn run_limited(
    tables: &Tables,
    query: &str,
    now: i64,
    timespan: Option<i64>,
    max_rows: usize,
) -> Result<ResultSet, KqlError> {
    let q = parse(query)?;
    let out = eval::evaluate(tables, &q, now, timespan.map(|t| now - t))?;
    if out.rows.len() > max_rows {
        return Err(KqlError::RowLimit(max_rows));
    }
    Ok(out)
}

/// Ticks since the epoch of a time in milliseconds since the epoch.
pub fn ticks_from_ms(ms: i64) -> i64 {
    ms.saturating_mul(TICKS_PER_MS)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-20T10:01:02.1234567Z` of ticks since the epoch.
pub fn format_datetime(ticks: i64) -> String {
    let day_ticks = 86_400 * TICKS_PER_SEC;
    let days = ticks.div_euclid(day_ticks);
    let rest = ticks.rem_euclid(day_ticks);
    let (y, m, d) = civil_from_days(days);
    let secs = rest / TICKS_PER_SEC;
    let frac = rest % TICKS_PER_SEC;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:07}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Kusto's text of a timespan: `[-][d.]hh:mm:ss[.fffffff]`.
pub fn format_timespan(ticks: i64) -> String {
    let sign = if ticks < 0 { "-" } else { "" };
    let t = ticks.unsigned_abs();
    let tps = TICKS_PER_SEC as u64;
    let secs = t / tps;
    let frac = t % tps;
    let days = secs / 86_400;
    let mut s = String::from(sign);
    if days > 0 {
        s.push_str(&format!("{days}."));
    }
    s.push_str(&format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    ));
    if frac > 0 {
        s.push_str(&format!(".{frac:07}"));
    }
    s
}

/// Parses the text of `datetime(...)`: `2025-01-01`, `2025-01-01 10:00`,
/// `2025-01-01T10:00:00.5Z` (UTC; a trailing `Z` is optional).
pub fn parse_datetime(text: &str) -> Option<i64> {
    let t = text.trim().trim_end_matches('Z').trim_end_matches('z');
    let (date, time) = match t.find(['T', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: i64 = dp.next()?.parse().ok()?;
    let d: i64 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ticks = days_from_civil(y, m, d) * 86_400 * TICKS_PER_SEC;
    if let Some(time) = time {
        let (hms, frac) = match time.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (time, None),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return None;
        }
        let h: i64 = parts[0].parse().ok()?;
        let mi: i64 = parts[1].parse().ok()?;
        let s: i64 = parts.get(2).map_or(Some(0), |p| p.parse().ok())?;
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
        ticks += (h * 3600 + mi * 60 + s) * TICKS_PER_SEC;
        if let Some(f) = frac {
            if f.is_empty() || !f.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let digits: String = f.chars().chain(std::iter::repeat('0')).take(7).collect();
            ticks += digits.parse::<i64>().ok()?;
        }
    }
    Some(ticks)
}

/// Parses the text of `timespan(...)`: a literal with a unit (`1d`, `30m`) or
/// `[d.]hh:mm[:ss[.f]]`.
pub fn parse_timespan(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Some(pos) = t.find(|c: char| c.is_ascii_alphabetic()) {
        let n: f64 = t[..pos].trim().parse().ok()?;
        let unit = lexer::unit_ticks(&t[pos..])?;
        return Some((n * unit as f64).round() as i64);
    }
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (days, clock) = match t.split_once(':') {
        None => return t.parse::<i64>().ok().map(|d| d * 86_400 * TICKS_PER_SEC),
        Some(_) => match t.split_once('.') {
            Some((d, rest)) if !d.contains(':') => (d.parse::<i64>().ok()?, rest),
            _ => (0, t),
        },
    };
    let (hms, frac) = match clock.rsplit_once('.') {
        Some((a, b)) if a.matches(':').count() == 2 => (a, Some(b)),
        _ => (clock, None),
    };
    let parts: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse::<i64>().ok())
        .collect::<Option<_>>()?;
    let secs = match parts.as_slice() {
        [h, m] => h * 3600 + m * 60,
        [h, m, s] => h * 3600 + m * 60 + s,
        _ => return None,
    };
    let mut ticks = (days * 86_400 + secs) * TICKS_PER_SEC;
    if let Some(f) = frac {
        let digits: String = f.chars().chain(std::iter::repeat('0')).take(7).collect();
        ticks += digits.parse::<i64>().ok()?;
    }
    Some(if neg { -ticks } else { ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_round_trip() {
        let t = parse_datetime("2026-11-20T10:01:02.1234567Z").unwrap();
        assert_eq!(format_datetime(t), "2026-11-20T10:01:02.1234567Z");
        assert_eq!(
            format_datetime(parse_datetime("2025-01-01").unwrap()),
            "2025-01-01T00:00:00.0000000Z"
        );
        assert_eq!(parse_datetime("1970-01-01 00:00:01"), Some(TICKS_PER_SEC));
        assert_eq!(parse_datetime("2025-13-01"), None);
    }

    #[test]
    fn timespans_parse_and_format() {
        assert_eq!(parse_timespan("1d"), Some(86_400 * TICKS_PER_SEC));
        assert_eq!(
            parse_timespan("1.02:00:00"),
            Some((86_400 + 7200) * TICKS_PER_SEC)
        );
        assert_eq!(parse_timespan("00:30"), Some(1800 * TICKS_PER_SEC));
        assert_eq!(
            format_timespan((86_400 + 7200) * TICKS_PER_SEC),
            "1.02:00:00"
        );
        assert_eq!(format_timespan(90 * TICKS_PER_SEC), "00:01:30");
    }
}

#[cfg(test)]
mod eval_tests;
