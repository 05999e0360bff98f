//! Crash test of completion callbacks: the host runs as a child process (`defender-soar
//! serve`) against an in-process simulator whose device acts only when the test says so. A
//! scan with a callback is answered while still pending, the host is killed with SIGKILL, the
//! scan finishes while no host runs, and a new host on the same state directory delivers the
//! callback — once, signed.

#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::path::Path;
use std::time::Duration;

use defender_sim::Scenario;
use host_process::{HostProcess, More, serve_contoso};
use serde_json::{Value, json};
use webhook_receiver::Receiver;

const API_KEY: &str = "callback-crash-api-key-77c2";
const HOOK_ENV: &str = "CALLBACK_CRASH_SIGNING_SECRET";
const HOOK_SECRET: &str = "callback-crash-signing-secret-0b4d";
const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";

fn start_host(dir: &Path, run: u32, scenario: &Scenario, sim_base: &str) -> HostProcess {
    serve_contoso(
        dir,
        &format!("host-{run}"),
        scenario,
        sim_base,
        API_KEY,
        More {
            server: &format!("\n[server.callback_secrets]\nn8n = \"{HOOK_ENV}\"\n"),
            env: &[(HOOK_ENV, HOOK_SECRET)],
            ..More::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_owed_by_a_killed_host_is_delivered_after_restart() {
    let mut scenario = Scenario::default_scenario();
    scenario.timings.manual = true;
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let receiver = Receiver::start(HOOK_SECRET).await;

    let mut first = start_host(dir.path(), 1, &scenario, &sim.base_url());
    first.wait_ready(&client).await;
    let answer: Value = client
        .post(first.url("/assets/contoso/actions/scan_device"))
        .bearer_auth(API_KEY)
        .json(&json!({"parameters": {
            "device_id": DEV, "scan_type": "Full", "comment": "crash test", "timeout": 1,
            "callback_url": receiver.url,
        }}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["summary"]["callback"],
        "pending",
        "{answer}\n{}",
        first.log()
    );
    let event = answer["summary"]["event_id"].as_str().unwrap().to_string();
    // Killed between the answer and the final status.
    first.kill();
    assert!(receiver.posts().is_empty());
    sim.complete_action(&event, "Succeeded", None).unwrap();

    let mut second = start_host(dir.path(), 2, &scenario, &sim.base_url());
    second.wait_ready(&client).await;
    receiver
        .wait_until("the callback", Duration::from_secs(60), |r| {
            !r.posts().is_empty()
        })
        .await;
    // Delivered: get_status says so, and nothing more arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = client
            .post(second.url("/assets/contoso/actions/get_status"))
            .bearer_auth(API_KEY)
            .json(&json!({"parameters": {"event_id": event}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["summary"]["callback"] == "delivered" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1, "exactly once");
    assert!(posts[0].signature_ok && posts[0].accepted);
    assert_eq!(posts[0].body["summary"]["event_id"], json!(event));
    assert_eq!(posts[0].body["summary"]["event_status"], "Succeeded");
    second.kill();
}
