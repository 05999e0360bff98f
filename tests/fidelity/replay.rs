//! A replay server: answers the host's upstream calls with Microsoft's documented bytes, per
//! endpoint and in order, and the host wired to it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use defender_soar::app::App;
use defender_soar::config::{AssetConfig, AuthKind, Config, Environment, TokenEndpoint};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::corpus::{self, Fixture, key};

/// The API key of the test host.
pub const API_KEY: &str = "fidelity-api-key-3b9d";
/// The asset every replay test uses.
pub const ASSET: &str = "contoso";

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Body (`Null`: none).
    pub body: Value,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The documented answer of a fixture.
    pub fn of(f: &Fixture) -> Answer {
        let headers = f.json["response"]["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Answer {
            status: f.status(),
            body: f.body().clone(),
            headers,
        }
    }
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The catalogue endpoint (`METHOD /template`), `token` for Entra, `None` when unknown.
    pub endpoint: Option<String>,
    /// JSON body (`Null` when none or not JSON).
    pub body: Value,
}

#[derive(Default)]
struct Script {
    answers: HashMap<String, VecDeque<Answer>>,
    seen: Vec<Seen>,
}

/// The replay server.
pub struct Replay {
    /// `http://127.0.0.1:port`.
    pub base: String,
    script: Arc<Mutex<Script>>,
}

impl Replay {
    /// Starts a server on a random port.
    pub async fn start() -> Replay {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new().fallback(handle).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Replay {
            base: format!("http://{addr}"),
            script,
        }
    }

    /// Queues the documented answer of fixture `name` for its endpoint.
    pub fn answer(&self, name: &str) -> &Replay {
        let f = corpus::load(name);
        let endpoint = f
            .catalogue_endpoint()
            .unwrap_or_else(|| panic!("{name} names no catalogue endpoint"));
        self.answer_with(&key(endpoint), Answer::of(&f))
    }

    /// Queues `answer` for `endpoint` (`METHOD /template`). The last answer of an endpoint
    /// repeats once the queue is down to it.
    pub fn answer_with(&self, endpoint: &str, answer: Answer) -> &Replay {
        self.script
            .lock()
            .unwrap()
            .answers
            .entry(endpoint.to_string())
            .or_default()
            .push_back(answer);
        self
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    /// The API endpoints called, in order (token requests left out).
    pub fn calls(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.endpoint.as_deref() != Some("token"))
            .map(|s| {
                s.endpoint
                    .unwrap_or_else(|| format!("unknown {} {}", s.method, s.path))
            })
            .collect()
    }

    /// The requests of one endpoint.
    pub fn requests_to(&self, endpoint: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.endpoint.as_deref() == Some(endpoint))
            .collect()
    }

    /// Fails when the host called an endpoint no answer was scripted for.
    pub fn assert_no_unscripted_calls(&self) {
        let script = self.script.lock().unwrap();
        let unscripted: Vec<String> = script
            .seen
            .iter()
            .filter(|s| match &s.endpoint {
                Some(e) if e == "token" => false,
                Some(e) => !script.answers.contains_key(e),
                None => true,
            })
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert!(
            unscripted.is_empty(),
            "calls without a scripted answer: {unscripted:?}"
        );
    }
}

async fn handle(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let bare = uri.path();
    if method == Method::POST && bare.contains("/oauth2/") && bare.ends_with("/token") {
        let fixture = if bare.ends_with("/v2.0/token") {
            "entra/token_v2.json"
        } else {
            "entra/token_v1_strings.json"
        };
        script.lock().unwrap().seen.push(Seen {
            method: method.to_string(),
            path,
            endpoint: Some("token".into()),
            body: Value::Null,
        });
        return respond(&Answer::of(&corpus::load(fixture)));
    }
    let endpoint = corpus::endpoint_of(method.as_str(), bare).map(key);
    let answer = {
        let mut s = script.lock().unwrap();
        s.seen.push(Seen {
            method: method.to_string(),
            path,
            endpoint: endpoint.clone(),
            body: json_body,
        });
        endpoint.as_ref().and_then(|e| {
            let queue = s.answers.get_mut(e)?;
            if queue.len() > 1 {
                queue.pop_front()
            } else {
                queue.front().cloned()
            }
        })
    };
    match answer {
        Some(a) => respond(&a),
        None => respond(&Answer {
            status: 404,
            body: json!({"error": {"code": "NotFound", "message": "the replay script has no answer for this call", "target": "00000000-0000-0000-0000-000000000000"}}),
            headers: Vec::new(),
        }),
    }
}

fn respond(a: &Answer) -> Response {
    let mut b = Response::builder().status(StatusCode::from_u16(a.status).unwrap());
    for (k, v) in &a.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    if a.body.is_null() {
        b.body(Body::empty()).unwrap()
    } else {
        b.header("content-type", "application/json; charset=utf-8")
            .body(Body::from(serde_json::to_vec(&a.body).unwrap()))
            .unwrap()
    }
}

/// The asset, every base URL on the replay server.
pub fn asset(base: &str, token_endpoint: TokenEndpoint) -> AssetConfig {
    AssetConfig {
        id: ASSET.to_string(),
        tenant_id: "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c".to_string(),
        client_id: "97e0a5b7-d745-40b6-94fe-5f77d35c6e05".to_string(),
        client_secret: Some(SecretString::from("replay-secret-5c1e".to_string())),
        client_secret_file: None,
        certificate: None,
        managed_identity: None,
        auth: AuthKind::ClientCredentials,
        environment: Environment::Public,
        token_endpoint,
        login_url: base.to_string(),
        api_url: base.to_string(),
        graph_url: base.to_string(),
        resource: Environment::Public.resource().to_string(),
        disabled_actions: BTreeSet::new(),
        allow_offboard: true,
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

/// The real host, over HTTP, with one asset on the replay server.
pub struct Host {
    addr: SocketAddr,
    /// The application.
    pub app: Arc<App>,
    client: reqwest::Client,
    _state_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Host {
    /// Starts a host whose asset talks to `replay` (v2 token endpoint).
    pub async fn start(replay: &Replay) -> Host {
        Host::start_with(asset(&replay.base, TokenEndpoint::V2)).await
    }

    /// Starts a host with `asset`.
    pub async fn start_with(asset: AssetConfig) -> Host {
        let state_dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml_str("").unwrap();
        config.server.state_dir = state_dir.path().to_path_buf();
        config.assets.insert(asset.id.clone(), asset);
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
            app,
            client: reqwest::Client::new(),
            _state_dir: state_dir,
            shutdown: Some(tx),
        }
    }

    /// `POST /assets/contoso/actions/{action}`; the HTTP status and the envelope.
    pub async fn invoke(&self, action: &str, params: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!(
                "http://{}/assets/{ASSET}/actions/{action}",
                self.addr
            ))
            .bearer_auth(API_KEY)
            .json(&json!({ "parameters": params }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["action"], action, "{body}");
        assert_eq!(body["asset_id"], ASSET, "{body}");
        assert!(
            body["summary"].is_object() && body["data"].is_array(),
            "{body}"
        );
        (status, body)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if std::thread::panicking() {
            return;
        }
        let drift = self.app.summary_drift.lines();
        assert!(
            drift.is_empty(),
            "summary keys missing from the action definitions' output:\n  {}",
            drift.join("\n  ")
        );
    }
}
