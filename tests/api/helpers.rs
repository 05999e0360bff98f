//! Test harness: a simulator, a host wired to it, and typed request helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use defender_sim::{Scenario, SimHandle};
use defender_soar::app::App;
use defender_soar::config::{AssetConfig, AuthKind, Config, Environment, TokenEndpoint};
use secrecy::SecretString;
use serde_json::{Value, json};

/// The API key of test hosts.
pub const API_KEY: &str = "test-api-key-7d1c9e0f";
/// A wrong client secret whose appearance anywhere would be a leak.
pub const WRONG_SECRET: &str = "wrong-secret-b6f0a1c3-should-never-be-seen";

/// Everything the host ever logged in this test binary.
pub fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line (all targets, TRACE) of this test binary.
pub fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .try_init();
    });
}

/// A running host with its simulator.
pub struct TestApp {
    pub addr: SocketAddr,
    pub app: std::sync::Arc<App>,
    pub sim: SimHandle,
    pub client: reqwest::Client,
    pub state_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// An asset on the simulator's first tenant and app.
pub fn asset(id: &str, scenario: &Scenario, sim_base: &str) -> AssetConfig {
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
        auth: AuthKind::ClientCredentials,
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

/// The standard set of test assets.
pub fn standard_assets(scenario: &Scenario, base: &str) -> Vec<AssetConfig> {
    let mut v1 = asset("contoso_v1", scenario, base);
    v1.token_endpoint = TokenEndpoint::V1;
    let mut bad_secret = asset("bad_secret", scenario, base);
    bad_secret.client_secret = Some(SecretString::from(WRONG_SECRET.to_string()));
    let mut no_tenant = asset("no_tenant", scenario, base);
    no_tenant.tenant_id = "00000000-1111-2222-3333-444444444444".into();
    let mut no_client = asset("no_client", scenario, base);
    no_client.client_id = "99999999-8888-7777-6666-555555555555".into();
    let mut limited = asset("limited", scenario, base);
    limited.disabled_actions = ["list_devices".to_string()].into_iter().collect();
    vec![
        asset("contoso", scenario, base),
        v1,
        bad_secret,
        no_tenant,
        no_client,
        limited,
    ]
}

/// Starts a simulator with `scenario` and a host with the standard assets.
pub async fn spawn_with(scenario: Scenario) -> TestApp {
    capture_logs();
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml_str("").unwrap();
    config.server.state_dir = state_dir.path().to_path_buf();
    for a in standard_assets(&scenario, &sim.base_url()) {
        config.assets.insert(a.id.clone(), a);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.server.public_url = format!("http://{addr}").parse().unwrap();
    let app = App::build(config, SecretString::from(API_KEY.to_string())).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(defender_soar::http::serve(
        app.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    TestApp {
        addr,
        app,
        sim,
        client: reqwest::Client::new(),
        state_dir,
        shutdown: Some(tx),
    }
}

/// Starts with the default scenario.
pub async fn spawn() -> TestApp {
    spawn_with(Scenario::default_scenario()).await
}

/// Fails the test when a handler of `app` set summary keys its definition does not declare
/// (unless the test is already failing).
pub fn assert_no_summary_drift(app: &App) {
    if std::thread::panicking() {
        return;
    }
    let drift = app.summary_drift.lines();
    assert!(
        drift.is_empty(),
        "summary keys missing from the action definitions' output:\n  {}",
        drift.join("\n  ")
    );
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        assert_no_summary_drift(&self.app);
    }
}

impl TestApp {
    /// How many callers follow `event_id` on `asset`.
    pub fn watchers(&self, asset: &str, event_id: &str) -> usize {
        self.app
            .asset(asset)
            .map_or(0, |a| a.tracker.watchers(event_id))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST an action with parameters; returns (HTTP status, envelope).
    pub async fn invoke(&self, asset: &str, action: &str, params: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/assets/{asset}/actions/{action}")))
            .bearer_auth(API_KEY)
            .json(&json!({ "parameters": params }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (status, body)
    }

    /// GET with the API key; returns (status, body text).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// Asserts the envelope shape every action answer has.
pub fn assert_envelope(body: &Value, action: &str, asset: &str) {
    assert_eq!(body["action"], action, "{body}");
    assert_eq!(body["asset_id"], asset, "{body}");
    assert!(
        body["status"] == "success" || body["status"] == "failed",
        "{body}"
    );
    assert!(body["message"].is_string(), "{body}");
    assert!(body["summary"].is_object(), "{body}");
    assert!(body["data"].is_array(), "{body}");
    assert!(body["parameters"].is_object(), "{body}");
}

/// A scenario of the default with the list page size set.
pub fn scenario_with_page_size(n: usize) -> Scenario {
    let mut s = Scenario::default_scenario();
    s.default_page_size = n;
    s
}

// ---------------------------------------------------------------------------------------------
// Hosts sharing a simulator and a state directory; driving the consent flow without a browser.
// ---------------------------------------------------------------------------------------------

/// An asset on the scenario's first tenant and its app number `app_index`, consenting
/// interactively (v2 endpoint).
pub fn interactive_asset(
    id: &str,
    scenario: &Scenario,
    sim_base: &str,
    app_index: usize,
) -> AssetConfig {
    let mut a = asset_on_app(id, scenario, sim_base, app_index);
    a.auth = AuthKind::AuthorizationCode;
    a
}

/// A client-credentials asset on the scenario's first tenant and its app number `app_index`.
pub fn asset_on_app(
    id: &str,
    scenario: &Scenario,
    sim_base: &str,
    app_index: usize,
) -> AssetConfig {
    let mut a = asset(id, scenario, sim_base);
    let app = &scenario.first_tenant().unwrap().apps[app_index];
    a.client_id = app.client_id.clone();
    a.client_secret = Some(SecretString::from(app.secret.clone()));
    a
}

/// A host alone, over a configuration chosen by the test.
pub struct Host {
    pub addr: SocketAddr,
    /// A client that does not follow redirects.
    pub client: reqwest::Client,
    pub app: std::sync::Arc<App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Starts a host over `config` on a random port (`public_url` set to it).
pub async fn start_host(mut config: Config) -> Host {
    capture_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.server.public_url = format!("http://{addr}").parse().unwrap();
    let app = App::build(config, SecretString::from(API_KEY.to_string())).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(defender_soar::http::serve(
        app.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    Host {
        addr,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        app,
        shutdown: Some(tx),
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        assert_no_summary_drift(&self.app);
    }
}

impl Host {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST an action with parameters; returns (HTTP status, envelope).
    pub async fn invoke(&self, asset: &str, action: &str, params: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/assets/{asset}/actions/{action}")))
            .bearer_auth(API_KEY)
            .json(&json!({ "parameters": params }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (status, body)
    }

    /// `POST /assets/{asset}/consent` with the API key: (HTTP status, envelope).
    pub async fn request_consent(&self, asset: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/assets/{asset}/consent")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// A single-use consent link for `asset` (asserted to be issued).
    pub async fn consent_link(&self, asset: &str) -> String {
        let (status, body) = self.request_consent(asset).await;
        assert_eq!(status, 200, "{body}");
        body["summary"]["consent_url"].as_str().unwrap().to_string()
    }

    /// GET without the API key (the consent routes); returns the whole response.
    pub async fn open_get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(self.url(path_and_query))
            .send()
            .await
            .unwrap()
    }
}

/// An HTML page answer: status, headers, body.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub async fn from(resp: reqwest::Response) -> Page {
        Page {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Undoes the HTML escaping of attribute values.
pub fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A simulator, a state directory and a host over them; the host can be restarted.
pub struct Rig {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub assets: Vec<AssetConfig>,
    /// `[assets.<id>.ingestion]` of the hosts the rig starts.
    pub ingestion: std::collections::BTreeMap<String, defender_soar::config::IngestionConfig>,
    pub host: Host,
    /// A client that does not follow redirects (for the simulator's authorize endpoint).
    pub browser: reqwest::Client,
    /// The browser-binding cookie (`name=value`) the last consent start set.
    pub cookie: std::sync::Mutex<Option<String>>,
}

impl Rig {
    /// Starts a simulator with `scenario` and a host with the assets `assets` builds from the
    /// scenario and the simulator's base URL.
    pub async fn new(
        scenario: Scenario,
        assets: impl FnOnce(&Scenario, &str) -> Vec<AssetConfig>,
    ) -> Rig {
        Self::with_ingestion(scenario, assets, Default::default()).await
    }

    /// Like [`Rig::new`], the hosts ingesting alerts of the assets in `ingestion`.
    pub async fn with_ingestion(
        scenario: Scenario,
        assets: impl FnOnce(&Scenario, &str) -> Vec<AssetConfig>,
        ingestion: std::collections::BTreeMap<String, defender_soar::config::IngestionConfig>,
    ) -> Rig {
        capture_logs();
        let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let assets = assets(&scenario, &sim.base_url());
        let host = start_host(Self::config(dir.path(), &assets, &ingestion)).await;
        Rig {
            sim,
            dir,
            assets,
            ingestion,
            host,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: std::sync::Mutex::new(None),
        }
    }

    fn config(
        dir: &std::path::Path,
        assets: &[AssetConfig],
        ingestion: &std::collections::BTreeMap<String, defender_soar::config::IngestionConfig>,
    ) -> Config {
        let mut config = Config::from_toml_str("").unwrap();
        config.server.state_dir = dir.to_path_buf();
        // Tests make hundreds of calls a minute: no client-side budget in the way.
        let budget = defender_soar::config::BudgetConfig {
            default: defender_soar::config::RateLimit::new(1_000_000, None),
            ..defender_soar::config::BudgetConfig::STANDARD
        };
        for a in assets {
            config.assets.insert(a.id.clone(), a.clone());
            config.budgets.insert(a.id.clone(), budget);
        }
        config.ingestion = ingestion.clone();
        config
    }

    /// Stops the host and starts a new one (new port, empty memory) over the same state
    /// directory and simulator.
    pub async fn restart(&mut self) {
        let host = start_host(Self::config(self.dir.path(), &self.assets, &self.ingestion)).await;
        self.host = host;
    }

    /// Another host over the same state directory and simulator (as a second process sharing
    /// the directory would be), running next to the rig's own host.
    pub async fn second_host(&self) -> Host {
        start_host(Self::config(self.dir.path(), &self.assets, &self.ingestion)).await
    }

    /// `<state dir>/<asset>_state.json`.
    pub fn state_file(&self, asset: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{asset}_state.json"))
    }

    /// The state file's bytes, `None` when there is none.
    pub fn state_bytes(&self, asset: &str) -> Option<Vec<u8>> {
        std::fs::read(self.state_file(asset)).ok()
    }

    /// The state store of the directory (same key as the host's).
    pub fn store(&self) -> defender_soar::state::StateStore {
        defender_soar::state::StateStore::open(self.dir.path()).unwrap()
    }

    pub async fn invoke(&self, asset: &str, action: &str, params: Value) -> (u16, Value) {
        self.host.invoke(asset, action, params).await
    }

    /// A consent link from the API, opened as the browser: the authorize URL it redirects
    /// to (the binding cookie is kept for [`Rig::follow`]).
    pub async fn start_consent(&self, asset: &str) -> String {
        let link = self.host.consent_link(asset).await;
        self.open_link(&link).await
    }

    /// Opens a consent link as the browser: asserts the redirect, keeps the cookie, answers
    /// the authorize URL.
    pub async fn open_link(&self, link: &str) -> String {
        let resp = self.browser.get(link).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 302, "{:?}", resp.text().await);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap();
        let pair = cookie.split(';').next().unwrap().to_string();
        *self.cookie.lock().unwrap() = Some(pair);
        resp.headers()["location"].to_str().unwrap().to_string()
    }

    /// Submits the simulator's consent form at `authorize_url` with `decision` (`accept` or
    /// `decline`), as a browser would: the hidden fields of the page plus the button's value.
    /// Answers where the simulator sends the browser (the host's `/result?…`).
    pub async fn decide(&self, authorize_url: &str, decision: &str) -> String {
        self.decide_as(authorize_url, decision, None).await
    }

    /// [`Rig::decide`] signed in as `user` (a UPN of any tenant of the scenario).
    pub async fn decide_as(
        &self,
        authorize_url: &str,
        decision: &str,
        user: Option<&str>,
    ) -> String {
        let page = self.browser.get(authorize_url).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        let html = page.text().await.unwrap();
        let form = regex::Regex::new(r#"<form method="post" action="([^"]*)" id="consent">"#)
            .unwrap()
            .captures(&html)
            .unwrap_or_else(|| panic!("no consent form in {html}"))[1]
            .to_string();
        let hidden =
            regex::Regex::new(r#"<input type="hidden" name="([^"]*)" value="([^"]*)">"#).unwrap();
        let mut fields: Vec<(String, String)> = hidden
            .captures_iter(&html)
            .map(|c| (html_unescape(&c[1]), html_unescape(&c[2])))
            .collect();
        fields.push(("decision".into(), decision.into()));
        if let Some(user) = user {
            fields.push(("user".into(), user.into()));
        }
        let action = format!("{}{}", self.sim.base_url(), html_unescape(&form));
        let resp = self
            .browser
            .post(action)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 302, "{:?}", resp.text().await);
        resp.headers()["location"].to_str().unwrap().to_string()
    }

    /// GET a URL the simulator redirected to (the host's `/result?…`), with the browser's
    /// binding cookie.
    pub async fn follow(&self, location: &str) -> Page {
        let mut request = self.browser.get(location);
        if let Some(cookie) = self.cookie.lock().unwrap().clone() {
            request = request.header("cookie", cookie);
        }
        Page::from(request.send().await.unwrap()).await
    }

    /// GET a URL the simulator redirected to from a browser without the binding cookie.
    pub async fn follow_elsewhere(&self, location: &str) -> Page {
        Page::from(self.browser.get(location).send().await.unwrap()).await
    }

    /// The whole consent: start, accept, result page (asserted to be a success).
    pub async fn consent(&self, asset: &str) -> Page {
        let authorize = self.start_consent(asset).await;
        let back = self.decide(&authorize, "accept").await;
        let page = self.follow(&back).await;
        assert_eq!(page.status, 200, "{}", page.body);
        page
    }
}

/// Starts a simulator with `scenario` and a host with the standard assets, after `configure`
/// adjusted the configuration (request budgets, timeouts, ...).
pub async fn spawn_configured(scenario: Scenario, configure: impl FnOnce(&mut Config)) -> TestApp {
    capture_logs();
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml_str("").unwrap();
    config.server.state_dir = state_dir.path().to_path_buf();
    for a in standard_assets(&scenario, &sim.base_url()) {
        config.assets.insert(a.id.clone(), a);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.server.public_url = format!("http://{addr}").parse().unwrap();
    configure(&mut config);
    // Assets of one app registration share one budget, the strictest of theirs: the
    // standard assets on the registration of an asset given a budget get the same one, so
    // the budget a test sets is the one that applies.
    let registration = |a: &AssetConfig| {
        (
            a.tenant_id.to_ascii_lowercase(),
            a.client_id.to_ascii_lowercase(),
        )
    };
    let given: Vec<_> = config
        .budgets
        .iter()
        .filter_map(|(id, b)| Some((registration(config.assets.get(id)?), *b)))
        .collect();
    for (id, a) in &config.assets {
        if !config.budgets.contains_key(id)
            && let Some((_, b)) = given.iter().find(|(r, _)| *r == registration(a))
        {
            config.budgets.insert(id.clone(), *b);
        }
    }
    let app = App::build(config, SecretString::from(API_KEY.to_string())).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(defender_soar::http::serve(
        app.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    TestApp {
        addr,
        app,
        sim,
        client: reqwest::Client::new(),
        state_dir,
        shutdown: Some(tx),
    }
}

/// The default scenario where machine actions only move when the test moves them.
pub fn manual() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.timings.manual = true;
    s
}
