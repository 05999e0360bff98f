//! Hosts sharing one Redis (`[server.state] backend = "redis"`): one token for a burst over
//! both, an Idempotency-Key resumed on the other host, Redis restarted under load, and
//! `migrate-state` both ways.

use defender_sim::{Scenario, SimHandle};
use defender_soar::config::{Config, StateBackend};
use defender_soar::ingest::journal::{Event, EventKind, Journal, journal_path};
use defender_soar::ingest::redis_journal::RedisJournal;
use defender_soar::state::{AssetState, StateStore, StoredTokens};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::redis_server::RedisServer;

const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
/// The scenario's second machine.
const DEV2: &str = "8cfcc2dff88df3eed6a4227926412e6147aff567";
const LR_ROUTE: &str = "/api/machines/{id}/runliveresponse";

/// A simulator, a Redis and the configuration of hosts sharing it (one `contoso` asset).
struct Shared {
    sim: SimHandle,
    redis: RedisServer,
    dir: tempfile::TempDir,
    config: Config,
}

impl Shared {
    /// `None` when Redis is not installed outside CI (the test is skipped).
    async fn new(scenario: Scenario) -> Option<Shared> {
        let redis = RedisServer::start()?;
        capture_logs();
        let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml_str("").unwrap();
        config.server.state_dir = dir.path().to_path_buf();
        config.server.state.backend = StateBackend::Redis;
        config.server.state.redis_url = Some(SecretString::from(redis.url()));
        config.server.state.key_prefix = "test".into();
        let a = asset("contoso", &scenario, &sim.base_url());
        config.budgets.insert(
            a.id.clone(),
            defender_soar::config::BudgetConfig {
                default: defender_soar::config::RateLimit::new(1_000_000, None),
                ..defender_soar::config::BudgetConfig::STANDARD
            },
        );
        config.assets.insert(a.id.clone(), a);
        Some(Shared {
            sim,
            redis,
            dir,
            config,
        })
    }

    async fn host(&self) -> Host {
        start_host(self.config.clone()).await
    }

    /// The Redis store as the hosts see it.
    fn store(&self) -> StateStore {
        let link = defender_soar::redis_link::RedisLink::of(&self.config.server.state)
            .unwrap()
            .unwrap();
        StateStore::open(self.dir.path())
            .unwrap()
            .with_redis(std::sync::Arc::new(link))
    }

    fn tokens_issued(&self) -> u64 {
        self.sim
            .counters()
            .tokens_issued
            .get("client_credentials")
            .copied()
            .unwrap_or(0)
    }
}

/// POST an action with an optional Idempotency-Key; (status, envelope).
async fn call(host: &Host, action: &str, params: Value, key: Option<&str>) -> (u16, Value) {
    let mut req = host
        .client
        .post(host.url(&format!("/assets/contoso/actions/{action}")))
        .bearer_auth(API_KEY)
        .json(&json!({ "parameters": params }));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_over_two_hosts_requests_one_token() {
    // Defender's own rate limit is not what this test is about.
    let mut scenario = Scenario::default_scenario();
    scenario.rate_limits.disabled = true;
    let Some(shared) = Shared::new(scenario).await else {
        return;
    };
    let a = shared.host().await;
    let b = shared.host().await;
    let calls = (0..1000).map(|i| {
        let host = if i % 2 == 0 { &a } else { &b };
        async move { call(host, "list_devices", json!({"limit": 1}), None).await }
    });
    let answers = futures::future::join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    assert_eq!(shared.tokens_issued(), 1, "one token for both hosts");
    // Each host announces itself: the admin console of either lists both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let server = defender_soar::overview::server(&a.app).await;
        assert!(
            server.state_backend.starts_with("redis"),
            "{}",
            server.state_backend
        );
        let hosts = server.hosts.unwrap().unwrap();
        let urls: Vec<&str> = hosts.iter().map(|h| h.public_url.as_str()).collect();
        if urls.contains(&a.url("/").as_str()) && urls.contains(&b.url("/").as_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hosts listed: {urls:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The pair is in Redis, not in a state file.
    let stored = shared.store().load("contoso").await.unwrap();
    assert!(stored.tokens.is_some());
    assert!(!shared.dir.path().join("contoso_state.json").exists());
}

#[tokio::test]
async fn an_idempotency_key_retried_on_the_other_host_resumes_the_same_live_response() {
    let Some(shared) = Shared::new(manual()).await else {
        return;
    };
    let a = shared.host().await;
    let b = shared.host().await;
    let params = json!({"device_id": DEV, "script_name": "collect-triage.ps1", "comment": "IR-1", "timeout": 1});
    let (status, first) = call(&a, "run_script", params.clone(), Some("pb-run-42")).await;
    assert_eq!(status, 200, "{first}");
    let event = first["summary"]["event_id"].as_str().unwrap().to_string();
    // The retry lands on the other host: the same live response, nothing new sent.
    let (status, again) = call(&b, "run_script", params.clone(), Some("pb-run-42")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["summary"]["event_id"], event.as_str(), "{again}");
    assert_eq!(again["summary"]["idempotent_replay"], true, "{again}");
    assert_eq!(shared.sim.counters().route("POST", LR_ROUTE), 1);
    // Concurrent first requests with one new key over both hosts (another device): the key is
    // claimed across hosts, so one request is sent and the other resumes it.
    let other = json!({"device_id": DEV2, "script_name": "collect-triage.ps1", "comment": "IR-1", "timeout": 1});
    let (x, y) = tokio::join!(
        call(&a, "run_script", other.clone(), Some("pb-run-43")),
        call(&b, "run_script", other.clone(), Some("pb-run-43")),
    );
    assert_eq!(
        x.1["summary"]["event_id"], y.1["summary"]["event_id"],
        "{} {}",
        x.1, y.1
    );
    assert_eq!(
        shared.sim.counters().route("POST", LR_ROUTE),
        2,
        "one POST per key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_mid_run_loses_no_token_and_actions_resume() {
    let Some(mut shared) = Shared::new(Scenario::default_scenario()).await else {
        return;
    };
    let a = shared.host().await;
    let b = shared.host().await;
    for host in [&a, &b] {
        let (status, body) = call(host, "list_devices", json!({"limit": 1}), None).await;
        assert_eq!(status, 200, "{body}");
    }
    let before = shared.store().load("contoso").await.unwrap();
    let token = before.tokens.clone().unwrap();

    // Redis goes away: an action that needs the state says so, nothing is corrupted.
    shared.redis.kill();
    let down = b.app.state.load("contoso").await;
    assert!(down.is_err(), "no state while Redis is down");
    let message = down.unwrap_err().to_string();
    assert!(message.contains("Redis"), "{message}");
    assert!(!message.contains(&shared.redis.url()), "{message}");
    // The admin console says what is wrong.
    let views = defender_soar::overview::assets(&b.app, |_| true).await;
    assert_eq!(views[0].connection.code(), "state_broken");
    assert!(views[0].advice.contains("Redis"), "{}", views[0].advice);

    shared.redis.restart();
    // Back: the same token pair, decrypted intact, and both hosts work without a new token.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for host in [&a, &b] {
        loop {
            let (status, body) = call(host, "list_devices", json!({"limit": 1}), None).await;
            if status == 200 && body["status"] == "success" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no recovery: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let after = shared.store().load("contoso").await.unwrap();
    let again = after.tokens.unwrap();
    assert_eq!(
        again.access_token.expose_secret(),
        token.access_token.expose_secret()
    );
    assert_eq!(shared.tokens_issued(), 1);
}

#[tokio::test]
async fn a_final_status_seen_on_one_host_is_answered_by_the_other_without_a_call() {
    let mut scenario = Scenario::default_scenario();
    scenario.timings.pending_ms = 0;
    scenario.timings.in_progress_ms = 0;
    let Some(shared) = Shared::new(scenario).await else {
        return;
    };
    let a = shared.host().await;
    let b = shared.host().await;
    let (status, isolated) = call(
        &a,
        "quarantine_device",
        json!({"device_id": DEV, "comment": "IR-2", "timeout": 30}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{isolated}");
    assert_eq!(isolated["status"], "success", "{isolated}");
    let event = isolated["summary"]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Host A shares the final action in the background: wait until it is in Redis.
    let client = redis::Client::open(shared.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("test:final:contoso:{}", event.to_ascii_lowercase());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let held: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if held.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never shared");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = shared
        .sim
        .counters()
        .route("GET", "/api/machineactions/{id}");
    let (status, body) = call(&b, "get_status", json!({"event_id": event}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["event_status"], "Succeeded", "{body}");
    assert_eq!(
        shared
            .sim
            .counters()
            .route("GET", "/api/machineactions/{id}"),
        before,
        "host B asked Defender nothing"
    );
}

#[tokio::test]
async fn one_host_checks_an_in_flight_action_for_every_host() {
    let Some(shared) = Shared::new(manual()).await else {
        return;
    };
    let a = shared.host().await;
    let b = shared.host().await;
    // Host A submits and follows the isolation for a second: it takes the action's checks.
    let (status, pending) = call(
        &a,
        "quarantine_device",
        json!({"device_id": DEV, "comment": "IR-3", "timeout": 1}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{pending}");
    let event = pending["summary"]["event_id"].as_str().unwrap().to_string();
    // Host B follows it too: it reads what host A published and asks Defender nothing.
    let calls_before = b.app.assets["contoso"].defender.budget().usage()[0].last_minute;
    let (status, body) = call(&b, "get_status", json!({"event_id": event}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["event_status"], "Pending", "{body}");
    let calls_after = b.app.assets["contoso"].defender.budget().usage()[0].last_minute;
    assert_eq!(calls_after, calls_before, "host B made no Defender call");
}

/// A state worth migrating: tokens, an idempotency record, a checkpoint.
fn sample_state() -> AssetState {
    let mut s = AssetState {
        tokens: Some(StoredTokens {
            access_token: SecretString::from("access-token-sample-0001".to_string()),
            refresh_token: Some(SecretString::from("refresh-token-sample-0001".to_string())),
            expires_at: 2_000_000_000,
            obtained_at: 1_900_000_000,
            grant: "authorization_code".into(),
            scope: None,
        }),
        ..AssetState::default()
    };
    s.checkpoints.insert("feed".into(), json!({"cursor": 42}));
    s
}

#[tokio::test]
async fn migrate_state_copies_both_ways_and_leaves_the_source_untouched() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let files_dir = tempfile::tempdir().unwrap();
    let back_dir = tempfile::tempdir().unwrap();
    let key = [7u8; 32];
    let key_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key)
    };
    let files = StateStore::with_key(files_dir.path(), key).unwrap();
    for asset in ["alpha", "beta"] {
        files
            .replace_and_verify(asset, sample_state())
            .await
            .unwrap();
    }
    let source_bytes = std::fs::read(files_dir.path().join("alpha_state.json")).unwrap();
    // alpha ingests alerts: its journal goes along, with its sequence numbers.
    let journal_file = journal_path(files_dir.path(), "alpha");
    let events: Vec<Event> = (1..=3)
        .map(|i| Event {
            event_key: format!("da{i}@2026-11-01T00:00:0{i}Z"),
            kind: EventKind::Created,
            asset: "alpha".into(),
            source: "graph".into(),
            alert: json!({"id": format!("da{i}"), "title": "<script>x</script>"}),
        })
        .collect();
    Journal::open(&journal_file, 100)
        .unwrap()
        .append(&events)
        .unwrap();
    let journal_bytes = std::fs::read(&journal_file).unwrap();
    let journal_copy = Journal::open(&journal_file, 100).unwrap().export().unwrap();

    let config_for = |dir: &std::path::Path| {
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nstate_dir = {:?}\n[server.state]\nredis_url_env = \"MIGRATE_TEST_REDIS\"\nkey_prefix = \"migrate\"\n",
                dir.display().to_string()
            ),
        )
        .unwrap();
        path
    };
    let run = |config: std::path::PathBuf, to: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_defender-soar"))
            .args(["migrate-state", "--to", to, "--config"])
            .arg(&config)
            .env("MIGRATE_TEST_REDIS", redis.url())
            .env("DEFENDER_SOAR_STATE_KEY", &key_b64)
            .output()
            .unwrap()
    };
    let out = run(config_for(files_dir.path()), "redis");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 asset(s) copied from files to redis and verified"),
        "{text}"
    );
    assert!(!text.contains("access-token-sample"), "{text}");
    assert_eq!(
        std::fs::read(files_dir.path().join("alpha_state.json")).unwrap(),
        source_bytes,
        "the source is untouched"
    );
    let state = defender_soar::config::StateBackendConfig {
        redis_url: Some(SecretString::from(redis.url())),
        key_prefix: "migrate".into(),
        ..Default::default()
    };
    let link = defender_soar::redis_link::RedisLink::of(&state)
        .unwrap()
        .unwrap();
    let in_redis = StateStore::with_key(back_dir.path(), key)
        .unwrap()
        .with_redis(std::sync::Arc::new(link));
    assert_eq!(in_redis.assets().await.unwrap(), vec!["alpha", "beta"]);
    assert!(
        text.contains("alpha: alert journal (3 events) copied and verified"),
        "{text}"
    );
    assert_eq!(std::fs::read(&journal_file).unwrap(), journal_bytes);
    let link = defender_soar::redis_link::RedisLink::of(&state)
        .unwrap()
        .unwrap();
    let redis_journal = RedisJournal::new(std::sync::Arc::new(link), "alpha", 100);
    let exported = redis_journal.export().await.unwrap();
    assert!(exported.same_as(&journal_copy));
    assert_eq!(exported.last_seq(), 3);
    assert!(
        in_redis
            .load("beta")
            .await
            .unwrap()
            .same_as(&sample_state())
    );

    // And back, into another directory.
    let out = run(config_for(back_dir.path()), "files");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let back = StateStore::with_key(back_dir.path(), key).unwrap();
    let back_journal = Journal::open(&journal_path(back_dir.path(), "alpha"), 100)
        .unwrap()
        .export()
        .unwrap();
    assert!(back_journal.same_as(&journal_copy));
    assert!(back.load("alpha").await.unwrap().same_as(&sample_state()));
    assert!(
        in_redis
            .load("alpha")
            .await
            .unwrap()
            .same_as(&sample_state())
    );
}

#[tokio::test]
async fn the_console_names_the_ingestion_lease_holder() {
    let Some(mut shared) = Shared::new(Scenario::default_scenario()).await else {
        return;
    };
    shared.config.ingestion.insert(
        "contoso".into(),
        defender_soar::config::IngestionConfig {
            enabled: true,
            interval_secs: 3600,
            ..Default::default()
        },
    );
    shared.config.server.state.lease_secs = 2;
    let a = shared.host().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let views = defender_soar::overview::assets(&a.app, |_| true).await;
        let lease = views[0].ingestion.as_ref().unwrap().lease.clone().unwrap();
        if lease == "this host polls and delivers" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lease}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A second host sees the first one holding it.
    let b = shared.host().await;
    let views = defender_soar::overview::assets(&b.app, |_| true).await;
    let lease = views[0].ingestion.as_ref().unwrap().lease.clone().unwrap();
    assert!(
        lease.starts_with(&format!("the host {}", a.url("/"))),
        "{lease}"
    );
}
