//! Entra ID endpoints of the simulator over real HTTP: token shapes and claims, every error
//! code, the consent page and its redirects, authorization code with PKCE, refresh rotation.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use defender_sim::SimHandle;
use serde_json::Value;
use sha2::{Digest, Sha256};

const TENANT: &str = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7";
const DOMAIN: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const SECRET: &str = "demo-secret-value";
const RESOURCE: &str = "https://api.securitycenter.microsoft.com";
const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
const REDIRECT: &str = "http://127.0.0.1/result";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-some-more-entropy";
const HOSTILE_STATE: &str = "\"><script>alert('x')</script>&x=<b>";

fn token_url(h: &SimHandle, tenant: &str, v2: bool) -> String {
    let v = if v2 { "v2.0/" } else { "" };
    format!("{}/{tenant}/oauth2/{v}token", h.base_url())
}

fn authorize_url(h: &SimHandle, v2: bool) -> String {
    let v = if v2 { "v2.0/" } else { "" };
    format!("{}/{TENANT}/oauth2/{v}authorize", h.base_url())
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    common::client().post(url).form(form).send().await.unwrap()
}

async fn client_credentials(h: &SimHandle, v2: bool) -> reqwest::Response {
    let target = if v2 {
        ("scope", SCOPE)
    } else {
        ("resource", RESOURCE)
    };
    post_form(
        &token_url(h, TENANT, v2),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            target,
        ],
    )
    .await
}

/// Checks an Entra error answer: status, `error`, AADSTS code and the full body shape.
async fn assert_entra_error(resp: reqwest::Response, status: u16, error: &str, code: u64) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], serde_json::json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    let trace = body["trace_id"].as_str().unwrap();
    let correlation = body["correlation_id"].as_str().unwrap();
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(trace).is_ok());
    assert!(uuid::Uuid::parse_str(correlation).is_ok());
    assert!(description.contains(&format!("\r\nTrace ID: {trace}\r\n")));
    assert!(description.contains(&format!("\r\nCorrelation ID: {correlation}\r\n")));
    assert!(description.ends_with(&format!("\r\nTimestamp: {timestamp}")));
    assert_eq!(timestamp.len(), 20, "{timestamp}");
    assert_eq!(&timestamp[10..11], " ");
    assert!(timestamp.ends_with('Z'));
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
    body
}

fn claims(h: &SimHandle, token: &str) -> defender_sim::jwt::Claims {
    defender_sim::jwt::verify(h, token).unwrap()
}

fn first_app_roles() -> Vec<String> {
    common::scenario().tenants[0].apps[0].roles.clone()
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The consent form's action and fields (hidden inputs), read from the page.
fn form_of(page: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')? + start;
        Some(html_unescape(&tag[start..end]))
    };
    let form_start = page.find("<form").unwrap();
    let form_tag = &page[form_start..form_start + page[form_start..].find('>').unwrap()];
    let action = attr(form_tag, "action").unwrap();
    let mut fields = Vec::new();
    let mut rest = &page[form_start..];
    while let Some(i) = rest.find("<input") {
        let end = rest[i..].find('>').unwrap() + i;
        let tag = &rest[i..end];
        fields.push((attr(tag, "name").unwrap(), attr(tag, "value").unwrap()));
        rest = &rest[end..];
    }
    (action, fields)
}

fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// GETs the authorize endpoint; returns the response.
async fn authorize(h: &SimHandle, v2: bool, query: &[(&str, &str)]) -> reqwest::Response {
    common::client()
        .get(authorize_url(h, v2))
        .query(query)
        .send()
        .await
        .unwrap()
}

/// Standard authorize query parameters (v2 asks for offline access), with `changes` applied
/// (see [`apply`]).
fn auth_query<'a>(v2: bool, changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut q = vec![
        ("client_id", CLIENT),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("state", "st-1"),
    ];
    if v2 {
        q.push((
            "scope",
            "https://api.securitycenter.microsoft.com/.default offline_access",
        ));
    } else {
        q.push(("resource", RESOURCE));
    }
    apply(q, changes)
}

/// `base` with `changes` applied: each replaces the pair of the same name (or is added); an
/// empty value removes it.
fn apply<'a>(
    mut base: Vec<(&'a str, &'a str)>,
    changes: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    for (k, v) in changes {
        base.retain(|(bk, _)| bk != k);
        if !v.is_empty() {
            base.push((k, v));
        }
    }
    base
}

/// A v2 client credentials form with `changes` applied (see [`apply`]).
fn cc<'a>(changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let base = vec![
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("scope", SCOPE),
    ];
    apply(base, changes)
}

/// Renders the consent page, submits it with `decision`; returns the redirect Location.
async fn consent(h: &SimHandle, v2: bool, query: &[(&str, &str)], decision: &str) -> String {
    let page = authorize(h, v2, query).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let (action, mut fields) = form_of(&page);
    fields.push(("decision".into(), decision.into()));
    let resp = common::client()
        .post(format!("{}{action}", h.base_url()))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// A fresh authorization code from a consented authorize request.
async fn code(h: &SimHandle, v2: bool, extra: &[(&str, &str)]) -> String {
    let location = consent(h, v2, &auth_query(v2, extra), "accept").await;
    param(&query_of(&location), "code").unwrap().to_string()
}

async fn redeem(
    h: &SimHandle,
    v2: bool,
    code: &str,
    redirect: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("code", code),
        ("redirect_uri", redirect),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    post_form(&token_url(h, TENANT, v2), &form).await
}

async fn refresh(h: &SimHandle, v2: bool, token: &str) -> reqwest::Response {
    post_form(
        &token_url(h, TENANT, v2),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("refresh_token", token),
        ],
    )
    .await
}

// ---------------------------------------------------------------- client credentials

#[tokio::test]
async fn v2_client_credentials_shape_and_claims() {
    let h = common::start(common::scenario()).await;
    let resp = client_credentials(&h, true).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    assert_eq!(resp.headers()["pragma"], "no-cache");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], SCOPE);
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body.get("refresh_token").is_none());
    assert!(body.get("expires_on").is_none());
    let c = claims(&h, body["access_token"].as_str().unwrap());
    assert_eq!(c.aud, RESOURCE);
    assert_eq!(c.iss, format!("{}/{TENANT}/v2.0", h.base_url()));
    assert_eq!(c.tid, TENANT);
    assert_eq!(c.azp.as_deref(), Some(CLIENT));
    assert_eq!(c.appid, None);
    assert_eq!(c.ver, "2.0");
    assert_eq!(c.roles, Some(first_app_roles()));
    assert_eq!(c.scp, None);
    assert_eq!(c.exp - c.iat, 3599);
    assert_eq!(h.counters().tokens("client_credentials"), 1);
    assert_eq!(h.counters().tokens_total(), 1);
}

#[tokio::test]
async fn v1_client_credentials_numbers_are_strings() {
    let h = common::start(common::scenario()).await;
    let resp = client_credentials(&h, false).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["ext_expires_in"], "3599");
    assert_eq!(body["resource"], RESOURCE);
    let expires_on: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let not_before: i64 = body["not_before"].as_str().unwrap().parse().unwrap();
    let c = claims(&h, body["access_token"].as_str().unwrap());
    assert_eq!(expires_on, c.exp);
    assert_eq!(not_before, c.nbf);
    assert_eq!(c.ver, "1.0");
    assert_eq!(c.iss, format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(c.appid.as_deref(), Some(CLIENT));
    assert_eq!(c.azp, None);
    assert_eq!(c.aud, RESOURCE);
    assert_eq!(c.roles, Some(first_app_roles()));
    assert_eq!(c.exp - c.iat, 3599);
    assert_eq!(h.counters().tokens("client_credentials"), 1);
}

#[tokio::test]
async fn v1_numbers_when_the_scenario_says_so() {
    let mut s = common::scenario();
    s.v1_numbers_as_strings = false;
    s.token_lifetime_secs = 600;
    let h = common::start(s).await;
    let body: Value = client_credentials(&h, false).await.json().await.unwrap();
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["ext_expires_in"], 600);
    assert!(body["expires_on"].is_i64());
    assert!(body["not_before"].is_i64());
    let c = claims(&h, body["access_token"].as_str().unwrap());
    assert_eq!(c.exp - c.iat, 600);
}

#[tokio::test]
async fn tenant_domain_and_basic_client_auth() {
    let h = common::start(common::scenario()).await;
    let basic = STANDARD.encode(format!("{CLIENT}:{SECRET}"));
    let resp = common::client()
        .post(token_url(&h, DOMAIN, true))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials"), ("scope", SCOPE)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let c = claims(&h, body["access_token"].as_str().unwrap());
    assert_eq!(c.tid, TENANT);
    assert_eq!(c.iss, format!("{}/{TENANT}/v2.0", h.base_url()));

    let bad = STANDARD.encode(format!("{CLIENT}:wrong"));
    let resp = common::client()
        .post(token_url(&h, DOMAIN, true))
        .header("authorization", format!("Basic {bad}"))
        .form(&[("grant_type", "client_credentials"), ("scope", SCOPE)])
        .send()
        .await
        .unwrap();
    assert_entra_error(resp, 401, "invalid_client", 7000215).await;
    assert_eq!(h.counters().tokens("client_credentials"), 1);
}

// ---------------------------------------------------------------- token errors

#[tokio::test]
async fn token_error_codes() {
    let mut s = common::scenario();
    s.tenants[0].apps[1].secret_expired = true;
    let h = common::start(s).await;
    let url = token_url(&h, TENANT, true);
    let resp = post_form(&token_url(&h, "nope.onmicrosoft.com", true), &cc(&[])).await;
    let body = assert_entra_error(resp, 400, "invalid_request", 90002).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("nope.onmicrosoft.com")
    );

    let unknown = "00000000-0000-0000-0000-000000000001";
    let resp = post_form(&url, &cc(&[("client_id", unknown)])).await;
    let body = assert_entra_error(resp, 400, "unauthorized_client", 700016).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(unknown)
    );

    let resp = post_form(&url, &cc(&[("client_secret", "wrong")])).await;
    assert_entra_error(resp, 401, "invalid_client", 7000215).await;

    let resp = post_form(&url, &cc(&[("client_secret", "")])).await;
    assert_entra_error(resp, 401, "invalid_client", 7000218).await;

    let resp = post_form(
        &url,
        &cc(&[
            ("client_id", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"),
            ("client_secret", "reader-secret-value"),
        ]),
    )
    .await;
    assert_entra_error(resp, 401, "invalid_client", 7000222).await;

    for missing in ["grant_type", "client_id", "scope"] {
        let resp = post_form(&url, &cc(&[(missing, "")])).await;
        let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("'{missing}'")),
            "{body}"
        );
    }
    let resp = post_form(
        &token_url(&h, TENANT, false),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
        ],
    )
    .await;
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("'resource'")
    );
    for (grant, missing) in [
        ("authorization_code", "code"),
        ("refresh_token", "refresh_token"),
    ] {
        let resp = post_form(
            &url,
            &[
                ("grant_type", grant),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
        let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("'{missing}'"))
        );
    }

    let resp = post_form(&url, &cc(&[("grant_type", "password")])).await;
    assert_entra_error(resp, 400, "unsupported_grant_type", 70003).await;

    let resp = post_form(
        &url,
        &cc(&[(
            "scope",
            "https://api.securitycenter.microsoft.com/Machine.Read.All",
        )]),
    )
    .await;
    assert_entra_error(resp, 400, "invalid_scope", 1002012).await;

    assert_eq!(h.counters().tokens_total(), 0);
}

#[tokio::test]
async fn caller_correlation_id_is_echoed() {
    let h = common::start(common::scenario()).await;
    let corr = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let resp = common::client()
        .post(token_url(&h, TENANT, true))
        .header("client-request-id", corr)
        .form(&[("grant_type", "client_credentials"), ("client_id", CLIENT)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["client-request-id"], corr);
    assert!(resp.headers().contains_key("x-ms-request-id"));
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert_eq!(body["correlation_id"], corr);
}

// ---------------------------------------------------------------- authorize and consent

#[tokio::test]
async fn consent_page_names_app_tenant_permissions_and_escapes() {
    let h = common::start(common::scenario()).await;
    let query = auth_query(
        true,
        &[
            ("state", HOSTILE_STATE),
            ("login_hint", "<i>eve</i>@contoso.com"),
        ],
    );
    let resp = authorize(&h, true, &query).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert!(resp.headers().get("location").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("defender-soar demo"));
    assert!(page.contains("Contoso (demo)"));
    for role in first_app_roles() {
        assert!(page.contains(&format!("<li>{role}</li>")), "{role}");
    }
    assert!(page.contains(
        r#"<button type="submit" name="decision" value="accept" id="accept">Accept</button>"#
    ));
    assert!(page.contains(
        r#"<button type="submit" name="decision" value="decline" id="decline">Decline</button>"#
    ));
    assert_eq!(page.matches("<form").count(), 1);
    assert!(page.contains("Maintain access"));
    assert!(!page.contains("<script>"), "hostile state was not escaped");
    assert!(!page.contains("<i>eve"));
    assert!(
        page.contains(
            "&quot;&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;x=&lt;b&gt;"
        )
    );
    let (action, fields) = form_of(&page);
    assert_eq!(action, format!("/{TENANT}/oauth2/v2.0/authorize"));
    assert!(fields.contains(&("state".to_string(), HOSTILE_STATE.to_string())));
    assert!(fields.contains(&("redirect_uri".to_string(), REDIRECT.to_string())));
}

#[tokio::test]
async fn accept_redirects_with_code_and_state() {
    let h = common::start(common::scenario()).await;
    let query = auth_query(true, &[("state", HOSTILE_STATE)]);
    let location = consent(&h, true, &query, "accept").await;
    assert!(
        location.starts_with("http://127.0.0.1/result?"),
        "{location}"
    );
    let q = query_of(&location);
    assert!(param(&q, "code").is_some_and(|c| c.len() > 20));
    assert_eq!(param(&q, "state"), Some(HOSTILE_STATE));
    assert_eq!(param(&q, "session_state"), None);

    let location = consent(&h, false, &auth_query(false, &[]), "accept").await;
    let q = query_of(&location);
    assert!(param(&q, "code").is_some());
    assert_eq!(param(&q, "state"), Some("st-1"));
    assert!(uuid::Uuid::parse_str(param(&q, "session_state").unwrap()).is_ok());
    assert_eq!(h.counters().tokens_total(), 0);
}

#[tokio::test]
async fn decline_redirects_with_access_denied() {
    let h = common::start(common::scenario()).await;
    let location = consent(&h, true, &auth_query(true, &[]), "decline").await;
    let q = query_of(&location);
    assert_eq!(param(&q, "error"), Some("access_denied"));
    assert!(
        param(&q, "error_description")
            .unwrap()
            .starts_with("AADSTS65004: User declined to consent")
    );
    assert_eq!(param(&q, "state"), Some("st-1"));
    assert_eq!(param(&q, "code"), None);
    assert!(h.world().codes.is_empty());
}

#[tokio::test]
async fn untrusted_requests_get_an_error_page_without_redirect() {
    let h = common::start(common::scenario()).await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            auth_query(
                true,
                &[("client_id", "00000000-0000-0000-0000-000000000009")],
            ),
            "AADSTS700016",
        ),
        (
            auth_query(true, &[("redirect_uri", "https://evil.example.com/cb")]),
            "AADSTS50011",
        ),
        (
            auth_query(true, &[("redirect_uri", "http://127.0.0.1/other")]),
            "AADSTS50011",
        ),
        (auth_query(true, &[("redirect_uri", "")]), "AADSTS900144"),
    ];
    for (query, code) in cases {
        let resp = authorize(&h, true, &query).await;
        assert_eq!(resp.status(), 400, "{code}");
        assert!(resp.headers().get("location").is_none());
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let page = resp.text().await.unwrap();
        assert!(page.contains(code), "{code}: {page}");
        assert!(!page.contains("evil.example.com/cb?"));
    }
    let resp = common::client()
        .get(format!("{}/nope/oauth2/v2.0/authorize", h.base_url()))
        .query(&auth_query(true, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("AADSTS90002"));
}

#[tokio::test]
async fn consent_post_revalidates_the_redirect_uri() {
    let h = common::start(common::scenario()).await;
    let page = authorize(&h, true, &auth_query(true, &[]))
        .await
        .text()
        .await
        .unwrap();
    let (action, fields) = form_of(&page);
    let mut forged: Vec<(String, String)> = fields
        .into_iter()
        .map(|(k, v)| {
            if k == "redirect_uri" {
                (k, "https://evil.example.com/steal".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    forged.push(("decision".into(), "accept".into()));
    let resp = common::client()
        .post(format!("{}{action}", h.base_url()))
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    assert!(h.world().codes.is_empty());
}

#[tokio::test]
async fn loopback_redirect_accepts_any_port() {
    let h = common::start(common::scenario()).await;
    for redirect in [
        "http://127.0.0.1:61234/result",
        "http://localhost:8080/result",
    ] {
        let query = auth_query(true, &[("redirect_uri", redirect)]);
        let location = consent(&h, true, &query, "accept").await;
        assert!(
            location.starts_with(&format!("{redirect}?code=")),
            "{location}"
        );
        let code = param(&query_of(&location), "code").unwrap().to_string();
        // The port is part of the exact redirect_uri the code is bound to.
        let resp = redeem(&h, true, &code, REDIRECT, None).await;
        assert_entra_error(resp, 400, "invalid_grant", 500112).await;
        let resp = redeem(&h, true, &code, redirect, None).await;
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn redirect_keeps_its_own_query_and_other_modes() {
    let mut s = common::scenario();
    s.tenants[0].apps[0]
        .redirect_uris
        .push("https://app.example.com/cb?tenant=a b".to_string());
    let h = common::start(s).await;
    let query = auth_query(
        true,
        &[("redirect_uri", "https://app.example.com/cb?tenant=a b")],
    );
    let location = consent(&h, true, &query, "accept").await;
    assert!(
        location.starts_with("https://app.example.com/cb?tenant=a%20b&code="),
        "{location}"
    );
    assert_eq!(param(&query_of(&location), "state"), Some("st-1"));

    let location = consent(
        &h,
        true,
        &auth_query(true, &[("response_mode", "fragment")]),
        "accept",
    )
    .await;
    let url = url::Url::parse(&location).unwrap();
    assert!(url.query().is_none());
    assert!(url.fragment().unwrap().starts_with("code="));

    let page = authorize(
        &h,
        true,
        &auth_query(true, &[("response_mode", "form_post")]),
    )
    .await
    .text()
    .await
    .unwrap();
    let (action, mut fields) = form_of(&page);
    fields.push(("decision".into(), "accept".into()));
    let resp = common::client()
        .post(format!("{}{action}", h.base_url()))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let posted = resp.text().await.unwrap();
    let (target, fields) = form_of(&posted);
    assert_eq!(target, REDIRECT);
    assert!(fields.iter().any(|(k, _)| k == "code"));
    assert!(fields.contains(&("state".to_string(), "st-1".to_string())));
}

#[tokio::test]
async fn request_errors_after_trust_are_redirected() {
    let h = common::start(common::scenario()).await;
    let resp = authorize(&h, true, &auth_query(true, &[("prompt", "none")])).await;
    assert_eq!(resp.status(), 302);
    let q = query_of(resp.headers()["location"].to_str().unwrap());
    assert_eq!(param(&q, "error"), Some("login_required"));
    assert_eq!(param(&q, "state"), Some("st-1"));

    let resp = authorize(&h, true, &auth_query(true, &[("response_type", "token")])).await;
    assert_eq!(resp.status(), 302);
    let q = query_of(resp.headers()["location"].to_str().unwrap());
    assert_eq!(param(&q, "error"), Some("unsupported_response_type"));

    let resp = authorize(
        &h,
        true,
        &auth_query(
            true,
            &[
                ("code_challenge", "short"),
                ("code_challenge_method", "S256"),
            ],
        ),
    )
    .await;
    assert_eq!(resp.status(), 302);
    let q = query_of(resp.headers()["location"].to_str().unwrap());
    assert_eq!(param(&q, "error"), Some("invalid_request"));
    assert!(
        param(&q, "error_description")
            .unwrap()
            .starts_with("AADSTS501491")
    );
}

// ---------------------------------------------------------------- authorization code

#[tokio::test]
async fn code_with_pkce_s256_redeems_once() {
    let h = common::start(common::scenario()).await;
    let challenge = s256(VERIFIER);
    let code = code(
        &h,
        true,
        &[
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let resp = redeem(&h, true, &code, REDIRECT, Some(VERIFIER)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["scope"].as_str().unwrap().contains("Machine.Isolate"));
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let c = claims(&h, body["access_token"].as_str().unwrap());
    assert_eq!(c.scp.as_deref(), Some(first_app_roles().join(" ").as_str()));
    assert_eq!(c.roles, None);
    assert_eq!(c.aud, RESOURCE);
    assert_eq!(c.azp.as_deref(), Some(CLIENT));
    assert_eq!(c.ver, "2.0");
    assert_eq!(h.counters().tokens("authorization_code"), 1);

    let resp = redeem(&h, true, &code, REDIRECT, Some(VERIFIER)).await;
    assert_entra_error(resp, 400, "invalid_grant", 54005).await;
    assert_eq!(h.counters().tokens("authorization_code"), 1);
}

#[tokio::test]
async fn code_with_plain_pkce_on_v1() {
    let h = common::start(common::scenario()).await;
    let code = code(
        &h,
        false,
        &[
            ("code_challenge", VERIFIER),
            ("code_challenge_method", "plain"),
        ],
    )
    .await;
    let resp = redeem(&h, false, &code, REDIRECT, Some(VERIFIER)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["resource"], RESOURCE);
    assert!(body["refresh_token"].is_string());
    let c = claims(&h, body["access_token"].as_str().unwrap());
    assert_eq!(c.ver, "1.0");
    assert_eq!(c.appid.as_deref(), Some(CLIENT));
    assert!(c.scp.unwrap().contains("Machine.Isolate"));
    assert_eq!(h.counters().tokens("authorization_code"), 1);
}

#[tokio::test]
async fn challenge_without_method_is_plain() {
    let h = common::start(common::scenario()).await;
    let challenge = s256(VERIFIER);
    let code = code(&h, true, &[("code_challenge", &challenge)]).await;
    // As in Entra, a challenge without a method is compared as plain text.
    let resp = redeem(&h, true, &code, REDIRECT, Some(VERIFIER)).await;
    assert_entra_error(resp, 400, "invalid_grant", 501481).await;
    let resp = redeem(&h, true, &code, REDIRECT, Some(&challenge)).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn pkce_verifier_mismatch_and_missing() {
    let h = common::start(common::scenario()).await;
    let challenge = s256(VERIFIER);
    let code = code(
        &h,
        true,
        &[
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let wrong = "x".repeat(50);
    let resp = redeem(&h, true, &code, REDIRECT, Some(&wrong)).await;
    assert_entra_error(resp, 400, "invalid_grant", 501481).await;
    // A challenge given as S256 is not matched by sending the challenge itself.
    let resp = redeem(&h, true, &code, REDIRECT, Some(&challenge)).await;
    assert_entra_error(resp, 400, "invalid_grant", 501481).await;
    let resp = redeem(&h, true, &code, REDIRECT, None).await;
    let body = assert_entra_error(resp, 400, "invalid_request", 900144).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("'code_verifier'")
    );
    assert_eq!(h.counters().tokens_total(), 0);
    // Failed attempts do not use the code up.
    let resp = redeem(&h, true, &code, REDIRECT, Some(VERIFIER)).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn expired_code_is_refused() {
    let h = common::start(common::scenario()).await;
    let code = code(&h, true, &[]).await;
    let lifetime = h.scenario().code_lifetime_secs;
    h.clock.advance(Duration::from_secs(lifetime + 1));
    let resp = redeem(&h, true, &code, REDIRECT, None).await;
    let body = assert_entra_error(resp, 400, "invalid_grant", 70008).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("has expired")
    );
    assert_eq!(h.counters().tokens_total(), 0);
}

#[tokio::test]
async fn code_redirect_uri_must_match_exactly() {
    let h = common::start(common::scenario()).await;
    let code = code(&h, true, &[]).await;
    let resp = redeem(&h, true, &code, "http://localhost/result", None).await;
    let body = assert_entra_error(resp, 400, "invalid_grant", 500112).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("http://localhost/result")
    );
    let resp = redeem(&h, true, &code, REDIRECT, None).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn code_needs_the_client_secret_and_the_right_client() {
    let h = common::start(common::scenario()).await;
    let code = code(&h, true, &[]).await;
    let resp = post_form(
        &token_url(&h, TENANT, true),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_entra_error(resp, 401, "invalid_client", 7000218).await;
    let resp = post_form(
        &token_url(&h, TENANT, true),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"),
            ("client_secret", "reader-secret-value"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_entra_error(resp, 400, "invalid_grant", 70000).await;
}

#[tokio::test]
async fn v2_without_offline_access_gets_no_refresh_token() {
    let h = common::start(common::scenario()).await;
    let query = auth_query(true, &[("scope", SCOPE)]);
    let page = authorize(&h, true, &query).await.text().await.unwrap();
    assert!(!page.contains("Maintain access"));
    let location = consent(&h, true, &query, "accept").await;
    let code = param(&query_of(&location), "code").unwrap().to_string();
    let body: Value = redeem(&h, true, &code, REDIRECT, None)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["access_token"].is_string());
    assert!(body.get("refresh_token").is_none());
}

// ---------------------------------------------------------------- refresh tokens

async fn first_refresh_token(h: &SimHandle) -> String {
    let code = code(h, true, &[]).await;
    let body: Value = redeem(h, true, &code, REDIRECT, None)
        .await
        .json()
        .await
        .unwrap();
    body["refresh_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn refresh_tokens_rotate() {
    let h = common::start(common::scenario()).await;
    let rt1 = first_refresh_token(&h).await;

    let resp = refresh(&h, true, &rt1).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let rt2 = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    let c = claims(&h, body["access_token"].as_str().unwrap());
    assert!(c.scp.unwrap().contains("Machine.Isolate"));

    let resp = refresh(&h, false, &rt2).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["resource"], RESOURCE);
    let rt3 = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt3, rt2);

    for old in [&rt1, &rt2] {
        let resp = refresh(&h, true, old).await;
        assert_entra_error(resp, 400, "invalid_grant", 70008).await;
    }
    assert_eq!(refresh(&h, true, &rt3).await.status(), 200);
    let c = h.counters();
    assert_eq!(c.tokens("refresh_token"), 3);
    assert_eq!(c.tokens("authorization_code"), 1);
    assert_eq!(c.tokens("client_credentials"), 0);

    let resp = refresh(&h, true, "0.Anever-issued").await;
    assert_entra_error(resp, 400, "invalid_grant", 9002313).await;
}

#[tokio::test]
async fn revoked_refresh_token_is_refused() {
    let h = common::start(common::scenario()).await;
    let rt = first_refresh_token(&h).await;
    h.revoke_refresh_tokens(None);
    let resp = refresh(&h, true, &rt).await;
    assert_entra_error(resp, 400, "invalid_grant", 70008).await;
    assert_eq!(h.counters().tokens("refresh_token"), 0);
}

#[tokio::test]
async fn refresh_token_expires_after_90_days() {
    let h = common::start(common::scenario()).await;
    let rt = first_refresh_token(&h).await;
    h.clock.advance(Duration::from_secs(89 * 24 * 3600));
    let resp = refresh(&h, true, &rt).await;
    assert_eq!(resp.status(), 200);
    let rt2 = resp.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // The new token starts a fresh 90-day window.
    h.clock.advance(Duration::from_secs(91 * 24 * 3600));
    let resp = refresh(&h, true, &rt2).await;
    assert_entra_error(resp, 400, "invalid_grant", 700082).await;
}

#[tokio::test]
async fn refresh_needs_the_client_secret() {
    let h = common::start(common::scenario()).await;
    let rt = first_refresh_token(&h).await;
    let resp = post_form(
        &token_url(&h, TENANT, true),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", "wrong"),
            ("refresh_token", &rt),
        ],
    )
    .await;
    assert_entra_error(resp, 401, "invalid_client", 7000215).await;
    // A refused attempt does not use the token up.
    assert_eq!(refresh(&h, true, &rt).await.status(), 200);
}
