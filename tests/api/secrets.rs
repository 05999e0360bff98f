//! Secrets never reach logs or responses.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn wrong_secret_token_and_api_key_appear_nowhere() {
    let app = spawn().await;
    let (_, bad) = app
        .invoke("bad_secret", "test_connectivity", json!({}))
        .await;
    let (_, good) = app.invoke("contoso", "test_connectivity", json!({})).await;
    let (_, listed) = app
        .invoke("contoso", "list_devices", json!({"limit": 2}))
        .await;
    assert_eq!(good["status"], "success");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(!logs.is_empty(), "the log capture saw nothing");
    let scenario = app.sim.scenario();
    let real_secret = &scenario.tenants[0].apps[0].secret;
    for (what, text) in [
        ("logs", logs.as_str()),
        ("bad response", &bad.to_string()),
        ("good response", &good.to_string()),
        ("list response", &listed.to_string()),
    ] {
        assert!(!text.contains(WRONG_SECRET), "client secret in {what}");
        assert!(
            !text.contains(real_secret.as_str()),
            "client secret in {what}"
        );
        assert!(!text.contains(API_KEY), "API key in {what}");
        // Every access token is a JWT, and every JWT starts with this (base64 of `{"`).
        assert!(!text.contains("eyJ"), "a token in {what}");
        assert!(
            !text.to_ascii_lowercase().contains("bearer ey"),
            "an Authorization value in {what}"
        );
    }
}
