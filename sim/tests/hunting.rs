//! Advanced hunting over HTTP: MDE `POST /api/advancedqueries/run` and Graph
//! `POST /v1.0/security/runHuntingQuery` (shapes, tables, Timespan, permissions, audience,
//! the shared rate budget, the row limit, latency, faults, errors).

mod common;

use std::time::{Duration, Instant};

use defender_sim::SimHandle;
use defender_sim::hunting_data::TABLES;
use serde_json::{Value, json};

const MDE: &str = "https://api.securitycenter.microsoft.com/.default";
const GRAPH: &str = "https://graph.microsoft.com/.default";

async fn token_for(sim: &SimHandle, app: usize, scope: &str) -> String {
    let s = sim.scenario();
    let tenant = &s.tenants[0];
    let a = &tenant.apps[app];
    let resp = common::client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            tenant.id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", a.client_id.as_str()),
            ("client_secret", a.secret.as_str()),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn mde(sim: &SimHandle, token: &str, query: &str) -> (u16, Value) {
    let resp = common::client()
        .post(format!("{}/api/advancedqueries/run", sim.base_url()))
        .bearer_auth(token)
        .json(&json!({"Query": query}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn graph(sim: &SimHandle, token: &str, body: Value) -> (u16, Value) {
    let resp = common::client()
        .post(format!("{}/v1.0/security/runHuntingQuery", sim.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn column_names(schema: &Value, key: &str) -> Vec<String> {
    schema
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[key].as_str().unwrap().to_string())
        .collect()
}

fn strings(results: &Value, column: &str) -> Vec<String> {
    let mut v: Vec<String> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[column].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_table_answers_on_both_apis_in_their_shapes() {
    let sim = common::start(common::scenario()).await;
    let mde_token = token_for(&sim, 0, MDE).await;
    let graph_token = token_for(&sim, 0, GRAPH).await;
    for (table, columns) in TABLES {
        let expected: Vec<String> = columns.iter().map(|(n, _)| n.to_string()).collect();
        let (status, body) = mde(&sim, &mde_token, &format!("{table} | take 3")).await;
        assert_eq!(status, 200, "{table}: {body}");
        assert_eq!(column_names(&body["Schema"], "Name"), expected, "{table}");
        assert_eq!(body["Schema"][0]["Type"], "DateTime");
        let rows = body["Results"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{table}");
        let ts = rows[0]["Timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 28, "{ts}");
        assert!(body["Stats"].is_object());

        let (status, body) = graph(
            &sim,
            &graph_token,
            json!({"Query": format!("{table} | take 2")}),
        )
        .await;
        assert_eq!(status, 200, "{table}: {body}");
        assert_eq!(column_names(&body["schema"], "name"), expected, "{table}");
        assert_eq!(body["schema"][0]["type"], "DateTime");
        assert_eq!(body["results"].as_array().unwrap().len(), 2, "{table}");
        assert!(body.get("Schema").is_none());
    }
}

#[tokio::test]
async fn tables_agree_with_the_scenario() {
    let sim = common::start(common::scenario()).await;
    let token = token_for(&sim, 0, MDE).await;
    let s = sim.scenario();
    for (hash, machines) in &s.file_machines {
        let col = if hash.len() == 40 { "SHA1" } else { "SHA256" };
        for table in ["DeviceFileEvents", "DeviceProcessEvents"] {
            let (status, body) = mde(
                &sim,
                &token,
                &format!("{table} | where {col} =~ '{hash}' | distinct DeviceId"),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let mut want = machines.clone();
            want.sort();
            assert_eq!(
                strings(&body["Results"], "DeviceId"),
                want,
                "{table} {hash}"
            );
        }
    }
    for (domain, machines) in &s.domain_machines {
        let (_, body) = mde(
            &sim,
            &token,
            &format!("DeviceNetworkEvents | where RemoteUrl == '{domain}' | distinct DeviceId"),
        )
        .await;
        let mut want = machines.clone();
        want.sort();
        assert_eq!(strings(&body["Results"], "DeviceId"), want, "{domain}");
    }
    let (_, body) = mde(
        &sim,
        &token,
        "DeviceLogonEvents | where AccountName == 'admin' and AccountDomain == 'contoso' and ActionType == 'LogonSuccess' and LogonType in ('Network', 'RemoteInteractive') | project RemoteDeviceName",
    )
    .await;
    assert_eq!(body["Results"].as_array().unwrap().len(), 2, "{body}");
    let (_, body) = mde(
        &sim,
        &token,
        r#"DeviceRegistryEvents | where RegistryKey has @"\CurrentVersion\Run" | count"#,
    )
    .await;
    assert!(body["Results"][0]["Count"].as_i64().unwrap() >= 1, "{body}");
    let (_, body) = mde(
        &sim,
        &token,
        "DeviceProcessEvents | where ProcessCommandLine has 'schtasks.exe /create' or ProcessCommandLine contains 'wevtutil.exe cl Security' | count",
    )
    .await;
    assert_eq!(body["Results"][0]["Count"], 2, "{body}");
}

#[tokio::test]
async fn graph_honours_timespan() {
    let sim = common::start(common::scenario()).await;
    let token = token_for(&sim, 0, GRAPH).await;
    let machines = sim.scenario().machines.len() as i64;
    let count = |v: &Value| v["results"][0]["count_"].as_i64().unwrap();
    let (_, all) = graph(
        &sim,
        &token,
        json!({"Query": "DeviceInfo | summarize count()"}),
    )
    .await;
    assert_eq!(count(&all), 3 * machines);
    let (_, day) = graph(
        &sim,
        &token,
        json!({"Query": "DeviceInfo | summarize count()", "Timespan": "PT36H"}),
    )
    .await;
    assert_eq!(count(&day), machines);
    let (status, body) = graph(
        &sim,
        &token,
        json!({"Query": "DeviceInfo", "Timespan": "30 days"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
}

#[tokio::test]
async fn permissions_and_audiences_are_checked() {
    let sim = common::start(common::scenario()).await;
    let reader_mde = token_for(&sim, 1, MDE).await;
    let reader_graph = token_for(&sim, 1, GRAPH).await;
    let (status, body) = mde(&sim, &reader_mde, "DeviceInfo").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AdvancedQuery.Read.All")
    );
    let (status, body) = graph(&sim, &reader_graph, json!({"Query": "DeviceInfo"})).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ThreatHunting.Read.All")
    );

    let mde_token = token_for(&sim, 0, MDE).await;
    let graph_token = token_for(&sim, 0, GRAPH).await;
    let (status, _) = mde(&sim, &graph_token, "DeviceInfo").await;
    assert_eq!(status, 401);
    let (status, body) = graph(&sim, &mde_token, json!({"Query": "DeviceInfo"})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
}

#[tokio::test]
async fn both_apis_spend_one_budget_of_45_per_minute() {
    let sim = common::start(common::scenario()).await;
    let mde_token = token_for(&sim, 0, MDE).await;
    let graph_token = token_for(&sim, 0, GRAPH).await;
    for _ in 0..20 {
        assert_eq!(mde(&sim, &mde_token, "DeviceInfo | take 1").await.0, 200);
    }
    for _ in 0..25 {
        let (status, _) = graph(&sim, &graph_token, json!({"Query": "DeviceInfo | take 1"})).await;
        assert_eq!(status, 200);
    }
    let resp = common::client()
        .post(format!("{}/api/advancedqueries/run", sim.base_url()))
        .bearer_auth(&mde_token)
        .json(&json!({"Query": "DeviceInfo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    let (status, body) = graph(&sim, &graph_token, json!({"Query": "DeviceInfo"})).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "TooManyRequests");
    let c = sim.counters();
    assert_eq!(c.route_status("POST", "/api/advancedqueries/run", 200), 20);
    assert_eq!(
        c.route_status("POST", "/v1.0/security/runHuntingQuery", 200),
        25
    );
    // A new minute gives a new budget.
    sim.clock.advance(Duration::from_secs(61));
    assert_eq!(mde(&sim, &mde_token, "DeviceInfo | take 1").await.0, 200);
}

#[tokio::test]
async fn errors_carry_kusto_messages_in_each_shape() {
    let sim = common::start(common::scenario()).await;
    let mde_token = token_for(&sim, 0, MDE).await;
    let graph_token = token_for(&sim, 0, GRAPH).await;
    let cases = [
        (
            "DeviceInfo\n| where DeviceName = 'x'",
            "Query could not be parsed at '=' on line [2,20]",
        ),
        (
            "DeviceInfo | where Nope == 1",
            "'where' operator: Failed to resolve column or scalar expression named 'Nope'",
        ),
        (
            "DeviceEvents | take 1",
            "'take' operator: Failed to resolve table expression named 'DeviceEvents'",
        ),
        (
            "DeviceInfo | mv-expand x",
            "Operator 'mv-expand' is not supported",
        ),
    ];
    for (query, message) in cases {
        let (status, body) = mde(&sim, &mde_token, query).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "BadRequest");
        assert_eq!(body["error"]["message"], message);
        assert!(body["error"]["target"].is_string());
        assert!(!body.to_string().contains(&mde_token));
        let (status, body) = graph(&sim, &graph_token, json!({"Query": query})).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "BadRequest");
        assert_eq!(body["error"]["message"], message);
        assert!(body["error"]["innerError"]["request-id"].is_string());
        assert!(!body.to_string().contains(&graph_token));
    }
    let (status, body) = mde(&sim, &mde_token, "").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn row_limit_and_latency_come_from_the_scenario() {
    let mut scenario = common::scenario();
    scenario.hunting.max_rows = 5;
    scenario.hunting.latency_ms = 300;
    let sim = common::start(scenario).await;
    let token = token_for(&sim, 0, MDE).await;
    let started = Instant::now();
    let (status, body) = mde(&sim, &token, "DeviceInfo | take 5").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, 200, "{body}");
    let (status, body) = mde(&sim, &token, "DeviceInfo | take 6").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "Query result set has exceeded the internal record count limit 5 records"
    );
}

#[tokio::test]
async fn synthetic_events_allow_large_results() {
    let mut scenario = common::scenario();
    scenario.hunting.synthetic_events = 120_000;
    let sim = common::start(scenario).await;
    let token = token_for(&sim, 0, MDE).await;
    let (status, body) = mde(&sim, &token, "DeviceProcessEvents | count").await;
    assert_eq!(status, 200);
    assert!(body["Results"][0]["Count"].as_i64().unwrap() > 120_000);
    let (status, body) = mde(
        &sim,
        &token,
        "DeviceProcessEvents | take 100000 | project ReportId",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["Results"].as_array().unwrap().len(), 100_000);
    let (status, _) = mde(&sim, &token, "DeviceProcessEvents | project ReportId").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn injected_fault_applies_to_the_graph_route() {
    let sim = common::start(common::scenario()).await;
    let token = token_for(&sim, 0, GRAPH).await;
    let resp = common::client()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(
            &json!({"path": "/v1.0/security/runHuntingQuery", "method": "POST",
                      "kind": "status", "status": 504}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _) = graph(&sim, &token, json!({"Query": "DeviceInfo | take 1"})).await;
    assert_eq!(status, 504);
    let (status, _) = graph(&sim, &token, json!({"Query": "DeviceInfo | take 1"})).await;
    assert_eq!(status, 200);
}
