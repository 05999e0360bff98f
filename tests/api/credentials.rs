//! Certificate and managed identity assets, and client secret rotation through the secret
//! file, against the simulator.

use std::path::{Path, PathBuf};

use defender_soar::auth::certificate::ClientCertificate;
use defender_soar::config::{AssetConfig, AuthKind, ManagedIdentityConfig, TokenEndpoint};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;

const KEY_PASSWORD: &str = "test-only-password";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/certificate")
        .join(name)
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// The default scenario with the test certificate registered for the first app.
fn scenario() -> defender_sim::Scenario {
    let mut s = defender_sim::Scenario::default_scenario();
    s.tenants[0].apps[0].certificates = vec![fixture_text("test-only-cert.pem")];
    s
}

/// A certificate asset on the first app.
fn certificate_asset(
    id: &str,
    s: &defender_sim::Scenario,
    base: &str,
    cert: &str,
    key: &str,
    password: Option<&str>,
) -> AssetConfig {
    let mut a = asset(id, s, base);
    a.auth = AuthKind::Certificate;
    a.client_secret = None;
    let password = password.map(|p| SecretString::from(p.to_string()));
    a.certificate =
        Some(ClientCertificate::load(&fixture(cert), &fixture(key), password.as_ref()).unwrap());
    a
}

fn assert_no_key_material(text: &str, what: &str) {
    assert!(!text.contains("PRIVATE KEY"), "key in {what}");
    assert!(!text.contains(KEY_PASSWORD), "key password in {what}");
    for name in ["test-only-key.pkcs8.pem", "test-only-key.pkcs1.pem"] {
        let body = fixture_text(name);
        let line = body.lines().nth(3).unwrap();
        assert!(!text.contains(line), "key material of {name} in {what}");
    }
    assert!(!text.contains("eyJ"), "a JWT in {what}");
}

#[tokio::test]
async fn certificate_assets_connect_on_v1_and_v2_and_wrong_ones_fail_clearly() {
    let rig = Rig::new(scenario(), |s, base| {
        let mut v1 = certificate_asset(
            "cert_v1",
            s,
            base,
            "test-only-cert.pem",
            "test-only-key.pkcs1.pem",
            None,
        );
        v1.token_endpoint = TokenEndpoint::V1;
        vec![
            certificate_asset(
                "cert_v2",
                s,
                base,
                "test-only-cert.pem",
                "test-only-key.pkcs8.pem",
                None,
            ),
            v1,
            certificate_asset(
                "cert_encrypted",
                s,
                base,
                "test-only-cert.pem",
                "test-only-key.encrypted.pem",
                Some(KEY_PASSWORD),
            ),
            certificate_asset(
                "cert_unregistered",
                s,
                base,
                "other-test-only-cert.pem",
                "other-test-only-key.pem",
                None,
            ),
        ]
    })
    .await;
    let mut bodies = Vec::new();
    for (asset, endpoint) in [
        ("cert_v2", "v2"),
        ("cert_v1", "v1"),
        ("cert_encrypted", "v2"),
    ] {
        let (status, body) = rig.host.invoke(asset, "test_connectivity", json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{asset}: {body}");
        assert_eq!(body["summary"]["token_endpoint"], endpoint);
        let granted = body["summary"]["granted_permissions"].as_array().unwrap();
        assert!(granted.iter().any(|p| p == "Machine.Isolate"), "{body}");
        bodies.push(body);
    }
    let c = rig.sim.counters();
    // One per audience and asset (the Defender API and Microsoft Graph).
    assert_eq!(c.tokens("certificate"), 6);
    assert_eq!(c.tokens("client_credentials"), 0);
    // The token is used for actions too.
    let (_, listed) = rig
        .host
        .invoke("cert_v2", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(listed["status"], "success", "{listed}");
    assert_eq!(
        rig.sim.counters().tokens("certificate"),
        6,
        "cached token reused"
    );

    let (status, body) = rig
        .host
        .invoke("cert_unregistered", "test_connectivity", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("certificate rejected (AADSTS700027)")
            && message.contains("not registered for app"),
        "{message}"
    );
    bodies.push(body);
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert_no_key_material(&logs, "logs");
    for b in &bodies {
        assert_no_key_material(&b.to_string(), "a response");
    }
}

#[tokio::test]
async fn managed_identity_assets_connect_through_the_metadata_endpoint() {
    const IDENTITY: &str = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d6e7f";
    let rig = Rig::new(scenario(), |s, base| {
        let identity = |id: &str, client_id: Option<&str>| {
            let mut a = asset(id, s, base);
            a.auth = AuthKind::ManagedIdentity;
            a.client_secret = None;
            a.client_id = client_id.unwrap_or_default().to_string();
            a.managed_identity = Some(ManagedIdentityConfig {
                client_id: client_id.map(str::to_string),
                url: format!("{base}/metadata/identity/oauth2/token"),
            });
            a
        };
        vec![
            identity("system", None),
            identity("user_assigned", Some(IDENTITY)),
            identity("unknown", Some("00000000-0000-4000-8000-000000000009")),
        ]
    })
    .await;
    for asset in ["system", "user_assigned"] {
        let (status, body) = rig.host.invoke(asset, "test_connectivity", json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{asset}: {body}");
        assert_eq!(body["summary"]["token_endpoint"], "managed identity");
        let granted: Vec<&str> = body["summary"]["granted_permissions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            granted,
            ["Machine.Read.All", "Machine.Isolate", "Alert.Read.All"]
        );
    }
    // One per audience and asset (the Defender API and Microsoft Graph).
    assert_eq!(rig.sim.counters().tokens("managed_identity"), 4);
    // The identity's roles are what the permission preflight checks.
    let (_, body) = rig
        .host
        .invoke(
            "system",
            "restrict_app_execution",
            json!({"device_id": "f1eb97a430ca4c315e219960cd146874419fbefc", "comment": "x"}),
        )
        .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("managed identity's service principal"),
        "{body}"
    );
    let (_, body) = rig
        .host
        .invoke("unknown", "test_connectivity", json!({}))
        .await;
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("Identity not found")
            && message.contains("00000000-0000-4000-8000-000000000009"),
        "{message}"
    );
}

/// Sets the first app's secret through the simulator's control API.
async fn set_sim_secret(rig: &Rig, secret: &str) {
    let client = reqwest::Client::new();
    let base = rig.sim.base_url();
    let mut scenario: Value = client
        .get(format!("{base}/_sim/scenario"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    scenario["tenants"][0]["apps"][0]["secret"] = json!(secret);
    let resp = client
        .put(format!("{base}/_sim/scenario"))
        .json(&scenario)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Tokens issued with the old secret stop working, so the next call needs a new one.
    let resp = client
        .post(format!("{base}/_sim/tokens/expire"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_rotated_secret_file_is_used_without_restart() {
    const FIRST: &str = "rotated-secret-one-4b1f";
    const SECOND: &str = "rotated-secret-two-9c2e";
    const THIRD: &str = "rotated-secret-3-77d0ab";
    assert_eq!(SECOND.len(), THIRD.len());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client-secret");
    std::fs::write(&file, format!("{FIRST}\n")).unwrap();
    let mut s = scenario();
    s.tenants[0].apps[0].secret = FIRST.to_string();
    let path = file.clone();
    let rig = Rig::new(s, move |s, base| {
        let mut a = asset("rotating", s, base);
        a.client_secret = Some(SecretString::from(FIRST.to_string()));
        a.client_secret_file = Some(path);
        vec![a]
    })
    .await;
    let (_, body) = rig
        .host
        .invoke("rotating", "test_connectivity", json!({}))
        .await;
    assert_eq!(body["status"], "success", "{body}");

    // Rotation: the app gets a new secret, then the file is rewritten.
    set_sim_secret(&rig, SECOND).await;
    std::fs::write(&file, format!("{SECOND}\n")).unwrap();
    let (_, body) = rig
        .host
        .invoke("rotating", "list_devices", json!({"limit": 1}))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    let c = rig.sim.counters();
    assert_eq!(
        c.tokens("client_credentials"),
        1,
        "one new token after the rotation"
    );

    // A rewrite the cheap check cannot see (same length, same modification time): the
    // refused secret makes the host read the file again and retry once.
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    set_sim_secret(&rig, THIRD).await;
    std::fs::write(&file, format!("{THIRD}\n")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let (_, body) = rig
        .host
        .invoke("rotating", "test_connectivity", json!({}))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    let c = rig.sim.counters();
    assert_eq!(
        c.tokens("client_credentials"),
        2,
        "refused once, then issued (and one for Microsoft Graph)"
    );
    assert_eq!(
        c.route_status("POST", "/{tenant}/oauth2/v2.0/token", 401),
        1,
        "one refusal before the retry"
    );

    // A secret that is wrong in the file too fails after one attempt, with a clear message.
    set_sim_secret(&rig, "a-secret-nobody-has").await;
    let (_, body) = rig
        .host
        .invoke("rotating", "test_connectivity", json!({}))
        .await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("client secret rejected (AADSTS7000215)"),
        "{body}"
    );
    assert_eq!(
        rig.sim
            .counters()
            .route_status("POST", "/{tenant}/oauth2/v2.0/token", 401),
        1,
        "an unchanged file is not retried"
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(
        logs.contains("client secret file changed"),
        "rotation is logged"
    );
    for secret in [FIRST, SECOND, THIRD] {
        assert!(!logs.contains(secret), "a client secret in the logs");
        assert!(!body.to_string().contains(secret));
    }
}
