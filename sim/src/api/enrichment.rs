//! Enrichment and device information: a file's profile and the prevalence of a file, an IP
//! address or a domain (`/stats?lookBackHours=`), the devices of a user, the users logged on
//! to a device, `findbyip`, and automated investigations (`startInvestigation`,
//! `/api/investigations[/{id}]`).
//!
//! Everything derives from the scenario: a file is known when `file_machines` lists it and its
//! prevalence counts those devices; a domain's prevalence counts `domain_machines`; an IP
//! address's counts the devices whose last (internal or external) address it is. Each device
//! has users of the caller's tenant logged on (device `i` has users `i` and `i + 1`), and a
//! user's devices are the devices it is logged on to.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::machine_actions::{Id, RequestBody, not_found_machine};
use super::odata::{self, ListQuery, ListSpec};
use crate::error::ApiError;
use crate::jwt::Claims;
use crate::scenario::Scenario;
use crate::state::{Clock, Sim};

/// Investigation properties `$filter` may use.
pub const INVESTIGATION_FILTERABLE: &[&str] =
    &["id", "state", "machineId", "startTime", "triggeringAlertId"];

/// Longest `lookBackHours` Defender accepts.
const MAX_LOOK_BACK_HOURS: u64 = 720;

/// Routes.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/files/{sha}", get(file_info))
        .route("/api/files/{sha}/stats", get(file_stats))
        .route("/api/ips/{ip}/stats", get(ip_stats))
        .route("/api/domains/{domain}/stats", get(domain_stats))
        .route("/api/users/{user}/machines", get(user_machines))
        .route("/api/machines/{id}/logonusers", get(logon_users))
        .route(
            "/api/machines/{id}/startinvestigation",
            post(start_investigation),
        )
        .route("/api/investigations", get(list_investigations))
        .route("/api/investigations/{id}", get(get_investigation))
}

/// `?lookBackHours=` (any case of the name, as the paths are lower-cased).
#[derive(Debug, Deserialize)]
struct LookBack {
    #[serde(default, alias = "lookbackhours", alias = "lookBackHours")]
    lookbackhours: Option<String>,
}

impl LookBack {
    fn hours(&self) -> Result<u64, ApiError> {
        match self.lookbackhours.as_deref() {
            None => Ok(MAX_LOOK_BACK_HOURS),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (1..=MAX_LOOK_BACK_HOURS).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(
                    "InvalidInput",
                    format!("lookBackHours must be a whole number from 1 to {MAX_LOOK_BACK_HOURS}"),
                )),
            },
        }
    }
}

fn is_hash(sha: &str) -> bool {
    sha.chars().all(|c| c.is_ascii_hexdigit()) && (sha.len() == 40 || sha.len() == 64)
}

fn bad_hash(sha: &str) -> ApiError {
    ApiError::bad_request(
        "InvalidInput",
        format!("{sha} is not a valid SHA1 or SHA256"),
    )
}

/// The machines of `ids` (scenario order of `ids`).
fn machines_of(scenario: &Scenario, ids: &[String]) -> Vec<Map<String, Value>> {
    ids.iter()
        .filter_map(|id| scenario.machine(id).cloned())
        .collect()
}

fn entry<'a>(
    map: &'a std::collections::BTreeMap<String, Vec<String>>,
    key: &str,
) -> Option<&'a Vec<String>> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Earliest `firstSeen` and latest `lastSeen` of `machines` (null when none).
fn seen(machines: &[Map<String, Value>]) -> (Value, Value) {
    let text =
        |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let first = machines.iter().filter_map(|m| text(m, "firstSeen")).min();
    let last = machines.iter().filter_map(|m| text(m, "lastSeen")).max();
    (json!(first), json!(last))
}

async fn file_info(
    State(sim): State<Arc<Sim>>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    if !is_hash(&sha) {
        return Err(bad_hash(&sha));
    }
    let w = sim.world();
    let Some(ids) = entry(&w.scenario.file_machines, &sha) else {
        return Err(ApiError::not_found(format!("File {sha} was not found")));
    };
    let machines = machines_of(&w.scenario, ids);
    let (first, last) = seen(&machines);
    let sha = sha.to_ascii_lowercase();
    let (sha1, sha256) = if sha.len() == 40 {
        (json!(sha), Value::Null)
    } else {
        (Value::Null, json!(sha))
    };
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "Files/$entity"),
        "sha1": sha1,
        "sha256": sha256,
        "md5": null,
        "fileName": format!("file-{}.exe", &sha[..8]),
        "globalPrevalence": machines.len() * 100 + 5,
        "globalFirstObserved": first,
        "globalLastObserved": last,
        "size": 1024 * (machines.len() + 1),
        "fileType": "PortableExecutable",
        "isPeFile": true,
        "filePublisher": null,
        "fileProductName": null,
        "signer": null,
        "issuer": null,
        "signerHash": null,
        "isValidCertificate": false,
        "determinationType": if machines.len() > 1 { "Malware" } else { "Unknown" },
        "determinationValue": "",
    })))
}

async fn file_stats(
    State(sim): State<Arc<Sim>>,
    Path(sha): Path<String>,
    Query(look): Query<LookBack>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    if !is_hash(&sha) {
        return Err(bad_hash(&sha));
    }
    look.hours()?;
    let w = sim.world();
    let Some(ids) = entry(&w.scenario.file_machines, &sha) else {
        return Err(ApiError::not_found(format!("File {sha} was not found")));
    };
    let machines = machines_of(&w.scenario, ids);
    let (first, last) = seen(&machines);
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "microsoft.windowsDefenderATP.api.InOrgFileStats"),
        "sha1": if sha.len() == 40 { json!(sha.to_ascii_lowercase()) } else { Value::Null },
        "organizationPrevalence": machines.len().to_string(),
        "orgFirstSeen": first,
        "orgLastSeen": last,
        "globallyPrevalence": (machines.len() * 100 + 5).to_string(),
        "globalFirstObserved": first,
        "globalLastObserved": last,
        "topFileNames": [format!("file-{}.exe", &sha.to_ascii_lowercase()[..8])],
    })))
}

async fn ip_stats(
    State(sim): State<Arc<Sim>>,
    Path(ip): Path<String>,
    Query(look): Query<LookBack>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!("{ip} is not a valid IP address"),
        ));
    };
    look.hours()?;
    let w = sim.world();
    let text = addr.to_string();
    let machines: Vec<Map<String, Value>> = w
        .scenario
        .machines
        .iter()
        .filter(|m| {
            ["lastIpAddress", "lastExternalIpAddress"]
                .iter()
                .any(|k| m.get(*k).and_then(Value::as_str) == Some(text.as_str()))
        })
        .cloned()
        .collect();
    let (first, last) = seen(&machines);
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "microsoft.windowsDefenderATP.api.InOrgIPStats"),
        "ipAddress": text,
        "organizationPrevalence": machines.len().to_string(),
        "orgFirstSeen": first,
        "orgLastSeen": last,
    })))
}

async fn domain_stats(
    State(sim): State<Arc<Sim>>,
    Path(domain): Path<String>,
    Query(look): Query<LookBack>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    look.hours()?;
    let w = sim.world();
    let machines = entry(&w.scenario.domain_machines, &domain)
        .map(|ids| machines_of(&w.scenario, ids))
        .unwrap_or_default();
    let (first, last) = seen(&machines);
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "microsoft.windowsDefenderATP.api.InOrgDomainStats"),
        "host": domain.to_ascii_lowercase(),
        "organizationPrevalence": machines.len().to_string(),
        "orgFirstSeen": first,
        "orgLastSeen": last,
    })))
}

// --- users and devices ----------------------------------------------------------------------

/// `(account name, domain)` of the tenant's users, in scenario order.
fn tenant_accounts(scenario: &Scenario, tenant: &str) -> Vec<(String, String)> {
    scenario
        .tenant(tenant)
        .map(|t| {
            t.users
                .iter()
                .map(|u| {
                    let mut parts = u.upn.splitn(2, '@');
                    let account = parts.next().unwrap_or_default().to_ascii_lowercase();
                    let domain = parts
                        .next()
                        .and_then(|d| d.split('.').next())
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    (account, domain)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Indexes of the accounts logged on to machine number `i`.
fn accounts_of_machine(i: usize, n: usize) -> Vec<usize> {
    match n {
        0 => Vec::new(),
        1 => vec![0],
        n => vec![i % n, (i + 1) % n],
    }
}

fn machine_spec(page_size: usize) -> ListSpec<'static> {
    ListSpec {
        context_fragment: "Machines",
        entity: "microsoft.windowsDefenderATP.api.PublicAssetDto",
        filterable: super::machines::FILTERABLE,
        page_size,
    }
}

async fn user_machines(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(user): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let (items, page_size) = {
        let w = sim.world();
        let accounts = tenant_accounts(&w.scenario, &claims.tid);
        let wanted = user
            .rsplit('\\')
            .next()
            .unwrap_or(&user)
            .split('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let index = accounts.iter().position(|(a, _)| *a == wanted);
        let items: Vec<Value> = match index {
            None => Vec::new(),
            Some(u) => w
                .scenario
                .machines
                .iter()
                .enumerate()
                .filter(|(i, _)| accounts_of_machine(*i, accounts.len()).contains(&u))
                .map(|(_, m)| Value::Object(m.clone()))
                .collect(),
        };
        (items, w.scenario.default_page_size)
    };
    odata::list_response(
        items,
        &query,
        &headers,
        uri.path(),
        &machine_spec(page_size),
    )
}

async fn logon_users(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let w = sim.world();
    let Some(index) = w.scenario.machines.iter().position(|m| {
        m.get("id")
            .and_then(Value::as_str)
            .is_some_and(|mid| mid.eq_ignore_ascii_case(&id))
    }) else {
        return Err(not_found_machine(&id));
    };
    let machine = &w.scenario.machines[index];
    let accounts = tenant_accounts(&w.scenario, &claims.tid);
    let machine_count = w.scenario.machines.len();
    let users: Vec<Value> = accounts_of_machine(index, accounts.len())
        .into_iter()
        .map(|u| {
            let (account, domain) = &accounts[u];
            let count = (0..machine_count)
                .filter(|i| accounts_of_machine(*i, accounts.len()).contains(&u))
                .count();
            json!({
                "id": format!("{domain}\\{account}"),
                "accountName": account,
                "accountDomain": domain,
                "accountSid": null,
                "firstSeen": machine.get("firstSeen").cloned().unwrap_or(Value::Null),
                "lastSeen": machine.get("lastSeen").cloned().unwrap_or(Value::Null),
                "mostPrevalentMachineId": null,
                "leastPrevalentMachineId": null,
                "logonTypes": if u == 0 { "Interactive" } else { "Network" },
                "logOnMachinesCount": count,
                "isDomainAdmin": u == 0,
                "isOnlyNetworkUser": u != 0,
            })
        })
        .collect();
    Ok(Json(json!({
        "@odata.context": super::odata_context(&headers, "Users"),
        "value": users,
    })))
}

/// `GET /api/machines/findbyip(ip='…',timestamp=…)` (the segment arrives lower-cased as the
/// `{id}` of `/api/machines/{id}`): the machines whose last internal address is `ip`.
pub fn find_by_ip(sim: &Sim, segment: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(
            "InvalidInput",
            format!(
                "findbyip: {why}; expected findbyip(ip='10.0.0.1',timestamp=2025-01-01T00:00:00Z)"
            ),
        )
    };
    let args = segment
        .strip_prefix("findbyip(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("not a function call"))?;
    let mut ip = None;
    let mut timestamp = None;
    for part in args.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad("an argument has no value"))?;
        match k.trim() {
            "ip" => ip = Some(v.trim()),
            "timestamp" => timestamp = Some(v.trim()),
            _ => return Err(bad("unknown argument")),
        }
    }
    let ip = ip
        .and_then(|v| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .ok_or_else(|| bad("ip must be a quoted string"))?;
    let addr: std::net::IpAddr = ip.parse().map_err(|_| bad("ip is not an IP address"))?;
    let timestamp = timestamp.ok_or_else(|| bad("timestamp is missing"))?;
    time::OffsetDateTime::parse(
        &timestamp.to_ascii_uppercase(),
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| bad("timestamp is not a date-time"))?;
    let text = addr.to_string();
    let value: Vec<Value> = sim
        .world()
        .scenario
        .machines
        .iter()
        .filter(|m| m.get("lastIpAddress").and_then(Value::as_str) == Some(text.as_str()))
        .map(|m| Value::Object(m.clone()))
        .collect();
    Ok(Json(json!({
        "@odata.context": super::odata_context(headers, "Machines"),
        "value": value,
    }))
    .into_response())
}

// --- automated investigations ---------------------------------------------------------------

fn investigation_spec(page_size: usize) -> ListSpec<'static> {
    ListSpec {
        context_fragment: "Investigations",
        entity: "microsoft.windowsDefenderATP.api.Investigation",
        filterable: INVESTIGATION_FILTERABLE,
        page_size,
    }
}

/// The investigations of `tenant` as answered (without the tenant key).
fn tenant_investigations(sim: &Sim, tenant: &str) -> Vec<Value> {
    sim.world()
        .investigations
        .iter()
        .filter(|(t, _)| t.eq_ignore_ascii_case(tenant))
        .map(|(_, inv)| Value::Object(inv.clone()))
        .collect()
}

async fn start_investigation(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = RequestBody::from_extracted(body)?;
    body.required_str("Comment")?;
    let now = sim.clock.now_ms();
    let inv = {
        let mut w = sim.world();
        let Some(machine) = w.scenario.machine(&id) else {
            return Err(not_found_machine(&id));
        };
        let machine_id = machine.get("id").cloned().unwrap_or(json!(id));
        let dns = machine
            .get("computerDnsName")
            .cloned()
            .unwrap_or(Value::Null);
        let number = w.investigations.len() + 1;
        let Value::Object(inv) = json!({
            "id": number.to_string(),
            "startTime": Clock::format_ms(now),
            "endTime": null,
            "state": "Running",
            "cancelledBy": null,
            "statusDetails": null,
            "machineId": machine_id,
            "computerDnsName": dns,
            "triggeringAlertId": null,
        }) else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "investigation",
            ));
        };
        w.investigations.push((claims.tid.clone(), inv.clone()));
        inv
    };
    let mut answer = Map::new();
    answer.insert(
        "@odata.context".into(),
        json!(super::odata_context(&headers, "Investigations/$entity")),
    );
    answer.extend(inv);
    Ok((StatusCode::CREATED, Json(Value::Object(answer))).into_response())
}

async fn list_investigations(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    uri: Uri,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let items = tenant_investigations(&sim, &claims.tid);
    let page_size = sim.world().scenario.default_page_size;
    odata::list_response(
        items,
        &query,
        &headers,
        uri.path(),
        &investigation_spec(page_size),
    )
}

async fn get_investigation(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let found = tenant_investigations(&sim, &claims.tid)
        .into_iter()
        .find(|i| i.get("id").and_then(Value::as_str) == Some(id.as_str()));
    match found {
        Some(Value::Object(inv)) => {
            let mut answer = Map::new();
            answer.insert(
                "@odata.context".into(),
                json!(super::odata_context(&headers, "Investigations/$entity")),
            );
            answer.extend(inv);
            Ok(Json(Value::Object(answer)))
        }
        _ => Err(ApiError::not_found(format!(
            "Investigation {id} was not found"
        ))),
    }
}
