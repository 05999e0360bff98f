//! Crash test of the live response idempotency: the host runs as a child process
//! (`defender-soar serve`) against an in-process simulator whose device is slow (actions move
//! only when the test moves them). A get_file with an `Idempotency-Key` is sent, the host is
//! killed with SIGKILL while it waits, the live response completes, a new host starts on the
//! same state directory, and the same request returns the file — with exactly one
//! runliveresponse POST seen by the simulator.

#[path = "support/host_process.rs"]
mod host_process;

use std::path::Path;
use std::time::{Duration, Instant};

use host_process::{HostProcess, More, serve_contoso};

use defender_sim::Scenario;
use serde_json::{Value, json};

const API_KEY: &str = "crash-test-api-key-4c1d";
const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
const HOSTS: &str = "C:\\Windows\\System32\\drivers\\etc\\hosts";
const HOSTS_CONTENT: &str = "127.0.0.1 localhost\n10.0.0.10 dc01.contoso.com\n";
const LR_ROUTE: &str = "/api/machines/{id}/runliveresponse";
const KEY: &str = "crash-test-get-file-1";

/// Starts `defender-soar serve` with one asset on the simulator.
fn start_host(dir: &Path, run: u32, scenario: &Scenario, sim_base: &str) -> HostProcess {
    let name = format!("host-{run}");
    serve_contoso(dir, &name, scenario, sim_base, API_KEY, More::default())
}

/// Polls `cond` every 10 ms for up to 20 s.
async fn until(what: &str, host: &HostProcess, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The get_file request, with the Idempotency-Key.
fn get_file(client: &reqwest::Client, host: &HostProcess, timeout: u64) -> reqwest::RequestBuilder {
    client
        .post(host.url("/assets/contoso/actions/get_file"))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", KEY)
        .json(&json!({"parameters": {
            "device_id": DEV,
            "file_path": HOSTS,
            "comment": "crash test",
            "timeout": timeout
        }}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_host_resumes_the_same_live_response_after_restart() {
    let mut scenario = Scenario::default_scenario();
    scenario.timings.manual = true;
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();

    // First host: the request starts a live response on a device that does not answer.
    let mut first = start_host(dir.path(), 1, &scenario, &sim.base_url());
    first.wait_ready(&client).await;
    let request = get_file(&client, &first, 3600).send();
    let in_flight = tokio::spawn(request);
    until("the runliveresponse POST", &first, || {
        sim.counters().route_status("POST", LR_ROUTE, 201) == 1
    })
    .await;
    let event = {
        let w = sim.world();
        let ids: Vec<String> = w
            .actions
            .iter()
            .filter(|a| a.action_type == "LiveResponse")
            .map(|a| a.id.clone())
            .collect();
        assert_eq!(ids.len(), 1);
        ids[0].clone()
    };
    // The host records the key before it starts waiting; its first status check of the event
    // shows that the record is durable.
    let status_path = format!("/api/machineactions/{event}");
    until(
        "the first status check of the live response",
        &first,
        || sim.counters().path("GET", &status_path) > 0,
    )
    .await;
    first.kill();
    let _ = in_flight.await;

    // The device answers while no host runs.
    sim.complete_action(&event, "Succeeded", None).unwrap();

    // Second host, same state directory: the repeated request resumes the same live response.
    let mut second = start_host(dir.path(), 2, &scenario, &sim.base_url());
    second.wait_ready(&client).await;
    let resp = get_file(&client, &second, 60).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "success", "{body}\n{}", second.log());
    assert_eq!(body["summary"]["event_id"], event.as_str());
    assert_eq!(body["summary"]["idempotent_replay"], true);
    assert_eq!(body["summary"]["file_name"], "hosts");
    let vault_id = body["summary"]["vault_id"].as_str().unwrap().to_string();
    let file = client
        .get(second.url(&format!("/vault/{vault_id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status().as_u16(), 200);
    assert_eq!(file.text().await.unwrap(), HOSTS_CONTENT);

    let counters = sim.counters();
    assert_eq!(
        counters.route("POST", LR_ROUTE),
        1,
        "exactly one runliveresponse POST: {:?}",
        counters.by_route
    );
    second.kill();
}
