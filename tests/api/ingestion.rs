//! Alert ingestion through the host: the poller against the simulator's alerts created over
//! time, the journal read back through `GET /assets/{asset}/alerts/feed`.

use std::collections::HashMap;

use defender_sim::{Fault, FaultKind, Scenario};
use defender_soar::config::{IngestionConfig, WebhookConfig};
use defender_soar::state::IngestionState;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::webhook_receiver::Receiver;

/// A host whose `contoso` asset ingests with `settings` (the poller's own interval is long,
/// so tests drive polls with `poll_now`). Answers once the host's own poller has run the poll
/// it runs at start, so that poll does not land in the middle of a test.
pub async fn host(settings: IngestionConfig) -> TestApp {
    let app = spawn_configured(Scenario::default_scenario(), move |c| {
        c.ingestion.insert(
            "contoso".into(),
            IngestionConfig {
                enabled: true,
                interval_secs: 3600,
                ..settings
            },
        );
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let state = app.app.state.load("contoso").await.unwrap();
        if state.ingestion.is_some_and(|i| i.polls >= 1) {
            return app;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host's poller did not poll at start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn sim_post(app: &TestApp, path: &str, body: Value) -> Value {
    let resp = app
        .client
        .post(format!("{}{path}", app.sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// Polls until a poll reads everything there is (bounded).
async fn drain(app: &TestApp) {
    let ingestor = app.app.ingestors["contoso"].clone();
    for _ in 0..50 {
        let report = ingestor.poll_now().await.unwrap();
        if !report.more {
            return;
        }
    }
    panic!("ingestion did not catch up in 50 polls");
}

/// Every event of the feed, following next_cursor with pages of `limit`.
async fn feed(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    loop {
        let (events, next) = page_of(&app.client, app.url(""), &cursor, limit).await;
        if events.is_empty() {
            assert_eq!(next, cursor);
            return out;
        }
        out.extend(events);
        cursor = next;
    }
}

fn ids(created: &Value) -> Vec<String> {
    created["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn count_by_id(events: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events {
        *m.entry(e["alert"]["id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn a_backfill_across_pages_delivers_each_alert_once() {
    let app = host(IngestionConfig::default()).await;
    let same = sim_post(
        &app,
        "/_sim/alerts",
        json!({"count": 300, "same_timestamp": true, "severity": "medium"}),
    )
    .await;
    let rest = sim_post(&app, "/_sim/alerts", json!({"count": 4700})).await;
    drain(&app).await;
    let events = feed(&app, 1000).await;
    let mut keys: Vec<&str> = events
        .iter()
        .map(|e| e["event_key"].as_str().unwrap())
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "an event_key was delivered twice");
    let by_id = count_by_id(&events);
    for id in ids(&same).iter().chain(ids(&rest).iter()) {
        assert_eq!(by_id.get(id), Some(&1), "{id}");
    }
    let e = events
        .iter()
        .find(|e| e["alert"]["id"] == json!(ids(&same)[0]))
        .unwrap();
    assert_eq!(e["kind"], "created");
    assert_eq!(e["asset"], "contoso");
    assert_eq!(e["source"], "graph");
    assert_eq!(
        e["event_key"],
        json!(format!(
            "{}@{}",
            e["alert"]["id"].as_str().unwrap(),
            e["alert"]["lastUpdateDateTime"].as_str().unwrap()
        ))
    );
    // Pages were followed: the simulator's pages are smaller than a poll.
    assert!(app.sim.counters().route("GET", "/v1.0/security/alerts_v2") >= 5);
    // Another poll adds nothing.
    let report = app.app.ingestors["contoso"].poll_now().await.unwrap();
    assert_eq!(report.appended, 0);
}

async fn updates_delivered(include_updates: bool) -> usize {
    let app = host(IngestionConfig {
        include_updates,
        ..IngestionConfig::default()
    })
    .await;
    let created = sim_post(&app, "/_sim/alerts", json!({"count": 1})).await;
    let id = ids(&created).remove(0);
    drain(&app).await;
    app.sim.clock.advance(std::time::Duration::from_secs(5));
    sim_post(
        &app,
        &format!("/_sim/alerts/{id}"),
        json!({"status": "inProgress"}),
    )
    .await;
    drain(&app).await;
    let events = feed(&app, 100).await;
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["alert"]["id"] == json!(id))
        .collect();
    if include_updates {
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[0]["kind"], "created");
        assert_eq!(mine[1]["kind"], "updated");
        assert_eq!(mine[1]["alert"]["status"], "inProgress");
    }
    mine.len()
}

#[tokio::test]
async fn an_update_is_delivered_again_only_with_include_updates() {
    assert_eq!(updates_delivered(true).await, 2);
    assert_eq!(updates_delivered(false).await, 1);
}

#[tokio::test]
async fn filters_are_honoured() {
    let app = host(IngestionConfig {
        severities: vec!["high".into()],
        statuses: vec!["New".into()],
        ..IngestionConfig::default()
    })
    .await;
    let high = ids(&sim_post(
        &app,
        "/_sim/alerts",
        json!({"count": 3, "severity": "high"}),
    )
    .await);
    let low = ids(&sim_post(&app, "/_sim/alerts", json!({"count": 3, "severity": "low"})).await);
    let resolved = ids(&sim_post(
        &app,
        "/_sim/alerts",
        json!({"count": 2, "severity": "high", "status": "resolved"}),
    )
    .await);
    drain(&app).await;
    let by_id = count_by_id(&feed(&app, 100).await);
    assert!(high.iter().all(|i| by_id.get(i) == Some(&1)));
    assert!(
        low.iter()
            .chain(resolved.iter())
            .all(|i| !by_id.contains_key(i))
    );
    assert!(
        by_id.len() >= high.len(),
        "generated alerts may pass too, never fewer"
    );
}

/// The contoso asset's stored ingestion state.
async fn ingestion_state(app: &TestApp) -> IngestionState {
    app.app
        .state
        .load("contoso")
        .await
        .unwrap()
        .ingestion
        .unwrap()
}

#[tokio::test]
async fn a_429_during_a_poll_keeps_the_checkpoint() {
    let app = host(IngestionConfig::default()).await;
    drain(&app).await;
    let before = ingestion_state(&app).await;
    assert!(before.checkpoint.is_some());
    sim_post(&app, "/_sim/alerts", json!({"count": 5})).await;
    app.sim.inject_fault(Fault {
        method: Some("GET".into()),
        path: "/v1.0/security/alerts_v2".into(),
        count: 20,
        kind: FaultKind::Status {
            status: 429,
            body: None,
            headers: [("Retry-After".to_string(), "600".to_string())]
                .into_iter()
                .collect(),
        },
    });
    let err = app.app.ingestors["contoso"].poll_now().await.unwrap_err();
    assert!(!err.is_empty());
    let after = ingestion_state(&app).await;
    assert_eq!(after.checkpoint, before.checkpoint);
    assert_eq!(after.ids_at_checkpoint, before.ids_at_checkpoint);
    assert_eq!(after.last_outcome.as_deref(), Some("failed"));
    assert!(after.errors >= 1);
    app.sim.clear_faults();
    drain(&app).await;
    let after = ingestion_state(&app).await;
    assert_ne!(after.checkpoint, before.checkpoint);
    assert_eq!(after.last_outcome.as_deref(), Some("ok"));
}

#[tokio::test]
async fn the_feed_refuses_bad_input_and_assets_without_ingestion() {
    let app = host(IngestionConfig::default()).await;
    for (path, status) in [
        ("/assets/contoso_v1/alerts/feed", 404),
        ("/assets/nope/alerts/feed", 404),
        ("/assets/contoso/alerts/feed?limit=0", 400),
        ("/assets/contoso/alerts/feed?limit=1001", 400),
        ("/assets/contoso/alerts/feed?cursor=-1", 400),
    ] {
        let resp = app
            .client
            .get(app.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let body: Value = resp.json().await.unwrap();
        if path.contains("contoso_v1") {
            assert!(
                body["message"].as_str().unwrap().contains("ingestion"),
                "{body}"
            );
        }
    }
    let resp = app
        .client
        .get(app.url("/assets/contoso/alerts/feed"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// The alert ids of the feed's events.
fn feed_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["alert"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_alert_updated_between_continued_polls_loses_no_unseen_alert() {
    let app = host(IngestionConfig {
        max_per_poll: 4,
        ..IngestionConfig::default()
    })
    .await;
    drain(&app).await;
    // Ten alerts on one timestamp, well after everything read so far.
    app.sim.clock.advance(std::time::Duration::from_secs(3600));
    let tied = ids(&sim_post(
        &app,
        "/_sim/alerts",
        json!({"count": 10, "same_timestamp": true}),
    )
    .await);
    // Poll until some, not all, of them are journaled and the poll says more follow.
    let ingestor = app.app.ingestors["contoso"].clone();
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..20 {
        let report = ingestor.poll_now().await.unwrap();
        seen = feed_ids(&feed(&app, 100).await)
            .into_iter()
            .filter(|i| tied.contains(i))
            .collect();
        if !seen.is_empty() {
            assert!(report.more, "{report:?}");
            break;
        }
    }
    assert!(!seen.is_empty() && seen.len() < tied.len(), "{seen:?}");
    let state = ingestion_state(&app).await;
    assert!(state.more);
    for id in &seen {
        assert!(state.ids_at_checkpoint.contains(id), "{id}");
    }
    // One of the journaled alerts moves on before the next poll.
    app.sim.clock.advance(std::time::Duration::from_secs(5));
    sim_post(
        &app,
        &format!("/_sim/alerts/{}", seen[0]),
        json!({"status": "inProgress"}),
    )
    .await;
    drain(&app).await;
    let by_id = count_by_id(&feed(&app, 100).await);
    for id in &tied {
        assert_eq!(by_id.get(id), Some(&1), "{id} lost or repeated");
    }
}

#[tokio::test]
async fn ingestion_status_reports_the_poller_state_and_journal() {
    // max_per_poll above the scenario's alerts: the host's own poller polls once at start,
    // then waits its interval.
    let app = host(IngestionConfig {
        max_per_poll: 500,
        ..IngestionConfig::default()
    })
    .await;
    sim_post(&app, "/_sim/alerts", json!({"count": 3})).await;
    drain(&app).await;
    let (status, body) = app.invoke("contoso", "ingestion_status", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "ingestion_status", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    let state = ingestion_state(&app).await;
    let (last_seq, size) = {
        let j = app.app.ingestors["contoso"]
            .journal()
            .stats()
            .await
            .unwrap();
        (j.last_seq, j.size_bytes)
    };
    assert!(last_seq >= 3);
    let d = &body["data"][0];
    assert_eq!(d["enabled"], true);
    assert_eq!(d["source"], "graph");
    assert_eq!(d["interval_secs"], 3600);
    assert_eq!(d["max_per_poll"], 500);
    assert_eq!(d["last_outcome"], "ok");
    assert_eq!(d["checkpoint"], json!(state.checkpoint));
    assert_eq!(d["ids_at_checkpoint"], json!(state.ids_at_checkpoint.len()));
    assert_eq!(d["polls"], json!(state.polls));
    assert_eq!(d["journal_last_seq"], json!(last_seq));
    assert_eq!(d["journal_size_bytes"], json!(size));
    assert_eq!(d["delivered"], json!(last_seq));
    assert_eq!(d["errors"], 0);
    assert!(d["last_poll_at"].as_str().unwrap().ends_with('Z'), "{d}");
    assert_eq!(body["summary"]["journal_last_seq"], json!(last_seq));
    assert_eq!(body["summary"]["last_outcome"], "ok");
    // A failed poll shows as such.
    app.sim.inject_fault(Fault {
        method: Some("GET".into()),
        path: "/v1.0/security/alerts_v2".into(),
        count: 20,
        kind: FaultKind::Status {
            status: 503,
            body: None,
            headers: Default::default(),
        },
    });
    app.app.ingestors["contoso"].poll_now().await.unwrap_err();
    app.sim.clear_faults();
    let (_, body) = app.invoke("contoso", "ingestion_status", json!({})).await;
    let d = &body["data"][0];
    assert_eq!(d["last_outcome"], "failed", "{body}");
    assert!(d["errors"].as_u64().unwrap() >= 1);
    assert!(!d["last_error"].as_str().unwrap().is_empty());
    assert_eq!(d["checkpoint"], json!(state.checkpoint));
    // No secret of the asset in the answer.
    let text = body.to_string();
    let secret = app.app.config.assets["contoso"]
        .client_secret
        .as_ref()
        .map(|s| secrecy::ExposeSecret::expose_secret(s).to_string())
        .unwrap();
    assert!(!text.contains(&secret));
    // An asset without ingestion fails saying so.
    let (status, body) = app
        .invoke("contoso_v1", "ingestion_status", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("ingestion is off"),
        "{body}"
    );
    // Unknown parameters are refused.
    let (status, _) = app
        .invoke("contoso", "ingestion_status", json!({"x": 1}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn on_poll_answers_a_container_per_alert_without_touching_the_checkpoint() {
    let app = host(IngestionConfig::default()).await;
    drain(&app).await;
    let before = ingestion_state(&app).await;
    let seq_before = app.app.ingestors["contoso"]
        .journal()
        .stats()
        .await
        .unwrap()
        .last_seq;
    // Alerts an hour from now (simulated), so a start time picks them alone.
    app.sim.clock.advance(std::time::Duration::from_secs(3600));
    let high = ids(&sim_post(
        &app,
        "/_sim/alerts",
        json!({"count": 3, "severity": "high"}),
    )
    .await);
    let info = ids(&sim_post(
        &app,
        "/_sim/alerts",
        json!({"count": 2, "severity": "informational"}),
    )
    .await);
    let start = time::OffsetDateTime::from_unix_timestamp(app.sim.clock.now_ms() / 1000 - 1)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, body) = app
        .invoke(
            "contoso",
            "on_poll",
            json!({"start_time": start, "container_count": 100, "artifact_count": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "on_poll", "contoso");
    assert_eq!(body["summary"]["total_containers"], 5, "{body}");
    let containers = body["data"].as_array().unwrap();
    let got: Vec<&str> = containers
        .iter()
        .map(|c| c["source_data_identifier"].as_str().unwrap())
        .collect();
    for id in high.iter().chain(info.iter()) {
        assert!(got.contains(&id.as_str()), "{id}");
    }
    for c in containers {
        let id = c["source_data_identifier"].as_str().unwrap();
        let alert = &c["artifacts"][0]["cef"];
        assert_eq!(c["artifacts"].as_array().unwrap().len(), 1);
        assert_eq!(c["artifacts"][0]["name"], "alert");
        assert_eq!(alert["id"], id);
        assert_eq!(c["name"], alert["title"]);
        assert_eq!(c["start_time"], alert["alertCreationTime"]);
        let want = if high.iter().any(|h| h == id) {
            "high"
        } else {
            "low"
        };
        assert_eq!(c["severity"], want, "{c}");
    }
    // container_count caps the answer; oldest first.
    let (_, body) = app
        .invoke(
            "contoso",
            "on_poll",
            json!({"start_time": start, "container_count": 2}),
        )
        .await;
    assert_eq!(body["summary"]["total_containers"], 2);
    let first: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source_data_identifier"].as_str().unwrap())
        .collect();
    assert_eq!(first, got[..2].to_vec());
    // Without start_time: the last day, which holds the new alerts too.
    let (status, body) = app.invoke("contoso", "on_poll", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["summary"]["total_containers"].as_u64().unwrap() >= 5);
    // The poller's checkpoint and journal did not move.
    let after = ingestion_state(&app).await;
    assert_eq!(after.checkpoint, before.checkpoint);
    assert_eq!(after.ids_at_checkpoint, before.ids_at_checkpoint);
    assert_eq!(
        app.app.ingestors["contoso"]
            .journal()
            .stats()
            .await
            .unwrap()
            .last_seq,
        seq_before
    );
    // An asset without ingestion can run it too (it reads Defender directly).
    let (status, body) = app
        .invoke(
            "contoso_v1",
            "on_poll",
            json!({"start_time": start, "container_count": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["total_containers"], 5, "{body}");
    // Bad input is refused by name.
    for bad in [
        json!({"start_time": "yesterday"}),
        json!({"container_count": 0}),
        json!({"container_count": 10001}),
        json!({"artifact_count": 0}),
        json!({"artifact_count": 1001}),
    ] {
        let (status, body) = app.invoke("contoso", "on_poll", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

/// One page of a host's feed: (events, next_cursor).
async fn feed_page(host: &Host, cursor: &str, limit: usize) -> (Vec<Value>, String) {
    page_of(&host.client, host.url(""), cursor, limit).await
}

/// One page of the contoso feed of the host at `base`: (events, next_cursor).
async fn page_of(
    client: &reqwest::Client,
    base: String,
    cursor: &str,
    limit: usize,
) -> (Vec<Value>, String) {
    let resp = client
        .get(format!(
            "{}/assets/contoso/alerts/feed?cursor={cursor}&limit={limit}",
            base.trim_end_matches('/')
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    (
        body["events"].as_array().unwrap().clone(),
        body["next_cursor"].as_str().unwrap().to_string(),
    )
}

/// Polls a host's ingestor until a poll reads everything there is (bounded).
async fn drain_host(host: &Host) {
    let ingestor = host.app.ingestors["contoso"].clone();
    for _ in 0..50 {
        if !ingestor.poll_now().await.unwrap().more {
            return;
        }
    }
    panic!("ingestion did not catch up in 50 polls");
}

#[tokio::test]
async fn the_feed_cursor_survives_a_host_restart() {
    let ingestion = [(
        "contoso".to_string(),
        IngestionConfig {
            enabled: true,
            interval_secs: 3600,
            ..IngestionConfig::default()
        },
    )]
    .into_iter()
    .collect();
    let mut rig = Rig::with_ingestion(
        Scenario::default_scenario(),
        |s, base| vec![asset("contoso", s, base)],
        ingestion,
    )
    .await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/_sim/alerts", rig.sim.base_url()))
        .json(&json!({"count": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    drain_host(&rig.host).await;
    // A consumer reads part of the feed, then the host restarts.
    let (first, cursor) = feed_page(&rig.host, "0", 3).await;
    assert_eq!(first.len(), 3);
    let mut all_before = Vec::new();
    let mut c = "0".to_string();
    loop {
        let (events, next) = feed_page(&rig.host, &c, 1000).await;
        if events.is_empty() {
            break;
        }
        all_before.extend(events);
        c = next;
    }
    let last_seq = all_before.len() as u64;
    assert!(last_seq >= 6);
    rig.restart().await;
    // The new host's poller (it polls at start) and another poll add nothing already journaled.
    drain_host(&rig.host).await;
    assert_eq!(
        rig.host.app.ingestors["contoso"]
            .journal()
            .stats()
            .await
            .unwrap()
            .last_seq,
        last_seq
    );
    // The cursor handed out before the restart continues where it was.
    let (rest, next) = feed_page(&rig.host, &cursor, 1000).await;
    assert_eq!(rest, all_before[3..].to_vec());
    assert_eq!(next, last_seq.to_string());
    // New alerts after the restart follow the old cursor, each once.
    let created: Value = client
        .post(format!("{}/_sim/alerts", rig.sim.base_url()))
        .json(&json!({"count": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    drain_host(&rig.host).await;
    let (new, _) = feed_page(&rig.host, &next, 1000).await;
    let new_ids: Vec<String> = feed_ids(&new);
    assert_eq!(new_ids.len(), 2, "{new_ids:?}");
    for id in ids(&created) {
        assert!(new_ids.contains(&id), "{id}");
    }
    assert_eq!(new[0]["seq"], json!(last_seq + 1));
}

// --- push delivery -------------------------------------------------------------------------

const HOOK_SECRET: &str = "webhook-signing-secret-7f3a9c";

fn hook(receiver: &Receiver, retry_max_secs: u64) -> WebhookConfig {
    WebhookConfig {
        url: receiver.url.parse().unwrap(),
        secret_env: "CONTOSO_HOOK_SECRET".into(),
        secret: HOOK_SECRET.to_string().into(),
        batch_size: 100,
        retry_max_secs,
    }
}

/// Each key's number of acknowledged deliveries.
fn acked_counts(r: &Receiver) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for k in r.acked_keys() {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn a_backfill_is_pushed_exactly_once_to_two_signed_webhooks() {
    let a = Receiver::start(HOOK_SECRET).await;
    let b = Receiver::start(HOOK_SECRET).await;
    let app = host(IngestionConfig {
        webhooks: vec![hook(&a, 1), hook(&b, 1)],
        ..IngestionConfig::default()
    })
    .await;
    let same = sim_post(
        &app,
        "/_sim/alerts",
        json!({"count": 300, "same_timestamp": true}),
    )
    .await;
    let rest = sim_post(&app, "/_sim/alerts", json!({"count": 4700})).await;
    drain(&app).await;
    let within = std::time::Duration::from_secs(60);
    a.wait_for_keys(5000, within).await;
    b.wait_for_keys(5000, within).await;
    let journal = feed(&app, 1000).await;
    for r in [&a, &b] {
        let counts = acked_counts(r);
        assert_eq!(counts.len(), journal.len(), "the receiver got every event");
        assert!(
            counts.values().all(|n| *n == 1),
            "an event_key was pushed twice"
        );
        let posts = r.posts();
        assert!(posts.iter().all(|p| p.signature_ok && p.accepted));
        assert!(
            posts.iter().all(|p| p.keys.len() <= 100),
            "batches of batch_size"
        );
        // The events are the feed's, in the journal's order.
        let pushed: Vec<String> = r.acked_keys();
        let fed: Vec<String> = journal
            .iter()
            .map(|e| e["event_key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(pushed, fed);
        let first = &posts[0].events[0];
        for field in ["event_key", "kind", "asset", "source", "alert"] {
            assert!(first.get(field).is_some(), "{field} in {first}");
        }
        let ids: std::collections::HashSet<String> = posts
            .iter()
            .flat_map(|p| p.events.iter())
            .map(|e| e["alert"]["id"].as_str().unwrap().to_string())
            .collect();
        for id in ids_of(&same).iter().chain(ids_of(&rest).iter()) {
            assert!(ids.contains(id), "{id} was not pushed");
        }
    }
    // The status reports both receivers caught up, by origin only.
    let status = invoke(&app, "ingestion_status", json!({})).await;
    let hooks = status["data"][0]["webhooks"].as_array().unwrap().clone();
    assert_eq!(hooks.len(), 2);
    for h in &hooks {
        assert_eq!(h["backlog"], 0, "{h}");
        assert_eq!(h["healthy"], true);
        assert_eq!(h["delivered"], json!(journal.len()));
        assert!(!h["receiver"].as_str().unwrap().contains("/hook"));
    }
    let text = status.to_string();
    assert!(!text.contains(HOOK_SECRET));
    assert!(!String::from_utf8_lossy(&logs().lock().unwrap()).contains(HOOK_SECRET));
}

fn ids_of(created: &Value) -> Vec<String> {
    ids(created)
}

async fn invoke(app: &TestApp, action: &str, params: Value) -> Value {
    let (status, body) = app.invoke("contoso", action, params).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_receiver_that_was_down_catches_up_and_never_held_up_the_other() {
    let down = Receiver::start(HOOK_SECRET).await;
    let up = Receiver::start(HOOK_SECRET).await;
    down.set_failing(true);
    let app = host(IngestionConfig {
        webhooks: vec![hook(&down, 1), hook(&up, 1)],
        ..IngestionConfig::default()
    })
    .await;
    sim_post(&app, "/_sim/alerts", json!({"count": 250})).await;
    drain(&app).await;
    // The working receiver gets everything while the other keeps refusing.
    up.wait_for_keys(250, std::time::Duration::from_secs(30))
        .await;
    let first_batch = up.acked_keys().len();
    // Down for a long stretch of retries (1 s apart at most here), while alerts keep coming.
    down.wait_until(
        "ten refused deliveries",
        std::time::Duration::from_secs(60),
        |r| r.refused() >= 10,
    )
    .await;
    sim_post(&app, "/_sim/alerts", json!({"count": 50})).await;
    drain(&app).await;
    up.wait_for_keys(first_batch + 50, std::time::Duration::from_secs(30))
        .await;
    assert!(down.acked_keys().is_empty());
    let status = invoke(&app, "ingestion_status", json!({})).await;
    let hooks = status["data"][0]["webhooks"].as_array().unwrap().clone();
    let failing = hooks.iter().find(|h| h["healthy"] == false).unwrap();
    let last_seq = app.app.ingestors["contoso"]
        .journal()
        .stats()
        .await
        .unwrap()
        .last_seq;
    assert!(last_seq >= 300);
    assert_eq!(failing["backlog"], json!(last_seq), "{failing}");
    assert!(failing["consecutive_failures"].as_u64().unwrap() >= 10);
    assert!(failing["last_error"].as_str().unwrap().contains("503"));
    assert!(failing["failing_since"].is_string());
    assert_eq!(status["summary"]["webhooks_failing"], 1);
    // Back up: it catches up, each event once, in order.
    down.set_failing(false);
    down.wait_for_keys(last_seq as usize, std::time::Duration::from_secs(30))
        .await;
    assert!(acked_counts(&down).values().all(|n| *n == 1));
    assert_eq!(down.acked_keys(), up.acked_keys());
    let status = invoke(&app, "ingestion_status", json!({})).await;
    assert_eq!(status["summary"]["webhooks_failing"], 0);
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hammering_poller_leaves_the_actions_floor_to_playbooks() {
    use defender_soar::config::{BudgetConfig, IngestionSource, RateLimit};
    // Ten Defender API calls a minute, on the host and in the simulator; ingestion reads
    // MDE alerts (the same family as the playbook's calls), two a poll, so it always has more.
    let mut scenario = manual();
    scenario.rate_limits.default.per_minute = 10;
    let app = spawn_configured(scenario, |c| {
        c.budgets.insert(
            "contoso".into(),
            BudgetConfig {
                default: RateLimit::new(10, None),
                // Background polls wait for their permit (a minute away) instead of failing.
                max_wait_secs: 300,
                ..BudgetConfig::STANDARD
            },
        );
        c.ingestion.insert(
            "contoso".into(),
            IngestionConfig {
                enabled: true,
                source: IngestionSource::Mde,
                interval_secs: 3600,
                max_per_poll: 2,
                ..IngestionConfig::default()
            },
        );
    })
    .await;
    sim_post(&app, "/_sim/alerts", json!({"count": 40})).await;
    // Polls back to back besides the host's own poller (which continues every second while a
    // poll stops at max_per_poll).
    let ingestor = app.app.ingestors["contoso"].clone();
    let hammer = tokio::spawn(async move {
        loop {
            let _ = ingestor.poll_now().await;
        }
    });
    // Ingestion takes its share, half the minute (floor 50 %), and then waits.
    until(
        "ingestion did not take its share of the budget",
        async || app.sim.counters().route("GET", "/api/alerts") >= 5,
    )
    .await;
    // Playbook reads and a state-changing call get the other half at once, though
    // background polls are waiting for a permit.
    let burst = async {
        let reads = (0..4).map(|_| app.invoke("contoso", "list_devices", json!({})));
        let reads = futures::future::join_all(reads).await;
        let device = app.sim.scenario().machines[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let respond = app
            .invoke(
                "contoso",
                "quarantine_device",
                json!({"device_id": device, "comment": "floor", "timeout": 5}),
            )
            .await;
        (reads, respond, device)
    };
    let (reads, (status, body), device) =
        tokio::time::timeout(std::time::Duration::from_secs(20), burst)
            .await
            .expect("playbook calls waited behind ingestion");
    for (status, body) in &reads {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let counters = app.sim.counters();
    assert_eq!(counters.route("GET", "/api/machines"), 4);
    assert_eq!(
        counters.path("POST", &format!("/api/machines/{device}/isolate")),
        1
    );
    // Ingestion never went past its share, and Defender never had to say 429.
    assert_eq!(counters.route("GET", "/api/alerts"), 5);
    assert_eq!(counters.throttled, 0);
    hammer.abort();
    let state = ingestion_state(&app).await;
    assert!(state.delivered >= 2, "{state:?}");
    assert_eq!(state.errors, 0, "{state:?}");

    // The status shows the pacing settings and when the host's poller polls next.
    until("the poller recorded no next poll", async || {
        ingestion_state(&app).await.next_poll_at.is_some()
    })
    .await;
    let (_, body) = app.invoke("contoso", "ingestion_status", json!({})).await;
    let d = &body["data"][0];
    assert_eq!(d["adaptive"], true, "{body}");
    assert_eq!(d["actions_floor_percent"], 50, "{body}");
    assert!(d["next_poll_at"].as_str().unwrap().ends_with('Z'), "{d}");
    assert_eq!(body["summary"]["next_poll_at"], d["next_poll_at"]);

    // The ingestion metrics are exported.
    let (status, metrics) = app.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "defender_ingestion_polls_total{asset=\"contoso\",outcome=\"ok\"}",
        "defender_ingestion_events_total{asset=\"contoso\",kind=\"created\"}",
        "defender_ingestion_lag_seconds_count{asset=\"contoso\"}",
        "defender_ingestion_checkpoint_age_seconds{asset=\"contoso\"}",
        "defender_ingestion_backlog{asset=\"contoso\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // No secret of the asset in the status or the metrics.
    let secret = app.app.config.assets["contoso"]
        .client_secret
        .as_ref()
        .map(|s| secrecy::ExposeSecret::expose_secret(s).to_string())
        .unwrap();
    assert!(!metrics.contains(&secret));
    assert!(!body.to_string().contains(&secret));
}
