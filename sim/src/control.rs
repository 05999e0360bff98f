//! `/_sim/...`: control routes for tests and demos (loopback only).
//!
//! Every route answers JSON and refuses callers whose peer address is not loopback (403).
//! Errors use the Defender error body (`{"error":{"code","message","target"}}`).
//!
//! | route | what it does |
//! |---|---|
//! | `GET /_sim/health` | `{"ok":true}` |
//! | `GET /_sim/scenario` | the active scenario (contract: outside tools read it) |
//! | `PUT /_sim/scenario` | loads a scenario (everything derived from the old one is dropped) |
//! | `POST /_sim/reset` | starts over from the scenario as last loaded |
//! | `GET /_sim/counters` | the counters (contract: outside tools read it) |
//! | `POST /_sim/counters/reset` | zeroes the counters |
//! | `GET`, `POST`, `DELETE /_sim/faults` | lists, adds (one or an array), clears faults |
//! | `POST /_sim/actions/{id}/advance` | moves a machine action one stage along |
//! | `POST /_sim/actions/{id}/complete` | forces a machine action's final status |
//! | `POST /_sim/clock/advance` | moves simulated time forward |
//! | `GET`, `PUT /_sim/timings` | reads or replaces the action timings |
//! | `GET`, `POST`, `DELETE /_sim/outcomes` | lists, prepends, clears planned outcomes |
//! | `POST /_sim/tokens/expire` | expires issued access tokens |
//! | `POST /_sim/tokens/revoke` | revokes refresh tokens |
//! | `POST /_sim/alerts` | creates alerts now, in the MDE list and Graph `alerts_v2` |
//! | `POST /_sim/alerts/{id}` | updates an alert (both stores), moving its last-update time |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::scenario::{OutcomeRule, Scenario, Timings};
use crate::state::{ActionControlError, Clock, Counters, Fault, FaultKind, Sim};

/// Control paths a fault pattern must not match (else the fault could lock the control API).
const CONTROL_PROBES: &[&str] = &[
    "/_sim/faults",
    "/_sim/health",
    "/_sim/reset",
    "/_sim/scenario",
    "/_sim/counters",
];
/// Largest scenario body accepted by `PUT /_sim/scenario` (device files may be inlined).
const SCENARIO_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest clock step accepted at once (ten years), so sums cannot overflow.
const MAX_CLOCK_STEP_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// Longest injectable delay (ten minutes).
const MAX_DELAY_MS: u64 = 600_000;

/// Control routes, all behind the loopback check.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/health", get(health))
        .route(
            "/_sim/scenario",
            get(get_scenario).put(put_scenario.layer(DefaultBodyLimit::max(SCENARIO_BODY_LIMIT))),
        )
        .route("/_sim/reset", post(reset))
        .route("/_sim/counters", get(get_counters))
        .route("/_sim/counters/reset", post(reset_counters))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/_sim/actions/{id}/advance", post(advance_action))
        .route("/_sim/actions/{id}/complete", post(complete_action))
        .route("/_sim/clock/advance", post(advance_clock))
        .route("/_sim/timings", get(get_timings).put(put_timings))
        .route(
            "/_sim/outcomes",
            get(list_outcomes).post(add_outcomes).delete(clear_outcomes),
        )
        .route("/_sim/tokens/expire", post(expire_tokens))
        .route("/_sim/tokens/revoke", post(revoke_tokens))
        .route("/_sim/alerts", post(create_alerts))
        .route("/_sim/alerts/{id}", post(update_alert))
        .route_layer(axum::middleware::from_fn(loopback_only))
}

/// `POST /_sim/alerts`: creates `count` alerts now (see [`crate::alert_feed::CreateRequest`]);
/// answers `{"ids": [...oldest first], "created": n}`.
async fn create_alerts(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: crate::alert_feed::CreateRequest = parse(&body)?;
    let now = sim.clock.now_ms();
    let ids = crate::alert_feed::create(&mut sim.world(), now, &req)
        .map_err(|e| ApiError::bad_request("InvalidRequestBody", e))?;
    Ok(Json(json!({"created": ids.len(), "ids": ids})))
}

/// `POST /_sim/alerts/{id}`: changes `status`, `severity`, `assigned_to` or `title` of an alert
/// in both stores and moves its last-update time to now; answers `{"mde": .., "graph": ..}`.
async fn update_alert(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: crate::alert_feed::UpdateRequest = parse(&body)?;
    let now = sim.clock.now_ms();
    match crate::alert_feed::update(&mut sim.world(), now, &id, &req) {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "NotFound",
            format!("Alert {id} was not found"),
        )),
        Err(e) => Err(ApiError::bad_request("InvalidRequestBody", e)),
    }
}

/// Whether a peer may use the control API: only loopback addresses (IPv4-mapped IPv6
/// loopback included); an unknown peer is refused.
pub fn is_loopback_peer(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|a| a.ip().to_canonical().is_loopback())
}

/// Route-layer middleware: 403 unless the connection comes from a loopback address.
async fn loopback_only(req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if !is_loopback_peer(peer) {
        return ApiError::forbidden("The simulator control API answers loopback clients only")
            .into_response();
    }
    next.run(req).await
}

/// Parses a JSON body; 400 `InvalidRequestBody` with the serde message otherwise.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("InvalidRequestBody", format!("invalid body: {e}")))
}

/// Parses a JSON body that may be empty (then the type's default).
fn parse_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(body)
    }
}

/// Parses one `T` or an array of them.
fn parse_one_or_many<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, ApiError> {
    let value: Value = parse(body)?;
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| {
                ApiError::bad_request("InvalidRequestBody", format!("invalid item {i}: {e}"))
            })
        })
        .collect()
}

/// Refuses unknown keys in a fault object (the `Fault` type itself cannot, being flattened),
/// so a misspelt `headers` or `ms` is reported instead of silently ignored.
fn check_fault_keys(i: usize, item: &Value) -> Result<(), ApiError> {
    let Some(obj) = item.as_object() else {
        return Ok(());
    };
    let kind_keys: &[&str] = match obj.get("kind").and_then(Value::as_str) {
        Some("status") => &["status", "body", "headers"],
        Some("delay") => &["ms"],
        _ => &[],
    };
    match obj.keys().find(|k| {
        !["method", "path", "count", "kind"].contains(&k.as_str())
            && !kind_keys.contains(&k.as_str())
    }) {
        Some(k) => Err(ApiError::bad_request(
            "InvalidRequestBody",
            format!("fault {i}: unknown field `{k}`"),
        )),
        None => Ok(()),
    }
}

/// `GET /_sim/health`: `{"ok":true}` once the simulator answers.
async fn health() -> Json<Value> {
    Json(json!({"ok": true}))
}

/// `GET /_sim/scenario`: the active scenario (tenants, apps with secrets and roles, machines,
/// timings, outcomes, limits), including changes made through the API since it was loaded.
async fn get_scenario(State(sim): State<Arc<Sim>>) -> Json<Scenario> {
    Json(sim.scenario())
}

/// `PUT /_sim/scenario`: loads a scenario (body: Scenario JSON) and answers it. Actions, codes,
/// refresh tokens, rate windows, counters and faults of the previous one are dropped.
async fn put_scenario(
    State(sim): State<Arc<Sim>>,
    body: Bytes,
) -> Result<Json<Scenario>, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request("InvalidRequestBody", format!("invalid body: {e}")))?;
    let scenario = Scenario::from_json(text)
        .map_err(|e| ApiError::bad_request("InvalidRequestBody", e.to_string()))?;
    sim.load_scenario(scenario.clone());
    Ok(Json(scenario))
}

/// `POST /_sim/reset`: starts over from the scenario as last loaded (at start or by
/// `PUT /_sim/scenario`): API changes, timings and outcomes set since, actions, codes, refresh
/// tokens, rate windows, counters and faults are all dropped. The clock keeps its time and
/// access tokens already issued stay valid.
async fn reset(State(sim): State<Arc<Sim>>) -> Json<Value> {
    sim.reset();
    Json(json!({"ok": true}))
}

/// `GET /_sim/counters`: requests by route and status, by path, tokens issued, 429 answers and
/// live response sessions open now.
async fn get_counters(State(sim): State<Arc<Sim>>) -> Json<Counters> {
    let mut counters = sim.counters();
    counters.live_sessions = sim.live_sessions();
    Json(counters)
}

/// `POST /_sim/counters/reset`: zeroes the counters.
async fn reset_counters(State(sim): State<Arc<Sim>>) -> Json<Value> {
    sim.reset_counters();
    Json(json!({"ok": true}))
}

/// The pending faults, in match order.
fn pending_faults(sim: &Sim) -> Vec<Fault> {
    sim.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `GET /_sim/faults`: the pending faults with the uses they have left.
async fn list_faults(State(sim): State<Arc<Sim>>) -> Json<Vec<Fault>> {
    Json(pending_faults(&sim))
}

/// Refuses faults that could never apply or could not be answered as asked.
fn check_fault(i: usize, f: &Fault) -> Result<(), ApiError> {
    let bad =
        |msg: String| ApiError::bad_request("InvalidRequestBody", format!("fault {i}: {msg}"));
    if !(f.path.starts_with('/') || f.path.starts_with('*')) {
        return Err(bad(format!("path `{}` must start with `/` or `*`", f.path)));
    }
    if let Some(hit) = CONTROL_PROBES
        .iter()
        .find(|probe| crate::faults::glob_match(&f.path, probe))
    {
        return Err(bad(format!(
            "path `{}` would also match the control route {hit}, which must stay reachable",
            f.path
        )));
    }
    if f.count == 0 {
        return Err(bad("count must be at least 1".into()));
    }
    if let Some(m) = &f.method
        && axum::http::Method::from_bytes(m.as_bytes()).is_err()
    {
        return Err(bad(format!("method `{m}` is not an HTTP method")));
    }
    match &f.kind {
        FaultKind::Status {
            status, headers, ..
        } => {
            if !(100..=599).contains(status) {
                return Err(bad(format!("status {status} is not an HTTP status")));
            }
            for (k, v) in headers {
                if HeaderName::from_bytes(k.as_bytes()).is_err()
                    || HeaderValue::from_str(v).is_err()
                {
                    return Err(bad(format!("header `{k}: {v}` is not a valid header")));
                }
            }
        }
        FaultKind::Delay { ms } if *ms > MAX_DELAY_MS => {
            return Err(bad(format!("delay {ms} ms is above {MAX_DELAY_MS} ms")));
        }
        _ => {}
    }
    Ok(())
}

/// `POST /_sim/faults`: adds one fault or an array of them (after those already pending) and
/// answers the pending list. Body: `{"path":"/api/machines*","method":"GET","count":2,
/// "kind":"status","status":503,"headers":{"Retry-After":"1"}}`; kinds `status` (optional
/// `body`, `headers`), `delay` (`ms`), `drop`, `malformed_json`. A path pattern that would also
/// match control routes (e.g. `*`) is refused, so faults can always be listed and cleared.
async fn add_faults(
    State(sim): State<Arc<Sim>>,
    body: Bytes,
) -> Result<Json<Vec<Fault>>, ApiError> {
    let value: Value = parse(&body)?;
    let items = match &value {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    for (i, item) in items.iter().enumerate() {
        check_fault_keys(i, item)?;
    }
    let faults: Vec<Fault> = parse_one_or_many(&body)?;
    for (i, f) in faults.iter().enumerate() {
        check_fault(i, f)?;
    }
    for f in faults {
        sim.inject_fault(f);
    }
    Ok(Json(pending_faults(&sim)))
}

/// `DELETE /_sim/faults`: drops every pending fault; answers the (empty) pending list.
async fn clear_faults(State(sim): State<Arc<Sim>>) -> Json<Vec<Fault>> {
    sim.clear_faults();
    Json(pending_faults(&sim))
}

/// The API answer for an action error.
fn action_error(e: ActionControlError) -> ApiError {
    match e {
        ActionControlError::NotFound(_) => ApiError::not_found(e.to_string()),
        ActionControlError::NotFinal(_) => ApiError::bad_request("InvalidInput", e.to_string()),
    }
}

/// A MachineAction answer with its `@odata.context`, as the API would give it.
fn action_json(headers: &HeaderMap, action: Map<String, Value>) -> Json<Map<String, Value>> {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(crate::api::odata_context(headers, "MachineActions/$entity")),
    );
    m.extend(action);
    Json(m)
}

/// `POST /_sim/actions/{id}/advance`: moves the action one stage along (Pending → InProgress →
/// its planned final status; a final action stays as it is) and answers the MachineAction.
async fn advance_action(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let action = sim.advance_action(&id).map_err(action_error)?;
    Ok(action_json(&headers, action))
}

/// Body of `POST /_sim/actions/{id}/complete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    /// `Succeeded`, `Failed`, `TimeOut` or `Cancelled`.
    status: String,
    /// Error text reported by live response commands of a failed action.
    #[serde(default)]
    error: Option<String>,
}

/// `POST /_sim/actions/{id}/complete`: forces the final status (body `{"status":"Failed",
/// "error":"..."}`) and answers the MachineAction; 400 for a non-final status, 404 unknown id.
async fn complete_action(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let req: CompleteBody = parse(&body)?;
    let action = sim
        .complete_action(&id, &req.status, req.error)
        .map_err(action_error)?;
    Ok(action_json(&headers, action))
}

/// Body of `POST /_sim/clock/advance`: seconds and/or milliseconds, added together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    /// Seconds to move forward.
    #[serde(default)]
    seconds: Option<u64>,
    /// Milliseconds to move forward.
    #[serde(default)]
    ms: Option<u64>,
}

/// `POST /_sim/clock/advance`: moves simulated time forward (body `{"seconds":n}` or
/// `{"ms":n}`) and answers `{"advanced_ms", "now_ms", "now"}`.
async fn advance_clock(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: ClockBody = parse(&body)?;
    if req.seconds.is_none() && req.ms.is_none() {
        return Err(ApiError::bad_request(
            "MissingRequiredParameter",
            "give `seconds` or `ms`",
        ));
    }
    let step = req
        .seconds
        .unwrap_or(0)
        .checked_mul(1000)
        .and_then(|s| s.checked_add(req.ms.unwrap_or(0)))
        .filter(|s| *s <= MAX_CLOCK_STEP_MS)
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidInput",
                format!("a clock step is at most {MAX_CLOCK_STEP_MS} ms"),
            )
        })?;
    sim.clock.advance(Duration::from_millis(step));
    let now = sim.clock.now_ms();
    Ok(Json(json!({
        "advanced_ms": step,
        "now_ms": now,
        "now": Clock::format_ms(now),
    })))
}

/// `GET /_sim/timings`: the action timings in force.
async fn get_timings(State(sim): State<Arc<Sim>>) -> Json<Timings> {
    Json(sim.world().scenario.timings.clone())
}

/// `PUT /_sim/timings`: replaces the action timings (body: Timings) and answers them. They
/// apply to actions created afterwards; existing actions keep the timings they started with.
async fn put_timings(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Timings>, ApiError> {
    let timings: Timings = parse(&body)?;
    sim.world().scenario.timings = timings.clone();
    Ok(Json(timings))
}

/// `GET /_sim/outcomes`: the planned outcome rules, first match wins.
async fn list_outcomes(State(sim): State<Arc<Sim>>) -> Json<Vec<OutcomeRule>> {
    Json(sim.world().scenario.outcomes.clone())
}

/// `POST /_sim/outcomes`: puts one rule or an array of them (in their order) in front of the
/// existing rules, so they win, and answers the whole list. They apply to actions created
/// afterwards. Body: `{"type":"Isolate","machine_id":"...","status":"Failed","error":"...",
/// "remaining":1}` (every field but `status` optional).
async fn add_outcomes(
    State(sim): State<Arc<Sim>>,
    body: Bytes,
) -> Result<Json<Vec<OutcomeRule>>, ApiError> {
    let rules: Vec<OutcomeRule> = parse_one_or_many(&body)?;
    if let Some(r) = rules.iter().find(|r| !crate::actions::is_final(&r.status)) {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!(
                "outcome status `{}` is not one of Succeeded, Failed, TimeOut, Cancelled",
                r.status
            ),
        ));
    }
    let mut w = sim.world();
    let outcomes = &mut w.scenario.outcomes;
    outcomes.splice(0..0, rules);
    Ok(Json(outcomes.clone()))
}

/// `DELETE /_sim/outcomes`: drops every rule (actions then succeed); answers the empty list.
async fn clear_outcomes(State(sim): State<Arc<Sim>>) -> Json<Vec<OutcomeRule>> {
    let mut w = sim.world();
    w.scenario.outcomes.clear();
    Json(w.scenario.outcomes.clone())
}

/// Body of `POST /_sim/tokens/expire`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpireBody {
    /// Tenant id or domain; every tenant when absent.
    #[serde(default)]
    tenant_id: Option<String>,
    /// Client id; every app when absent.
    #[serde(default)]
    client_id: Option<String>,
}

/// The `tenant/client` keys an expiry applies to; None means every token.
fn expiry_keys(scenario: &Scenario, req: &ExpireBody) -> Result<Option<Vec<String>>, ApiError> {
    let key = |t: &str, c: &str| format!("{t}/{c}").to_ascii_lowercase();
    match (&req.tenant_id, &req.client_id) {
        (None, None) => Ok(None),
        (Some(t), client) => {
            let tenant = scenario
                .tenant(t)
                .ok_or_else(|| ApiError::not_found(format!("Tenant {t} was not found")))?;
            let keys: Vec<String> = tenant
                .apps
                .iter()
                .filter(|a| {
                    client
                        .as_deref()
                        .is_none_or(|c| a.client_id.eq_ignore_ascii_case(c))
                })
                .map(|a| key(&tenant.id, &a.client_id))
                .collect();
            match client {
                Some(c) if keys.is_empty() => Err(ApiError::not_found(format!(
                    "Application {c} is not registered in tenant {t}"
                ))),
                _ => Ok(Some(keys)),
            }
        }
        (None, Some(c)) => {
            let keys: Vec<String> = scenario
                .tenants
                .iter()
                .filter(|t| t.apps.iter().any(|a| a.client_id.eq_ignore_ascii_case(c)))
                .map(|t| key(&t.id, c))
                .collect();
            if keys.is_empty() {
                Err(ApiError::not_found(format!(
                    "Application {c} was not found"
                )))
            } else {
                Ok(Some(keys))
            }
        }
    }
}

/// `POST /_sim/tokens/expire`: access tokens issued so far answer 401 from now on; tokens
/// issued afterwards work. Body (optional) `{"tenant_id":..,"client_id":..}` narrows it to a
/// tenant, an app, or one app in one tenant. Answers `{"expired":["tenant/client", ...]}`
/// (`["*"]` for every token).
async fn expire_tokens(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: ExpireBody = parse_or_default(&body)?;
    let keys = expiry_keys(&sim.world().scenario, &req)?;
    match keys {
        None => {
            sim.expire_access_tokens(None);
            Ok(Json(json!({"expired": ["*"]})))
        }
        Some(keys) => {
            for k in &keys {
                sim.expire_access_tokens(Some(k));
            }
            Ok(Json(json!({"expired": keys})))
        }
    }
}

/// Body of `POST /_sim/tokens/revoke`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// Client id; every app when absent.
    #[serde(default)]
    client_id: Option<String>,
}

/// `POST /_sim/tokens/revoke`: revokes live refresh tokens (of one app with
/// `{"client_id":..}`); redeeming one then fails with AADSTS70008. Answers `{"revoked": n}`.
async fn revoke_tokens(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: RevokeBody = parse_or_default(&body)?;
    let client = req.client_id.as_deref();
    let live = sim
        .world()
        .refresh_tokens
        .values()
        .filter(|g| !g.revoked && client.is_none_or(|c| g.client_id.eq_ignore_ascii_case(c)))
        .count();
    sim.revoke_refresh_tokens(client);
    Ok(Json(json!({"revoked": live})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_pass() {
        let p = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert!(is_loopback_peer(p("127.0.0.1:5000")));
        assert!(is_loopback_peer(p("127.8.9.10:1")));
        assert!(is_loopback_peer(p("[::1]:5000")));
        assert!(is_loopback_peer(p("[::ffff:127.0.0.1]:5000")));
        assert!(!is_loopback_peer(p("10.0.0.5:5000")));
        assert!(!is_loopback_peer(p("[::ffff:10.0.0.5]:5000")));
        assert!(!is_loopback_peer(p("[2001:db8::1]:80")));
        assert!(!is_loopback_peer(p("0.0.0.0:80")));
        assert!(!is_loopback_peer(None));
    }

    #[test]
    fn faults_that_cannot_apply_are_refused() {
        let f = |v: Value| serde_json::from_value::<Fault>(v).unwrap();
        let ok = f(json!({"path": "/api/*", "kind": "status", "status": 503,
            "headers": {"Retry-After": "1"}}));
        assert!(check_fault(0, &ok).is_ok());
        let zero = f(json!({"path": "/api/*", "count": 0, "kind": "drop"}));
        assert!(check_fault(0, &zero).is_err());
        let status = f(json!({"path": "/api/*", "kind": "status", "status": 700}));
        assert!(check_fault(0, &status).is_err());
        let header = f(json!({"path": "/x", "kind": "status", "status": 500,
            "headers": {"bad name": "1"}}));
        assert!(check_fault(0, &header).is_err());
        let path = f(json!({"path": "api", "kind": "drop"}));
        assert!(check_fault(0, &path).is_err());
        for pattern in ["*", "/_sim/*", "*faults", "/_SIM/RESET"] {
            let control = f(json!({"path": pattern, "kind": "drop"}));
            assert!(check_fault(0, &control).is_err(), "{pattern}");
        }
        let token = f(json!({"path": "*/oauth2/v2.0/token", "kind": "drop"}));
        assert!(check_fault(0, &token).is_ok());
        let delay = f(json!({"path": "/x", "kind": "delay", "ms": 10_000_000}));
        assert!(check_fault(0, &delay).is_err());
        assert!(check_fault_keys(0, &json!({"path": "/x", "kind": "delay", "ms": 1})).is_ok());
        assert!(check_fault_keys(0, &json!({"path": "/x", "kind": "delay", "status": 1})).is_err());
        assert!(
            check_fault_keys(0, &json!({"path": "/x", "kind": "status", "header": {}})).is_err()
        );
    }

    #[test]
    fn expiry_keys_follow_the_scenario() {
        let s = Scenario::default_scenario();
        let t = &s.tenants[0];
        let body = |t: Option<&str>, c: Option<&str>| ExpireBody {
            tenant_id: t.map(str::to_string),
            client_id: c.map(str::to_string),
        };
        assert_eq!(expiry_keys(&s, &body(None, None)).unwrap(), None);
        let all = expiry_keys(&s, &body(Some(&t.id), None)).unwrap().unwrap();
        assert_eq!(all.len(), t.apps.len());
        let one = expiry_keys(&s, &body(None, Some(&t.apps[0].client_id)))
            .unwrap()
            .unwrap();
        assert_eq!(
            one,
            vec![format!("{}/{}", t.id, t.apps[0].client_id).to_ascii_lowercase()]
        );
        let by_domain = expiry_keys(&s, &body(t.domain.as_deref(), Some(&t.apps[0].client_id)))
            .unwrap()
            .unwrap();
        assert_eq!(by_domain, one);
        assert!(expiry_keys(&s, &body(Some("nope"), None)).is_err());
        assert!(expiry_keys(&s, &body(None, Some("nope"))).is_err());
    }
}
