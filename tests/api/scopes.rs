//! Scoped API keys: each scope refused and allowed where it should be, keys limited to assets
//! (vault files included), failed authentications counted and slowed down.

use std::collections::BTreeSet;

use defender_sim::Scenario;
use defender_soar::config::{ApiKeyConfig, AssetScope, Scope};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;

pub const READER: &str = "reader-key-000000000000000000000000000001";
pub const RESPONDER: &str = "responder-key-0000000000000000000000000002";
pub const LIVE: &str = "live-key-0000000000000000000000000000000003";
pub const ADMIN: &str = "admin-key-000000000000000000000000000000004";
pub const OTHER: &str = "other-asset-key-0000000000000000000000000005";
const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
const HOSTS: &str = "C:\\Windows\\System32\\drivers\\etc\\hosts";

fn key(name: &str, secret: &str, assets: Option<&[&str]>, scopes: &[Scope]) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.into(),
        secret: SecretString::from(secret.to_string()),
        assets: match assets {
            None => AssetScope::All,
            Some(ids) => AssetScope::Only(ids.iter().map(|s| s.to_string()).collect()),
        },
        scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
    }
}

/// The default scenario with actions final at once.
pub fn instant() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.timings.pending_ms = 0;
    s.timings.in_progress_ms = 0;
    s
}

/// A host with the five test keys besides the default one.
pub async fn spawn_keyed() -> TestApp {
    spawn_configured(instant(), |c| {
        c.server.api_keys = vec![
            key("soc-reader", READER, Some(&["contoso"]), &[Scope::Read]),
            key(
                "soc-responder",
                RESPONDER,
                Some(&["contoso"]),
                &[Scope::Respond],
            ),
            key(
                "soc-live",
                LIVE,
                Some(&["contoso"]),
                &[Scope::LiveResponse, Scope::Read],
            ),
            key("soc-admin", ADMIN, None, &[Scope::Admin]),
            key(
                "other-asset",
                OTHER,
                Some(&["contoso_v1"]),
                &[Scope::LiveResponse, Scope::Read],
            ),
        ]
    })
    .await
}

pub async fn call(
    app: &TestApp,
    secret: &str,
    method: &str,
    path: &str,
    params: Option<Value>,
) -> (u16, String, Option<String>) {
    let req = match method {
        "POST" => app
            .client
            .post(app.url(path))
            .json(&json!({"parameters": params.unwrap_or(json!({}))})),
        _ => app.client.get(app.url(path)),
    };
    let resp = req.bearer_auth(secret).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.text().await.unwrap(), retry)
}

fn assert_forbidden(resp: &(u16, String, Option<String>), names: &str) {
    assert_eq!(resp.0, 403, "{}", resp.1);
    let body: Value = serde_json::from_str(&resp.1).unwrap();
    assert_eq!(body["status"], "failed");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains(names), "{msg}");
    for secret in [READER, RESPONDER, LIVE, ADMIN, OTHER, API_KEY] {
        assert!(!resp.1.contains(secret));
    }
    for name in [
        "soc-reader",
        "soc-responder",
        "soc-live",
        "soc-admin",
        "other-asset",
    ] {
        assert!(!msg.contains(name), "the key is never named: {msg}");
    }
}

#[tokio::test]
async fn each_scope_is_refused_and_allowed_where_it_should_be() {
    let app = spawn_keyed().await;
    let action = |a: &str| format!("/assets/contoso/actions/{a}");
    let isolate = json!({"device_id": DEV, "comment": "IR-1", "isolation_type": "Full"});
    let unisolate = json!({"device_id": DEV, "comment": "IR-1"});
    let fetch = json!({"device_id": DEV, "file_path": HOSTS, "comment": "IR-1", "timeout": 30});

    // read
    let r = call(&app, READER, "POST", &action("test_connectivity"), None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(call(&app, READER, "GET", "/actions", None).await.0, 200);
    assert_forbidden(
        &call(
            &app,
            READER,
            "POST",
            &action("unquarantine_device"),
            Some(unisolate.clone()),
        )
        .await,
        "'respond'",
    );
    assert_forbidden(
        &call(
            &app,
            READER,
            "POST",
            &action("get_file"),
            Some(fetch.clone()),
        )
        .await,
        "'live_response'",
    );
    for path in ["/metrics", "/manifest.json", "/openapi.json", "/audit"] {
        assert_forbidden(&call(&app, READER, "GET", path, None).await, "'admin'");
    }
    assert_forbidden(
        &call(&app, READER, "POST", "/assets/contoso/consent", None).await,
        "'admin'",
    );
    // Out of its assets.
    assert_forbidden(
        &call(
            &app,
            READER,
            "POST",
            "/assets/contoso_v1/actions/test_connectivity",
            None,
        )
        .await,
        "asset 'contoso_v1'",
    );

    // respond
    let r = call(
        &app,
        RESPONDER,
        "POST",
        &action("unquarantine_device"),
        Some(unisolate),
    )
    .await;
    assert!(r.0 != 401 && r.0 != 403, "{}", r.1);
    let _ = isolate;
    assert_forbidden(
        &call(&app, RESPONDER, "POST", &action("test_connectivity"), None).await,
        "'read'",
    );
    assert_forbidden(
        &call(&app, RESPONDER, "GET", "/assets/contoso/alerts/feed", None).await,
        "'read'",
    );

    // live_response
    let r = call(&app, LIVE, "POST", &action("get_file"), Some(fetch)).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_forbidden(
        &call(
            &app,
            LIVE,
            "POST",
            &action("unquarantine_device"),
            Some(json!({"device_id": DEV, "comment": "x"})),
        )
        .await,
        "'respond'",
    );

    // admin
    for path in ["/metrics", "/manifest.json", "/openapi.json", "/audit"] {
        let r = call(&app, ADMIN, "GET", path, None).await;
        assert_eq!(r.0, 200, "{path}: {}", r.1);
    }
    let r = call(&app, ADMIN, "POST", "/assets/contoso/consent", None).await;
    assert_eq!(r.0, 409, "client credentials need no consent: {}", r.1);
    assert_forbidden(
        &call(&app, ADMIN, "POST", &action("test_connectivity"), None).await,
        "'read'",
    );

    // The default key keeps every scope on every asset.
    assert_eq!(call(&app, API_KEY, "GET", "/metrics", None).await.0, 200);
    assert_eq!(
        app.invoke("contoso_v1", "test_connectivity", json!({}))
            .await
            .0,
        200
    );
    // Unknown keys: 401.
    let r = call(
        &app,
        "not-a-key-0000000000000000000000000000000",
        "GET",
        "/actions",
        None,
    )
    .await;
    assert_eq!(r.0, 401, "{}", r.1);
}

#[tokio::test]
async fn a_key_for_one_asset_cannot_act_on_or_read_the_files_of_another() {
    let app = spawn_keyed().await;
    let fetch = json!({"device_id": DEV, "file_path": HOSTS, "comment": "IR-1", "timeout": 30});
    let r = call(
        &app,
        LIVE,
        "POST",
        "/assets/contoso/actions/get_file",
        Some(fetch.clone()),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let body: Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let vault_id = body["summary"]["vault_id"].as_str().unwrap().to_string();

    // The key of contoso reads it.
    assert_eq!(
        call(&app, LIVE, "GET", &format!("/vault/{vault_id}"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, LIVE, "GET", &format!("/vault/{vault_id}/info"), None)
            .await
            .0,
        200
    );
    // The key of contoso_v1 neither reads it nor acts on contoso.
    assert_forbidden(
        &call(&app, OTHER, "GET", &format!("/vault/{vault_id}"), None).await,
        "asset 'contoso'",
    );
    assert_forbidden(
        &call(&app, OTHER, "GET", &format!("/vault/{vault_id}/info"), None).await,
        "asset 'contoso'",
    );
    assert_forbidden(
        &call(
            &app,
            OTHER,
            "POST",
            "/assets/contoso/actions/get_file",
            Some(fetch),
        )
        .await,
        "asset 'contoso'",
    );
}

fn failures(reason: &str) -> u64 {
    let text = defender_soar::telemetry::metrics().unwrap().render();
    let prefix = format!("defender_auth_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn failed_authentications_are_logged_counted_and_slowed_down() {
    let app = spawn_keyed().await;
    let before = failures("unknown_key");
    let bad = "guessed-key-a8f3e2c1-should-never-be-logged";
    for _ in 0..10 {
        let r = call(&app, bad, "GET", "/actions", None).await;
        assert_eq!(r.0, 401, "{}", r.1);
        assert!(!r.1.contains(bad));
    }
    assert!(failures("unknown_key") >= before + 10);
    // The address is now slowed down: its next failure is answered late (and counted so)...
    let throttled = failures("throttled");
    let r = call(&app, bad, "GET", "/actions", None).await;
    assert_eq!(r.0, 401, "{}", r.1);
    assert!(failures("throttled") > throttled);
    // ... while a valid key from the same address is served as ever.
    let r = call(&app, READER, "GET", "/actions", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(logs.contains("authentication failed: unknown API key"));
    assert!(logs.contains("127.0.0.1"));
    for secret in [bad, READER, RESPONDER, LIVE, ADMIN, OTHER, API_KEY] {
        assert!(
            !logs.contains(secret),
            "a presented or configured key was logged"
        );
    }
}
