//! Machines related to a domain or a file: `/api/domains/{domain}/machines` and
//! `/api/files/{sha}/machines`, paged like every OData list.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::odata::{self, ListQuery, ListSpec};

use crate::error::ApiError;
use crate::state::Sim;

/// Routes.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/domains/{domain}/machines", get(domain_machines))
        .route("/api/files/{sha}/machines", get(file_machines))
}

fn machines_for(sim: &Sim, ids: Option<&Vec<String>>) -> Vec<Value> {
    let w = sim.world();
    ids.map(|ids| {
        ids.iter()
            .filter_map(|id| w.scenario.machine(id).cloned().map(Value::Object))
            .collect()
    })
    .unwrap_or_default()
}

fn find<'a>(
    map: &'a std::collections::BTreeMap<String, Vec<String>>,
    key: &str,
) -> Option<&'a Vec<String>> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// The answer: one page of `value` (the scenario's page size), with a nextLink when more remain.
fn page(
    sim: &Sim,
    value: Vec<Value>,
    query: &ListQuery,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Json<Value>, ApiError> {
    let spec = ListSpec {
        context_fragment: "Machines",
        entity: "microsoft.windowsDefenderATP.api.PublicAssetDto",
        filterable: super::machines::FILTERABLE,
        page_size: sim.world().scenario.default_page_size,
    };
    odata::list_response(value, query, headers, uri.path(), &spec)
}

async fn domain_machines(
    State(sim): State<Arc<Sim>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let ids = find(&sim.world().scenario.domain_machines, &domain).cloned();
    let value = machines_for(&sim, ids.as_ref());
    page(&sim, value, &query, &headers, &uri)
}

async fn file_machines(
    State(sim): State<Arc<Sim>>,
    Path(sha): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let hex = sha.chars().all(|c| c.is_ascii_hexdigit());
    if !hex || !(sha.len() == 40 || sha.len() == 64) {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!("{sha} is not a valid SHA1 or SHA256"),
        ));
    }
    let ids = find(&sim.world().scenario.file_machines, &sha).cloned();
    let value = machines_for(&sim, ids.as_ref());
    page(&sim, value, &query, &headers, &uri)
}
