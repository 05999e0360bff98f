//! list_devices against the simulator: paging, limit, filters, related machines.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn pages_through_three_simulator_pages() {
    // Six machines, two per page: three pages.
    let app = spawn_with(scenario_with_page_size(2)).await;
    let (status, body) = app.invoke("contoso", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["total_devices"], 6);
    assert_eq!(body["data"].as_array().unwrap().len(), 6);
    assert_eq!(body["parameters"]["limit"], 100);
    assert_eq!(body["parameters"]["input_type"], "All");
    assert_eq!(app.sim.counters().route("GET", "/api/machines"), 3);
}

#[tokio::test]
async fn stops_at_the_limit() {
    let app = spawn_with(scenario_with_page_size(2)).await;
    let (status, body) = app
        .invoke("contoso", "list_devices", json!({"limit": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_devices"], 3);
    // Two pages are enough for three devices.
    assert_eq!(app.sim.counters().route("GET", "/api/machines"), 2);
}

#[tokio::test]
async fn extra_odata_filter_is_applied() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "list_devices",
            json!({"query": "osPlatform eq 'Windows11'", "limit": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(
        data.iter().all(|d| d["osPlatform"] == "Windows11"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_filter_is_a_failed_envelope_with_the_upstream_message() {
    let app = spawn().await;
    let (status, body) = app
        .invoke("contoso", "list_devices", json!({"query": "nonsense eq"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    assert!(body["message"].as_str().unwrap().contains("400"), "{body}");
}

#[tokio::test]
async fn devices_by_domain_and_by_file() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "list_devices",
            json!({"input_type": "Domain", "input": "login-microsoft-verify.example"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_devices"], 2);
    let (status, body) = app
        .invoke(
            "contoso",
            "list_devices",
            json!({"input_type": "file hash", "input": "5b7e2c0f6a1d9e8b4c3a2f1e0d9c8b7a6f5e4d3c"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parameters"]["input_type"], "File Hash");
    assert_eq!(body["summary"]["total_devices"], 1);
}
