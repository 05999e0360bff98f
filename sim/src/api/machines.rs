//! Machines: `GET /api/machines` (OData list), `GET /api/machines/{id}` (also `/$count`) and
//! `POST /api/machines/{id}/tags`.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::machine_actions::{Id, RequestBody, not_found_machine};
use super::odata::{self, ListQuery, ListSpec};
use crate::error::ApiError;
use crate::state::Sim;

/// Machine properties `$filter` may use (as Defender documents them).
pub const FILTERABLE: &[&str] = &[
    "computerDnsName",
    "id",
    "version",
    "deviceValue",
    "aadDeviceId",
    "machineTags",
    "lastSeen",
    "exposureLevel",
    "onboardingStatus",
    "lastIpAddress",
    "healthStatus",
    "osPlatform",
    "riskScore",
    "rbacGroupId",
];

/// Routes of the machines resource.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/machines", get(list))
        .route("/api/machines/{id}", get(get_one))
        .route("/api/machines/{id}/tags", post(tags))
}

fn spec(page_size: usize) -> ListSpec<'static> {
    ListSpec {
        context_fragment: "Machines",
        entity: "microsoft.windowsDefenderATP.api.PublicAssetDto",
        filterable: FILTERABLE,
        page_size,
    }
}

/// The machine answer: the machine with `@odata.context` `...#Machines/$entity`.
fn entity(headers: &HeaderMap, machine: Map<String, Value>) -> Json<Value> {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(super::odata_context(headers, "Machines/$entity")),
    );
    body.extend(machine);
    Json(Value::Object(body))
}

async fn list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let (items, page_size) = {
        let w = sim.world();
        let items: Vec<Value> = w
            .scenario
            .machines
            .iter()
            .map(|m| Value::Object(m.clone()))
            .collect();
        (items, w.scenario.default_page_size)
    };
    odata::list_response(items, &query, &headers, uri.path(), &spec(page_size))
}

async fn get_one(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if id == "$count" {
        let query = ListQuery::parse(raw.as_deref())?;
        let items: Vec<Value> = sim
            .world()
            .scenario
            .machines
            .iter()
            .map(|m| Value::Object(m.clone()))
            .collect();
        return odata::count_response(items, &query, &spec(usize::MAX));
    }
    if id.starts_with("findbyip(") {
        return super::enrichment::find_by_ip(&sim, &id, &headers);
    }
    let machine = sim.world().scenario.machine(&id).cloned();
    match machine {
        Some(m) => Ok(entity(&headers, m).into_response()),
        None => Err(not_found_machine(&id)),
    }
}

/// `Add` or `Remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagAction {
    Add,
    Remove,
}

async fn tags(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    let value = body.required_str("Value")?;
    if value.len() > 200 {
        return Err(ApiError::bad_request(
            "InvalidRequestBody",
            "Value must be at most 200 characters long",
        ));
    }
    let action = match body.required_str("Action")? {
        a if a.eq_ignore_ascii_case("Add") => TagAction::Add,
        a if a.eq_ignore_ascii_case("Remove") => TagAction::Remove,
        other => {
            return Err(ApiError::bad_request(
                "InvalidRequestBody",
                format!("Action '{other}' is not valid: expected Add or Remove"),
            ));
        }
    };
    let machine = {
        let mut w = sim.world();
        let Some(m) = w.scenario.machines.iter_mut().find(|m| {
            m.get("id")
                .and_then(Value::as_str)
                .is_some_and(|mid| mid.eq_ignore_ascii_case(&id))
        }) else {
            return Err(not_found_machine(&id));
        };
        let tags = m
            .entry("machineTags")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !tags.is_array() {
            *tags = Value::Array(Vec::new());
        }
        if let Value::Array(list) = tags {
            let present = list.iter().any(|t| t.as_str() == Some(value));
            match action {
                TagAction::Add if !present => list.push(json!(value)),
                TagAction::Remove => list.retain(|t| t.as_str() != Some(value)),
                TagAction::Add => {}
            }
        }
        m.clone()
    };
    Ok((StatusCode::OK, entity(&headers, machine)).into_response())
}
