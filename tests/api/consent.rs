//! Interactive consent through the host: /start_oauth → the simulator's consent page → /result,
//! and every way a consent answer can be wrong (each changes nothing stored).

use std::os::unix::fs::PermissionsExt;

use defender_sim::Scenario;
use defender_soar::auth::consent::hash_state;
use defender_soar::config::TokenEndpoint;
use defender_soar::state::ConsentSession;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::helpers::*;

/// `admin` consents interactively (v2), `admin_v1` too on the v1 endpoints, `other` is a second
/// interactive asset, `contoso` uses client credentials.
async fn rig() -> Rig {
    Rig::new(Scenario::default_scenario(), |s, base| {
        let mut v1 = interactive_asset("admin_v1", s, base, 0);
        v1.token_endpoint = TokenEndpoint::V1;
        vec![
            interactive_asset("admin", s, base, 0),
            v1,
            interactive_asset("other", s, base, 0),
            asset("contoso", s, base),
        ]
    })
    .await
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts the headers every consent page carries.
fn assert_secure_page(page: &Page) {
    assert!(page.header("content-type").starts_with("text/html"));
    assert_eq!(
        page.header("content-security-policy").split(';').next(),
        Some("default-src 'none'")
    );
    assert!(
        page.header("content-security-policy")
            .contains("style-src 'unsafe-inline'")
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert!(page.header("cache-control").contains("no-store"));
    assert_eq!(page.header("referrer-policy"), "no-referrer");
}

#[tokio::test]
async fn full_consent_connects_the_asset_and_actions_run_on_delegated_permissions() {
    let rig = rig().await;
    let sim = rig.sim.base_url();
    let tenant = Scenario::default_scenario()
        .first_tenant()
        .unwrap()
        .id
        .clone();

    // /start_oauth answers 302 to the v2 authorize endpoint with state, PKCE and redirect_uri.
    let resp = rig.host.open_get("/start_oauth?asset_id=admin").await;
    assert_eq!(resp.status().as_u16(), 302);
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let authorize = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        authorize.starts_with(&format!("{sim}/{tenant}/oauth2/v2.0/authorize?")),
        "{authorize}"
    );
    assert_eq!(query_param(&authorize, "response_type").unwrap(), "code");
    assert_eq!(query_param(&authorize, "response_mode").unwrap(), "query");
    assert_eq!(
        query_param(&authorize, "code_challenge_method").unwrap(),
        "S256"
    );
    assert_eq!(query_param(&authorize, "code_challenge").unwrap().len(), 43);
    assert_eq!(
        query_param(&authorize, "redirect_uri").unwrap(),
        rig.host.url("/result")
    );
    let scope = query_param(&authorize, "scope").unwrap();
    assert!(
        scope.contains("https://api.securitycenter.microsoft.com/.default")
            && scope.contains("offline_access"),
        "{scope}"
    );
    let state = query_param(&authorize, "state").unwrap();
    let (prefix, random) = state.split_once('.').unwrap();
    assert_eq!(prefix, "admin");
    assert!(random.len() >= 43, "{state}");

    // The session is in the state file: mode 0600, only the state's hash, no verifier in clear.
    let file = rig.state_file("admin");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored = rig.store().load("admin").await.unwrap();
    assert_eq!(stored.consent_sessions.len(), 1);
    assert_eq!(stored.consent_sessions[0].state_hash, hash_state(&state));
    let verifier = stored.consent_sessions[0]
        .verifier
        .expose_secret()
        .to_string();
    let raw = String::from_utf8_lossy(&rig.state_bytes("admin").unwrap()).to_string();
    assert!(!raw.contains(&state) && !raw.contains(random));
    assert!(!raw.contains(&verifier));

    // Accept on the simulator's consent page; the browser comes back with code and state.
    let back = rig.decide(&authorize, "accept").await;
    assert!(back.starts_with(&rig.host.url("/result?")), "{back}");
    let code = query_param(&back, "code").unwrap();
    assert_eq!(query_param(&back, "state").unwrap(), state);
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_secure_page(&page);
    assert!(
        page.body.contains("Asset admin is now connected"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Machine.Isolate"), "{}", page.body);

    // Tokens stored, the session gone, nothing secret in clear.
    let stored = rig.store().load("admin").await.unwrap();
    assert!(stored.consent_sessions.is_empty());
    let tokens = stored.tokens.expect("tokens stored");
    assert_eq!(tokens.grant, "authorization_code");
    let access = tokens.access_token.expose_secret().to_string();
    let refresh = tokens
        .refresh_token
        .expect("refresh token")
        .expose_secret()
        .to_string();
    let raw = String::from_utf8_lossy(&rig.state_bytes("admin").unwrap()).to_string();
    assert!(!raw.contains(&access) && !raw.contains(&refresh) && !raw.contains(&code));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // An action runs on the stored token, whose permissions come from `scp`.
    let (status, body) = rig.invoke("admin", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let (status, body) = rig.invoke("admin", "test_connectivity", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["data"][0]["permission_claim"], "scp", "{body}");
    let c = rig.sim.counters();
    assert_eq!(c.tokens("authorization_code"), 1);
    assert_eq!(c.tokens("refresh_token"), 0);
    assert_eq!(c.tokens("client_credentials"), 0);

    // The same answer a second time (a replay) is refused and changes nothing.
    let before = rig.state_bytes("admin");
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_secure_page(&page);
    assert!(page.body.contains("already used"), "{}", page.body);
    assert!(!page.body.contains("is now connected"));
    assert_eq!(rig.state_bytes("admin"), before);
    assert_eq!(rig.sim.counters().tokens("authorization_code"), 1);

    // No secret of the flow reached the logs.
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    for secret in [&state, &code, &verifier, &access, &refresh] {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
}

#[tokio::test]
async fn v1_consent_uses_the_resource_parameter() {
    let rig = rig().await;
    let authorize = rig.start_consent("admin_v1").await;
    assert!(authorize.contains("/oauth2/authorize?"), "{authorize}");
    assert_eq!(
        query_param(&authorize, "resource").unwrap(),
        "https://api.securitycenter.microsoft.com"
    );
    assert_eq!(query_param(&authorize, "scope"), None);
    let back = rig.decide(&authorize, "accept").await;
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Asset admin_v1 is now connected"));
    let (status, body) = rig.invoke("admin_v1", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
}

#[tokio::test]
async fn forged_foreign_and_incomplete_answers_change_nothing() {
    let rig = rig().await;
    let authorize = rig.start_consent("admin").await;
    let state = query_param(&authorize, "state").unwrap();
    let random = state.split_once('.').unwrap().1.to_string();
    let back = rig.decide(&authorize, "accept").await;
    let code = query_param(&back, "code").unwrap();
    let admin_before = rig.state_bytes("admin").unwrap();
    assert_eq!(rig.state_bytes("other"), None);

    let forged = format!("admin.{}", "A".repeat(43));
    let cases: Vec<(String, &str)> = vec![
        // A state this host never issued.
        (
            format!("/result?code={code}&state={forged}"),
            "Unknown consent",
        ),
        // Asset admin's state presented with asset other's id.
        (
            format!("/result?code={code}&state=other.{random}"),
            "Unknown consent",
        ),
        // A malformed state.
        (
            format!("/result?code={code}&state=..%2F..%2Fetc"),
            "Unknown consent",
        ),
        // No state at all.
        (format!("/result?code={code}"), "Missing state"),
        // A state naming an asset that does not exist.
        (
            format!("/result?code={code}&state=nosuch.{random}"),
            "Unknown asset",
        ),
        // A client-credentials asset has no consent sessions.
        (
            format!("/result?code={code}&state=contoso.{random}"),
            "Unknown consent",
        ),
        // The right state without a code.
        (format!("/result?state={state}"), "No authorization code"),
    ];
    for (path, expected) in cases {
        let page = Page::from(rig.host.open_get(&path).await).await;
        assert_eq!(page.status, 400, "{path}: {}", page.body);
        assert_secure_page(&page);
        assert!(page.body.contains(expected), "{path}: {}", page.body);
        assert!(!page.body.contains("is now connected"), "{path}");
        assert!(!page.body.contains(&code), "{path}: the code is echoed");
        assert_eq!(rig.state_bytes("admin").unwrap(), admin_before, "{path}");
        assert_eq!(rig.state_bytes("other"), None, "{path}");
        assert_eq!(rig.state_bytes("nosuch"), None, "{path}");
    }
    // The code was never redeemed: the genuine answer still works afterwards.
    assert_eq!(rig.sim.counters().tokens("authorization_code"), 0);
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.body);
}

#[tokio::test]
async fn an_expired_session_is_refused_and_changes_nothing() {
    let rig = rig().await;
    // A session that expired a minute ago, written through the store.
    let state = format!("admin.{}", "e".repeat(43));
    let session = ConsentSession {
        state_hash: hash_state(&state),
        verifier: SecretString::from("v".repeat(64)),
        created_at: now() - 660,
        expires_at: now() - 60,
    };
    rig.store()
        .update("admin", move |s| {
            s.consent_sessions.push(session);
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
    let before = rig.state_bytes("admin").unwrap();
    let page = Page::from(
        rig.host
            .open_get(&format!("/result?code=some-code&state={state}"))
            .await,
    )
    .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("expired"), "{}", page.body);
    assert!(
        page.body.contains("/start_oauth?asset_id=admin"),
        "{}",
        page.body
    );
    assert_eq!(rig.state_bytes("admin").unwrap(), before);
    assert_eq!(rig.sim.counters().tokens_total(), 0);
}

#[tokio::test]
async fn declining_says_so_and_changes_nothing() {
    let rig = rig().await;
    let authorize = rig.start_consent("admin").await;
    let before = rig.state_bytes("admin").unwrap();
    let back = rig.decide(&authorize, "decline").await;
    assert_eq!(query_param(&back, "error").unwrap(), "access_denied");
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_secure_page(&page);
    assert!(page.body.contains("Consent declined"), "{}", page.body);
    assert!(
        page.body.contains("for asset &#x27;admin&#x27;"),
        "{}",
        page.body
    );
    assert!(page.body.contains("AADSTS65004"), "{}", page.body);
    assert_eq!(rig.state_bytes("admin").unwrap(), before);

    // Still not connected: actions ask for consent.
    let (status, body) = rig.invoke("admin", "list_devices", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(rig.state_bytes("admin").unwrap(), before);
}

#[tokio::test]
async fn reflected_values_are_escaped() {
    let rig = rig().await;
    let authorize = rig.start_consent("admin").await;
    let state = query_param(&authorize, "state").unwrap();
    let before = rig.state_bytes("admin").unwrap();
    let evil = "<script>alert('x')</script>";
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("error", "access_denied<b>")
        .append_pair("error_description", evil)
        .append_pair("state", &state)
        .finish();
    let page = Page::from(rig.host.open_get(&format!("/result?{query}")).await).await;
    assert_eq!(page.status, 400);
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert!(!page.body.contains("<b>"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert_eq!(rig.state_bytes("admin").unwrap(), before);

    // An asset id with markup on /start_oauth comes back escaped too.
    let page = Page::from(
        rig.host
            .open_get("/start_oauth?asset_id=%3Cimg%20src%3Dx%3E")
            .await,
    )
    .await;
    assert_eq!(page.status, 404);
    assert_secure_page(&page);
    assert!(!page.body.contains("<img"), "{}", page.body);
    assert!(page.body.contains("&lt;img src=x&gt;"), "{}", page.body);
}

#[tokio::test]
async fn start_oauth_refuses_what_cannot_consent() {
    let rig = rig().await;
    let page = Page::from(rig.host.open_get("/start_oauth?asset_id=nosuch").await).await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(page.body.contains("Unknown asset"));
    let page = Page::from(rig.host.open_get("/start_oauth?asset_id=contoso").await).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("client credentials"), "{}", page.body);
    assert_eq!(rig.state_bytes("contoso"), None);
    let page = Page::from(rig.host.open_get("/start_oauth").await).await;
    assert_eq!(page.status, 400, "{}", page.body);
    // The consent routes need no API key; the action routes still do.
    let resp = rig
        .host
        .client
        .post(rig.host.url("/assets/admin/actions/list_devices"))
        .json(&json!({"parameters": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn a_failed_exchange_is_explained_and_uses_the_session_up() {
    let rig = rig().await;
    let authorize = rig.start_consent("admin").await;
    let back = rig.decide(&authorize, "accept").await;
    // Swap the stored verifier so the code exchange fails its PKCE check.
    rig.store()
        .update("admin", |s| {
            s.consent_sessions[0].verifier = SecretString::from("x".repeat(50));
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("PKCE mismatch"), "{}", page.body);
    assert!(page.body.contains("AADSTS501481"), "{}", page.body);
    assert!(!page.body.contains(&"x".repeat(50)));
    let code = query_param(&back, "code").unwrap();
    assert!(!page.body.contains(&code));
    // Used up, nothing stored.
    let stored = rig.store().load("admin").await.unwrap();
    assert!(stored.consent_sessions.is_empty());
    assert!(stored.tokens.is_none());
    let before = rig.state_bytes("admin");
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("already used"), "{}", page.body);
    assert_eq!(rig.state_bytes("admin"), before);
}

#[tokio::test]
async fn pending_sessions_are_bounded_and_expired_ones_pruned() {
    let rig = rig().await;
    rig.store()
        .update("admin", |s| {
            s.consent_sessions.push(ConsentSession {
                state_hash: hash_state("admin.old"),
                verifier: SecretString::from("v".repeat(64)),
                created_at: now() - 7200,
                expires_at: now() - 6600,
            });
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
    for _ in 0..40 {
        rig.start_consent("admin").await;
    }
    let stored = rig.store().load("admin").await.unwrap();
    assert_eq!(
        stored.consent_sessions.len(),
        defender_soar::auth::consent::MAX_PENDING_SESSIONS
    );
    assert!(stored.consent_sessions.iter().all(|s| s.expires_at > now()));
}
