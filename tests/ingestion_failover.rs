//! Ingestion failover across hosts: two `defender-soar serve` processes on one Redis ingest the
//! same asset; only the holder of the ingestion lease polls and delivers. The holder is killed
//! with SIGKILL; the other host takes the lease over and delivers the alerts created after
//! the kill. Every alert reaches the webhook exactly once by event key, and the feed of the
//! surviving host holds every event of both.

#[path = "support/alert_feed.rs"]
mod alert_feed;
#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alert_feed::{create_alerts, feed};
use defender_sim::Scenario;
use host_process::{HostProcess, More, serve_contoso};
use redis_server::RedisServer;
use serde_json::{Value, json};
use webhook_receiver::Receiver;

const API_KEY: &str = "ingestion-failover-api-key-2c4d";
const HOOK_SECRET_ENV: &str = "INGESTION_FAILOVER_HOOK_SECRET";
const HOOK_SECRET: &str = "ingestion-failover-hook-secret-77a1";
const REDIS_ENV: &str = "INGESTION_FAILOVER_REDIS";
const LEASE_SECS: u64 = 2;

/// Who holds the ingestion lease (`<public_url> <instance>`), read from Redis directly.
async fn lease_holder(redis: &RedisServer) -> Option<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg("failover:lease:ingest:contoso")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_host_takes_ingestion_over_when_the_lease_holder_is_killed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let scenario = Scenario::default_scenario();
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let base = sim.base_url();
    let client = reqwest::Client::new();
    let receiver = Receiver::start(HOOK_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let server = format!(
        "\n[server.state]\nbackend = \"redis\"\nredis_url_env = \"{REDIS_ENV}\"\nkey_prefix = \"failover\"\nlease_secs = {LEASE_SECS}\n"
    );
    let asset = format!(
        "[assets.contoso.ingestion]\nenabled = true\ninterval_secs = 10\n\n\
         [[assets.contoso.ingestion.webhooks]]\nurl = \"{}\"\nsecret_env = \"{HOOK_SECRET_ENV}\"\n\
         batch_size = 25\nretry_max_secs = 1\n",
        receiver.url
    );
    let redis_url = redis.url();
    let env = [
        (HOOK_SECRET_ENV, HOOK_SECRET),
        (REDIS_ENV, redis_url.as_str()),
    ];
    // Both hosts share the state directory's key file (state and audit), and the Redis.
    let start = |name: &str| {
        serve_contoso(
            dir.path(),
            name,
            &scenario,
            &base,
            API_KEY,
            More {
                server: &server,
                asset: &asset,
                env: &env,
            },
        )
    };
    let mut a = start("host-a");
    a.wait_ready(&client).await;
    let mut b = start("host-b");
    b.wait_ready(&client).await;

    // Phase 1: alerts delivered by whichever host holds the lease.
    let first = create_alerts(&client, &base, json!({"count": 60})).await;
    receiver
        .wait_for_keys(first.len(), Duration::from_secs(60))
        .await;
    let holder = lease_holder(&redis).await.expect("a lease holder");
    let (mut leader, mut other) = if holder.starts_with(&a.url("")) {
        (a, b)
    } else {
        assert!(holder.starts_with(&b.url("")), "{holder}");
        (b, a)
    };
    // Wait until the leader recorded its cursor past every event, so the kill does not fall
    // between an acknowledged POST and its record (that window is at-least-once by design).
    let posts_before = receiver.posts().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let fed = feed(&client, &other, API_KEY).await;
        let last_seq = fed.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
        let state = state_cursor(&client, &other).await;
        if state >= last_seq && last_seq >= first.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cursor {state}, journal {last_seq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leader.kill();

    // Phase 2: new alerts after the kill reach the receiver through the other host.
    let second = create_alerts(&client, &base, json!({"count": 40})).await;
    receiver
        .wait_for_keys(first.len() + second.len(), Duration::from_secs(60))
        .await;
    let holder = lease_holder(&redis).await.expect("a lease holder");
    assert!(
        holder.starts_with(&other.url("")),
        "the survivor holds the lease: {holder}"
    );
    assert!(receiver.posts().len() > posts_before);

    // Exactly once by event key, every alert, every signature valid.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for post in receiver.posts() {
        assert!(post.signature_ok);
        if post.accepted {
            for key in post.keys {
                *seen.entry(key).or_default() += 1;
            }
        }
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    let alerts: HashSet<String> = seen
        .keys()
        .map(|k| k.split('@').next().unwrap().to_string())
        .collect();
    for id in first.iter().chain(&second) {
        assert!(alerts.contains(id), "alert {id} never delivered");
    }
    // The survivor's feed (the shared journal) holds each event once.
    let fed = feed(&client, &other, API_KEY).await;
    let keys: HashSet<&str> = fed.iter().filter_map(|e| e["event_key"].as_str()).collect();
    assert_eq!(keys.len(), fed.len());
    assert!(fed.len() >= first.len() + second.len());
    other.kill();
}

/// The webhook's delivery cursor as the host reports it (`ingestion_status`).
async fn state_cursor(client: &reqwest::Client, host: &HostProcess) -> u64 {
    let resp = client
        .post(host.url("/assets/contoso/actions/ingestion_status"))
        .bearer_auth(API_KEY)
        .json(&json!({"parameters": {}}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["data"][0]["webhooks"]
        .as_array()
        .and_then(|w| w.first())
        .and_then(|w| w["cursor"].as_u64())
        .unwrap_or(0)
}
