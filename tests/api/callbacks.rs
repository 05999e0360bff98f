//! Completion callbacks through the host: an action answered before its event is final gets
//! its final envelope POSTed, signed, once the simulator (playing the device) finishes it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::webhook_receiver::Receiver;

const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
const SECRET: &str = "callback-signing-secret-1f9e3a";
const HOSTS: &str = "C:\\Windows\\System32\\drivers\\etc\\hosts";

/// A host whose server signs callbacks with `SECRET` (named `n8n`), on a simulator whose
/// actions move only when completed (unless `manual` is false).
async fn host(manual_actions: bool) -> TestApp {
    let scenario = if manual_actions {
        manual()
    } else {
        defender_sim::Scenario::default_scenario()
    };
    spawn_configured(scenario, |c| {
        c.server
            .callback_secrets
            .insert("n8n".into(), SECRET.to_string().into());
    })
    .await
}

/// Waits until `cond` holds on the host's answers (bounded).
async fn until_status(app: &TestApp, event: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = app
            .invoke("contoso", "get_status", json!({"event_id": event}))
            .await;
        if body["summary"]["callback"] == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "callback never became {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scan_with_callback(app: &TestApp, receiver: &Receiver) -> String {
    let (status, body) = app
        .invoke(
            "contoso",
            "scan_device",
            json!({"device_id": DEV, "scan_type": "Full", "comment": "sweep", "timeout": 1,
                   "callback_url": receiver.url}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["scan_status"], "Pending", "{body}");
    assert_eq!(body["summary"]["callback"], "pending", "{body}");
    // The callback's URL is the host's, not an action parameter to echo.
    assert!(body["parameters"].get("callback_url").is_none(), "{body}");
    body["summary"]["event_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_scan_that_ends_after_the_answer_is_called_back_once_signed() {
    let app = host(true).await;
    let receiver = Receiver::start(SECRET).await;
    let event = scan_with_callback(&app, &receiver).await;
    let body = until_status(&app, &event, "pending").await;
    assert_eq!(body["summary"]["event_status"], "Pending");
    assert!(receiver.posts().is_empty());
    // The device finishes the scan (ten seconds later, on a real device).
    app.sim.complete_action(&event, "Succeeded", None).unwrap();
    receiver
        .wait_until("the callback", Duration::from_secs(30), |r| {
            !r.posts().is_empty()
        })
        .await;
    until_status(&app, &event, "delivered").await;
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1, "exactly once");
    let post = &posts[0];
    assert!(post.signature_ok, "signed with the named secret");
    assert!(post.accepted);
    let envelope = &post.body;
    assert_eq!(envelope["action"], "get_status", "{envelope}");
    assert_eq!(envelope["status"], "success");
    assert_eq!(envelope["summary"]["event_id"], json!(event));
    assert_eq!(envelope["summary"]["event_status"], "Succeeded");
    // Nothing more arrives, and the secret is nowhere in what the host says.
    let (_, status) = app
        .invoke("contoso", "get_status", json!({"event_id": event}))
        .await;
    assert_eq!(receiver.posts().len(), 1);
    assert!(!status.to_string().contains(SECRET));
    assert!(!String::from_utf8_lossy(&logs().lock().unwrap()).contains(SECRET));
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_callback_after_retries() {
    let app = host(true).await;
    let receiver = Receiver::start(SECRET).await;
    receiver.set_failing(true);
    let event = scan_with_callback(&app, &receiver).await;
    app.sim.complete_action(&event, "Failed", None).unwrap();
    receiver
        .wait_until("three refused callbacks", Duration::from_secs(60), |r| {
            r.refused() >= 3
        })
        .await;
    until_status(&app, &event, "failing").await;
    receiver.set_failing(false);
    receiver
        .wait_until("an accepted callback", Duration::from_secs(60), |r| {
            r.posts().iter().any(|p| p.accepted)
        })
        .await;
    until_status(&app, &event, "delivered").await;
    let accepted: Vec<_> = receiver
        .posts()
        .into_iter()
        .filter(|p| p.accepted)
        .collect();
    assert_eq!(accepted.len(), 1);
    // get_status's envelope: the status was read; the scan failed.
    assert_eq!(accepted[0].body["action"], "get_status");
    assert_eq!(accepted[0].body["summary"]["event_status"], "Failed");
    assert!(accepted[0].signature_ok);
}

#[tokio::test]
async fn a_get_file_callback_carries_the_vault_id() {
    // Default timings: the live response takes three seconds, the answer comes after one.
    let app = host(false).await;
    let receiver = Receiver::start(SECRET).await;
    let (status, body) = app
        .invoke(
            "contoso",
            "get_file",
            json!({"device_id": DEV, "file_path": HOSTS, "comment": "evidence", "timeout": 1,
                   "callback_url": receiver.url, "callback_secret_ref": "n8n"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["callback"], "pending", "{body}");
    receiver
        .wait_until("the callback", Duration::from_secs(60), |r| {
            !r.posts().is_empty()
        })
        .await;
    let envelope = receiver.posts()[0].body.clone();
    assert_eq!(envelope["action"], "get_file", "{envelope}");
    assert_eq!(envelope["status"], "success", "{envelope}");
    let vault_id = envelope["summary"]["vault_id"].as_str().unwrap();
    let (status, content) = app.get(&format!("/vault/{vault_id}")).await;
    assert_eq!(status, 200);
    assert!(content.contains("dc01.contoso.com"));
}

#[tokio::test]
async fn a_callback_the_host_may_not_make_is_refused_before_anything_is_sent() {
    let app = host(true).await;
    for (params, named) in [
        (
            json!({"callback_url": "http://hooks.example.com/x"}),
            "callback_hosts",
        ),
        (
            json!({"callback_url": "https://user:pw@hooks.example.com/x"}),
            "callback_url",
        ),
        (
            json!({"callback_url": "https://hooks.example.com/x", "callback_secret_ref": "other"}),
            "callback_secret_ref",
        ),
        (json!({"callback_secret_ref": "n8n"}), "callback_url"),
    ] {
        let mut p = json!({"device_id": DEV, "scan_type": "Quick", "comment": "x", "timeout": 1});
        for (k, v) in params.as_object().unwrap() {
            p[k] = v.clone();
        }
        let (status, body) = app.invoke("contoso", "scan_device", p).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{named}: {body}"
        );
    }
    // An action that answers at once takes no callback.
    let (status, body) = app
        .invoke(
            "contoso",
            "list_devices",
            json!({"callback_url": "https://hooks.example.com/x"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        app.sim
            .counters()
            .route("POST", "/api/machines/{id}/runantivirusscan"),
        0
    );
}
