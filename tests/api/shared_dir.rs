//! Two hosts over one state directory (a highly available pair), in one process: a refresh is
//! done once for both, the stored pair is read again under the asset's token lock, a refused
//! refresh looks for a newer pair before asking for consent, and a consent mark never hides a
//! pair another host stored.

use std::time::{Duration, Instant};

use defender_sim::{Fault, FaultKind, Scenario};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `admin` consents interactively; no rate limits (many calls).
async fn rig() -> Rig {
    let mut s = Scenario::default_scenario();
    s.rate_limits.disabled = true;
    Rig::new(s, |s, base| vec![interactive_asset("admin", s, base, 0)]).await
}

/// The whole consent through `host` (link, accept, result page).
async fn consent_on(rig: &Rig, host: &Host) {
    let link = host.consent_link("admin").await;
    let authorize = rig.open_link(&link).await;
    let back = rig.decide(&authorize, "accept").await;
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.body);
}

fn assert_success(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
}

/// Polls `cond` every 5 ms for up to 20 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What another process does: redeems `refresh_token` at the simulator itself.
async fn redeem_elsewhere(rig: &Rig, refresh_token: &SecretString, scope: &str) -> Value {
    let scenario = rig.sim.scenario();
    let tenant = scenario.first_tenant().unwrap();
    let app = &tenant.apps[0];
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            rig.sim.base_url(),
            tenant.id
        ))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.secret.as_str()),
            ("refresh_token", refresh_token.expose_secret()),
            ("scope", &format!("{scope} offline_access")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

/// Stores the pair of a token response as another process would (`fresh`: its real
/// lifetime; otherwise already expired locally).
async fn store_pair(rig: &Rig, response: &Value, scope: &str, fresh: bool) {
    let now = now();
    let (obtained_at, expires_at) = if fresh {
        (now, now + response["expires_in"].as_i64().unwrap())
    } else {
        (now - 3610, now - 10)
    };
    let tokens = defender_soar::state::StoredTokens {
        access_token: SecretString::from(response["access_token"].as_str().unwrap().to_string()),
        refresh_token: Some(SecretString::from(
            response["refresh_token"].as_str().unwrap().to_string(),
        )),
        expires_at,
        obtained_at,
        grant: "authorization_code".into(),
        scope: Some(scope.to_string()),
    };
    rig.store()
        .update("admin", move |s| {
            s.tokens = Some(tokens);
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
}

async fn stored(rig: &Rig) -> defender_soar::state::StoredTokens {
    rig.store().load("admin").await.unwrap().tokens.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_refresh_once_per_expiry() {
    let rig = rig().await;
    let second = rig.second_host().await;
    rig.consent("admin").await;
    for host in [&rig.host, &second] {
        let (status, body) = host
            .invoke("admin", "list_devices", json!({"limit": 1}))
            .await;
        assert_success(status, &body);
    }
    for round in 1..=3 {
        rig.sim.expire_access_tokens(None);
        let calls = (0..40).map(|i| {
            let host = if i % 2 == 0 { &rig.host } else { &second };
            host.invoke("admin", "list_devices", json!({"limit": 1}))
        });
        for (status, body) in futures::future::join_all(calls).await {
            assert_success(status, &body);
        }
        assert_eq!(rig.sim.counters().tokens("refresh_token"), round);
    }
    assert_eq!(rig.sim.counters().tokens("authorization_code"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_stored_while_waiting_for_the_token_lock_is_used_without_a_refresh() {
    let rig = rig().await;
    rig.consent("admin").await;
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_success(status, &body);
    let before = stored(&rig).await;
    let scope = before.scope.clone().unwrap();
    rig.sim.expire_access_tokens(None);

    // Another process holds the token lock while it refreshes and stores the new pair.
    let store = rig.store();
    let lock = store.lock_tokens("admin").await.unwrap();
    let other = async {
        until("the host's 401", || {
            rig.sim.counters().route_status("GET", "/api/machines", 401) == 1
        })
        .await;
        let response = redeem_elsewhere(&rig, before.refresh_token.as_ref().unwrap(), &scope).await;
        store_pair(&rig, &response, &scope, true).await;
        drop(lock);
        response
    };
    let ((status, body), response) = tokio::join!(
        rig.invoke("admin", "list_devices", json!({"limit": 1})),
        other
    );
    assert_success(status, &body);
    // Only the other process's refresh: the host used the pair it found under the lock.
    let c = rig.sim.counters();
    assert_eq!(c.tokens("refresh_token"), 1);
    assert_eq!(c.route("POST", "/{tenant}/oauth2/v2.0/token"), 2);
    let after = stored(&rig).await;
    assert_eq!(
        after.refresh_token.unwrap().expose_secret(),
        response["refresh_token"].as_str().unwrap()
    );
}

/// The host redeems the old refresh token (slowed down by the simulator) while another
/// process, not waiting for the lock, redeems it too and stores the newer pair: Entra refuses
/// the host's request, and the host uses the newer pair instead of asking for consent.
async fn refused_refresh_with_a_newer_pair(fresh: bool) {
    let rig = rig().await;
    rig.consent("admin").await;
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_success(status, &body);
    let before = stored(&rig).await;
    let scope = before.scope.clone().unwrap();
    rig.sim.expire_access_tokens(None);
    rig.sim.inject_fault(Fault {
        method: Some("POST".into()),
        path: "/*/oauth2/v2.0/token".into(),
        count: 1,
        kind: FaultKind::Delay { ms: 3000 },
    });
    let other = async {
        // The host's refresh has reached the simulator (and waits there).
        until("the host's refresh request", || {
            rig.sim.faults.lock().unwrap().is_empty()
        })
        .await;
        let response = redeem_elsewhere(&rig, before.refresh_token.as_ref().unwrap(), &scope).await;
        store_pair(&rig, &response, &scope, fresh).await;
        response
    };
    let ((status, body), response) = tokio::join!(
        rig.invoke("admin", "list_devices", json!({"limit": 1})),
        other
    );
    assert_success(status, &body);
    let c = rig.sim.counters();
    // The host's own request was refused (the old token was used up meanwhile).
    assert_eq!(
        c.route_status("POST", "/{tenant}/oauth2/v2.0/token", 400),
        1
    );
    let after = stored(&rig).await;
    let newer = response["refresh_token"].as_str().unwrap();
    if fresh {
        // The newer access token was used as it is.
        assert_eq!(c.tokens("refresh_token"), 1);
        assert_eq!(after.refresh_token.unwrap().expose_secret(), newer);
    } else {
        // The newer refresh token was redeemed once.
        assert_eq!(c.tokens("refresh_token"), 2);
        let rt = after.refresh_token.unwrap().expose_secret().to_string();
        assert_ne!(rt, newer);
        assert_ne!(rt, before.refresh_token.unwrap().expose_secret());
    }
    // No consent mark left behind.
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_success(status, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_uses_a_fresh_pair_another_process_stored() {
    refused_refresh_with_a_newer_pair(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_redeems_a_newer_refresh_token_another_process_stored() {
    refused_refresh_with_a_newer_pair(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_mark_does_not_hide_a_pair_another_host_stored() {
    let rig = rig().await;
    let second = rig.second_host().await;
    rig.consent("admin").await;
    rig.sim.revoke_refresh_tokens(None);
    rig.sim.expire_access_tokens(None);
    // The first host finds the grant dead.
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 409);

    // An admin consents through the other host: the first one uses the new pair at once.
    consent_on(&rig, &second).await;
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_success(status, &body);
    let (status, body) = rig.invoke("admin", "test_connectivity", json!({})).await;
    assert_success(status, &body);
    let c = rig.sim.counters();
    assert_eq!(c.tokens("authorization_code"), 2);
    // test_connectivity's Graph token came from the new refresh token.
    assert_eq!(c.tokens("refresh_token"), 1);

    // And when the new pair's access token expires too, it refreshes with the new refresh
    // token rather than reporting the old one dead again.
    rig.sim.expire_access_tokens(None);
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_success(status, &body);
    assert_eq!(rig.sim.counters().tokens("refresh_token"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_completed_during_a_refresh_is_kept() {
    let rig = rig().await;
    let second = rig.second_host().await;
    rig.consent("admin").await;
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_success(status, &body);
    rig.sim.expire_access_tokens(None);
    rig.sim.inject_fault(Fault {
        method: Some("POST".into()),
        path: "/*/oauth2/v2.0/token".into(),
        count: 1,
        kind: FaultKind::Delay { ms: 3000 },
    });
    // While the first host's refresh waits at the simulator, an admin connects the asset
    // again through the second host (a consent does not wait for the token lock).
    let other = async {
        until("the host's refresh request", || {
            rig.sim.faults.lock().unwrap().is_empty()
        })
        .await;
        consent_on(&rig, &second).await;
        stored(&rig).await
    };
    let ((status, body), consented) = tokio::join!(
        rig.invoke("admin", "list_devices", json!({"limit": 1})),
        other
    );
    assert_success(status, &body);
    let c = rig.sim.counters();
    assert_eq!(c.tokens("refresh_token"), 1);
    assert_eq!(c.tokens("authorization_code"), 2);
    // The refresh of the old grant did not overwrite the new consent's pair.
    let after = stored(&rig).await;
    assert_eq!(
        after.refresh_token.unwrap().expose_secret(),
        consented.refresh_token.unwrap().expose_secret()
    );
    assert_eq!(
        after.access_token.expose_secret(),
        consented.access_token.expose_secret()
    );
}
