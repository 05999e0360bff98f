//! Alerts over HTTP: the generated alerts, the list with OData and paging, `$expand=evidence`,
//! PATCH, batchUpdate, CreateAlertByReference, the related user/files/IPs/domains, the
//! per-entity lists, errors and the rate families of the write endpoints.

mod common;

use defender_sim::SimHandle;
use serde_json::{Value, json};

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

async fn send(sim: &SimHandle, method: &str, path: &str, body: Value) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = common::client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(common::token(sim))
        .json(&body)
        .send()
        .await
        .unwrap();
    answer(resp).await
}

fn first_id(sim: &SimHandle) -> String {
    sim.world().alerts[0]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn default_scenario_serves_hundreds_of_varied_alerts() {
    let sim = common::start(common::scenario()).await;
    let (status, body) = get(&sim, "/api/alerts").await;
    assert_eq!(status, 200, "{body}");
    let value = body["value"].as_array().unwrap();
    assert!(value.len() >= 300, "{}", value.len());
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#Alerts")
    );
    // No evidence unless expanded.
    assert!(value.iter().all(|a| a.get("evidence").is_none()));
    for severity in ["Informational", "Low", "Medium", "High"] {
        assert!(
            value.iter().any(|a| a["severity"] == severity),
            "{severity}"
        );
    }
    for key in [
        "id",
        "incidentId",
        "assignedTo",
        "classification",
        "determination",
        "investigationState",
        "detectionSource",
        "detectorId",
        "category",
        "alertCreationTime",
        "firstEventTime",
        "lastEventTime",
        "lastUpdateTime",
        "resolvedTime",
        "machineId",
        "computerDnsName",
        "aadTenantId",
        "mitreTechniques",
        "relatedUser",
        "comments",
    ] {
        assert!(value[0].get(key).is_some(), "{key} missing: {}", value[0]);
    }
}

#[tokio::test]
async fn filter_top_skip_and_next_link() {
    let mut scenario = common::scenario();
    scenario.default_page_size = 50;
    let sim = common::start(scenario).await;
    let (status, body) = get(
        &sim,
        "/api/alerts?$filter=severity%20eq%20'High'%20and%20status%20eq%20'New'",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page = body["value"].as_array().unwrap();
    assert!(!page.is_empty());
    assert!(
        page.iter()
            .all(|a| a["severity"] == "High" && a["status"] == "New")
    );
    let (_, all) = get(&sim, "/api/alerts").await;
    assert_eq!(all["value"].as_array().unwrap().len(), 50);
    let next = all["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("$skip=50"), "{next}");
    let (_, top) = get(&sim, "/api/alerts?$top=3&$skip=2").await;
    assert_eq!(top["value"].as_array().unwrap().len(), 3);
    assert_eq!(top["value"][0]["id"], sim.world().alerts[2]["id"]);
    let (status, body) = get(&sim, "/api/alerts?$top=10001").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&sim, "/api/alerts?$filter=title%20eq%20'x'").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "ODataError");
    let since = "2000-01-01T00:00:00Z";
    let (status, body) = get(
        &sim,
        &format!("/api/alerts?$filter=alertCreationTime%20ge%20{since}&$top=5"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn one_alert_with_and_without_evidence_and_unknown_ids() {
    let sim = common::start(common::scenario()).await;
    let id = first_id(&sim);
    let (status, body) = get(&sim, &format!("/api/alerts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert!(body.get("evidence").is_none());
    let (status, body) = get(&sim, &format!("/api/alerts/{id}?$expand=evidence")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["evidence"].as_array().unwrap().is_empty());
    let (status, body) = get(&sim, "/api/alerts/da000000000000000000_-1").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "NotFound");
    let (status, _) = get(&sim, "/api/alerts/da000000000000000000_-1/files").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn patch_changes_the_alert_and_refuses_bad_bodies() {
    let sim = common::start(common::scenario()).await;
    let id = first_id(&sim);
    let path = format!("/api/alerts/{id}");
    let (status, body) = send(
        &sim,
        "PATCH",
        &path,
        json!({"status": "inprogress", "assignedTo": "analyst@contoso.onmicrosoft.com",
               "classification": "TruePositive", "determination": "Malware", "comment": "on it"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "InProgress");
    assert_eq!(body["assignedTo"], "analyst@contoso.onmicrosoft.com");
    assert_eq!(body["classification"], "TruePositive");
    let comments = body["comments"].as_array().unwrap();
    assert_eq!(comments.last().unwrap()["comment"], "on it");
    let (status, body) = send(&sim, "PATCH", &path, json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(&sim, "PATCH", &path, json!({"status": "Closed"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "InvalidRequestBody");
    let (status, _) = send(
        &sim,
        "PATCH",
        "/api/alerts/nope",
        json!({"status": "Resolved"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn batch_update_applies_to_every_id_and_is_limited() {
    let sim = common::start(common::scenario()).await;
    let ids: Vec<String> = sim.world().alerts[..3]
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let (status, body) = send(
        &sim,
        "POST",
        "/api/alerts/batchUpdate",
        json!({"alertIds": ids, "status": "Resolved", "classification": "FalsePositive"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for id in &ids {
        let (_, a) = get(&sim, &format!("/api/alerts/{id}")).await;
        assert_eq!(a["status"], "Resolved");
        assert_eq!(a["classification"], "FalsePositive");
        assert!(a["resolvedTime"].is_string());
    }
    let many: Vec<String> = (0..501).map(|i| format!("da{i}")).collect();
    let (status, body) = send(
        &sim,
        "POST",
        "/api/alerts/batchUpdate",
        json!({"alertIds": many, "status": "Resolved"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "MaximumBatchSizeExceeded");
    let (status, _) = send(
        &sim,
        "POST",
        "/api/alerts/batchUpdate",
        json!({"alertIds": ["unknown1"], "status": "Resolved"}),
    )
    .await;
    assert_eq!(status, 404);
    // Ten a minute: the first call and the two refusals above count, seven more pass, the
    // eleventh is throttled.
    for _ in 0..7 {
        let (status, body) = send(
            &sim,
            "POST",
            "/api/alerts/batchUpdate",
            json!({"alertIds": [ids[0]], "comment": "x"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = send(
        &sim,
        "POST",
        "/api/alerts/batchUpdate",
        json!({"alertIds": [ids[0]], "comment": "x"}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    // Other alert endpoints keep their own budget.
    let (status, _) = get(&sim, "/api/alerts?$top=1").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn create_alert_by_reference() {
    let sim = common::start(common::scenario()).await;
    let machine = sim.scenario().machines[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({
        "machineId": machine, "severity": "High", "title": "Test alert",
        "description": "From an event", "recommendedAction": "Isolate",
        "eventTime": "2025-11-20T10:00:00Z", "reportId": "20391", "category": "Exploit",
    });
    let (status, created) = send(
        &sim,
        "POST",
        "/api/alerts/CreateAlertByReference",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["machineId"], machine.as_str());
    assert_eq!(created["status"], "New");
    let id = created["id"].as_str().unwrap();
    let (status, _) = get(&sim, &format!("/api/alerts/{id}")).await;
    assert_eq!(status, 200);
    let mut missing = body.clone();
    missing.as_object_mut().unwrap().remove("reportId");
    let (status, _) = send(&sim, "POST", "/api/alerts/CreateAlertByReference", missing).await;
    assert_eq!(status, 400);
    let mut unknown = body.clone();
    unknown["machineId"] = json!("0000000000000000000000000000000000000000");
    let (status, _) = send(&sim, "POST", "/api/alerts/CreateAlertByReference", unknown).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn related_entities_and_entity_alert_lists_agree() {
    let sim = common::start(common::scenario()).await;
    let alert = sim
        .world()
        .alerts
        .iter()
        .find(|a| a["evidence"].as_array().is_some_and(|e| e.len() == 4))
        .cloned()
        .unwrap();
    let id = alert["id"].as_str().unwrap();
    let (status, files) = get(&sim, &format!("/api/alerts/{id}/files")).await;
    assert_eq!(status, 200, "{files}");
    let file = &files["value"][0];
    let hash = file["sha1"]
        .as_str()
        .or(file["sha256"].as_str())
        .unwrap()
        .to_string();
    let (_, ips) = get(&sim, &format!("/api/alerts/{id}/ips")).await;
    let ip = ips["value"][0]["id"].as_str().unwrap().to_string();
    let (_, domains) = get(&sim, &format!("/api/alerts/{id}/domains")).await;
    let domain = domains["value"][0]["host"].as_str().unwrap().to_string();
    let (status, user) = get(&sim, &format!("/api/alerts/{id}/user")).await;
    assert_eq!(status, 200, "{user}");
    let account = user["accountName"].as_str().unwrap().to_string();
    let machine = alert["machineId"].as_str().unwrap();
    for path in [
        format!("/api/files/{hash}/alerts"),
        format!("/api/ips/{ip}/alerts"),
        format!("/api/domains/{domain}/alerts"),
        format!("/api/users/{account}/alerts"),
        format!("/api/machines/{machine}/alerts"),
    ] {
        let (status, body) = get(&sim, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let list = body["value"].as_array().unwrap();
        assert!(
            list.iter().any(|a| a["id"] == id),
            "{path} misses the alert"
        );
    }
    let (status, _) = get(
        &sim,
        "/api/machines/0000000000000000000000000000000000000000/alerts",
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = get(&sim, "/api/files/xyz/alerts").await;
    assert_eq!(status, 400, "{body}");
    let (_, skipped) = get(&sim, &format!("/api/alerts/{id}/files?$skip=5")).await;
    assert!(skipped["value"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn reading_needs_an_alert_role() {
    let sim = common::start(common::scenario()).await;
    let tenant = &sim.scenario().tenants[0];
    // The second app has Machine.Read.All and Alert.Read.All only: no write, no files.
    let app = &tenant.apps[1];
    let (token, _, _) = defender_sim::jwt::issue(
        &sim,
        &defender_sim::jwt::TokenRequest {
            tenant_id: &tenant.id,
            client_id: &app.client_id,
            audience: "https://api.securitycenter.microsoft.com",
            roles: Some(app.roles.clone()),
            scopes: None,
            v2: true,
            login_base: "https://login.microsoftonline.com",
            user: None,
        },
    );
    let call = |method: reqwest::Method, path: String| {
        common::client()
            .request(method, format!("{}{path}", sim.base_url()))
            .bearer_auth(&token)
            .json(&json!({"status": "Resolved"}))
            .send()
    };
    let id = first_id(&sim);
    assert_eq!(
        call(reqwest::Method::GET, "/api/alerts".into())
            .await
            .unwrap()
            .status(),
        200
    );
    let r = call(reqwest::Method::PATCH, format!("/api/alerts/{id}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = call(reqwest::Method::GET, format!("/api/alerts/{id}/files"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// POSTs to the control API (loopback, no token).
async fn control(sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
    let resp = common::client()
        .post(format!("{}{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    answer(resp).await
}

/// Follows every nextLink from `first`, answering all items in order.
async fn all_pages(token: &str, first: String) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = Some(first);
    while let Some(u) = url {
        let resp = common::client()
            .get(&u)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let (status, body) = answer(resp).await;
        assert_eq!(status, 200, "{body}");
        out.extend(body["value"].as_array().unwrap().iter().cloned());
        url = body["@odata.nextLink"].as_str().map(str::to_string);
    }
    out
}

async fn graph_token(sim: &SimHandle) -> String {
    let s = sim.scenario();
    let tenant = &s.tenants[0];
    let a = &tenant.apps[0];
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
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn alerts_created_and_updated_over_time_list_by_last_update_in_both_apis() {
    let sim = common::start(common::scenario()).await;
    // Graph data is generated on first use, with last updates up to that moment: use it first.
    let token = graph_token(&sim).await;
    let (status, _) = common::client()
        .get(format!("{}/v1.0/security/alerts_v2?$top=1", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    sim.clock.advance(std::time::Duration::from_secs(1));
    let (status, created) = control(
        &sim,
        "/_sim/alerts",
        json!({"count": 250, "severity": "high", "same_timestamp": true}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let ids: Vec<String> = created["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 250);
    let at = sim.world().alerts[0]["lastUpdateTime"]
        .as_str()
        .unwrap()
        .to_string();
    // MDE: $filter ge + $orderby asc, paged (default page size) with nextLinks that keep both.
    let filter = format!("lastUpdateTime ge {at}");
    let first = format!(
        "{}/api/alerts?$top=100&$orderby=lastUpdateTime%20asc&$filter={}",
        sim.base_url(),
        filter.replace(' ', "%20")
    );
    let mde = all_pages(&common::token(&sim), first).await;
    assert_eq!(mde.len(), 250);
    assert!(mde.iter().all(|a| a["severity"] == "High"));
    // Graph: the same alerts, same ids.
    let filter = format!("lastUpdateDateTime ge {at}");
    let first = format!(
        "{}/v1.0/security/alerts_v2?$top=100&$orderby=lastUpdateDateTime%20asc&$filter={}",
        sim.base_url(),
        filter.replace(' ', "%20")
    );
    let graph = all_pages(&token, first.clone()).await;
    let mut graph_ids: Vec<String> = graph
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    graph_ids.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(graph_ids, want);
    assert!(graph.iter().all(|a| a["severity"] == "high"));

    // An update moves the alert's last update after the others, in both lists.
    sim.clock.advance(std::time::Duration::from_secs(5));
    let (status, updated) = control(
        &sim,
        &format!("/_sim/alerts/{}", ids[7]),
        json!({"status": "inProgress", "severity": "low"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let graph = all_pages(&token, first).await;
    assert_eq!(graph.last().unwrap()["id"], json!(ids[7]));
    assert_eq!(graph.last().unwrap()["status"], "inProgress");
    let stamps: Vec<&str> = graph
        .iter()
        .map(|a| a["lastUpdateDateTime"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(updated["mde"]["severity"], "Low");

    // Descending order and distinct timestamps.
    let (status, _) = control(&sim, "/_sim/alerts", json!({"count": 3})).await;
    assert_eq!(status, 200);
    let (status, body) = get(&sim, "/api/alerts?$top=3&$orderby=lastUpdateTime%20desc").await;
    assert_eq!(status, 200, "{body}");
    let v = body["value"].as_array().unwrap();
    assert!(v[0]["lastUpdateTime"].as_str() >= v[1]["lastUpdateTime"].as_str());

    // Bad requests.
    for (path, body) in [
        ("/_sim/alerts", json!({"count": 0})),
        ("/_sim/alerts", json!({"count": 1, "severity": "severe"})),
        ("/_sim/alerts", json!({"count": 1, "bogus": 1})),
        ("/_sim/alerts", json!({"count": 1, "machine_id": "nope"})),
    ] {
        let (status, answer) = control(&sim, path, body).await;
        assert_eq!(status, 400, "{answer}");
    }
    let (status, _) = control(&sim, "/_sim/alerts/nope", json!({"title": "x"})).await;
    assert_eq!(status, 404);
    let (status, body) = get(&sim, "/api/alerts?$orderby=title%20sideways").await;
    assert_eq!(status, 400, "{body}");
}
