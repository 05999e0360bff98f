//! Crash test of alert ingestion: the host runs as a child process (`defender-soar serve`) with
//! ingestion and a webhook on an in-process simulator that keeps creating alerts (many sharing
//! one timestamp). It is killed with SIGKILL at random moments twenty times — during start-up,
//! polls, journal writes and webhook deliveries — and started again on the same state
//! directory each time. Afterwards every alert has reached the receiver, and an event the
//! receiver acknowledged came again only when it was in the one batch whose acknowledgement the
//! killed host may not have recorded; the journal (the feed) holds each event exactly once.

#[path = "support/alert_feed.rs"]
mod alert_feed;
#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use alert_feed::{create_alerts, feed};
use defender_sim::Scenario;
use host_process::{HostProcess, More, serve_contoso};
use rand::{Rng, SeedableRng};
use serde_json::json;
use webhook_receiver::Receiver;

const API_KEY: &str = "ingestion-crash-api-key-9e2f";
const HOOK_SECRET_ENV: &str = "INGESTION_CRASH_HOOK_SECRET";
const HOOK_SECRET: &str = "ingestion-crash-hook-secret-51b7";
const KILLS: usize = 20;

fn start_host(
    dir: &Path,
    run: usize,
    scenario: &Scenario,
    sim_base: &str,
    hook: &str,
) -> HostProcess {
    let ingestion = format!(
        "[assets.contoso.ingestion]\nenabled = true\ninterval_secs = 10\nmax_per_poll = 150\n\n\
         [[assets.contoso.ingestion.webhooks]]\nurl = \"{hook}\"\nsecret_env = \"{HOOK_SECRET_ENV}\"\n\
         batch_size = 40\nretry_max_secs = 1\n"
    );
    serve_contoso(
        dir,
        &format!("host-{run}"),
        scenario,
        sim_base,
        API_KEY,
        More {
            asset: &ingestion,
            env: &[(HOOK_SECRET_ENV, HOOK_SECRET)],
            ..More::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_survives_twenty_kills_without_losing_or_repeating_acknowledged_alerts() {
    let seed: u64 = std::env::var("INGESTION_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    eprintln!("INGESTION_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let scenario = Scenario::default_scenario();
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let base = sim.base_url();
    let client = reqwest::Client::new();
    let receiver = Receiver::start(HOOK_SECRET).await;
    let dir = tempfile::tempdir().unwrap();

    let mut created: Vec<String> = Vec::new();
    created.extend(
        create_alerts(
            &client,
            &base,
            json!({"count": 200, "same_timestamp": true}),
        )
        .await,
    );
    created.extend(create_alerts(&client, &base, json!({"count": 800})).await);

    let mut acked_before = 0usize;
    for run in 0..KILLS {
        let mut host = start_host(dir.path(), run, &scenario, &base, &receiver.url);
        // Alerts keep coming, some of them sharing a timestamp.
        let same = rng.gen_bool(0.5);
        created.extend(
            create_alerts(
                &client,
                &base,
                json!({"count": rng.gen_range(10..60), "same_timestamp": same}),
            )
            .await,
        );
        if run % 2 == 0 {
            // Anywhere: start-up, a poll, a journal write, a delivery.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(50..1500))).await;
        } else {
            // Just after a delivery reached the receiver.
            let posts = receiver.posts().len();
            receiver
                .wait_until("a delivery", Duration::from_secs(30), |r| {
                    r.posts().len() > posts
                })
                .await;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
        }
        host.kill();
        acked_before = receiver.acked_keys().len();
    }

    // The kills hit hosts that were delivering, not only hosts starting up.
    assert!(
        acked_before >= 100,
        "seed {seed}: only {acked_before} events were delivered before the last kill"
    );
    let killed_posts = receiver.posts();

    // A last host runs to the end.
    let mut host = start_host(dir.path(), KILLS, &scenario, &base, &receiver.url);
    host.wait_ready(&client).await;
    let ids: HashSet<&str> = created.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got: HashSet<String> = receiver
            .posts()
            .iter()
            .filter(|p| p.accepted)
            .flat_map(|p| p.events.iter())
            .filter_map(|e| e["alert"]["id"].as_str().map(str::to_string))
            .collect();
        if ids.iter().all(|id| got.contains(*id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seed {seed}: {} of {} alerts reached the receiver:\n{}",
            ids.iter().filter(|id| got.contains(**id)).count(),
            ids.len(),
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each killed host's last acknowledged batch is in doubt: the host may have died before it
    // recorded the acknowledgement (possibly before the receiver even read the request), so
    // those events, and only those, may come again. A host keeps one connection, so its posts
    // are the consecutive ones from one address.
    let mut in_doubt: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<&webhook_receiver::Post>> = Vec::new();
    for p in &killed_posts {
        match groups.last_mut() {
            Some(g) if g[0].peer == p.peer => g.push(p),
            _ => groups.push(vec![p]),
        }
    }
    for g in &groups {
        if let Some(last) = g.iter().rev().find(|p| p.accepted) {
            for k in &last.keys {
                *in_doubt.entry(k.clone()).or_insert(0) += 1;
            }
        }
    }
    eprintln!(
        "{acked_before} events acknowledged across {KILLS} kills in {} connections; {} in doubt",
        groups.len(),
        in_doubt.len()
    );
    // Acknowledged events came again only from the batches in doubt.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for k in receiver.acked_keys() {
        *counts.entry(k).or_insert(0) += 1;
    }
    for (key, n) in &counts {
        let allowed = 1 + in_doubt.get(key).copied().unwrap_or(0);
        assert!(
            *n <= allowed,
            "seed {seed}: {key} was acknowledged {n} times (allowed {allowed})"
        );
    }
    assert!(receiver.posts().iter().all(|p| p.signature_ok));
    let repeated: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("{repeated} acknowledged events came again");

    // The journal holds each event once, and every alert.
    let events = feed(&client, &host, API_KEY).await;
    let mut keys: Vec<&str> = events
        .iter()
        .map(|e| e["event_key"].as_str().unwrap())
        .collect();
    let total = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        total,
        "seed {seed}: the journal repeats an event"
    );
    let journaled: HashSet<&str> = events
        .iter()
        .filter_map(|e| e["alert"]["id"].as_str())
        .collect();
    assert!(ids.iter().all(|id| journaled.contains(id)), "seed {seed}");
    host.kill();
}
