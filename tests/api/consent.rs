//! Interactive consent through the host: a consent link from the API → /start_oauth → the
//! simulator's consent page → /result, and every way a consent can be wrong or hijacked (each
//! changes nothing stored).

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

    // The API answers a single-use consent link; only its hash is stored.
    let (status, body) = rig.host.request_consent("admin").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "consent");
    assert_eq!(body["summary"]["expires_in"], 600);
    let link = body["summary"]["consent_url"].as_str().unwrap().to_string();
    assert!(
        link.starts_with(&rig.host.url("/start_oauth?ticket=admin.")),
        "{link}"
    );
    let ticket = query_param(&link, "ticket").unwrap();
    let raw = String::from_utf8_lossy(&rig.state_bytes("admin").unwrap()).to_string();
    assert!(!raw.contains(&ticket) && raw.contains(&hash_state(&ticket)));

    // /start_oauth answers 302 to the v2 authorize endpoint with state, PKCE and redirect_uri,
    // and binds the browser with an HttpOnly cookie.
    let resp = rig.browser.get(&link).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("defender-soar-consent="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Not Secure over plain http (the public URL of this test host).
    assert!(!cookie.contains("Secure"), "{cookie}");
    let binding = cookie.split(';').next().unwrap().to_string();
    *rig.cookie.lock().unwrap() = Some(binding.clone());
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
    // The consent start, the opened link and the completion are in the audit trail.
    let audit: String = std::fs::read_dir(rig.dir.path().join("audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for step in ["\"consent\"", "\"consent_ticket\"", "\"consent_completed\""] {
        assert!(audit.contains(step), "{step} not audited:\n{audit}");
    }
    assert!(audit.contains("admin@contoso.onmicrosoft.com"), "{audit}");
    assert!(
        !audit.contains(&code),
        "the authorization code is never audited"
    );
    // The page names who connected the asset, and the binding cookie is cleared.
    assert!(
        page.body
            .contains("Connected by <strong id=\"consenter\">admin@contoso.onmicrosoft.com (object id 0d3b1f7e-52a4-4c1e-9a0b-6c2d8e4f1a01)</strong>"),
        "{}",
        page.body
    );
    assert!(page.header("set-cookie").contains("Max-Age=0"));

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
    // test_connectivity redeemed the refresh token once, for the Graph token.
    assert_eq!(c.tokens("refresh_token"), 1);
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

    // The consent link was single-use.
    let page = Page::from(rig.browser.get(&link).send().await.unwrap()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("already"), "{}", page.body);

    // No secret of the flow reached the logs; the log names who connected the asset.
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    let cookie_value = binding.split_once('=').unwrap().1.to_string();
    for secret in [
        &state,
        &code,
        &verifier,
        &access,
        &refresh,
        &ticket,
        &cookie_value,
    ] {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
    assert!(logs.contains("admin@contoso.onmicrosoft.com"));
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
            "Unknown consent",
        ),
        // A client-credentials asset has no consent sessions.
        (
            format!("/result?code={code}&state=contoso.{random}"),
            "Unknown consent",
        ),
        // The genuine answer from a browser without the binding cookie.
        (back.replace(&rig.host.url(""), ""), "another browser"),
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
    // A wrong cookie is no better than none.
    let page = Page::from(
        rig.browser
            .get(&back)
            .header(
                "cookie",
                format!("defender-soar-consent={}", "B".repeat(43)),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("another browser"), "{}", page.body);
    // The right browser without a code.
    let page = rig
        .follow(&rig.host.url(&format!("/result?state={state}")))
        .await;
    assert!(page.body.contains("No authorization code"), "{}", page.body);
    assert_eq!(rig.state_bytes("admin").unwrap(), admin_before);
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
        browser_hash: None,
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
    assert!(page.body.contains("/assets/admin/consent"), "{}", page.body);
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
    // The same answer in another browser shows none of Entra's text.
    let page = rig.follow_elsewhere(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("Consent not completed"), "{}", page.body);
    assert!(!page.body.contains("AADSTS") && !page.body.contains("access_denied"));
    // Nor does an error answer with a state this host never issued.
    let page = rig
        .follow(&rig.host.url(&format!(
            "/result?error=access_denied&error_description=Call%20555-0100&state=admin.{}",
            "Q".repeat(43)
        )))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!page.body.contains("555-0100"), "{}", page.body);

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
    let page = rig.follow(&rig.host.url(&format!("/result?{query}"))).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("Details:"), "{}", page.body);
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert!(!page.body.contains("<b>"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert_eq!(rig.state_bytes("admin").unwrap(), before);

    // Markup in /start_oauth's query is never reflected.
    for query in [
        "asset_id=%3Cimg%20src%3Dx%3E",
        "ticket=%3Cimg%20src%3Dx%3E.x",
    ] {
        let page = Page::from(rig.host.open_get(&format!("/start_oauth?{query}")).await).await;
        assert_eq!(page.status, 400);
        assert_secure_page(&page);
        assert!(
            !page.body.contains("<img") && !page.body.contains("img src"),
            "{}",
            page.body
        );
    }
}

#[tokio::test]
async fn consent_starts_only_from_a_ticket_an_api_caller_obtained() {
    let rig = rig().await;
    // The old way in (no ticket) opens nothing, for any asset, and writes nothing.
    for path in [
        "/start_oauth?asset_id=admin",
        "/start_oauth?asset_id=nosuch",
        "/start_oauth",
        "/start_oauth?ticket=admin.short",
    ] {
        let page = Page::from(rig.host.open_get(path).await).await;
        assert_eq!(page.status, 400, "{path}: {}", page.body);
        assert!(page.body.contains("/consent"), "{path}: {}", page.body);
        assert!(page.header("set-cookie").is_empty(), "{path}");
        assert!(page.header("location").is_empty(), "{path}");
    }
    let forged = format!("/start_oauth?ticket=admin.{}", "T".repeat(43));
    let page = Page::from(rig.host.open_get(&forged).await).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("not valid"), "{}", page.body);
    assert_eq!(rig.state_bytes("admin"), None);
    assert_eq!(rig.state_bytes("nosuch"), None);
    assert_eq!(rig.sim.counters().total, 0);

    // The API route needs the key, knows its assets and which of them consent interactively.
    let resp = rig
        .host
        .client
        .post(rig.host.url("/assets/admin/consent"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, body) = rig.host.request_consent("nosuch").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = rig.host.request_consent("contoso").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs no browser consent"),
        "{body}"
    );
    assert_eq!(rig.state_bytes("contoso"), None);

    // A ticket of one asset does not open another's consent.
    let link = rig.host.consent_link("admin").await;
    let ticket = query_param(&link, "ticket").unwrap();
    let random = ticket.split_once('.').unwrap().1;
    let page = Page::from(
        rig.host
            .open_get(&format!("/start_oauth?ticket=other.{random}"))
            .await,
    )
    .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(rig.state_bytes("other"), None);

    // HEAD (link scanners, previews) opens nothing and does not use the ticket up.
    let before = rig.state_bytes("admin");
    let resp = rig.browser.head(&link).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(rig.state_bytes("admin"), before);
    // The link then works once.
    let authorize = rig.open_link(&link).await;
    let back = rig.decide(&authorize, "accept").await;
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.body);
}

#[tokio::test]
async fn the_hijack_without_a_ticket_fails_and_changes_nothing() {
    let rig = rig().await;
    // The asset is connected by its admin.
    rig.consent("admin").await;
    let before = rig.state_bytes("admin").unwrap();
    // An attacker on loopback runs the whole flow the way it used to work: no ticket.
    let page = Page::from(rig.host.open_get("/start_oauth?asset_id=admin").await).await;
    assert_eq!(page.status, 400);
    // Going to Entra directly with a made-up state gets a code, but the host refuses it.
    let tenant = &Scenario::default_scenario().tenants[0];
    let authorize = format!(
        "{}/{}/oauth2/v2.0/authorize?client_id={}&response_type=code&redirect_uri={}&scope=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F.default%20offline_access&state=admin.{}",
        rig.sim.base_url(),
        tenant.id,
        tenant.apps[0].client_id,
        rig.host.url("/result"),
        "M".repeat(43)
    );
    let back = rig
        .decide_as(
            &authorize,
            "accept",
            Some("analyst@contoso.onmicrosoft.com"),
        )
        .await;
    let page = rig.follow_elsewhere(&back).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!page.body.contains("is now connected"));
    assert_eq!(rig.state_bytes("admin").unwrap(), before);
    assert_eq!(rig.sim.counters().tokens("authorization_code"), 1);
}

#[tokio::test]
async fn anonymous_start_oauth_floods_leave_a_pending_consent_working() {
    let rig = rig().await;
    let authorize = rig.start_consent("admin").await;
    let before = rig.state_bytes("admin").unwrap();
    for i in 0..100 {
        let path = match i % 4 {
            0 => "/start_oauth?asset_id=admin".to_string(),
            1 => format!("/start_oauth?ticket=admin.{i:0>43}"),
            2 => "/start_oauth".to_string(),
            _ => format!(
                "/start_oauth?asset_id=admin&ticket=admin.{}",
                "Z".repeat(50)
            ),
        };
        let status = if i % 2 == 0 {
            rig.host.open_get(&path).await.status().as_u16()
        } else {
            rig.browser
                .head(rig.host.url(&path))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert!(status == 400 || status == 200, "{path}: {status}");
    }
    // Not a byte of the state file changed, and the admin's consent completes.
    assert_eq!(rig.state_bytes("admin").unwrap(), before);
    let back = rig.decide(&authorize, "accept").await;
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 200, "{}", page.body);
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
async fn pending_consents_are_capped_without_dropping_older_ones() {
    let rig = rig().await;
    rig.store()
        .update("admin", |s| {
            s.consent_sessions.push(ConsentSession {
                state_hash: hash_state("admin.old"),
                verifier: SecretString::from("v".repeat(64)),
                created_at: now() - 7200,
                expires_at: now() - 6600,
                browser_hash: None,
            });
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
    // The first pending consent is opened in a browser; the others stay tickets.
    let max = defender_soar::auth::consent::MAX_PENDING;
    let first = rig.start_consent("admin").await;
    let mut links = Vec::new();
    for _ in 1..max {
        links.push(rig.host.consent_link("admin").await);
    }
    // The newest is refused; nothing pending was dropped to make room.
    let before = rig.state_bytes("admin").unwrap();
    let (status, body) = rig.host.request_consent("admin").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("pending"),
        "{body}"
    );
    assert_eq!(rig.state_bytes("admin").unwrap(), before);
    let stored = rig.store().load("admin").await.unwrap();
    assert_eq!(
        stored.consent_sessions.len() + stored.consent_tickets.len(),
        max
    );
    assert!(stored.consent_sessions.iter().all(|s| s.expires_at > now()));
    // test_connectivity cannot issue a link either, and says how to get one.
    let (status, body) = rig.invoke("admin", "test_connectivity", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("pending"),
        "{body}"
    );
    // The oldest and the newest pending consents both still work.
    let back = rig.decide(&first, "accept").await;
    assert_eq!(rig.follow(&back).await.status, 200);
    let authorize = rig.open_link(links.last().unwrap()).await;
    let back = rig.decide(&authorize, "accept").await;
    assert_eq!(rig.follow(&back).await.status, 200);
}

/// `guarded` only lets the tenant's admin connect it; `by_domain` names its tenant by domain.
async fn identity_rig() -> Rig {
    Rig::new(Scenario::default_scenario(), |s, base| {
        let mut guarded = interactive_asset("guarded", s, base, 0);
        guarded.allowed_consenters = vec![
            "ADMIN@contoso.onmicrosoft.com".into(),
            "11111111-2222-3333-4444-555555555555".into(),
        ];
        let mut by_domain = interactive_asset("by_domain", s, base, 0);
        by_domain.tenant_id = "contoso.onmicrosoft.com".into();
        vec![guarded, by_domain]
    })
    .await
}

#[tokio::test]
async fn a_user_of_another_tenant_is_refused_and_nothing_is_stored() {
    let rig = identity_rig().await;
    let authorize = rig.start_consent("by_domain").await;
    let back = rig
        .decide_as(
            &authorize,
            "accept",
            Some("mallory@northwind.onmicrosoft.com"),
        )
        .await;
    let before = rig.state_bytes("by_domain").unwrap();
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("Consent refused"), "{}", page.body);
    assert!(
        page.body.contains("mallory@northwind.onmicrosoft.com"),
        "{}",
        page.body
    );
    assert!(page.body.contains("signed in from tenant"), "{}", page.body);
    assert_eq!(rig.state_bytes("by_domain").unwrap(), before);
    assert!(
        rig.store()
            .load("by_domain")
            .await
            .unwrap()
            .tokens
            .is_none()
    );
    let (status, _) = rig.invoke("by_domain", "list_devices", json!({})).await;
    assert_eq!(status, 409);
    // The same browser can sign in again with an account of the tenant.
    let retry = rig
        .decide_as(
            &authorize,
            "accept",
            Some("analyst@contoso.onmicrosoft.com"),
        )
        .await;
    let page = rig.follow(&retry).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("analyst@contoso.onmicrosoft.com"),
        "{}",
        page.body
    );
    // The domain was resolved to the tenant id once, from the tenant's OpenID configuration.
    assert_eq!(
        rig.sim
            .counters()
            .route("GET", "/{tenant}/v2.0/.well-known/openid-configuration"),
        1
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(logs.contains("mallory@northwind.onmicrosoft.com"));
}

#[tokio::test]
async fn only_allowed_consenters_can_connect_an_asset() {
    let rig = identity_rig().await;
    let authorize = rig.start_consent("guarded").await;
    let back = rig
        .decide_as(
            &authorize,
            "accept",
            Some("analyst@contoso.onmicrosoft.com"),
        )
        .await;
    let before = rig.state_bytes("guarded").unwrap();
    let page = rig.follow(&back).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("allowed_consenters"), "{}", page.body);
    assert!(
        page.body.contains("analyst@contoso.onmicrosoft.com"),
        "{}",
        page.body
    );
    assert_eq!(rig.state_bytes("guarded").unwrap(), before);
    let (status, _) = rig.invoke("guarded", "list_devices", json!({})).await;
    assert_eq!(status, 409);
    // The allowed admin (UPN compared ignoring case) connects it.
    let ok = rig
        .decide_as(&authorize, "accept", Some("admin@contoso.onmicrosoft.com"))
        .await;
    let page = rig.follow(&ok).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (status, body) = rig.invoke("guarded", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn test_connectivity_answers_a_fresh_consent_link() {
    let rig = rig().await;
    let (status, body) = rig.invoke("admin", "test_connectivity", json!({})).await;
    assert_eq!(status, 409, "{body}");
    let link = body["summary"]["consent_url"].as_str().unwrap().to_string();
    assert!(
        link.starts_with(&rig.host.url("/start_oauth?ticket=admin.")),
        "{link}"
    );
    // The link is in the summary, not in the message (messages are logged).
    assert!(!body["message"].as_str().unwrap().contains(&link), "{body}");
    let authorize = rig.open_link(&link).await;
    let back = rig.decide(&authorize, "accept").await;
    assert_eq!(rig.follow(&back).await.status, 200);
    let (status, body) = rig.invoke("admin", "test_connectivity", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    let ticket = query_param(&link, "ticket").unwrap();
    assert!(!logs.contains(&ticket), "the consent link is in the logs");
}

#[tokio::test]
async fn over_https_the_binding_cookie_is_host_only_and_secure() {
    let app = spawn_configured(Scenario::default_scenario(), |config| {
        config.server.public_url = "https://plugin.example.com".parse().unwrap();
        let sim_base = config.assets["contoso"].login_url.clone();
        let s = Scenario::default_scenario();
        let a = interactive_asset("admin", &s, &sim_base, 0);
        config.assets.insert(a.id.clone(), a);
    })
    .await;
    let resp = app
        .client
        .post(app.url("/assets/admin/consent"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    let link = body["summary"]["consent_url"].as_str().unwrap();
    assert!(
        link.starts_with("https://plugin.example.com/start_oauth?ticket=admin."),
        "{link}"
    );
    let path = link.trim_start_matches("https://plugin.example.com");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser.get(app.url(path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("__Host-defender-soar-consent="),
        "{cookie}"
    );
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Domain="), "{cookie}");
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let state = query_param(resp.headers()["location"].to_str().unwrap(), "state").unwrap();
    let result = format!("/result?code=some-code&state={state}");
    // The same value under the plain name is another browser.
    let page = Page::from(
        browser
            .get(app.url(&result))
            .header("cookie", format!("defender-soar-consent={value}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page.body.contains("another browser"), "{}", page.body);
    // Under its own name it is this browser: the answer goes on to the code exchange.
    let page = Page::from(
        browser
            .get(app.url(&result))
            .header("cookie", format!("__Host-defender-soar-consent={value}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!page.body.contains("another browser"), "{}", page.body);
    assert!(page.body.contains("Consent failed"), "{}", page.body);
}
