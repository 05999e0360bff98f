//! One request budget per app registration: assets of one (tenant, client id) share it on one
//! host, and with `[server.state] backend = "redis"` every host shares it too; a host that
//! loses Redis keeps to its fallback share and says so in `/readyz`.

use std::time::{Duration, Instant};

use defender_sim::{Scenario, SimHandle};
use defender_soar::config::{BudgetConfig, Config, RateLimit, StateBackend};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::redis_server::RedisServer;

/// A simulator answering 429 past `per_minute` Defender API calls a minute per registration.
async fn simulator(per_minute: u32) -> (SimHandle, Scenario) {
    capture_logs();
    let mut scenario = Scenario::default_scenario();
    scenario.rate_limits.default.per_minute = per_minute;
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    (sim, scenario)
}

/// `per_minute` Defender API calls a minute, Microsoft's limits otherwise.
fn budget_per_minute(per_minute: u32) -> BudgetConfig {
    BudgetConfig {
        default: RateLimit::new(per_minute, Some(1500)),
        ..BudgetConfig::STANDARD
    }
}

/// A configuration with the assets `ids`, all on the simulator's first registration (the
/// tenant and client ids spelt in upper case for every other one), each with `budget`.
fn config_with(
    sim: &SimHandle,
    scenario: &Scenario,
    dir: &std::path::Path,
    ids: &[&str],
    budget: BudgetConfig,
) -> Config {
    let mut config = Config::from_toml_str("").unwrap();
    config.server.state_dir = dir.to_path_buf();
    for (i, id) in ids.iter().enumerate() {
        let mut a = asset(id, scenario, &sim.base_url());
        if i % 2 == 1 {
            a.tenant_id = a.tenant_id.to_uppercase();
            a.client_id = a.client_id.to_uppercase();
        }
        config.assets.insert(id.to_string(), a);
        config.budgets.insert(id.to_string(), budget);
    }
    config
}

/// Two state directories with one state key, as hosts sharing a Redis need (the state in Redis
/// is sealed with it).
fn two_dirs_one_key() -> (tempfile::TempDir, tempfile::TempDir) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    defender_soar::state::StateStore::open(a.path()).unwrap();
    let key = a.path().join(defender_soar::state::KEY_FILE_NAME);
    let copy = b.path().join(defender_soar::state::KEY_FILE_NAME);
    std::fs::copy(&key, &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    (a, b)
}

/// The same over Redis at `url` under `prefix`, keeping `share` % on a lost Redis.
fn on_redis(mut config: Config, url: &str, prefix: &str, share: u8) -> Config {
    config.server.state.backend = StateBackend::Redis;
    config.server.state.redis_url = Some(SecretString::from(url.to_string()));
    config.server.state.key_prefix = prefix.to_string();
    config.server.state.fallback_share_percent = share;
    config
}

/// `n` concurrent `list_devices` on `host`, spread over `assets`; answers the statuses.
async fn list_flood(host: &Host, assets: &[&str], n: usize) -> Vec<(u16, Value)> {
    let calls = (0..n).map(|i| host.invoke(assets[i % assets.len()], "list_devices", json!({})));
    futures::future::join_all(calls).await
}

/// Checks that every call was answered 200 or, refused by the budget, 503.
fn assert_ok_or_budget(results: &[(u16, Value)]) -> usize {
    for (status, body) in results {
        match status {
            200 => assert_eq!(body["status"], "success", "{body}"),
            503 => assert!(
                body["message"].as_str().unwrap().contains("request budget"),
                "{body}"
            ),
            _ => panic!("{status} {body}"),
        }
    }
    results.iter().filter(|(s, _)| *s == 200).count()
}

/// The `/readyz` answer of `host`.
async fn readyz(host: &Host) -> Value {
    let resp = host.client.get(host.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn assets_of_one_registration_share_one_budget() {
    let (sim, scenario) = simulator(20).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with(
        &sim,
        &scenario,
        dir.path(),
        &["east", "west", "north"],
        budget_per_minute(20),
    );
    // Budgets that differ: the strictest applies to the registration.
    config.budgets.insert("north".into(), budget_per_minute(60));
    let host = start_host(config).await;
    // 3 × 20 reads over the three assets: the registration's 20 a minute less the tenth
    // kept for state-changing calls go; the rest are refused without being sent.
    let results = list_flood(&host, &["east", "west", "north"], 60).await;
    let ok = assert_ok_or_budget(&results);
    assert_eq!(ok, 18);
    let counters = sim.counters();
    assert_eq!(counters.route("GET", "/api/machines"), 18);
    assert_eq!(counters.throttled, 0);
    // The three assets' clients draw on one budget.
    let budgets: Vec<_> = ["east", "west", "north"]
        .iter()
        .map(|id| host.app.asset(id).unwrap().defender.budget().clone())
        .collect();
    assert!(budgets[0].same_as(&budgets[1]) && budgets[1].same_as(&budgets[2]));
    assert_eq!(
        budgets[2]
            .limit(defender_soar::defender::Family::Default)
            .per_minute,
        20
    );
    // Files backend: nothing to be degraded.
    assert!(readyz(&host).await.get("degraded").is_none());
}

#[tokio::test]
async fn two_hosts_on_redis_keep_to_one_tenant_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (sim, scenario) = simulator(20).await;
    let (dir_a, dir_b) = two_dirs_one_key();
    let ids = ["east", "west"];
    let budget = budget_per_minute(20);
    let host_a = start_host(on_redis(
        config_with(&sim, &scenario, dir_a.path(), &ids, budget),
        &redis.url(),
        "two-hosts",
        50,
    ))
    .await;
    let host_b = start_host(on_redis(
        config_with(&sim, &scenario, dir_b.path(), &ids, budget),
        &redis.url(),
        "two-hosts",
        50,
    ))
    .await;
    // Five times the budget on each host at once.
    let (a, b) = futures::join!(
        list_flood(&host_a, &ids, 100),
        list_flood(&host_b, &ids, 100)
    );
    let reads = assert_ok_or_budget(&a) + assert_ok_or_budget(&b);
    // Reads take the registration's 20 less the tenth left to state-changing calls ...
    assert_eq!(reads, 18);
    // ... which then take the rest, from either host, and no more.
    let device = scenario.machines[0]["id"].as_str().unwrap().to_string();
    let tags = futures::future::join_all((0..10).map(|i| {
        let host = if i % 2 == 0 { &host_a } else { &host_b };
        host.invoke(
            "east",
            "update_device_tag",
            json!({"device_id": device, "operation": "Add", "tag": "budget"}),
        )
    }))
    .await;
    let tagged = tags.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(tagged, 2, "{tags:?}");
    for (status, body) in &tags {
        assert!(*status == 200 || *status == 503, "{status} {body}");
    }
    let counters = sim.counters();
    assert_eq!(counters.throttled, 0);
    let sent =
        counters.route("GET", "/api/machines") + counters.route("POST", "/api/machines/{id}/tags");
    // The tenant's budget, exactly.
    assert_eq!(sent, 20);
    assert!(readyz(&host_a).await.get("degraded").is_none());
}

#[tokio::test]
async fn a_host_that_loses_redis_keeps_to_its_share_and_says_so() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (sim, scenario) = simulator(20).await;
    let (dir_a, dir_b) = two_dirs_one_key();
    let ids = ["east", "west"];
    let budget = budget_per_minute(20);
    let prefix = "lost-redis";
    let host_a = start_host(on_redis(
        config_with(&sim, &scenario, dir_a.path(), &ids, budget),
        &redis.url(),
        prefix,
        50,
    ))
    .await;
    let host_b = start_host(on_redis(
        config_with(&sim, &scenario, dir_b.path(), &ids, budget),
        &redis.url(),
        prefix,
        50,
    ))
    .await;
    // Some calls on the shared budget first.
    let before = assert_ok_or_budget(&list_flood(&host_a, &ids, 4).await);
    assert_eq!(before, 4);
    // Host B reads the tokens host A stored (no budget spent): with Redis gone, the hosts go on
    // with the tokens they hold, and only the budget falls back.
    for id in ids {
        host_b.app.assets[id].tokens.token().await.unwrap();
    }
    redis.kill();
    // An overload on both hosts: each keeps to half of the budget (host A counting the 4
    // the shared window held), so the simulator never answers 429.
    let (a, b) = futures::join!(list_flood(&host_a, &ids, 50), list_flood(&host_b, &ids, 50));
    let during_a = assert_ok_or_budget(&a);
    let during_b = assert_ok_or_budget(&b);
    // Reads get 9 of a share of 10 (a tenth kept for state-changing calls).
    assert_eq!((during_a, during_b), (5, 9));
    let counters = sim.counters();
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.route("GET", "/api/machines"), 18);
    for host in [&host_a, &host_b] {
        let ready = readyz(host).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        let degraded = ready["degraded"].as_array().unwrap();
        assert_eq!(degraded.len(), 1, "{ready}");
        assert_eq!(degraded[0]["component"], "request_budget");
        assert_eq!(degraded[0]["assets"], json!(["east", "west"]));
        assert!(
            degraded[0]["detail"].as_str().unwrap().contains("50%"),
            "{ready}"
        );
        // The Redis URL is nowhere in the answer.
        assert!(!ready.to_string().contains(&redis.url()));
    }
    let metrics = host_a
        .client
        .get(host_a.url("/metrics"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("defender_budget_fallback_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("defender_budget_shared{state=\"fallback\"}"),
        "{metrics}"
    );
    // Redis back: the next permits find it again and the hosts share the budget again. The
    // calls made meanwhile are written into the shared window as each host comes back, so at
    // most the budget is ever sent.
    redis.restart();
    let mut recovered = 0;
    for host in [&host_a, &host_b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while readyz(host).await.get("degraded").is_some() {
            assert!(Instant::now() < deadline, "Redis never used again");
            recovered += assert_ok_or_budget(&list_flood(host, &ids, 1).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let counters = sim.counters();
    assert_eq!(counters.throttled, 0);
    let sent = counters.route("GET", "/api/machines");
    assert_eq!(sent, 18 + recovered as u64);
    assert!(sent <= 20, "{sent}");
    // Every call of the registration is in the shared window.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let tenant = scenario.first_tenant().unwrap();
    let key = format!(
        "{prefix}:budget:{}:{}:default",
        tenant.id.to_ascii_lowercase(),
        tenant.apps[0].client_id.to_ascii_lowercase()
    );
    let held: u64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, sent);
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_without_its_password() {
    let (sim, scenario) = simulator(20).await;
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on, behind a URL with a password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let password = "redis-pw-5f0c1e9a-never-shown";
    let url = format!("redis://:{password}@127.0.0.1:{port}/0");
    let host = start_host(on_redis(
        config_with(
            &sim,
            &scenario,
            dir.path(),
            &["east"],
            budget_per_minute(20),
        ),
        &url,
        "unreachable",
        25,
    ))
    .await;
    // The asset's state is in that Redis too: the actions fail, naming Redis, never its URL.
    for (status, body) in list_flood(&host, &["east"], 3).await {
        assert_eq!(status, 500, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("Redis"), "{body}");
        assert!(!message.contains(password), "{body}");
    }
    assert_eq!(sim.counters().throttled, 0);
    let ready = readyz(&host).await;
    assert!(!ready.to_string().contains(password));
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(!logs.contains(password));
}
