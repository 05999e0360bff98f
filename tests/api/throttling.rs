//! Upstream discipline through the host: 429s waited out within the wait limit, 503 with
//! Retry-After past it, and the client-side request budget keeping the simulator from ever
//! answering 429.

use defender_sim::{Fault, FaultKind, Scenario};
use defender_soar::config::{BudgetConfig, RateLimit};
use serde_json::{Value, json};

use crate::helpers::*;

/// A 429 with `Retry-After: {secs}` on the next GET of the machine list.
fn throttle_list_once(secs: &str) -> Fault {
    Fault {
        method: Some("GET".into()),
        path: "/api/machines".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 429,
            body: None,
            headers: [("Retry-After".to_string(), secs.to_string())]
                .into_iter()
                .collect(),
        },
    }
}

/// A budget of `per_minute` Defender API calls a minute, Microsoft's limits otherwise.
fn budget_per_minute(per_minute: u32) -> BudgetConfig {
    BudgetConfig {
        default: RateLimit::new(per_minute, Some(1500)),
        ..BudgetConfig::STANDARD
    }
}

/// Runs `list_devices` on `asset`; answers (status, Retry-After header, envelope).
async fn list_devices(app: &TestApp, asset: &str) -> (u16, Option<String>, Value) {
    let resp = app
        .client
        .post(app.url(&format!("/assets/{asset}/actions/list_devices")))
        .bearer_auth(API_KEY)
        .json(&json!({"parameters": {}}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_429_with_retry_after_1_is_waited_out_then_succeeds() {
    let app = spawn().await;
    app.sim.inject_fault(throttle_list_once("1"));
    let (status, retry_after, body) = list_devices(&app, "contoso").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(retry_after, None);
    assert_envelope(&body, "list_devices", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert!(
        body["summary"]["total_devices"].as_u64().unwrap() > 0,
        "{body}"
    );
    // The injected 429 is answered before routing, so count by path.
    let counters = app.sim.counters();
    assert_eq!(counters.path("GET", "/api/machines"), 2);
    assert_eq!(counters.throttled, 1);
    assert_eq!(counters.route_status("GET", "/api/machines", 200), 1);
}

#[tokio::test]
async fn a_retry_after_beyond_the_wait_limit_answers_503_without_another_request() {
    let app = spawn().await;
    app.sim.inject_fault(throttle_list_once("120"));
    let (status, retry_after, body) = list_devices(&app, "contoso").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("120"));
    assert_envelope(&body, "list_devices", "contoso");
    assert_eq!(body["status"], "failed");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("HTTP 429"), "{message}");
    assert!(message.contains("retry after 120 s"), "{message}");
    let counters = app.sim.counters();
    assert_eq!(counters.path("GET", "/api/machines"), 1);
    assert_eq!(counters.throttled, 1);
}

#[tokio::test]
async fn a_spent_budget_answers_503_and_sends_nothing() {
    let app = spawn_configured(Scenario::default_scenario(), |config| {
        config
            .budgets
            .insert("contoso".into(), budget_per_minute(3));
    })
    .await;
    for _ in 0..3 {
        let (status, _, body) = list_devices(&app, "contoso").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    // The next permit is a minute away: longer than the 30 s a call without a deadline
    // waits, so the fourth call fails at once.
    let (status, retry_after, body) = list_devices(&app, "contoso").await;
    assert_eq!(status, 503, "{body}");
    let retry_after: u64 = retry_after.unwrap().parse().unwrap();
    assert!((31..=61).contains(&retry_after), "{retry_after}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("the asset's request budget for Defender API calls (3/min) is spent"),
        "{message}"
    );
    assert!(message.contains("not sent to Defender"), "{message}");
    let counters = app.sim.counters();
    assert_eq!(counters.route("GET", "/api/machines"), 3);
    assert_eq!(counters.throttled, 0);
    // Another asset on the same app registration draws on the same budget (Microsoft counts
    // calls per application and tenant): refused too, nothing sent.
    let (status, _, body) = list_devices(&app, "contoso_v1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(app.sim.counters().route("GET", "/api/machines"), 3);
}

#[tokio::test]
async fn a_burst_of_50_never_makes_the_simulator_answer_429() {
    let mut scenario = Scenario::default_scenario();
    scenario.rate_limits.default.per_minute = 20;
    let app = spawn_configured(scenario, |config| {
        config
            .budgets
            .insert("contoso".into(), budget_per_minute(20));
    })
    .await;
    let calls = (0..50).map(|_| list_devices(&app, "contoso"));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|(s, _, _)| *s == 200).count();
    let unavailable: Vec<&(u16, Option<String>, Value)> =
        results.iter().filter(|(s, _, _)| *s == 503).collect();
    assert_eq!(ok + unavailable.len(), 50, "{results:?}");
    // Reads get 18 of the 20 permits a minute: the other two are kept for state-changing
    // calls (an isolation goes out at once even under a flood of reads).
    assert_eq!(ok, 18);
    for (_, retry_after, body) in unavailable {
        assert!(retry_after.is_some(), "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("request budget"),
            "{body}"
        );
    }
    let counters = app.sim.counters();
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.route("GET", "/api/machines"), 18);
}

#[tokio::test]
async fn an_isolation_overtakes_a_flood_of_reads() {
    let mut scenario = manual();
    scenario.rate_limits.default.per_minute = 20;
    let app = spawn_configured(scenario, |config| {
        let mut budget = budget_per_minute(20);
        // Reads past the budget queue for their permit instead of failing at once.
        budget.max_wait_secs = 300;
        config.budgets.insert("contoso".into(), budget);
    })
    .await;
    let reads: Vec<_> = (0..30)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/assets/contoso/actions/list_devices");
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"parameters": {}}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // 18 reads go now (20 less the two kept for state-changing calls); 12 wait a minute.
    let start = std::time::Instant::now();
    while app.sim.counters().route("GET", "/api/machines") < 18 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "reads never went"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let device = app.sim.scenario().machines[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // With a 1 s timeout, a submission that had to wait behind the reads would answer 503.
    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_device",
            json!({"device_id": device, "comment": "flood", "timeout": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["quarantine_status"], "Pending", "{body}");
    assert_eq!(
        app.sim
            .counters()
            .path("POST", &format!("/api/machines/{device}/isolate")),
        1
    );
    // The queued reads are still waiting: the isolation went before them.
    let waiting = reads.iter().filter(|r| !r.is_finished()).count();
    assert_eq!(waiting, 12);
    assert_eq!(app.sim.counters().route("GET", "/api/machines"), 18);
    assert_eq!(app.sim.counters().throttled, 0);
    for r in reads {
        r.abort();
    }
}
