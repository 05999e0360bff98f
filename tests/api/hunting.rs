//! Advanced hunting through the host: `run_query` on Graph and on the Defender API, the
//! templates on the scenario's entities, hostile entities, Microsoft's errors, the answer
//! limits and the hunting budget.

use defender_sim::{Fault, FaultKind, Scenario};
use serde_json::{Value, json};

use crate::helpers::*;

const MDE: &str = "/api/advancedqueries/run";
const GRAPH: &str = "/v1.0/security/runHuntingQuery";

const SHA256: &str = "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea";
const FINANCE: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
const HR: &str = "8cfcc2dff88df3eed6a4227926412e6147aff567";
const DC: &str = "d01e2454fe9bc34a9e29c10e581a2705af4cf80b";
const DEV: &str = "a488e8046661a20484e95b7d3ccf619a0763b17e";

fn mde_calls(app: &TestApp) -> u64 {
    app.sim.counters().route("POST", MDE)
}

fn graph_calls(app: &TestApp) -> u64 {
    app.sim.counters().route("POST", GRAPH)
}

fn rows(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap()
}

/// The distinct `DeviceId`s of an answer's rows, sorted.
fn devices(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = rows(body)
        .iter()
        .map(|r| r["DeviceId"].as_str().unwrap().to_string())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

async fn hunt(app: &TestApp, params: Value) -> Value {
    let (status, body) = app.invoke("contoso", "run_query", params).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "run_query", "contoso");
    body
}

async fn template(app: &TestApp, params: Value) -> Value {
    let (status, body) = app.invoke("contoso", "run_hunting_template", params).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    body
}

/// The default scenario without Graph's hunting role on the first app.
fn without_graph_hunting() -> Scenario {
    let mut s = Scenario::default_scenario();
    for t in &mut s.tenants {
        for a in &mut t.apps {
            a.graph_roles.retain(|r| r != "ThreatHunting.Read.All");
        }
    }
    s
}

#[tokio::test]
async fn a_query_runs_on_graph_by_default_and_on_the_defender_api_when_asked() {
    let app = spawn().await;
    let query =
        "DeviceInfo | project DeviceId, DeviceName, OSPlatform | order by DeviceId asc | take 3";
    let body = hunt(&app, json!({"query": query})).await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["api"], "graph");
    assert_eq!(body["summary"]["timespan"], "P30D");
    assert_eq!(body["summary"]["rows_returned"], 3);
    assert_eq!(body["summary"]["truncated"], false);
    let columns: Vec<&str> = body["summary"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["DeviceId", "DeviceName", "OSPlatform"]);
    assert_eq!(body["summary"]["columns"][1]["type"], "String");
    assert_eq!((graph_calls(&app), mde_calls(&app)), (1, 0));

    let mde = hunt(&app, json!({"query": query, "api": "MDE"})).await;
    assert_eq!(mde["status"], "success", "{mde}");
    assert_eq!(mde["summary"]["api"], "mde");
    assert!(mde["summary"].get("timespan").is_none());
    assert_eq!(mde["data"], body["data"], "both APIs answer the same rows");
    assert_eq!((graph_calls(&app), mde_calls(&app)), (1, 1));
    assert_no_summary_drift(&app.app);
}

#[tokio::test]
async fn every_seeded_table_answers() {
    let app = spawn().await;
    for table in [
        "DeviceInfo",
        "DeviceProcessEvents",
        "DeviceNetworkEvents",
        "DeviceFileEvents",
        "DeviceLogonEvents",
        "DeviceRegistryEvents",
        "AlertInfo",
        "AlertEvidence",
        "EmailEvents",
        "IdentityLogonEvents",
    ] {
        for api in ["graph", "mde"] {
            let body = hunt(
                &app,
                json!({"query": format!("{table} | take 5"), "api": api}),
            )
            .await;
            assert_eq!(body["status"], "success", "{table} {api}: {body}");
            assert!(!rows(&body).is_empty(), "{table} {api} has no rows: {body}");
            assert!(rows(&body)[0].get("Timestamp").is_some(), "{table}: {body}");
        }
    }
}

#[tokio::test]
async fn without_graph_hunting_the_defender_api_is_used_and_with_neither_nothing_is_sent() {
    let app = spawn_with(without_graph_hunting()).await;
    let body = hunt(
        &app,
        json!({"query": "DeviceInfo | take 1", "timespan": "P7D"}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["api"], "mde");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("timespan was not applied"),
        "{body}"
    );
    assert_eq!((graph_calls(&app), mde_calls(&app)), (0, 1));

    // Asked for Graph explicitly: fails naming the permission, no call.
    let body = hunt(&app, json!({"query": "DeviceInfo", "api": "graph"})).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("ThreatHunting.Read.All"),
        "{body}"
    );
    assert_eq!(graph_calls(&app), 0);

    // The read-only reporter app has neither hunting permission.
    let mut s = without_graph_hunting();
    s.tenants[0].apps[0]
        .roles
        .retain(|r| r != "AdvancedQuery.Read.All");
    let app = spawn_with(s).await;
    let body = hunt(&app, json!({"query": "DeviceInfo"})).await;
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("ThreatHunting.Read.All") && message.contains("AdvancedQuery.Read.All"),
        "{body}"
    );
    assert_eq!((graph_calls(&app), mde_calls(&app)), (0, 0));
}

#[tokio::test]
async fn limit_truncates_and_the_asset_shapes_the_answer() {
    let app = spawn_configured(Scenario::default_scenario(), |c| {
        let a = c.assets.get_mut("contoso").unwrap();
        a.hunting.ignore_fields = vec!["reportid".into(), "ProcessId".into()];
        a.hunting.summary_fields = vec!["DeviceName".into(), "NoSuchColumn".into()];
    })
    .await;
    let body = hunt(
        &app,
        json!({"query": "DeviceProcessEvents | take 40", "limit": 10}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_results"], 40);
    assert_eq!(body["summary"]["rows_returned"], 10);
    assert_eq!(body["summary"]["truncated"], true);
    assert_eq!(rows(&body).len(), 10);
    assert!(
        rows(&body)
            .iter()
            .all(|r| r.get("ReportId").is_none() && r.get("ProcessId").is_none()),
        "{body}"
    );
    let columns = body["summary"]["columns"].as_array().unwrap();
    assert!(
        columns
            .iter()
            .all(|c| c["name"] != "ReportId" && c["name"] != "ProcessId")
    );
    assert!(columns.iter().any(|c| c["name"] == "DeviceName"));
    let names = body["summary"]["highlights"]["DeviceName"]
        .as_array()
        .unwrap();
    assert!(!names.is_empty() && names.len() <= 5, "{body}");
    assert!(body["summary"]["highlights"].get("NoSuchColumn").is_none());
    assert!(
        body["message"].as_str().unwrap().contains("first 10"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_parameter_and_nothing_is_sent() {
    let app = spawn().await;
    for (action, params, named) in [
        ("run_query", json!({"query": "   "}), "query"),
        (
            "run_query",
            json!({"query": "DeviceInfo", "timespan": "30 days"}),
            "timespan",
        ),
        (
            "run_query",
            json!({"query": "DeviceInfo", "timespan": "P1W2D"}),
            "timespan",
        ),
        (
            "run_query",
            json!({"query": "DeviceInfo", "api": "mde", "timespan": "P7D"}),
            "timespan",
        ),
        (
            "run_query",
            json!({"query": "DeviceInfo", "api": "kusto"}),
            "api",
        ),
        (
            "run_query",
            json!({"query": "DeviceInfo", "limit": 100001}),
            "limit",
        ),
        (
            "run_query",
            json!({"query": "DeviceInfo", "timeout": 5}),
            "timeout",
        ),
        (
            "run_hunting_template",
            json!({"template": "no_such", "entity": "contoso.com"}),
            "template",
        ),
        (
            "run_hunting_template",
            json!({"template": "devices_with_file", "entity": "x\" | union DeviceInfo //"}),
            "entity",
        ),
        (
            "run_hunting_template",
            json!({"template": "devices_with_file", "entity": SHA256, "entity_type": "ip"}),
            "entity_type",
        ),
        (
            "run_hunting_template",
            json!({"template": "network_connections", "entity": FINANCE}),
            "entity",
        ),
        (
            "run_hunting_template",
            json!({"template": "devices_reached_ip", "entity": "10.0.0.300"}),
            "entity",
        ),
    ] {
        let (status, body) = app.invoke("contoso", action, params.clone()).await;
        assert_eq!(status, 400, "{params}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(named), "{params}: {message}");
    }
    assert_eq!((graph_calls(&app), mde_calls(&app)), (0, 0));
}

#[tokio::test]
async fn microsoft_errors_become_messages_a_person_can_act_on() {
    let app = spawn().await;
    let body = hunt(
        &app,
        json!({"query": "DeviceInfo\n| wher DeviceName == \"x\""}),
    )
    .await;
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("syntax error at line 2"), "{message}");

    let body = hunt(
        &app,
        json!({"query": "DeviceInfo | where NoSuchColumn == 1"}),
    )
    .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("case-sensitive"),
        "{body}"
    );

    let body = hunt(
        &app,
        json!({"query": "DeviceInfo | mv-expand LoggedOnUsers", "api": "mde"}),
    )
    .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("mv-expand"),
        "{body}"
    );

    // Graph's gateway timeout: explained, and the POST is not repeated.
    app.sim.inject_fault(Fault {
        method: Some("POST".into()),
        path: GRAPH.into(),
        count: 1,
        kind: FaultKind::Status {
            status: 504,
            body: Some(
                r#"{"error":{"code":"GatewayTimeout","message":"The operation timed out"}}"#.into(),
            ),
            headers: Default::default(),
        },
    });
    let sent = |app: &TestApp| app.sim.counters().path("POST", GRAPH);
    let before = sent(&app);
    let body = hunt(&app, json!({"query": "DeviceInfo"})).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("api=mde"),
        "{body}"
    );
    assert_eq!(sent(&app), before + 1, "the query's POST is not repeated");

    // Throttled beyond the asset's longest wait: 503 with Retry-After, nothing repeated.
    app.sim.inject_fault(Fault {
        method: Some("POST".into()),
        path: MDE.into(),
        count: 1,
        kind: FaultKind::Status {
            status: 429,
            body: None,
            headers: [("Retry-After".to_string(), "120".to_string())].into(),
        },
    });
    let (status, body) = app
        .invoke(
            "contoso",
            "run_query",
            json!({"query": "DeviceInfo", "api": "mde"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn the_row_limit_and_the_timeout_are_explained() {
    let mut s = Scenario::default_scenario();
    s.hunting.max_rows = 10;
    let app = spawn_with(s).await;
    let body = hunt(&app, json!({"query": "DeviceProcessEvents"})).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("| take N"),
        "{body}"
    );

    app.sim.inject_fault(Fault {
        method: Some("POST".into()),
        path: MDE.into(),
        count: 1,
        kind: FaultKind::Delay { ms: 12_000 },
    });
    let body = hunt(
        &app,
        json!({"query": "DeviceInfo | take 1", "api": "mde", "timeout": 10}),
    )
    .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("within 10 s"),
        "{body}"
    );
}

#[tokio::test]
async fn the_budget_holds_at_45_a_minute_under_a_burst_of_200_queries() {
    let app = spawn().await;
    let query = json!({"query": "DeviceInfo | take 1", "api": "mde"});
    let answers = futures::future::join_all(
        (0..200).map(|_| app.invoke("contoso", "run_query", query.clone())),
    )
    .await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let throttled = answers.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(ok + throttled, 200, "{answers:?}");
    assert!(ok >= 1, "some queries ran");
    let counters = app.sim.counters();
    let sent = counters.route("POST", MDE);
    assert!(
        sent <= 45,
        "{sent} hunting calls reached Defender in a minute"
    );
    assert_eq!(sent as usize, ok);
    assert_eq!(
        counters.route_status("POST", MDE, 429),
        0,
        "the simulator never throttled"
    );
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 503)
            .all(|(_, b)| b["message"].as_str().unwrap().contains("advanced hunting")),
        "503s name the hunting budget"
    );
}

#[tokio::test]
async fn templates_find_the_scenarios_entities() {
    let app = spawn().await;
    // Devices with this file: exactly the devices the scenario gives the file.
    let body = template(
        &app,
        json!({"template": "devices_with_file", "entity": SHA256.to_uppercase()}),
    )
    .await;
    assert_eq!(devices(&body), [DEV, FINANCE], "{body}");
    assert_eq!(body["summary"]["template"], "devices_with_file");
    assert_eq!(body["summary"]["entity_type"], "hash");
    assert!(
        body["summary"]["highlights"]["DeviceName"].is_array(),
        "{body}"
    );

    let body = template(
        &app,
        json!({"template": "devices_reached_domain", "entity": "contoso.com"}),
    )
    .await;
    assert_eq!(devices(&body), [HR, DC, FINANCE], "{body}");

    let body = template(&app, json!({"template": "file_origin", "entity": SHA256})).await;
    assert!(
        rows(&body)
            .iter()
            .any(|r| r["FileOriginUrl"].as_str().is_some_and(|u| !u.is_empty())),
        "{body}"
    );

    let body = template(
        &app,
        json!({"template": "user_logons", "entity": "admin@contoso.onmicrosoft.com"}),
    )
    .await;
    assert!(!rows(&body).is_empty(), "{body}");
    assert!(
        rows(&body).iter().all(|r| r["Account"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("admin")),
        "{body}"
    );
    let sources: std::collections::BTreeSet<&str> = rows(&body)
        .iter()
        .map(|r| r["Source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains("device") && sources.len() > 1,
        "device and identity logons: {body}"
    );

    // Each device template finds the traces the scenario leaves on the first machine, and
    // only on that machine.
    for (name, expected) in [
        ("persistence", vec!["registry run key", "scheduled task"]),
        ("privilege_escalation", vec!["runas", "whoami"]),
        ("tampering", vec!["DisableRealtimeMonitoring", "WinDefend"]),
        ("cover_up", vec!["wevtutil", "file deleted"]),
        ("lateral_movement", vec!["Network"]),
        ("network_connections", vec!["RemoteIP"]),
    ] {
        let body = template(
            &app,
            json!({"template": name, "entity": FINANCE, "entity_type": "device_id", "timespan": "P30D"}),
        )
        .await;
        assert!(!rows(&body).is_empty(), "{name}: {body}");
        for e in expected {
            assert!(
                body["data"].to_string().contains(e),
                "{name} lacks {e}: {body}"
            );
        }
        if name != "lateral_movement" {
            assert_eq!(devices(&body), [FINANCE], "{name}: {body}");
        }
    }
    let body = template(
        &app,
        json!({"template": "lateral_movement", "entity": FINANCE, "entity_type": "device_id"}),
    )
    .await;
    assert!(
        rows(&body)
            .iter()
            .all(|r| r["LogonType"] == "Network" || r["LogonType"] == "RemoteInteractive"),
        "{body}"
    );
    // A device's short name finds it too.
    let body = template(
        &app,
        json!({"template": "tampering", "entity": "ws-finance-01", "entity_type": "device_name"}),
    )
    .await;
    assert_eq!(devices(&body), [FINANCE], "{body}");
    let body = template(
        &app,
        json!({"template": "process_details", "entity": SHA256}),
    )
    .await;
    assert!(!rows(&body).is_empty(), "{body}");
    let body = template(
        &app,
        json!({"template": "devices_reached_ip", "entity": "10.0.0.10"}),
    )
    .await;
    assert_eq!(body["summary"]["entity_type"], "ip");

    // Templates run on the Defender API too, with the period in the query.
    let body = template(
        &app,
        json!({"template": "devices_with_file", "entity": SHA256, "api": "mde", "timespan": "P4W"}),
    )
    .await;
    assert_eq!(body["summary"]["api"], "mde");
    assert_eq!(devices(&body), [DEV, FINANCE], "{body}");
}

#[tokio::test]
async fn a_valid_but_hostile_entity_stays_one_literal() {
    let app = spawn().await;
    for entity in [
        "o'brien@contoso.com",
        "CONTOSO\\o.brien$",
        "x$'-._+@contoso.com",
    ] {
        let body = template(&app, json!({"template": "user_logons", "entity": entity})).await;
        assert_eq!(body["summary"]["total_results"], 0, "{entity}: {body}");
    }
}

#[tokio::test]
async fn the_templates_are_listed_with_their_parameters() {
    let app = spawn().await;
    let (status, body) = app
        .invoke("contoso", "list_hunting_templates", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    let listed = rows(&body);
    assert_eq!(body["summary"]["total_templates"], listed.len());
    assert!(listed.len() >= 13);
    let file = listed
        .iter()
        .find(|t| t["name"] == "devices_with_file")
        .unwrap();
    assert_eq!(file["entity_types"], json!(["hash"]));
    assert!(file["query"].as_str().unwrap().contains("{{entity}}"));
    assert_eq!((graph_calls(&app), mde_calls(&app)), (0, 0));
}
