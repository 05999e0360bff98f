//! Advanced hunting answers and errors, on both APIs.
//!
//! Defender answers `POST /api/advancedqueries/run` with `{"Schema":[{"Name","Type"}],
//! "Results":[…],"Stats":{…}}`; Graph answers `POST /security/runHuntingQuery` with
//! `{"schema":[{"name","type"}],"results":[…]}`. Key case varies between the two and between
//! releases, `Stats` may be absent, and the answer may carry 100,000 rows (124 MB).
//! [`HuntingAnswer::parse`] reads any of these shapes straight from the body and keeps only
//! the rows asked for: the others are counted and skipped while parsing, never built.
//!
//! [`explain`] turns Microsoft's hunting errors into what a person can act on.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::DefenderError;

/// Microsoft's row limit of one hunting query.
pub const MAX_ROWS: usize = 100_000;

/// The API a query ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuntingApi {
    /// Microsoft Graph `runHuntingQuery` (the current API).
    Graph,
    /// Defender for Endpoint `advancedqueries/run` (the older API).
    Mde,
}

impl HuntingApi {
    /// `graph` or `mde`.
    pub fn name(self) -> &'static str {
        match self {
            HuntingApi::Graph => "graph",
            HuntingApi::Mde => "mde",
        }
    }
}

/// One column of an answer's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Kusto type (`DateTime`, `String`, `Int64`, …; empty when the answer gave none).
    pub column_type: String,
}

/// A hunting answer: its schema, the rows kept, and how many rows it had in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HuntingAnswer {
    /// The columns, in the answer's order.
    pub columns: Vec<Column>,
    /// The first rows (as many as asked for).
    pub rows: Vec<Map<String, Value>>,
    /// Rows in the answer, kept or not.
    pub total_rows: usize,
    /// `Stats`, when the answer carried it.
    pub stats: Option<Value>,
}

impl HuntingAnswer {
    /// Reads an answer of either API keeping at most `keep` rows; rows that are not JSON
    /// objects are counted but not kept.
    pub fn parse(body: &[u8], keep: usize) -> Result<HuntingAnswer, String> {
        HuntingAnswer::read(&mut &body[..], keep)
            .map_err(|e| format!("the hunting answer could not be read: {e}"))
    }

    /// Reads an answer of either API from `reader` as it arrives, keeping at most `keep` rows.
    pub fn read(
        reader: &mut dyn std::io::Read,
        keep: usize,
    ) -> Result<HuntingAnswer, serde_json::Error> {
        use std::io::BufRead as _;
        let mut buffered = std::io::BufReader::with_capacity(64 * 1024, reader);
        if buffered
            .fill_buf()
            .map_err(serde_json::Error::io)?
            .starts_with(b"\xEF\xBB\xBF")
        {
            buffered.consume(3);
        }
        let mut de = serde_json::Deserializer::from_reader(buffered);
        let answer = AnswerSeed { keep }.deserialize(&mut de)?;
        de.end()?;
        Ok(answer)
    }

    /// Seconds the query ran, from `Stats.ExecutionTime`.
    pub fn execution_time(&self) -> Option<f64> {
        let stats = self.stats.as_ref()?.as_object()?;
        let v = stats
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("ExecutionTime"))?
            .1;
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    }

    /// CPU time the query used (`Stats.resource_usage.cpu["total cpu"]`, `hh:mm:ss.fff`).
    pub fn cpu_time(&self) -> Option<String> {
        let stats = self.stats.as_ref()?.as_object()?;
        let usage = stats
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("resource_usage"))?
            .1
            .get("cpu")?;
        usage
            .get("total cpu")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

struct AnswerSeed {
    keep: usize,
}

impl<'de> DeserializeSeed<'de> for AnswerSeed {
    type Value = HuntingAnswer;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<HuntingAnswer, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnswerSeed {
    type Value = HuntingAnswer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with Schema and Results")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HuntingAnswer, A::Error> {
        let mut answer = HuntingAnswer::default();
        let mut saw_results = false;
        while let Some(key) = map.next_key::<String>()? {
            if key.eq_ignore_ascii_case("results") {
                let (rows, total) = map.next_value_seed(RowsSeed { keep: self.keep })?;
                answer.rows = rows;
                answer.total_rows = total;
                saw_results = true;
            } else if key.eq_ignore_ascii_case("schema") {
                let columns: Option<Vec<Map<String, Value>>> = map.next_value()?;
                answer.columns = columns
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|c| {
                        Some(Column {
                            name: super::field_text(c, &["name"])?,
                            column_type: super::field_text(c, &["type"]).unwrap_or_default(),
                        })
                    })
                    .collect();
            } else if key.eq_ignore_ascii_case("stats") {
                answer.stats = map.next_value::<Option<Value>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !saw_results {
            return Err(de::Error::custom("no Results (or results) in the answer"));
        }
        if answer.columns.is_empty()
            && let Some(first) = answer.rows.first()
        {
            // No schema: the first row's keys, untyped.
            answer.columns = first
                .keys()
                .map(|k| Column {
                    name: k.clone(),
                    column_type: String::new(),
                })
                .collect();
        }
        Ok(answer)
    }
}

struct RowsSeed {
    keep: usize,
}

impl<'de> DeserializeSeed<'de> for RowsSeed {
    type Value = (Vec<Map<String, Value>>, usize);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed {
    type Value = (Vec<Map<String, Value>>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), 0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(self.keep.min(1024));
        let mut total = 0usize;
        loop {
            if rows.len() < self.keep {
                let Some(row) = seq.next_element::<Value>()? else {
                    break;
                };
                total += 1;
                if let Value::Object(row) = row {
                    rows.push(row);
                }
            } else {
                let Some(IgnoredAny) = seq.next_element::<IgnoredAny>()? else {
                    break;
                };
                total += 1;
            }
        }
        Ok((rows, total))
    }
}

/// A Kusto syntax error's place: `… at '<near>' on line [<line>,<column>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// The text where parsing stopped.
    pub near: String,
}

/// The place of a syntax error in Microsoft's message, when it names one.
pub fn syntax_error(message: &str) -> Option<SyntaxError> {
    let at = message.find("could not be parsed at")?;
    let rest = &message[at..];
    let near = rest
        .split_once('\'')
        .and_then(|(_, r)| r.rsplit_once("' on line"))
        .map(|(n, _)| n.to_string())
        .unwrap_or_default();
    let open = rest.rfind('[')?;
    let close = rest[open..].find(']')? + open;
    let (line, column) = rest[open + 1..close].split_once(',')?;
    Some(SyntaxError {
        line: line.trim().parse().ok()?,
        column: column.trim().parse().ok()?,
        near,
    })
}

/// What went wrong with a hunting query, said so a person can act on it: a syntax error with
/// its place, a name the tables do not have, the row or size limit, the CPU quota, Graph's
/// gateway timeout, the request timeout. `None` for failures that are not the query's (auth,
/// throttling, transport), which keep their own message.
pub fn explain(e: &DefenderError, api: HuntingApi, timeout_secs: u64) -> Option<String> {
    let message = match e {
        DefenderError::Api { message, .. } => message.as_str(),
        DefenderError::Transport(t) if t.contains("timed out") => {
            return Some(format!(
                "the query did not finish within {timeout_secs} s ({t}); raise `timeout` (up to \
                 600 s), narrow the time range, or filter earlier in the query"
            ));
        }
        _ => return None,
    };
    let status = e.status().unwrap_or(0);
    let lower = message.to_ascii_lowercase();
    let quoted = crate::actions::truncate(message, 300);
    if let Some(place) = syntax_error(message) {
        let near = if place.near.is_empty() {
            String::new()
        } else {
            format!(" near '{}'", crate::actions::truncate(&place.near, 40))
        };
        return Some(format!(
            "the query has a syntax error at line {}, column {}{near}; fix the KQL and run it \
             again (Microsoft: {quoted})",
            place.line, place.column
        ));
    }
    if lower.contains("failed to resolve") {
        return Some(format!(
            "the query names a table, column or function that advanced hunting does not have; \
             check the spelling (names are case-sensitive) against the schema (Microsoft: \
             {quoted})"
        ));
    }
    if lower.contains("record count limit")
        || lower.contains("row limit")
        || lower.contains("too many rows")
    {
        return Some(format!(
            "the query returns more than {MAX_ROWS} rows, Microsoft's limit; add filters, \
             `summarize`, or `| take N` (Microsoft: {quoted})"
        ));
    }
    if lower.contains("result size") || lower.contains("too large") || lower.contains("124 mb") {
        return Some(format!(
            "the query's result is larger than Microsoft allows (124 MB); project fewer columns \
             or return fewer rows (Microsoft: {quoted})"
        ));
    }
    if lower.contains("cpu") || lower.contains("quota") || lower.contains("resources") {
        return Some(format!(
            "the tenant's advanced hunting resources are spent (Microsoft allows 10 minutes of \
             CPU an hour and 3 hours a day per tenant); run it later or make the query lighter \
             (Microsoft: {quoted})"
        ));
    }
    if status == 504 || status == 408 {
        let other = match api {
            HuntingApi::Graph => ", or run it with api=mde",
            HuntingApi::Mde => "",
        };
        return Some(format!(
            "Microsoft timed out running the query (HTTP {status}); narrow the time range, \
             filter earlier in the query{other}"
        ));
    }
    if status == 400 {
        return Some(format!("Microsoft refused the query (HTTP 400): {quoted}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_shapes_parse() {
        let mde = json!({
            "Schema": [{"Name": "Timestamp", "Type": "DateTime"}, {"Name": "DeviceName", "Type": "String"}],
            "Results": [{"Timestamp": "2026-11-01T00:00:00Z", "DeviceName": "a"}, {"Timestamp": "2026-11-02T00:00:00Z", "DeviceName": "b"}],
            "Stats": {"ExecutionTime": 0.25, "resource_usage": {"cpu": {"total cpu": "00:00:01.5"}}}
        });
        let a = HuntingAnswer::parse(mde.to_string().as_bytes(), 10).unwrap();
        assert_eq!(a.total_rows, 2);
        assert_eq!(a.rows.len(), 2);
        assert_eq!(a.columns[1].name, "DeviceName");
        assert_eq!(a.columns[0].column_type, "DateTime");
        assert_eq!(a.execution_time(), Some(0.25));
        assert_eq!(a.cpu_time().as_deref(), Some("00:00:01.5"));

        let graph = json!({
            "@odata.context": "x",
            "schema": [{"name": "DeviceId", "type": "String"}],
            "results": [{"DeviceId": "1"}],
        });
        let a = HuntingAnswer::parse(graph.to_string().as_bytes(), 10).unwrap();
        assert_eq!(a.columns[0].name, "DeviceId");
        assert_eq!(a.rows.len(), 1);
        assert!(a.stats.is_none());

        // A byte order mark first.
        let bom = [b"\xEF\xBB\xBF".as_slice(), graph.to_string().as_bytes()].concat();
        assert_eq!(HuntingAnswer::parse(&bom, 10).unwrap().rows.len(), 1);

        // Mixed key case, results before the schema, extra fields, no Stats.
        let odd = r#"{"results":[{"A":1}],"extra":[1,2],"SCHEMA":[{"NAME":"A","TYPE":"Int64"}]}"#;
        let a = HuntingAnswer::parse(odd.as_bytes(), 10).unwrap();
        assert_eq!(a.columns[0].name, "A");
        assert_eq!(a.columns[0].column_type, "Int64");

        // No schema at all: the first row's keys, untyped.
        let bare = r#"{"Results":[{"X":1,"Y":2}]}"#;
        let a = HuntingAnswer::parse(bare.as_bytes(), 10).unwrap();
        assert_eq!(a.columns.len(), 2);
        assert_eq!(a.columns[0].column_type, "");

        // Null results, empty results.
        assert_eq!(
            HuntingAnswer::parse(br#"{"Schema":[],"Results":null}"#, 10)
                .unwrap()
                .total_rows,
            0
        );
        assert!(HuntingAnswer::parse(br#"{"Schema":[]}"#, 10).is_err());
        assert!(HuntingAnswer::parse(b"<html>", 10).is_err());
        assert!(HuntingAnswer::parse(b"[]", 10).is_err());
    }

    #[test]
    fn only_the_rows_asked_for_are_kept() {
        let rows: Vec<Value> = (0..1000).map(|i| json!({"N": i})).collect();
        let body = json!({"Schema": [{"Name": "N", "Type": "Int64"}], "Results": rows}).to_string();
        let a = HuntingAnswer::parse(body.as_bytes(), 10).unwrap();
        assert_eq!(a.total_rows, 1000);
        assert_eq!(a.rows.len(), 10);
        assert_eq!(a.rows[9]["N"], 9);
        let none = HuntingAnswer::parse(body.as_bytes(), 0).unwrap();
        assert_eq!(none.total_rows, 1000);
        assert!(none.rows.is_empty());
    }

    #[test]
    fn syntax_error_places_are_read() {
        let p = syntax_error("Query could not be parsed at 'wher' on line [2,3]").unwrap();
        assert_eq!((p.line, p.column, p.near.as_str()), (2, 3, "wher"));
        let p =
            syntax_error("Syntax error: Query could not be parsed at ''' on line [1,10]").unwrap();
        assert_eq!((p.line, p.column, p.near.as_str()), (1, 10, "'"));
        assert!(syntax_error("Query could not be parsed").is_none());
        assert!(syntax_error("something else [1,2]").is_none());
    }

    fn api_error(status: u16, message: &str) -> DefenderError {
        DefenderError::Api {
            status,
            code: "BadRequest".into(),
            message: message.into(),
            correlation_id: None,
        }
    }

    #[test]
    fn errors_are_explained() {
        let say = |status, m: &str| explain(&api_error(status, m), HuntingApi::Graph, 200).unwrap();
        assert!(
            say(400, "Query could not be parsed at 'x' on line [1,5]")
                .starts_with("the query has a syntax error at line 1, column 5 near 'x'")
        );
        assert!(
            say(
                400,
                "'where' operator: Failed to resolve column or scalar expression named 'Foo'"
            )
            .contains("case-sensitive")
        );
        assert!(
            say(
                400,
                "Query result set has exceeded the internal record count limit 100000 records"
            )
            .contains("100000 rows")
        );
        assert!(say(429, "Query exceeded the allocated CPU quota").contains("10 minutes of CPU"));
        assert!(say(504, "Gateway Timeout").contains("api=mde"));
        assert!(
            !explain(&api_error(504, "Gateway Timeout"), HuntingApi::Mde, 200)
                .unwrap()
                .contains("api=mde")
        );
        assert!(say(400, "Bad thing").contains("Bad thing"));
        assert!(explain(&api_error(403, "Forbidden"), HuntingApi::Graph, 200).is_none());
        let timeout = DefenderError::Transport("request to graph timed out".into());
        assert!(
            explain(&timeout, HuntingApi::Mde, 30)
                .unwrap()
                .contains("within 30 s")
        );
        assert!(explain(&DefenderError::Auth("x".into()), HuntingApi::Mde, 30).is_none());
    }
}
