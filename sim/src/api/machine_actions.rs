//! Machine response actions (`POST /api/machines/{id}/isolate`, ...) and the machine action
//! resource (`GET /api/machineactions[/{id}]`, `POST .../cancel`, `GET .../getpackageuri`).
//!
//! An action is created in the [`crate::actions::ActionStore`] with the scenario's timings and
//! planned outcome; its status is derived from the simulated clock whenever it is read.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::odata::{self, ListQuery, ListSpec};
use crate::actions::{self, Cancellation, MachineAction, is_final};
use crate::error::ApiError;
use crate::jwt::Claims;
use crate::state::Sim;

/// Machine action properties `$filter` may use.
pub const FILTERABLE: &[&str] = &[
    "id",
    "status",
    "machineId",
    "type",
    "requestor",
    "creationDateTimeUtc",
];

/// Routes of the response actions and the machine action resource.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/machines/{id}/isolate", post(isolate))
        .route("/api/machines/{id}/unisolate", comment_only("Unisolate"))
        .route(
            "/api/machines/{id}/stopandquarantinefile",
            post(stop_and_quarantine),
        )
        .route("/api/machines/{id}/runantivirusscan", post(scan))
        .route(
            "/api/machines/{id}/restrictcodeexecution",
            comment_only("RestrictCodeExecution"),
        )
        .route(
            "/api/machines/{id}/unrestrictcodeexecution",
            comment_only("UnrestrictCodeExecution"),
        )
        .route(
            "/api/machines/{id}/collectinvestigationpackage",
            comment_only("CollectInvestigationPackage"),
        )
        .route("/api/machines/{id}/offboard", comment_only("Offboard"))
        .route("/api/machineactions", get(list))
        .route("/api/machineactions/{id}", get(get_one))
        .route("/api/machineactions/{id}/cancel", post(cancel))
        .route("/api/machineactions/{id}/getpackageuri", get(package_uri))
}

// ---------------------------------------------------------------------------------------------
// Request helpers shared with the machines module

/// The single `{id}` path parameter, with a Defender error body when it cannot be decoded.
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| Id(p.0))
            .map_err(|e| ApiError::bad_request("InvalidInput", e.body_text()))
    }
}

/// A JSON object request body whose keys are matched case-sensitively, as Defender does.
#[derive(Debug, Clone)]
pub struct RequestBody(Map<String, Value>);

impl RequestBody {
    /// Parses the raw body; an empty body counts as `{}`, anything but an object is refused.
    pub fn parse(bytes: &[u8]) -> Result<RequestBody, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(RequestBody(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(RequestBody(map)),
            Ok(_) => Err(ApiError::bad_request(
                "InvalidRequestBody",
                "The request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::bad_request(
                "InvalidRequestBody",
                format!("The request body is not valid JSON: {e}"),
            )),
        }
    }

    /// Parses the body extractor's result (a failed read is a 4xx in Defender's shape).
    pub fn from_extracted(body: Result<Bytes, BytesRejection>) -> Result<RequestBody, ApiError> {
        match body {
            Ok(bytes) => RequestBody::parse(&bytes),
            Err(e) => Err(ApiError::new(
                e.status(),
                "InvalidRequestBody",
                e.body_text(),
            )),
        }
    }

    /// The body's fields.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// A field as given, None when absent.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A string field, None when absent or null; 400 when of another type.
    pub fn optional_str(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad_request(
                "InvalidRequestBody",
                format!("{key} must be a string"),
            )),
        }
    }

    /// A string field that must be present and not blank.
    pub fn required_str(&self, key: &str) -> Result<&str, ApiError> {
        match self.optional_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ApiError::bad_request(
                "InvalidRequestBody",
                format!("{key} is required"),
            )),
        }
    }
}

/// 404 ResourceNotFound for an unknown machine.
pub fn not_found_machine(id: &str) -> ApiError {
    ApiError::not_found(format!("Machine {id} was not found"))
}

fn not_found_action(id: &str) -> ApiError {
    ApiError::not_found(format!("Machine action {id} was not found"))
}

/// A MachineAction answer with `@odata.context` `...#MachineActions/$entity`.
fn action_json(headers: &HeaderMap, action: &MachineAction, now_ms: i64) -> Value {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(super::odata_context(headers, "MachineActions/$entity")),
    );
    body.extend(action.to_json(now_ms));
    Value::Object(body)
}

// ---------------------------------------------------------------------------------------------
// Creating actions

/// What a response action request asks for, once its body is validated.
struct NewAction {
    action_type: &'static str,
    comment: String,
    scope: Option<String>,
    related_file_info: Option<Value>,
    external_id: Option<String>,
}

impl NewAction {
    /// Reads `Comment` (required) and `ExternalID` (optional) from the body.
    fn from_body(action_type: &'static str, body: &RequestBody) -> Result<NewAction, ApiError> {
        let comment = body.required_str("Comment")?.to_string();
        let external_id = match body.optional_str("ExternalID")? {
            Some(e) => Some(e.to_string()),
            None => body.optional_str("ExternalId")?.map(str::to_string),
        };
        Ok(NewAction {
            action_type,
            comment,
            scope: None,
            related_file_info: None,
            external_id,
        })
    }
}

/// Action types that cannot run at once on a machine (a pending one blocks the others).
fn conflict_family(action_type: &str) -> &'static [&'static str] {
    match action_type {
        "Isolate" | "Unisolate" => &["Isolate", "Unisolate"],
        "RestrictCodeExecution" | "UnrestrictCodeExecution" => {
            &["RestrictCodeExecution", "UnrestrictCodeExecution"]
        }
        "StopAndQuarantineFile" => &["StopAndQuarantineFile"],
        "RunAntiVirusScan" => &["RunAntiVirusScan"],
        "CollectInvestigationPackage" => &["CollectInvestigationPackage"],
        "Offboard" => &["Offboard"],
        _ => &[],
    }
}

/// The portal title of a new action.
fn title(action_type: &str, device: &str) -> String {
    match action_type {
        "Isolate" => format!("Isolate device {device}"),
        "Unisolate" => format!("Release device {device} from isolation"),
        "StopAndQuarantineFile" => format!("Stop and quarantine file on {device}"),
        "RunAntiVirusScan" => format!("Run antivirus scan on {device}"),
        "RestrictCodeExecution" => format!("Restrict app execution on {device}"),
        "UnrestrictCodeExecution" => format!("Remove app execution restriction on {device}"),
        "CollectInvestigationPackage" => format!("Collect investigation package from {device}"),
        "Offboard" => format!("Offboard device {device}"),
        other => format!("{other} on {device}"),
    }
}

/// Creates the action (checks the machine and a pending action of the same kind) → 201.
fn create(
    sim: &Sim,
    claims: &Claims,
    machine_id: &str,
    headers: &HeaderMap,
    new: NewAction,
) -> Result<Response, ApiError> {
    let now = sim.clock.now_ms();
    let action = {
        let mut w = sim.world();
        let Some(machine) = w.scenario.machine(machine_id) else {
            return Err(not_found_machine(machine_id));
        };
        let canonical_id = machine
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(machine_id)
            .to_string();
        let dns = machine
            .get("computerDnsName")
            .and_then(Value::as_str)
            .map(str::to_string);
        let family = conflict_family(new.action_type);
        let busy = w.actions.iter().any(|a| {
            a.machine_id.eq_ignore_ascii_case(&canonical_id)
                && family.contains(&a.action_type.as_str())
                && !is_final(a.status(now))
        });
        if busy {
            return Err(ApiError::bad_request(
                "ActiveRequestAlreadyExists",
                "Action is already in progress",
            ));
        }
        let timings = w.scenario.timings.for_type(new.action_type);
        let manual = w.scenario.timings.manual;
        let (outcome, error) =
            actions::pick_outcome(&mut w.scenario.outcomes, new.action_type, &canonical_id);
        let requestor = super::requestor(&w.scenario, claims);
        let action = MachineAction {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: claims.tid.clone(),
            action_type: new.action_type.to_string(),
            title: title(new.action_type, dns.as_deref().unwrap_or(&canonical_id)),
            requestor,
            comment: new.comment,
            machine_id: canonical_id,
            computer_dns_name: dns,
            scope: new.scope,
            external_id: new.external_id,
            related_file_info: new.related_file_info,
            created_ms: now,
            timings,
            manual,
            stage_floor: 0,
            floor_changed_ms: now,
            outcome,
            error,
            cancellation: None,
            commands: Vec::new(),
        };
        w.actions.insert(action.clone());
        action
    };
    Ok((
        StatusCode::CREATED,
        Json(action_json(headers, &action, now)),
    )
        .into_response())
}

/// Picks one of `allowed` (case-insensitively) for an optional field, or its default.
fn choice(
    body: &RequestBody,
    key: &str,
    allowed: &[&'static str],
) -> Result<&'static str, ApiError> {
    let Some(given) = body.optional_str(key)? else {
        return Ok(allowed[0]);
    };
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(given))
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidRequestBody",
                format!(
                    "{key} '{given}' is not valid: expected one of {}",
                    allowed.join(", ")
                ),
            )
        })
}

/// The route of an action whose body carries only a Comment.
fn comment_only(action_type: &'static str) -> MethodRouter<Arc<Sim>> {
    post(
        move |State(sim): State<Arc<Sim>>,
              Extension(claims): Extension<Claims>,
              Id(id): Id,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| async move {
            let body = RequestBody::from_extracted(body)?;
            let new = NewAction::from_body(action_type, &body)?;
            create(&sim, &claims, &id, &headers, new)
        },
    )
}

async fn isolate(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let mut new = NewAction::from_body("Isolate", &body)?;
    let kind = choice(
        &body,
        "IsolationType",
        &["Full", "Selective", "UnManagedDevice"],
    )?;
    new.scope = Some(kind.to_string());
    create(&sim, &claims, &id, &headers, new)
}

async fn stop_and_quarantine(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let mut new = NewAction::from_body("StopAndQuarantineFile", &body)?;
    let sha1 = body.required_str("Sha1")?;
    if sha1.len() != 40 || !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "InvalidHashValue",
            format!("Sha1 '{sha1}' is not a valid SHA-1 hash (40 hexadecimal characters)"),
        ));
    }
    new.related_file_info = Some(json!({
        "fileIdentifier": sha1.to_ascii_lowercase(),
        "fileIdentifierType": "Sha1",
    }));
    create(&sim, &claims, &id, &headers, new)
}

async fn scan(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let mut new = NewAction::from_body("RunAntiVirusScan", &body)?;
    new.scope = Some(choice(&body, "ScanType", &["Quick", "Full"])?.to_string());
    create(&sim, &claims, &id, &headers, new)
}

// ---------------------------------------------------------------------------------------------
// The machine action resource

fn spec(page_size: usize) -> ListSpec<'static> {
    ListSpec {
        context_fragment: "MachineActions",
        entity: "microsoft.windowsDefenderATP.api.MachineAction",
        filterable: FILTERABLE,
        page_size,
    }
}

/// All actions of the caller's tenant as JSON, with the page size.
fn tenant_actions(sim: &Sim, tenant_id: &str) -> (Vec<Value>, usize) {
    let now = sim.clock.now_ms();
    let w = sim.world();
    let items = w
        .actions
        .iter()
        .filter(|a| a.tenant_id.eq_ignore_ascii_case(tenant_id))
        .map(|a| Value::Object(a.to_json(now)))
        .collect();
    (items, w.scenario.default_page_size)
}

async fn list(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let (items, page_size) = tenant_actions(&sim, &claims.tid);
    // Microsoft's list example names the update time `lastUpdateTimeUtc`, where the entity
    // says `lastUpdateDateTimeUtc` (get-machineactions-collection.md); clients meet both.
    let items = items.into_iter().map(list_item).collect();
    odata::list_response(items, &query, &headers, uri.path(), &spec(page_size))
}

/// A MachineAction as list answers show it: `lastUpdateDateTimeUtc` named `lastUpdateTimeUtc`.
fn list_item(mut item: Value) -> Value {
    if let Some(obj) = item.as_object_mut()
        && let Some(t) = obj.remove("lastUpdateDateTimeUtc")
    {
        obj.insert("lastUpdateTimeUtc".into(), t);
    }
    item
}

/// A copy of one action of the caller's tenant (the lock is held only for the copy).
fn find_action(sim: &Sim, claims: &Claims, id: &str) -> Result<MachineAction, ApiError> {
    let w = sim.world();
    w.actions
        .get(id)
        .filter(|a| a.tenant_id.eq_ignore_ascii_case(&claims.tid))
        .cloned()
        .ok_or_else(|| not_found_action(id))
}

async fn get_one(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if id == "$count" {
        let query = ListQuery::parse(raw.as_deref())?;
        let (items, _) = tenant_actions(&sim, &claims.tid);
        return odata::count_response(items, &query, &spec(usize::MAX));
    }
    let action = find_action(&sim, &claims, &id)?;
    let now = sim.clock.now_ms();
    Ok(Json(action_json(&headers, &action, now)).into_response())
}

async fn cancel(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let comment = body.required_str("Comment")?.to_string();
    let now = sim.clock.now_ms();
    let action = {
        let mut w = sim.world();
        let requestor = super::requestor(&w.scenario, &claims);
        let Some(action) = w
            .actions
            .get_mut(&id)
            .filter(|a| a.tenant_id.eq_ignore_ascii_case(&claims.tid))
        else {
            return Err(not_found_action(&id));
        };
        let status = action.status(now);
        if is_final(status) {
            return Err(ApiError::bad_request(
                "BadRequest",
                format!("Action cannot be cancelled because its status is {status}"),
            ));
        }
        action.cancellation = Some(Cancellation {
            requestor,
            comment,
            at_ms: now,
        });
        action.clone()
    };
    Ok(Json(action_json(&headers, &action, now)).into_response())
}

async fn package_uri(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let action = find_action(&sim, &claims, &id)?;
    let now = sim.clock.now_ms();
    if action.action_type != "CollectInvestigationPackage" {
        return Err(ApiError::not_found(format!(
            "Machine action {id} is not an investigation package collection"
        )));
    }
    let status = action.status(now);
    if status != "Succeeded" {
        return Err(ApiError::not_found(format!(
            "The investigation package of action {id} is not available (status {status})"
        )));
    }
    let base = super::base_url(&headers);
    let link = super::download::package_link(&sim, &base, &action.id);
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "Edm.String"),
        "value": link,
    }))
    .into_response())
}
