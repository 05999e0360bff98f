//! Browser tests: headless Chromium, driven over WebDriver (chromedriver), walks through the
//! admin consent flow against the in-process simulator and the real host.
//!
//! They need Debian's `chromium` and `chromium-driver` packages (`.ci/run` installs them); when
//! either is missing the tests fail and say so, they never skip.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::RawQuery;
use axum::response::Html;
use defender_sim::{Scenario, SimHandle};
use defender_soar::app::App;
use defender_soar::config::{AssetConfig, AuthKind, Config, Environment, TokenEndpoint};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Chromium as installed by Debian's `chromium` package.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server from Debian's `chromium-driver` package.
const CHROMEDRIVER: &str = "chromedriver";
/// How long any one wait (driver start, page load, element) may take.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(50);
/// The API key of the test host.
const API_KEY: &str = "browser-test-api-key-5e2a9c71";
/// The configured asset that consents interactively.
const ASSET: &str = "admin";

const INSTALL_HINT: &str = "install Debian's chromium and chromium-driver packages \
     (`apt-get install -y chromium chromium-driver`; .ci/run does this)";

// ---------------------------------------------------------------------------------------------
// Harness: chromedriver + a headless Chromium session
// ---------------------------------------------------------------------------------------------

/// `name` as found on PATH (or as given when it contains a slash).
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A chromedriver child process, killed when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    /// Starts chromedriver on a free loopback port and waits until `/status` says it is ready.
    async fn start(log: &Path) -> ChromeDriver {
        let program = find_program(CHROMEDRIVER)
            .unwrap_or_else(|| panic!("`{CHROMEDRIVER}` is not on PATH: {INSTALL_HINT}"));
        let http = reqwest::Client::new();
        // The port is free when asked for, but another process may take it before chromedriver
        // binds it: try again with a new port when chromedriver exits early.
        for _attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let child = Command::new(&program)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            let mut driver = ChromeDriver { child, port };
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = driver.child.try_wait() {
                    eprintln!("chromedriver on port {port} exited ({status}); retrying");
                    break;
                }
                let ready = http
                    .get(format!("http://127.0.0.1:{port}/status"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if let Ok(resp) = ready {
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    if body["value"]["ready"] == true {
                        return driver;
                    }
                }
                if started.elapsed() > DEADLINE {
                    panic!(
                        "chromedriver did not become ready on port {port} within {DEADLINE:?}; \
                         log:\n{}",
                        read_tail(log)
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
        panic!(
            "chromedriver failed to start three times; log:\n{}",
            read_tail(log)
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last few kilobytes of a log file, for failure messages.
fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// A headless Chromium session with its own empty profile; the browser quits when dropped.
struct Browser {
    client: Client,
    session: Option<String>,
    /// Profile, chromedriver log, screenshots.
    dir: TempDir,
    driver: ChromeDriver,
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session.
    async fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: {INSTALL_HINT}"
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let driver = ChromeDriver::start(&log).await;
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--window-size=1024,768".to_string(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot open a Chromium session through chromedriver: {e}; log:\n{}",
                    read_tail(&log)
                )
            });
        let session = client.session_id().await.unwrap();
        Browser {
            client,
            session,
            dir,
            driver,
        }
    }

    /// Opens `url` (returns once the page has loaded).
    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Waits until the browser shows a page whose URL satisfies `want`, fully loaded.
    async fn wait_for_url(&self, what: &str, want: impl Fn(&url::Url) -> bool) -> url::Url {
        let started = Instant::now();
        let mut last = None;
        loop {
            if let Ok(url) = self.client.current_url().await {
                if want(&url) {
                    let state = self
                        .client
                        .execute("return document.readyState", vec![])
                        .await
                        .unwrap_or(Value::Null);
                    if state == "complete" {
                        return url;
                    }
                }
                last = Some(url);
            }
            if started.elapsed() > DEADLINE {
                let shown = last.map(|u| u.to_string()).unwrap_or_default();
                panic!(
                    "no page {what} within {DEADLINE:?}; the browser is at {shown}; page:\n{}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an element matching `css` is on the page.
    async fn wait_for(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(DEADLINE)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(el) => el,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                panic!(
                    "no element `{css}` within {DEADLINE:?} ({e}); the browser is at {url:?}; \
                     page:\n{}",
                    self.body_text().await
                )
            }
        }
    }

    /// The visible text of the current page.
    async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no page body: {e})"),
        }
    }

    /// Clicks the element matching `css` (waiting for it first).
    async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
    }

    /// Saves a PNG of the current viewport as `name` in the session's directory.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = self.dir.path().join(name);
        std::fs::write(&path, &png).unwrap();
        if let Some(keep) = std::env::var_os("BROWSER_TEST_ARTIFACTS") {
            let keep = PathBuf::from(keep);
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::write(keep.join(name), &png).unwrap();
        }
        path
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    async fn close(mut self) {
        if self.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }
}

impl Drop for Browser {
    /// A test that panicked never reached `close`: end the session synchronously so that
    /// chromedriver quits Chromium before it is killed itself.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(session) = self.session.take() else {
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], self.driver.port));
        if let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                // Wait for the whole answer (chromedriver keeps the connection open).
                let mut answer = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    answer.extend_from_slice(&buf[..n]);
                    if response_complete(&answer) {
                        break;
                    }
                }
            }
        }
    }
}

/// Whether `bytes` hold a complete HTTP/1.1 answer with a Content-Length body.
fn response_complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}

// ---------------------------------------------------------------------------------------------
// The simulator's consent page alone
// ---------------------------------------------------------------------------------------------

/// A tiny OAuth client endpoint: records every query string that reaches `/result`.
async fn spawn_redirect_catcher() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let router = axum::Router::new().route(
        "/result",
        axum::routing::get(move |RawQuery(q): RawQuery| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(q.unwrap_or_default());
                Html("<!DOCTYPE html><title>caught</title><p id=\"caught\">redirect received</p>")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, seen)
}

/// The query parameter `name` of `url`.
fn query_param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_consent_page_redirects_with_code_or_error() {
    let scenario = Scenario::default_scenario();
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let tenant = scenario.first_tenant().unwrap();
    let app = tenant.apps.first().unwrap();
    let (catcher, seen) = spawn_redirect_catcher().await;
    let redirect_uri = format!("http://127.0.0.1:{}/result", catcher.port());
    let authorize = |state: &str| {
        let mut url = url::Url::parse(&format!(
            "{}/{}/oauth2/v2.0/authorize",
            sim.base_url(),
            tenant.id
        ))
        .unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", &app.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair(
                "scope",
                "https://api.securitycenter.microsoft.com/.default offline_access",
            )
            .append_pair("state", state);
        url.to_string()
    };
    let browser = Browser::launch().await;

    // Accept: back at the client with a code and the same state.
    browser.goto(&authorize("state-accept-1")).await;
    let app_name = browser.wait_for("#app-name").await.text().await.unwrap();
    assert_eq!(app_name, app.name);
    let permissions = browser.wait_for("#permissions").await.text().await.unwrap();
    assert!(permissions.contains("Machine.Isolate"), "{permissions}");
    browser.click("#accept").await;
    let landed = browser
        .wait_for_url("at the redirect URI", |u| {
            u.port() == Some(catcher.port()) && u.path() == "/result"
        })
        .await;
    browser.wait_for("#caught").await;
    assert_eq!(
        query_param(&landed, "state").as_deref(),
        Some("state-accept-1")
    );
    let code = query_param(&landed, "code").expect("a code in the redirect");
    assert!(!code.is_empty());
    assert_eq!(query_param(&landed, "error"), None);
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Decline: back at the client with access_denied and the same state, no code.
    browser.goto(&authorize("state-decline-2")).await;
    browser.click("#decline").await;
    let landed = browser
        .wait_for_url("at the redirect URI after declining", |u| {
            u.port() == Some(catcher.port())
                && query_param(u, "state").as_deref() == Some("state-decline-2")
        })
        .await;
    assert_eq!(
        query_param(&landed, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&landed, "code"), None);
    assert_eq!(seen.lock().unwrap().len(), 2);

    browser.close().await;
    drop(sim);
}

// ---------------------------------------------------------------------------------------------
// The host's consent flow: consent link from the API → /start_oauth → consent page → /result →
// an action
// ---------------------------------------------------------------------------------------------

/// The simulator and a host with one interactive asset, both on random loopback ports.
struct Host {
    addr: SocketAddr,
    sim: SimHandle,
    state_dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Host {
    async fn spawn() -> Host {
        Host::spawn_with(&[]).await
    }

    /// The host with, besides the interactive asset, client-credentials assets named `others`.
    async fn spawn_with(others: &[&str]) -> Host {
        let scenario = Scenario::default_scenario();
        let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
            .await
            .unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml_str("").unwrap();
        config.server.state_dir = state_dir.path().to_path_buf();
        let asset = interactive_asset(ASSET, &scenario, &sim.base_url());
        for id in others {
            let mut other = asset.clone();
            other.id = id.to_string();
            other.auth = AuthKind::ClientCredentials;
            config.assets.insert(other.id.clone(), other);
        }
        config.assets.insert(asset.id.clone(), asset);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.server.public_url = format!("http://{addr}").parse().unwrap();
        let app = App::build(config, SecretString::from(API_KEY.to_string())).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(defender_soar::http::serve(app, listener, async move {
            let _ = rx.await;
        }));
        Host {
            addr,
            sim,
            state_dir,
            shutdown: Some(tx),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir.path().join(format!("{ASSET}_state.json"))
    }

    /// The state file's bytes, or None when it does not exist.
    fn state_bytes(&self) -> Option<Vec<u8>> {
        match std::fs::read(self.state_file()) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("cannot read {}: {e}", self.state_file().display()),
        }
    }

    /// A single-use consent link from `POST /assets/{asset}/consent`.
    async fn consent_link(&self) -> String {
        let resp = reqwest::Client::new()
            .post(self.url(&format!("/assets/{ASSET}/consent")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.unwrap();
        body["summary"]["consent_url"].as_str().unwrap().to_string()
    }

    /// POSTs an action with the API key; returns (HTTP status, envelope).
    async fn invoke(&self, action: &str, params: Value) -> (u16, Value) {
        self.invoke_on(ASSET, action, params).await
    }

    /// POSTs an action on `asset` with the API key; returns (HTTP status, envelope).
    async fn invoke_on(&self, asset: &str, action: &str, params: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url(&format!("/assets/{asset}/actions/{action}")))
            .bearer_auth(API_KEY)
            .json(&json!({ "parameters": params }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An asset on the simulator's first tenant and app that gets its tokens by admin consent.
fn interactive_asset(id: &str, scenario: &Scenario, sim_base: &str) -> AssetConfig {
    let tenant = scenario.first_tenant().unwrap();
    let app = tenant.apps.first().unwrap();
    AssetConfig {
        id: id.to_string(),
        tenant_id: tenant.id.clone(),
        client_id: app.client_id.clone(),
        client_secret: Some(SecretString::from(app.secret.clone())),
        client_secret_file: None,
        certificate: None,
        managed_identity: None,
        auth: AuthKind::AuthorizationCode,
        environment: Environment::Public,
        token_endpoint: TokenEndpoint::V2,
        login_url: sim_base.to_string(),
        api_url: sim_base.to_string(),
        graph_url: sim_base.to_string(),
        resource: Environment::Public.resource().to_string(),
        disabled_actions: BTreeSet::new(),
        allow_offboard: false,
        allowed_consenters: Vec::new(),
        triage: Default::default(),
        hunting: Default::default(),
        connect_timeout_secs: 5,
        http_timeout_secs: 30,
        download_hosts: defender_soar::config::DownloadHosts::parse(&[
            "http://127.0.0.1".to_string()
        ])
        .unwrap(),
    }
}

/// Asks the API for a consent link, opens it and waits for the simulator's consent page.
async fn open_consent_page(browser: &Browser, host: &Host) {
    let sim_port = host.sim.addr.port();
    let link = host.consent_link().await;
    assert!(
        link.starts_with(&host.url("/start_oauth?ticket=")),
        "{link}"
    );
    browser.goto(&link).await;
    let at = browser
        .wait_for_url("on the simulator's consent page", |u| {
            u.port() == Some(sim_port) && u.path().ends_with("/authorize")
        })
        .await;
    let redirect_uri = query_param(&at, "redirect_uri").unwrap_or_default();
    assert_eq!(redirect_uri, host.url("/result"), "{at}");
    let app_name = browser.wait_for("#app-name").await.text().await.unwrap();
    assert_eq!(app_name, "defender-soar demo");
    let permissions = browser.wait_for("#permissions").await.text().await.unwrap();
    assert!(permissions.contains("Machine.Read.All"), "{permissions}");
}

/// Waits for the host's `/result` page and answers its visible text.
async fn result_page(browser: &Browser, host: &Host) -> String {
    let host_port = host.addr.port();
    browser
        .wait_for_url("on the host's /result page", |u| {
            u.port() == Some(host_port) && u.path() == "/result"
        })
        .await;
    browser.body_text().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_accepted_connects_the_asset_and_actions_work() {
    let host = Host::spawn().await;
    let browser = Browser::launch().await;

    open_consent_page(&browser, &host).await;
    browser.click("#accept").await;
    let text = result_page(&browser, &host).await;
    let heading = browser.wait_for("h1").await.text().await.unwrap();
    assert!(heading.to_lowercase().contains("connected"), "{text}");
    assert!(heading.split_whitespace().any(|w| w == ASSET), "{text}");
    // The page names who connected the asset (the account chosen on the consent page).
    let consenter = browser.wait_for("#consenter").await.text().await.unwrap();
    assert!(
        consenter.starts_with("admin@contoso.onmicrosoft.com"),
        "{text}"
    );
    assert_eq!(
        host.sim.counters().tokens_issued.get("authorization_code"),
        Some(&1),
        "one code exchange"
    );
    let shot = browser.screenshot("result-accepted.png").await;
    eprintln!("screenshot of the /result page: {}", shot.display());

    // The stored tokens carry an action through the host.
    let (status, body) = host.invoke("list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["action"], "list_devices", "{body}");
    assert_eq!(body["asset_id"], ASSET, "{body}");
    assert!(!body["data"].as_array().unwrap().is_empty(), "{body}");

    // The state file exists, private to its owner.
    let meta = std::fs::metadata(host.state_file())
        .unwrap_or_else(|e| panic!("no state file at {}: {e}", host.state_file().display()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_declined_says_so_and_changes_nothing() {
    let host = Host::spawn().await;
    let browser = Browser::launch().await;

    open_consent_page(&browser, &host).await;
    let before = host.state_bytes();
    browser.click("#decline").await;
    let text = result_page(&browser, &host).await;
    let heading = browser.wait_for("h1").await.text().await.unwrap();
    assert!(heading.to_lowercase().contains("declined"), "{text}");
    assert!(text.contains("access_denied"), "{text}");
    assert!(!text.to_lowercase().contains("now connected"), "{text}");
    assert_eq!(host.state_bytes(), before, "the state file changed");
    assert_eq!(
        host.sim.counters().tokens_issued.get("authorization_code"),
        None,
        "no code exchange"
    );

    // Still no tokens: the action asks for consent instead of running.
    let (status, body) = host.invoke("list_devices", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(host.state_bytes(), before, "the state file changed");

    browser.close().await;
}

// ---------------------------------------------------------------------------------------------
// The admin console: sign in, two assets in different states, reconnect one through consent
// ---------------------------------------------------------------------------------------------

/// The `data-state` of an asset's badge on the console.
async fn console_state(browser: &Browser, asset: &str) -> String {
    browser
        .wait_for(&format!("#state-{asset}"))
        .await
        .attr("data-state")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Asserts `path` is a PNG of some substance.
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        path.display()
    );
    assert!(
        bytes.len() > 5_000,
        "{} is nearly empty ({} bytes)",
        path.display(),
        bytes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_signs_in_and_reconnects_an_asset() {
    let host = Host::spawn_with(&["contoso"]).await;
    // contoso (client credentials) fetches its token; the interactive asset has none.
    let (status, body) = host
        .invoke_on("contoso", "test_connectivity", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let browser = Browser::launch().await;

    // A wrong key is refused and opens nothing.
    browser.goto(&host.url("/admin")).await;
    browser
        .wait_for("#api_key")
        .await
        .send_keys("not-the-key-0000000000000000000000000")
        .await
        .unwrap();
    browser.click("#sign-in").await;
    let problem = browser.wait_for("#problem").await.text().await.unwrap();
    assert!(problem.contains("not accepted"), "{problem}");
    assert_png(&browser.screenshot("admin-console-wrong-key.png").await);

    // The right key signs in: both assets, each in its own state.
    browser
        .wait_for("#api_key")
        .await
        .send_keys(API_KEY)
        .await
        .unwrap();
    browser.click("#sign-in").await;
    browser.wait_for("#asset-contoso").await;
    assert_eq!(console_state(&browser, "contoso").await, "connected");
    assert_eq!(console_state(&browser, ASSET).await, "needs_consent");
    let text = browser.body_text().await;
    assert!(!text.contains(API_KEY), "the key is not shown");
    assert_png(&browser.screenshot("admin-console-before.png").await);

    // A form without the session's CSRF token is refused, with the browser's own session.
    let session = browser
        .client
        .get_named_cookie("defender-soar-admin")
        .await
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    let forged = reqwest::Client::new()
        .post(host.url(&format!("/admin/assets/{ASSET}/connect")))
        .header("cookie", format!("defender-soar-admin={}", session.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(
        host.sim.counters().tokens_issued.get("authorization_code"),
        None
    );

    // Connect: a single-use consent link, the simulator's consent page, back connected.
    browser.click(&format!("#connect-{ASSET}")).await;
    browser.click("#consent-link").await;
    let sim_port = host.sim.addr.port();
    browser
        .wait_for_url("on the simulator's consent page", |u| {
            u.port() == Some(sim_port) && u.path().ends_with("/authorize")
        })
        .await;
    browser.click("#accept").await;
    let text = result_page(&browser, &host).await;
    assert!(text.to_lowercase().contains("connected"), "{text}");
    assert_eq!(
        host.sim.counters().tokens_issued.get("authorization_code"),
        Some(&1),
        "one code exchange"
    );

    // The stored tokens carry an action; the console shows it in the asset's budget.
    let (status, body) = host.invoke("list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
    browser.goto(&host.url("/admin")).await;
    assert_eq!(console_state(&browser, ASSET).await, "connected");
    assert_eq!(console_state(&browser, "contoso").await, "connected");
    let text = browser.body_text().await;
    assert!(text.contains("single-use consent link issued"), "{text}");
    assert!(text.contains("connected by"), "{text}");
    browser.client.set_window_size(1200, 1500).await.unwrap();
    let shot = browser.screenshot("admin-console.png").await;
    assert_png(&shot);
    eprintln!("screenshot of the admin console: {}", shot.display());

    // Signing out ends the session.
    browser.click("#sign-out").await;
    browser.wait_for("#api_key").await;

    browser.close().await;
}
