//! Device code sign-in (`auth = "device_code"`): the host asks the simulator for a code, the
//! test completes `/devicelogin` as the admin would on another device, and the host's
//! background poll stores the pair; declined and expired codes store nothing.

use std::time::Duration;

use defender_sim::Scenario;
use defender_soar::auth::DeviceCodeOutcome;
use defender_soar::config::{AuthKind, TokenEndpoint};
use serde_json::json;

use crate::helpers::{Rig, asset, logs};

/// Polls every second.
fn scenario() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.device_code_interval_secs = 1;
    s
}

async fn rig() -> Rig {
    Rig::new(scenario(), |s, base| {
        let mut dc = asset("dc", s, base);
        dc.auth = AuthKind::DeviceCode;
        let mut public = asset("dc_public", s, base);
        public.auth = AuthKind::DeviceCode;
        public.client_secret = None;
        public.token_endpoint = TokenEndpoint::V1;
        let mut interactive = asset("interactive", s, base);
        interactive.auth = AuthKind::AuthorizationCode;
        vec![dc, public, interactive]
    })
    .await
}

/// Submits the simulator's `/devicelogin` form as the admin would.
async fn enter_code(rig: &Rig, user_code: &str, user: &str, decision: &str) {
    let page = rig
        .browser
        .get(format!("{}/devicelogin", rig.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("id=\"devicelogin\""));
    let resp = rig
        .browser
        .post(format!("{}/devicelogin", rig.sim.base_url()))
        .form(&[("code", user_code), ("user", user), ("decision", decision)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
}

/// The outcome once the sign-in is no longer pending (20 s at most).
async fn outcome(rig: &Rig, asset: &str) -> DeviceCodeOutcome {
    let mut rx = rig
        .host
        .app
        .asset(asset)
        .unwrap()
        .tokens
        .device_code_outcome();
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|o| !matches!(o, DeviceCodeOutcome::Pending { .. })),
    )
    .await
    .expect("the sign-in did not end in time")
    .unwrap()
    .clone()
}

/// The device codes the simulator handed out.
fn device_codes(rig: &Rig) -> Vec<String> {
    rig.sim.world().device_codes.keys().cloned().collect()
}

#[tokio::test]
async fn device_code_sign_in_connects_the_asset() {
    let rig = rig().await;
    let tokens = rig.host.app.asset("dc").unwrap().tokens.clone();

    // Before any sign-in, the asset points the admin to the consent command and route.
    let (status, body) = rig.invoke("dc", "test_connectivity", json!({})).await;
    assert_eq!(status, 409, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("defender-soar consent dc"), "{message}");
    assert!(message.contains("/assets/dc/consent"), "{message}");
    assert!(!message.contains("start_oauth"), "{message}");

    let start = tokens.start_device_code().await.unwrap();
    assert_eq!(start.user_code.len(), 9);
    assert_eq!(
        start.verification_uri,
        format!("{}/devicelogin", rig.sim.base_url())
    );
    assert_eq!(start.interval, 1);
    assert!(start.expires_in > 800 && start.expires_in <= 900);
    assert!(start.message.contains(&start.user_code));
    // A second start while pending (here through the API) answers the same code, without
    // asking Entra again.
    let (status, again) = rig.host.request_consent("dc").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["summary"]["auth"], "device_code");
    assert_eq!(again["summary"]["user_code"], start.user_code.as_str());
    assert_eq!(
        again["summary"]["verification_uri"],
        start.verification_uri.as_str()
    );
    assert_eq!(
        rig.sim
            .counters()
            .route("POST", "/{tenant}/oauth2/v2.0/devicecode"),
        1
    );
    let codes = device_codes(&rig);
    assert_eq!(codes.len(), 1);
    assert!(!format!("{start:?}").contains(&codes[0]));

    // test_connectivity waits for the sign-in over HTTP.
    let waiting = {
        let client = rig.host.client.clone();
        let url = rig.host.url("/assets/dc/actions/test_connectivity");
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(crate::helpers::API_KEY)
                .json(&json!({"parameters": {"wait_for_consent": 30}}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        })
    };
    enter_code(
        &rig,
        &start.user_code,
        "analyst@contoso.onmicrosoft.com",
        "accept",
    )
    .await;
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["data"][0]["permission_claim"], "scp", "{body}");

    assert_eq!(
        outcome(&rig, "dc").await,
        DeviceCodeOutcome::Connected {
            user: Some("analyst@contoso.onmicrosoft.com".into()),
            oid: Some("0d3b1f7e-52a4-4c1e-9a0b-6c2d8e4f1a02".into()),
        }
    );
    let stored = rig.store().load("dc").await.unwrap().tokens.unwrap();
    assert_eq!(stored.grant, "device_code");
    assert!(stored.refresh_token.is_some());
    assert_eq!(rig.sim.counters().tokens("device_code"), 1);

    // An action runs with the delegated token; after the access token expires, the refresh
    // token takes over and the pair keeps its grant name.
    let (status, body) = rig.invoke("dc", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    rig.sim.expire_access_tokens(None);
    let (status, body) = rig.invoke("dc", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    // One refresh for the Graph token of test_connectivity, one for the expired token.
    assert_eq!(rig.sim.counters().tokens("refresh_token"), 2);
    let stored = rig.store().load("dc").await.unwrap().tokens.unwrap();
    assert_eq!(stored.grant, "device_code");

    // The device code appears nowhere: logs, state file, answers.
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    let raw = String::from_utf8_lossy(&rig.state_bytes("dc").unwrap()).to_string();
    for code in &codes {
        assert!(!logged.contains(code.as_str()), "device code logged");
        assert!(!raw.contains(code.as_str()));
        assert!(!body.to_string().contains(code.as_str()));
    }
}

#[tokio::test]
async fn declined_sign_in_stores_nothing() {
    let rig = rig().await;
    let tokens = rig.host.app.asset("dc_public").unwrap().tokens.clone();
    let start = tokens.start_device_code().await.unwrap();
    // v1 endpoint, public client (no secret).
    assert_eq!(
        rig.sim
            .counters()
            .route("POST", "/{tenant}/oauth2/devicecode"),
        1
    );
    enter_code(
        &rig,
        &start.user_code,
        "admin@contoso.onmicrosoft.com",
        "decline",
    )
    .await;
    match outcome(&rig, "dc_public").await {
        DeviceCodeOutcome::Failed { message } => {
            assert!(message.contains("declined"), "{message}");
            assert!(message.contains("dc_public"), "{message}");
        }
        other => panic!("not a failure: {other:?}"),
    }
    assert!(
        rig.store()
            .load("dc_public")
            .await
            .unwrap()
            .tokens
            .is_none()
    );
    assert_eq!(rig.sim.counters().tokens_total(), 0);
    let (status, body) = rig
        .invoke("dc_public", "test_connectivity", json!({}))
        .await;
    assert_eq!(status, 409, "{body}");

    // A new start after the failure hands out a new code, and that one can succeed.
    let next = tokens.start_device_code().await.unwrap();
    assert_ne!(next.user_code, start.user_code);
    enter_code(
        &rig,
        &next.user_code,
        "admin@contoso.onmicrosoft.com",
        "accept",
    )
    .await;
    assert!(matches!(
        outcome(&rig, "dc_public").await,
        DeviceCodeOutcome::Connected { .. }
    ));
    let stored = rig.store().load("dc_public").await.unwrap().tokens.unwrap();
    assert_eq!(stored.grant, "device_code");
}

#[tokio::test]
async fn expired_code_stores_nothing_and_says_so() {
    let rig = rig().await;
    let tokens = rig.host.app.asset("dc").unwrap().tokens.clone();
    let start = tokens.start_device_code().await.unwrap();
    rig.sim.clock.advance(Duration::from_secs(901));
    match outcome(&rig, "dc").await {
        DeviceCodeOutcome::Failed { message } => {
            assert!(message.contains("expired"), "{message}");
            assert!(message.contains("defender-soar consent dc"), "{message}");
        }
        other => panic!("not a failure: {other:?}"),
    }
    assert!(rig.store().load("dc").await.unwrap().tokens.is_none());
    // Entering the code now is refused by the sign-in page too.
    let resp = rig
        .browser
        .post(format!("{}/devicelogin", rig.sim.base_url()))
        .form(&[("code", start.user_code.as_str()), ("decision", "accept")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn other_auth_kinds_refuse_device_code() {
    let rig = rig().await;
    let err = rig
        .host
        .app
        .asset("interactive")
        .unwrap()
        .tokens
        .start_device_code()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/assets/interactive/consent"), "{err}");
    assert_eq!(
        rig.sim
            .counters()
            .route("POST", "/{tenant}/oauth2/v2.0/devicecode"),
        0
    );
}

/// `defender-soar consent ASSET --config FILE` against the simulator: prints the code, waits
/// for the sign-in, names who connected; the tokens land in the state directory.
#[tokio::test]
async fn consent_command_signs_in_with_a_device_code() {
    use tokio::io::AsyncBufReadExt;

    let s = scenario();
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), s.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tenant = s.first_tenant().unwrap();
    let app = tenant.apps.first().unwrap();
    let state = dir.path().join("state");
    let config = format!(
        r#"[assets.dc]
tenant_id = "{tenant}"
client_id = "{client}"
auth = "device_code"
login_url = "{base}"
api_url = "{base}"

[assets.interactive]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_env = "DEVICE_TEST_SECRET"
auth = "authorization_code"
login_url = "{base}"
api_url = "{base}"

[server]
state_dir = "{state}"
"#,
        tenant = tenant.id,
        client = app.client_id,
        base = sim.base_url(),
        state = state.display(),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let command = |asset: &str| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_defender-soar"));
        c.arg("consent")
            .arg(asset)
            .arg("--config")
            .arg(&path)
            .env("DEVICE_TEST_SECRET", &app.secret)
            .env_remove("DEFENDER_SOAR_STATE_KEY")
            .env_remove("DEFENDER_SOAR_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DEFENDER_SOAR__") {
                c.env_remove(name);
            }
        }
        c
    };

    // An interactive asset is pointed to the browser consent.
    let out = command("interactive").output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/assets/interactive/consent"), "{err}");

    let mut child = command("dc").spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let user_code = first
        .split("enter the code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {first}"))
        .to_string();
    assert!(
        first.contains(&format!("{}/devicelogin", sim.base_url())),
        "{first}"
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/devicelogin", sim.base_url()))
        .form(&[
            ("code", user_code.as_str()),
            ("user", "admin@contoso.onmicrosoft.com"),
            ("decision", "accept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut rest = String::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{rest}\n{stderr}");
    assert!(
        rest.contains("asset 'dc' connected: signed in as admin@contoso.onmicrosoft.com"),
        "{rest}"
    );
    for code in sim.world().device_codes.keys() {
        assert!(!rest.contains(code.as_str()) && !stderr.contains(code.as_str()));
    }
    let stored = defender_soar::state::StateStore::open(&state)
        .unwrap()
        .load("dc")
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_eq!(stored.grant, "device_code");
    assert!(stored.refresh_token.is_some());
}

#[tokio::test]
async fn a_device_code_sign_in_from_another_tenant_stores_nothing() {
    let rig = rig().await;
    let (status, body) = rig.host.request_consent("dc").await;
    assert_eq!(status, 200, "{body}");
    let user_code = body["summary"]["user_code"].as_str().unwrap().to_string();
    let before = rig.state_bytes("dc");
    enter_code(
        &rig,
        &user_code,
        "mallory@northwind.onmicrosoft.com",
        "accept",
    )
    .await;
    match outcome(&rig, "dc").await {
        DeviceCodeOutcome::Failed { message } => {
            assert!(message.contains("signed in from tenant"), "{message}");
            assert!(
                message.contains("mallory@northwind.onmicrosoft.com"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(rig.state_bytes("dc"), before);
    let (status, _) = rig.invoke("dc", "list_devices", json!({})).await;
    assert_eq!(status, 409);
}
