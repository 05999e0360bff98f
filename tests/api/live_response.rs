//! Live response actions against the simulator: the four event-id cases of get_file and
//! run_script, wrong command types, failed commands, put_file, busy devices, gzip and raw
//! downloads, hostile file names, vault dedupe, a 64 MiB file, and Idempotency-Key.

use std::io::Read as _;
use std::time::{Duration, Instant};

use defender_sim::api::download::GeneratedFile;
use defender_sim::scenario::DeviceFile;
use defender_sim::{Fault, FaultKind, Scenario};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

/// The default scenario's first machine, which holds the device files.
const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
/// Its second machine.
const DEV2: &str = "8cfcc2dff88df3eed6a4227926412e6147aff567";
const HOSTS: &str = "C:\\Windows\\System32\\drivers\\etc\\hosts";
const HOSTS_CONTENT: &str = "127.0.0.1 localhost\n10.0.0.10 dc01.contoso.com\n";
const COMMENT: &str = "IR-2291 triage";
const LR_ROUTE: &str = "/api/machines/{id}/runliveresponse";

/// The default scenario with actions final at once.
fn instant() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.timings.pending_ms = 0;
    s.timings.in_progress_ms = 0;
    s
}

/// Adds a device file to the first machine.
fn with_file(mut s: Scenario, file: DeviceFile) -> Scenario {
    s.device_files
        .entry(DEV.to_string())
        .or_default()
        .push(file);
    s
}

fn text_file(path: &str, content: &str) -> DeviceFile {
    DeviceFile {
        path: path.into(),
        content: Some(content.into()),
        content_base64: None,
        size: None,
        zeros: false,
    }
}

fn get_file_params(path: &str, timeout: u64) -> Value {
    json!({"device_id": DEV, "file_path": path, "comment": COMMENT, "timeout": timeout})
}

fn run_script_params(timeout: u64) -> Value {
    json!({"device_id": DEV, "script_name": "collect-triage.ps1", "comment": COMMENT, "timeout": timeout})
}

/// runliveresponse POSTs answered 201 (live responses Defender created).
fn created(app: &TestApp) -> u64 {
    app.sim.counters().route_status("POST", LR_ROUTE, 201)
}

/// runliveresponse POSTs, any answer.
fn posts(app: &TestApp) -> u64 {
    app.sim.counters().route("POST", LR_ROUTE)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POST an action with an Idempotency-Key.
async fn invoke_keyed(app: &TestApp, action: &str, params: Value, key: &str) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url(&format!("/assets/contoso/actions/{action}")))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(&json!({ "parameters": params }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
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

/// The ids of the simulator's live response actions, oldest first.
fn live_responses(app: &TestApp) -> Vec<String> {
    let w = app.sim.world();
    let mut all: Vec<(i64, String)> = w
        .actions
        .iter()
        .filter(|a| a.action_type == "LiveResponse")
        .map(|a| (a.created_ms, a.id.clone()))
        .collect();
    all.sort();
    all.into_iter().map(|(_, id)| id).collect()
}

/// Asserts a successful get_file of the hosts file and answers its vault id.
async fn assert_hosts_in_vault(app: &TestApp, body: &Value) -> String {
    assert_envelope(body, "get_file", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    let s = &body["summary"];
    let want = sha256_hex(HOSTS_CONTENT.as_bytes());
    assert_eq!(s["vault_id"], want.as_str(), "{body}");
    assert_eq!(s["sha256"], want.as_str());
    assert_eq!(s["size"], HOSTS_CONTENT.len());
    assert_eq!(s["file_name"], "hosts");
    assert_eq!(s["file_status"], "Succeeded");
    assert_eq!(s["event_id_status"], "Succeeded");
    assert_eq!(s["live_response_result"], "Completed");
    assert_eq!(body["data"][0]["gunzipped"], true);
    assert_eq!(body["data"][0]["file_path"], HOSTS);
    let (status, content) = app.get(&format!("/vault/{want}")).await;
    assert_eq!(status, 200);
    assert_eq!(content, HOSTS_CONTENT);
    // The pre-signed link never leaves the host.
    assert!(!body.to_string().contains("/download/"), "{body}");
    want
}

// ---------------------------------------------------------------------------------------------
// get_file: the four cases

#[tokio::test]
async fn get_file_with_parameters_stores_the_gunzipped_file() {
    let app = spawn_with(instant()).await;
    let (status, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 30))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_hosts_in_vault(&app, &body).await;
    assert_eq!(body["summary"]["existing_action"], false);
    assert_eq!(created(&app), 1);
    let (_, info) = app
        .get(&format!(
            "/vault/{}/info",
            body["summary"]["vault_id"].as_str().unwrap()
        ))
        .await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["event_id"], body["summary"]["event_id"]);
    assert_eq!(info["device"], DEV);
    assert_eq!(info["asset"], "contoso");
}

#[tokio::test]
async fn get_file_timeout_then_event_id_resumes_and_fetches() {
    let app = spawn_with(manual()).await;
    let (status, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 1))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["status"], "success",
        "a timeout is not a failure: {body}"
    );
    let event = body["summary"]["event_id"].as_str().unwrap().to_string();
    assert_eq!(body["summary"]["event_id_status"], "Pending");
    assert_eq!(body["summary"]["file_status"], "Pending");
    assert!(body["summary"].get("vault_id").is_none());
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("event_id {event}")) && msg.contains("get_file"),
        "{msg}"
    );

    // Only event_id, still pending: the wait goes on and ends when the device answers.
    let gets = |app: &TestApp| {
        app.sim
            .counters()
            .path("GET", &format!("/api/machineactions/{event}"))
    };
    let before = gets(&app);
    let waiting = {
        let client = app.client.clone();
        let url = app.url("/assets/contoso/actions/get_file");
        let event = event.clone();
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(API_KEY)
                .json(&json!({"parameters": {"event_id": event, "timeout": 20}}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        })
    };
    until("the resumed wait to read the event", || gets(&app) > before).await;
    app.sim.complete_action(&event, "Succeeded", None).unwrap();
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_hosts_in_vault(&app, &body).await;
    assert_eq!(body["summary"]["event_id"], event.as_str());

    // Only event_id, succeeded: fetched again (a fresh link), nothing new started.
    let (_, again) = app
        .invoke(
            "contoso",
            "get_file",
            json!({"event_id": event.to_uppercase()}),
        )
        .await;
    assert_hosts_in_vault(&app, &again).await;
    assert_eq!(created(&app), 1);
    assert_eq!(
        app.sim
            .counters()
            .route("GET", "/api/machineactions/{id}/{function}"),
        2,
        "one fresh link per fetch"
    );
}

#[tokio::test]
async fn get_file_with_both_prefers_the_event_and_falls_back_to_the_parameters() {
    let app = spawn_with(instant()).await;
    let (_, first) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 30))
        .await;
    let event = first["summary"]["event_id"].as_str().unwrap().to_string();

    // A usable event: its file, no new live response.
    let mut both = get_file_params(HOSTS, 30);
    both["event_id"] = json!(event);
    let (status, body) = app.invoke("contoso", "get_file", both).await;
    assert_eq!(status, 200, "{body}");
    assert_hosts_in_vault(&app, &body).await;
    assert_eq!(body["summary"]["event_id"], event.as_str());
    assert_eq!(created(&app), 1);

    // A failed event: a new live response from the parameters, and the message says so.
    let (_, failed) = app
        .invoke("contoso", "get_file", get_file_params("C:\\nope.txt", 30))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let failed_event = failed["summary"]["event_id"].as_str().unwrap().to_string();
    let mut both = get_file_params(HOSTS, 30);
    both["event_id"] = json!(failed_event);
    let (status, body) = app.invoke("contoso", "get_file", both).await;
    assert_eq!(status, 200, "{body}");
    assert_hosts_in_vault(&app, &body).await;
    assert_ne!(body["summary"]["event_id"], failed_event.as_str());
    assert_eq!(body["summary"]["previous_event_id"], failed_event.as_str());
    assert_eq!(body["summary"]["previous_event_id_status"], "Failed");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("A new live response was started"), "{msg}");
    assert_eq!(created(&app), 3);

    // An unknown event: the same.
    let mut both = get_file_params(HOSTS, 30);
    both["event_id"] = json!("0b7e9a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b");
    let (_, body) = app.invoke("contoso", "get_file", both).await;
    assert_eq!(body["status"], "success", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("No machine action 0b7e9a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b"),
        "{body}"
    );
    assert_eq!(created(&app), 4);
}

#[tokio::test]
async fn get_file_without_event_or_parameters_names_what_is_needed() {
    let app = spawn_with(instant()).await;
    let (status, body) = app.invoke("contoso", "get_file", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_envelope(&body, "get_file", "contoso");
    assert_eq!(body["status"], "failed");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("give event_id, or device_id + file_path + comment"),
        "{msg}"
    );
    let (status, body) = app
        .invoke(
            "contoso",
            "get_file",
            json!({"device_id": DEV, "file_path": HOSTS, "comment": "   "}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("parameter 'comment' is required"),
        "{body}"
    );
    let (status, _) = app
        .invoke("contoso", "get_file", json!({"event_id": "not-a-guid"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(posts(&app), 0);
}

#[tokio::test]
async fn unknown_event_alone_fails_naming_it() {
    let app = spawn_with(instant()).await;
    let id = "0b7e9a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
    let (status, body) = app
        .invoke("contoso", "get_file", json!({"event_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    assert!(body["message"].as_str().unwrap().contains(id), "{body}");
    assert_eq!(body["summary"]["event_id"], id);
}

#[tokio::test]
async fn event_of_another_command_is_refused() {
    let app = spawn_with(instant()).await;
    let (_, script) = app
        .invoke("contoso", "run_script", run_script_params(30))
        .await;
    assert_eq!(script["status"], "success", "{script}");
    let event = script["summary"]["event_id"].as_str().unwrap().to_string();
    let (status, body) = app
        .invoke("contoso", "get_file", json!({"event_id": event}))
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert_eq!(
        msg,
        format!("parameter 'event_id': Event {event} is a RunScript live response, not GetFile.")
    );

    // Not a live response at all.
    let (_, iso) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": DEV2, "comment": COMMENT}),
        )
        .await;
    let iso_event = iso["summary"]["event_id"].as_str().unwrap().to_string();
    let (status, body) = app
        .invoke("contoso", "run_script", json!({"event_id": iso_event}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Isolate action"),
        "{body}"
    );

    // With parameters too, a new live response is started instead.
    let mut both = get_file_params(HOSTS, 30);
    both["event_id"] = json!(event);
    let (status, body) = app.invoke("contoso", "get_file", both).await;
    assert_eq!(status, 200, "{body}");
    assert_hosts_in_vault(&app, &body).await;
    assert_eq!(body["summary"]["previous_event_id"], event.as_str());
}

#[tokio::test]
async fn failed_command_reports_its_errors() {
    let app = spawn_with(instant()).await;
    let (status, body) = app
        .invoke(
            "contoso",
            "get_file",
            get_file_params("C:\\missing\\x.log", 30),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("File not found: C:\\missing\\x.log"), "{msg}");
    assert_eq!(body["summary"]["file_status"], "Failed");
    assert_eq!(body["summary"]["live_response_result"], "Failed");
    let event = body["summary"]["event_id"].as_str().unwrap().to_string();
    // The same through event_id alone.
    let (status, again) = app
        .invoke("contoso", "get_file", json!({"event_id": event}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "failed");
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("File not found: C:\\missing\\x.log"),
        "{again}"
    );
    assert_eq!(created(&app), 1);
}

#[tokio::test]
async fn cancelled_event_fails_with_the_cancellation() {
    let app = spawn_with(manual()).await;
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 1))
        .await;
    let event = body["summary"]["event_id"].as_str().unwrap().to_string();
    let (_, cancel) = app
        .invoke(
            "contoso",
            "cancel_action",
            json!({"event_id": event, "comment": "wrong host"}),
        )
        .await;
    assert_eq!(cancel["status"], "success", "{cancel}");
    let (_, body) = app
        .invoke("contoso", "get_file", json!({"event_id": event}))
        .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["summary"]["event_id_status"], "Cancelled");
    assert!(
        body["message"].as_str().unwrap().contains("wrong host"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// run_script

#[tokio::test]
async fn run_script_with_parameters_returns_the_output() {
    let app = spawn_with(instant()).await;
    let mut params = run_script_params(30);
    params["script_args"] = json!("-Verbose");
    let (status, body) = app.invoke("contoso", "run_script", params).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "run_script", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["script_status"], "Succeeded");
    assert_eq!(body["summary"]["exit_code"], 0);
    let row = &body["data"][0];
    assert_eq!(row["script_name"], "collect-triage.ps1");
    assert_eq!(row["exit_code"], 0);
    assert!(
        row["script_output"].as_str().unwrap().contains("explorer"),
        "{row}"
    );
    assert_eq!(row["script_errors"], "");
    assert_eq!(row["script_output_truncated"], false);
    // The arguments went to Defender.
    let event = body["summary"]["event_id"].as_str().unwrap();
    let w = app.sim.world();
    let a = w.actions.get(event).unwrap();
    assert_eq!(
        a.commands[0].params,
        vec![
            ("ScriptName".to_string(), "collect-triage.ps1".to_string()),
            ("Args".to_string(), "-Verbose".to_string())
        ]
    );
}

#[tokio::test]
async fn run_script_four_cases() {
    let app = spawn_with(manual()).await;
    // 4: neither.
    let (status, body) = app.invoke("contoso", "run_script", json!({})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("give event_id, or device_id + script_name + comment"),
        "{body}"
    );
    // 2: parameters, timing out.
    let (_, body) = app
        .invoke("contoso", "run_script", run_script_params(1))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["script_status"], "Pending");
    let event = body["summary"]["event_id"].as_str().unwrap().to_string();
    app.sim.complete_action(&event, "Succeeded", None).unwrap();
    // 1: event_id alone.
    let (status, body) = app
        .invoke("contoso", "run_script", json!({"event_id": event}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["data"][0]["script_name"], "collect-triage.ps1");
    assert_eq!(body["summary"]["exit_code"], 0);
    // 3: both, with a usable event: its output, nothing new.
    let mut both = run_script_params(1);
    both["event_id"] = json!(event);
    let (_, body) = app.invoke("contoso", "run_script", both).await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["event_id"], event.as_str());
    assert_eq!(created(&app), 1);
    // 3: both, with a failed event: a new run.
    let (_, other) = app
        .invoke("contoso", "run_script", run_script_params(1))
        .await;
    let other_event = other["summary"]["event_id"].as_str().unwrap().to_string();
    app.sim
        .complete_action(&other_event, "Failed", Some("Script crashed".into()))
        .unwrap();
    let mut both = run_script_params(1);
    both["event_id"] = json!(other_event);
    let (_, body) = app.invoke("contoso", "run_script", both).await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["previous_event_id"], other_event.as_str());
    assert!(
        body["message"].as_str().unwrap().contains("Script crashed"),
        "the old event's errors are in the message: {body}"
    );
    assert_eq!(created(&app), 3);
}

#[tokio::test]
async fn run_script_of_a_script_missing_from_the_library_fails() {
    let app = spawn_with(instant()).await;
    let mut params = run_script_params(30);
    params["script_name"] = json!("nope.ps1");
    let (status, body) = app.invoke("contoso", "run_script", params).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nope.ps1 was not found in the library"),
        "{body}"
    );
    let mut bad = run_script_params(30);
    bad["script_name"] = json!("..\\evil.ps1");
    let (status, _) = app.invoke("contoso", "run_script", bad).await;
    assert_eq!(
        status, 400,
        "library names are letters, digits, '-', '_', '.'"
    );
}

// ---------------------------------------------------------------------------------------------
// put_file

#[tokio::test]
async fn put_file_copies_a_library_file_or_fails_with_the_command_error() {
    let app = spawn_with(instant()).await;
    let (status, body) = app
        .invoke(
            "contoso",
            "put_file",
            json!({"device_id": DEV, "file_name": "remediate.ps1", "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "put_file", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["put_file_status"], "Succeeded");
    assert_eq!(body["summary"]["file_name"], "remediate.ps1");
    assert_eq!(body["summary"]["live_response_result"], "Completed");

    let (status, body) = app
        .invoke(
            "contoso",
            "put_file",
            json!({"device_id": DEV, "file_name": "missing-tool.exe", "comment": COMMENT}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["summary"]["put_file_status"], "Failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing-tool.exe was not found in the library"),
        "{body}"
    );
    let (status, body) = app
        .invoke("contoso", "put_file", json!({"device_id": DEV}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("'file_name'"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Busy devices

#[tokio::test]
async fn busy_device_with_the_same_command_is_followed() {
    let app = spawn_with(manual()).await;
    let (_, first) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 1))
        .await;
    let event = first["summary"]["event_id"].as_str().unwrap().to_string();
    assert_eq!(created(&app), 1);
    // The same request again, without event_id: Defender refuses a second session, and the
    // pending one is followed.
    let mut same = get_file_params(&HOSTS.to_lowercase(), 1);
    same["comment"] = json!("another comment");
    let (status, body) = app.invoke("contoso", "get_file", same).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["event_id"], event.as_str());
    assert_eq!(body["summary"]["existing_action"], true);
    assert_eq!(created(&app), 1, "no second live response");
    assert_eq!(app.sim.counters().route_status("POST", LR_ROUTE, 400), 1);
    app.sim.complete_action(&event, "Succeeded", None).unwrap();
    let (_, body) = app
        .invoke("contoso", "get_file", json!({"event_id": event}))
        .await;
    assert_hosts_in_vault(&app, &body).await;
    assert_eq!(created(&app), 1);
}

#[tokio::test]
async fn busy_device_with_another_command_names_the_blocking_action() {
    let app = spawn_with(manual()).await;
    let (_, script) = app
        .invoke("contoso", "run_script", run_script_params(1))
        .await;
    let blocking = script["summary"]["event_id"].as_str().unwrap().to_string();
    let (status, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 5))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains(&blocking), "{msg}");
    assert!(msg.contains("RunScript collect-triage.ps1"), "{msg}");
    assert_eq!(body["summary"]["blocking_event_id"], blocking.as_str());
    assert_eq!(body["summary"]["existing_action"], false);
    assert_eq!(created(&app), 1);
}

#[tokio::test]
async fn tenant_session_limit_answers_503_after_the_deadline() {
    let mut scenario = manual();
    scenario.max_live_sessions_per_tenant = 1;
    let app = spawn_with(scenario).await;
    let (_, first) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 1))
        .await;
    assert_eq!(first["status"], "success", "{first}");
    // Another device, but the tenant's only session is taken; Defender asks for a wait
    // longer than the timeout.
    let resp = app
        .client
        .post(app.url("/assets/contoso/actions/run_script"))
        .bearer_auth(API_KEY)
        .json(&json!({"parameters": {
            "device_id": DEV2, "script_name": "remediate.ps1", "comment": COMMENT, "timeout": 2
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_envelope(&body, "run_script", "contoso");
    assert_eq!(body["status"], "failed");
    assert_eq!(created(&app), 1);
    assert_eq!(app.sim.counters().route_status("POST", LR_ROUTE, 429), 1);
}

// ---------------------------------------------------------------------------------------------
// Downloads: raw bytes, hostile names, dedupe, size

#[tokio::test]
async fn download_that_is_not_gzip_is_stored_as_it_is() {
    let app = spawn_with(instant()).await;
    let raw = "plain bytes, not gzip\n";
    app.sim.inject_fault(Fault {
        method: Some("GET".into()),
        path: "/download/*".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 200,
            body: Some(raw.into()),
            headers: [(
                "Content-Disposition".to_string(),
                "attachment; filename=\"notes.txt\"".to_string(),
            )]
            .into_iter()
            .collect(),
        },
    });
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 30))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(
        body["summary"]["vault_id"],
        sha256_hex(raw.as_bytes()).as_str()
    );
    assert_eq!(body["summary"]["file_name"], "notes.txt");
    assert_eq!(body["data"][0]["gunzipped"], false);
    let (_, content) = app
        .get(&format!("/vault/{}", sha256_hex(raw.as_bytes())))
        .await;
    assert_eq!(content, raw);
}

#[tokio::test]
async fn hostile_device_path_gives_a_safe_name_inside_the_vault() {
    let path = "C:\\x\\..\\..\\evil.exe";
    let app = spawn_with(with_file(instant(), text_file(path, "MZ payload"))).await;
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(path, 30))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["file_name"], "evil.exe");
    // Nothing was written outside the vault, and nothing inside under the offered name.
    let state = app.state_dir.path();
    assert!(!state.join("evil.exe").exists());
    assert!(!state.parent().unwrap().join("evil.exe").exists());
    let vault_files: Vec<String> = std::fs::read_dir(state.join("vault"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(vault_files.len(), 2, "{vault_files:?}");
    for f in &vault_files {
        assert!(f.starts_with(&sha256_hex(b"MZ payload")), "{f}");
    }
    // A hostile Content-Disposition name is reduced too.
    app.sim.inject_fault(Fault {
        method: Some("GET".into()),
        path: "/download/*".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 200,
            body: Some("root:x:0:0".into()),
            headers: [(
                "Content-Disposition".to_string(),
                "attachment; filename=\"/etc/passwd\"".to_string(),
            )]
            .into_iter()
            .collect(),
        },
    });
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(path, 30))
        .await;
    assert_eq!(body["summary"]["file_name"], "passwd", "{body}");
}

#[tokio::test]
async fn same_file_twice_is_stored_once() {
    let app = spawn_with(instant()).await;
    let (_, first) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 30))
        .await;
    let (_, second) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 30))
        .await;
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(second["status"], "success", "{second}");
    assert_ne!(first["summary"]["event_id"], second["summary"]["event_id"]);
    assert_eq!(first["summary"]["vault_id"], second["summary"]["vault_id"]);
    assert_eq!(first["data"][0]["already_in_vault"], false);
    assert_eq!(second["data"][0]["already_in_vault"], true);
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("already in the vault")
    );
    let entries = std::fs::read_dir(app.state_dir.path().join("vault"))
        .unwrap()
        .count();
    assert_eq!(entries, 2, "one file and its metadata");
}

#[tokio::test]
async fn large_file_is_streamed_into_the_vault() {
    let path = "C:\\Temp\\memory.dmp";
    let size: u64 = 64 << 20;
    let app = spawn_with(with_file(
        instant(),
        DeviceFile {
            path: path.into(),
            content: None,
            content_base64: None,
            size: Some(size),
            zeros: false,
        },
    ))
    .await;
    // The SHA256 of what the simulator's device holds, computed in pieces meanwhile.
    let expected = tokio::task::spawn_blocking(move || {
        let mut generated = GeneratedFile::new(path, size);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = generated.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    });
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(path, 120))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    let want = expected.await.unwrap();
    assert_eq!(body["summary"]["vault_id"], want.as_str());
    assert_eq!(body["summary"]["sha256"], want.as_str());
    assert_eq!(body["summary"]["size"], size);
    assert_eq!(body["summary"]["file_name"], "memory.dmp");
    // The vault file holds exactly the device's bytes, so its SHA256 is the one above.
    let stored = app.state_dir.path().join("vault").join(&want);
    let mut file = std::fs::File::open(&stored).unwrap();
    let mut generated = GeneratedFile::new(path, size);
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0u64;
    loop {
        let n = file.read(&mut a).unwrap();
        if n == 0 {
            break;
        }
        generated.read_exact(&mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "vault file differs near byte {total}");
        total += n as u64;
    }
    assert_eq!(total, size);
}

// ---------------------------------------------------------------------------------------------
// Idempotency-Key

#[tokio::test]
async fn idempotency_key_resumes_the_same_live_response() {
    let app = spawn_with(manual()).await;
    let key = "playbook-run-7781";
    let (_, first) = invoke_keyed(&app, "get_file", get_file_params(HOSTS, 1), key).await;
    assert_eq!(first["status"], "success", "{first}");
    let event = first["summary"]["event_id"].as_str().unwrap().to_string();
    // Recorded in the asset's state file.
    let store = defender_soar::state::StateStore::open(app.state_dir.path()).unwrap();
    let state = store.load("contoso").await.unwrap();
    let record = &state.idempotency[key];
    assert_eq!(record.event_id, event);
    assert_eq!(record.action, "get_file");

    // Repeated: the same live response, no POST.
    let (_, again) = invoke_keyed(&app, "get_file", get_file_params(HOSTS, 1), key).await;
    assert_eq!(again["summary"]["event_id"], event.as_str(), "{again}");
    assert_eq!(again["summary"]["idempotent_replay"], true);
    assert_eq!(posts(&app), 1);

    // The same key with other parameters or for another action is refused.
    let (status, body) =
        invoke_keyed(&app, "get_file", get_file_params("C:\\other.txt", 1), key).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key reused with different parameters"),
        "{body}"
    );
    let (status, _) = invoke_keyed(&app, "run_script", run_script_params(1), key).await;
    assert_eq!(status, 400);
    assert_eq!(posts(&app), 1);

    // Once it succeeded, the repeat returns the file.
    app.sim.complete_action(&event, "Succeeded", None).unwrap();
    let (_, done) = invoke_keyed(&app, "get_file", get_file_params(HOSTS, 5), key).await;
    assert_hosts_in_vault(&app, &done).await;
    assert_eq!(done["summary"]["event_id"], event.as_str());
    assert_eq!(posts(&app), 1);
    assert_eq!(live_responses(&app), vec![event]);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_start_one_live_response() {
    let app = spawn_with(manual()).await;
    let key = "concurrent-key-1";
    let (a, b) = tokio::join!(
        invoke_keyed(&app, "run_script", run_script_params(1), key),
        invoke_keyed(&app, "run_script", run_script_params(1), key),
    );
    assert_eq!(a.1["status"], "success", "{}", a.1);
    assert_eq!(b.1["status"], "success", "{}", b.1);
    assert_eq!(a.1["summary"]["event_id"], b.1["summary"]["event_id"]);
    assert_eq!(posts(&app), 1);
}

#[tokio::test]
async fn download_links_never_reach_the_logs() {
    capture_logs();
    let app = spawn_with(instant()).await;
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 30))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(!logs.is_empty());
    let leaked: Vec<&str> = logs.lines().filter(|l| l.contains("/download/")).collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}

#[tokio::test]
async fn a_malformed_device_is_refused_even_when_an_event_id_is_given() {
    let app = spawn().await;
    for device in ["\u{2001}\u{2003}\u{85}", "not a host!", "a..b"] {
        let (status, body) = app
            .invoke(
                "contoso",
                "get_file",
                json!({
                    "event_id": "2b60cbe0-c365-04e9-dbaf-9dac02dad7d0",
                    "device_id": device,
                    "file_path": "C:\\x.txt",
                    "comment": "c",
                }),
            )
            .await;
        assert_eq!(status, 400, "{device:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("'device_id'"),
            "{body}"
        );
    }
    assert_eq!(app.sim.counters().total, 0);
}

// ---------------------------------------------------------------------------------------------
// get_live_response_result

#[tokio::test]
async fn a_finished_live_responses_result_is_fetched_by_event_and_index() {
    let app = spawn_with(instant()).await;
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 30))
        .await;
    let vault_id = assert_hosts_in_vault(&app, &body).await;
    let event = body["summary"]["event_id"].as_str().unwrap().to_string();
    let links = |app: &TestApp| {
        app.sim.counters().path(
            "GET",
            &format!("/api/machineactions/{event}/GetLiveResponseResultDownloadLink(index=0)"),
        )
    };
    let before = links(&app);
    let (status, body) = app
        .invoke(
            "contoso",
            "get_live_response_result",
            json!({"event_id": event.to_uppercase(), "command_index": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "get_live_response_result", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["vault_id"], vault_id.as_str());
    assert_eq!(body["summary"]["command_type"], "GetFile");
    assert_eq!(body["summary"]["command_index"], 0);
    assert_eq!(links(&app), before + 1, "a fresh link for the result");
    assert!(!body.to_string().contains("/download/"), "{body}");
    // No new live response was started.
    assert_eq!(posts(&app), 1);

    // A RunScript's output.
    let (_, ran) = app
        .invoke("contoso", "run_script", run_script_params(30))
        .await;
    assert_eq!(ran["status"], "success", "{ran}");
    let script_event = ran["summary"]["event_id"].as_str().unwrap();
    let (status, body) = app
        .invoke(
            "contoso",
            "get_live_response_result",
            json!({"event_id": script_event}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["command_type"], "RunScript");
    assert_eq!(
        body["data"][0]["script_output"],
        ran["data"][0]["script_output"]
    );
    assert_no_summary_drift(&app.app);
}

#[tokio::test]
async fn a_live_response_result_that_cannot_be_had_is_explained() {
    let app = spawn_with(manual()).await;
    let (_, body) = app
        .invoke("contoso", "get_file", get_file_params(HOSTS, 1))
        .await;
    let event = body["summary"]["event_id"].as_str().unwrap().to_string();
    // Still running.
    let (status, body) = app
        .invoke(
            "contoso",
            "get_live_response_result",
            json!({"event_id": event}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("still"),
        "{body}"
    );
    // No such command.
    let (status, body) = app
        .invoke(
            "contoso",
            "get_live_response_result",
            json!({"event_id": event, "command_index": 3}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("command_index"),
        "{body}"
    );
    // Not a live response: an isolation's event.
    let (_, iso) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": DEV2, "comment": COMMENT, "timeout": 1}),
        )
        .await;
    let iso_event = iso["summary"]["event_id"].as_str().unwrap();
    let (status, body) = app
        .invoke(
            "contoso",
            "get_live_response_result",
            json!({"event_id": iso_event}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a live response"),
        "{body}"
    );
    // Unknown event.
    let (status, body) = app
        .invoke(
            "contoso",
            "get_live_response_result",
            json!({"event_id": "00000000-0000-0000-0000-000000000000"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    // A malformed event id never reaches Defender.
    let (status, body) = app
        .invoke(
            "contoso",
            "get_live_response_result",
            json!({"event_id": "../machines"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("event_id"),
        "{body}"
    );
}
