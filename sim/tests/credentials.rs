//! Certificate client assertions at the token endpoints and the managed identity endpoint,
//! over real HTTP.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use defender_sim::{Scenario, SimHandle};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TENANT: &str = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7";
const CLIENT: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const RESOURCE: &str = "https://api.securitycenter.microsoft.com";
const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const IDENTITY: &str = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d6e7f";

/// A test-only fixture of the host crate.
fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/certificate")
            .join(name),
    )
    .unwrap()
}

/// The default scenario with the test certificate registered for the first app.
fn scenario() -> Scenario {
    let mut s = common::scenario();
    s.tenants[0].apps[0].certificates = vec![fixture("test-only-cert.pem")];
    s
}

fn token_url(h: &SimHandle, v2: bool) -> String {
    let v = if v2 { "v2.0/" } else { "" };
    format!("{}/{TENANT}/oauth2/{v}token", h.base_url())
}

/// base64url SHA-256 of the PEM certificate's DER.
fn thumbprint(cert_pem: &str) -> String {
    let der = pem::parse(cert_pem).unwrap().into_contents();
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// An assertion signed with `key`, naming `cert` in `x5t#S256`, with `claims` over defaults.
fn assertion(h: &SimHandle, v2: bool, cert: &str, key: &str, changes: Value) -> String {
    let now = h.clock.unix();
    let mut claims = json!({
        "aud": token_url(h, v2), "iss": CLIENT, "sub": CLIENT,
        "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 600,
    });
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let mut header = Header::new(Algorithm::RS256);
    header.x5t_s256 = Some(thumbprint(&fixture(cert)));
    let key = EncodingKey::from_rsa_pem(fixture(key).as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

async fn redeem(h: &SimHandle, v2: bool, assertion: &str) -> reqwest::Response {
    let target = if v2 {
        ("scope", SCOPE)
    } else {
        ("resource", RESOURCE)
    };
    common::client()
        .post(token_url(h, v2))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
            target,
        ])
        .send()
        .await
        .unwrap()
}

async fn refused(resp: reqwest::Response, status: u16, error: &str, code: u64) -> String {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    body["error_description"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn certificate_assertions_get_app_tokens_at_v1_and_v2() {
    let h = common::start(scenario()).await;
    for v2 in [true, false] {
        let a = assertion(
            &h,
            v2,
            "test-only-cert.pem",
            "test-only-key.pkcs8.pem",
            json!({}),
        );
        let resp = redeem(&h, v2, &a).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let claims = defender_sim::jwt::verify(&h, body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.client_id(), CLIENT);
        assert!(claims.has_permission("Machine.Isolate"));
    }
    let counters = h.counters();
    assert_eq!(counters.tokens_issued.get("certificate"), Some(&2));
    assert_eq!(counters.tokens_issued.get("client_credentials"), None);
}

#[tokio::test]
async fn bad_assertions_are_refused_with_entra_codes() {
    let h = common::start(scenario()).await;
    let (cert, key) = ("test-only-cert.pem", "test-only-key.pkcs8.pem");
    // A certificate the app does not know.
    let a = assertion(
        &h,
        true,
        "other-test-only-cert.pem",
        "other-test-only-key.pem",
        json!({}),
    );
    let d = refused(redeem(&h, true, &a).await, 401, "invalid_client", 700027).await;
    assert!(d.contains("The key was not found"), "{d}");
    // The registered certificate's thumbprint, signed by another key.
    let a = assertion(&h, true, cert, "other-test-only-key.pem", json!({}));
    refused(redeem(&h, true, &a).await, 401, "invalid_client", 700027).await;
    // Addressed to another endpoint (v1 URL used at v2).
    let a = assertion(&h, true, cert, key, json!({"aud": token_url(&h, false)}));
    refused(redeem(&h, true, &a).await, 401, "invalid_client", 700023).await;
    // Issued for another client.
    let other = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e";
    let a = assertion(&h, true, cert, key, json!({"iss": other}));
    refused(redeem(&h, true, &a).await, 401, "invalid_client", 700021).await;
    let a = assertion(&h, true, cert, key, json!({"sub": other}));
    refused(redeem(&h, true, &a).await, 401, "invalid_client", 700021).await;
    // Outside its time window, on the simulated clock.
    let now = h.clock.unix();
    let a = assertion(
        &h,
        true,
        cert,
        key,
        json!({"nbf": now - 900, "exp": now - 300}),
    );
    refused(redeem(&h, true, &a).await, 401, "invalid_client", 700024).await;
    let a = assertion(
        &h,
        true,
        cert,
        key,
        json!({"nbf": now + 3600, "exp": now + 4000}),
    );
    refused(redeem(&h, true, &a).await, 401, "invalid_client", 700024).await;
    let late = assertion(&h, true, cert, key, json!({}));
    h.clock.advance(Duration::from_secs(601));
    refused(redeem(&h, true, &late).await, 401, "invalid_client", 700024).await;
    // Replayed.
    let a = assertion(&h, true, cert, key, json!({}));
    assert_eq!(redeem(&h, true, &a).await.status(), 200);
    let d = refused(redeem(&h, true, &a).await, 401, "invalid_client", 50027).await;
    assert!(d.contains("already used"), "{d}");
    // No assertion type.
    let a = assertion(&h, true, cert, key, json!({}));
    let resp = common::client()
        .post(token_url(&h, true))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_assertion", a.as_str()),
            ("scope", SCOPE),
        ])
        .send()
        .await
        .unwrap();
    refused(resp, 400, "invalid_request", 900144).await;
    // An app without certificates.
    let mut s = scenario();
    s.tenants[0].apps[0].certificates.clear();
    h.load_scenario(s);
    let a = assertion(&h, true, cert, key, json!({}));
    refused(redeem(&h, true, &a).await, 401, "invalid_client", 700027).await;
    assert_eq!(h.counters().tokens_issued.get("certificate"), None);
}

async fn imds(h: &SimHandle, query: &[(&str, &str)], metadata: bool) -> reqwest::Response {
    let mut req = common::client()
        .get(format!("{}/metadata/identity/oauth2/token", h.base_url()))
        .query(query);
    if metadata {
        req = req.header("Metadata", "true");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn managed_identity_endpoint_issues_role_tokens() {
    let h = common::start(scenario()).await;
    let base = [("api-version", "2018-02-01"), ("resource", RESOURCE)];
    let resp = imds(&h, &base, false).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("metadata header")
    );

    for query in [
        base.to_vec(),
        [&base[..], &[("client_id", IDENTITY)]].concat(),
    ] {
        let resp = imds(&h, &query, true).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["resource"], RESOURCE);
        assert_eq!(body["client_id"], IDENTITY);
        assert!(
            body["expires_in"].is_string(),
            "v1 numbers are strings: {body}"
        );
        let claims = defender_sim::jwt::verify(&h, body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.tid, TENANT);
        assert_eq!(claims.aud, RESOURCE);
        assert!(claims.has_permission("Machine.Isolate"));
        assert!(!claims.has_permission("Machine.Offboard"));
    }
    let unknown = [
        &base[..],
        &[("client_id", "00000000-0000-0000-0000-000000000001")],
    ]
    .concat();
    let resp = imds(&h, &unknown, true).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_description"], "Identity not found");
    let resp = imds(&h, &[("api-version", "2018-02-01")], true).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(h.counters().tokens_issued.get("managed_identity"), Some(&2));
}
