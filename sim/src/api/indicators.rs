//! Custom indicators (threat intelligence): `GET /api/indicators` (OData), `GET|DELETE
//! /api/indicators/{id}`, `POST /api/indicators` (upsert by type and value),
//! `POST /api/indicators/import` (up to 500, one result per indicator) and
//! `POST /api/indicators/BatchDelete` (up to 500 ids). Paths arrive lower-cased (see `faults`).
//!
//! An app holding `Ti.ReadWrite.All` sees every indicator; one holding only `Ti.ReadWrite`
//! sees (and deletes) only those it created. A new indicator is refused once the tenant holds
//! `max_active_indicators` unexpired ones (Defender: 15,000).

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::machine_actions::RequestBody;
use super::odata::{self, ListQuery, ListSpec};
use crate::error::ApiError;
use crate::jwt::Claims;
use crate::scenario::Scenario;
use crate::state::{Clock, Sim, World};

/// Indicator properties `$filter` may use (as Defender documents them).
pub const FILTERABLE: &[&str] = &[
    "application",
    "createdByDisplayName",
    "expirationTime",
    "generateAlert",
    "title",
    "rbacGroupNames",
    "rbacGroupIds",
    "indicatorValue",
    "indicatorType",
    "creationTimeDateTimeUtc",
    "createdBy",
    "action",
    "severity",
    "id",
];

/// Indicator types.
pub const TYPES: &[&str] = &[
    "FileSha1",
    "FileSha256",
    "FileMd5",
    "CertificateThumbprint",
    "IpAddress",
    "DomainName",
    "Url",
];

/// Indicator actions (Alert and AlertAndBlock are the legacy ones).
pub const ACTIONS: &[&str] = &[
    "Allowed",
    "Audit",
    "Block",
    "BlockAndRemediate",
    "Warn",
    "Alert",
    "AlertAndBlock",
];

/// Indicator severities.
pub const SEVERITIES: &[&str] = &["Informational", "Low", "Medium", "High"];

/// Most indicators one import, and most ids one BatchDelete, takes.
pub const MAX_BATCH: usize = 500;

/// The role that sees every app's indicators.
const ALL_ROLE: &str = "Ti.ReadWrite.All";

/// Routes of the indicators resource.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/indicators", get(list).post(submit))
        .route("/api/indicators/import", post(import))
        .route("/api/indicators/batchdelete", post(batch_delete))
        .route("/api/indicators/{id}", get(get_one).delete(delete_one))
}

/// The scenario's indicators (each with a string id) and the id the next created one gets.
pub fn load(scenario: &Scenario) -> (Vec<Map<String, Value>>, u64) {
    let mut next = 1u64;
    let indicators = scenario
        .indicators
        .iter()
        .map(|i| {
            let mut i = i.clone();
            let id = match i.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            if let Ok(n) = id.parse::<u64>() {
                next = next.max(n + 1);
            }
            i.insert("id".into(), json!(id));
            i
        })
        .collect();
    (indicators, next)
}

/// Who calls: the app, its display name, and whether it sees every app's indicators.
struct Caller {
    client_id: String,
    name: String,
    sees_all: bool,
}

impl Caller {
    fn of(w: &World, claims: &Claims) -> Caller {
        Caller {
            client_id: claims.client_id().to_string(),
            name: super::requestor(&w.scenario, claims),
            sees_all: claims.has_permission(ALL_ROLE),
        }
    }

    fn sees(&self, indicator: &Map<String, Value>) -> bool {
        self.sees_all
            || indicator
                .get("createdBy")
                .and_then(Value::as_str)
                .is_some_and(|c| c.eq_ignore_ascii_case(&self.client_id))
    }
}

fn spec(page_size: usize) -> ListSpec<'static> {
    ListSpec {
        context_fragment: "Indicators",
        entity: "microsoft.windowsDefenderATP.api.PublicIndicator",
        filterable: FILTERABLE,
        page_size,
    }
}

fn not_found_indicator(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Indicator {id} was not found"),
    )
}

fn id_of(i: &Map<String, Value>) -> &str {
    i.get("id").and_then(Value::as_str).unwrap_or_default()
}

async fn list(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let (items, page_size) = {
        let w = sim.world();
        let caller = Caller::of(&w, &claims);
        let items: Vec<Value> = w
            .indicators
            .iter()
            .filter(|i| caller.sees(i))
            .map(|i| Value::Object(i.clone()))
            .collect();
        (items, w.scenario.default_page_size)
    };
    odata::list_response(items, &query, &headers, uri.path(), &spec(page_size))
}

/// The indicator answer with `@odata.context` `...#Indicators/$entity`.
fn entity(headers: &HeaderMap, indicator: &Map<String, Value>) -> Json<Value> {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(super::odata_context(headers, "Indicators/$entity")),
    );
    body.extend(indicator.clone());
    Json(Value::Object(body))
}

async fn get_one(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let w = sim.world();
    let caller = Caller::of(&w, &claims);
    w.indicators
        .iter()
        .find(|i| id_of(i) == id && caller.sees(i))
        .map(|i| entity(&headers, i))
        .ok_or_else(|| not_found_indicator(&id))
}

/// A listed value (any letter case) in Defender's spelling.
fn listed(key: &str, value: &str, allowed: &[&'static str]) -> Result<&'static str, String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value.trim()))
        .copied()
        .ok_or_else(|| {
            format!(
                "{key} '{value}' is not valid: expected one of {}",
                allowed.join(", ")
            )
        })
}

/// A field of an indicator body, looked up ignoring the case of its first letter (Defender
/// takes both `indicatorValue` and `IndicatorValue`).
fn field<'a>(item: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    item.get(key)
        .or_else(|| {
            let mut c = key.chars();
            let upper: String = c
                .next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default();
            item.get(&upper)
        })
        .filter(|v| !v.is_null())
}

fn text<'a>(item: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match field(item, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn required<'a>(item: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match text(item, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(format!("{key} is required")),
    }
}

/// The checked fields of a submitted indicator.
struct Submitted {
    value: String,
    kind: &'static str,
    fields: Map<String, Value>,
}

fn check(item: &Map<String, Value>) -> Result<Submitted, String> {
    let value = required(item, "indicatorValue")?.trim().to_string();
    let kind = listed("indicatorType", required(item, "indicatorType")?, TYPES)?;
    let action = listed("action", required(item, "action")?, ACTIONS)?;
    let title = required(item, "title")?;
    let description = required(item, "description")?;
    let severity = text(item, "severity")?
        .map(|s| listed("severity", s, SEVERITIES))
        .transpose()?;
    let generate_alert = match field(item, "generateAlert") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("generateAlert must be a boolean".into()),
    };
    if action == "Audit" && !generate_alert {
        return Err("generateAlert must be true when action is Audit".into());
    }
    let expiration = text(item, "expirationTime")?;
    if let Some(e) = expiration
        && OffsetDateTime::parse(e, &Rfc3339).is_err()
    {
        return Err(format!("expirationTime '{e}' is not a valid date-time"));
    }
    let rbac = match field(item, "rbacGroupNames") {
        None => json!([]),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Value::Array(a.clone()),
        Some(_) => return Err("rbacGroupNames must be a list of strings".into()),
    };
    let mut fields = Map::new();
    fields.insert("indicatorValue".into(), json!(value));
    fields.insert("indicatorType".into(), json!(kind));
    fields.insert("action".into(), json!(action));
    fields.insert("title".into(), json!(title));
    fields.insert("description".into(), json!(description));
    fields.insert(
        "severity".into(),
        json!(severity.unwrap_or("Informational")),
    );
    fields.insert("generateAlert".into(), json!(generate_alert));
    fields.insert("expirationTime".into(), json!(expiration));
    fields.insert(
        "application".into(),
        json!(text(item, "application")?.unwrap_or_default()),
    );
    fields.insert(
        "recommendedActions".into(),
        json!(text(item, "recommendedActions")?.unwrap_or_default()),
    );
    fields.insert("rbacGroupNames".into(), rbac);
    Ok(Submitted {
        value,
        kind,
        fields,
    })
}

/// Whether an indicator is active at `now_ms`: no expiration, or one later than now.
fn active(indicator: &Map<String, Value>, now_ms: i64) -> bool {
    match indicator.get("expirationTime").and_then(Value::as_str) {
        None => true,
        Some(e) => OffsetDateTime::parse(e, &Rfc3339)
            .map(|t| t.unix_timestamp_nanos() / 1_000_000 > i128::from(now_ms))
            .unwrap_or(true),
    }
}

/// Why a submission was refused, as Defender answers it.
enum Refusal {
    Invalid(String),
    Limit(usize),
}

impl Refusal {
    fn message(&self) -> String {
        match self {
            Refusal::Invalid(m) => m.clone(),
            Refusal::Limit(max) => format!(
                "The tenant has reached the maximum number of active indicators ({max}); \
                 indicator count exceeded the limit"
            ),
        }
    }

    fn into_error(self) -> ApiError {
        match &self {
            Refusal::Invalid(_) => ApiError::bad_request("InvalidRequestBody", self.message()),
            Refusal::Limit(_) => ApiError::bad_request("MaxCapacityExceeded", self.message()),
        }
    }
}

/// Creates or updates (same type and value) an indicator; returns it.
fn upsert(
    w: &mut World,
    caller: &Caller,
    item: &Map<String, Value>,
    now_ms: i64,
) -> Result<Map<String, Value>, Refusal> {
    let s = check(item).map_err(Refusal::Invalid)?;
    let now = Clock::format_ms(now_ms);
    let existing = w.indicators.iter_mut().find(|i| {
        i.get("indicatorType").and_then(Value::as_str) == Some(s.kind)
            && i.get("indicatorValue")
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(&s.value))
    });
    if let Some(found) = existing {
        found.extend(s.fields);
        found.insert("lastUpdateTime".into(), json!(now));
        found.insert("lastUpdatedBy".into(), json!(caller.name));
        return Ok(found.clone());
    }
    let max = w.scenario.max_active_indicators;
    let held = w.indicators.iter().filter(|i| active(i, now_ms)).count();
    if held >= max {
        return Err(Refusal::Limit(max));
    }
    let id = w.next_indicator_id;
    w.next_indicator_id += 1;
    let mut indicator = Map::new();
    indicator.insert("id".into(), json!(id.to_string()));
    indicator.extend(s.fields);
    indicator.insert("source".into(), json!(caller.name));
    indicator.insert("sourceType".into(), json!("AadApp"));
    indicator.insert("createdBy".into(), json!(caller.client_id));
    indicator.insert("createdByDisplayName".into(), json!(caller.name));
    indicator.insert("createdBySource".into(), json!("PublicApi"));
    indicator.insert("creationTimeDateTimeUtc".into(), json!(now));
    indicator.insert("lastUpdateTime".into(), json!(now));
    indicator.insert("lastUpdatedBy".into(), json!(caller.name));
    indicator.insert("rbacGroupIds".into(), json!([]));
    indicator.insert("mitreTechniques".into(), json!([]));
    w.indicators.push(indicator.clone());
    Ok(indicator)
}

async fn submit(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let item = body.into_map();
    let now = sim.clock.now_ms();
    let mut w = sim.world();
    let caller = Caller::of(&w, &claims);
    let indicator = upsert(&mut w, &caller, &item, now).map_err(Refusal::into_error)?;
    Ok(entity(&headers, &indicator))
}

/// A list field of a body (`Indicators` or `indicators`): 400 when absent, not a list or
/// longer than [`MAX_BATCH`].
fn batch<'a>(body: &'a RequestBody, key: &str) -> Result<&'a Vec<Value>, ApiError> {
    let mut c = key.chars();
    let camel: String = c
        .next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default();
    match body.value(key).or_else(|| body.value(&camel)) {
        Some(Value::Array(list)) if list.len() > MAX_BATCH => Err(ApiError::bad_request(
            "MaximumBatchSizeExceeded",
            format!(
                "{} items given in {key}; at most {MAX_BATCH} per request",
                list.len()
            ),
        )),
        Some(Value::Array(list)) if !list.is_empty() => Ok(list),
        _ => Err(ApiError::bad_request(
            "MissingRequiredParameter",
            format!("{key} is required: a non-empty list"),
        )),
    }
}

async fn import(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let items = batch(&body, "Indicators")?;
    let now = sim.clock.now_ms();
    let mut w = sim.world();
    let caller = Caller::of(&w, &claims);
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let value = item
            .get("indicatorValue")
            .or_else(|| item.get("IndicatorValue"))
            .cloned()
            .unwrap_or(Value::Null);
        let outcome = match item.as_object() {
            Some(map) => upsert(&mut w, &caller, map, now),
            None => Err(Refusal::Invalid("an indicator must be an object".into())),
        };
        results.push(match outcome {
            Ok(i) => json!({
                "id": i.get("id").cloned().unwrap_or(Value::Null),
                "indicator": value,
                "isFailed": false,
                "failureReason": null,
            }),
            Err(r) => json!({
                "id": null,
                "indicator": value,
                "isFailed": true,
                "failureReason": r.message(),
            }),
        });
    }
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "Collection(microsoft.windowsDefenderATP.api.ImportIndicatorResult)"),
        "value": results,
    })))
}

async fn batch_delete(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let ids: Vec<String> = batch(&body, "IndicatorIds")?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(ApiError::bad_request(
                "InvalidRequestBody",
                "IndicatorIds must hold indicator ids",
            )),
        })
        .collect::<Result<_, _>>()?;
    let mut w = sim.world();
    let caller = Caller::of(&w, &claims);
    w.indicators
        .retain(|i| !(ids.iter().any(|id| id == id_of(i)) && caller.sees(i)));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_one(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut w = sim.world();
    let caller = Caller::of(&w, &claims);
    let Some(at) = w
        .indicators
        .iter()
        .position(|i| id_of(i) == id && caller.sees(i))
    else {
        return Err(not_found_indicator(&id));
    };
    w.indicators.remove(at);
    Ok(StatusCode::NO_CONTENT.into_response())
}
