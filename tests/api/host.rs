//! The host's own routes: auth, health, metrics, manifest, OpenAPI, envelopes for rejections.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn missing_and_wrong_api_key_are_401_envelopes() {
    let app = spawn().await;
    let url = app.url("/assets/contoso/actions/test_connectivity");
    let resp = app
        .client
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_envelope(&body, "test_connectivity", "contoso");
    assert_eq!(body["status"], "failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing API key")
    );

    let resp = app
        .client
        .post(&url)
        .bearer_auth("not-the-key")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("rejected"));
    // Nothing reached the upstream.
    assert_eq!(app.sim.counters().total, 0);

    for path in ["/actions", "/manifest.json", "/openapi.json", "/metrics"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn unknown_asset_and_action_are_404() {
    let app = spawn().await;
    let (status, body) = app
        .invoke("nobody", "test_connectivity", serde_json::json!({}))
        .await;
    assert_eq!(status, 404);
    assert_envelope(&body, "test_connectivity", "nobody");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown asset 'nobody'")
    );

    let (status, body) = app
        .invoke("contoso", "launch_missiles", serde_json::json!({}))
        .await;
    assert_eq!(status, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown action 'launch_missiles'")
    );

    let (status, body) = app.get("/no/such/route").await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "failed");
}

#[tokio::test]
async fn malformed_json_is_a_400_envelope() {
    let app = spawn().await;
    let resp = app
        .client
        .post(app.url("/assets/contoso/actions/list_devices"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{\"parameters\": {\"limit\": 5,,}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_envelope(&body, "list_devices", "contoso");
    assert!(
        body["message"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let resp = app
        .client
        .post(app.url("/assets/contoso/actions/list_devices"))
        .bearer_auth(API_KEY)
        .body("{\"params\": {}}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("params"),
        "{body}"
    );
    assert_eq!(app.sim.counters().total, 0);
}

#[tokio::test]
async fn oversized_body_is_a_413_envelope() {
    let app = spawn().await;
    let big = format!(
        "{{\"parameters\":{{\"query\":\"{}\"}}}}",
        "a".repeat(17 * 1024 * 1024)
    );
    let resp = app
        .client
        .post(app.url("/assets/contoso/actions/list_devices"))
        .bearer_auth(API_KEY)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("body_limit_bytes")
    );
}

#[tokio::test]
async fn health_ready_and_request_ids() {
    let app = spawn().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_some());
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    // A caller's request id is kept.
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn actions_manifest_openapi_and_metrics() {
    let app = spawn().await;
    let (status, body) = app.get("/actions").await;
    assert_eq!(status, 200);
    let actions: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"test_connectivity") && ids.contains(&"list_devices"));

    let (status, body) = app.get("/manifest.json").await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(manifest, defender_soar::actions::manifest::manifest());

    let (status, body) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/assets/{asset}/actions/{action}"]["post"].is_object());
    let ld = &doc["paths"]["/assets/{asset}/actions/list_devices"]["post"];
    assert!(ld["requestBody"].to_string().contains("input_type"), "{ld}");
    assert!(doc["components"]["schemas"]["Envelope"].is_object());

    // One action so the counters exist, then the metrics mention it.
    app.invoke("contoso", "test_connectivity", serde_json::json!({}))
        .await;
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("defender_actions_total"), "{body}");
    assert!(body.contains("defender_token_fetches_total"), "{body}");
}
