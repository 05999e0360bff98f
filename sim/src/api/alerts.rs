//! Alerts: `GET /api/alerts` (OData, `$expand=evidence`), `GET|PATCH /api/alerts/{id}`,
//! `POST /api/alerts/batchUpdate`, `POST /api/alerts/CreateAlertByReference`, the user, files,
//! IP addresses and domains of an alert, and the alerts of a domain, file, IP address, user or
//! machine. Paths arrive lower-cased (see `faults`), so ids compare ignoring case.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::machine_actions::{RequestBody, not_found_machine};
use super::odata::{self, ListQuery, ListSpec};
use crate::alerts;
use crate::error::ApiError;
use crate::jwt::Claims;
use crate::state::{Clock, Sim};

/// Alert properties `$filter` may use (as Defender documents them).
pub const FILTERABLE: &[&str] = &[
    "alertCreationTime",
    "lastUpdateTime",
    "incidentId",
    "investigationId",
    "id",
    "assignedTo",
    "detectionSource",
    "lastEventTime",
    "status",
    "severity",
    "category",
];

/// Most alert ids one batchUpdate takes.
pub const MAX_BATCH: usize = 500;

const STATUSES: &[&str] = &["Unknown", "New", "InProgress", "Resolved"];
const CLASSIFICATIONS: &[&str] = &[
    "Unknown",
    "FalsePositive",
    "TruePositive",
    "InformationalExpectedActivity",
];
const DETERMINATIONS: &[&str] = &[
    "NotAvailable",
    "Apt",
    "Malware",
    "SecurityPersonnel",
    "SecurityTesting",
    "UnwantedSoftware",
    "Other",
    "MultiStagedAttack",
    "MaliciousUserActivity",
    "CompromisedUser",
    "Phishing",
    "LineOfBusinessApplication",
    "ConfirmedActivity",
    "ConfirmedUserActivity",
    "Clean",
    "NotMalicious",
    "InsufficientData",
];
const SEVERITIES: &[&str] = &["Informational", "Low", "Medium", "High"];

/// Routes of the alerts resource.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/alerts", get(list))
        .route("/api/alerts/batchupdate", post(batch_update))
        .route("/api/alerts/createalertbyreference", post(create))
        .route("/api/alerts/{id}", get(get_one).patch(update))
        .route("/api/alerts/{id}/user", get(alert_user))
        .route("/api/alerts/{id}/files", get(alert_files))
        .route("/api/alerts/{id}/ips", get(alert_ips))
        .route("/api/alerts/{id}/domains", get(alert_domains))
        .route("/api/domains/{domain}/alerts", get(domain_alerts))
        .route("/api/files/{sha}/alerts", get(file_alerts))
        .route("/api/ips/{ip}/alerts", get(ip_alerts))
        .route("/api/users/{user}/alerts", get(user_alerts))
        .route("/api/machines/{id}/alerts", get(machine_alerts))
}

fn spec(page_size: usize) -> ListSpec<'static> {
    ListSpec {
        context_fragment: "Alerts",
        entity: "microsoft.windowsDefenderATP.api.PublicAlertV2Dto",
        filterable: FILTERABLE,
        page_size,
    }
}

/// 404 NotFound for an unknown alert.
fn not_found_alert(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Alert {id} was not found"),
    )
}

/// Whether the raw query asks for `$expand=evidence`.
fn expands_evidence(raw: Option<&str>) -> bool {
    raw.is_some_and(|raw| {
        url::form_urlencoded::parse(raw.as_bytes()).any(|(k, v)| {
            k.eq_ignore_ascii_case("$expand")
                && v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("evidence"))
        })
    })
}

/// The alert as answered: without `evidence` unless expanded.
fn shown(alert: &Map<String, Value>, expand: bool) -> Value {
    let mut a = alert.clone();
    if !expand {
        a.remove("evidence");
    }
    Value::Object(a)
}

fn find<'a>(alerts: &'a [Map<String, Value>], id: &str) -> Option<&'a Map<String, Value>> {
    alerts.iter().find(|a| {
        a.get("id")
            .and_then(Value::as_str)
            .is_some_and(|x| x.eq_ignore_ascii_case(id))
    })
}

/// An OData list of the alerts `keep` selects.
fn alert_list(
    sim: &Sim,
    headers: &HeaderMap,
    uri: &Uri,
    query: &ListQuery,
    keep: impl Fn(&Map<String, Value>) -> bool,
) -> Result<Json<Value>, ApiError> {
    let expand = expands_evidence(uri.query());
    let (items, page_size) = {
        let w = sim.world();
        let items: Vec<Value> = w
            .alerts
            .iter()
            .filter(|a| keep(a))
            .map(|a| shown(a, expand))
            .collect();
        (items, w.scenario.default_page_size)
    };
    odata::list_response(items, query, headers, uri.path(), &spec(page_size))
}

async fn list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    alert_list(&sim, &headers, &uri, &query, |_| true)
}

async fn domain_alerts(
    State(sim): State<Arc<Sim>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    alert_list(&sim, &headers, &uri, &query, |a| {
        alerts::has_domain(a, &domain)
    })
}

async fn file_alerts(
    State(sim): State<Arc<Sim>>,
    Path(sha): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let hex = sha.chars().all(|c| c.is_ascii_hexdigit());
    if !hex || !(sha.len() == 40 || sha.len() == 64) {
        return Err(ApiError::bad_request(
            "InvalidHashValue",
            format!("{sha} is not a valid SHA1 or SHA256"),
        ));
    }
    alert_list(&sim, &headers, &uri, &query, |a| alerts::has_file(a, &sha))
}

async fn ip_alerts(
    State(sim): State<Arc<Sim>>,
    Path(ip): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(ApiError::bad_request(
            "InvalidIpAddress",
            format!("{ip} is not a valid IP address"),
        ));
    }
    alert_list(&sim, &headers, &uri, &query, |a| alerts::has_ip(a, &ip))
}

async fn user_alerts(
    State(sim): State<Arc<Sim>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    alert_list(&sim, &headers, &uri, &query, |a| alerts::has_user(a, &user))
}

async fn machine_alerts(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    if sim.world().scenario.machine(&id).is_none() {
        return Err(not_found_machine(&id));
    }
    alert_list(&sim, &headers, &uri, &query, |a| alerts::on_machine(a, &id))
}

/// The alert answer: the alert with `@odata.context` `...#Alerts/$entity`.
fn entity(headers: &HeaderMap, alert: Value) -> Json<Value> {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(super::odata_context(headers, "Alerts/$entity")),
    );
    if let Value::Object(a) = alert {
        body.extend(a);
    }
    Json(Value::Object(body))
}

async fn get_one(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let expand = expands_evidence(raw.as_deref());
    let alert = find(&sim.world().alerts, &id).map(|a| shown(a, expand));
    match alert {
        Some(a) => Ok(entity(&headers, a)),
        None => Err(not_found_alert(&id)),
    }
}

/// A listed value (any letter case) in Defender's spelling; 400 naming `key` otherwise.
fn listed(key: &str, value: &str, allowed: &[&'static str]) -> Result<&'static str, ApiError> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value.trim()))
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidRequestBody",
                format!(
                    "{key} '{value}' is not valid: expected one of {}",
                    allowed.join(", ")
                ),
            )
        })
}

/// The checked changes of an update body (PATCH or batchUpdate).
struct Changes {
    status: Option<&'static str>,
    assigned_to: Option<String>,
    classification: Option<&'static str>,
    determination: Option<&'static str>,
    comment: Option<String>,
}

impl Changes {
    fn read(body: &RequestBody) -> Result<Changes, ApiError> {
        let status = body
            .optional_str("status")?
            .map(|v| listed("status", v, STATUSES))
            .transpose()?;
        let classification = body
            .optional_str("classification")?
            .map(|v| listed("classification", v, CLASSIFICATIONS))
            .transpose()?;
        let determination = body
            .optional_str("determination")?
            .map(|v| listed("determination", v, DETERMINATIONS))
            .transpose()?;
        let assigned_to = body.optional_str("assignedTo")?.map(str::to_string);
        let comment = body.optional_str("comment")?.map(str::to_string);
        let changes = Changes {
            status,
            assigned_to,
            classification,
            determination,
            comment,
        };
        if changes.status.is_none()
            && changes.assigned_to.is_none()
            && changes.classification.is_none()
            && changes.determination.is_none()
            && changes.comment.is_none()
        {
            return Err(ApiError::bad_request(
                "InvalidRequestBody",
                "The request body must set at least one of status, assignedTo, classification, \
                 determination, comment",
            ));
        }
        Ok(changes)
    }

    fn apply(&self, alert: &mut Map<String, Value>, by: &str, now_ms: i64) {
        let now = Clock::format_ms(now_ms);
        if let Some(s) = self.status {
            alert.insert("status".into(), json!(s));
            let resolved = if s == "Resolved" {
                json!(now)
            } else {
                Value::Null
            };
            alert.insert("resolvedTime".into(), resolved);
        }
        if let Some(a) = &self.assigned_to {
            alert.insert("assignedTo".into(), json!(a));
        }
        if let Some(c) = self.classification {
            alert.insert("classification".into(), json!(c));
        }
        if let Some(d) = self.determination {
            alert.insert("determination".into(), json!(d));
        }
        if let Some(c) = &self.comment {
            let entry = json!({"comment": c, "createdBy": by, "createdTime": now});
            match alert.get_mut("comments") {
                Some(Value::Array(list)) => list.push(entry),
                _ => {
                    alert.insert("comments".into(), json!([entry]));
                }
            }
        }
        alert.insert("lastUpdateTime".into(), json!(now));
    }
}

async fn update(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let changes = Changes::read(&body)?;
    let now = sim.clock.now_ms();
    let mut w = sim.world();
    let by = super::requestor(&w.scenario, &claims);
    let Some(alert) = w.alerts.iter_mut().find(|a| {
        a.get("id")
            .and_then(Value::as_str)
            .is_some_and(|x| x.eq_ignore_ascii_case(&id))
    }) else {
        return Err(not_found_alert(&id));
    };
    changes.apply(alert, &by, now);
    let answer = shown(alert, false);
    Ok(entity(&headers, answer))
}

async fn batch_update(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = RequestBody::from_extracted(body)?;
    let ids: Vec<String> = match raw.value("alertIds") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request("InvalidRequestBody", "alertIds must hold strings")
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::bad_request(
                "MissingRequiredParameter",
                "alertIds is required: a non-empty list of alert ids",
            ));
        }
    };
    if ids.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "MaximumBatchSizeExceeded",
            format!(
                "{} alert ids given; at most {MAX_BATCH} per request",
                ids.len()
            ),
        ));
    }
    let changes = Changes::read(&raw)?;
    let now = sim.clock.now_ms();
    let mut w = sim.world();
    let unknown: Vec<&String> = ids
        .iter()
        .filter(|id| find(&w.alerts, id).is_none())
        .collect();
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(5).map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "{} alert(s) were not found: {}",
                unknown.len(),
                shown.join(", ")
            ),
        ));
    }
    let by = super::requestor(&w.scenario, &claims);
    for alert in w.alerts.iter_mut() {
        let hit = alert
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|x| ids.iter().any(|id| id.eq_ignore_ascii_case(x)));
        if hit {
            changes.apply(alert, &by, now);
        }
    }
    Ok(StatusCode::OK.into_response())
}

async fn create(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let machine_id = body.required_str("machineId")?.to_string();
    let severity = listed("severity", body.required_str("severity")?, SEVERITIES)?;
    let title = body.required_str("title")?.to_string();
    let description = body.required_str("description")?.to_string();
    let recommended = body.required_str("recommendedAction")?.to_string();
    let event_time = body.required_str("eventTime")?.to_string();
    let report_id = body.required_str("reportId")?.to_string();
    let category = body.required_str("category")?.to_string();
    if time::OffsetDateTime::parse(&event_time, &time::format_description::well_known::Rfc3339)
        .is_err()
    {
        return Err(ApiError::bad_request(
            "InvalidRequestBody",
            format!("eventTime '{event_time}' is not a valid date-time"),
        ));
    }
    let now = sim.clock.now_ms();
    let mut w = sim.world();
    let Some(machine) = w.scenario.machine(&machine_id).cloned() else {
        return Err(not_found_machine(&machine_id));
    };
    let tenant = w
        .scenario
        .first_tenant()
        .map(|t| t.id.clone())
        .unwrap_or_default();
    let seq = w.alerts.len() as u64 + 1;
    let id = format!(
        "da{}_{}",
        637_000_000_000_000_000u64 + (now.max(0) as u64) * 10_000,
        -(seq as i64)
    );
    let stamp = Clock::format_ms(now);
    let alert = json!({
        "id": id, "incidentId": null, "investigationId": null, "assignedTo": null,
        "severity": severity, "status": "New", "classification": null, "determination": null,
        "investigationState": "Queued", "detectionSource": "CustomDetection",
        "detectorId": null, "category": category, "threatFamilyName": null,
        "title": title, "description": description, "recommendedAction": recommended,
        "alertCreationTime": stamp, "firstEventTime": event_time, "lastEventTime": event_time,
        "lastUpdateTime": stamp, "resolvedTime": null,
        "machineId": machine.get("id"), "computerDnsName": machine.get("computerDnsName"),
        "rbacGroupName": machine.get("rbacGroupName"), "aadTenantId": tenant,
        "threatName": null, "mitreTechniques": [], "relatedUser": null,
        "reportId": report_id, "comments": [], "evidence": [],
    });
    if let Value::Object(map) = &alert {
        w.alerts.insert(0, map.clone());
    }
    let mut answer = alert;
    if let Value::Object(a) = &mut answer {
        a.remove("evidence");
    }
    Ok(entity(&headers, answer))
}

/// The alert `id` or 404.
fn alert_of(sim: &Sim, id: &str) -> Result<Map<String, Value>, ApiError> {
    find(&sim.world().alerts, id)
        .cloned()
        .ok_or_else(|| not_found_alert(id))
}

async fn alert_user(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let alert = alert_of(&sim, &id)?;
    match alerts::user(&alert) {
        Some(user) => {
            let mut body = Map::new();
            body.insert(
                "@odata.context".into(),
                json!(super::odata_context(&headers, "Users/$entity")),
            );
            if let Value::Object(u) = user {
                body.extend(u);
            }
            Ok(Json(Value::Object(body)).into_response())
        }
        None => Err(ApiError::not_found(format!("Alert {id} has no user"))),
    }
}

fn related_list(
    items: Vec<Value>,
    query: &ListQuery,
    headers: &HeaderMap,
    uri: &Uri,
    fragment: &'static str,
    page_size: usize,
) -> Result<Json<Value>, ApiError> {
    let spec = ListSpec {
        context_fragment: fragment,
        entity: fragment,
        filterable: &[],
        page_size,
    };
    odata::list_response(items, query, headers, uri.path(), &spec)
}

async fn alert_files(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let alert = alert_of(&sim, &id)?;
    let page = sim.world().scenario.default_page_size;
    related_list(alerts::files(&alert), &query, &headers, &uri, "Files", page)
}

async fn alert_ips(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let alert = alert_of(&sim, &id)?;
    let page = sim.world().scenario.default_page_size;
    related_list(alerts::ips(&alert), &query, &headers, &uri, "Ips", page)
}

async fn alert_domains(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let alert = alert_of(&sim, &id)?;
    let page = sim.world().scenario.default_page_size;
    related_list(
        alerts::domains(&alert),
        &query,
        &headers,
        &uri,
        "Domains",
        page,
    )
}
