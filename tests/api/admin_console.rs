//! The admin console over plain HTTP: sign-in with an admin-scoped key and a form token,
//! the session cookie, CSRF on every form, what the console shows per asset, the ticketed
//! consent it starts, sign-out, and that no page carries a secret.

use std::collections::BTreeMap;

use defender_soar::config::{AuthKind, Scope};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::scopes::{ADMIN, READER, spawn_keyed};

/// A cookie-keeping client that does not follow redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    jar: BTreeMap<String, String>,
}

/// One answer: status, headers and body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The value of the hidden `csrf` field of the first form carrying one.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.url(""),
            jar: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        let answer = Answer {
            status,
            headers,
            body,
        };
        for c in answer.set_cookies() {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_string(), v.to_string());
            }
        }
        answer
    }

    async fn get(&mut self, path: &str) -> Answer {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(resp).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        self.post_with(path, fields, &[]).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        self.keep(resp).await
    }

    /// Signs in with `key`; answers the console page.
    async fn sign_in(&mut self, key: &str) -> Answer {
        let form = self.get("/admin").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let token = form.csrf();
        let signed = self
            .post("/admin/sign-in", &[("csrf", &token), ("api_key", key)])
            .await;
        assert_eq!(signed.status, 303, "{}", signed.body);
        assert_eq!(signed.header("location"), "/admin");
        let console = self.get("/admin").await;
        assert_eq!(console.status, 200, "{}", console.body);
        console
    }
}

/// Asserts `answer` is an HTML page with the console's headers.
fn assert_console_headers(a: &Answer) {
    assert_eq!(a.header("content-type"), "text/html; charset=utf-8");
    let csp = a.header("content-security-policy");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert!(a.header("cache-control").contains("no-store"));
    assert_eq!(a.header("x-frame-options"), "DENY");
}

#[tokio::test]
async fn sign_in_needs_the_form_token_and_an_admin_key() {
    let app = spawn_keyed().await;
    let mut b = Browser::new(&app);

    let form = b.get("/admin").await;
    assert_eq!(form.status, 200);
    assert_console_headers(&form);
    assert!(form.body.contains("id=\"api_key\""), "{}", form.body);
    let cookie = form.set_cookies().join("\n");
    assert!(cookie.contains("defender-soar-admin-sign-in="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(
        cookie.contains(&format!("defender-soar-admin-sign-in={};", form.csrf())),
        "the form token is the cookie's value: {cookie}"
    );

    // No form token, a token not bound to the cookie, a cross-site POST: refused unchecked.
    let none = b.post("/admin/sign-in", &[("api_key", ADMIN)]).await;
    assert_eq!(none.status, 403, "{}", none.body);
    let other = b
        .post(
            "/admin/sign-in",
            &[
                ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("api_key", ADMIN),
            ],
        )
        .await;
    assert_eq!(other.status, 403, "{}", other.body);
    let token = other.csrf();
    let cross = b
        .post_with(
            "/admin/sign-in",
            &[("csrf", &token), ("api_key", ADMIN)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(cross.status, 403, "{}", cross.body);
    for refused in [&none, &other, &cross] {
        assert!(
            !refused
                .set_cookies()
                .iter()
                .any(|c| c.starts_with("defender-soar-admin=")),
            "no session without a valid form"
        );
    }

    // A wrong key, a key without the admin scope.
    let token = cross.csrf();
    let wrong = b
        .post(
            "/admin/sign-in",
            &[
                ("csrf", &token),
                ("api_key", "wrong-key-000000000000000000000000000000"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("not accepted"), "{}", wrong.body);
    let token = wrong.csrf();
    let reader = b
        .post("/admin/sign-in", &[("csrf", &token), ("api_key", READER)])
        .await;
    assert_eq!(reader.status, 403, "{}", reader.body);
    assert!(reader.body.contains("admin scope"), "{}", reader.body);
    assert!(!b.jar.contains_key("defender-soar-admin"));
    for page in [&wrong, &reader] {
        assert!(!page.body.contains(READER) && !page.body.contains("wrong-key-"));
    }

    // The admin key opens a session: an HttpOnly, SameSite=Strict cookie, the console.
    let token = reader.csrf();
    let signed = b
        .post("/admin/sign-in", &[("csrf", &token), ("api_key", ADMIN)])
        .await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let session = signed
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("defender-soar-admin="))
        .expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(!session.contains(ADMIN));
    let console = b.get("/admin").await;
    assert_eq!(console.status, 200, "{}", console.body);
    assert_console_headers(&console);
    assert!(
        console.body.contains("signed in as soc-admin"),
        "{}",
        console.body
    );
    assert!(!console.body.contains(ADMIN));

    // Sign-in attempts are audited, with the key's name only.
    let (status, audit) = app_get_json(&app, "/audit?limit=1000").await;
    assert_eq!(status, 200);
    let lines: Vec<&Value> = audit["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "admin_sign_in")
        .collect();
    let statuses: Vec<u64> = lines
        .iter()
        .map(|l| l["outcome"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![401, 403, 200], "{audit}");
    assert_eq!(lines[2]["key"], "soc-admin");
    assert!(!audit.to_string().contains(ADMIN));

    // Sign-out needs the session's token, then ends the session.
    let forged = b.post("/admin/sign-out", &[]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(b.get("/admin").await.status, 200);
    let csrf = b.get("/admin").await.csrf();
    let out = b.post("/admin/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    let after = b.get("/admin").await;
    assert!(
        after.body.contains("id=\"api_key\""),
        "signed out: {}",
        after.body
    );
}

async fn app_get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn the_console_shows_each_asset_and_starts_a_ticketed_consent() {
    let app = spawn_configured(crate::scopes::instant(), |c| {
        c.server.api_keys = vec![defender_soar::config::ApiKeyConfig {
            name: "console-admin".into(),
            secret: secrecy::SecretString::from(ADMIN.to_string()),
            assets: defender_soar::config::AssetScope::Only(
                ["contoso", "interactive", "bad_secret", "devcode"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            scopes: [Scope::Admin].into_iter().collect(),
        }];
        let mut interactive = c.assets["contoso"].clone();
        interactive.id = "interactive".into();
        interactive.auth = AuthKind::AuthorizationCode;
        c.assets.insert("interactive".into(), interactive);
        let mut devcode = c.assets["contoso"].clone();
        devcode.id = "devcode".into();
        devcode.auth = AuthKind::DeviceCode;
        c.assets.insert("devcode".into(), devcode);
    })
    .await;
    // contoso fetches a token and makes a call; interactive has none.
    let (status, body) = app.invoke("contoso", "test_connectivity", json!({})).await;
    assert_eq!(status, 200, "{body}");

    let mut b = Browser::new(&app);
    let console = b.sign_in(ADMIN).await;
    let page = &console.body;
    // Only the key's assets, each in its state.
    assert!(page.contains("id=\"asset-contoso\""), "{page}");
    assert!(page.contains("id=\"asset-interactive\""), "{page}");
    assert!(!page.contains("id=\"asset-contoso_v1\""), "{page}");
    assert!(
        page.contains("id=\"state-contoso\" data-state=\"connected\""),
        "{page}"
    );
    assert!(
        page.contains("id=\"state-interactive\" data-state=\"needs_consent\""),
        "{page}"
    );
    assert!(
        page.contains("id=\"state-bad_secret\" data-state=\"not_used_yet\""),
        "{page}"
    );
    // Only the interactive asset has a Connect button.
    assert!(page.contains("id=\"connect-interactive\""), "{page}");
    assert!(!page.contains("id=\"connect-contoso\""), "{page}");
    // The budget shows the calls test_connectivity made, per family.
    for family in [
        "default",
        "live_response",
        "package_uri",
        "hunting",
        "graph",
    ] {
        assert!(
            page.contains(&format!("data-family=\"{family}\"")),
            "{page}"
        );
    }
    assert!(page.contains("<h3>Permissions</h3>"), "{page}");
    assert!(
        page.contains("This host") && page.contains("State backend"),
        "{page}"
    );
    // The audit lines of contoso include the test_connectivity call? (read-only: not
    // audited), so the section says nothing is recorded yet.
    assert!(page.contains("audit lines"), "{page}");

    // No secret of any kind on the page.
    let stored = app.app.state.load("contoso").await.unwrap();
    let access = stored.tokens.unwrap().access_token;
    assert!(!page.contains(access.expose_secret()));
    let client_secret = app.app.config.assets["contoso"]
        .client_secret
        .clone()
        .unwrap();
    assert!(!page.contains(client_secret.expose_secret()));
    assert!(!page.contains(ADMIN) && !page.contains(API_KEY));
    let session_id = b.jar["defender-soar-admin"].clone();
    assert!(!page.contains(&session_id));

    // Connect without the session's CSRF token (none, or another session's): refused, nothing
    // started.
    let none = b.post("/admin/assets/interactive/connect", &[]).await;
    assert_eq!(none.status, 403, "{}", none.body);
    let mut other = Browser::new(&app);
    let other_csrf = other.sign_in(ADMIN).await.csrf();
    let foreign = b
        .post(
            "/admin/assets/interactive/connect",
            &[("csrf", &other_csrf)],
        )
        .await;
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    let stored = app.app.state.load("interactive").await.unwrap();
    assert!(stored.consent_tickets.is_empty(), "no ticket issued");

    // An asset outside the key's list, or a hostile id: not found, not echoed raw.
    let csrf = console.csrf();
    let outside = b
        .post("/admin/assets/contoso_v1/connect", &[("csrf", &csrf)])
        .await;
    assert_eq!(outside.status, 404, "{}", outside.body);
    let hostile = b
        .post("/admin/assets/%3Cscript%3Ex/connect", &[("csrf", &csrf)])
        .await;
    assert_eq!(hostile.status, 404);
    assert!(!hostile.body.contains("<script>x"));

    // With the token: a single-use consent link for this browser, audited under the key.
    let started = b
        .post("/admin/assets/interactive/connect", &[("csrf", &csrf)])
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    assert_console_headers(&started);
    let prefix = format!("href=\"{}", app.url("/start_oauth?ticket="));
    assert!(started.body.contains(&prefix), "{}", started.body);
    let stored = app.app.state.load("interactive").await.unwrap();
    assert_eq!(stored.consent_tickets.len(), 1);
    let (_, audit) = app_get_json(&app, "/audit?limit=1000").await;
    let consent = audit["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["action"] == "consent" && l["asset"] == "interactive")
        .unwrap_or_else(|| panic!("no consent line: {audit}"));
    assert_eq!(consent["key"], "console-admin");
    assert_eq!(consent["outcome"]["status"], 200);

    // The console lists that line in the asset's audit section.
    let again = b.get("/admin").await;
    assert!(
        again.body.contains("single-use consent link issued"),
        "{}",
        again.body
    );

    // A device code asset: the page shows the code and where to enter it.
    let device = b
        .post("/admin/assets/devcode/connect", &[("csrf", &csrf)])
        .await;
    assert_eq!(device.status, 200, "{}", device.body);
    assert!(device.body.contains("id=\"user-code\""), "{}", device.body);
    assert!(
        device.body.contains("id=\"verification-uri\""),
        "{}",
        device.body
    );

    // A client-credentials asset has nothing to consent to.
    let app_only = b
        .post("/admin/assets/contoso/connect", &[("csrf", &csrf)])
        .await;
    assert_eq!(app_only.status, 409, "{}", app_only.body);

    // Without a session: the sign-in form, nothing started.
    let mut stranger = Browser::new(&app);
    let anon = stranger
        .post("/admin/assets/interactive/connect", &[("csrf", &csrf)])
        .await;
    assert_eq!(anon.status, 401, "{}", anon.body);
    assert!(anon.body.contains("id=\"api_key\""));
    let stored = app.app.state.load("interactive").await.unwrap();
    assert_eq!(stored.consent_tickets.len(), 1);

    // The stylesheet is served to anyone, as CSS.
    let css = stranger.get("/admin/style.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
}

#[tokio::test]
async fn the_console_shows_ingestion_and_a_broken_state_file() {
    let app = crate::ingestion::host(defender_soar::config::IngestionConfig::default()).await;
    // contoso_v1's state file is damaged (garbage where the encrypted state was).
    let broken = app.state_dir.path().join("contoso_v1_state.json");
    std::fs::write(&broken, b"{\"not\": \"a state file\"").unwrap();

    let mut b = Browser::new(&app);
    let console = b.sign_in(API_KEY).await;
    let page = &console.body;
    // Ingestion: the start-up poll is shown with its time and outcome.
    let contoso = &page[page.find("id=\"asset-contoso\"").unwrap()..];
    let contoso = &contoso[..contoso.find("</section>").unwrap()];
    assert!(contoso.contains("<h3>Alert ingestion</h3>"), "{contoso}");
    assert!(contoso.contains("<th>Last poll</th><td>20"), "{contoso}");
    assert!(contoso.contains("every 3600 s"), "{contoso}");
    // The broken file: its own state and recovery step, no path; the others unaffected.
    assert!(
        page.contains("id=\"state-contoso_v1\" data-state=\"state_broken\""),
        "{page}"
    );
    assert!(page.contains("DEFENDER_SOAR_STATE_KEY"), "{page}");
    assert!(!page.contains(&app.state_dir.path().display().to_string()));
    assert!(!page.contains("id=\"connect-contoso_v1\""));
    assert!(
        page.contains("id=\"state-contoso\" data-state=\"connected\""),
        "{page}"
    );
    // Reading the page changed no state file.
    assert_eq!(
        std::fs::read(&broken).unwrap(),
        b"{\"not\": \"a state file\"".to_vec()
    );
}
