//! test_connectivity against the simulator: success on v1 and v2, and the failure kinds.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn succeeds_with_v2_and_reports_permissions() {
    let app = spawn().await;
    let (status, body) = app.invoke("contoso", "test_connectivity", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "test_connectivity", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["token_endpoint"], "v2");
    assert_eq!(body["summary"]["api_call"], "GET /api/machines?$top=1");
    let granted = body["summary"]["granted_permissions"].as_array().unwrap();
    assert!(granted.iter().any(|p| p == "Machine.Isolate"));
    assert_eq!(body["parameters"]["wait_for_consent"], 0);
    let c = app.sim.counters();
    // One token per audience: the Defender API and Microsoft Graph.
    assert_eq!(c.tokens("client_credentials"), 2);
    assert_eq!(c.route("GET", "/api/machines"), 1);
    assert_eq!(c.route("POST", "/{tenant}/oauth2/v2.0/token"), 2);
}

#[tokio::test]
async fn succeeds_with_v1_string_numbers() {
    let app = spawn().await;
    let (status, body) = app
        .invoke("contoso_v1", "test_connectivity", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["token_endpoint"], "v1");
    assert_eq!(body["summary"]["token_expires_in"], 3599);
    assert_eq!(
        app.sim.counters().route("POST", "/{tenant}/oauth2/token"),
        2
    );
}

#[tokio::test]
async fn failures_say_what_is_wrong() {
    let app = spawn().await;
    let cases = [
        ("bad_secret", "client secret rejected (AADSTS7000215)"),
        ("no_tenant", "AADSTS90002"),
        ("no_client", "AADSTS700016"),
    ];
    for (asset, expected) in cases {
        let (status, body) = app.invoke(asset, "test_connectivity", json!({})).await;
        assert_eq!(status, 200, "{asset}: {body}");
        assert_envelope(&body, "test_connectivity", asset);
        assert_eq!(body["status"], "failed", "{asset}: {body}");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains(expected), "{asset}: {msg}");
        assert_eq!(body["summary"]["token_acquired"], false);
    }
    let msg = app
        .invoke("no_tenant", "test_connectivity", json!({}))
        .await
        .1["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tenant 00000000-1111-2222-3333-444444444444 was not found"),
        "{msg}"
    );
    // No API call was attempted without a token.
    assert_eq!(app.sim.counters().route("GET", "/api/machines"), 0);
}

#[tokio::test]
async fn api_failure_after_token_is_reported() {
    let app = spawn().await;
    app.sim.inject_fault(defender_sim::Fault {
        method: Some("GET".into()),
        path: "/api/machines".into(),
        count: 10,
        kind: defender_sim::FaultKind::Status {
            status: 403,
            body: Some(
                json!({"error": {"code": "Forbidden", "message": "Missing application roles", "target": "7f1e3c2a-0000-4000-8000-123456789abc"}})
                    .to_string(),
            ),
            headers: Default::default(),
        },
    });
    let (status, body) = app.invoke("contoso", "test_connectivity", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "failed");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("Forbidden") && msg.contains("Missing application roles"),
        "{msg}"
    );
}
