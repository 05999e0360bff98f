//! Indicator actions through the host against the simulator: every action, paging, batches
//! split over several import calls, refused inputs (no upstream call), the tenant's indicator
//! limit and unknown ids.

use serde_json::{Map, Value, json};

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

fn indicators(app: &TestApp) -> Vec<Map<String, Value>> {
    app.sim.world().indicators.clone()
}

fn find<'a>(all: &'a [Map<String, Value>], value: &str) -> Option<&'a Map<String, Value>> {
    all.iter().find(|i| i["indicatorValue"] == value)
}

fn data(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap()
}

const SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[tokio::test]
async fn list_indicators_pages_past_one_upstream_page_and_filters() {
    let app = spawn_with(scenario_with_page_size(2)).await;
    let (status, body) = app
        .invoke("contoso", "list_indicators", json!({"limit": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "list_indicators", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_indicators"], 3);
    assert_eq!(app.sim.counters().route("GET", "/api/indicators"), 2);
    assert!(
        data(&body)
            .iter()
            .all(|i| i.get("@odata.context").is_none())
    );

    let (status, body) = app
        .invoke(
            "contoso",
            "list_indicators",
            json!({"filter": "indicatorType eq 'IpAddress'"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_indicators"], 1, "{body}");
    assert_eq!(data(&body)[0]["indicatorValue"], "203.0.113.66");
    assert_no_summary_drift(&app.app);
}

#[tokio::test]
async fn submit_get_update_and_delete_one_indicator() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "submit_indicator",
            json!({
                "title": "Ransomware payload",
                "description": "Seen on ws-finance-01",
                "indicator_type": "filesha256",
                "indicator_value": SHA256.to_uppercase(),
                "action": "block",
                "severity": "high",
                "application": "payload.exe",
                "expiration_time": "2099-01-01T00:00:00Z",
                "recommended_actions": "Isolate the device",
                "rbac_group_names": "Finance, Servers",
                "generate_alert": true,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let id = body["summary"]["indicator_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body["summary"]["indicator_type"], "FileSha256");
    let stored = find(&indicators(&app), SHA256).unwrap().clone();
    assert_eq!(stored["id"], id.as_str());
    assert_eq!(stored["action"], "Block");
    assert_eq!(stored["severity"], "High");
    assert_eq!(stored["expirationTime"], "2099-01-01T00:00:00Z");
    assert_eq!(stored["rbacGroupNames"], json!(["Finance", "Servers"]));
    assert_eq!(stored["generateAlert"], true);

    let (status, body) = app
        .invoke("contoso", "get_indicator", json!({"indicator_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(data(&body)[0]["indicatorValue"], SHA256);
    assert_eq!(body["summary"]["action"], "Block");

    // Splunk's update: one item of an import, the same type and value, another action.
    let (status, body) = app
        .invoke(
            "contoso",
            "update_indicator",
            json!({
                "indicator_value": SHA256,
                "indicator_type": "FileSha256",
                "action": "Warn",
                "indicator_title": "Ransomware payload (reviewed)",
                "indicator_description": "Downgraded to a warning",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["indicator_id"], id.as_str());
    assert_eq!(
        app.sim.counters().route("POST", "/api/indicators/import"),
        1
    );
    let stored = find(&indicators(&app), SHA256).unwrap().clone();
    assert_eq!(stored["action"], "Warn");
    assert_eq!(stored["title"], "Ransomware payload (reviewed)");

    let (status, body) = app
        .invoke("contoso", "delete_indicator", json!({"indicator_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert!(find(&indicators(&app), SHA256).is_none());

    // Deleted (or never known): the upstream 404 is said plainly.
    for action in ["delete_indicator", "get_indicator"] {
        let (status, body) = app
            .invoke("contoso", action, json!({"indicator_id": id}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "failed", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("no indicator with id {id}")),
            "{message}"
        );
    }
    assert_no_summary_drift(&app.app);
}

#[tokio::test]
async fn audit_with_an_alert_is_accepted() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "submit_indicator",
            json!({"title": "t", "description": "d", "indicator_type": "Url",
                   "indicator_value": "https://phish.example/login?x=1", "action": "Audit",
                   "generate_alert": "true"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let stored = find(&indicators(&app), "https://phish.example/login?x=1")
        .unwrap()
        .clone();
    assert_eq!(stored["action"], "Audit");
    assert_eq!(stored["generateAlert"], true);
}

#[tokio::test]
async fn bad_inputs_are_refused_naming_the_parameter_before_any_call() {
    let app = spawn().await;
    let ok = json!({"title": "t", "description": "d", "indicator_type": "FileSha1",
                    "indicator_value": "a".repeat(40), "action": "Block"});
    let with = |changes: Value| {
        let mut p = ok.clone();
        for (k, v) in changes.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let update_ok = json!({"indicator_title": "t", "indicator_description": "d",
        "indicator_type": "IpAddress", "indicator_value": "10.0.0.1", "action": "Warn"});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "submit_indicator",
            with(json!({"indicator_value": "a".repeat(64)})),
            "'indicator_value'",
        ),
        (
            "submit_indicator",
            with(json!({"indicator_type": "FileSha256"})),
            "'indicator_value'",
        ),
        (
            "submit_indicator",
            with(json!({"indicator_type": "FileMd5"})),
            "'indicator_value'",
        ),
        (
            "submit_indicator",
            with(json!({"indicator_type": "CertificateThumbprint", "indicator_value": "xyz"})),
            "'indicator_value'",
        ),
        (
            "submit_indicator",
            with(json!({"indicator_type": "IpAddress", "indicator_value": "10.0.0.300"})),
            "'indicator_value'",
        ),
        (
            "submit_indicator",
            with(json!({"indicator_type": "DomainName", "indicator_value": "bad domain"})),
            "'indicator_value'",
        ),
        (
            "submit_indicator",
            with(json!({"indicator_type": "Url", "indicator_value": "ftp://x.example/"})),
            "'indicator_value'",
        ),
        (
            "submit_indicator",
            with(json!({"indicator_type": "Registry"})),
            "'indicator_type'",
        ),
        (
            "submit_indicator",
            with(json!({"action": "Quarantine"})),
            "'action'",
        ),
        (
            "submit_indicator",
            with(json!({"severity": "Critical"})),
            "'severity'",
        ),
        (
            "submit_indicator",
            with(json!({"expiration_time": "2020-01-01T00:00:00Z"})),
            "'expiration_time'",
        ),
        (
            "submit_indicator",
            with(json!({"expiration_time": "next week"})),
            "'expiration_time'",
        ),
        (
            "submit_indicator",
            with(json!({"action": "Audit"})),
            "'action'",
        ),
        (
            "submit_indicator",
            with(json!({"action": "audit", "generate_alert": false})),
            "generate_alert",
        ),
        ("submit_indicator", with(json!({"title": "   "})), "'title'"),
        (
            "submit_indicator",
            with(json!({"title": "x".repeat(251)})),
            "'title'",
        ),
        (
            "submit_indicator",
            with(json!({"description": "x".repeat(4001)})),
            "'description'",
        ),
        (
            "submit_indicator",
            with(json!({"rbac_group_names": "[1, 2]"})),
            "'rbac_group_names'",
        ),
        (
            "update_indicator",
            json!({"indicator_description": "d", "indicator_type": "IpAddress", "indicator_value": "10.0.0.1", "action": "Warn"}),
            "'indicator_title'",
        ),
        (
            "update_indicator",
            {
                let mut p = update_ok.clone();
                p["indicator_value"] = json!("host.example");
                p
            },
            "'indicator_value'",
        ),
        (
            "update_indicator",
            {
                let mut p = update_ok.clone();
                p["indicator_description"] = json!(" ");
                p
            },
            "'indicator_description'",
        ),
        (
            "update_indicator",
            {
                let mut p = update_ok.clone();
                p["expiration_time"] = json!("2001-01-01T00:00:00+02:00");
                p
            },
            "'expiration_time'",
        ),
        (
            "update_indicator_batch",
            json!({"indicator_batch": "not json"}),
            "'indicator_batch'",
        ),
        (
            "update_indicator_batch",
            json!({"indicator_batch": "[]"}),
            "'indicator_batch'",
        ),
        (
            "get_indicator",
            json!({"indicator_id": "12a"}),
            "'indicator_id'",
        ),
        (
            "delete_indicator",
            json!({"indicator_id": "../machines"}),
            "'indicator_id'",
        ),
        (
            "delete_indicators",
            json!({"indicator_ids": "1, x"}),
            "'indicator_ids'",
        ),
        (
            "delete_indicators",
            json!({"indicator_ids": " , "}),
            "'indicator_ids'",
        ),
        (
            "list_indicators",
            json!({"filter": "title eq 'a'&$top=1"}),
            "'filter'",
        ),
        ("list_indicators", json!({"limit": 10001}), "'limit'"),
    ];
    for (action, params, named) in cases {
        let (status, body) = app.invoke("contoso", action, params.clone()).await;
        assert_eq!(status, 400, "{action} {params}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{action} {params}: {body}"
        );
    }
    assert_eq!(api_calls(&app), 0);
    assert_eq!(indicators(&app).len(), 3);
}

#[tokio::test]
async fn a_batch_of_more_than_500_takes_two_import_calls_and_reports_each() {
    let app = spawn().await;
    let mut batch: Vec<Value> = (0..501u32)
        .map(|i| {
            json!({"indicatorValue": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                   "indicatorType": "IpAddress", "action": "Block",
                   "title": format!("c2 {i}"), "description": "batch"})
        })
        .collect();
    // One refused here (Audit without an alert), never sent; one not an object.
    batch.insert(
        3,
        json!({"indicatorValue": "evil.example", "indicatorType": "DomainName",
               "action": "Audit", "title": "t", "description": "d"}),
    );
    batch.push(json!("not an indicator"));
    let (status, body) = app
        .invoke(
            "contoso",
            "update_indicator_batch",
            json!({"indicator_batch": serde_json::to_string(&batch).unwrap()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["summary"]["total_indicators"], 503);
    assert_eq!(body["summary"]["succeeded"], 501);
    assert_eq!(body["summary"]["failed"], 2);
    assert_eq!(
        app.sim.counters().route("POST", "/api/indicators/import"),
        2
    );
    let rows = data(&body);
    assert_eq!(rows.len(), 503);
    assert_eq!(rows[3]["isFailed"], true);
    let reason = rows[3]["failureReason"].as_str().unwrap();
    assert!(
        reason.starts_with("not sent") && reason.contains("generateAlert"),
        "{reason}"
    );
    assert_eq!(rows[502]["isFailed"], true);
    assert_eq!(rows[0]["isFailed"], false);
    assert!(rows[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(rows[501]["indicatorValue"], "10.0.1.244");
    let all = indicators(&app);
    assert_eq!(all.len(), 3 + 501);
    assert!(find(&all, "evil.example").is_none());

    // Every one imported: success.
    let (status, body) = app
        .invoke(
            "contoso",
            "update_indicator_batch",
            json!({"indicator_batch": serde_json::to_string(&batch[..2]).unwrap()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["succeeded"], 2);
    assert_no_summary_drift(&app.app);
}

#[tokio::test]
async fn delete_indicators_sends_one_batch_delete_and_refuses_more_than_500() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "delete_indicators",
            json!({"indicator_ids": "[1, \"2\", \"2\"]"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_indicators"], 2);
    assert_eq!(
        app.sim
            .counters()
            .route("POST", "/api/indicators/batchdelete"),
        1
    );
    let left = indicators(&app);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], "3");

    let many: Vec<String> = (1..=501).map(|i| i.to_string()).collect();
    let (status, body) = app
        .invoke(
            "contoso",
            "delete_indicators",
            json!({"indicator_ids": many.join(",")}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("'indicator_ids'") && message.contains("501"),
        "{message}"
    );
    assert_eq!(
        app.sim
            .counters()
            .route("POST", "/api/indicators/batchdelete"),
        1
    );
}

#[tokio::test]
async fn a_full_tenant_is_explained() {
    let mut scenario = defender_sim::scenario::Scenario::default_scenario();
    scenario.max_active_indicators = 3;
    let app = spawn_with(scenario).await;
    let (status, body) = app
        .invoke(
            "contoso",
            "submit_indicator",
            json!({"title": "t", "description": "d", "indicator_type": "FileMd5",
                   "indicator_value": "d41d8cd98f00b204e9800998ecf8427e", "action": "Block"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("15000") && message.contains("delete expired"),
        "{message}"
    );
    assert_eq!(app.sim.counters().route("POST", "/api/indicators"), 1);

    // The same through an import: the row's reason explains it.
    let (status, body) = app
        .invoke(
            "contoso",
            "update_indicator",
            json!({"indicator_title": "t", "indicator_description": "d",
                   "indicator_type": "FileMd5", "action": "Block",
                   "indicator_value": "d41d8cd98f00b204e9800998ecf8427e"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("delete expired"),
        "{body}"
    );
    // Updating an indicator the tenant already holds still works.
    let (status, body) = app
        .invoke(
            "contoso",
            "submit_indicator",
            json!({"title": "t2", "description": "d", "indicator_type": "IpAddress",
                   "indicator_value": "203.0.113.66", "action": "Audit", "generate_alert": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["indicator_id"], "2");
}

#[tokio::test]
async fn an_app_with_ti_readwrite_sees_only_its_own_and_one_without_is_told_what_it_lacks() {
    let mut scenario = defender_sim::scenario::Scenario::default_scenario();
    scenario.tenants[0].apps[1]
        .roles
        .push("Ti.ReadWrite".into());
    let mut without = scenario.clone();
    without.tenants[0].apps[1]
        .roles
        .retain(|r| !r.starts_with("Ti."));
    let s = scenario.clone();
    let app = spawn_configured(scenario, move |c| {
        let base = c.assets.values().next().unwrap().api_url.clone();
        c.assets
            .insert("own".into(), asset_on_app("own", &s, &base, 1));
    })
    .await;
    let (status, body) = app
        .invoke(
            "own",
            "submit_indicator",
            json!({"title": "t", "description": "d", "indicator_type": "DomainName",
                   "indicator_value": "own.example", "action": "Warn"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let (_, body) = app.invoke("own", "list_indicators", json!({})).await;
    assert_eq!(body["summary"]["total_indicators"], 1, "{body}");
    assert_eq!(data(&body)[0]["indicatorValue"], "own.example");
    let (_, body) = app.invoke("contoso", "list_indicators", json!({})).await;
    assert_eq!(body["summary"]["total_indicators"], 4, "{body}");
    // Another app's indicator is unknown to this one.
    let (_, body) = app
        .invoke("own", "delete_indicator", json!({"indicator_id": "1"}))
        .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(indicators(&app).len(), 4);

    // No Ti permission at all: refused before any indicator call, naming the permission.
    let s = without.clone();
    let app = spawn_configured(without, move |c| {
        let base = c.assets.values().next().unwrap().api_url.clone();
        c.assets
            .insert("none".into(), asset_on_app("none", &s, &base, 1));
    })
    .await;
    let (_, body) = app.invoke("none", "list_indicators", json!({})).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Ti.ReadWrite.All"),
        "{body}"
    );
    assert_eq!(app.sim.counters().route("GET", "/api/indicators"), 0);
}
