//! Machine response actions and the machine action resource over HTTP: creation bodies,
//! validation, the lifecycle (timings, manual moves, outcomes), conflicts, cancel, the
//! investigation package link, the list with OData, and the API guard on these routes.

mod common;

use std::time::Duration;

use defender_sim::jwt::{self, TokenRequest};
use defender_sim::scenario::OutcomeRule;
use defender_sim::{Scenario, SimHandle};
use serde_json::{Value, json};

/// Status and JSON body (Null when the body is not JSON).
async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(sim: &SimHandle, path: &str) -> (u16, Value) {
    let resp = common::client()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(common::token(sim))
        .send()
        .await
        .unwrap();
    answer(resp).await
}

async fn post(sim: &SimHandle, path: &str, body: &str) -> (u16, Value) {
    let resp = common::client()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(common::token(sim))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

/// A scenario whose actions only move when the test moves them.
fn manual() -> Scenario {
    let mut s = common::scenario();
    s.timings.manual = true;
    s
}

fn machine(sim: &SimHandle, i: usize) -> (String, String) {
    let m = &sim.scenario().machines[i];
    (
        m["id"].as_str().unwrap().to_string(),
        m["computerDnsName"].as_str().unwrap().to_string(),
    )
}

fn app_name(sim: &SimHandle) -> String {
    sim.scenario().tenants[0].apps[0].name.clone()
}

fn action_count(sim: &SimHandle) -> usize {
    sim.world().actions.iter().count()
}

/// Moves an action one stage along, as the control surface does.
fn advance(sim: &SimHandle, id: &str) {
    let now = sim.clock.now_ms();
    sim.world().actions.get_mut(id).unwrap().advance(now);
}

/// Forces an action's final status.
fn complete(sim: &SimHandle, id: &str, status: &str) {
    let now = sim.clock.now_ms();
    sim.world()
        .actions
        .get_mut(id)
        .unwrap()
        .complete(status, None, now);
}

async fn status_of(sim: &SimHandle, id: &str) -> String {
    let (code, body) = get(sim, &format!("/api/machineactions/{id}")).await;
    assert_eq!(code, 200, "{body}");
    body["status"].as_str().unwrap().to_string()
}

fn token_with_roles(sim: &SimHandle, roles: &[&str]) -> String {
    let scenario = sim.scenario();
    let tenant = &scenario.tenants[0];
    jwt::issue(
        sim,
        &TokenRequest {
            tenant_id: &tenant.id,
            client_id: &tenant.apps[0].client_id,
            audience: "https://api.securitycenter.microsoft.com",
            roles: Some(roles.iter().map(|r| r.to_string()).collect()),
            scopes: None,
            v2: true,
            login_base: "https://login.microsoftonline.com",
            user: None,
        },
    )
    .0
}

#[tokio::test]
async fn every_action_answers_201_with_a_full_machine_action() {
    let sim = common::start(manual()).await;
    let (m0, dns0) = machine(&sim, 0);
    let (m1, dns1) = machine(&sim, 1);
    let sha1 = "A94A8FE5CCB19BA61C4C0873D391E987982FBBD3";
    let cases: Vec<(&str, &str, String, &str, Value, Value)> = vec![
        (
            "isolate",
            &m0,
            r#"{"Comment":"c1","IsolationType":"Selective"}"#.into(),
            "Isolate",
            json!("Selective"),
            Value::Null,
        ),
        (
            "unisolate",
            &m1,
            r#"{"Comment":"c2"}"#.into(),
            "Unisolate",
            Value::Null,
            Value::Null,
        ),
        (
            "stopandquarantinefile",
            &m0,
            format!(r#"{{"Comment":"c3","Sha1":"{sha1}"}}"#),
            "StopAndQuarantineFile",
            Value::Null,
            json!({"fileIdentifier": sha1.to_lowercase(), "fileIdentifierType": "Sha1"}),
        ),
        (
            "runantivirusscan",
            &m0,
            r#"{"Comment":"c4","ScanType":"Full"}"#.into(),
            "RunAntiVirusScan",
            json!("Full"),
            Value::Null,
        ),
        (
            "restrictcodeexecution",
            &m0,
            r#"{"Comment":"c5"}"#.into(),
            "RestrictCodeExecution",
            Value::Null,
            Value::Null,
        ),
        (
            "unrestrictcodeexecution",
            &m1,
            r#"{"Comment":"c6"}"#.into(),
            "UnrestrictCodeExecution",
            Value::Null,
            Value::Null,
        ),
        (
            "collectinvestigationpackage",
            &m0,
            r#"{"Comment":"c7"}"#.into(),
            "CollectInvestigationPackage",
            Value::Null,
            Value::Null,
        ),
        (
            "offboard",
            &m1,
            r#"{"Comment":"c8"}"#.into(),
            "Offboard",
            Value::Null,
            Value::Null,
        ),
    ];
    for (verb, machine_id, body, action_type, scope, file) in cases {
        let (status, a) = post(&sim, &format!("/api/machines/{machine_id}/{verb}"), &body).await;
        assert_eq!(status, 201, "{verb}: {a}");
        let dns = if machine_id == m0 { &dns0 } else { &dns1 };
        let comment = serde_json::from_str::<Value>(&body).unwrap()["Comment"].clone();
        assert!(
            a["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/api/$metadata#MachineActions/$entity"),
            "{verb}"
        );
        assert!(uuid::Uuid::parse_str(a["id"].as_str().unwrap()).is_ok());
        assert_eq!(a["type"], action_type, "{verb}");
        assert_eq!(a["scope"], scope, "{verb}");
        assert_eq!(a["requestor"], app_name(&sim), "{verb}");
        assert_eq!(a["requestorComment"], comment, "{verb}");
        assert_eq!(a["status"], "Pending", "{verb}");
        assert_eq!(a["machineId"], machine_id, "{verb}");
        assert_eq!(a["computerDnsName"], dns.as_str(), "{verb}");
        assert_eq!(a["relatedFileInfo"], file, "{verb}");
        assert_eq!(a["commands"], json!([]), "{verb}");
        assert_eq!(a["requestSource"], "PublicApi", "{verb}");
        assert_eq!(a["errorHResult"], 0, "{verb}");
        assert!(
            a["title"].as_str().unwrap().contains(dns.as_str()),
            "{verb}"
        );
        assert!(a["creationDateTimeUtc"].as_str().unwrap().ends_with('Z'));
        assert!(a["lastUpdateDateTimeUtc"].is_string());
        assert!(a["cancellationRequestor"].is_null());
        assert!(a["cancellationComment"].is_null());
        assert!(a["cancellationDateTimeUtc"].is_null());
        // The same action reads back by id.
        let (status, read) = get(
            &sim,
            &format!("/api/machineactions/{}", a["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(read, a, "{verb}");
    }
    assert_eq!(action_count(&sim), 8);
    assert_eq!(
        sim.counters()
            .route_status("POST", "/api/machines/{id}/isolate", 201),
        1
    );
}

#[tokio::test]
async fn defaults_fill_isolation_type_and_scan_type() {
    let sim = common::start(manual()).await;
    let (m0, _) = machine(&sim, 0);
    let (_, a) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(a["scope"], "Full");
    let (_, a) = post(
        &sim,
        &format!("/api/machines/{m0}/runantivirusscan"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(a["scope"], "Quick");
}

#[tokio::test]
async fn actions_move_with_the_clock() {
    let mut s = common::scenario();
    s.timings.manual = false;
    s.timings.pending_ms = 60_000;
    s.timings.in_progress_ms = 120_000;
    let sim = common::start(s).await;
    let (m0, _) = machine(&sim, 0);
    let (status, a) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let id = a["id"].as_str().unwrap().to_string();
    assert_eq!(status_of(&sim, &id).await, "Pending");
    sim.clock.advance(Duration::from_secs(61));
    assert_eq!(status_of(&sim, &id).await, "InProgress");
    sim.clock.advance(Duration::from_secs(60));
    assert_eq!(status_of(&sim, &id).await, "InProgress");
    sim.clock.advance(Duration::from_secs(60));
    let (_, done) = get(&sim, &format!("/api/machineactions/{id}")).await;
    assert_eq!(done["status"], "Succeeded");
    assert_ne!(done["lastUpdateDateTimeUtc"], a["lastUpdateDateTimeUtc"]);
    assert_eq!(done["creationDateTimeUtc"], a["creationDateTimeUtc"]);
}

#[tokio::test]
async fn per_type_timings_of_zero_finish_at_once() {
    let mut s = common::scenario();
    s.timings.manual = false;
    s.timings.pending_ms = 3_600_000;
    s.timings.per_type.insert(
        "RunAntiVirusScan".into(),
        defender_sim::scenario::StageTimings {
            pending_ms: 0,
            in_progress_ms: 0,
        },
    );
    let sim = common::start(s).await;
    let (m0, _) = machine(&sim, 0);
    let (_, scan) = post(
        &sim,
        &format!("/api/machines/{m0}/runantivirusscan"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(
        status_of(&sim, scan["id"].as_str().unwrap()).await,
        "Succeeded"
    );
    let (_, iso) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(
        status_of(&sim, iso["id"].as_str().unwrap()).await,
        "Pending"
    );
}

#[tokio::test]
async fn manual_actions_move_only_when_told() {
    let sim = common::start(manual()).await;
    let (m0, _) = machine(&sim, 0);
    let (_, a) = post(
        &sim,
        &format!("/api/machines/{m0}/offboard"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let id = a["id"].as_str().unwrap().to_string();
    sim.clock.advance(Duration::from_secs(86_400));
    assert_eq!(status_of(&sim, &id).await, "Pending");
    advance(&sim, &id);
    assert_eq!(status_of(&sim, &id).await, "InProgress");
    advance(&sim, &id);
    assert_eq!(status_of(&sim, &id).await, "Succeeded");
}

#[tokio::test]
async fn outcome_rules_decide_failed_and_timeout() {
    let mut s = common::scenario();
    s.timings.manual = false;
    s.timings.pending_ms = 0;
    s.timings.in_progress_ms = 0;
    s.outcomes = vec![
        OutcomeRule {
            action_type: Some("Isolate".into()),
            machine_id: None,
            status: "Failed".into(),
            error: Some("device unreachable".into()),
            remaining: None,
        },
        OutcomeRule {
            action_type: Some("RunAntiVirusScan".into()),
            machine_id: None,
            status: "TimeOut".into(),
            error: None,
            remaining: Some(1),
        },
    ];
    let sim = common::start(s).await;
    let (m0, _) = machine(&sim, 0);
    let (_, iso) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let (_, read) = get(
        &sim,
        &format!("/api/machineactions/{}", iso["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(read["status"], "Failed");
    assert_ne!(read["errorHResult"], 0);
    let (_, scan) = post(
        &sim,
        &format!("/api/machines/{m0}/runantivirusscan"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(
        status_of(&sim, scan["id"].as_str().unwrap()).await,
        "TimeOut"
    );
    // The TimeOut rule was good for one action only.
    let (_, scan) = post(
        &sim,
        &format!("/api/machines/{m0}/runantivirusscan"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(
        status_of(&sim, scan["id"].as_str().unwrap()).await,
        "Succeeded"
    );
}

#[tokio::test]
async fn a_pending_action_of_the_same_kind_is_active_request_already_exists() {
    let sim = common::start(manual()).await;
    let (m0, _) = machine(&sim, 0);
    let (m1, _) = machine(&sim, 1);
    let (status, iso) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);
    for verb in ["isolate", "unisolate"] {
        let (status, body) = post(
            &sim,
            &format!("/api/machines/{m0}/{verb}"),
            r#"{"Comment":"again"}"#,
        )
        .await;
        assert_eq!(status, 400, "{verb}");
        assert_eq!(body["error"]["code"], "ActiveRequestAlreadyExists");
        assert_eq!(body["error"]["message"], "Action is already in progress");
    }
    // A pending release blocks an isolation too.
    let (m2, _) = machine(&sim, 2);
    let (status, _) = post(
        &sim,
        &format!("/api/machines/{m2}/unisolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = post(
        &sim,
        &format!("/api/machines/{m2}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "ActiveRequestAlreadyExists");
    // Other machines and other kinds are not blocked.
    let (status, _) = post(
        &sim,
        &format!("/api/machines/{m1}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &sim,
        &format!("/api/machines/{m0}/restrictcodeexecution"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = post(
        &sim,
        &format!("/api/machines/{m0}/unrestrictcodeexecution"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "ActiveRequestAlreadyExists");
    // Still blocked while InProgress; free once final.
    let id = iso["id"].as_str().unwrap();
    advance(&sim, id);
    let (status, _) = post(
        &sim,
        &format!("/api/machines/{m0}/unisolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 400);
    complete(&sim, id, "Succeeded");
    let (status, rel) = post(
        &sim,
        &format!("/api/machines/{m0}/unisolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201, "{rel}");
    assert_eq!(rel["type"], "Unisolate");
    assert_eq!(action_count(&sim), 5);
}

#[tokio::test]
async fn cancel_sets_cancellation_and_only_applies_to_pending_actions() {
    let sim = common::start(manual()).await;
    let (m0, _) = machine(&sim, 0);
    let (_, a) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let id = a["id"].as_str().unwrap().to_string();
    let cancel = format!("/api/machineactions/{id}/cancel");

    let (status, body) = post(&sim, &cancel, r#"{}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "InvalidRequestBody");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Comment")
    );

    sim.clock.advance(Duration::from_secs(5));
    let (status, c) = post(&sim, &cancel, r#"{"Comment":"changed my mind"}"#).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["id"], id);
    assert_eq!(c["status"], "Cancelled");
    assert_eq!(c["cancellationRequestor"], app_name(&sim));
    assert_eq!(c["cancellationComment"], "changed my mind");
    assert!(
        c["cancellationDateTimeUtc"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_ne!(c["cancellationDateTimeUtc"], a["creationDateTimeUtc"]);
    assert!(
        c["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#MachineActions/$entity")
    );
    assert_eq!(status_of(&sim, &id).await, "Cancelled");

    // A final action cannot be cancelled.
    let (status, body) = post(&sim, &cancel, r#"{"Comment":"again"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    let (_, scan) = post(
        &sim,
        &format!("/api/machines/{m0}/runantivirusscan"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let scan_id = scan["id"].as_str().unwrap();
    complete(&sim, scan_id, "Succeeded");
    let (status, _) = post(
        &sim,
        &format!("/api/machineactions/{scan_id}/cancel"),
        r#"{"Comment":"late"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(status_of(&sim, scan_id).await, "Succeeded");

    // The cancelled isolation no longer blocks a new one.
    let (status, _) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);

    let (status, body) = post(
        &sim,
        "/api/machineactions/00000000-0000-0000-0000-000000000000/cancel",
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
}

#[tokio::test]
async fn package_uri_is_404_until_the_collection_succeeded_then_links_a_zip() {
    let mut s = manual();
    s.rate_limits.package_uri.per_minute = 100;
    let sim = common::start(s).await;
    let (m0, _) = machine(&sim, 0);
    let (_, pkg) = post(
        &sim,
        &format!("/api/machines/{m0}/collectinvestigationpackage"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let id = pkg["id"].as_str().unwrap().to_string();
    let uri_path = format!("/api/machineactions/{id}/getPackageUri");

    let (status, body) = get(&sim, &uri_path).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    advance(&sim, &id);
    let (status, _) = get(&sim, &uri_path).await;
    assert_eq!(status, 404);
    advance(&sim, &id);

    let (status, body) = get(&sim, &uri_path).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#Edm.String")
    );
    let link = body["value"].as_str().unwrap();
    assert!(link.starts_with(&sim.base_url()), "{link}");
    // The link needs no bearer token.
    let resp = common::client().get(link).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert!(
        bytes.starts_with(b"PK\x03\x04"),
        "{:?}",
        &bytes[..bytes.len().min(8)]
    );

    // Not a package action; unknown action.
    let (_, iso) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    complete(&sim, iso["id"].as_str().unwrap(), "Succeeded");
    let (status, _) = get(
        &sim,
        &format!(
            "/api/machineactions/{}/getpackageuri",
            iso["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = get(
        &sim,
        "/api/machineactions/00000000-0000-0000-0000-000000000000/getpackageuri",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        sim.counters()
            .route_status("GET", "/api/machineactions/{id}/getpackageuri", 404),
        4
    );
}

#[tokio::test]
async fn failed_package_collection_never_gets_a_link() {
    let mut s = manual();
    s.rate_limits.package_uri.per_minute = 100;
    let sim = common::start(s).await;
    let (m0, _) = machine(&sim, 0);
    let (_, pkg) = post(
        &sim,
        &format!("/api/machines/{m0}/collectinvestigationpackage"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let id = pkg["id"].as_str().unwrap();
    complete(&sim, id, "Failed");
    let (status, _) = get(&sim, &format!("/api/machineactions/{id}/getpackageuri")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn invalid_bodies_are_400_with_the_field_named() {
    let sim = common::start(manual()).await;
    let (m0, _) = machine(&sim, 0);
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("isolate", r#"{}"#, "InvalidRequestBody", "Comment"),
        ("isolate", "", "InvalidRequestBody", "Comment"),
        (
            "isolate",
            r#"{"comment":"lower-case key"}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        (
            "isolate",
            r#"{"Comment":"   "}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        (
            "isolate",
            r#"{"Comment":42}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        (
            "isolate",
            r#"{"Comment":"x","IsolationType":"Partial"}"#,
            "InvalidRequestBody",
            "IsolationType",
        ),
        (
            "unisolate",
            r#"{"Reason":"x"}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        (
            "stopandquarantinefile",
            r#"{"Comment":"x"}"#,
            "InvalidRequestBody",
            "Sha1",
        ),
        (
            "stopandquarantinefile",
            r#"{"Sha1":"a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        (
            "stopandquarantinefile",
            r#"{"Comment":"x","Sha1":"abc"}"#,
            "InvalidHashValue",
            "Sha1",
        ),
        (
            "stopandquarantinefile",
            r#"{"Comment":"x","Sha1":"z94a8fe5ccb19ba61c4c0873d391e987982fbbd3"}"#,
            "InvalidHashValue",
            "Sha1",
        ),
        (
            "runantivirusscan",
            r#"{"Comment":"x","ScanType":"Deep"}"#,
            "InvalidRequestBody",
            "ScanType",
        ),
        (
            "restrictcodeexecution",
            r#"{}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        (
            "unrestrictcodeexecution",
            r#"{}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        (
            "collectinvestigationpackage",
            r#"{}"#,
            "InvalidRequestBody",
            "Comment",
        ),
        ("offboard", r#"{}"#, "InvalidRequestBody", "Comment"),
        ("isolate", r#"{"Comment":"x""#, "InvalidRequestBody", "JSON"),
        ("isolate", r#"["Comment"]"#, "InvalidRequestBody", "object"),
    ];
    for (verb, body, code, field) in cases {
        let resp = common::client()
            .post(format!("{}/api/machines/{m0}/{verb}", sim.base_url()))
            .bearer_auth(common::token(&sim))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{verb} {body}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{verb} {body}"
        );
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{verb} {body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(field),
            "{verb} {body}: {err}"
        );
        assert!(err["error"]["target"].is_string());
    }
    assert_eq!(action_count(&sim), 0);

    // A valid body without a content type is accepted.
    let resp = common::client()
        .post(format!("{}/api/machines/{m0}/isolate", sim.base_url()))
        .bearer_auth(common::token(&sim))
        .body(r#"{"Comment":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn unknown_machine_is_resource_not_found() {
    let sim = common::start(manual()).await;
    let missing = "ffffffffffffffffffffffffffffffffffffffff";
    let (status, body) = post(
        &sim,
        &format!("/api/machines/{missing}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert_eq!(
        body["error"]["message"],
        format!("Machine {missing} was not found")
    );
    let (status, body) = get(
        &sim,
        "/api/machineactions/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert_eq!(action_count(&sim), 0);
}

#[tokio::test]
async fn paths_and_ids_are_case_insensitive() {
    let sim = common::start(manual()).await;
    let (m0, _) = machine(&sim, 0);
    let (status, a) = post(
        &sim,
        &format!("/API/Machines/{}/Isolate", m0.to_uppercase()),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["machineId"], m0.as_str());
    let id = a["id"].as_str().unwrap();
    let (status, read) = get(&sim, &format!("/API/MachineActions/{}", id.to_uppercase())).await;
    assert_eq!(status, 200);
    assert_eq!(read["id"], id);
    let (status, _) = post(
        &sim,
        &format!("/api/machines/{m0}/StopAndQuarantineFile"),
        r#"{"Comment":"x","Sha1":"a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &sim,
        &format!("/api/machines/{m0}/runAntiVirusScan"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn guard_refuses_missing_tokens_and_missing_roles() {
    let sim = common::start(manual()).await;
    let (m0, _) = machine(&sim, 0);
    let client = common::client();
    let url = format!("{}/api/machines/{m0}/isolate", sim.base_url());

    let resp = client
        .post(&url)
        .json(&json!({"Comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .post(&url)
        .bearer_auth("garbage")
        .json(&json!({"Comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let token = common::token(&sim);
    sim.clock
        .advance(Duration::from_secs(sim.scenario().token_lifetime_secs + 1));
    let resp = client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"Comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let token = common::token(&sim);
    sim.expire_access_tokens(None);
    let resp = client
        .get(format!("{}/api/machineactions", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let reader = token_with_roles(&sim, &["Machine.Read.All"]);
    let resp = client
        .post(&url)
        .bearer_auth(&reader)
        .json(&json!({"Comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Machine.Isolate")
    );
    // The reader may read the action list.
    let resp = client
        .get(format!("{}/api/machineactions", sim.base_url()))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(action_count(&sim), 0);
    assert_eq!(
        sim.counters()
            .route_status("POST", "/api/machines/{id}/isolate", 401),
        3
    );
}

#[tokio::test]
async fn action_reads_are_rate_limited_with_retry_after() {
    let mut s = manual();
    s.rate_limits.default.per_minute = 3;
    let sim = common::start(s).await;
    let (m0, _) = machine(&sim, 0);
    let (status, a) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let path = format!("/api/machineactions/{}", a["id"].as_str().unwrap());
    let token = common::token(&sim);
    let client = common::client();
    for _ in 0..2 {
        let resp = client
            .get(format!("{}{path}", sim.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = client
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(sim.counters().throttled, 1);
}

#[tokio::test]
async fn the_action_list_filters_pages_and_stays_in_the_tenant() {
    let mut s = manual();
    s.default_page_size = 2;
    let mut other = s.tenants[0].clone();
    other.id = "11111111-2222-4333-8444-555555555555".into();
    other.domain = Some("fabrikam.onmicrosoft.com".into());
    other.apps.truncate(1);
    other.apps[0].client_id = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f".into();
    s.tenants.push(other);
    let sim = common::start(s).await;
    let (m0, _) = machine(&sim, 0);
    let (m1, _) = machine(&sim, 1);
    let (_, iso) = post(
        &sim,
        &format!("/api/machines/{m0}/isolate"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let (_, scan) = post(
        &sim,
        &format!("/api/machines/{m1}/runantivirusscan"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    let (_, off) = post(
        &sim,
        &format!("/api/machines/{m1}/offboard"),
        r#"{"Comment":"x"}"#,
    )
    .await;
    complete(&sim, scan["id"].as_str().unwrap(), "Succeeded");
    let id = |a: &Value| a["id"].as_str().unwrap().to_string();

    // All three, over two pages.
    let (status, page1) = get(&sim, "/api/machineactions").await;
    assert_eq!(status, 200);
    assert!(
        page1["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#MachineActions")
    );
    assert_eq!(page1["value"].as_array().unwrap().len(), 2);
    // List items name the update time as Microsoft's list example does.
    for a in page1["value"].as_array().unwrap() {
        assert!(
            a["lastUpdateTimeUtc"].as_str().unwrap().ends_with('Z'),
            "{a}"
        );
        assert!(a.get("lastUpdateDateTimeUtc").is_none(), "{a}");
    }
    let next = page1["@odata.nextLink"].as_str().unwrap();
    let resp = common::client()
        .get(next)
        .bearer_auth(common::token(&sim))
        .send()
        .await
        .unwrap();
    let (_, page2) = answer(resp).await;
    assert_eq!(page2["value"].as_array().unwrap().len(), 1);
    assert!(page2.get("@odata.nextLink").is_none());
    let all: Vec<String> = page1["value"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["value"].as_array().unwrap())
        .map(id)
        .collect();
    assert_eq!(all, [id(&iso), id(&scan), id(&off)]);

    let filtered = |body: &Value| -> Vec<String> {
        body["value"].as_array().unwrap().iter().map(id).collect()
    };
    let (_, body) = get(
        &sim,
        &format!("/api/machineactions?$filter=machineId%20eq%20%27{m1}%27"),
    )
    .await;
    assert_eq!(filtered(&body), [id(&scan), id(&off)]);
    let (_, body) = get(
        &sim,
        "/api/machineactions?$filter=status%20eq%20%27Succeeded%27",
    )
    .await;
    assert_eq!(filtered(&body), [id(&scan)]);
    let (_, body) = get(&sim, &format!("/api/machineactions?$filter=machineId%20eq%20%27{m1}%27%20and%20status%20eq%20%27Pending%27")).await;
    assert_eq!(filtered(&body), [id(&off)]);
    let (_, body) = get(
        &sim,
        "/api/machineactions?$filter=type%20eq%20%27Isolate%27%20or%20type%20eq%20%27Offboard%27",
    )
    .await;
    assert_eq!(filtered(&body), [id(&iso), id(&off)]);
    let (status, body) = get(&sim, "/api/machineactions?$filter=title%20eq%20%27x%27").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "ODataError");

    let resp = common::client()
        .get(format!(
            "{}/api/machineactions/$count?$filter=status%20eq%20%27Pending%27",
            sim.base_url()
        ))
        .bearer_auth(common::token(&sim))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "2");

    // Another tenant sees none of them.
    let scenario = sim.scenario();
    let fabrikam = scenario.tenants.last().unwrap();
    let (token, _, _) = jwt::issue(
        &sim,
        &TokenRequest {
            tenant_id: &fabrikam.id,
            client_id: &fabrikam.apps[0].client_id,
            audience: "https://api.securitycenter.microsoft.com",
            roles: Some(fabrikam.apps[0].roles.clone()),
            scopes: None,
            v2: true,
            login_base: "https://login.microsoftonline.com",
            user: None,
        },
    );
    let client = common::client();
    let resp = client
        .get(format!("{}/api/machineactions", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = answer(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], json!([]));
    let resp = client
        .get(format!(
            "{}/api/machineactions/{}",
            sim.base_url(),
            id(&iso)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
