//! Machines over HTTP: list with OData ($top, $skip, $filter, nextLink), get, tags, $count, and
//! the API guard (401, 403, 429) on these routes.

mod common;

use std::time::Duration;

use defender_sim::jwt::{self, TokenRequest};
use defender_sim::{Scenario, SimHandle};
use serde_json::{Value, json};

/// GET `path_and_query` with the test token; (status, body as JSON or Null).
async fn get(sim: &SimHandle, path_and_query: &str) -> (u16, Value) {
    let resp = common::client()
        .get(format!("{}{path_and_query}", sim.base_url()))
        .bearer_auth(common::token(sim))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GET an absolute URL with the test token.
async fn get_url(sim: &SimHandle, url: &str) -> (u16, Value) {
    let resp = common::client()
        .get(url)
        .bearer_auth(common::token(sim))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// POST a JSON text body with the test token.
async fn post_text(sim: &SimHandle, path: &str, body: &str) -> (u16, Value) {
    let resp = common::client()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(common::token(sim))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ids(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Ids of the scenario's machines that satisfy `pred`, in scenario order.
fn scenario_ids(scenario: &Scenario, pred: impl Fn(&Value) -> bool) -> Vec<String> {
    scenario
        .machines
        .iter()
        .map(|m| Value::Object(m.clone()))
        .filter(|m| pred(m))
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn first_machine_id(sim: &SimHandle) -> String {
    sim.scenario().machines[0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The default scenario plus a seventh machine.
fn seven_machines() -> Scenario {
    let mut s = common::scenario();
    let mut extra = s.machines[0].clone();
    extra.insert(
        "id".into(),
        json!("0123456789abcdef0123456789abcdef01234567"),
    );
    extra.insert("computerDnsName".into(), json!("ws-extra-99.contoso.com"));
    s.machines.push(extra);
    while s.machines.len() > 7 {
        s.machines.pop();
    }
    assert_eq!(s.machines.len(), 7);
    s
}

#[tokio::test]
async fn list_answers_every_machine_with_the_list_context() {
    let sim = common::start(common::scenario()).await;
    let (status, body) = get(&sim, "/api/machines").await;
    assert_eq!(status, 200);
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#Machines"),
        "{body}"
    );
    assert_eq!(ids(&body), scenario_ids(&sim.scenario(), |_| true));
    assert!(body.get("@odata.nextLink").is_none());
    assert_eq!(sim.counters().route_status("GET", "/api/machines", 200), 1);
}

#[tokio::test]
async fn get_answers_one_machine_and_ignores_path_case() {
    let sim = common::start(common::scenario()).await;
    let id = first_machine_id(&sim);
    let (status, body) = get(&sim, &format!("/api/machines/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    assert_eq!(
        body["computerDnsName"],
        sim.scenario().machines[0]["computerDnsName"]
    );
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#Machines/$entity")
    );
    let (status, body) = get(&sim, &format!("/API/Machines/{}", id.to_uppercase())).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    assert_eq!(
        sim.counters()
            .route_status("GET", "/api/machines/{id}", 200),
        2
    );
}

#[tokio::test]
async fn unknown_machine_is_resource_not_found() {
    let sim = common::start(common::scenario()).await;
    let missing = "ffffffffffffffffffffffffffffffffffffffff";
    let (status, body) = get(&sim, &format!("/api/machines/{missing}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert_eq!(
        body["error"]["message"],
        format!("Machine {missing} was not found")
    );
    assert!(body["error"]["target"].is_string());
}

#[tokio::test]
async fn next_links_walk_three_pages_of_seven_machines() {
    let mut scenario = seven_machines();
    scenario.default_page_size = 3;
    let sim = common::start(scenario).await;
    let mut url = format!("{}/api/machines", sim.base_url());
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    loop {
        let (status, body) = get_url(&sim, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        pages.push(ids(&body).len());
        seen.extend(ids(&body));
        match body.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => {
                assert!(next.starts_with(&sim.base_url()), "{next}");
                url = next.to_string();
            }
            None => break,
        }
        assert!(pages.len() < 10, "nextLink never ends");
    }
    assert_eq!(pages, [3, 3, 1]);
    assert_eq!(seen, scenario_ids(&sim.scenario(), |_| true));
}

#[tokio::test]
async fn top_and_skip_page_and_the_next_link_keeps_them() {
    let sim = common::start(seven_machines()).await;
    let all = scenario_ids(&sim.scenario(), |_| true);
    let (status, body) = get(&sim, "/api/machines?$top=2&$skip=1").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), all[1..3]);
    assert_eq!(
        body["@odata.nextLink"],
        format!("{}/api/machines?$skip=3&$top=2", sim.base_url())
    );
    let (_, body) = get(&sim, "/api/machines?$top=5&$skip=5").await;
    assert_eq!(ids(&body), all[5..7]);
    assert!(body.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn filters_select_machines() {
    let sim = common::start(common::scenario()).await;
    let scenario = sim.scenario();
    let first = &scenario.machines[0];
    let dns = first["computerDnsName"].as_str().unwrap();
    let tag = first["machineTags"][0].as_str().unwrap();

    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("computerDnsName eq '{dns}'"),
            scenario_ids(&scenario, |m| m["computerDnsName"] == dns),
        ),
        (
            "healthStatus ne 'Active'".into(),
            scenario_ids(&scenario, |m| m["healthStatus"] != "Active"),
        ),
        (
            "healthStatus eq 'Active' and riskScore eq 'Low'".into(),
            scenario_ids(&scenario, |m| {
                m["healthStatus"] == "Active" && m["riskScore"] == "Low"
            }),
        ),
        (
            "riskScore eq 'High' or riskScore eq 'None'".into(),
            scenario_ids(&scenario, |m| {
                m["riskScore"] == "High" || m["riskScore"] == "None"
            }),
        ),
        (
            "startswith(computerDnsName,'srv-')".into(),
            scenario_ids(&scenario, |m| {
                m["computerDnsName"].as_str().unwrap().starts_with("srv-")
            }),
        ),
        (
            format!("machineTags/any(tag: tag eq '{tag}')"),
            scenario_ids(&scenario, |m| {
                m["machineTags"].as_array().unwrap().contains(&json!(tag))
            }),
        ),
        (
            "(riskScore eq 'Low' or riskScore eq 'Medium') and not startswith(computerDnsName,'ws-')"
                .into(),
            scenario_ids(&scenario, |m| {
                (m["riskScore"] == "Low" || m["riskScore"] == "Medium")
                    && !m["computerDnsName"].as_str().unwrap().starts_with("ws-")
            }),
        ),
        (
            "lastSeen gt 2026-11-22T00:00:00Z".into(),
            scenario_ids(&scenario, |m| {
                m["lastSeen"].as_str().unwrap() > "2026-11-22T00:00:00Z"
            }),
        ),
    ];
    for (filter, expected) in cases {
        assert!(
            !expected.is_empty(),
            "{filter} selects nothing in the scenario"
        );
        assert!(
            expected.len() < scenario.machines.len(),
            "{filter} selects everything in the scenario"
        );
        let url = format!(
            "{}/api/machines?$filter={}",
            sim.base_url(),
            filter.replace(' ', "%20").replace('\'', "%27")
        );
        let (status, body) = get_url(&sim, &url).await;
        assert_eq!(status, 200, "{filter}: {body}");
        assert_eq!(ids(&body), expected, "{filter}");
    }
}

#[tokio::test]
async fn next_link_keeps_the_filter() {
    let mut scenario = seven_machines();
    scenario.default_page_size = 1;
    let sim = common::start(scenario).await;
    let expected = scenario_ids(&sim.scenario(), |m| {
        m["computerDnsName"].as_str().unwrap().starts_with("ws-")
    });
    assert!(expected.len() >= 2);
    let mut url = format!(
        "{}/api/machines?$filter=startswith(computerDnsName,%27ws-%27)",
        sim.base_url()
    );
    let mut seen = Vec::new();
    for _ in 0..20 {
        let (status, body) = get_url(&sim, &url).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(ids(&body));
        match body.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => {
                assert!(next.contains("$filter="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn bad_odata_options_are_400_odata_errors() {
    let sim = common::start(common::scenario()).await;
    for query in [
        "$filter=healthStatus%20eq",
        "$filter=healthStatus%20eq%20%27Active",
        "$filter=(healthStatus%20eq%20%27Active%27",
        "$filter=osVersion%20eq%20%2710.0%27",
        "$filter=noSuchField%20eq%201",
        "$filter=frobnicate(id)",
        "$top=0",
        "$top=10001",
        "$top=ten",
        "$skip=-1",
    ] {
        let (status, body) = get(&sim, &format!("/api/machines?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "ODataError", "{query}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{query}"
        );
    }
    let (_, body) = get(&sim, "/api/machines?$filter=osVersion%20eq%20%2710%27").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("osVersion")
    );
}

#[tokio::test]
async fn count_answers_a_bare_number() {
    let sim = common::start(common::scenario()).await;
    let url = format!("{}/api/machines/$count", sim.base_url());
    let resp = common::client()
        .get(&url)
        .bearer_auth(common::token(&sim))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        sim.scenario().machines.len().to_string()
    );
    let expected = scenario_ids(&sim.scenario(), |m| m["healthStatus"] == "Active").len();
    let resp = common::client()
        .get(format!("{url}?$filter=healthStatus%20eq%20%27Active%27"))
        .bearer_auth(common::token(&sim))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), expected.to_string());
}

#[tokio::test]
async fn tags_are_added_and_removed() {
    let sim = common::start(common::scenario()).await;
    let id = first_machine_id(&sim);
    let path = format!("/api/machines/{id}/tags");
    let (status, body) = post_text(
        &sim,
        &path,
        r#"{"Value":"isolated-by-soar","Action":"Add"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id);
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#Machines/$entity")
    );
    let tags = body["machineTags"].as_array().unwrap().clone();
    assert!(tags.contains(&json!("isolated-by-soar")));
    // Adding it again does not duplicate it.
    let (_, body) = post_text(
        &sim,
        &path,
        r#"{"Value":"isolated-by-soar","Action":"Add"}"#,
    )
    .await;
    assert_eq!(body["machineTags"].as_array().unwrap().len(), tags.len());
    // The tag is visible to reads and filters.
    let (_, body) = get(&sim, &format!("/api/machines/{id}")).await;
    assert!(
        body["machineTags"]
            .as_array()
            .unwrap()
            .contains(&json!("isolated-by-soar"))
    );
    let (_, body) = get(
        &sim,
        "/api/machines?$filter=machineTags/any(t:%20t%20eq%20%27isolated-by-soar%27)",
    )
    .await;
    assert_eq!(ids(&body), vec![id.clone()]);
    // Remove.
    let (status, body) = post_text(
        &sim,
        &path,
        r#"{"Value":"isolated-by-soar","Action":"Remove"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !body["machineTags"]
            .as_array()
            .unwrap()
            .contains(&json!("isolated-by-soar"))
    );
    assert_eq!(
        body["machineTags"].as_array().unwrap().len(),
        tags.len() - 1
    );
}

#[tokio::test]
async fn tag_requests_are_validated() {
    let sim = common::start(common::scenario()).await;
    let id = first_machine_id(&sim);
    let path = format!("/api/machines/{id}/tags");
    for (body, field) in [
        (r#"{"Action":"Add"}"#, "Value"),
        (r#"{"value":"x","Action":"Add"}"#, "Value"),
        (r#"{"Value":"x"}"#, "Action"),
        (r#"{"Value":"x","Action":"Toggle"}"#, "Action"),
        (r#"{"Value":7,"Action":"Add"}"#, "Value"),
    ] {
        let (status, resp) = post_text(&sim, &path, body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(resp["error"]["code"], "InvalidRequestBody", "{body}");
        assert!(
            resp["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {resp}"
        );
    }
    let (status, resp) = post_text(&sim, &path, "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(resp["error"]["code"], "InvalidRequestBody");
    let (status, resp) = post_text(
        &sim,
        "/api/machines/ffffffffffffffffffffffffffffffffffffffff/tags",
        r#"{"Value":"x","Action":"Add"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(resp["error"]["code"], "ResourceNotFound");
}

#[tokio::test]
async fn missing_garbage_and_expired_tokens_are_401() {
    let sim = common::start(common::scenario()).await;
    let url = format!("{}/api/machines", sim.base_url());
    let client = common::client();

    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");

    let resp = client
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Past `exp` on the simulated clock.
    let token = common::token(&sim);
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    sim.clock
        .advance(Duration::from_secs(sim.scenario().token_lifetime_secs + 60));
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");

    // Expired through the control surface.
    let token = common::token(&sim);
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    sim.expire_access_tokens(None);
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(sim.counters().route_status("GET", "/api/machines", 401), 4);
}

#[tokio::test]
async fn tags_need_the_read_write_role() {
    let sim = common::start(common::scenario()).await;
    let scenario = sim.scenario();
    let tenant = &scenario.tenants[0];
    let (token, _, _) = jwt::issue(
        &sim,
        &TokenRequest {
            tenant_id: &tenant.id,
            client_id: &tenant.apps[0].client_id,
            audience: "https://api.securitycenter.microsoft.com",
            roles: Some(vec!["Machine.Read.All".into()]),
            scopes: None,
            v2: true,
            login_base: "https://login.microsoftonline.com",
            user: None,
        },
    );
    let id = first_machine_id(&sim);
    let client = common::client();
    let resp = client
        .get(format!("{}/api/machines/{id}", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .post(format!("{}/api/machines/{id}/tags", sim.base_url()))
        .bearer_auth(&token)
        .json(&json!({"Value": "x", "Action": "Add"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Forbidden");
    // Nothing changed.
    assert!(
        !sim.scenario().machines[0]["machineTags"]
            .as_array()
            .unwrap()
            .contains(&json!("x"))
    );
}

#[tokio::test]
async fn exceeding_the_default_budget_is_429_with_retry_after() {
    let mut scenario = common::scenario();
    scenario.rate_limits.default.per_minute = 3;
    let sim = common::start(scenario).await;
    let token = common::token(&sim);
    let url = format!("{}/api/machines", sim.base_url());
    let client = common::client();
    for _ in 0..3 {
        let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(sim.counters().throttled, 1);
    // The budget comes back once the minute has passed.
    sim.clock.advance(Duration::from_secs(61));
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
