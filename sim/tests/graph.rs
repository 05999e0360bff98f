//! Microsoft Graph security resources: alerts_v2 and incidents (shapes, filters, paging, PATCH,
//! comments, errors, audience and permission checks).

mod common;

use defender_sim::SimHandle;
use serde_json::{Value, json};

/// A client-credentials token for app `app` of the first tenant, for `scope`.
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

async fn graph_token(sim: &SimHandle) -> String {
    token_for(sim, 0, "https://graph.microsoft.com/.default").await
}

async fn get(sim: &SimHandle, token: &str, path_and_query: &str) -> (u16, Value) {
    let url = if path_and_query.starts_with("http") {
        path_and_query.to_string()
    } else {
        format!("{}{path_and_query}", sim.base_url())
    };
    let resp = common::client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn send(
    sim: &SimHandle,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let resp = common::client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn values(body: &Value) -> &Vec<Value> {
    body["value"].as_array().unwrap()
}

#[tokio::test]
async fn alerts_have_graph_shapes_and_evidence_tied_to_machines() {
    let sim = common::start(common::scenario()).await;
    let t = graph_token(&sim).await;
    let (status, body) = get(&sim, &t, "/v1.0/security/alerts_v2?$top=2000").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/v1.0/$metadata#security/alerts_v2")
    );
    let alerts = values(&body);
    assert!(alerts.len() >= 200, "{}", alerts.len());
    assert!(body.get("@odata.nextLink").is_none());
    let machine_ids: Vec<String> = sim
        .scenario()
        .machines
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let mut kinds = std::collections::BTreeSet::new();
    for a in alerts {
        for key in [
            "id",
            "incidentId",
            "status",
            "severity",
            "classification",
            "determination",
            "serviceSource",
            "title",
            "createdDateTime",
            "lastUpdateDateTime",
        ] {
            assert!(a[key].is_string(), "{key} in {a}");
        }
        for e in a["evidence"].as_array().unwrap() {
            let kind = e["@odata.type"].as_str().unwrap().to_string();
            if kind.ends_with("deviceEvidence") {
                assert!(machine_ids.contains(&e["mdeDeviceId"].as_str().unwrap().to_string()));
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "deviceEvidence",
        "fileEvidence",
        "ipEvidence",
        "userEvidence",
    ] {
        assert!(
            kinds.contains(&format!("#microsoft.graph.security.{kind}")),
            "{kinds:?}"
        );
    }
    for field in ["severity", "status", "classification", "serviceSource"] {
        let distinct: std::collections::BTreeSet<&str> =
            alerts.iter().map(|a| a[field].as_str().unwrap()).collect();
        assert!(distinct.len() >= 3, "{field}: {distinct:?}");
    }
}

#[tokio::test]
async fn alert_filters_paging_and_count() {
    let sim = common::start(common::scenario()).await;
    let t = graph_token(&sim).await;
    let (_, all) = get(&sim, &t, "/v1.0/security/alerts_v2?$top=2000").await;
    let all = values(&all).clone();
    let high_new = all
        .iter()
        .filter(|a| a["severity"] == "high" && a["status"] == "new")
        .count();
    let (status, body) = get(
        &sim,
        &t,
        "/v1.0/security/alerts_v2?$filter=severity%20eq%20'high'%20and%20status%20eq%20'new'&$count=true",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body).len(), high_new);
    assert_eq!(body["@odata.count"], json!(high_new));

    let mde_or_mdi = all
        .iter()
        .filter(|a| {
            a["serviceSource"] == "microsoftDefenderForEndpoint"
                || a["serviceSource"] == "microsoftDefenderForIdentity"
        })
        .count();
    let (_, body) = get(&sim, &t, "/v1.0/security/alerts_v2?$filter=serviceSource eq 'microsoftDefenderForEndpoint' or serviceSource eq 'microsoftDefenderForIdentity'").await;
    assert_eq!(values(&body).len(), mde_or_mdi);

    // createdDateTime ge: an unquoted date-time literal.
    let mut created: Vec<String> = all
        .iter()
        .map(|a| a["createdDateTime"].as_str().unwrap().to_string())
        .collect();
    created.sort();
    let pivot = &created[created.len() / 2];
    let newer = created.iter().filter(|c| *c >= pivot).count();
    let (status, body) = get(
        &sim,
        &t,
        &format!("/v1.0/security/alerts_v2?$top=2000&$filter=createdDateTime ge {pivot}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body).len(), newer);

    // Paging: $top 120 → nextLink (absolute, keeps the filter) until done.
    let mut url = format!(
        "{}/v1.0/security/alerts_v2?$top=120&$filter=classification%20ne%20'unknown'",
        sim.base_url()
    );
    let expected = all
        .iter()
        .filter(|a| a["classification"] != "unknown")
        .count();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, body) = get(&sim, &t, &url).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        seen.extend(values(&body).iter().map(|a| a["id"].clone()));
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with("http://"), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), expected);
    assert_eq!(pages, expected.div_ceil(120));

    let (status, body) = get(&sim, &t, "/v1.0/security/alerts_v2?$top=2001").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    assert!(body["error"]["innerError"]["request-id"].is_string());
    let (status, body) = get(&sim, &t, "/v1.0/security/alerts_v2?$filter=title eq 'x'").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn alert_get_patch_comments_and_not_found() {
    let sim = common::start(common::scenario()).await;
    let t = graph_token(&sim).await;
    let (_, list) = get(
        &sim,
        &t,
        "/v1.0/security/alerts_v2?$top=1&$filter=status eq 'new'",
    )
    .await;
    let id = values(&list)[0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1.0/security/alerts_v2/{id}");

    let (status, alert) = get(&sim, &t, &path).await;
    assert_eq!(status, 200);
    assert_eq!(alert["id"], json!(id));
    assert!(
        alert["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("security/alerts_v2/$entity")
    );

    let (status, patched) = send(
        &sim,
        &t,
        reqwest::Method::PATCH,
        &path,
        json!({"status": "resolved", "classification": "truePositive",
               "determination": "malware", "assignedTo": "analyst@contoso.onmicrosoft.com"}),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "resolved");
    assert_eq!(patched["determination"], "malware");
    assert!(patched["resolvedDateTime"].is_string());
    let (_, again) = get(&sim, &t, &path).await;
    assert_eq!(again["assignedTo"], "analyst@contoso.onmicrosoft.com");

    let (status, body) = send(
        &sim,
        &t,
        reqwest::Method::PATCH,
        &path,
        json!({"status": "closed"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    let (status, _) = send(
        &sim,
        &t,
        reqwest::Method::PATCH,
        &path,
        json!({"title": "x"}),
    )
    .await;
    assert_eq!(status, 400);

    let (status, comments) = send(
        &sim,
        &t,
        reqwest::Method::POST,
        &format!("{path}/comments"),
        json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": "Checked"}),
    )
    .await;
    assert_eq!(status, 200, "{comments}");
    let list = values(&comments);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["comment"], "Checked");
    assert_eq!(list[0]["createdByDisplayName"], "defender-soar demo");
    let (status, _) = send(
        &sim,
        &t,
        reqwest::Method::POST,
        &format!("{path}/comments"),
        json!({"comment": " "}),
    )
    .await;
    assert_eq!(status, 400);

    let (status, body) = get(&sim, &t, "/v1.0/security/alerts_v2/da000_404").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "NotFound");
    let (status, _) = send(
        &sim,
        &t,
        reqwest::Method::PATCH,
        "/v1.0/security/alerts_v2/da000_404",
        json!({"status": "resolved"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn incidents_group_alerts_expand_page_and_patch() {
    let sim = common::start(common::scenario()).await;
    let t = graph_token(&sim).await;
    let (status, body) = get(&sim, &t, "/v1.0/security/incidents?$expand=alerts").await;
    assert_eq!(status, 200, "{body}");
    let page = values(&body);
    assert_eq!(page.len(), 50);
    assert!(
        body["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("$expand=alerts")
    );
    for i in page {
        let id = i["id"].as_str().unwrap();
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
        let alerts = i["alerts"].as_array().unwrap();
        assert!((1..=5).contains(&alerts.len()));
        assert!(alerts.iter().all(|a| a["incidentId"] == json!(id)));
    }
    let (status, _) = get(&sim, &t, "/v1.0/security/incidents?$top=51").await;
    assert_eq!(status, 400);
    let (status, body) = get(
        &sim,
        &t,
        "/v1.0/security/incidents?$filter=status eq 'resolved'&$top=50",
    )
    .await;
    assert_eq!(status, 200);
    assert!(values(&body).iter().all(|i| i["status"] == "resolved"));

    let id = page[0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1.0/security/incidents/{id}");
    let (status, body) = send(
        &sim,
        &t,
        reqwest::Method::PATCH,
        &path,
        json!({"status": "inProgress", "customTags": ["triaged"], "description": "looked at",
               "classification": "falsePositive", "determination": "notMalicious"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customTags"], json!(["triaged"]));
    let (status, body) = get(&sim, &t, &format!("{path}?$expand=alerts")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "inProgress");
    assert!(body["alerts"].is_array());
    let (status, _) = send(
        &sim,
        &t,
        reqwest::Method::PATCH,
        &path,
        json!({"status": "new"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = send(
        &sim,
        &t,
        reqwest::Method::POST,
        &format!("{path}/comments"),
        json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": "Escalated"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body)[0]["comment"], "Escalated");
    let (status, body) = get(&sim, &t, "/v1.0/security/incidents/999999999").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "NotFound");
}

#[tokio::test]
async fn defender_token_is_refused_and_permissions_are_checked() {
    let sim = common::start(common::scenario()).await;
    let defender = common::token(&sim);
    let (status, body) = get(&sim, &defender, "/v1.0/security/alerts_v2").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid audience")
    );

    let reader = token_for(&sim, 1, "https://graph.microsoft.com/.default").await;
    let (status, _) = get(&sim, &reader, "/v1.0/security/alerts_v2?$top=1").await;
    assert_eq!(status, 200);
    let (status, body) = get(&sim, &reader, "/v1.0/security/incidents").await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SecurityIncident.Read.All")
    );
    let (_, list) = get(&sim, &reader, "/v1.0/security/alerts_v2?$top=1").await;
    let id = values(&list)[0]["id"].as_str().unwrap().to_string();
    let (status, body) = send(
        &sim,
        &reader,
        reqwest::Method::PATCH,
        &format!("/v1.0/security/alerts_v2/{id}"),
        json!({"status": "resolved"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SecurityAlert.ReadWrite.All")
    );
    assert_eq!(
        sim.counters()
            .route_status("PATCH", "/v1.0/security/alerts_v2/{id}", 403),
        1
    );
}

#[tokio::test]
async fn data_is_scoped_to_the_token_tenant() {
    let sim = common::start(common::scenario()).await;
    let t = graph_token(&sim).await;
    let (_, body) = get(&sim, &t, "/v1.0/security/alerts_v2?$top=1").await;
    let tid = sim.scenario().tenants[0].id.clone();
    assert_eq!(values(&body)[0]["tenantId"], json!(tid));
    // The same alert id is unknown to another tenant's token.
    let other = {
        let s = sim.scenario();
        let tenant = &s.tenants[1];
        defender_sim::jwt::issue(
            &sim,
            &defender_sim::jwt::TokenRequest {
                tenant_id: &tenant.id,
                client_id: "00000000-0000-0000-0000-000000000001",
                audience: "https://graph.microsoft.com",
                roles: Some(vec!["SecurityAlert.Read.All".into()]),
                scopes: None,
                v2: true,
                login_base: "https://login.microsoftonline.com",
                user: None,
            },
        )
        .0
    };
    let id = values(&body)[0]["id"].as_str().unwrap().to_string();
    let (status, _) = get(&sim, &other, &format!("/v1.0/security/alerts_v2/{id}")).await;
    assert_eq!(status, 404);
}
