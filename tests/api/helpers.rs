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
        client_secret: SecretString::from(app.secret.clone()),
        auth: AuthKind::ClientCredentials,
        environment: Environment::Public,
        token_endpoint: TokenEndpoint::V2,
        login_url: sim_base.to_string(),
        api_url: sim_base.to_string(),
        resource: Environment::Public.resource().to_string(),
        disabled_actions: BTreeSet::new(),
        connect_timeout_secs: 5,
        http_timeout_secs: 30,
    }
}

/// The standard set of test assets.
pub fn standard_assets(scenario: &Scenario, base: &str) -> Vec<AssetConfig> {
    let mut v1 = asset("contoso_v1", scenario, base);
    v1.token_endpoint = TokenEndpoint::V1;
    let mut bad_secret = asset("bad_secret", scenario, base);
    bad_secret.client_secret = SecretString::from(WRONG_SECRET.to_string());
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
    tokio::spawn(defender_soar::http::serve(app, listener, async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
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

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
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
