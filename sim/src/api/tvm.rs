//! Threat and vulnerability management: a device's software, vulnerabilities, missing KBs and
//! security recommendations; the software inventory with each software's version
//! distribution, devices and vulnerabilities; the vulnerability catalogue, the
//! vulnerabilities by device and software, the devices a CVE affects; the exposure and secure
//! scores. Every list answers with OData `$filter`/`$top`/`$skip` and a nextLink; the data
//! comes from [`crate::tvm_data`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::machine_actions::{Id, not_found_machine};
use super::odata::{self, ListQuery, ListSpec};
use crate::error::ApiError;
use crate::state::{Clock, Sim};
use crate::tvm_data as data;

/// Largest `$top` of `GET /api/vulnerabilities`.
pub const VULNERABILITIES_MAX_TOP: usize = 8_000;

/// Properties `$filter` may use on the software inventory.
pub const SOFTWARE_FILTERABLE: &[&str] = &["id", "name", "vendor"];
/// Properties `$filter` may use on the vulnerability catalogue.
pub const VULNERABILITY_FILTERABLE: &[&str] = &[
    "id",
    "name",
    "description",
    "cvssV3",
    "publishedOn",
    "severity",
    "updatedOn",
];
/// Properties `$filter` may use on the vulnerabilities by device and software.
pub const MACHINE_VULNERABILITY_FILTERABLE: &[&str] = &[
    "id",
    "cveId",
    "machineId",
    "fixingKbId",
    "productName",
    "productVersion",
    "severity",
    "productVendor",
];
const REFERENCE_FILTERABLE: &[&str] = &["id", "computerDnsName", "osPlatform", "rbacGroupName"];
const KB_FILTERABLE: &[&str] = &["id", "name"];
const RECOMMENDATION_FILTERABLE: &[&str] = &[
    "id",
    "productName",
    "vendor",
    "recommendationCategory",
    "status",
];
const DISTRIBUTION_FILTERABLE: &[&str] = &["version"];

/// Routes (lower-case: `/api` paths are normalised before routing).
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/machines/{id}/software", get(machine_software))
        .route(
            "/api/machines/{id}/vulnerabilities",
            get(machine_vulnerabilities),
        )
        .route("/api/machines/{id}/getmissingkbs", get(machine_missing_kbs))
        .route(
            "/api/machines/{id}/recommendations",
            get(machine_recommendations),
        )
        .route("/api/software", get(software_list))
        .route("/api/software/{id}", get(software_one))
        .route(
            "/api/software/{id}/getmissingkbs",
            get(software_missing_kbs),
        )
        .route(
            "/api/software/{id}/distributions",
            get(software_distributions),
        )
        .route(
            "/api/software/{id}/machinereferences",
            get(software_machines),
        )
        .route(
            "/api/software/{id}/vulnerabilities",
            get(software_vulnerabilities),
        )
        .route("/api/vulnerabilities", get(vulnerability_list))
        .route(
            "/api/vulnerabilities/machinesvulnerabilities",
            get(machines_vulnerabilities),
        )
        .route("/api/vulnerabilities/{id}", get(vulnerability_one))
        .route(
            "/api/vulnerabilities/{id}/machinereferences",
            get(vulnerability_machines),
        )
        .route("/api/exposurescore", get(exposure_score))
        .route("/api/configurationscore", get(configuration_score))
}

/// Answers a list of `items` with the scenario's page size.
fn respond(
    sim: &Sim,
    items: Vec<Value>,
    query: &ListQuery,
    headers: &HeaderMap,
    uri: &Uri,
    (fragment, entity, filterable): (&str, &str, &[&str]),
) -> Result<Json<Value>, ApiError> {
    let page_size = sim.world().scenario.default_page_size;
    let spec = ListSpec {
        context_fragment: fragment,
        entity,
        filterable,
        page_size,
    };
    odata::list_response(items, query, headers, uri.path(), &spec)
}

/// The scenario machine with this id, or 404.
fn machine(sim: &Sim, id: &str) -> Result<Map<String, Value>, ApiError> {
    sim.world()
        .scenario
        .machine(id)
        .cloned()
        .ok_or_else(|| not_found_machine(id))
}

fn software_of(id: &str) -> Result<&'static data::Software, ApiError> {
    data::software(id).ok_or_else(|| ApiError::not_found(format!("Software {id} was not found")))
}

fn cve_of(id: &str) -> Result<&'static data::Cve, ApiError> {
    data::cve_by_id(id)
        .ok_or_else(|| ApiError::not_found(format!("Vulnerability {id} was not found")))
}

async fn machine_software(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let m = machine(&sim, &id)?;
    let items: Vec<Value> = {
        let w = sim.world();
        data::installed(&m)
            .iter()
            .map(|i| data::software_json(&w.scenario, i.software))
            .collect()
    };
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        ("Software", "Software", SOFTWARE_FILTERABLE),
    )
}

async fn machine_vulnerabilities(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let m = machine(&sim, &id)?;
    let items: Vec<Value> = {
        let w = sim.world();
        data::machine_cves(&m)
            .into_iter()
            .map(|c| data::cve_json(&w.scenario, c))
            .collect()
    };
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        (
            "Collection(Analytics.Contracts.PublicAPI.PublicVulnerabilityDto)",
            "Vulnerability",
            VULNERABILITY_FILTERABLE,
        ),
    )
}

async fn machine_missing_kbs(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let m = machine(&sim, &id)?;
    let items = data::missing_kbs(&sim.world().scenario, &m);
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        (
            "Collection(microsoft.windowsDefenderATP.api.PublicProductFixDto)",
            "ProductFix",
            KB_FILTERABLE,
        ),
    )
}

async fn software_missing_kbs(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let s = software_of(&id)?;
    let items = data::software_missing_kbs(&sim.world().scenario, s);
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        (
            "Collection(microsoft.windowsDefenderATP.api.PublicProductFixDto)",
            "ProductFix",
            KB_FILTERABLE,
        ),
    )
}

async fn machine_recommendations(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let m = machine(&sim, &id)?;
    let items = data::recommendations(&sim.world().scenario, &m);
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        (
            "Recommendations",
            "Recommendation",
            RECOMMENDATION_FILTERABLE,
        ),
    )
}

async fn software_list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let items = data::inventory(&sim.world().scenario);
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        ("Software", "Software", SOFTWARE_FILTERABLE),
    )
}

async fn software_one(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let s = software_of(&id)?;
    let mut body = data::software_json(&sim.world().scenario, s);
    body["@odata.context"] = json!(super::odata_context(&headers, "Software/$entity"));
    Ok(Json(body))
}

async fn software_distributions(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let s = software_of(&id)?;
    let items = data::distributions(&sim.world().scenario, s);
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        ("Distributions", "Distribution", DISTRIBUTION_FILTERABLE),
    )
}

async fn software_machines(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let s = software_of(&id)?;
    let items = references(data::machines_with(&sim.world().scenario, s));
    machine_references(&sim, items, &query, &headers, &uri)
}

async fn software_vulnerabilities(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let s = software_of(&id)?;
    let items: Vec<Value> = {
        let w = sim.world();
        data::cves_of(s)
            .into_iter()
            .map(|c| data::cve_json(&w.scenario, c))
            .collect()
    };
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        ("Vulnerabilities", "Vulnerability", VULNERABILITY_FILTERABLE),
    )
}

async fn vulnerability_list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    if query.top.is_some_and(|t| t > VULNERABILITIES_MAX_TOP) {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!("$top must be at most {VULNERABILITIES_MAX_TOP} for vulnerabilities"),
        ));
    }
    let items: Vec<Value> = {
        let w = sim.world();
        data::CVES
            .iter()
            .map(|c| data::cve_json(&w.scenario, c))
            .collect()
    };
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        ("Vulnerabilities", "Vulnerability", VULNERABILITY_FILTERABLE),
    )
}

async fn vulnerability_one(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let c = cve_of(&id)?;
    let mut body = data::cve_json(&sim.world().scenario, c);
    body["@odata.context"] = json!(super::odata_context(&headers, "Vulnerabilities/$entity"));
    Ok(Json(body))
}

async fn machines_vulnerabilities(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let items = data::machine_vulnerability_rows(&sim.world().scenario);
    respond(
        &sim,
        items,
        &query,
        &headers,
        &uri,
        (
            "Collection(microsoft.windowsDefenderATP.api.PublicAssetVulnerabilityDto)",
            "PublicAssetVulnerabilityDto",
            MACHINE_VULNERABILITY_FILTERABLE,
        ),
    )
}

async fn vulnerability_machines(
    State(sim): State<Arc<Sim>>,
    Id(id): Id,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let c = cve_of(&id)?;
    let items = references(data::machines_affected(&sim.world().scenario, c));
    machine_references(&sim, items, &query, &headers, &uri)
}

/// The machine references of `machines`.
fn references(machines: Vec<&Map<String, Value>>) -> Vec<Value> {
    machines.into_iter().map(data::machine_reference).collect()
}

/// Machine references answered as a `MachineReferences` list.
fn machine_references(
    sim: &Sim,
    items: Vec<Value>,
    query: &ListQuery,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Json<Value>, ApiError> {
    respond(
        sim,
        items,
        query,
        headers,
        uri,
        (
            "MachineReferences",
            "MachineReference",
            REFERENCE_FILTERABLE,
        ),
    )
}

async fn exposure_score(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let score = data::exposure_score(&sim.world().scenario);
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "ExposureScore/$entity"),
        "time": Clock::format_ms(sim.clock.now_ms()),
        "score": score,
    })))
}

async fn configuration_score(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let score = data::secure_score(&sim.world().scenario);
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "ConfigurationScore/$entity"),
        "time": Clock::format_ms(sim.clock.now_ms()),
        "score": score,
    })))
}
