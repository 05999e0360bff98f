//! Graph security resources: `alerts_v2` (list, get, PATCH, comments) and incidents (list with
//! `$expand=alerts`, get, PATCH, comments), scoped to the caller's tenant, with Graph's paging
//! (`$top` limits, `$skip`, `$count`, absolute `@odata.nextLink`) and error shape.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::graph::GraphError;
use super::odata::{ListQuery, ListSpec};
use crate::error::ApiError;
use crate::graph_data::{
    ALERT_STATUSES, CLASSIFICATIONS, DETERMINATIONS, INCIDENT_STATUSES, TenantGraph,
};
use crate::jwt::Claims;
use crate::state::{Clock, Sim};

/// Largest `$top` of `alerts_v2`.
pub const MAX_TOP_ALERTS: usize = 2_000;
/// Largest `$top` of incidents.
pub const MAX_TOP_INCIDENTS: usize = 50;

/// Alert properties `$filter` may use.
pub const ALERT_FILTERABLE: &[&str] = &[
    "assignedTo",
    "classification",
    "determination",
    "createdDateTime",
    "lastUpdateDateTime",
    "severity",
    "serviceSource",
    "status",
];
/// Incident properties `$filter` may use.
pub const INCIDENT_FILTERABLE: &[&str] = &[
    "assignedTo",
    "classification",
    "createdDateTime",
    "determination",
    "lastUpdateDateTime",
    "severity",
    "status",
];

const ALERTS_PATH: &str = "/v1.0/security/alerts_v2";
const INCIDENTS_PATH: &str = "/v1.0/security/incidents";

/// Routes of the Graph security resources (the guard is layered on by [`super::graph::routes`]).
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(ALERTS_PATH, get(list_alerts))
        .route(
            "/v1.0/security/alerts_v2/{id}",
            get(get_alert).patch(patch_alert),
        )
        .route(
            "/v1.0/security/alerts_v2/{id}/comments",
            post(alert_comment),
        )
        .route(INCIDENTS_PATH, get(list_incidents))
        .route(
            "/v1.0/security/incidents/{id}",
            get(get_incident).patch(patch_incident),
        )
        .route(
            "/v1.0/security/incidents/{id}/comments",
            post(incident_comment),
        )
}

fn bad_request(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn not_found(kind: &str, id: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{kind} with id '{id}' was not found."),
    )
}

fn from_api(e: ApiError) -> GraphError {
    GraphError::new(e.status, "BadRequest", e.message)
}

/// `{base}/v1.0/$metadata#{fragment}`.
fn context(headers: &HeaderMap, fragment: &str) -> String {
    format!("{}/v1.0/$metadata#{fragment}", super::base_url(headers))
}

/// The Graph options of a list request.
struct GraphQuery {
    list: ListQuery,
    top: Option<usize>,
    count: bool,
    expand_alerts: bool,
}

fn parse_query(
    raw: Option<&str>,
    max_top: usize,
    expandable: bool,
) -> Result<GraphQuery, GraphError> {
    let mut q = GraphQuery {
        list: ListQuery::default(),
        top: None,
        count: false,
        expand_alerts: false,
    };
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.to_ascii_lowercase().as_str() {
            "$top" => {
                let top = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max_top).contains(n))
                    .ok_or_else(|| {
                        bad_request(format!(
                            "Invalid value '{value}' for $top: it must be an integer between 1 and {max_top}."
                        ))
                    })?;
                q.top = Some(top);
            }
            "$count" => {
                q.count = match value.trim() {
                    v if v.eq_ignore_ascii_case("true") => true,
                    v if v.eq_ignore_ascii_case("false") => false,
                    _ => {
                        return Err(bad_request(format!(
                            "Invalid value '{value}' for $count: it must be true or false."
                        )));
                    }
                };
            }
            "$expand" => {
                if expandable && value.trim().eq_ignore_ascii_case("alerts") {
                    q.expand_alerts = true;
                } else {
                    return Err(bad_request(format!(
                        "Could not find a navigation property named '{value}' to $expand."
                    )));
                }
            }
            _ => {}
        }
    }
    q.list = ListQuery::parse(raw).map_err(from_api)?;
    Ok(q)
}

/// Filters, pages and wraps `items` as a Graph list answer.
#[allow(clippy::too_many_arguments)]
fn list_answer(
    items: Vec<Value>,
    q: &GraphQuery,
    headers: &HeaderMap,
    path: &str,
    fragment: &str,
    filterable: &[&str],
    max_top: usize,
    page_cap: usize,
) -> Result<Json<Value>, GraphError> {
    let spec = ListSpec {
        context_fragment: fragment,
        entity: fragment,
        filterable,
        page_size: max_top,
    };
    q.list.check_filterable(&spec, &items).map_err(from_api)?;
    let mut filtered: Vec<Value> = items.into_iter().filter(|v| q.list.matches(v)).collect();
    if let Some(o) = &q.list.orderby {
        o.sort(&mut filtered);
    }
    let total = filtered.len();
    let page = q.top.unwrap_or(max_top).min(max_top).min(page_cap.max(1));
    let start = q.list.skip.min(total);
    let end = start.saturating_add(page).min(total);
    let value: Vec<Value> = filtered.drain(start..end).collect();
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(headers, fragment)));
    if q.count {
        body.insert("@odata.count".into(), json!(total));
    }
    if end < total {
        let mut link = format!("{}{path}?$skip={end}", super::base_url(headers));
        let mut add = |k: &str, v: &str| {
            link.push_str(&format!("&{k}={}", encode(v)));
        };
        if let Some(top) = q.top {
            add("$top", &top.to_string());
        }
        if let Some(f) = &q.list.filter {
            add("$filter", &f.text);
        }
        if let Some(o) = &q.list.orderby {
            add("$orderby", &o.text());
        }
        if q.count {
            add("$count", "true");
        }
        if q.expand_alerts {
            add("$expand", "alerts");
        }
        body.insert("@odata.nextLink".into(), json!(link));
    }
    body.insert("value".into(), Value::Array(value));
    Ok(Json(Value::Object(body)))
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Runs `f` on the caller's tenant data (generated on first use).
fn with_tenant<T>(sim: &Sim, claims: &Claims, f: impl FnOnce(&mut TenantGraph, usize) -> T) -> T {
    let now = sim.clock.now_ms();
    let mut guard = sim.world();
    let w = &mut *guard;
    let page_cap = w.scenario.default_page_size;
    let tenant = w.graph.tenant(&w.scenario, &claims.tid, now);
    f(tenant, page_cap)
}

fn entity(headers: &HeaderMap, fragment: &str, record: Map<String, Value>) -> Json<Value> {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(headers, &format!("{fragment}/$entity"))),
    );
    body.extend(record);
    Json(Value::Object(body))
}

async fn list_alerts(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, GraphError> {
    let q = parse_query(raw.as_deref(), MAX_TOP_ALERTS, false)?;
    let (items, page_cap) = with_tenant(&sim, &claims, |t, cap| {
        let items: Vec<Value> = t.alerts.iter().cloned().map(Value::Object).collect();
        (items, cap)
    });
    list_answer(
        items,
        &q,
        &headers,
        ALERTS_PATH,
        "security/alerts_v2",
        ALERT_FILTERABLE,
        MAX_TOP_ALERTS,
        page_cap,
    )
}

async fn get_alert(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, GraphError> {
    let alert = with_tenant(&sim, &claims, |t, _| t.alert_mut(&id).map(|a| a.clone()));
    match alert {
        Some(a) => Ok(entity(&headers, "security/alerts_v2", a)),
        None => Err(not_found("Alert", &id)),
    }
}

/// The request body as a JSON object (empty body = `{}`).
fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, GraphError> {
    let bytes = body.map_err(|e| GraphError::new(e.status(), "BadRequest", e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("The request body must be a JSON object.")),
        Err(e) => Err(bad_request(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// An enum property of a PATCH body: a string spelled exactly as Graph spells one of `allowed`.
fn enum_value(key: &str, value: &Value, allowed: &[&str]) -> Result<String, GraphError> {
    match value.as_str() {
        Some(s) if allowed.contains(&s) => Ok(s.to_string()),
        _ => Err(bad_request(format!(
            "Invalid value {value} for property '{key}': expected one of {}.",
            allowed.join(", ")
        ))),
    }
}

/// A nullable string property of a PATCH body.
fn text_value(key: &str, value: &Value) -> Result<Value, GraphError> {
    match value {
        Value::Null | Value::String(_) => Ok(value.clone()),
        _ => Err(bad_request(format!(
            "Invalid value {value} for property '{key}': expected a string."
        ))),
    }
}

/// Checks a PATCH body and answers the changes to apply.
fn changes(
    body: Map<String, Value>,
    statuses: &[&str],
    incident: bool,
) -> Result<Vec<(String, Value)>, GraphError> {
    let mut out = Vec::new();
    for (key, value) in body {
        let v = match key.as_str() {
            "@odata.type" => continue,
            "status" => json!(enum_value(&key, &value, statuses)?),
            "classification" => json!(enum_value(&key, &value, CLASSIFICATIONS)?),
            "determination" => json!(enum_value(&key, &value, DETERMINATIONS)?),
            "assignedTo" => text_value(&key, &value)?,
            "description" if incident => text_value(&key, &value)?,
            "customTags" if incident => match &value {
                Value::Array(tags) if tags.iter().all(Value::is_string) => value.clone(),
                _ => {
                    return Err(bad_request(format!(
                        "Invalid value {value} for property 'customTags': expected an array of strings."
                    )));
                }
            },
            _ => {
                return Err(bad_request(format!(
                    "Property '{key}' does not exist or cannot be updated."
                )));
            }
        };
        out.push((key, v));
    }
    Ok(out)
}

async fn patch_alert(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, GraphError> {
    let changes = changes(body_object(body)?, ALERT_STATUSES, false)?;
    let now = Clock::format_ms(sim.clock.now_ms());
    let alert = with_tenant(&sim, &claims, |t, _| {
        let alert = t.alert_mut(&id)?;
        for (k, v) in changes {
            if k == "status" {
                let resolved = if v == "resolved" {
                    json!(now)
                } else {
                    Value::Null
                };
                alert.insert("resolvedDateTime".into(), resolved);
            }
            alert.insert(k, v);
        }
        alert.insert("lastUpdateDateTime".into(), json!(now));
        Some(alert.clone())
    });
    match alert {
        Some(a) => Ok(entity(&headers, "security/alerts_v2", a)),
        None => Err(not_found("Alert", &id)),
    }
}

/// The comment of a comments POST body.
fn comment_text(body: &Map<String, Value>) -> Result<String, GraphError> {
    if let Some(t) = body.get("@odata.type")
        && !t.as_str().is_some_and(|t| {
            t.trim_start_matches('#')
                .eq_ignore_ascii_case("microsoft.graph.security.alertComment")
        })
    {
        return Err(bad_request(format!(
            "Invalid @odata.type {t}: expected microsoft.graph.security.alertComment."
        )));
    }
    match body.get("comment").and_then(Value::as_str) {
        Some(c) if !c.trim().is_empty() => Ok(c.to_string()),
        _ => Err(bad_request("The property 'comment' is required.")),
    }
}

/// Appends a comment to `record` and answers the comments list.
fn add_comment(record: &mut Map<String, Value>, comment: Value, now: &str) -> Value {
    let comments = record
        .entry("comments")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !comments.is_array() {
        *comments = Value::Array(Vec::new());
    }
    if let Value::Array(list) = comments {
        list.push(comment);
    }
    let list = comments.clone();
    record.insert("lastUpdateDateTime".into(), json!(now));
    list
}

async fn post_comment(
    sim: Arc<Sim>,
    claims: Claims,
    id: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    incident: bool,
) -> Result<Json<Value>, GraphError> {
    let text = comment_text(&body_object(body)?)?;
    let by = super::requestor(&sim.scenario(), &claims);
    let now = Clock::format_ms(sim.clock.now_ms());
    let comment = json!({
        "@odata.type": "#microsoft.graph.security.alertComment",
        "comment": text,
        "createdByDisplayName": by,
        "createdDateTime": now,
    });
    let list = with_tenant(&sim, &claims, |t, _| {
        let record = if incident {
            t.incident_mut(&id)?
        } else {
            t.alert_mut(&id)?
        };
        Some(add_comment(record, comment, &now))
    });
    match list {
        Some(list) => Ok(Json(json!({
            "@odata.context": context(&headers, "Collection(microsoft.graph.security.alertComment)"),
            "value": list,
        }))),
        None => Err(not_found(if incident { "Incident" } else { "Alert" }, &id)),
    }
}

async fn alert_comment(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, GraphError> {
    post_comment(sim, claims, id, headers, body, false).await
}

async fn incident_comment(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, GraphError> {
    post_comment(sim, claims, id, headers, body, true).await
}

/// An incident as answered, with its alerts embedded when asked.
fn incident_value(t: &TenantGraph, incident: &Map<String, Value>, expand: bool) -> Value {
    let mut i = incident.clone();
    if expand {
        let id = i
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        i.insert("alerts".into(), Value::Array(t.incident_alerts(&id)));
    }
    Value::Object(i)
}

async fn list_incidents(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, GraphError> {
    let q = parse_query(raw.as_deref(), MAX_TOP_INCIDENTS, true)?;
    let (items, page_cap) = with_tenant(&sim, &claims, |t, cap| {
        let items: Vec<Value> = t
            .incidents
            .iter()
            .map(|i| incident_value(t, i, q.expand_alerts))
            .collect();
        (items, cap)
    });
    list_answer(
        items,
        &q,
        &headers,
        INCIDENTS_PATH,
        "security/incidents",
        INCIDENT_FILTERABLE,
        MAX_TOP_INCIDENTS,
        page_cap,
    )
}

async fn get_incident(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, GraphError> {
    let q = parse_query(raw.as_deref(), MAX_TOP_INCIDENTS, true)?;
    let incident = with_tenant(&sim, &claims, |t, _| {
        let i = t.incident_mut(&id)?.clone();
        Some(incident_value(t, &i, q.expand_alerts))
    });
    match incident {
        Some(Value::Object(i)) => Ok(entity(&headers, "security/incidents", i)),
        _ => Err(not_found("Incident", &id)),
    }
}

async fn patch_incident(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, GraphError> {
    let changes = changes(body_object(body)?, INCIDENT_STATUSES, true)?;
    let now = Clock::format_ms(sim.clock.now_ms());
    let incident = with_tenant(&sim, &claims, |t, _| {
        let incident = t.incident_mut(&id)?;
        for (k, v) in changes {
            incident.insert(k, v);
        }
        incident.insert("lastUpdateDateTime".into(), json!(now));
        Some(incident.clone())
    });
    match incident {
        Some(i) => Ok(entity(&headers, "security/incidents", i)),
        None => Err(not_found("Incident", &id)),
    }
}
