//! Enrichment and device information actions through the host against the simulator: each
//! action end to end, lists paged past one upstream page, refused inputs (no upstream call),
//! unknown subjects, offboarding refused unless the asset allows it, and the investigation
//! package link kept out of the logs.

use defender_sim::scenario::Scenario;
use defender_soar::config::{BudgetConfig, RateLimit};
use serde_json::{Value, json};

use crate::helpers::*;

const FILE_SHA1: &str = "5b7e2c0f6a1d9e8b4c3a2f1e0d9c8b7a6f5e4d3c";
const FILE_SHA256: &str = "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea";
const UNKNOWN_SHA1: &str = "0000000000000000000000000000000000000001";

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

fn data(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap()
}

fn device(app: &TestApp, n: usize) -> String {
    app.sim.scenario().machines[n]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn quick() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.timings.pending_ms = 50;
    s.timings.in_progress_ms = 50;
    s
}

async fn ok(app: &TestApp, action: &str, params: Value) -> Value {
    let (status, body) = app.invoke("contoso", action, params).await;
    assert_eq!(status, 200, "{action}: {body}");
    assert_envelope(&body, action, "contoso");
    body
}

#[tokio::test]
async fn file_info_and_prevalence_count_the_devices_that_have_the_file() {
    let app = spawn().await;
    let body = ok(
        &app,
        "get_file_info",
        json!({"file_hash": FILE_SHA256.to_uppercase()}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["sha256"], FILE_SHA256);
    assert_eq!(data(&body)[0]["sha256"], FILE_SHA256);
    assert!(data(&body)[0].get("@odata.context").is_none());

    let body = ok(&app, "file_prevalence", json!({"file_hash": FILE_SHA256})).await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["organization_prevalence"], 2, "{body}");
    assert_eq!(body["summary"]["look_back_hours"], 720);
    let body = ok(
        &app,
        "file_prevalence",
        json!({"file_hash": FILE_SHA1, "look_back_hours": 24}),
    )
    .await;
    assert_eq!(body["summary"]["organization_prevalence"], 1, "{body}");
    assert_eq!(app.sim.counters().route("GET", "/api/files/{sha}/stats"), 2);

    let body = ok(&app, "get_file_info", json!({"file_hash": UNKNOWN_SHA1})).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not found"),
        "{body}"
    );
}

#[tokio::test]
async fn ip_and_domain_prevalence() {
    let app = spawn().await;
    let body = ok(&app, "ip_prevalence", json!({"ip": "10.1.4.21"})).await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["organization_prevalence"], 1, "{body}");
    assert_eq!(data(&body)[0]["ipAddress"], "10.1.4.21");
    let body = ok(
        &app,
        "domain_prevalence",
        json!({"domain": "Contoso.com", "look_back_hours": "48"}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["organization_prevalence"], 3, "{body}");
    assert_eq!(body["summary"]["look_back_hours"], 48);
    let body = ok(
        &app,
        "domain_prevalence",
        json!({"domain": "nowhere.example"}),
    )
    .await;
    assert_eq!(body["summary"]["organization_prevalence"], 0, "{body}");
}

#[tokio::test]
async fn device_lists_page_past_one_upstream_page() {
    let app = spawn_with(scenario_with_page_size(1)).await;
    let body = ok(&app, "get_domain_devices", json!({"domain": "contoso.com"})).await;
    assert_eq!(body["summary"]["total_devices"], 3, "{body}");
    assert_eq!(
        app.sim
            .counters()
            .route("GET", "/api/domains/{domain}/machines"),
        3
    );
    let body = ok(&app, "get_file_devices", json!({"file_hash": FILE_SHA256})).await;
    assert_eq!(body["summary"]["total_devices"], 2, "{body}");
    assert_eq!(
        app.sim.counters().route("GET", "/api/files/{sha}/machines"),
        2
    );

    // The tenant's first user is logged on to every device.
    let machines = app.sim.scenario().machines.len();
    let body = ok(
        &app,
        "get_user_devices",
        json!({"user_id": "CONTOSO\\admin", "limit": 4}),
    )
    .await;
    assert_eq!(body["summary"]["total_devices"], 4.min(machines), "{body}");
    assert_eq!(
        app.sim
            .counters()
            .route("GET", "/api/users/{user}/machines"),
        4
    );
    // Splunk's identifier for the same action.
    let body = ok(
        &app,
        "get_user_related_devices",
        json!({"user_id": "nobody@contoso.com"}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_devices"], 0);
}

#[tokio::test]
async fn find_devices_by_ip_matches_the_last_internal_address() {
    let app = spawn().await;
    let at = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = ok(
        &app,
        "find_devices_by_ip",
        json!({"ip": "10.1.4.21", "timestamp": at}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_devices"], 1, "{body}");
    assert_eq!(data(&body)[0]["id"], device(&app, 0));
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("15 minutes"), "{message}");
    let body = ok(&app, "find_devices_by_ip", json!({"ip": "192.0.2.77"})).await;
    assert_eq!(body["summary"]["total_devices"], 0, "{body}");
    assert_eq!(app.sim.counters().route("GET", "/api/machines/{id}"), 2);
}

#[tokio::test]
async fn bad_inputs_are_refused_naming_the_parameter_without_an_upstream_call() {
    let app = spawn().await;
    let long_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(31))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let future = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let cases = [
        (
            "get_file_info",
            json!({"file_hash": "d41d8cd98f00b204e9800998ecf8427e"}),
            "file_hash",
        ),
        ("file_prevalence", json!({"file_hash": "xyz"}), "file_hash"),
        (
            "file_prevalence",
            json!({"file_hash": FILE_SHA1, "look_back_hours": 721}),
            "look_back_hours",
        ),
        (
            "file_prevalence",
            json!({"file_hash": FILE_SHA1, "look_back_hours": 0}),
            "look_back_hours",
        ),
        ("ip_prevalence", json!({"ip": "10.1.4"}), "ip"),
        ("domain_prevalence", json!({"domain": "a/../b"}), "domain"),
        (
            "get_domain_devices",
            json!({"domain": "bad domain"}),
            "domain",
        ),
        ("get_user_devices", json!({"user_id": "a b"}), "user_id"),
        (
            "find_devices_by_ip",
            json!({"ip": "10.1.4.21", "timestamp": long_ago}),
            "timestamp",
        ),
        (
            "find_devices_by_ip",
            json!({"ip": "10.1.4.21", "timestamp": future}),
            "timestamp",
        ),
        (
            "find_devices_by_ip",
            json!({"ip": "10.1.4.21", "timestamp": "soon"}),
            "timestamp",
        ),
        (
            "get_device_details",
            json!({"device_ids": "abc"}),
            "device_ids",
        ),
        (
            "get_device_details",
            json!({"device_ids": " , "}),
            "device_ids",
        ),
        (
            "list_sessions",
            json!({"device_id": "no such/host"}),
            "device_id",
        ),
        (
            "start_investigation",
            json!({"device_id": device(&app, 0), "comment": "  "}),
            "comment",
        ),
        (
            "get_investigation",
            json!({"investigation_id": "a/b"}),
            "investigation_id",
        ),
        ("list_investigations", json!({"state": "Sleeping"}), "state"),
        ("list_investigations", json!({"id": "x'y"}), "id"),
        ("list_machine_actions", json!({"status": "Done"}), "status"),
        (
            "list_machine_actions",
            json!({"since": "yesterday"}),
            "since",
        ),
        (
            "get_investigation_uri",
            json!({"action_id": "not-a-guid"}),
            "action_id",
        ),
    ];
    for (action, params, param) in cases {
        let (status, body) = app.invoke("contoso", action, params).await;
        assert_eq!(status, 400, "{action}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(param),
            "{action}: {body}"
        );
    }
    assert_eq!(api_calls(&app), 0);
}

#[tokio::test]
async fn device_details_report_each_id_and_missing_ones_do_not_fail_the_others() {
    let app = spawn().await;
    let a = device(&app, 0);
    let b = device(&app, 1);
    let missing = "ffffffffffffffffffffffffffffffffffffffff";
    let body = ok(
        &app,
        "get_device_details",
        json!({"device_ids": format!("[\"{a}\", \"{missing}\", \"{b}\"]")}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_devices"], 2);
    assert_eq!(body["summary"]["not_found"], 1);
    assert_eq!(data(&body).len(), 3);
    assert_eq!(data(&body)[0]["id"], a.as_str());
    assert_eq!(data(&body)[1]["id"], missing);
    assert_eq!(data(&body)[1]["found"], false);
    assert!(body["message"].as_str().unwrap().contains(missing));
    assert_eq!(app.sim.counters().route("GET", "/api/machines/{id}"), 3);

    let body = ok(&app, "get_device_details", json!({"device_ids": missing})).await;
    assert_eq!(body["status"], "failed", "{body}");
}

#[tokio::test]
async fn logon_users_under_both_names() {
    let app = spawn().await;
    let dev = device(&app, 0);
    for action in ["list_sessions", "get_active_users"] {
        let (status, body) = app
            .invoke("contoso", action, json!({"device_id": dev}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
        assert_eq!(body["summary"]["total_users"], 2, "{body}");
        assert_eq!(data(&body)[0]["accountName"], "admin");
    }
    // By computer name: one lookup, then the users.
    let body = ok(
        &app,
        "list_sessions",
        json!({"device_id": "ws-finance-01.contoso.com"}),
    )
    .await;
    assert_eq!(body["summary"]["device_id"], dev.as_str(), "{body}");
    assert_eq!(
        app.sim
            .counters()
            .route("GET", "/api/machines/{id}/logonusers"),
        3
    );
    let body = ok(
        &app,
        "list_sessions",
        json!({"device_id": "ffffffffffffffffffffffffffffffffffffffff"}),
    )
    .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["message"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn offboarding_is_refused_unless_the_asset_allows_it() {
    let app = spawn_with(quick()).await;
    let dev = device(&app, 2);
    let params = json!({"device_id": dev, "comment": "retired", "timeout": 20});
    let (status, body) = app
        .invoke("contoso", "offboard_device", params.clone())
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("allow_offboard"),
        "{body}"
    );
    assert_eq!(api_calls(&app), 0);

    let app = spawn_configured(quick(), |config| {
        config.assets.get_mut("contoso").unwrap().allow_offboard = true;
    })
    .await;
    let body = ok(&app, "offboard_device", params).await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["offboard_status"], "Succeeded", "{body}");
    assert_eq!(data(&body)[0]["type"], "Offboard");
    assert_eq!(
        app.sim
            .counters()
            .route("POST", "/api/machines/{id}/offboard"),
        1
    );
    // The offboarding is in the machine action list, filtered by type and device.
    let body = ok(
        &app,
        "list_machine_actions",
        json!({"type": "Offboard", "device_id": dev}),
    )
    .await;
    assert_eq!(body["summary"]["total_actions"], 1, "{body}");
}

#[tokio::test]
async fn investigations_are_started_listed_paged_and_read() {
    let app = spawn_with(scenario_with_page_size(2)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = ok(
            &app,
            "start_investigation",
            json!({"device_id": device(&app, n), "comment": "triage"}),
        )
        .await;
        assert_eq!(body["status"], "success", "{body}");
        assert_eq!(body["summary"]["investigation_state"], "Running");
        ids.push(
            body["summary"]["investigation_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let body = ok(&app, "list_investigations", json!({})).await;
    assert_eq!(body["summary"]["total_investigations"], 3, "{body}");
    assert_eq!(app.sim.counters().route("GET", "/api/investigations"), 2);
    let body = ok(
        &app,
        "list_investigations",
        json!({"offset": 1, "limit": 1}),
    )
    .await;
    assert_eq!(data(&body)[0]["id"], ids[1].as_str(), "{body}");
    let body = ok(
        &app,
        "list_investigations",
        json!({"device_id": device(&app, 2), "state": "running"}),
    )
    .await;
    assert_eq!(body["summary"]["total_investigations"], 1, "{body}");
    assert_eq!(data(&body)[0]["id"], ids[2].as_str());

    let body = ok(
        &app,
        "get_investigation",
        json!({"investigation_id": ids[0]}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(data(&body)[0]["machineId"], device(&app, 0).as_str());
    let body = ok(
        &app,
        "get_investigation",
        json!({"investigation_id": "9999"}),
    )
    .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["message"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn machine_actions_are_listed_past_one_page_and_filtered() {
    let mut scenario = quick();
    scenario.default_page_size = 2;
    let app = spawn_with(scenario).await;
    for n in 0..3 {
        let body = ok(
            &app,
            "scan_device",
            json!({"device_id": device(&app, n), "comment": "sweep", "timeout": 20}),
        )
        .await;
        assert_eq!(body["status"], "success", "{body}");
    }
    app.sim.reset_counters();
    let body = ok(
        &app,
        "list_machine_actions",
        json!({"type": "RunAntiVirusScan", "status": "Succeeded", "since": "2020-01-01"}),
    )
    .await;
    assert_eq!(body["summary"]["total_actions"], 3, "{body}");
    assert_eq!(app.sim.counters().route("GET", "/api/machineactions"), 2);
    let body = ok(&app, "list_machine_actions", json!({"type": "Isolate"})).await;
    assert_eq!(body["summary"]["total_actions"], 0, "{body}");
}

#[tokio::test]
async fn the_package_link_is_answered_but_never_logged() {
    // collect_investigation_package asks for the link too: room for more than Defender's 2 a
    // minute on both sides.
    let mut scenario = quick();
    scenario.rate_limits.package_uri.per_minute = 20;
    let app = spawn_configured(scenario, |config| {
        let budget = BudgetConfig {
            package_uri: RateLimit {
                per_minute: 20,
                per_hour: Some(120),
            },
            ..BudgetConfig::default()
        };
        config.budgets.insert("contoso".into(), budget);
    })
    .await;
    let body = ok(
        &app,
        "collect_investigation_package",
        json!({"device_id": device(&app, 0), "comment": "forensics", "timeout": 30}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    let event_id = body["summary"]["event_id"].as_str().unwrap().to_string();
    let body = ok(
        &app,
        "get_investigation_uri",
        json!({"action_id": event_id}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    let link = data(&body)[0]["link"].as_str().unwrap().to_string();
    assert!(link.contains("/download/"), "{link}");
    let message = body["message"].as_str().unwrap();
    assert!(!message.contains(&link), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
    let signature = link.rsplit('/').next().unwrap();
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(!logs.contains(signature), "the package link was logged");

    // A scan has no package.
    let scan = ok(
        &app,
        "scan_device",
        json!({"device_id": device(&app, 1), "comment": "sweep", "timeout": 20}),
    )
    .await;
    let scan_id = scan["summary"]["event_id"].as_str().unwrap();
    let body = ok(&app, "get_investigation_uri", json!({"action_id": scan_id})).await;
    assert_eq!(body["status"], "failed", "{body}");
}
