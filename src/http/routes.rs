//! Route handlers. Every answer of an action route is an envelope, rejections included.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::actions::{self, Invocation, definitions};
use crate::app::App;
use crate::envelope::{ActionError, Envelope, EnvelopeResponse};

/// Body of `POST /assets/{asset}/actions/{action}`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// Action parameters (see the action's definition in /manifest.json).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

/// One entry of `GET /actions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActionSummary {
    /// Action id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// test | investigate | contain | correct | generic.
    #[serde(rename = "type")]
    pub action_type: String,
    /// One-line description.
    pub description: String,
    /// Whether it changes nothing upstream.
    pub read_only: bool,
}

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// The answer of `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: &'static str,
    /// Number of configured assets (when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assets: Option<usize>,
    /// Why the host is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// What works in a reduced way while the host stays ready: request budgets kept in Redis
    /// that this host enforces on its own share because Redis could not be reached at the
    /// last permit. Absent when nothing is degraded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<DegradedPart>,
}

/// One part of the host working in a reduced way (`GET /readyz`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DegradedPart {
    /// What is degraded: `request_budget`.
    pub component: &'static str,
    /// The tenant of the app registration whose budget it is.
    pub tenant_id: String,
    /// The app registration's client id.
    pub client_id: String,
    /// The assets using that registration.
    pub assets: Vec<String>,
    /// What happens meanwhile, in words.
    pub detail: String,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: configuration loaded, the state directory a writable directory and its file
/// system not full. Nothing is written: the check reads permissions and free space only. A
/// ready host lists under `degraded` the request budgets it enforces on its own share while
/// Redis cannot be reached (still 200).
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready: the configuration is loaded and the state directory is writable; `degraded` names request budgets enforced locally while Redis is lost", body = Readiness),
    (status = 503, description = "Not ready: the state directory is not writable or its file system is full", body = Readiness)))]
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    match state_dir_ready(&app.config.server.state_dir) {
        Ok(()) => Json(Readiness {
            status: "ready",
            assets: Some(app.assets.len()),
            reason: None,
            degraded: degraded_parts(&app),
        })
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "not ready",
                assets: None,
                reason: Some(reason),
                degraded: degraded_parts(&app),
            }),
        )
            .into_response(),
    }
}

/// The request budgets this host enforces on its own share while Redis is lost (in-memory
/// flags only: nothing is sent or written).
fn degraded_parts(app: &App) -> Vec<DegradedPart> {
    app.budgets
        .degraded()
        .into_iter()
        .map(|d| DegradedPart {
            component: "request_budget",
            detail: format!(
                "Redis cannot be reached: the request budget shared by every host is enforced on this host alone, at {}% of each limit",
                d.share_percent
            ),
            tenant_id: d.tenant_id,
            client_id: d.client_id,
            assets: d.assets,
        })
        .collect()
}

/// Free space below which the state directory is not ready (token and state writes).
const READY_MIN_FREE: u64 = 1 << 20;

/// Whether `dir` is a directory this process may create files in, on a file system with room.
/// Reads metadata, permissions and free space; creates, opens and follows nothing.
pub fn state_dir_ready(dir: &std::path::Path) -> Result<(), &'static str> {
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err("state directory is not a directory"),
        // Not created yet: the parent must then be writable (it is created on first write).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            return writable(parent);
        }
        Err(_) => return Err("state directory is not readable"),
    }
    writable(dir)?;
    match crate::vault::free_bytes(dir) {
        Some(free) if free < READY_MIN_FREE => Err("state directory's file system is full"),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn writable(dir: &std::path::Path) -> Result<(), &'static str> {
    use rustix::fs::Access;
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK)
        .map_err(|_| "state directory is not writable")
}

#[cfg(not(unix))]
fn writable(dir: &std::path::Path) -> Result<(), &'static str> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() && !m.permissions().readonly() => Ok(()),
        _ => Err("state directory is not writable"),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", security(("api_key" = [])),
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong API key", body = Envelope)))]
pub async fn metrics() -> Response {
    let body = crate::telemetry::metrics()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The app manifest (generated from the action definitions).
#[utoipa::path(get, path = "/manifest.json", security(("api_key" = [])),
    responses(
        (status = 200, description = "The manifest: app metadata, asset configuration and every action", body = Object),
        (status = 401, description = "Missing or wrong API key", body = Envelope)))]
pub async fn manifest() -> Json<Value> {
    Json(actions::manifest::manifest())
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", security(("api_key" = [])),
    responses(
        (status = 200, description = "This OpenAPI document", body = Object),
        (status = 401, description = "Missing or wrong API key", body = Envelope)))]
pub async fn openapi() -> Json<Value> {
    Json(super::openapi::spec())
}

/// Action ids, names and types.
#[utoipa::path(get, path = "/actions", security(("api_key" = [])),
    responses(
        (status = 200, description = "Actions", body = Vec<ActionSummary>),
        (status = 401, description = "Missing or wrong API key", body = Envelope)))]
pub async fn list_actions() -> Json<Vec<ActionSummary>> {
    Json(
        definitions()
            .iter()
            .map(|d| ActionSummary {
                id: d.id.clone(),
                name: d.name.clone(),
                action_type: d.action_type.clone(),
                description: d.description.clone(),
                read_only: d.read_only,
            })
            .collect(),
    )
}

/// Runs an action against an asset. The OpenAPI document describes this route as one path
/// per action (see `openapi::spec`).
pub async fn run_action(
    State(app): State<Arc<App>>,
    Path((asset, action)): Path<(String, String)>,
    caller: Option<axum::Extension<super::api_key::Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> EnvelopeResponse {
    let reject = |e: ActionError| EnvelopeResponse::error(&action, &asset, Map::new(), &e);
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let mut r = reject(ActionError::InvalidParameter(format!(
                "request body larger than server.body_limit_bytes ({} bytes)",
                app.config.server.body_limit_bytes
            )));
            r.status = StatusCode::PAYLOAD_TOO_LARGE;
            return r;
        }
        Err(e) => {
            return reject(ActionError::InvalidParameter(format!(
                "request body could not be read: {}",
                e.body_text()
            )));
        }
    };
    let parameters = match parse_body(&body) {
        Ok(p) => p,
        Err(msg) => return reject(ActionError::InvalidParameter(msg)),
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k)
                if !k.is_empty()
                    && k.len() <= 255
                    && k.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
            {
                Some(k.to_string())
            }
            _ => {
                return reject(ActionError::InvalidParameter(
                    "header 'Idempotency-Key': must be 1 to 255 visible ASCII characters".into(),
                ));
            }
        },
    };
    // State-changing actions are audited: refused before running when the trail cannot be
    // written, recorded (fsynced) before the answer is sent.
    let audited = actions::definition::resolve(&action).is_some_and(|(d, _)| !d.read_only)
        && app.assets.contains_key(&asset);
    let audit_record = audited.then(|| crate::audit::AuditRecord {
        key: caller
            .as_ref()
            .map_or_else(|| "-".to_string(), |c| c.key.clone()),
        addr: caller
            .as_ref()
            .map_or_else(|| "-".to_string(), |c| c.addr_text()),
        request_id: request_id(&headers),
        asset: asset.clone(),
        action: action.clone(),
        parameters: parameters.clone(),
        event_id: None,
        outcome: None,
    });
    if audited && let Err(e) = app.audit.check_writable().await {
        tracing::error!(error = %e, "audit trail not writable; state-changing action refused");
        return reject(ActionError::Internal(
            "the audit trail cannot be written (logged); the action was not run".into(),
        ));
    }
    let timeout = Duration::from_secs(app.config.server.request_timeout_secs);
    let invocation = Invocation {
        asset_id: &asset,
        action_id: &action,
        parameters,
        idempotency_key,
        progress: None,
    };
    let mut resp =
        match tokio::time::timeout(timeout, actions::invoke(app.clone(), invocation)).await {
            Ok(resp) => resp,
            Err(_) => reject(ActionError::Upstream(format!(
                "the action did not finish within server.request_timeout_secs ({} s)",
                timeout.as_secs()
            ))),
        };
    if let Some(mut record) = audit_record {
        record.event_id = resp
            .envelope
            .summary
            .get("event_id")
            .or_else(|| resp.envelope.summary.get("action_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        record.outcome = Some(crate::audit::AuditOutcome {
            status: resp.status.as_u16(),
            message: resp.envelope.message.clone(),
        });
        if let Err(e) = app.audit.append(record).await {
            tracing::error!(error = %e, "audit line not written after a state-changing action");
            resp.envelope.message.push_str(
                " [warning: the action ran but its audit line could not be written (logged)]",
            );
        }
    }
    resp
}

/// The request's `X-Request-Id` (set by the request id layer), `-` when absent.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "-".to_string(), |s| actions::truncate(s, 128))
}

/// Parses `{"parameters": {...}}`; an empty body means no parameters.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("request body must be a JSON object like {\"parameters\": {...}}".into());
    }
    let parsed: InvokeBody = serde_json::from_value(value)
        .map_err(|e| format!("request body must look like {{\"parameters\": {{...}}}}: {e}"))?;
    Ok(parsed.parameters)
}

/// 404 for unknown routes, as an envelope.
pub async fn not_found(uri: axum::http::Uri) -> EnvelopeResponse {
    EnvelopeResponse::error(
        "",
        "",
        Map::new(),
        &ActionError::NotFound(format!(
            "no route {} (see /openapi.json)",
            actions::truncate(uri.path(), 128)
        )),
    )
}

/// 405 for a known route with the wrong method, as an envelope.
pub async fn method_not_allowed() -> Response {
    let mut r = EnvelopeResponse::error(
        "",
        "",
        Map::new(),
        &ActionError::NotFound("method not allowed on this route".into()),
    );
    r.status = StatusCode::METHOD_NOT_ALLOWED;
    r.into_response()
}

/// 500 envelope when a handler panicked (the panic text is logged, not returned).
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = detail, "handler panicked");
    EnvelopeResponse::error(
        "",
        "",
        Map::new(),
        &ActionError::Internal("internal error (logged)".into()),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_parsing() {
        assert!(parse_body(b"").unwrap().is_empty());
        assert_eq!(parse_body(br#"{"parameters":{"a":1}}"#).unwrap().len(), 1);
        assert!(parse_body(b"{nope").unwrap_err().contains("not valid JSON"));
        assert!(parse_body(b"[]").is_err());
        assert!(
            parse_body(br#"{"params":{}}"#)
                .unwrap_err()
                .contains("params")
        );
        assert!(parse_body(br#"{"parameters":[1]}"#).is_err());
    }
}
