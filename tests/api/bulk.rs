//! Bulk containment through the host: `quarantine_devices` and friends on many devices at
//! once, against a simulator whose devices act only when the test (playing the devices)
//! completes their actions.

use std::collections::HashMap;

use defender_sim::Scenario;
use defender_soar::config::{BudgetConfig, RateLimit};
use serde_json::{Map, Value, json};

use crate::helpers::*;

const ISOLATE_ROUTE: &str = "/api/machines/{id}/isolate";

/// The default scenario with `n` more devices (`bulk-<i>.contoso.com`, 10.9.0.<i>), actions
/// moving only when completed, and room in the request budgets for the whole call.
fn scenario(n: usize) -> Scenario {
    let mut s = manual();
    let template = s.machines[0].clone();
    for i in 0..n {
        let mut m: Map<String, Value> = template.clone();
        m.insert("id".into(), json!(format!("{:040x}", 0xb0_0000 + i)));
        m.insert(
            "computerDnsName".into(),
            json!(format!("bulk-{i}.contoso.com")),
        );
        m.insert("lastIpAddress".into(), json!(format!("10.9.0.{i}")));
        s.machines.push(m);
    }
    s.rate_limits.default.per_minute = 1000;
    s.rate_limits.default.per_hour = 10_000;
    s
}

async fn host(n: usize) -> TestApp {
    host_with(scenario(n)).await
}

async fn host_with(scenario: Scenario) -> TestApp {
    spawn_configured(scenario, |c| {
        c.budgets.insert(
            "contoso".into(),
            BudgetConfig {
                default: RateLimit::new(1000, Some(10_000)),
                ..BudgetConfig::STANDARD
            },
        );
    })
    .await
}

fn device_id(i: usize) -> String {
    format!("{:040x}", 0xb0_0000 + i)
}

/// Plays the devices: completes every machine action of `action_type` that is not final yet
/// with its planned outcome (Succeeded unless a scenario rule says otherwise), until aborted.
fn devices_act(app: &TestApp, action_type: &'static str) -> tokio::task::JoinHandle<()> {
    devices_act_holding(app, action_type, Vec::new(), 0)
}

/// [`devices_act`], except that the actions `held` are completed only once the simulator has
/// seen `until_posts` isolate POSTs (devices that stay busy until the bulk call reached them).
fn devices_act_holding(
    app: &TestApp,
    action_type: &'static str,
    held: Vec<String>,
    until_posts: u64,
) -> tokio::task::JoinHandle<()> {
    let sim = app.sim.sim.clone();
    tokio::spawn(async move {
        loop {
            let release = sim.counters().route("POST", ISOLATE_ROUTE) >= until_posts;
            let open: Vec<(String, String)> = {
                let w = sim.world();
                w.actions
                    .iter()
                    .filter(|a| a.action_type == action_type && a.stage_floor < 2)
                    .filter(|a| release || !held.contains(&a.id))
                    .map(|a| (a.id.clone(), a.outcome.clone()))
                    .collect()
            };
            for (id, outcome) in open {
                let _ = sim.complete_action(&id, &outcome, None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
}

async fn invoke_with_key(app: &TestApp, action: &str, key: &str, params: Value) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url(&format!("/assets/contoso/actions/{action}")))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(&json!({ "parameters": params }))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn quarantine_devices_isolates_fifty_devices_with_one_row_each() {
    let app = host(47).await;
    // Five devices are already isolating (their devices do not answer yet).
    let mut pending = Vec::new();
    for i in 0..5 {
        let (status, body) = app
            .invoke(
                "contoso",
                "quarantine_device",
                json!({"device_id": device_id(i), "type": "Full", "comment": "first", "timeout": 1}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["summary"]["quarantine_status"], "Pending", "{body}");
        pending.push(body["summary"]["event_id"].as_str().unwrap().to_string());
    }
    // 47 devices (by id, by name and by address), 3 names no device has.
    let mut list: Vec<String> = Vec::new();
    for i in 0..47 {
        list.push(match i % 3 {
            0 => device_id(i),
            1 => format!("bulk-{i}.contoso.com"),
            _ => format!("10.9.0.{i}"),
        });
    }
    for i in 0..3 {
        list.push(format!("ghost-{i}.contoso.com"));
    }
    // They answer once the bulk call has sent its 47 isolate requests (5 of them refused as
    // already pending).
    let acting = devices_act_holding(&app, "Isolate", pending, 52);
    let (status, body) = invoke_with_key(
        &app,
        "quarantine_devices",
        "bulk-isolate-1",
        json!({"device_ids": list.join(","), "type": "Full", "comment": "worm", "timeout": 60}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "quarantine_devices", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 50);
    let s = &body["summary"];
    assert_eq!(s["total_devices"], 50);
    assert_eq!(s["succeeded"], 47, "{s}");
    assert_eq!(s["failed"], 3);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["already_pending"], 5);
    for (row, given) in rows.iter().zip(&list) {
        assert_eq!(row["device"], json!(given));
        if given.starts_with("ghost-") {
            assert_eq!(row["outcome"], "failed");
            assert!(row["event_id"].is_null());
            assert!(
                row["message"].as_str().unwrap().contains(given.as_str()),
                "{row}"
            );
        } else {
            assert_eq!(row["outcome"], "succeeded", "{row}");
            assert_eq!(row["status"], "Succeeded");
            assert!(row["event_id"].is_string());
        }
    }
    for row in &rows[..5] {
        assert_eq!(row["existing_action"], true, "{row}");
    }
    // One accepted isolate per device: 5 earlier + 42 new; the 5 repeats were refused as
    // already pending and followed.
    let counters = app.sim.counters();
    assert_eq!(counters.route_status("POST", ISOLATE_ROUTE, 201), 47);
    assert_eq!(counters.route("POST", ISOLATE_ROUTE), 52);
    assert_eq!(counters.throttled, 0);

    // The same call again with the same key follows the same events: nothing is submitted.
    let (status, again) = invoke_with_key(
        &app,
        "quarantine_devices",
        "bulk-isolate-1",
        json!({"device_ids": list.join(","), "type": "Full", "comment": "worm", "timeout": 60}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(app.sim.counters().route("POST", ISOLATE_ROUTE), 52);
    let events = |b: &Value| -> Vec<Value> {
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event_id"].clone())
            .collect()
    };
    assert_eq!(events(&again), events(&body));
    // The key with other parameters is refused, before anything is sent.
    let (status, refused) = invoke_with_key(
        &app,
        "quarantine_devices",
        "bulk-isolate-1",
        json!({"device_ids": list[..10].join(","), "type": "Full", "comment": "worm", "timeout": 60}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    assert_eq!(app.sim.counters().route("POST", ISOLATE_ROUTE), 52);
    acting.abort();
}

#[tokio::test]
async fn a_device_named_twice_gets_one_action_and_the_others_are_not_stopped_by_a_failure() {
    let mut s = scenario(4);
    // Device 3 fails its scan.
    s.outcomes.push(
        serde_json::from_value(json!({
            "type": "RunAntiVirusScan", "machine_id": device_id(3), "status": "Failed"
        }))
        .unwrap(),
    );
    let app = host_with(s).await;
    let acting = devices_act(&app, "RunAntiVirusScan");
    let list = json!([
        device_id(0),
        "BULK-0.contoso.com",
        device_id(1),
        device_id(3),
        "10.9.0.2"
    ]);
    let (status, body) = app
        .invoke(
            "contoso",
            "scan_devices",
            json!({"device_ids": list.to_string(), "scan_type": "Quick", "comment": "sweep", "timeout": 60}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{body}");
    // BULK-0.contoso.com is device 0 again: no second scan, the same event.
    assert_eq!(rows[1]["duplicate_of"], json!(device_id(0)));
    assert_eq!(rows[1]["event_id"], rows[0]["event_id"]);
    assert_eq!(body["summary"]["duplicates"], 1);
    let counters = app.sim.counters();
    assert_eq!(
        counters.route("POST", "/api/machines/{id}/runantivirusscan"),
        4
    );
    let by_device: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["device"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_device[device_id(3).as_str()]["outcome"], "failed");
    assert_eq!(by_device["10.9.0.2"]["outcome"], "succeeded");
    assert_eq!(body["summary"]["succeeded"], 3, "{body}");
    assert_eq!(body["status"], "success");
    acting.abort();
}

#[tokio::test]
async fn bad_bulk_input_is_refused_before_anything_is_sent() {
    let app = host(1).await;
    let many: Vec<String> = (0..501).map(|i| format!("pc-{i}")).collect();
    for (params, named) in [
        (
            json!({"device_ids": many.join(","), "type": "Full", "comment": "x", "timeout": 5}),
            "device_ids",
        ),
        (
            json!({"device_ids": "pc 1", "type": "Full", "comment": "x", "timeout": 5}),
            "device_ids",
        ),
        (
            json!({"device_ids": " , ", "type": "Full", "comment": "x", "timeout": 5}),
            "device_ids",
        ),
        (
            json!({"device_ids": device_id(0), "type": "Full", "comment": "  ", "timeout": 5}),
            "comment",
        ),
        (
            json!({"device_ids": device_id(0), "type": "Full", "comment": "x", "timeout": 61}),
            "timeout",
        ),
    ] {
        let (status, body) = app.invoke("contoso", "quarantine_devices", params).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains(named), "{body}");
    }
    let (status, body) = app
        .invoke(
            "contoso",
            "quarantine_files",
            json!({"device_ids": device_id(0), "file_hash": "a".repeat(64), "comment": "x", "timeout": 5}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("SHA1"));
    let counters = app.sim.counters();
    assert_eq!(counters.route("POST", ISOLATE_ROUTE), 0, "nothing was sent");
    assert_eq!(
        counters.route("GET", "/api/machines"),
        0,
        "nothing was looked up"
    );
}
