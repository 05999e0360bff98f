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
    // Each action has a concrete path; there is no generic template.
    assert!(doc["paths"]["/assets/{asset}/actions/{action}"].is_null());
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

#[tokio::test]
async fn openapi_documents_every_answer() {
    let app = spawn().await;
    let (status, body) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();

    for d in defender_soar::actions::definitions() {
        let path = format!("/assets/{{asset}}/actions/{}", d.id);
        let op = &paths[&path]["post"];
        assert_eq!(op["operationId"], d.id.as_str(), "{path}");
        for code in [
            "200", "400", "401", "403", "404", "409", "413", "500", "502", "503",
        ] {
            let schema = &op["responses"][code]["content"]["application/json"]["schema"];
            assert_eq!(
                schema["$ref"], "#/components/schemas/Envelope",
                "{path} {code}"
            );
        }
        let retry = &op["responses"]["503"]["headers"]["Retry-After"];
        assert_eq!(retry["schema"]["type"], "integer", "{path}");
        let params = op["parameters"].as_array().unwrap();
        let key = params
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path}: no Idempotency-Key"));
        assert_eq!(key["in"], "header");
        assert_eq!(key["required"], false);
        assert_eq!(key["schema"]["minLength"], 1);
        assert_eq!(key["schema"]["maxLength"], 255);
        assert!(key["description"].as_str().unwrap().contains("7 days"));
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "asset" && p["in"] == "path")
        );
        assert_eq!(
            op["security"],
            serde_json::json!([{"api_key": []}]),
            "{path}"
        );
        // Every parameter of the definition is described.
        let props = &op["requestBody"]["content"]["application/json"]["schema"]["properties"]["parameters"]
            ["properties"];
        for p in &d.parameters {
            assert!(props[&p.name].is_object(), "{path}: {}", p.name);
        }
    }

    // Every operation behind the API key says so and documents the 401; the open ones don't.
    let open = ["/healthz", "/readyz", "/start_oauth", "/result"];
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(secured, !open.contains(&path.as_str()), "{method} {path}");
            assert_eq!(
                op["responses"]["401"].is_object(),
                secured,
                "{method} {path}"
            );
        }
    }
    assert!(paths["/readyz"]["get"]["responses"]["503"].is_object());
    for path in ["/vault/{vault_id}", "/vault/{vault_id}/info"] {
        for code in ["200", "401", "404", "500"] {
            assert!(
                paths[path]["get"]["responses"][code].is_object(),
                "{path} {code}"
            );
        }
    }

    let start = &paths["/start_oauth"]["get"];
    let asset_id = start["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ticket")
        .expect("/start_oauth documents ticket");
    assert_eq!(asset_id["in"], "query");
    assert_eq!(asset_id["required"], true);
    assert!(start["responses"]["302"]["headers"]["Location"].is_object());
    assert!(start["responses"]["302"]["headers"]["Set-Cookie"].is_object());
    let consent = &paths["/assets/{asset}/consent"]["post"];
    for code in ["200", "401", "404", "409", "429", "500"] {
        assert!(consent["responses"][code].is_object(), "consent {code}");
    }
    for code in ["400", "500"] {
        assert!(
            start["responses"][code]["content"]["text/html"].is_object(),
            "/start_oauth {code}"
        );
    }
    let result = &paths["/result"]["get"];
    let names: Vec<&str> = result["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["code", "state", "error", "error_description"] {
        assert!(names.contains(&name), "/result documents {name}");
    }
    for code in ["200", "400", "500"] {
        assert!(
            result["responses"][code]["content"]["text/html"].is_object(),
            "/result {code}"
        );
    }
}

#[tokio::test]
async fn openapi_parameter_schemas_follow_the_validator() {
    let app = spawn().await;
    let (_, body) = app.get("/openapi.json").await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    let op = |id: &str| doc["paths"][format!("/assets/{{asset}}/actions/{id}")]["post"].clone();

    // An action with a required parameter needs a body; one without does not.
    let scan = op("scan_device");
    assert_eq!(scan["requestBody"]["required"], true);
    let body = &scan["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["required"], serde_json::json!(["parameters"]));
    let params = &body["properties"]["parameters"];
    assert_eq!(params["additionalProperties"], false);
    assert!(
        params["required"]
            .as_array()
            .unwrap()
            .contains(&"device_id".into())
    );
    assert_eq!(op("list_devices")["requestBody"]["required"], false);

    // An integer also comes as a decimal string within its range; null and "" mean "not given".
    let timeout = &params["properties"]["timeout"]["anyOf"];
    assert_eq!(timeout[0]["type"], "integer");
    assert_eq!(timeout[0]["maximum"], 3600);
    let pattern = regex::Regex::new(timeout[1]["pattern"].as_str().unwrap()).unwrap();
    assert!(pattern.is_match("3600") && pattern.is_match("+0042"));
    assert!(!pattern.is_match("3601") && !pattern.is_match("0") && !pattern.is_match("4.5"));
    assert!(
        timeout
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"type": "null", "description": "Not given"}))
    );
    // Value lists match in any letter case.
    let scan_type = params["properties"]["scan_type"]["anyOf"].to_string();
    assert!(scan_type.contains("[Qq][Uu][Ii][Cc][Kk]"), "{scan_type}");
    // A live response action needs event_id or the parameters of a new one.
    let get_file = op("get_file").to_string();
    assert!(get_file.contains("anyOf") && get_file.contains("file_path"));
}
