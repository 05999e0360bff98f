//! The token manager through the host: one token request per asset however many callers,
//! tokens reused across restarts from the state file, refresh ahead of expiry and on 401 with
//! rotation, dead grants, the permission preflight, and broken state files.

use std::time::Duration;

use defender_sim::Scenario;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The default scenario without rate limits (hundreds of calls in a test).
fn unlimited() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.rate_limits.disabled = true;
    s
}

/// `contoso` and `reader` use client credentials (the full app and the read-only one), `admin`
/// consents interactively.
async fn rig_with(scenario: Scenario) -> Rig {
    Rig::new(scenario, |s, base| {
        vec![
            asset("contoso", s, base),
            asset_on_app("reader", s, base, 1),
            interactive_asset("admin", s, base, 0),
            interactive_asset("admin_reader", s, base, 1),
        ]
    })
    .await
}

async fn rig() -> Rig {
    rig_with(unlimited()).await
}

#[tokio::test]
async fn two_hundred_cold_callers_share_one_token_request() {
    let rig = rig().await;
    let calls = (0..200).map(|_| rig.invoke("contoso", "list_devices", json!({"limit": 1})));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    let c = rig.sim.counters();
    assert_eq!(c.tokens_total(), 1);
    assert_eq!(c.tokens("client_credentials"), 1);
    // The client-credentials token is stored too.
    let stored = rig.store().load("contoso").await.unwrap().tokens.unwrap();
    assert_eq!(stored.grant, "client_credentials");
    assert!(stored.refresh_token.is_none());
    assert!(stored.expires_at > now() + 3000);
}

#[tokio::test]
async fn a_restarted_host_reuses_stored_tokens() {
    let mut rig = rig().await;
    let (status, _) = rig
        .invoke("contoso", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200);
    rig.consent("admin").await;
    assert_eq!(rig.sim.counters().tokens_total(), 2);

    rig.restart().await;
    rig.sim.reset_counters();
    for asset in ["contoso", "admin"] {
        let (status, body) = rig.invoke(asset, "list_devices", json!({"limit": 1})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    let c = rig.sim.counters();
    assert_eq!(c.tokens_total(), 0, "{c:?}");
    assert_eq!(c.route("GET", "/api/machines"), 2);
}

#[tokio::test]
async fn a_rejected_access_token_is_refreshed_once_for_fifty_callers_and_rotated() {
    let rig = rig().await;
    rig.consent("admin").await;
    let (status, _) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200);
    let before = rig.store().load("admin").await.unwrap().tokens.unwrap();

    // The simulator now refuses the token every caller is about to use.
    rig.sim.expire_access_tokens(None);
    let calls = (0..50).map(|_| rig.invoke("admin", "list_devices", json!({"limit": 1})));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    let c = rig.sim.counters();
    assert_eq!(c.tokens("refresh_token"), 1);
    assert_eq!(c.tokens("authorization_code"), 1);

    // Both tokens were replaced: the refresh token rotated.
    let after = rig.store().load("admin").await.unwrap().tokens.unwrap();
    assert_ne!(
        after.access_token.expose_secret(),
        before.access_token.expose_secret()
    );
    let old_rt = before.refresh_token.unwrap().expose_secret().to_string();
    let new_rt = after.refresh_token.unwrap().expose_secret().to_string();
    assert_ne!(old_rt, new_rt);
    assert_eq!(after.grant, "authorization_code");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(!logs.contains(&old_rt) && !logs.contains(&new_rt));
    assert!(!logs.contains(after.access_token.expose_secret()));
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_ahead_once() {
    let mut rig = rig().await;
    rig.consent("admin").await;
    // The stored token has 30 s left of an hour: inside the renewal margin.
    rig.store()
        .update("admin", |s| {
            let t = s.tokens.as_mut().unwrap();
            t.obtained_at = now() - 3570;
            t.expires_at = now() + 30;
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
    rig.restart().await;
    rig.sim.reset_counters();
    let calls = (0..50).map(|_| rig.invoke("admin", "list_devices", json!({"limit": 1})));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let c = rig.sim.counters();
    assert_eq!(c.tokens("refresh_token"), 1);
    assert_eq!(c.tokens_total(), 1);
    // No 401 was needed: the refresh happened before the calls.
    assert_eq!(c.route_status("GET", "/api/machines", 401), 0);
    let stored = rig.store().load("admin").await.unwrap().tokens.unwrap();
    assert!(stored.expires_at > now() + 3000);
}

#[tokio::test]
async fn a_revoked_refresh_token_asks_for_consent_again() {
    let rig = rig().await;
    rig.consent("admin").await;
    rig.sim.revoke_refresh_tokens(None);
    rig.sim.expire_access_tokens(None);
    let consent_url = format!(
        "an admin must connect it again (POST {}",
        rig.host.url("/assets/admin/consent")
    );
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains(&consent_url), "{msg}");
    assert!(msg.contains("AADSTS70008"), "{msg}");
    assert_eq!(
        body["summary"]["consent_url"],
        rig.host.url("/assets/admin/consent")
    );
    // Later calls fail before any API call.
    let api_calls = rig.sim.counters().path("GET", "/api/machines");
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(rig.sim.counters().path("GET", "/api/machines"), api_calls);
    let (status, body) = rig.invoke("admin", "test_connectivity", json!({})).await;
    assert_eq!(status, 409, "{body}");
    // The dead refresh token was offered to Entra once: the code exchange plus one refresh.
    assert_eq!(
        rig.sim
            .counters()
            .route("POST", "/{tenant}/oauth2/v2.0/token"),
        2
    );

    // A new consent brings the asset back.
    rig.consent("admin").await;
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
}

#[tokio::test]
async fn an_interactive_asset_without_tokens_answers_409_with_the_consent_url() {
    let rig = rig().await;
    let url = rig.host.url("/assets/admin/consent");
    let (status, body) = rig.invoke("admin", "list_devices", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["summary"]["consent_url"], url.as_str());
    assert!(body["message"].as_str().unwrap().contains(&url), "{body}");
    // Nothing was written for it.
    assert_eq!(rig.state_bytes("admin"), None);
    // test_connectivity answers a consent link (a ticket is the only thing it stores).
    let (status, body) = rig.invoke("admin", "test_connectivity", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["summary"]["consent_url"]
            .as_str()
            .unwrap()
            .starts_with(&rig.host.url("/start_oauth?ticket=admin.")),
        "{body}"
    );
    let stored = rig.store().load("admin").await.unwrap();
    assert!(stored.tokens.is_none() && stored.consent_sessions.is_empty());
    assert_eq!(stored.consent_tickets.len(), 1);
    assert_eq!(rig.sim.counters().total, 0);
}

#[tokio::test]
async fn test_connectivity_waits_for_the_consent() {
    let rig = std::sync::Arc::new(rig().await);
    let waiting = {
        let rig = rig.clone();
        tokio::spawn(async move {
            rig.invoke(
                "admin",
                "test_connectivity",
                json!({"wait_for_consent": 60}),
            )
            .await
        })
    };
    // The consent completes while the action waits.
    rig.consent("admin").await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting action answers once the consent completed")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["data"][0]["permission_claim"], "scp");

    // Without a consent, the wait ends with 409.
    let other = rig_with(unlimited()).await;
    let started = std::time::Instant::now();
    let (status, body) = other
        .invoke("admin", "test_connectivity", json!({"wait_for_consent": 1}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("after waiting 1 s"),
        "{body}"
    );
}

/// The default scenario where the read-only app holds only `Alert.Read.All`.
fn without_machine_read() -> Scenario {
    let mut s = unlimited();
    let app = &mut s.tenants[0].apps[1];
    app.roles = vec!["Alert.Read.All".to_string()];
    app.scopes = None;
    s
}

#[tokio::test]
async fn a_missing_permission_fails_fast_without_api_calls() {
    let rig = rig_with(without_machine_read()).await;
    let (status, body) = rig.invoke("reader", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "list_devices", "reader");
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("lacks permission Machine.Read.All required by list_devices"),
        "{msg}"
    );
    assert!(msg.contains("granted: Alert.Read.All"), "{msg}");
    assert_eq!(
        body["summary"]["missing_permissions"],
        json!(["Machine.Read.All"])
    );
    let c = rig.sim.counters();
    assert_eq!(c.tokens("client_credentials"), 1);
    assert_eq!(c.path("GET", "/api/machines"), 0);
    // With the token now at hand, the check runs before the handler; same answer.
    let (status, again) = rig.invoke("reader", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["message"], body["message"]);
    let c = rig.sim.counters();
    assert_eq!(c.tokens("client_credentials"), 1);
    assert_eq!(c.path("GET", "/api/machines"), 0);

    // Same for an interactive asset whose consent granted too little.
    rig.consent("admin_reader").await;
    let (status, body) = rig.invoke("admin_reader", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("Machine.Read.All"), "{msg}");
    assert!(msg.contains("connect the asset again (POST"), "{msg}");
    assert_eq!(rig.sim.counters().path("GET", "/api/machines"), 0);

    // test_connectivity reports instead of failing.
    let (status, body) = rig.invoke("reader", "test_connectivity", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let blocked = body["data"][0]["blocked_actions"].as_array().unwrap();
    assert!(
        blocked.iter().any(|b| b["action"] == "list_devices"),
        "{body}"
    );
}

#[tokio::test]
async fn a_tampered_state_file_fails_its_asset_only() {
    let mut rig = rig().await;
    for asset in ["contoso", "reader"] {
        let (status, _) = rig.invoke(asset, "list_devices", json!({"limit": 1})).await;
        assert_eq!(status, 200);
    }
    // Change one character of the encrypted access token of contoso's file.
    let path = rig.state_file("contoso");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sealed = find_sealed(&mut doc).expect("an encrypted value in the state file");
    let flipped: String = {
        let mut chars: Vec<char> = sealed.as_str().unwrap().chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect()
    };
    *sealed = json!(flipped);
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let tampered = std::fs::read(&path).unwrap();

    rig.restart().await;
    let (status, body) = rig
        .invoke("contoso", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("contoso_state.json"), "{msg}");
    assert!(msg.contains("left untouched"), "{msg}");
    let (status, body) = rig.invoke("contoso", "test_connectivity", json!({})).await;
    assert_eq!(status, 500, "{body}");
    // The file is kept as it was; the other asset works.
    assert_eq!(std::fs::read(&path).unwrap(), tampered);
    let (status, body) = rig
        .invoke("reader", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
}

/// The first string under a `tokens` object whose key names an access token.
fn find_sealed(v: &mut serde_json::Value) -> Option<&mut serde_json::Value> {
    match v {
        serde_json::Value::Object(map) => {
            let key = map.keys().find(|k| k.contains("access_token")).cloned();
            if let Some(k) = key
                && map[&k].is_string()
            {
                return map.get_mut(&k);
            }
            map.values_mut().find_map(find_sealed)
        }
        serde_json::Value::Array(items) => items.iter_mut().find_map(find_sealed),
        _ => None,
    }
}

#[tokio::test]
async fn a_corrupt_state_file_is_reported_not_reset() {
    let rig = rig().await;
    std::fs::write(rig.state_file("admin"), b"{ not json").unwrap();
    let (status, body) = rig.invoke("admin", "list_devices", json!({})).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("corrupt"),
        "{body}"
    );
    // The consent API says what is wrong; the public pages never show paths.
    let (status, body) = rig.host.request_consent("admin").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("corrupt"),
        "{body}"
    );
    let page = Page::from(
        rig.host
            .open_get(&format!("/start_oauth?ticket=admin.{}", "C".repeat(43)))
            .await,
    )
    .await;
    assert_eq!(page.status, 500, "{}", page.body);
    assert!(page.body.contains("State file problem"), "{}", page.body);
    let dir = rig.dir.path().display().to_string();
    assert!(
        !page.body.contains(&dir) && !page.body.contains(".json"),
        "{}",
        page.body
    );
    let page = Page::from(
        rig.host
            .open_get(&format!("/result?code=c&state=admin.{}", "C".repeat(43)))
            .await,
    )
    .await;
    assert_eq!(page.status, 500, "{}", page.body);
    assert!(
        !page.body.contains(&dir) && !page.body.contains(".json"),
        "{}",
        page.body
    );
    assert_eq!(
        std::fs::read(rig.state_file("admin")).unwrap(),
        b"{ not json"
    );
    let (status, _) = rig
        .invoke("contoso", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200);
}
