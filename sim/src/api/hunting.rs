//! Advanced hunting: MDE `POST /api/advancedqueries/run` (`{"Query"}` → `Schema`/`Results`/
//! `Stats`, last 30 days) and Graph `POST /v1.0/security/runHuntingQuery` (`{"Query",
//! "Timespan"}` → `schema`/`results`, default 30 days), both over [`crate::kql`] and the
//! tables of [`crate::hunting_data`], with the scenario's row limit and latency. The world
//! lock is held only to take the (shared) tables; evaluation and the latency wait run without
//! it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};

use super::graph::GraphError;
use crate::error::ApiError;
use crate::kql::{self, KqlError, ResultSet, TICKS_PER_SEC};
use crate::state::Sim;

/// The Graph hunting route.
pub const GRAPH_HUNTING_PATH: &str = "/v1.0/security/runHuntingQuery";
/// The MDE hunting route (paths arrive lower-cased).
pub const MDE_HUNTING_PATH: &str = "/api/advancedqueries/run";
/// MDE sees the last 30 days.
const THIRTY_DAYS: i64 = 30 * 86_400 * TICKS_PER_SEC;

/// The MDE route (behind the API guard).
pub fn routes() -> Router<Arc<Sim>> {
    Router::new().route(MDE_HUNTING_PATH, post(run_mde))
}

/// The Graph route (behind the Graph guard).
pub fn graph_routes() -> Router<Arc<Sim>> {
    Router::new().route(GRAPH_HUNTING_PATH, post(run_graph))
}

struct Outcome {
    result: Result<ResultSet, KqlError>,
    millis: f64,
}

/// Runs a query without holding the world lock, then waits the configured latency.
async fn execute(sim: &Arc<Sim>, query: String, timespan: i64) -> Outcome {
    let tables = sim.hunting_tables();
    let now = kql::ticks_from_ms(sim.clock.now_ms());
    let settings = sim.world().scenario.hunting.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        kql::run_limited(&tables, &query, now, Some(timespan), settings.max_rows)
    })
    .await
    .unwrap_or_else(|_| Err(KqlError::Semantic("The query failed to run".into())));
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if settings.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(settings.latency_ms)).await;
    }
    Outcome { result, millis }
}

/// The `Query` of a body, or why it is unusable.
fn query_of(body: &Value, key: &str) -> Result<String, String> {
    match body.get(key) {
        Some(Value::String(q)) if !q.trim().is_empty() => Ok(q.clone()),
        Some(Value::String(_)) => Err(format!("The '{key}' field is empty")),
        Some(_) => Err(format!("The '{key}' field must be a string")),
        None => Err(format!("The request body has no '{key}' field")),
    }
}

async fn run_mde(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return ApiError::bad_request("BadRequest", "The request body is not valid JSON")
                .into_response();
        }
    };
    let query = match query_of(&body, "Query") {
        Ok(q) => q,
        Err(m) => return ApiError::bad_request("BadRequest", m).into_response(),
    };
    let out = execute(&sim, query, THIRTY_DAYS).await;
    match out.result {
        Ok(rs) => {
            let schema: Vec<Value> = rs
                .columns
                .iter()
                .map(|c| json!({"Name": c.name, "Type": c.ty.name()}))
                .collect();
            let rows = rs.rows.len();
            Json(json!({
                "Stats": {
                    "ExecutionTime": out.millis / 1000.0,
                    "resource_usage": {"cache": {"memory": {"hits": 0, "misses": 0, "total": 0}}},
                    "dataset_statistics": [{"table_row_count": rows, "table_size": 0}],
                },
                "Schema": schema,
                "Results": rs.rows_json(),
            }))
            .into_response()
        }
        Err(e) => ApiError::bad_request("BadRequest", e.to_string()).into_response(),
    }
}

/// Ticks of an ISO 8601 duration (`P30D`, `PT12H`, `P1DT6H30M`, `P2W`).
pub fn parse_iso_duration(text: &str) -> Option<i64> {
    let rest = text.trim().strip_prefix(['P', 'p'])?;
    if rest.is_empty() {
        return None;
    }
    let mut secs: f64 = 0.0;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c {
            'T' | 't' if num.is_empty() && !in_time => in_time = true,
            '0'..='9' | '.' => num.push(c),
            _ => {
                let n: f64 = num.parse().ok()?;
                num.clear();
                let unit = match (in_time, c.to_ascii_uppercase()) {
                    (false, 'W') => 7.0 * 86_400.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return None,
                };
                secs += n * unit;
                any = true;
            }
        }
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some((secs * TICKS_PER_SEC as f64) as i64)
}

async fn run_graph(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let bad = |m: String| GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", m).into_response();
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return bad("The request body is not valid JSON".into()),
    };
    let key = if body.get("Query").is_some() {
        "Query"
    } else {
        "query"
    };
    let query = match query_of(&body, key) {
        Ok(q) => q,
        Err(m) => return bad(m),
    };
    let timespan = match body.get("Timespan").or_else(|| body.get("timespan")) {
        None | Some(Value::Null) => THIRTY_DAYS,
        Some(Value::String(t)) => match parse_iso_duration(t) {
            Some(ticks) if ticks > 0 => ticks,
            _ => return bad(format!("Timespan '{t}' is not a valid ISO 8601 duration")),
        },
        Some(_) => return bad("Timespan must be an ISO 8601 duration string".into()),
    };
    let out = execute(&sim, query, timespan).await;
    match out.result {
        Ok(rs) => {
            let schema: Vec<Value> = rs
                .columns
                .iter()
                .map(|c| json!({"name": c.name, "type": c.ty.name()}))
                .collect();
            Json(json!({
                "@odata.context":
                    "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults",
                "schema": schema,
                "results": rs.rows_json(),
            }))
            .into_response()
        }
        Err(e) => bad(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration("P30D"), Some(THIRTY_DAYS));
        assert_eq!(
            parse_iso_duration("PT12H"),
            Some(12 * 3_600 * TICKS_PER_SEC)
        );
        assert_eq!(
            parse_iso_duration("P1DT30M"),
            Some((86_400 + 1_800) * TICKS_PER_SEC)
        );
        assert_eq!(parse_iso_duration("P"), None);
        assert_eq!(parse_iso_duration("30D"), None);
        assert_eq!(parse_iso_duration("PT5D"), None);
    }
}
