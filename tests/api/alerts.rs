//! Alert actions through the host against the simulator: every action, paging, the asset's
//! triage filters, refused inputs (no upstream call) and unknown alerts.

use defender_soar::config::TriageFilters;
use serde_json::{Value, json};

use crate::helpers::*;

/// Defender API requests the simulator has answered.
fn api_calls(app: &TestApp) -> u64 {
    app.sim
        .counters()
        .by_route
        .iter()
        .filter(|(k, _)| k.contains(" /api/"))
        .map(|(_, m)| m.values().sum::<u64>())
        .sum()
}

fn alerts(app: &TestApp) -> Vec<serde_json::Map<String, Value>> {
    app.sim.world().alerts.clone()
}

fn data(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap()
}

async fn with_triage(triage: TriageFilters, page_size: usize) -> TestApp {
    spawn_configured(scenario_with_page_size(page_size), move |config| {
        config.assets.get_mut("contoso").unwrap().triage = triage;
    })
    .await
}

#[tokio::test]
async fn list_alerts_pages_past_one_upstream_page() {
    let app = spawn_with(scenario_with_page_size(100)).await;
    let total = alerts(&app).len();
    assert!(total > 250, "{total}");
    let (status, body) = app
        .invoke("contoso", "list_alerts", json!({"limit": 250}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "list_alerts", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_alerts"], 250);
    assert_eq!(body["summary"]["total_ignored"], 0);
    assert_eq!(data(&body).len(), 250);
    assert_eq!(app.sim.counters().route("GET", "/api/alerts"), 3);
    assert!(
        data(&body)
            .iter()
            .all(|a| a.get("@odata.context").is_none())
    );
}

#[tokio::test]
async fn convenience_filters_and_caller_filter_combine() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "list_alerts",
            json!({"status": "new", "severity": "High", "since": "2000-01-01",
                   "filter": "detectionSource ne 'CustomerTI'", "limit": 10000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parameters"]["status"], "New");
    let expected = alerts(&app)
        .iter()
        .filter(|a| a["status"] == "New" && a["severity"] == "High")
        .filter(|a| a["detectionSource"] != "CustomerTI")
        .count();
    assert!(expected > 0);
    assert_eq!(body["summary"]["total_alerts"], expected, "{body}");
    assert!(
        data(&body)
            .iter()
            .all(|a| a["status"] == "New" && a["severity"] == "High")
    );
}

#[tokio::test]
async fn lists_by_device_file_ip_domain_and_user() {
    let app = spawn().await;
    let all = alerts(&app);
    let alert = all
        .iter()
        .find(|a| a["evidence"].as_array().is_some_and(|e| e.len() == 4))
        .unwrap()
        .clone();
    let id = alert["id"].as_str().unwrap();
    let evidence = alert["evidence"].as_array().unwrap();
    let file = &evidence[0];
    let hash = file["sha1"].as_str().or(file["sha256"].as_str()).unwrap();
    let ip = evidence[1]["ipAddress"].as_str().unwrap();
    let url = evidence[2]["url"].as_str().unwrap();
    let domain = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let user = evidence[3]["accountName"].as_str().unwrap();
    let dns = alert["computerDnsName"].as_str().unwrap();
    let cases = [
        (
            "list_alerts",
            json!({"input_type": "File Hash", "input": hash}),
        ),
        ("list_alerts", json!({"input_type": "IP", "input": ip})),
        (
            "list_alerts",
            json!({"input_type": "Domain", "input": domain}),
        ),
        (
            "list_alerts",
            json!({"input_type": "User", "input": format!("CONTOSO\\{user}")}),
        ),
        ("list_alerts", json!({"input_type": "Device", "input": dns})),
        ("get_file_alerts", json!({"file_hash": hash})),
        ("get_domain_alerts", json!({"domain": domain})),
        ("get_user_alerts", json!({"user": user})),
        (
            "get_device_alerts",
            json!({"device_id": alert["machineId"]}),
        ),
    ];
    for (action, params) in cases {
        let (status, body) = app.invoke("contoso", action, params.clone()).await;
        assert_eq!(status, 200, "{action} {params}: {body}");
        assert_eq!(body["status"], "success", "{action} {params}: {body}");
        assert!(
            data(&body).iter().any(|a| a["id"] == id),
            "{action} {params} misses {id}"
        );
        assert!(body["summary"]["total_alerts"].as_u64().unwrap() >= 1);
    }
    assert!(app.sim.counters().route("GET", "/api/machines/{id}/alerts") >= 2);
    assert!(app.sim.counters().route("GET", "/api/users/{user}/alerts") >= 2);
}

#[tokio::test]
async fn every_ignore_filter_and_the_lookback_window() {
    let cases: Vec<(TriageFilters, &str, &str)> = vec![
        (
            TriageFilters {
                classifications: vec!["FalsePositive".into()],
                ..Default::default()
            },
            "classification",
            "FalsePositive",
        ),
        (
            TriageFilters {
                determinations: vec!["malware".into()],
                ..Default::default()
            },
            "determination",
            "Malware",
        ),
        (
            TriageFilters {
                severities: vec!["Informational".into()],
                ..Default::default()
            },
            "severity",
            "Informational",
        ),
        (
            TriageFilters {
                statuses: vec!["Resolved".into()],
                ..Default::default()
            },
            "status",
            "Resolved",
        ),
        (
            TriageFilters {
                service_sources: vec!["CustomerTI".into()],
                ..Default::default()
            },
            "detectionSource",
            "CustomerTI",
        ),
    ];
    for (triage, field, value) in cases {
        let app = with_triage(triage, 10_000).await;
        let all = alerts(&app);
        let ignored = all.iter().filter(|a| a[field] == value).count();
        assert!(ignored > 0, "{field}");
        let (status, body) = app
            .invoke("contoso", "list_alerts", json!({"limit": 10000}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["summary"]["total_ignored"], ignored, "{field}");
        assert_eq!(
            body["summary"]["total_alerts"],
            all.len() - ignored,
            "{field}"
        );
        assert!(data(&body).iter().all(|a| a[field] != value), "{field}");
        assert!(body["message"].as_str().unwrap().contains("left out"));
    }
    // lookback_days: only alerts created in the last 10 days are asked for.
    let app = with_triage(
        TriageFilters {
            lookback_days: Some(10),
            ..Default::default()
        },
        10_000,
    )
    .await;
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    let recent = alerts(&app)
        .iter()
        .filter(|a| {
            let t = a["alertCreationTime"].as_str().unwrap();
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
                >= cutoff + time::Duration::minutes(1)
        })
        .count();
    let (status, body) = app
        .invoke("contoso", "list_alerts", json!({"limit": 10000}))
        .await;
    assert_eq!(status, 200, "{body}");
    let got = body["summary"]["total_alerts"].as_u64().unwrap() as usize;
    assert!(
        got >= recent && got < alerts(&app).len(),
        "{got} vs {recent}"
    );
    assert!(
        app.sim
            .counters()
            .by_path
            .keys()
            .all(|k| !k.contains("/api/alerts") || k.starts_with("GET /api/alerts")),
    );
}

#[tokio::test]
async fn get_alert_with_evidence_and_unknown_alert() {
    let app = spawn().await;
    let id = alerts(&app)[0]["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .invoke("contoso", "get_alert", json!({"alert_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "get_alert", "contoso");
    assert_eq!(body["summary"]["alert_id"], id.as_str());
    assert!(data(&body)[0].get("evidence").is_none());
    let (status, body) = app
        .invoke(
            "contoso",
            "get_alert",
            json!({"alert_id": id, "expand_evidence": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["summary"]["total_evidence"].as_u64().unwrap() >= 2);
    assert!(data(&body)[0]["evidence"].is_array());
    let (status, body) = app
        .invoke(
            "contoso",
            "get_alert",
            json!({"alert_id": "da000000000000000000_-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not found in this tenant"),
        "{body}"
    );
}

#[tokio::test]
async fn update_alert_assigns_and_classifies() {
    let app = spawn().await;
    let id = alerts(&app)[0]["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .invoke(
            "contoso",
            "update_alert",
            json!({"alert_id": id, "status": "InProgress", "assigned_to": "analyst@contoso.com",
                   "classification": "truepositive", "determination": "Malware",
                   "comment": "Investigating"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["alert_status"], "InProgress");
    assert_eq!(body["summary"]["assigned_to"], "analyst@contoso.com");
    assert_eq!(body["summary"]["classification"], "TruePositive");
    let row = &data(&body)[0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(
        row["comments"].as_array().unwrap().last().unwrap()["comment"],
        "Investigating"
    );
    let stored = alerts(&app)
        .into_iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap();
    assert_eq!(stored["assignedTo"], "analyst@contoso.com");
    let (status, body) = app
        .invoke(
            "contoso",
            "update_alert",
            json!({"alert_id": "da000000000000000000_-1", "status": "Resolved"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not found in this tenant")
    );
}

#[tokio::test]
async fn update_alerts_in_one_batch() {
    let app = spawn().await;
    let ids: Vec<String> = alerts(&app)[..4]
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let (status, body) = app
        .invoke(
            "contoso",
            "update_alerts",
            json!({"alert_ids": ids[..2].join(","), "status": "Resolved",
                   "classification": "FalsePositive", "determination": "NotMalicious"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_alerts"], 2, "{body}");
    let (status, body) = app
        .invoke(
            "contoso",
            "update_alerts",
            json!({"alert_ids": serde_json::to_string(&ids[2..]).unwrap(), "assigned_to": "a@contoso.com"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_alerts"], 2);
    assert_eq!(data(&body).len(), 2);
    let stored = alerts(&app);
    for id in &ids[..2] {
        let a = stored.iter().find(|a| a["id"] == id.as_str()).unwrap();
        assert_eq!(a["status"], "Resolved");
        assert_eq!(a["classification"], "FalsePositive");
    }
    for id in &ids[2..] {
        let a = stored.iter().find(|a| a["id"] == id.as_str()).unwrap();
        assert_eq!(a["assignedTo"], "a@contoso.com");
    }
    assert_eq!(
        app.sim.counters().route("POST", "/api/alerts/batchupdate"),
        2
    );
}

#[tokio::test]
async fn create_alert_on_a_device_named_by_dns_name() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "create_alert",
            json!({"report_id": "20391", "event_time": "2025-11-20T10:00:00Z",
                   "device_id": "ws-finance-01.contoso.com", "severity": "High",
                   "title": "Suspicious download", "description": "Seen in hunting",
                   "recommended_action": "Isolate the device", "category": "Malware"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let id = body["summary"]["alert_id"].as_str().unwrap();
    assert_eq!(
        data(&body)[0]["computerDnsName"],
        "ws-finance-01.contoso.com"
    );
    assert!(alerts(&app).iter().any(|a| a["id"] == id));
}

#[tokio::test]
async fn alert_user_files_ips_and_domains() {
    let app = spawn().await;
    let alert = alerts(&app)
        .into_iter()
        .find(|a| a["evidence"].as_array().is_some_and(|e| e.len() == 4))
        .unwrap();
    let id = alert["id"].as_str().unwrap();
    let (status, body) = app
        .invoke("contoso", "get_alert_user", json!({"alert_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["summary"]["username"],
        alert["evidence"][3]["accountName"]
    );
    for (action, key) in [
        ("get_alert_files", "total_files"),
        ("get_alert_ips", "total_ips"),
        ("get_alert_domains", "total_domains"),
    ] {
        let (status, body) = app.invoke("contoso", action, json!({"alert_id": id})).await;
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(body["status"], "success", "{action}: {body}");
        assert_eq!(body["summary"][key], 1, "{action}: {body}");
        let (status, body) = app
            .invoke("contoso", action, json!({"alert_id": id, "offset": 1}))
            .await;
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(body["summary"][key], 0, "{action}: {body}");
    }
    let (_, body) = app
        .invoke("contoso", "get_alert_ips", json!({"alert_id": id}))
        .await;
    assert_eq!(data(&body)[0]["id"], alert["evidence"][1]["ipAddress"]);
    let (status, body) = app
        .invoke(
            "contoso",
            "get_alert_files",
            json!({"alert_id": "da000000000000000000_-1"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not found in this tenant")
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_before_any_upstream_call() {
    let app = spawn().await;
    let many: Vec<String> = (0..501).map(|i| format!("da{i}")).collect();
    let cases = [
        ("list_alerts", json!({"severity": "Critical"}), "severity"),
        ("list_alerts", json!({"status": "Open"}), "status"),
        ("list_alerts", json!({"input_type": "Email"}), "input_type"),
        ("list_alerts", json!({"input_type": "IP"}), "input"),
        (
            "list_alerts",
            json!({"input_type": "IP", "input": "10.0.0.999"}),
            "input",
        ),
        (
            "list_alerts",
            json!({"filter": "status eq 'New'&$top=1"}),
            "filter",
        ),
        ("list_alerts", json!({"filter": "$top=5"}), "filter"),
        (
            "list_alerts",
            json!({"filter": "status eq 'New'#"}),
            "filter",
        ),
        ("list_alerts", json!({"since": "last week"}), "since"),
        ("list_alerts", json!({"limit": 10001}), "limit"),
        ("get_alert", json!({"alert_id": "../machines"}), "alert_id"),
        ("get_alert", json!({"alert_id": "id eq 'x'"}), "alert_id"),
        ("update_alert", json!({"alert_id": "da123"}), "at least one"),
        (
            "update_alert",
            json!({"alert_id": "da123", "status": "Closed"}),
            "status",
        ),
        (
            "update_alert",
            json!({"alert_id": "da123", "classification": "Maybe"}),
            "classification",
        ),
        (
            "update_alert",
            json!({"alert_id": "bad id", "status": "New"}),
            "alert_id",
        ),
        (
            "update_alerts",
            json!({"alert_ids": many.join(","), "status": "Resolved"}),
            "alert_ids",
        ),
        (
            "update_alerts",
            json!({"alert_ids": "da1,da2"}),
            "at least one",
        ),
        (
            "update_alerts",
            json!({"alert_ids": "da1,bad/id", "status": "New"}),
            "alert_ids",
        ),
        ("get_file_alerts", json!({"file_hash": "abc"}), "file_hash"),
        ("get_domain_alerts", json!({"domain": "a/b"}), "domain"),
        ("get_alert_files", json!({"alert_id": "x y"}), "alert_id"),
        (
            "create_alert",
            json!({"report_id": "1", "event_time": "yesterday", "device_id": "ws-finance-01",
                   "severity": "High", "title": "t", "description": "d",
                   "recommended_action": "r", "category": "Malware"}),
            "event_time",
        ),
        (
            "create_alert",
            json!({"report_id": "1", "event_time": "2025-11-20T10:00:00Z",
                   "device_id": "ws-finance-01", "severity": "Severe", "title": "t",
                   "description": "d", "recommended_action": "r", "category": "Malware"}),
            "severity",
        ),
    ];
    for (action, params, named) in cases {
        let (status, body) = app.invoke("contoso", action, params.clone()).await;
        assert_eq!(status, 400, "{action} {params}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{action} {params}: {body}"
        );
    }
    assert_eq!(api_calls(&app), 0, "{:?}", app.sim.counters().by_route);
}

#[tokio::test]
async fn unknown_device_fails_naming_it() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "get_device_alerts",
            json!({"device_id": "0000000000000000000000000000000000000000"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    assert!(
        body["message"].as_str().unwrap().contains("not found"),
        "{body}"
    );
}
