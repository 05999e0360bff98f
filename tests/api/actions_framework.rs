//! Generic validation and definitions, seen through the HTTP host.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn invalid_parameters_are_400_naming_the_parameter() {
    let app = spawn().await;
    let cases = [
        (
            json!({"input_type": "IP"}),
            "input_type",
            "All, Domain, File Hash",
        ),
        (json!({"limit": 0}), "limit", "between 1 and 10000"),
        (json!({"limit": "many"}), "limit", "integer"),
        (json!({"bogus": 1}), "bogus", "accepted"),
        (
            json!({"input_type": "Domain", "input": "a/../b"}),
            "input",
            "must match",
        ),
    ];
    for (params, name, allowed) in cases {
        let (status, body) = app.invoke("contoso", "list_devices", params.clone()).await;
        assert_eq!(status, 400, "{params} → {body}");
        assert_envelope(&body, "list_devices", "contoso");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains(&format!("'{name}'")), "{params}: {msg}");
        assert!(msg.contains(allowed), "{params}: {msg}");
    }
    // Validation happens before any upstream call.
    assert_eq!(app.sim.counters().total, 0);
}

#[tokio::test]
async fn missing_required_parameter_is_400() {
    let app = spawn().await;
    // input_type has a default; Domain without input is refused by the handler before any call.
    let (status, body) = app
        .invoke("contoso", "list_devices", json!({"input_type": "Domain"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("'input' is required")
    );
    assert_eq!(app.sim.counters().total, 0);
}

#[tokio::test]
async fn disabled_action_is_403() {
    let app = spawn().await;
    let (status, body) = app.invoke("limited", "list_devices", json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_envelope(&body, "list_devices", "limited");
    assert!(body["message"].as_str().unwrap().contains("disabled"));
    assert_eq!(app.sim.counters().total, 0);
    // Other actions of the asset still run.
    let (status, _) = app.invoke("limited", "test_connectivity", json!({})).await;
    assert_eq!(status, 200);
}

#[test]
fn committed_manifest_matches_the_definitions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifest.json");
    let committed = std::fs::read_to_string(path).expect("manifest.json at the repository top");
    let generated = defender_soar::actions::manifest::manifest_pretty();
    assert!(
        committed == generated,
        "manifest.json is stale: run `cargo run -- manifest > manifest.json`"
    );
}
