//! The device code flow of the simulator over real HTTP: the devicecode endpoints (v1, v2),
//! the `/devicelogin` page, and every answer of the device code grant.

mod common;

use std::time::Duration;

use defender_sim::SimHandle;
use serde_json::Value;

const TENANT: &str = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7";
const NORTHWIND: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const CLIENT: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const SECRET: &str = "demo-secret-value";
const RESOURCE: &str = "https://api.securitycenter.microsoft.com";
const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default offline_access";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn v(v2: bool) -> &'static str {
    if v2 { "v2.0/" } else { "" }
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    common::client().post(url).form(form).send().await.unwrap()
}

/// A fast scenario: polls every second.
fn scenario() -> defender_sim::Scenario {
    let mut s = common::scenario();
    s.device_code_interval_secs = 1;
    s
}

/// Starts a device code flow; answers the whole JSON body.
async fn start(h: &SimHandle, v2: bool) -> Value {
    let target = if v2 {
        ("scope", SCOPE)
    } else {
        ("resource", RESOURCE)
    };
    let resp = post_form(
        &format!("{}/{TENANT}/oauth2/{}devicecode", h.base_url(), v(v2)),
        &[("client_id", CLIENT), target],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

async fn poll(
    h: &SimHandle,
    v2: bool,
    device_code: &str,
    secret: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", GRANT),
        ("client_id", CLIENT),
        ("device_code", device_code),
    ];
    if let Some(s) = secret {
        form.push(("client_secret", s));
    }
    post_form(
        &format!("{}/{TENANT}/oauth2/{}token", h.base_url(), v(v2)),
        &form,
    )
    .await
}

async fn assert_error(resp: reqwest::Response, error: &str, code: u64) {
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], serde_json::json!([code]), "{body}");
}

/// Submits `/devicelogin` as the user would; answers (status, page).
async fn enter(h: &SimHandle, code: &str, user: Option<&str>, decision: &str) -> (u16, String) {
    let mut form = vec![("code", code), ("decision", decision)];
    if let Some(u) = user {
        form.push(("user", u));
    }
    let resp = post_form(&format!("{}/devicelogin", h.base_url()), &form).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn v2_device_code_answer_shape() {
    let h = common::start(common::scenario()).await;
    let body = start(&h, true).await;
    let user_code = body["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert!(
        user_code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    );
    assert!(body["device_code"].as_str().unwrap().len() > 40);
    let uri = format!("{}/devicelogin", h.base_url());
    assert_eq!(body["verification_uri"], uri.as_str());
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["interval"], 5);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&uri) && message.contains(user_code),
        "{message}"
    );
    // Two requests, two different codes.
    let other = start(&h, true).await;
    assert_ne!(other["user_code"], body["user_code"]);
    assert_ne!(other["device_code"], body["device_code"]);
}

#[tokio::test]
async fn v1_device_code_answer_has_url_and_string_numbers() {
    let mut s = common::scenario();
    s.device_code_lifetime_secs = 120;
    s.device_code_interval_secs = 2;
    let h = common::start(s).await;
    let body = start(&h, false).await;
    assert_eq!(
        body["verification_url"],
        format!("{}/devicelogin", h.base_url()).as_str()
    );
    assert_eq!(body["expires_in"], "120");
    assert_eq!(body["interval"], "2");
}

#[tokio::test]
async fn device_code_request_errors() {
    let h = common::start(common::scenario()).await;
    let url = |tenant: &str| format!("{}/{tenant}/oauth2/v2.0/devicecode", h.base_url());
    let resp = post_form(
        &url("00000000-1111-2222-3333-444444444444"),
        &[("client_id", CLIENT), ("scope", SCOPE)],
    )
    .await;
    assert_error(resp, "invalid_request", 90002).await;
    let resp = post_form(
        &url(TENANT),
        &[
            ("client_id", "99999999-8888-7777-6666-555555555555"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_error(resp, "unauthorized_client", 700016).await;
    let resp = post_form(&url(TENANT), &[("client_id", CLIENT)]).await;
    assert_error(resp, "invalid_request", 900144).await;
}

#[tokio::test]
async fn pending_then_slow_down_then_accepted_once() {
    let h = common::start(scenario()).await;
    let body = start(&h, true).await;
    let device_code = body["device_code"].as_str().unwrap();
    let user_code = body["user_code"].as_str().unwrap();

    assert_error(
        poll(&h, true, device_code, None).await,
        "authorization_pending",
        70016,
    )
    .await;
    // Right away again: too fast.
    assert_error(poll(&h, true, device_code, None).await, "slow_down", 70016).await;
    // The interval is now 6 s: waiting 1 s is still too fast.
    h.clock.advance(Duration::from_secs(2));
    assert_error(poll(&h, true, device_code, None).await, "slow_down", 70016).await;
    h.clock.advance(Duration::from_secs(12));
    assert_error(
        poll(&h, true, device_code, None).await,
        "authorization_pending",
        70016,
    )
    .await;

    // The page shows a form; the user enters the code (lower case, with a dash) and accepts.
    let page = common::client()
        .get(format!("{}/devicelogin?otc=\"><b>", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<form method="post" action="/devicelogin" id="devicelogin">"#));
    assert!(html.contains("analyst@contoso.onmicrosoft.com"));
    assert!(!html.contains("\"><b>"), "prefill not escaped");
    let typed = format!("{}-{}", &user_code[..4], &user_code[4..]).to_lowercase();
    let (status, page) = enter(
        &h,
        &typed,
        Some("analyst@contoso.onmicrosoft.com"),
        "accept",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"device-done\""), "{page}");

    assert_eq!(h.counters().tokens("device_code"), 0);
    let resp = poll(&h, true, device_code, None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let token: Value = resp.json().await.unwrap();
    assert!(token["refresh_token"].as_str().is_some(), "{token}");
    let claims = defender_sim::jwt::verify(&h, token["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        claims.preferred_username.as_deref(),
        Some("analyst@contoso.onmicrosoft.com")
    );
    assert_eq!(claims.oid, "0d3b1f7e-52a4-4c1e-9a0b-6c2d8e4f1a02");
    assert_eq!(claims.tid, TENANT);
    assert!(claims.scp.is_some() && claims.roles.is_none());
    assert_eq!(h.counters().tokens("device_code"), 1);

    // Redeemed once.
    assert_error(
        poll(&h, true, device_code, None).await,
        "invalid_grant",
        54005,
    )
    .await;
    // The user code cannot be used again either.
    let (status, page) = enter(&h, user_code, None, "accept").await;
    assert_eq!(status, 400);
    assert!(page.contains("AADSTS70000"), "{page}");

    // The refresh token works like any other.
    let resp = post_form(
        &format!("{}/{TENANT}/oauth2/v2.0/token", h.base_url()),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("refresh_token", token["refresh_token"].as_str().unwrap()),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn declined_codes_answer_authorization_declined() {
    let h = common::start(scenario()).await;
    let body = start(&h, true).await;
    let device_code = body["device_code"].as_str().unwrap();
    let (status, page) = enter(&h, body["user_code"].as_str().unwrap(), None, "decline").await;
    assert_eq!(status, 200, "{page}");
    assert_error(
        poll(&h, true, device_code, None).await,
        "authorization_declined",
        70000,
    )
    .await;
    assert_eq!(h.counters().tokens_total(), 0);
}

#[tokio::test]
async fn expired_codes_answer_expired_token() {
    let h = common::start(scenario()).await;
    let body = start(&h, false).await;
    let device_code = body["device_code"].as_str().unwrap();
    h.clock.advance(Duration::from_secs(900));
    assert_error(
        poll(&h, false, device_code, None).await,
        "expired_token",
        70020,
    )
    .await;
    let (status, page) = enter(&h, body["user_code"].as_str().unwrap(), None, "accept").await;
    assert_eq!(status, 400);
    assert!(page.contains("AADSTS70019"), "{page}");
}

#[tokio::test]
async fn users_of_other_tenants_get_their_home_tenant_and_v1_works() {
    let h = common::start(scenario()).await;
    let body = start(&h, false).await;
    let device_code = body["device_code"].as_str().unwrap();
    let (status, _) = enter(
        &h,
        body["user_code"].as_str().unwrap(),
        Some("mallory@northwind.onmicrosoft.com"),
        "accept",
    )
    .await;
    assert_eq!(status, 200);
    let resp = poll(&h, false, device_code, None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let token: Value = resp.json().await.unwrap();
    assert_eq!(token["resource"], RESOURCE);
    assert!(token["refresh_token"].as_str().is_some());
    let claims = defender_sim::jwt::verify(&h, token["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.tid, NORTHWIND);
    assert_eq!(
        claims.upn.as_deref(),
        Some("mallory@northwind.onmicrosoft.com")
    );
}

#[tokio::test]
async fn unknown_users_codes_and_clients_are_refused() {
    let h = common::start(scenario()).await;
    let body = start(&h, true).await;
    let user_code = body["user_code"].as_str().unwrap();
    let device_code = body["device_code"].as_str().unwrap();
    let (status, page) = enter(&h, user_code, Some("nobody@nowhere.example"), "accept").await;
    assert_eq!(status, 400);
    assert!(page.contains("AADSTS50034"), "{page}");
    let (status, page) = enter(&h, "AAAAAAAAA", None, "accept").await;
    assert_eq!(status, 400);
    assert!(page.contains("AADSTS70000"), "{page}");
    // A wrong secret is checked when one is sent; an unknown device code is no grant.
    let resp = poll(&h, true, device_code, Some("wrong")).await;
    assert_eq!(resp.status().as_u16(), 401);
    assert_error(
        poll(&h, true, "DAQABAAEAAADnotacode", None).await,
        "invalid_grant",
        70000,
    )
    .await;
    // Still pending for the right client with the right secret.
    assert_error(
        poll(&h, true, device_code, Some(SECRET)).await,
        "authorization_pending",
        70016,
    )
    .await;
}
