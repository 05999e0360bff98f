//! The second token audience: every asset has a Microsoft Graph token beside its Defender one,
//! from the same credentials and state file. For delegated grants the asset's one refresh token
//! is redeemed for either audience and its rotation is kept for both.

use defender_sim::Scenario;
use defender_soar::auth::Audience;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::*;

async fn rig() -> Rig {
    let mut scenario = Scenario::default_scenario();
    scenario.rate_limits.disabled = true;
    Rig::new(scenario, |s, base| {
        vec![
            asset("contoso", s, base),
            asset_on_app("reader", s, base, 1),
            interactive_asset("admin", s, base, 0),
        ]
    })
    .await
}

/// The `aud` claim of a JWT.
fn audience_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["aud"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn test_connectivity_reports_graph_permissions_beside_defender_ones() {
    let rig = rig().await;
    let (status, body) = rig.invoke("contoso", "test_connectivity", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["graph_token_acquired"], true, "{body}");
    let graph = body["summary"]["graph_permissions"].as_array().unwrap();
    assert!(
        graph.contains(&json!("SecurityIncident.ReadWrite.All")),
        "{body}"
    );
    // The Defender permissions are not in the Graph token, nor the other way round.
    assert!(!graph.contains(&json!("Machine.Isolate")), "{body}");
    let defender = body["summary"]["granted_permissions"].as_array().unwrap();
    assert!(
        !defender.contains(&json!("SecurityAlert.Read.All")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Microsoft Graph: 5 permissions")
    );
    // One token request per audience.
    let c = rig.sim.counters();
    assert_eq!(c.tokens("client_credentials"), 2);
    let store = rig.store().load("contoso").await.unwrap();
    let graph_token = store.graph_tokens.expect("the Graph token is stored");
    assert_eq!(
        audience_of(graph_token.access_token.expose_secret()),
        "https://graph.microsoft.com"
    );
    assert_eq!(
        audience_of(store.tokens.unwrap().access_token.expose_secret()),
        "https://api.securitycenter.microsoft.com"
    );

    // The read-only app has one Graph permission: the rest is reported as missing per action.
    let (status, body) = rig.invoke("reader", "test_connectivity", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["summary"]["graph_permissions"],
        json!(["SecurityAlert.Read.All"])
    );
}

#[tokio::test]
async fn a_burst_shares_one_token_request_per_audience() {
    let rig = rig().await;
    let asset = rig.host.app.asset("contoso").unwrap();
    let graph = (0..100).map(|_| asset.graph_tokens.token());
    let defender = (0..100).map(|_| asset.tokens.token());
    let (graph, defender) = futures::future::join(
        futures::future::join_all(graph),
        futures::future::join_all(defender),
    )
    .await;
    assert!(graph.iter().chain(defender.iter()).all(Result::is_ok));
    assert_eq!(rig.sim.counters().tokens("client_credentials"), 2);
    assert_eq!(asset.graph_tokens.audience(), Audience::Graph);
    // A restarted host takes both tokens from the state file.
    let mut rig = rig;
    rig.restart().await;
    let asset = rig.host.app.asset("contoso").unwrap();
    asset.graph_tokens.token().await.unwrap();
    asset.tokens.token().await.unwrap();
    assert_eq!(rig.sim.counters().tokens("client_credentials"), 2);
}

#[tokio::test]
async fn one_refresh_token_serves_both_audiences_and_its_rotation_is_kept() {
    let rig = rig().await;
    rig.consent("admin").await;
    let asset = rig.host.app.asset("admin").unwrap();
    let before = rig.store().load("admin").await.unwrap();
    let first_rt = before
        .tokens
        .as_ref()
        .unwrap()
        .refresh_token
        .clone()
        .unwrap();
    assert!(before.graph_tokens.is_none());

    // The Graph token comes from the consent's refresh token, which rotates.
    let graph = asset.graph_tokens.token().await.unwrap();
    assert_eq!(
        audience_of(graph.secret.expose_secret()),
        "https://graph.microsoft.com"
    );
    assert_eq!(rig.sim.counters().tokens("refresh_token"), 1);
    let after = rig.store().load("admin").await.unwrap();
    let pair = after.tokens.unwrap();
    let rotated = pair.refresh_token.unwrap();
    assert_ne!(rotated.expose_secret(), first_rt.expose_secret());
    assert!(after.graph_tokens.unwrap().refresh_token.is_none());
    // The Defender access token from the consent is still the one in use.
    assert_eq!(
        pair.access_token.expose_secret(),
        before.tokens.unwrap().access_token.expose_secret()
    );

    // When the Defender token expires, the rotated refresh token (not the dead first one)
    // renews it, and actions keep working; nobody is asked to consent again.
    rig.sim.expire_access_tokens(None);
    let (status, body) = rig
        .invoke("admin", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(rig.sim.counters().tokens("refresh_token"), 2);

    // A new consent drops the Graph token of the previous grant.
    rig.consent("admin").await;
    assert!(
        rig.store()
            .load("admin")
            .await
            .unwrap()
            .graph_tokens
            .is_none()
    );
}

#[tokio::test]
async fn the_simulator_keeps_the_audiences_apart() {
    let rig = rig().await;
    let asset = rig.host.app.asset("contoso").unwrap();
    let graph = asset.graph_tokens.token().await.unwrap();
    // A Graph token is refused by the Defender API.
    let resp = reqwest::Client::new()
        .get(format!("{}/api/machines", rig.sim.base_url()))
        .bearer_auth(graph.secret.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // And the host's Defender calls still use the Defender token.
    let (status, body) = rig
        .invoke("contoso", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
}
