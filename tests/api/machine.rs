//! Device response actions against the simulator: lifecycle, timeouts, failures, duplicates,
//! upstream faults, shared status polling, the investigation package in the vault, cancel, tags
//! and input checks.

use std::time::{Duration, Instant};

use defender_sim::{Fault, FaultKind, Scenario};
use defender_soar::actions::machine::waiting;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const COMMENT: &str = "SOC playbook 4711";

/// The default scenario with lifecycle timings (ms).
fn timed(pending_ms: u64, in_progress_ms: u64) -> Scenario {
    let mut s = Scenario::default_scenario();
    s.timings.pending_ms = pending_ms;
    s.timings.in_progress_ms = in_progress_ms;
    s
}

/// The id of the scenario's `n`th machine.
fn device(app: &TestApp, n: usize) -> String {
    app.sim.scenario().machines[n]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Calls the simulator's Defender API directly as the scenario's first app.
async fn sim_api(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let scenario = app.sim.scenario();
    let tenant = scenario.first_tenant().unwrap();
    let client_app = tenant.apps.first().unwrap();
    let base = app.sim.base_url();
    let token: Value = app
        .client
        .post(format!("{base}/{}/oauth2/v2.0/token", tenant.id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_app.client_id.as_str()),
            ("client_secret", client_app.secret.as_str()),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = token["access_token"].as_str().unwrap().to_string();
    let req = match method {
        "POST" => app.client.post(format!("{base}{path}")),
        _ => app.client.get(format!("{base}{path}")),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.bearer_auth(bearer).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Creates a pending Isolate directly in the simulator (not through the host).
async fn pending_isolation(app: &TestApp, device: &str) -> String {
    let (status, action) = sim_api(
        app,
        "POST",
        &format!("/api/machines/{device}/isolate"),
        Some(json!({"Comment": "created by the test", "IsolationType": "Full"})),
    )
    .await;
    assert_eq!(status, 201, "{action}");
    action["id"].as_str().unwrap().to_string()
}

/// Requests to `/api/...` routes, any method.
fn api_calls(app: &TestApp) -> u64 {
    app.sim
        .counters()
        .by_route
        .iter()
        .filter(|(k, _)| {
            k.split_once(' ')
                .is_some_and(|(_, r)| r.starts_with("/api"))
        })
        .map(|(_, m)| m.values().sum::<u64>())
        .sum()
}

/// Status GETs of one machine action.
fn status_gets(app: &TestApp, event_id: &str) -> u64 {
    app.sim
        .counters()
        .path("GET", &format!("/api/machineactions/{event_id}"))
}

/// Polls `cond` every 5 ms for up to 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (action id, extra parameters, summary status key, Defender type, POST route).
fn device_actions() -> Vec<(
    &'static str,
    Value,
    &'static str,
    &'static str,
    &'static str,
)> {
    vec![
        (
            "quarantine_device",
            json!({"type": "Selective"}),
            "quarantine_status",
            "Isolate",
            "/api/machines/{id}/isolate",
        ),
        (
            "unquarantine_device",
            json!({}),
            "unquarantine_status",
            "Unisolate",
            "/api/machines/{id}/unisolate",
        ),
        (
            "restrict_app_execution",
            json!({}),
            "restrict_app_execution_status",
            "RestrictCodeExecution",
            "/api/machines/{id}/restrictcodeexecution",
        ),
        (
            "remove_app_restriction",
            json!({}),
            "remove_app_restriction_status",
            "UnrestrictCodeExecution",
            "/api/machines/{id}/unrestrictcodeexecution",
        ),
        (
            "scan_device",
            json!({"scan_type": "Full"}),
            "scan_status",
            "RunAntiVirusScan",
            "/api/machines/{id}/runantivirusscan",
        ),
        (
            "quarantine_file",
            json!({"file_hash": "5B7E2C0F6A1D9E8B4C3A2F1E0D9C8B7A6F5E4D3C"}),
            "quarantine_file_status",
            "StopAndQuarantineFile",
            "/api/machines/{id}/stopandquarantinefile",
        ),
        (
            "collect_investigation_package",
            json!({}),
            "collect_investigation_package_status",
            "CollectInvestigationPackage",
            "/api/machines/{id}/collectinvestigationpackage",
        ),
    ]
}

#[tokio::test]
async fn every_device_action_runs_its_lifecycle_to_succeeded() {
    // Pending 100 ms, InProgress 100 ms: each action is seen by at least one status check.
    let app = spawn_with(timed(100, 100)).await;
    let dev = device(&app, 0);
    for (action, extra, key, defender_type, route) in device_actions() {
        app.sim.reset_counters();
        let mut params = json!({"device_id": dev, "comment": COMMENT, "timeout": 20});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        let (status, body) = app.invoke("contoso", action, params).await;
        assert_eq!(status, 200, "{action}: {body}");
        assert_envelope(&body, action, "contoso");
        assert_eq!(body["status"], "success", "{action}: {body}");
        assert_eq!(body["summary"][key], "Succeeded", "{action}: {body}");
        assert_eq!(body["summary"]["existing_action"], false, "{body}");
        let event_id = body["summary"]["event_id"].as_str().unwrap();
        assert_eq!(body["data"][0]["id"], event_id);
        assert_eq!(body["data"][0]["type"], defender_type);
        assert_eq!(body["data"][0]["machineId"], dev.as_str());
        assert_eq!(body["data"][0]["requestorComment"], COMMENT);
        assert!(body["data"][0].get("@odata.context").is_none());
        let c = app.sim.counters();
        assert_eq!(c.route("POST", route), 1, "{action}: one POST");
        assert!(
            status_gets(&app, event_id) >= 1,
            "{action}: the status was checked"
        );
    }
}

#[tokio::test]
async fn the_request_body_carries_the_parameters() {
    let app = spawn_with(timed(0, 0)).await;
    let dev = device(&app, 1);
    let (_, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": dev.to_uppercase(), "type": "selective", "comment": COMMENT}),
        )
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["data"][0]["scope"], "Selective");
    assert_eq!(body["parameters"]["type"], "Selective");
    assert_eq!(body["parameters"]["timeout"], 30);
    let (_, body) = app
        .invoke(
            "contoso",
            "quarantine_file",
            json!({"device_id": dev, "file_hash": "5B7E2C0F6A1D9E8B4C3A2F1E0D9C8B7A6F5E4D3C", "comment": COMMENT}),
        )
        .await;
    assert_eq!(
        body["data"][0]["relatedFileInfo"]["fileIdentifier"],
        "5b7e2c0f6a1d9e8b4c3a2f1e0d9c8b7a6f5e4d3c"
    );
    let (_, body) = app
        .invoke(
            "contoso",
            "scan_device",
            json!({"device_id": dev, "comment": COMMENT}),
        )
        .await;
    assert_eq!(body["data"][0]["scope"], "Quick", "default scan type");
}

#[tokio::test]
async fn timeout_answers_success_with_the_event_id_and_current_status() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 0);
    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": dev, "comment": COMMENT, "timeout": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["quarantine_status"], "Pending");
    let event_id = body["summary"]["event_id"].as_str().unwrap().to_string();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("still Pending"), "{message}");
    assert!(message.contains("get_status"), "{message}");
    assert!(message.contains(&event_id), "{message}");
    // The first check comes quickly, then the interval grows: a handful of checks in 1 s.
    let gets = status_gets(&app, &event_id);
    assert!((1..=5).contains(&gets), "{gets} status checks in 1 s");

    // Resume from the event id.
    let (_, body) = app
        .invoke("contoso", "get_status", json!({"event_id": event_id}))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["event_status"], "Pending");
    assert_eq!(body["summary"]["action_type"], "Isolate");
    app.sim.advance_action(&event_id).unwrap();
    let (_, body) = app
        .invoke("contoso", "get_status", json!({"event_id": event_id}))
        .await;
    assert_eq!(body["summary"]["event_status"], "InProgress", "{body}");
    app.sim
        .complete_action(&event_id, "Succeeded", None)
        .unwrap();
    let (_, body) = app
        .invoke(
            "contoso",
            "get_status",
            json!({"event_id": event_id.to_uppercase()}),
        )
        .await;
    assert_eq!(body["summary"]["event_status"], "Succeeded", "{body}");
    assert_eq!(body["summary"]["event_id"], event_id.as_str());
}

#[tokio::test]
async fn failed_action_is_a_failed_envelope_with_defenders_details() {
    let mut scenario = timed(0, 50);
    scenario.outcomes.push(
        serde_json::from_value(json!({"type": "RunAntiVirusScan", "status": "Failed"})).unwrap(),
    );
    let app = spawn_with(scenario).await;
    let dev = device(&app, 0);
    let (status, body) = app
        .invoke(
            "contoso",
            "scan_device",
            json!({"device_id": dev, "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["summary"]["scan_status"], "Failed");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("ended Failed"), "{message}");
    assert!(message.contains("errorHResult -2147467259"), "{message}");
    assert!(message.contains("0x80004005"), "{message}");
    assert!(body["summary"]["event_id"].is_string());

    // A TimeOut forced by the simulator.
    let manual_app = spawn_with(manual()).await;
    let id = pending_isolation(&manual_app, &dev).await;
    manual_app
        .sim
        .complete_action(&id, "TimeOut", None)
        .unwrap();
    let (_, body) = manual_app
        .invoke("contoso", "get_status", json!({"event_id": id}))
        .await;
    assert_eq!(body["status"], "success", "get_status reports: {body}");
    assert_eq!(body["summary"]["event_status"], "TimeOut");
    assert!(
        body["message"].as_str().unwrap().contains("ended TimeOut"),
        "{body}"
    );
}

#[tokio::test]
async fn a_pending_action_of_the_same_kind_is_followed_without_a_second_post() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 2);
    let existing = pending_isolation(&app, &dev).await;
    app.sim.reset_counters();

    let host = app.url("/assets/contoso/actions/quarantine_device");
    let client = app.client.clone();
    let call = tokio::spawn(async move {
        let resp = client
            .post(host)
            .bearer_auth(API_KEY)
            .json(&json!({"parameters": {"device_id": dev, "comment": COMMENT, "timeout": 20}}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    });
    // The host follows the existing action: complete it once it is being watched.
    until("the host to check the existing action", || {
        status_gets(&app, &existing) >= 1
    })
    .await;
    app.sim
        .complete_action(&existing, "Succeeded", None)
        .unwrap();
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["event_id"], existing.as_str());
    assert_eq!(body["summary"]["existing_action"], true);
    assert_eq!(body["summary"]["quarantine_status"], "Succeeded");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already had a pending Isolate"),
        "{body}"
    );
    let c = app.sim.counters();
    // The one POST that Defender refused, and no other.
    assert_eq!(c.route("POST", "/api/machines/{id}/isolate"), 1);
    assert_eq!(c.route_status("POST", "/api/machines/{id}/isolate", 400), 1);
    assert_eq!(c.route("GET", "/api/machineactions"), 1, "one lookup");
}

#[tokio::test]
async fn a_conflicting_pending_action_is_named() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 3);
    let isolation = pending_isolation(&app, &dev).await;
    let (status, body) = app
        .invoke(
            "contoso",
            "unquarantine_device",
            json!({"device_id": dev, "comment": COMMENT, "timeout": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("ActiveRequestAlreadyExists"), "{message}");
    assert!(message.contains(&isolation), "{message}");
    assert!(message.contains("cancel_action"), "{message}");
    assert_eq!(
        app.sim
            .counters()
            .route("POST", "/api/machines/{id}/unisolate"),
        1
    );
}

#[tokio::test]
async fn a_500_on_a_status_check_is_retried() {
    let app = spawn_with(timed(50, 50)).await;
    let dev = device(&app, 0);
    app.sim.inject_fault(Fault {
        method: Some("GET".into()),
        path: "/api/machineactions/*".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 500,
            body: None,
            headers: Default::default(),
        },
    });
    let (status, body) = app
        .invoke(
            "contoso",
            "restrict_app_execution",
            json!({"device_id": dev, "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(
        body["summary"]["restrict_app_execution_status"],
        "Succeeded"
    );
    let event_id = body["summary"]["event_id"].as_str().unwrap();
    let c = app.sim.counters();
    // A faulted answer never reaches the router: count it by path.
    assert_eq!(
        c.route_status("GET", "unmatched", 500),
        1,
        "{:?}",
        c.by_route
    );
    assert!(c.route_status("GET", "/api/machineactions/{id}", 200) >= 1);
    assert_eq!(
        c.path("GET", &format!("/api/machineactions/{event_id}")),
        c.route("GET", "/api/machineactions/{id}") + 1,
        "the 500 and the checks after it all asked for this action"
    );
}

#[tokio::test]
async fn a_500_on_the_post_is_reported_and_not_retried() {
    let app = spawn_with(timed(0, 0)).await;
    let dev = device(&app, 0);
    app.sim.inject_fault(Fault {
        method: Some("POST".into()),
        path: "/api/machines/*/isolate".into(),
        count: 5,
        kind: FaultKind::Status {
            status: 500,
            body: Some(
                r#"{"error":{"code":"InternalServerError","message":"Something broke","target":"0f0e0d0c-0b0a-4909-8807-060504030201"}}"#
                    .into(),
            ),
            headers: Default::default(),
        },
    });
    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": dev, "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("500"), "{message}");
    assert!(message.contains("Something broke"), "{message}");
    assert!(
        message.contains("0f0e0d0c-0b0a-4909-8807-060504030201"),
        "{message}"
    );
    assert_eq!(body["summary"]["existing_action"], false);
    let c = app.sim.counters();
    assert_eq!(c.path("POST", &format!("/api/machines/{dev}/isolate")), 1);
    assert_eq!(c.route("GET", "/api/machineactions/{id}"), 0);
    assert_eq!(c.route("GET", "/api/machineactions"), 0);
}

#[tokio::test]
async fn fifty_concurrent_status_waits_share_the_upstream_checks() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 4);
    let event_id = pending_isolation(&app, &dev).await;
    app.sim.reset_counters();

    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..50 {
        let client = app.client.clone();
        let url = app.url("/assets/contoso/actions/get_status");
        let id = event_id.clone();
        calls.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(API_KEY)
                .json(&json!({"parameters": {"event_id": id, "wait": 2}}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }));
    }
    until("the 50 callers to follow the event", || {
        app.watchers("contoso", &event_id) >= 50
    })
    .await;
    until("the first status check", || {
        status_gets(&app, &event_id) >= 1
    })
    .await;
    app.sim
        .complete_action(&event_id, "Succeeded", None)
        .unwrap();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["summary"]["event_status"], "Succeeded", "{body}");
    }
    let elapsed = started.elapsed();
    let gets = status_gets(&app, &event_id);
    // One polling window is at most EAGER_INTERVAL while get_status waits are held.
    let windows = elapsed
        .as_secs_f64()
        .div_euclid(waiting::EAGER_INTERVAL.as_secs_f64()) as u64
        + 1;
    assert!(
        gets <= 2 * windows,
        "{gets} upstream checks for 50 callers in {elapsed:?}"
    );
    assert!(gets <= 6, "{gets} upstream checks");
    assert_eq!(
        app.watchers("contoso", &event_id),
        0,
        "nobody follows any more"
    );
}

#[tokio::test]
async fn get_status_with_wait_returns_once_the_action_is_final() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 5);
    let event_id = pending_isolation(&app, &dev).await;
    let client = app.client.clone();
    let url = app.url("/assets/contoso/actions/get_status");
    let id = event_id.clone();
    let call = tokio::spawn(async move {
        let resp = client
            .post(url)
            .bearer_auth(API_KEY)
            .json(&json!({"parameters": {"event_id": id, "wait": 60}}))
            .send()
            .await
            .unwrap();
        resp.json::<Value>().await.unwrap()
    });
    until("the first status check", || {
        status_gets(&app, &event_id) >= 1
    })
    .await;
    app.sim
        .complete_action(&event_id, "Succeeded", None)
        .unwrap();
    let completed = Instant::now();
    let body = call.await.unwrap();
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["event_status"], "Succeeded", "{body}");
    // Far less than the 60 s the call could hold: the poller checks at least every second.
    assert!(
        completed.elapsed() < Duration::from_secs(10),
        "{:?}",
        completed.elapsed()
    );
}

#[tokio::test]
async fn get_status_of_an_unknown_event_fails_with_defenders_message() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "get_status",
            json!({"event_id": "0f0e0d0c-0b0a-4909-8807-060504030201"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["message"].as_str().unwrap().contains("404"), "{body}");
}

#[tokio::test]
async fn investigation_package_lands_in_the_vault_once() {
    let app = spawn_with(timed(0, 0)).await;
    let dev = device(&app, 0);
    let (status, body) = app
        .invoke(
            "contoso",
            "collect_investigation_package",
            json!({"device_id": dev, "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(
        body["summary"]["collect_investigation_package_status"],
        "Succeeded"
    );
    let event_id = body["summary"]["event_id"].as_str().unwrap().to_string();
    let vault_id = body["summary"]["vault_id"].as_str().unwrap().to_string();
    let vault = app.state_dir.path().join("vault");
    let bytes = std::fs::read(vault.join(&vault_id)).unwrap();
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha256, vault_id);
    assert_eq!(body["summary"]["sha256"], vault_id.as_str());
    assert_eq!(body["summary"]["size"], bytes.len());
    assert!(bytes.starts_with(b"PK\x03\x04"), "a zip");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(&format!("Action id: {event_id}")), "{text}");
    let file_name = body["summary"]["file_name"].as_str().unwrap();
    assert_eq!(file_name, format!("investigation-package-{event_id}.zip"));

    let meta: Value =
        serde_json::from_slice(&std::fs::read(vault.join(format!("{vault_id}.json"))).unwrap())
            .unwrap();
    assert_eq!(meta["sha256"], vault_id.as_str());
    assert_eq!(meta["sha1"], body["summary"]["sha1"]);
    assert_eq!(meta["size"], bytes.len());
    assert_eq!(meta["file_name"], file_name);
    assert_eq!(meta["asset"], "contoso");
    assert_eq!(meta["device"], dev.as_str());
    assert_eq!(meta["event_id"], event_id.as_str());
    assert!(meta["retrieved_at"].is_string());
    assert_eq!(
        app.sim
            .counters()
            .route("GET", "/api/machineactions/{id}/getpackageuri"),
        1
    );

    // Served back through the host, behind the API key, with the original file name.
    let resp = app
        .client
        .get(app.url(&format!("/vault/{vault_id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(disposition.contains(file_name), "{disposition}");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let (status, info) = app.get(&format!("/vault/{vault_id}/info")).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["sha256"], vault_id.as_str());
    assert_eq!(info["event_id"], event_id.as_str());
    let unauthenticated = app
        .client
        .get(app.url(&format!("/vault/{vault_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    for missing in [
        "0".repeat(64),
        "../../state.key".to_string(),
        "x".to_string(),
    ] {
        let (status, _) = app.get(&format!("/vault/{missing}")).await;
        assert_eq!(status, 404, "{missing}");
    }

    // The same package again, by event id: already in the vault, stored once, not downloaded.
    let (status, again) = app
        .invoke(
            "contoso",
            "collect_investigation_package",
            json!({"event_id": event_id}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "success", "{again}");
    assert_eq!(again["summary"]["vault_id"], vault_id.as_str());
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already in the vault"),
        "{again}"
    );
    assert_eq!(std::fs::read_dir(&vault).unwrap().count(), 2);
    let c = app.sim.counters();
    assert_eq!(c.route("GET", "/api/machineactions/{id}/getpackageuri"), 1);
    assert_eq!(
        c.route("POST", "/api/machines/{id}/collectinvestigationpackage"),
        1
    );
}

#[tokio::test]
async fn a_timed_out_collection_is_resumed_by_event_id() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 1);
    let (_, body) = app
        .invoke(
            "contoso",
            "collect_investigation_package",
            json!({"device_id": dev, "comment": COMMENT, "timeout": 1}),
        )
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(
        body["summary"]["collect_investigation_package_status"],
        "Pending"
    );
    assert!(body["summary"].get("vault_id").is_none());
    let event_id = body["summary"]["event_id"].as_str().unwrap().to_string();
    app.sim
        .complete_action(&event_id, "Succeeded", None)
        .unwrap();
    let (_, body) = app
        .invoke(
            "contoso",
            "collect_investigation_package",
            json!({"event_id": event_id}),
        )
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert!(body["summary"]["vault_id"].is_string(), "{body}");
    // An event of another kind is refused, naming the parameter.
    let isolation = pending_isolation(&app, &device(&app, 2)).await;
    let (status, body) = app
        .invoke(
            "contoso",
            "collect_investigation_package",
            json!({"event_id": isolation}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("event_id"),
        "{body}"
    );
}

#[tokio::test]
async fn invalid_inputs_are_refused_before_any_api_call() {
    let app = spawn().await;
    let dev = device(&app, 0);
    let sha256 = "a".repeat(64);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "quarantine_device",
            json!({"device_id": "not a device!", "comment": COMMENT}),
            "device_id",
        ),
        (
            "quarantine_device",
            json!({"device_id": dev, "comment": COMMENT, "type": "Partial"}),
            "'type'",
        ),
        ("quarantine_device", json!({"device_id": dev}), "comment"),
        (
            "quarantine_device",
            json!({"device_id": dev, "comment": "   "}),
            "comment",
        ),
        (
            "quarantine_device",
            json!({"device_id": dev, "comment": "x".repeat(1001)}),
            "comment",
        ),
        (
            "quarantine_device",
            json!({"device_id": dev, "comment": COMMENT, "timeout": 0}),
            "timeout",
        ),
        (
            "quarantine_device",
            json!({"device_id": dev, "comment": COMMENT, "timeout": 61}),
            "timeout",
        ),
        (
            "scan_device",
            json!({"device_id": dev, "comment": COMMENT, "timeout": 3601}),
            "timeout",
        ),
        (
            "quarantine_file",
            json!({"device_id": dev, "comment": COMMENT, "file_hash": sha256}),
            "SHA1",
        ),
        (
            "quarantine_file",
            json!({"device_id": dev, "comment": COMMENT, "file_hash": "b".repeat(32)}),
            "SHA1",
        ),
        (
            "quarantine_file",
            json!({"device_id": dev, "comment": COMMENT, "file_hash": "xyz"}),
            "file_hash",
        ),
        ("get_status", json!({"event_id": "../machines"}), "event_id"),
        (
            "get_status",
            json!({"event_id": "0f0e0d0c-0b0a-4909-8807-060504030201", "wait": 601}),
            "wait",
        ),
        (
            "cancel_action",
            json!({"event_id": "0f0e0d0c-0b0a-4909-8807-060504030201"}),
            "comment",
        ),
        (
            "update_device_tag",
            json!({"device_id": dev, "operation": "Toggle", "tag": "x"}),
            "operation",
        ),
        (
            "update_device_tag",
            json!({"device_id": dev, "tag": "t".repeat(201)}),
            "tag",
        ),
        (
            "collect_investigation_package",
            json!({"comment": COMMENT}),
            "device_id",
        ),
        (
            "collect_investigation_package",
            json!({"device_id": dev}),
            "comment",
        ),
        (
            "collect_investigation_package",
            json!({"event_id": "nope"}),
            "event_id",
        ),
    ];
    for (action, params, names) in cases {
        let (status, body) = app.invoke("contoso", action, params.clone()).await;
        assert_eq!(status, 400, "{action} {params}: {body}");
        assert_envelope(&body, action, "contoso");
        assert_eq!(body["status"], "failed");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(names), "{action} {params}: {message}");
    }
    let sha = app
        .invoke(
            "contoso",
            "quarantine_file",
            json!({"device_id": dev, "comment": COMMENT, "file_hash": sha256}),
        )
        .await
        .1;
    assert!(sha["message"].as_str().unwrap().contains("SHA256"), "{sha}");
    assert_eq!(api_calls(&app), 0, "{:?}", app.sim.counters().by_route);
}

#[tokio::test]
async fn cancelling_a_pending_action_ends_its_wait() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 0);
    let client = app.client.clone();
    let url = app.url("/assets/contoso/actions/quarantine_device");
    let d = dev.clone();
    let waiting_call = tokio::spawn(async move {
        let resp = client
            .post(url)
            .bearer_auth(API_KEY)
            .json(&json!({"parameters": {"device_id": d, "comment": COMMENT, "timeout": 60}}))
            .send()
            .await
            .unwrap();
        resp.json::<Value>().await.unwrap()
    });
    until("the isolation request", || {
        app.sim
            .counters()
            .route("POST", "/api/machines/{id}/isolate")
            >= 1
    })
    .await;
    let event_id = {
        let w = app.sim.world();
        w.actions.iter().next().unwrap().id.clone()
    };
    until("the isolation to be followed", || {
        app.watchers("contoso", &event_id) >= 1
    })
    .await;
    let (status, body) = app
        .invoke(
            "contoso",
            "cancel_action",
            json!({"event_id": event_id, "comment": "wrong device"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["event_status"], "Cancelled");
    assert_eq!(body["summary"]["event_id"], event_id.as_str());
    assert_eq!(body["data"][0]["cancellationComment"], "wrong device");

    // The waiting isolation learns it from the cancel answer.
    let waited = waiting_call.await.unwrap();
    assert_eq!(waited["status"], "failed", "{waited}");
    assert_eq!(waited["summary"]["quarantine_status"], "Cancelled");
    let message = waited["message"].as_str().unwrap();
    assert!(message.contains("ended Cancelled"), "{message}");
    assert!(message.contains("wrong device"), "{message}");

    let (_, body) = app
        .invoke("contoso", "get_status", json!({"event_id": event_id}))
        .await;
    assert_eq!(body["summary"]["event_status"], "Cancelled");
    // A final action cannot be cancelled: Defender's refusal is reported.
    let (status, body) = app
        .invoke(
            "contoso",
            "cancel_action",
            json!({"event_id": event_id, "comment": "again"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Cancelled"),
        "{body}"
    );
}

#[tokio::test]
async fn device_tags_are_added_and_removed() {
    let app = spawn().await;
    let dev = device(&app, 0);
    let before = app.sim.scenario().machines[0]["machineTags"]
        .as_array()
        .map_or(0, Vec::len);
    let (status, body) = app
        .invoke(
            "contoso",
            "update_device_tag",
            json!({"device_id": dev, "operation": "Add", "tag": "incident-4711"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_tags"], before + 1);
    assert_eq!(body["summary"]["operation"], "Add");
    let tags = &app.sim.scenario().machines[0]["machineTags"];
    assert!(
        tags.as_array()
            .unwrap()
            .iter()
            .any(|t| t == "incident-4711"),
        "{tags}"
    );
    let (_, body) = app
        .invoke(
            "contoso",
            "update_device_tag",
            json!({"device_id": dev, "operation": "remove", "tag": "incident-4711"}),
        )
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["operation"], "Remove");
    assert_eq!(body["summary"]["total_tags"], before);
    let tags = &app.sim.scenario().machines[0]["machineTags"];
    assert!(
        !tags
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "incident-4711"),
        "{tags}"
    );
    // An unknown device: Defender's 404 is reported.
    let (status, body) = app
        .invoke(
            "contoso",
            "update_device_tag",
            json!({"device_id": "f".repeat(40), "tag": "x"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["message"].as_str().unwrap().contains("404"), "{body}");
}

#[tokio::test]
async fn without_read_permission_the_action_is_submitted_and_its_event_id_returned() {
    let mut scenario = manual();
    scenario.tenants[0].apps[0].roles = vec!["Machine.Isolate".into()];
    let app = spawn_with(scenario).await;
    let dev = device(&app, 0);
    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": dev, "comment": COMMENT, "timeout": 30}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["quarantine_status"], "Pending");
    let event_id = body["summary"]["event_id"].as_str().unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("cannot be read"), "{message}");
    assert!(message.contains("403"), "{message}");
    // One refused status check, no polling until the timeout.
    let c = app.sim.counters();
    assert_eq!(c.path("GET", &format!("/api/machineactions/{event_id}")), 1);
    assert_eq!(c.route("POST", "/api/machines/{id}/isolate"), 1);
}

#[tokio::test]
async fn status_of_a_final_action_is_read_upstream_once() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 0);
    let event_id = pending_isolation(&app, &dev).await;
    app.sim
        .complete_action(&event_id, "Succeeded", None)
        .unwrap();
    // Ten at a time: the first read and any that overlap it share one GET, the rest hit the
    // host's cache of final statuses.
    for _ in 0..10 {
        let calls =
            (0..10).map(|_| app.invoke("contoso", "get_status", json!({"event_id": event_id})));
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["summary"]["event_status"], "Succeeded", "{body}");
        }
    }
    assert_eq!(status_gets(&app, &event_id), 1);
    // A wait on a final action answers at once, from the cache too.
    let (_, body) = app
        .invoke(
            "contoso",
            "get_status",
            json!({"event_id": event_id, "wait": 30}),
        )
        .await;
    assert_eq!(body["summary"]["event_status"], "Succeeded", "{body}");
    assert_eq!(status_gets(&app, &event_id), 1);
}

#[tokio::test]
async fn a_pending_action_is_still_read_upstream_until_final() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 1);
    let event_id = pending_isolation(&app, &dev).await;
    let (_, body) = app
        .invoke("contoso", "get_status", json!({"event_id": event_id}))
        .await;
    assert_eq!(body["summary"]["event_status"], "Pending", "{body}");
    let before = status_gets(&app, &event_id);
    app.sim.complete_action(&event_id, "Failed", None).unwrap();
    // A Pending answer is never cached: the next status request reads again.
    let (_, body) = app
        .invoke("contoso", "get_status", json!({"event_id": event_id}))
        .await;
    assert_eq!(body["summary"]["event_status"], "Failed", "{body}");
    assert!(status_gets(&app, &event_id) > before);
    let after = status_gets(&app, &event_id);
    let (_, body) = app
        .invoke("contoso", "get_status", json!({"event_id": event_id}))
        .await;
    assert_eq!(body["summary"]["event_status"], "Failed", "{body}");
    assert_eq!(
        status_gets(&app, &event_id),
        after,
        "final now: no more reads"
    );
}

/// The default scenario with a second device named like the first one.
fn scenario_with_twin() -> (Scenario, String) {
    let mut s = manual();
    let mut twin = s.machines[0].clone();
    let twin_id = "0123456789abcdef0123456789abcdef01234567".to_string();
    twin["id"] = json!(twin_id);
    twin["lastIpAddress"] = json!("10.9.9.9");
    s.machines.push(twin);
    (s, twin_id)
}

#[tokio::test]
async fn devices_are_found_by_computer_name_or_address() {
    let app = spawn_with(manual()).await;
    let scenario = app.sim.scenario();
    let cases = [
        (
            0,
            scenario.machines[0]["computerDnsName"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        (
            1,
            scenario.machines[1]["lastIpAddress"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        (2, {
            let fqdn = scenario.machines[2]["computerDnsName"].as_str().unwrap();
            fqdn.split('.').next().unwrap().to_uppercase()
        }),
    ];
    for (n, name) in cases {
        let id = device(&app, n);
        let (status, body) = app
            .invoke(
                "contoso",
                "quarantine_device",
                json!({"device_id": name, "comment": COMMENT, "timeout": 1}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
        assert_eq!(body["summary"]["device_id"], id.as_str(), "{body}");
        assert_eq!(body["parameters"]["device_id"], name.as_str(), "{body}");
        assert_eq!(
            app.sim
                .counters()
                .path("POST", &format!("/api/machines/{id}/isolate")),
            1,
            "{name} isolates device {id}"
        );
    }
}

#[tokio::test]
async fn an_ambiguous_or_unknown_name_isolates_nothing() {
    let (scenario, twin) = scenario_with_twin();
    let app = spawn_with(scenario).await;
    let first = device(&app, 0);
    let name = app.sim.scenario().machines[0]["computerDnsName"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": name, "comment": COMMENT, "timeout": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("2 devices"), "{message}");
    assert!(
        message.contains(&first) && message.contains(&twin),
        "{message}"
    );

    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": "no-such-host.contoso.com", "comment": COMMENT, "timeout": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no device"),
        "{body}"
    );

    // A value that is no id, name or address is refused before any call.
    let lookups = app.sim.counters().route("GET", "/api/machines");
    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": "x' or computerDnsName ne 'y", "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("device_id"),
        "{body}"
    );
    assert_eq!(app.sim.counters().route("GET", "/api/machines"), lookups);
    assert_eq!(
        app.sim
            .counters()
            .route("POST", "/api/machines/{id}/isolate"),
        0
    );
}

#[tokio::test]
async fn splunk_identifiers_answer_too() {
    let app = spawn_with(manual()).await;
    let dev = device(&app, 3);
    let event_id = pending_isolation(&app, &dev).await;
    let (status, body) = app
        .invoke(
            "contoso",
            "cancel_live_response",
            json!({"action_id": event_id, "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["action"], "cancel_live_response", "{body}");
    assert_eq!(body["summary"]["event_id"], event_id.as_str(), "{body}");
    assert_eq!(
        app.sim
            .counters()
            .path("POST", &format!("/api/machineactions/{event_id}/cancel")),
        1
    );
    // The alias's own parameter names are the ones it accepts.
    let (status, body) = app
        .invoke(
            "contoso",
            "cancel_live_response",
            json!({"action_id": event_id, "comment": COMMENT, "bogus": 1}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}
