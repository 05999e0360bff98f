//! Token handling through the host: cached across actions, one refresh and one retry on 401.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn token_is_cached_across_actions() {
    let app = spawn().await;
    for _ in 0..3 {
        let (status, body) = app
            .invoke("contoso", "list_devices", json!({"limit": 1}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    let c = app.sim.counters();
    assert_eq!(c.tokens("client_credentials"), 1);
    assert_eq!(c.route("GET", "/api/machines"), 3);
}

#[tokio::test]
async fn concurrent_cold_actions_share_one_token_request() {
    let app = spawn().await;
    let calls = (0..20).map(|_| app.invoke("contoso", "list_devices", json!({"limit": 1})));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(app.sim.counters().tokens("client_credentials"), 1);
}

#[tokio::test]
async fn a_401_forces_one_refresh_and_one_retry() {
    let app = spawn().await;
    let (status, _) = app
        .invoke("contoso", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200);
    // The simulator now refuses the token the host has cached.
    app.sim.expire_access_tokens(None);
    let (status, body) = app
        .invoke("contoso", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let c = app.sim.counters();
    assert_eq!(c.tokens("client_credentials"), 2);
    assert_eq!(c.route_status("GET", "/api/machines", 401), 1);
    assert_eq!(c.route_status("GET", "/api/machines", 200), 2);
}

#[tokio::test]
async fn a_second_401_is_reported_not_looped() {
    let app = spawn().await;
    app.sim.inject_fault(defender_sim::Fault {
        method: Some("GET".into()),
        path: "/api/machines".into(),
        count: 5,
        kind: defender_sim::FaultKind::Status {
            status: 401,
            body: None,
            headers: Default::default(),
        },
    });
    let (status, body) = app
        .invoke("contoso", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let c = app.sim.counters();
    // Exactly one retry after one refresh (faulted requests count by path: they never route).
    assert_eq!(c.path("GET", "/api/machines"), 2);
    assert_eq!(c.tokens("client_credentials"), 2);
}

#[tokio::test]
async fn transient_5xx_on_a_list_is_retried() {
    let app = spawn().await;
    app.sim.inject_fault(defender_sim::Fault {
        method: Some("GET".into()),
        path: "/api/machines".into(),
        count: 2,
        kind: defender_sim::FaultKind::Status {
            status: 503,
            body: None,
            headers: Default::default(),
        },
    });
    let (status, body) = app
        .invoke("contoso", "list_devices", json!({"limit": 2}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(app.sim.counters().path("GET", "/api/machines"), 3);
}

#[tokio::test]
async fn variants_of_the_upstream_are_tolerated() {
    // v1 answers with numbers as numbers (some proxies rewrite them) still work.
    let mut scenario = defender_sim::Scenario::default_scenario();
    scenario.v1_numbers_as_strings = false;
    let app = spawn_with(scenario).await;
    let (_, body) = app
        .invoke("contoso_v1", "test_connectivity", json!({}))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    // A malformed JSON answer is a clear failure, not a panic or a hang.
    app.sim.inject_fault(defender_sim::Fault {
        method: Some("GET".into()),
        path: "/api/machines".into(),
        count: 10,
        kind: defender_sim::FaultKind::MalformedJson,
    });
    let (status, body) = app.invoke("contoso", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
}
