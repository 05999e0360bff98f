//! Alerts over time: alerts created and updated through the control API (`/_sim/alerts`),
//! written to both stores at once — the MDE `/api/alerts` list and the Graph `alerts_v2` list
//! of a tenant — with the same id, so ingestion can be tested against either source.
//!
//! Created alerts get "now" (simulated time) as their creation and last-update times, or
//! one millisecond apart ending at now; updates move the last-update time to now.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::graph_data;
use crate::state::{Clock, World};

/// Most alerts one create request may ask for.
pub const MAX_CREATE: usize = 10_000;

/// MDE severities (Graph uses the same words in camelCase).
const SEVERITIES: &[&str] = &["Informational", "Low", "Medium", "High"];
/// MDE statuses.
const STATUSES: &[&str] = &["New", "InProgress", "Resolved"];

/// `POST /_sim/alerts`: what to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// How many alerts (1..=10000).
    pub count: usize,
    /// Severity of every alert (any case); the generator's mix when absent.
    #[serde(default)]
    pub severity: Option<String>,
    /// Status of every alert (New, InProgress, Resolved; any case); New when absent.
    #[serde(default)]
    pub status: Option<String>,
    /// Category of every alert; the generator's when absent.
    #[serde(default)]
    pub category: Option<String>,
    /// All alerts share one timestamp (else they are 1 ms apart, the last one now).
    #[serde(default)]
    pub same_timestamp: bool,
    /// Machine every alert is on (a scenario machine id); the generator's when absent.
    #[serde(default)]
    pub machine_id: Option<String>,
    /// Tenant whose Graph alerts receive the copies; the scenario's first when absent.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// `POST /_sim/alerts/{id}`: what to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// New status (New, InProgress, Resolved; any case).
    #[serde(default)]
    pub status: Option<String>,
    /// New severity (any case).
    #[serde(default)]
    pub severity: Option<String>,
    /// New assignee.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
}

/// The canonical MDE spelling of `value` among `allowed`.
fn canonical(allowed: &[&'static str], key: &str, value: &str) -> Result<&'static str, String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value))
        .copied()
        .ok_or_else(|| format!("{key} must be one of {}", allowed.join(", ")))
}

/// camelCase of an MDE PascalCase word (`InProgress` → `inProgress`).
fn camel(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The Graph `alerts_v2` copy of an MDE alert.
fn graph_copy(
    w: &World,
    mde: &Map<String, Value>,
    tenant_id: &str,
    domain: &str,
    created_ms: i64,
) -> Map<String, Value> {
    let text = |k: &str| mde.get(k).and_then(Value::as_str).unwrap_or_default();
    let id = text("id").to_string();
    let incident = mde
        .get("incidentId")
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    let or_unknown = |k: &str| match mde.get(k).and_then(Value::as_str) {
        Some(v) => json!(camel(v)),
        None => json!("unknown"),
    };
    let user = mde
        .get("relatedUser")
        .and_then(|u| u.get("userName"))
        .and_then(Value::as_str)
        .unwrap_or("jdoe")
        .to_string();
    let tenant_lc = tenant_id.to_ascii_lowercase();
    let mut a = Map::new();
    a.insert("id".into(), json!(id));
    a.insert(
        "providerAlertId".into(),
        json!(id.get(2..).unwrap_or_default()),
    );
    a.insert("incidentId".into(), json!(incident));
    a.insert("status".into(), json!(camel(text("status"))));
    a.insert("severity".into(), json!(camel(text("severity"))));
    a.insert("classification".into(), or_unknown("classification"));
    a.insert("determination".into(), or_unknown("determination"));
    a.insert(
        "serviceSource".into(),
        json!("microsoftDefenderForEndpoint"),
    );
    a.insert(
        "detectionSource".into(),
        json!(camel(text("detectionSource"))),
    );
    a.insert("detectorId".into(), mde.get("detectorId").cloned().into());
    a.insert("tenantId".into(), json!(tenant_lc));
    a.insert("title".into(), json!(text("title")));
    a.insert("description".into(), json!(text("description")));
    a.insert(
        "recommendedActions".into(),
        json!("Investigate the activity and the entities involved."),
    );
    a.insert("category".into(), json!(text("category")));
    a.insert(
        "assignedTo".into(),
        mde.get("assignedTo").cloned().unwrap_or(Value::Null),
    );
    a.insert(
        "alertWebUrl".into(),
        json!(format!(
            "https://security.microsoft.com/alerts/{id}?tid={tenant_lc}"
        )),
    );
    a.insert(
        "incidentWebUrl".into(),
        json!(format!(
            "https://security.microsoft.com/incidents/{incident}?tid={tenant_lc}"
        )),
    );
    a.insert("actorDisplayName".into(), Value::Null);
    a.insert("threatDisplayName".into(), Value::Null);
    a.insert(
        "threatFamilyName".into(),
        mde.get("threatFamilyName").cloned().unwrap_or(Value::Null),
    );
    a.insert(
        "mitreTechniques".into(),
        mde.get("mitreTechniques").cloned().unwrap_or(json!([])),
    );
    for (graph_key, mde_key) in [
        ("createdDateTime", "alertCreationTime"),
        ("lastUpdateDateTime", "lastUpdateTime"),
        ("resolvedDateTime", "resolvedTime"),
        ("firstActivityDateTime", "firstEventTime"),
        ("lastActivityDateTime", "lastEventTime"),
    ] {
        a.insert(
            graph_key.into(),
            mde.get(mde_key).cloned().unwrap_or(Value::Null),
        );
    }
    a.insert("comments".into(), json!([]));
    a.insert("systemTags".into(), json!([]));
    a.insert(
        "evidence".into(),
        Value::Array(graph_data::evidence_for(
            &id,
            &w.scenario,
            domain,
            &user,
            created_ms,
        )),
    );
    a
}

/// Creates alerts at `now_ms` in both stores; answers their ids (oldest first) and the
/// timestamps used.
pub fn create(w: &mut World, now_ms: i64, req: &CreateRequest) -> Result<Vec<String>, String> {
    if !(1..=MAX_CREATE).contains(&req.count) {
        return Err(format!("count must be between 1 and {MAX_CREATE}"));
    }
    let severity = req
        .severity
        .as_deref()
        .map(|s| canonical(SEVERITIES, "severity", s))
        .transpose()?;
    let status = req
        .status
        .as_deref()
        .map(|s| canonical(STATUSES, "status", s))
        .transpose()?
        .unwrap_or("New");
    let machine = match &req.machine_id {
        Some(m) => Some(
            w.scenario
                .machine(m)
                .cloned()
                .ok_or_else(|| format!("machine {m} is not in the scenario"))?,
        ),
        None => None,
    };
    let (tenant_id, domain) = {
        let tenant = match &req.tenant_id {
            Some(t) => w
                .scenario
                .tenant(t)
                .ok_or_else(|| format!("tenant {t} is not in the scenario"))?,
            None => w
                .scenario
                .first_tenant()
                .ok_or("the scenario has no tenant")?,
        };
        (
            tenant.id.clone(),
            tenant
                .domain
                .clone()
                .unwrap_or_else(|| "contoso.onmicrosoft.com".to_string()),
        )
    };
    let first_serial = w.next_created_alert;
    w.next_created_alert += req.count as u64;
    let generated = crate::alerts::generate(&w.scenario, req.count, first_serial, 1, now_ms);
    let mut ids = Vec::with_capacity(req.count);
    let mut graph_alerts = Vec::with_capacity(req.count);
    let mut mde_alerts = Vec::with_capacity(req.count);
    for (i, mut alert) in generated.into_iter().enumerate() {
        let at_ms = if req.same_timestamp {
            now_ms
        } else {
            now_ms - (req.count - 1 - i) as i64
        };
        let at = Clock::format_ms(at_ms);
        let serial = first_serial + i as u64;
        let ticks = 637_000_000_000_000_000u64 + (at_ms.max(0) as u64) * 10_000;
        let id = format!("da{ticks}_{serial}");
        alert.insert("id".into(), json!(id));
        alert.insert("alertCreationTime".into(), json!(at));
        alert.insert("lastUpdateTime".into(), json!(at));
        alert.insert("status".into(), json!(status));
        alert.insert(
            "resolvedTime".into(),
            if status == "Resolved" {
                json!(at)
            } else {
                Value::Null
            },
        );
        if status == "New" {
            alert.insert("assignedTo".into(), Value::Null);
            alert.insert("classification".into(), Value::Null);
            alert.insert("determination".into(), Value::Null);
        }
        if let Some(s) = severity {
            alert.insert("severity".into(), json!(s));
        }
        if let Some(c) = &req.category {
            alert.insert("category".into(), json!(c));
        }
        if let Some(m) = &machine {
            for (key, from) in [
                ("machineId", "id"),
                ("computerDnsName", "computerDnsName"),
                ("rbacGroupName", "rbacGroupName"),
            ] {
                alert.insert(key.into(), m.get(from).cloned().unwrap_or(Value::Null));
            }
        }
        graph_alerts.push(graph_copy(w, &alert, &tenant_id, &domain, at_ms));
        ids.push(id);
        mde_alerts.push(alert);
    }
    // Both stores keep newest first.
    mde_alerts.reverse();
    graph_alerts.reverse();
    w.alerts.splice(0..0, mde_alerts);
    let scenario = w.scenario.clone();
    let tenant = w.graph.tenant(&scenario, &tenant_id, now_ms);
    tenant.alerts.splice(0..0, graph_alerts);
    Ok(ids)
}

/// Applies `req` to the alert `id` in both stores (every tenant's Graph data) and moves its
/// last-update time to `now_ms`. Answers the MDE and Graph copies found (None if neither).
pub fn update(
    w: &mut World,
    now_ms: i64,
    id: &str,
    req: &UpdateRequest,
) -> Result<Option<Value>, String> {
    let status = req
        .status
        .as_deref()
        .map(|s| canonical(STATUSES, "status", s))
        .transpose()?;
    let severity = req
        .severity
        .as_deref()
        .map(|s| canonical(SEVERITIES, "severity", s))
        .transpose()?;
    if status.is_none() && severity.is_none() && req.assigned_to.is_none() && req.title.is_none() {
        return Err("set at least one of status, severity, assigned_to, title".into());
    }
    let now = Clock::format_ms(now_ms);
    let resolved = |s: &str| {
        if s == "Resolved" {
            json!(now)
        } else {
            Value::Null
        }
    };
    let mut mde = Value::Null;
    if let Some(a) = w.alerts.iter_mut().find(|a| {
        a.get("id")
            .and_then(Value::as_str)
            .is_some_and(|x| x.eq_ignore_ascii_case(id))
    }) {
        if let Some(s) = status {
            a.insert("status".into(), json!(s));
            a.insert("resolvedTime".into(), resolved(s));
        }
        if let Some(s) = severity {
            a.insert("severity".into(), json!(s));
        }
        if let Some(t) = &req.assigned_to {
            a.insert("assignedTo".into(), json!(t));
        }
        if let Some(t) = &req.title {
            a.insert("title".into(), json!(t));
        }
        a.insert("lastUpdateTime".into(), json!(now));
        mde = Value::Object(a.clone());
    }
    let mut graph = Value::Null;
    for a in w.graph.alerts_mut() {
        if !a
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|x| x.eq_ignore_ascii_case(id))
        {
            continue;
        }
        if let Some(s) = status {
            a.insert("status".into(), json!(camel(s)));
            a.insert("resolvedDateTime".into(), resolved(s));
        }
        if let Some(s) = severity {
            a.insert("severity".into(), json!(camel(s)));
        }
        if let Some(t) = &req.assigned_to {
            a.insert("assignedTo".into(), json!(t));
        }
        if let Some(t) = &req.title {
            a.insert("title".into(), json!(t));
        }
        a.insert("lastUpdateDateTime".into(), json!(now));
        graph = Value::Object(a.clone());
    }
    if mde.is_null() && graph.is_null() {
        return Ok(None);
    }
    Ok(Some(json!({"mde": mde, "graph": graph})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn req(count: usize, same: bool) -> CreateRequest {
        CreateRequest {
            count,
            severity: Some("high".into()),
            status: None,
            category: None,
            same_timestamp: same,
            machine_id: None,
            tenant_id: None,
        }
    }

    #[test]
    fn created_alerts_land_in_both_stores_with_one_id() {
        let mut w = World::new(Scenario::default_scenario());
        let before = w.alerts.len();
        let now = 1_764_374_400_000;
        let ids = create(&mut w, now, &req(3, true)).unwrap();
        assert_eq!(w.alerts.len(), before + 3);
        assert_eq!(w.alerts[0]["id"], json!(ids[2]));
        assert_eq!(w.alerts[0]["severity"], json!("High"));
        assert_eq!(w.alerts[0]["lastUpdateTime"], json!(Clock::format_ms(now)));
        assert_eq!(w.alerts[2]["lastUpdateTime"], json!(Clock::format_ms(now)));
        let scenario = w.scenario.clone();
        let tid = scenario.first_tenant().unwrap().id.clone();
        let g = w.graph.tenant(&scenario, &tid, now);
        assert_eq!(g.alerts[0]["id"], json!(ids[2]));
        assert_eq!(g.alerts[0]["severity"], json!("high"));
        assert_eq!(g.alerts[0]["status"], json!("new"));
        let ids2 = create(&mut w, now, &req(2, false)).unwrap();
        assert!(ids.iter().all(|i| !ids2.contains(i)));
        assert_eq!(
            w.alerts[1]["lastUpdateTime"],
            json!(Clock::format_ms(now - 1))
        );
    }

    #[test]
    fn updates_move_the_last_update_time_and_bad_requests_are_refused() {
        let mut w = World::new(Scenario::default_scenario());
        let ids = create(&mut w, 1_000_000, &req(1, true)).unwrap();
        let out = update(
            &mut w,
            2_000_000,
            &ids[0],
            &UpdateRequest {
                status: Some("resolved".into()),
                ..UpdateRequest::default()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(out["mde"]["status"], json!("Resolved"));
        assert_eq!(
            out["mde"]["lastUpdateTime"],
            json!(Clock::format_ms(2_000_000))
        );
        assert_eq!(out["graph"]["status"], json!("resolved"));
        assert_eq!(
            out["graph"]["lastUpdateDateTime"],
            json!(Clock::format_ms(2_000_000))
        );
        assert!(
            update(
                &mut w,
                1,
                "nope",
                &UpdateRequest {
                    title: Some("x".into()),
                    ..UpdateRequest::default()
                }
            )
            .unwrap()
            .is_none()
        );
        assert!(update(&mut w, 1, &ids[0], &UpdateRequest::default()).is_err());
        assert!(create(&mut w, 1, &req(0, true)).is_err());
        let mut bad = req(1, true);
        bad.severity = Some("severe".into());
        assert!(create(&mut w, 1, &bad).is_err());
    }
}
