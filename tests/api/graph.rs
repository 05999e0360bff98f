//! Microsoft Graph alerts and incidents through the host: list/get/update of alerts_v2 and
//! incidents, paging, triage filters, bad input, not found, the Graph token audience and a
//! missing Graph permission.

use defender_sim::Scenario;
use serde_json::{Value, json};

use crate::helpers::*;

const ALERTS: &str = "/v1.0/security/alerts_v2";
const ALERT: &str = "/v1.0/security/alerts_v2/{id}";
const ALERT_COMMENTS: &str = "/v1.0/security/alerts_v2/{id}/comments";
const INCIDENTS: &str = "/v1.0/security/incidents";
const INCIDENT: &str = "/v1.0/security/incidents/{id}";
const INCIDENT_COMMENTS: &str = "/v1.0/security/incidents/{id}/comments";

/// A host whose assets reach Graph on the simulator; `triage` (when given) on a `triaged`
/// asset, and a `reader` asset on the read-only app (index 1).
async fn spawn_graph(
    scenario: Scenario,
    triage: Option<defender_soar::config::TriageFilters>,
) -> TestApp {
    let s = scenario.clone();
    spawn_configured(scenario, move |c| {
        let base = c.assets.values().next().unwrap().api_url.clone();
        for a in c.assets.values_mut() {
            a.graph_url = base.clone();
        }
        let mut reader = asset_on_app("reader", &s, &base, 1);
        reader.graph_url = base.clone();
        c.assets.insert("reader".into(), reader);
        if let Some(t) = triage {
            let mut triaged = asset("triaged", &s, &base);
            triaged.graph_url = base.clone();
            triaged.triage = t;
            c.assets.insert("triaged".into(), triaged);
        }
    })
    .await
}

fn data(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap()
}

async fn all_alerts(app: &TestApp) -> Vec<Value> {
    let (status, body) = app
        .invoke("contoso", "list_graph_alerts", json!({"limit": 10000}))
        .await;
    assert_eq!(status, 200, "{body}");
    data(&body).clone()
}

fn graph_calls(app: &TestApp) -> u64 {
    app.sim
        .counters()
        .by_route
        .iter()
        .filter(|(k, _)| k.contains("/v1.0/"))
        .map(|(_, m)| m.values().sum::<u64>())
        .sum()
}

#[tokio::test]
async fn lists_alerts_with_filters_and_pages_past_one_upstream_page() {
    let app = spawn_graph(scenario_with_page_size(100), None).await;
    let (status, body) = app
        .invoke("contoso", "list_graph_alerts", json!({"limit": 250}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "list_graph_alerts", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_alerts"], 250);
    assert_eq!(body["summary"]["total_ignored"], 0);
    assert_eq!(data(&body).len(), 250);
    assert_eq!(app.sim.counters().route("GET", ALERTS), 3);

    let all = all_alerts(&app).await;
    assert_eq!(all.len(), 300);
    // Any letter case in, Graph's spelling out.
    let (status, body) = app
        .invoke(
            "contoso",
            "list_graph_alerts",
            json!({"severity": "HIGH", "status": "InProgress",
                   "service_source": "microsoftdefenderforendpoint", "limit": 10000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parameters"]["severity"], "high");
    let expected = all
        .iter()
        .filter(|a| {
            a["severity"] == "high"
                && a["status"] == "inProgress"
                && a["serviceSource"] == "microsoftDefenderForEndpoint"
        })
        .count();
    assert!(expected > 0);
    assert_eq!(data(&body).len(), expected);

    let pivot = {
        let mut created: Vec<&str> = all
            .iter()
            .map(|a| a["lastUpdateDateTime"].as_str().unwrap())
            .collect();
        created.sort();
        created[created.len() / 2].to_string()
    };
    let cut = &pivot[..19];
    let newer = all
        .iter()
        .filter(|a| &a["lastUpdateDateTime"].as_str().unwrap()[..19] >= cut)
        .count();
    let (_, body) = app
        .invoke(
            "contoso",
            "list_graph_alerts",
            json!({"updated_since": format!("{cut}Z"), "limit": 10000}),
        )
        .await;
    assert_eq!(body["summary"]["total_alerts"], json!(newer), "{body}");
}

#[tokio::test]
async fn every_ignore_filter_and_the_lookback_window() {
    use defender_soar::config::TriageFilters;
    let cases: Vec<(TriageFilters, &str, &str)> = vec![
        (
            TriageFilters {
                classifications: vec!["FalsePositive".into()],
                ..TriageFilters::default()
            },
            "classification",
            "falsePositive",
        ),
        (
            TriageFilters {
                determinations: vec!["malware".into()],
                ..TriageFilters::default()
            },
            "determination",
            "malware",
        ),
        (
            TriageFilters {
                severities: vec!["informational".into()],
                ..TriageFilters::default()
            },
            "severity",
            "informational",
        ),
        (
            TriageFilters {
                statuses: vec!["resolved".into()],
                ..TriageFilters::default()
            },
            "status",
            "resolved",
        ),
        (
            TriageFilters {
                service_sources: vec!["microsoftDefenderForOffice365".into()],
                ..TriageFilters::default()
            },
            "serviceSource",
            "microsoftDefenderForOffice365",
        ),
    ];
    for (filters, field, value) in cases {
        let app = spawn_graph(Scenario::default_scenario(), Some(filters)).await;
        let all = all_alerts(&app).await;
        let dropped = all.iter().filter(|a| a[field] == value).count();
        assert!(dropped > 0, "{field}");
        let (status, body) = app
            .invoke("triaged", "list_graph_alerts", json!({"limit": 10000}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["summary"]["total_ignored"], json!(dropped), "{field}");
        assert_eq!(
            body["summary"]["total_alerts"],
            json!(all.len() - dropped),
            "{field}"
        );
        assert!(data(&body).iter().all(|a| a[field] != value), "{field}");
        if field != "serviceSource" {
            let (status, body) = app
                .invoke("triaged", "list_incidents", json!({"limit": 10000}))
                .await;
            assert_eq!(status, 200, "{body}");
            assert!(data(&body).iter().all(|i| i[field] != value), "{field}");
            let ignored = body["summary"]["total_ignored"].as_u64().unwrap();
            if field != "determination" {
                assert!(ignored > 0, "{field}: {body}");
            }
        }
    }

    let app = spawn_graph(
        Scenario::default_scenario(),
        Some(TriageFilters {
            lookback_days: Some(7),
            ..TriageFilters::default()
        }),
    )
    .await;
    let all = all_alerts(&app).await;
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (lo, hi) = (
        fmt(now - time::Duration::days(7) - time::Duration::minutes(1)),
        fmt(now - time::Duration::days(7) + time::Duration::minutes(1)),
    );
    let at_least = all
        .iter()
        .filter(|a| a["createdDateTime"].as_str().unwrap() >= hi.as_str())
        .count();
    let at_most = all
        .iter()
        .filter(|a| a["createdDateTime"].as_str().unwrap() >= lo.as_str())
        .count();
    let (status, body) = app
        .invoke("triaged", "list_graph_alerts", json!({"limit": 10000}))
        .await;
    assert_eq!(status, 200, "{body}");
    let n = data(&body).len();
    assert!(n < all.len() && (at_least..=at_most).contains(&n), "{n}");
    assert!(
        data(&body)
            .iter()
            .all(|a| a["createdDateTime"].as_str().unwrap() >= lo.as_str())
    );
    let (status, body) = app
        .invoke("triaged", "list_incidents", json!({"limit": 10000}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        data(&body)
            .iter()
            .all(|a| a["createdDateTime"].as_str().unwrap() >= lo.as_str())
    );
}

#[tokio::test]
async fn get_and_update_an_alert_with_a_comment() {
    let app = spawn_graph(Scenario::default_scenario(), None).await;
    let (_, body) = app
        .invoke(
            "contoso",
            "list_graph_alerts",
            json!({"status": "new", "severity": "high", "limit": 1}),
        )
        .await;
    let id = data(&body)[0]["id"].as_str().unwrap().to_string();

    let (status, body) = app
        .invoke("contoso", "get_graph_alert", json!({"alert_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "get_graph_alert", "contoso");
    assert_eq!(body["summary"]["alert_id"], json!(id));
    assert_eq!(body["summary"]["status"], "new");
    let evidence = data(&body)[0]["evidence"].as_array().unwrap().len();
    assert_eq!(body["summary"]["total_evidence"], json!(evidence));
    assert!(evidence > 0);

    let (status, body) = app
        .invoke(
            "contoso",
            "update_graph_alert",
            json!({"alert_id": id, "status": "Resolved", "classification": "TRUEPOSITIVE",
                   "determination": "Malware", "assigned_to": "analyst@contoso.onmicrosoft.com",
                   "comment": "Confirmed malware; device isolated"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let alert = &data(&body)[0];
    assert_eq!(alert["status"], "resolved");
    assert_eq!(alert["classification"], "truePositive");
    assert_eq!(alert["determination"], "malware");
    assert_eq!(alert["assignedTo"], "analyst@contoso.onmicrosoft.com");
    assert_eq!(
        alert["comments"][0]["comment"],
        "Confirmed malware; device isolated"
    );
    assert_eq!(body["summary"]["total_comments"], 1);
    assert_eq!(body["summary"]["status"], "resolved");
    let c = app.sim.counters();
    assert_eq!(c.route_status("PATCH", ALERT, 200), 1);
    assert_eq!(c.route_status("POST", ALERT_COMMENTS, 200), 1);

    // A comment alone: no PATCH.
    let (status, body) = app
        .invoke(
            "contoso",
            "update_graph_alert",
            json!({"alert_id": id, "comment": "Second look"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_comments"], 2);
    assert_eq!(app.sim.counters().route("PATCH", ALERT), 1);
}

#[tokio::test]
async fn incidents_list_get_and_update() {
    let app = spawn_graph(Scenario::default_scenario(), None).await;
    // 50 incidents a page upstream: 80 takes two pages.
    let (status, body) = app
        .invoke(
            "contoso",
            "list_incidents",
            json!({"limit": 80, "expand_alerts": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "list_incidents", "contoso");
    assert_eq!(body["summary"]["total_incidents"], 80);
    assert_eq!(app.sim.counters().route("GET", INCIDENTS), 2);
    let first = &data(&body)[0];
    let id = first["id"].as_str().unwrap().to_string();
    assert!(!first["alerts"].as_array().unwrap().is_empty());

    let (status, body) = app
        .invoke(
            "contoso",
            "list_incidents",
            json!({"status": "RESOLVED", "limit": 10000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(data(&body).iter().all(|i| i["status"] == "resolved"));
    assert!(!data(&body).is_empty());

    let (status, body) = app
        .invoke("contoso", "get_incident", json!({"incident_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    let alerts = data(&body)[0]["alerts"].as_array().unwrap();
    assert_eq!(body["summary"]["total_alerts"], json!(alerts.len()));
    assert!(alerts.iter().all(|a| a["incidentId"] == json!(id)));

    let (status, body) = app
        .invoke(
            "contoso",
            "update_incident",
            json!({"incident_id": id, "status": "inprogress", "custom_tags": "phishing, vip",
                   "assigned_to": "admin@contoso.onmicrosoft.com", "comment": "Taking it"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let incident = &data(&body)[0];
    assert_eq!(incident["status"], "inProgress");
    assert_eq!(incident["customTags"], json!(["phishing", "vip"]));
    assert_eq!(incident["comments"][0]["comment"], "Taking it");
    assert_eq!(body["summary"]["incident_id"], json!(id));
    let c = app.sim.counters();
    assert_eq!(c.route_status("PATCH", INCIDENT, 200), 1);
    assert_eq!(c.route_status("POST", INCIDENT_COMMENTS, 200), 1);

    let (_, body) = app
        .invoke(
            "contoso",
            "update_incident",
            json!({"incident_id": id, "custom_tags": "[\"a, b\", \"c\"]"}),
        )
        .await;
    assert_eq!(data(&body)[0]["customTags"], json!(["a, b", "c"]), "{body}");
}

#[tokio::test]
async fn bad_input_is_refused_before_any_graph_call() {
    let app = spawn_graph(Scenario::default_scenario(), None).await;
    let cases = [
        ("list_graph_alerts", json!({"status": "closed"}), "'status'"),
        (
            "list_graph_alerts",
            json!({"service_source": "defender"}),
            "'service_source'",
        ),
        (
            "list_graph_alerts",
            json!({"created_since": "2025-01-01' or 1 eq 1"}),
            "'created_since'",
        ),
        (
            "list_incidents",
            json!({"updated_since": "2025-01-01T00:00:00Z&$top=5"}),
            "'updated_since'",
        ),
        ("list_incidents", json!({"status": "new"}), "'status'"),
        (
            "get_graph_alert",
            json!({"alert_id": "../incidents"}),
            "'alert_id'",
        ),
        (
            "update_graph_alert",
            json!({"alert_id": "da1_2"}),
            "at least one",
        ),
        (
            "update_graph_alert",
            json!({"alert_id": "da1_2", "determination": "evil"}),
            "'determination'",
        ),
        (
            "get_incident",
            json!({"incident_id": "12a"}),
            "'incident_id'",
        ),
        (
            "update_incident",
            json!({"incident_id": "1001 or 1"}),
            "'incident_id'",
        ),
        (
            "update_incident",
            json!({"incident_id": "1001"}),
            "at least one",
        ),
        (
            "update_incident",
            json!({"incident_id": "1001", "status": "closed"}),
            "'status'",
        ),
        (
            "update_incident",
            json!({"incident_id": "1001", "custom_tags": "[1, 2]"}),
            "'custom_tags'",
        ),
    ];
    for (action, params, names) in cases {
        let (status, body) = app.invoke("contoso", action, params.clone()).await;
        assert_eq!(status, 400, "{action} {params}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(names),
            "{action}: {body}"
        );
    }
    assert_eq!(graph_calls(&app), 0);

    // A hostile value where any text is allowed stays one quoted literal: no match.
    let (status, body) = app
        .invoke(
            "contoso",
            "list_graph_alerts",
            json!({"assigned_to": "x' or status eq 'new"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_alerts"], 0, "{body}");
}

#[tokio::test]
async fn unknown_ids_fail_saying_not_found_in_this_tenant() {
    let app = spawn_graph(Scenario::default_scenario(), None).await;
    for (action, params) in [
        ("get_graph_alert", json!({"alert_id": "da000000_404"})),
        (
            "update_graph_alert",
            json!({"alert_id": "da000000_404", "status": "resolved"}),
        ),
        ("get_incident", json!({"incident_id": "99999999"})),
        (
            "update_incident",
            json!({"incident_id": "99999999", "status": "resolved"}),
        ),
    ] {
        let (status, body) = app.invoke("contoso", action, params).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "failed", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("not found in this tenant"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn one_token_per_audience_for_a_burst() {
    let mut scenario = Scenario::default_scenario();
    scenario.rate_limits.disabled = true;
    let app = std::sync::Arc::new(spawn_graph(scenario, None).await);
    let mut tasks = Vec::new();
    for i in 0..120 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (action, params) = if i % 6 == 5 {
                ("list_devices", json!({"limit": 1}))
            } else {
                ("list_graph_alerts", json!({"limit": 1}))
            };
            app.invoke("contoso", action, params).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    let c = app.sim.counters();
    assert_eq!(c.route("GET", ALERTS), 100);
    assert_eq!(c.route("GET", "/api/machines"), 20);
    // One Graph token and one Defender token.
    assert_eq!(c.tokens("client_credentials"), 2, "{:?}", c.tokens_issued);
}

#[tokio::test]
async fn a_missing_graph_permission_is_reported_before_any_call() {
    let app = spawn_graph(Scenario::default_scenario(), None).await;
    // The read-only app may list alerts.
    let (status, body) = app
        .invoke("reader", "list_graph_alerts", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let before = graph_calls(&app);
    let (status, body) = app
        .invoke(
            "reader",
            "update_incident",
            json!({"incident_id": "1001", "status": "resolved"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("SecurityIncident.ReadWrite.All"),
        "{body}"
    );
    assert_eq!(graph_calls(&app), before);
}
