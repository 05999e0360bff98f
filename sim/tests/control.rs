//! The `/_sim` control API over HTTP: scenario, counters, faults, reset, clock, tokens, actions.

mod common;

use defender_sim::SimHandle;
use defender_sim::actions::MachineAction;
use defender_sim::scenario::StageTimings;
use defender_sim::state::RefreshGrant;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `GET {base}{path}` with the control client.
async fn get(sim: &SimHandle, path: &str) -> reqwest::Response {
    common::client()
        .get(format!("{}{path}", sim.base_url()))
        .send()
        .await
        .unwrap()
}

/// `{method} {base}{path}` with a JSON body.
async fn send(sim: &SimHandle, method: &str, path: &str, body: Value) -> reqwest::Response {
    common::client()
        .request(method.parse().unwrap(), format!("{}{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `GET /api/machines` with a bearer token.
async fn machines(sim: &SimHandle, token: &str) -> reqwest::Response {
    common::client()
        .get(format!("{}/api/machines", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A manual machine action on the scenario's first machine, inserted straight into the store.
fn insert_action(sim: &SimHandle, id: &str, action_type: &str) {
    let scenario = sim.scenario();
    let machine_id = scenario.machines[0]["id"].as_str().unwrap().to_string();
    let tenant_id = scenario.tenants[0].id.clone();
    let now = sim.clock.now_ms();
    sim.world().actions.insert(MachineAction {
        id: id.to_string(),
        tenant_id,
        action_type: action_type.to_string(),
        title: format!("{action_type} from the control tests"),
        requestor: "control-tests".into(),
        comment: "control".into(),
        machine_id,
        computer_dns_name: None,
        scope: None,
        external_id: None,
        related_file_info: None,
        created_ms: now,
        timings: StageTimings {
            pending_ms: 0,
            in_progress_ms: 0,
        },
        manual: true,
        stage_floor: 0,
        floor_changed_ms: now,
        outcome: "Succeeded".into(),
        error: None,
        cancellation: None,
        commands: vec![],
    });
}

/// Makes actions manual (`PUT /_sim/timings`), then isolates the first machine through the API;
/// answers the new action's id.
async fn isolate_manual(sim: &SimHandle, token: &str) -> String {
    let resp = send(
        sim,
        "PUT",
        "/_sim/timings",
        json!({"pending_ms": 0, "in_progress_ms": 0, "manual": true}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let machine_id = sim.scenario().machines[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = common::client()
        .post(format!(
            "{}/api/machines/{machine_id}/isolate",
            sim.base_url()
        ))
        .bearer_auth(token)
        .json(&json!({"Comment": "control tests", "IsolationType": "Full"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], json!("Pending"));
    body["id"].as_str().unwrap().to_string()
}

/// `GET /api/machineactions/{id}`: the status the API reports.
async fn api_status(sim: &SimHandle, token: &str, id: &str) -> String {
    let resp = common::client()
        .get(format!("{}/api/machineactions/{id}", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn health_answers_ok() {
    let sim = common::start(common::scenario()).await;
    let resp = get(&sim, "/_sim/health").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ok": true}));
}

#[tokio::test]
async fn scenario_lists_tenants_apps_and_machines() {
    let sim = common::start(common::scenario()).await;
    let resp = get(&sim, "/_sim/scenario").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let expected = common::scenario();
    let tenant = &body["tenants"][0];
    assert_eq!(tenant["id"], json!(expected.tenants[0].id));
    let app = &tenant["apps"][0];
    assert_eq!(
        app["client_id"],
        json!(expected.tenants[0].apps[0].client_id)
    );
    assert_eq!(app["secret"], json!(expected.tenants[0].apps[0].secret));
    assert!(
        app["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("Machine.Isolate"))
    );
    let ids: Vec<&str> = body["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let expected_ids: Vec<&str> = expected
        .machines
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected_ids);
}

#[tokio::test]
async fn put_scenario_replaces_the_active_one() {
    let sim = common::start(common::scenario()).await;
    let mut next = common::scenario();
    next.tenants[0].apps.truncate(1);
    next.tenants[0].apps[0].client_id = "11111111-2222-4333-8444-555555555555".into();
    next.machines.truncate(1);
    next.rate_limits.disabled = true;
    let resp = send(
        &sim,
        "PUT",
        "/_sim/scenario",
        serde_json::to_value(&next).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let body: Value = get(&sim, "/_sim/scenario").await.json().await.unwrap();
    assert_eq!(body, serde_json::to_value(&next).unwrap());
    assert_eq!(body["tenants"][0]["apps"].as_array().unwrap().len(), 1);
    assert_eq!(body["machines"].as_array().unwrap().len(), 1);
    assert!(sim.scenario().rate_limits.disabled);
}

#[tokio::test]
async fn invalid_scenario_is_refused_with_the_reason() {
    let sim = common::start(common::scenario()).await;
    let resp = send(&sim, "PUT", "/_sim/scenario", json!({"machines": []})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("missing field `tenants`"), "{message}");

    let resp = send(
        &sim,
        "PUT",
        "/_sim/scenario",
        json!({"tenants": [], "machines": [{"name": "no id"}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // The active scenario is untouched.
    assert_eq!(
        sim.scenario().machines.len(),
        common::scenario().machines.len()
    );
}

#[tokio::test]
async fn counters_count_routes_paths_and_tokens() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    assert_eq!(machines(&sim, &token).await.status(), StatusCode::OK);
    assert_eq!(machines(&sim, &token).await.status(), StatusCode::OK);
    assert_eq!(machines(&sim, "not-a-token").await.status(), 401);
    let resp = common::client()
        .get(format!("{}/API/Machines", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let scenario = sim.scenario();
    let (tenant, app) = (&scenario.tenants[0], &scenario.tenants[0].apps[0]);
    let resp = common::client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            tenant.id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.secret.as_str()),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let body: Value = get(&sim, "/_sim/counters").await.json().await.unwrap();
    assert_eq!(body["by_route"]["GET /api/machines"]["200"], json!(3));
    assert_eq!(body["by_route"]["GET /api/machines"]["401"], json!(1));
    assert_eq!(body["by_path"]["GET /api/machines"], json!(4));
    assert_eq!(body["tokens_issued"]["client_credentials"], json!(1));
    assert_eq!(body["throttled"], json!(0));
    assert_eq!(body["live_sessions"], json!(0));
    // Four API calls and one token request; the control calls themselves are not counted.
    assert_eq!(body["total"], json!(5));
    let again: Value = get(&sim, "/_sim/counters").await.json().await.unwrap();
    assert_eq!(again["total"], json!(5));

    let c = sim.counters();
    assert_eq!(c.route("GET", "/api/machines"), 4);
    assert_eq!(c.route_status("GET", "/api/machines", 200), 3);
    assert_eq!(c.route_status("GET", "/api/machines", 401), 1);
    assert_eq!(c.route_status("GET", "/api/machines", 500), 0);
    assert_eq!(c.path("GET", "/API/MACHINES"), 4);
    assert_eq!(c.path("POST", "/api/machines"), 0);
    assert_eq!(c.tokens("client_credentials"), 1);
    assert_eq!(c.tokens("refresh_token"), 0);
    assert_eq!(c.tokens_total(), 1);

    let resp = send(&sim, "POST", "/_sim/counters/reset", json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let c = sim.counters();
    assert_eq!(c.route("GET", "/api/machines"), 0);
    assert_eq!(c.tokens_total(), 0);
}

#[tokio::test]
async fn counters_report_open_live_sessions() {
    let sim = common::start(common::scenario()).await;
    insert_action(&sim, "0c6b1a57-0000-4000-8000-00000000000a", "LiveResponse");
    insert_action(&sim, "0c6b1a57-0000-4000-8000-00000000000b", "Isolate");
    let body: Value = get(&sim, "/_sim/counters").await.json().await.unwrap();
    assert_eq!(body["live_sessions"], json!(1));
    sim.complete_action("0c6b1a57-0000-4000-8000-00000000000a", "Succeeded", None)
        .unwrap();
    let body: Value = get(&sim, "/_sim/counters").await.json().await.unwrap();
    assert_eq!(body["live_sessions"], json!(0));
}

#[tokio::test]
async fn status_fault_applies_count_times_then_stops() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    let resp = send(
        &sim,
        "POST",
        "/_sim/faults",
        json!({"path": "/api/machines*", "method": "GET", "count": 2, "kind": "status",
               "status": 503, "body": "{\"error\":{\"code\":\"Busy\"}}",
               "headers": {"Retry-After": "1"}}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let pending: Value = resp.json().await.unwrap();
    assert_eq!(pending[0]["count"], json!(2));

    for left in [1, 0] {
        let resp = machines(&sim, &token).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"error": {"code": "Busy"}}));
        let pending: Value = get(&sim, "/_sim/faults").await.json().await.unwrap();
        assert_eq!(pending.as_array().unwrap().len(), left);
    }
    let resp = machines(&sim, &token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let c = sim.counters();
    assert_eq!(c.path("GET", "/api/machines"), 3);
    assert_eq!(c.route_status("GET", "/api/machines", 200), 1);
}

#[tokio::test]
async fn status_fault_without_body_answers_a_defender_error() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    send(
        &sim,
        "POST",
        "/_sim/faults",
        json!({"path": "/api/machines", "kind": "status", "status": 500}),
    )
    .await;
    let resp = machines(&sim, &token).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["code"].is_string());
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn delay_fault_still_answers() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    send(
        &sim,
        "POST",
        "/_sim/faults",
        json!({"path": "/api/machines", "kind": "delay", "ms": 20}),
    )
    .await;
    let resp = machines(&sim, &token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.json::<Value>().await.unwrap()["value"].is_array());
    assert!(sim.faults.lock().unwrap().is_empty());
}

#[tokio::test]
async fn drop_fault_closes_the_connection_and_the_server_keeps_serving() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    send(
        &sim,
        "POST",
        "/_sim/faults",
        json!({"path": "/api/machines", "kind": "drop"}),
    )
    .await;
    // A fresh client, so no pooled connection is retried behind our back.
    let dropped = common::client()
        .get(format!("{}/api/machines", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(dropped.is_err(), "expected a connection error");
    assert_eq!(machines(&sim, &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_fault_keeps_the_status_and_breaks_the_body() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    send(
        &sim,
        "POST",
        "/_sim/faults",
        json!({"path": "/api/machines", "kind": "malformed_json"}),
    )
    .await;
    let resp = machines(&sim, &token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    let resp = machines(&sim, &token).await;
    assert!(resp.json::<Value>().await.is_ok());
}

#[tokio::test]
async fn faults_match_by_method_and_glob() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    let resp = send(
        &sim,
        "POST",
        "/_sim/faults",
        json!([
            {"path": "/api/machines", "method": "POST", "kind": "status", "status": 502},
            {"path": "/api/alerts*", "kind": "status", "status": 504},
            {"path": "*/MACHINES", "method": "get", "kind": "status", "status": 418},
        ]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The POST and /api/alerts faults do not match; the third does (case-insensitive glob).
    assert_eq!(
        machines(&sim, &token).await.status(),
        StatusCode::IM_A_TEAPOT
    );
    assert_eq!(machines(&sim, &token).await.status(), StatusCode::OK);
    let pending: Value = get(&sim, "/_sim/faults").await.json().await.unwrap();
    let paths: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/api/machines", "/api/alerts*"]);

    let resp = send(&sim, "DELETE", "/_sim/faults", json!(null)).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
    assert!(sim.faults.lock().unwrap().is_empty());
}

#[tokio::test]
async fn invalid_faults_are_refused() {
    let sim = common::start(common::scenario()).await;
    for body in [
        json!({"path": "/api/machines", "kind": "explode"}),
        json!({"path": "/api/machines", "kind": "status"}),
        json!({"path": "/api/machines", "kind": "status", "status": 503, "header": {}}),
        json!({"path": "/api/machines", "kind": "drop", "count": 0}),
        json!([{"path": "/a", "kind": "drop"}, {"kind": "drop"}]),
        json!({"path": "*", "kind": "drop", "count": 100}),
    ] {
        let resp = send(&sim, "POST", "/_sim/faults", body.clone()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"]["message"].is_string());
    }
    assert!(sim.faults.lock().unwrap().is_empty());
}

#[tokio::test]
async fn reset_starts_over_from_the_loaded_scenario() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    machines(&sim, &token).await;
    insert_action(&sim, "0c6b1a57-0000-4000-8000-000000000001", "Isolate");
    send(
        &sim,
        "POST",
        "/_sim/outcomes",
        json!({"type": "Isolate", "status": "Failed"}),
    )
    .await;
    send(
        &sim,
        "PUT",
        "/_sim/timings",
        json!({"pending_ms": 0, "in_progress_ms": 0, "manual": true}),
    )
    .await;
    send(
        &sim,
        "POST",
        "/_sim/faults",
        json!({"path": "/api/*", "kind": "drop"}),
    )
    .await;

    let resp = send(&sim, "POST", "/_sim/reset", json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ok": true}));

    assert_eq!(sim.world().actions.iter().count(), 0);
    assert!(sim.faults.lock().unwrap().is_empty());
    assert_eq!(sim.counters().route("GET", "/api/machines"), 0);
    let scenario = sim.scenario();
    assert_eq!(
        serde_json::to_value(&scenario).unwrap(),
        serde_json::to_value(common::scenario()).unwrap()
    );
    // Tokens issued before the reset still work.
    assert_eq!(machines(&sim, &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn clock_advance_moves_simulated_time() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    let before = sim.clock.now_ms();
    let resp = send(
        &sim,
        "POST",
        "/_sim/clock/advance",
        json!({"seconds": 3600}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["advanced_ms"], json!(3_600_000));
    let now = body["now_ms"].as_i64().unwrap();
    assert!(now >= before + 3_600_000);
    assert!(sim.clock.now_ms() >= now);
    assert!(body["now"].as_str().unwrap().ends_with('Z'));
    // The token lived one hour of simulated time: it is now expired.
    assert_eq!(machines(&sim, &token).await.status(), 401);

    let resp = send(&sim, "POST", "/_sim/clock/advance", json!({"ms": 1500})).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["advanced_ms"],
        json!(1500)
    );
    for bad in [
        json!({}),
        json!({"minutes": 1}),
        json!({"seconds": -1}),
        json!({"seconds": u64::MAX}),
    ] {
        let resp = send(&sim, "POST", "/_sim/clock/advance", bad.clone()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn expired_tokens_answer_401_while_new_ones_work() {
    let sim = common::start(common::scenario()).await;
    let scenario = sim.scenario();
    let tenant = &scenario.tenants[0];
    let old = common::token(&sim);
    assert_eq!(machines(&sim, &old).await.status(), StatusCode::OK);

    // Expiring another app's tokens leaves this one alone.
    let resp = send(
        &sim,
        "POST",
        "/_sim/tokens/expire",
        json!({"client_id": tenant.apps[1].client_id}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(machines(&sim, &old).await.status(), StatusCode::OK);

    let resp = send(
        &sim,
        "POST",
        "/_sim/tokens/expire",
        json!({"tenant_id": tenant.id, "client_id": tenant.apps[0].client_id}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["expired"],
        json!([format!("{}/{}", tenant.id, tenant.apps[0].client_id).to_ascii_lowercase()])
    );
    let resp = machines(&sim, &old).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], json!("Unauthorized"));

    let fresh = common::token(&sim);
    assert_eq!(machines(&sim, &fresh).await.status(), StatusCode::OK);

    // With no body every token issued so far expires.
    let resp = common::client()
        .post(format!("{}/_sim/tokens/expire", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"expired": ["*"]})
    );
    assert_eq!(machines(&sim, &fresh).await.status(), 401);
    assert_eq!(
        machines(&sim, &common::token(&sim)).await.status(),
        StatusCode::OK
    );

    let resp = send(
        &sim,
        "POST",
        "/_sim/tokens/expire",
        json!({"tenant_id": "no-such-tenant"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revoke_marks_refresh_tokens_revoked() {
    let sim = common::start(common::scenario()).await;
    let scenario = sim.scenario();
    let tenant = &scenario.tenants[0];
    let expires_at = sim.clock.unix() + 3600;
    for (token, app) in [("rt-a", &tenant.apps[0]), ("rt-b", &tenant.apps[1])] {
        sim.world().refresh_tokens.insert(
            token.into(),
            RefreshGrant {
                tenant_id: tenant.id.clone(),
                client_id: app.client_id.clone(),
                resource_or_scope: "https://api.securitycenter.microsoft.com/.default".into(),
                expires_at,
                revoked: false,
                user: tenant.default_user(),
            },
        );
    }
    let resp = send(
        &sim,
        "POST",
        "/_sim/tokens/revoke",
        json!({"client_id": tenant.apps[0].client_id}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"revoked": 1}));
    assert!(sim.world().refresh_tokens["rt-a"].revoked);
    assert!(!sim.world().refresh_tokens["rt-b"].revoked);

    let resp = common::client()
        .post(format!("{}/_sim/tokens/revoke", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"revoked": 1}));
    assert!(sim.world().refresh_tokens["rt-b"].revoked);
}

#[tokio::test]
async fn advance_moves_an_action_one_stage_at_a_time() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    let id = isolate_manual(&sim, &token).await;
    // Manual timings: simulated time alone does not move it.
    sim.clock.advance(std::time::Duration::from_secs(3600));
    let token = common::token(&sim);
    assert_eq!(api_status(&sim, &token, &id).await, "Pending");

    let path = format!("/_sim/actions/{id}/advance");
    for expected in ["InProgress", "Succeeded", "Succeeded"] {
        let resp = send(&sim, "POST", &path, json!({})).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"], json!(id));
        assert_eq!(body["type"], json!("Isolate"));
        assert_eq!(body["status"], json!(expected));
        assert!(
            body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("$metadata#MachineActions/$entity")
        );
        assert_eq!(api_status(&sim, &token, &id).await, expected);
    }
    let resp = send(
        &sim,
        "POST",
        "/_sim/actions/0c6b1a57-ffff-4000-8000-000000000000/advance",
        json!({}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn complete_forces_the_final_status() {
    let sim = common::start(common::scenario()).await;
    let token = common::token(&sim);
    let id = isolate_manual(&sim, &token).await;
    let path = format!("/_sim/actions/{}/complete", id.to_ascii_uppercase());
    let resp = send(&sim, "POST", &path, json!({"status": "Pending"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = send(&sim, "POST", &path, json!({"state": "Failed"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(api_status(&sim, &token, &id).await, "Pending");

    let resp = send(
        &sim,
        "POST",
        &path,
        json!({"status": "Failed", "error": "device unreachable"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], json!("Failed"));
    assert_ne!(body["errorHResult"], json!(0));
    assert_eq!(api_status(&sim, &token, &id).await, "Failed");
    assert_eq!(
        sim.world().actions.get(&id).unwrap().error.as_deref(),
        Some("device unreachable")
    );

    let resp = send(
        &sim,
        "POST",
        "/_sim/actions/0c6b1a57-ffff-4000-8000-000000000000/complete",
        json!({"status": "Succeeded"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // The in-process equivalents.
    let json = sim.complete_action(&id, "TimeOut", None).unwrap();
    assert_eq!(json["status"], json!("TimeOut"));
    assert!(sim.complete_action(&id, "InProgress", None).is_err());
    assert!(sim.advance_action("no-such-action").is_err());
}

#[tokio::test]
async fn timings_and_outcomes_can_be_replaced() {
    let sim = common::start(common::scenario()).await;
    let timings = json!({"pending_ms": 0, "in_progress_ms": 5, "per_type": {}, "manual": true});
    let resp = send(&sim, "PUT", "/_sim/timings", timings.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        get(&sim, "/_sim/timings")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        timings
    );
    assert!(sim.scenario().timings.manual);
    assert_eq!(sim.scenario().timings.in_progress_ms, 5);
    let resp = send(&sim, "PUT", "/_sim/timings", json!({"pending": 1})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    send(
        &sim,
        "POST",
        "/_sim/outcomes",
        json!({"status": "Succeeded"}),
    )
    .await;
    let resp = send(
        &sim,
        "POST",
        "/_sim/outcomes",
        json!([
            {"type": "Isolate", "status": "Failed", "error": "x", "remaining": 1},
            {"type": "Offboard", "status": "TimeOut"},
        ]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value = resp.json().await.unwrap();
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[..3], ["Failed", "TimeOut", "Succeeded"]);
    assert_eq!(sim.scenario().outcomes[0].remaining, Some(1));

    let resp = send(&sim, "POST", "/_sim/outcomes", json!({"status": "Maybe"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = send(&sim, "DELETE", "/_sim/outcomes", json!(null)).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
    assert!(sim.scenario().outcomes.is_empty());
}
