//! `defender-soar serve` as a child process: a generated configuration with one asset pointed
//! at a simulator (secrets through environment variables, state in a temporary directory), a
//! free loopback port, readiness through `/readyz`, and a client that invokes actions.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::BoxError;
use crate::process::{self, ProcStats, TempDir};
use crate::simctl::AppCreds;

/// The asset id every generated configuration uses.
pub const ASSET: &str = "bench";
/// Environment variable carrying the host's API key.
const API_KEY_ENV: &str = "DEFENDER_BENCH_API_KEY";
/// Environment variable carrying the asset's client secret.
const SECRET_ENV: &str = "DEFENDER_BENCH_CLIENT_SECRET";
/// Environment variable carrying the Redis URL of `[server.state]`.
const REDIS_URL_ENV: &str = "DEFENDER_BENCH_REDIS_URL";
/// Environment variable the host reads its state key from.
const STATE_KEY_ENV: &str = "DEFENDER_SOAR_STATE_KEY";
/// How long the host may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const READY_POLL: Duration = Duration::from_millis(1);

/// How the host is configured.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// `[assets.bench.budget] per_minute`.
    pub per_minute: u32,
    /// `[assets.bench.budget] per_hour`.
    pub per_hour: u32,
    /// `[assets.bench.budget] max_wait_secs` (the host's default when `None`).
    pub max_wait_secs: Option<u64>,
    /// Budget families (`hunting`, `graph`, ...) given the same `per_minute` and `per_hour`
    /// as `{family}_per_minute` and `{family}_per_hour` (the host's defaults when absent).
    pub families: Vec<&'static str>,
    /// `RUST_LOG` of the host process.
    pub log_level: String,
    /// `[assets.bench.ingestion]`, when the asset ingests alerts.
    pub ingestion: Option<IngestionSpec>,
    /// `[server] max_connections` (the host's default when `None`).
    pub max_connections: Option<usize>,
    /// `[server.state]` on Redis, when the host shares its state with other hosts (the files
    /// backend in its temporary state directory when `None`).
    pub shared_state: Option<SharedState>,
}

/// `[server.state] backend = "redis"`: what hosts sharing one budget and one state must agree
/// on.
#[derive(Clone)]
pub struct SharedState {
    /// `redis://127.0.0.1:<port>/0`, passed through an environment variable.
    pub redis_url: String,
    /// `key_prefix`: hosts with the same prefix (and the same asset) share state and budget.
    pub key_prefix: String,
    /// `DEFENDER_SOAR_STATE_KEY`, base64 of 32 bytes, the same on every sharing host.
    pub state_key: String,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("redis_url", &self.redis_url)
            .field("key_prefix", &self.key_prefix)
            .field("state_key", &"<redacted>")
            .finish()
    }
}

impl SharedState {
    /// Redis at `redis_url` under `key_prefix`, with a new random state key.
    pub fn new(redis_url: &str, key_prefix: &str) -> Result<SharedState, BoxError> {
        use base64::Engine as _;
        use std::io::Read as _;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(SharedState {
            redis_url: redis_url.to_string(),
            key_prefix: key_prefix.to_string(),
            state_key: base64::engine::general_purpose::STANDARD.encode(key),
        })
    }
}

/// `[assets.bench.ingestion]` of the generated configuration (`enabled = true`).
#[derive(Debug, Clone)]
pub struct IngestionSpec {
    /// `source`: `graph` or `mde`.
    pub source: &'static str,
    /// `interval_secs`.
    pub interval_secs: u64,
    /// `first_run_lookback`, e.g. `"1h"`.
    pub first_run_lookback: &'static str,
    /// `max_per_poll`.
    pub max_per_poll: u32,
}

impl HostSpec {
    /// A budget large enough never to interfere (100,000 calls per minute and per hour).
    pub fn unlimited(log_level: &str) -> HostSpec {
        HostSpec {
            per_minute: 100_000,
            per_hour: 100_000,
            max_wait_secs: None,
            families: Vec::new(),
            log_level: log_level.to_string(),
            ingestion: None,
            max_connections: None,
            shared_state: None,
        }
    }
}

/// A running host (killed when dropped; its temporary directory is removed then too).
pub struct HostProcess {
    child: Child,
    pid: u32,
    base_url: String,
    api_key: String,
    /// How long from spawn to the first 200 of `/readyz`.
    pub startup: Duration,
    /// Configuration, state and log; removed when the host is dropped.
    _dir: TempDir,
}

/// The configuration file for `spec`, with the asset pointed at `sim_base` (Entra, Defender's
/// API and Microsoft Graph alike).
pub fn config_toml(
    listen_port: u16,
    state_dir: &Path,
    sim_base: &str,
    app: &AppCreds,
    spec: &HostSpec,
) -> String {
    let mut out = format!(
        "[server]\nlisten = \"127.0.0.1:{listen_port}\"\nstate_dir = {}\napi_key_env = \"{API_KEY_ENV}\"\n{}{}\n\
         [assets.{ASSET}]\ntenant_id = {}\nclient_id = {}\nclient_secret_env = \"{SECRET_ENV}\"\n\
         auth = \"client_credentials\"\ntoken_endpoint = \"v2\"\nlogin_url = {}\napi_url = {}\n\
         graph_url = {}\ndownload_hosts = [\"http://127.0.0.1\"]\n\n[assets.{ASSET}.budget]\nper_minute = {}\nper_hour = {}\n",
        toml_str(&state_dir.display().to_string()),
        spec.max_connections
            .map(|n| format!("max_connections = {n}\n"))
            .unwrap_or_default(),
        spec.shared_state
            .as_ref()
            .map(|s| format!(
                "\n[server.state]\nbackend = \"redis\"\nredis_url_env = \"{REDIS_URL_ENV}\"\nkey_prefix = {}\n",
                toml_str(&s.key_prefix)
            ))
            .unwrap_or_default(),
        toml_str(&app.tenant_id),
        toml_str(&app.client_id),
        toml_str(sim_base),
        toml_str(sim_base),
        toml_str(sim_base),
        spec.per_minute,
        spec.per_hour,
    );
    for family in &spec.families {
        out.push_str(&format!(
            "{family}_per_minute = {}\n{family}_per_hour = {}\n",
            spec.per_minute, spec.per_hour
        ));
    }
    if let Some(w) = spec.max_wait_secs {
        out.push_str(&format!("max_wait_secs = {w}\n"));
    }
    if let Some(i) = &spec.ingestion {
        out.push_str(&format!(
            "\n[assets.{ASSET}.ingestion]\nenabled = true\nsource = {}\ninterval_secs = {}\n\
             first_run_lookback = {}\nmax_per_poll = {}\n",
            toml_str(i.source),
            i.interval_secs,
            toml_str(i.first_run_lookback),
            i.max_per_poll,
        ));
    }
    out
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl HostProcess {
    /// Writes a configuration for `spec` into a new temporary directory, starts
    /// `bin serve --config <file>` and waits for `/readyz` to answer 200 (polled every
    /// millisecond; the time it took is [`HostProcess::startup`]).
    pub async fn spawn(
        bin: &Path,
        sim_base: &str,
        app: &AppCreds,
        spec: &HostSpec,
        probe: &reqwest::Client,
    ) -> Result<HostProcess, BoxError> {
        let dir = TempDir::new("host")?;
        let port = process::free_port()?;
        let state_dir = dir.path().join("state");
        let config_path = dir.path().join("defender-soar.toml");
        std::fs::write(
            &config_path,
            config_toml(port, &state_dir, sim_base, app, spec),
        )?;
        let log_path = dir.path().join("host.log");
        let log = std::fs::File::create(&log_path)?;
        let api_key = format!(
            "bench-{}-{}",
            std::process::id(),
            crate::simctl::now_ms().rem_euclid(1_000_000_007)
        );
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(&config_path);
        // No setting from the caller's environment may change the measured configuration.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DEFENDER_SOAR") {
                cmd.env_remove(&k);
            }
        }
        if let Some(shared) = &spec.shared_state {
            cmd.env(REDIS_URL_ENV, &shared.redis_url)
                .env(STATE_KEY_ENV, &shared.state_key);
        }
        cmd.env(API_KEY_ENV, &api_key)
            .env(SECRET_ENV, &app.secret)
            .env("RUST_LOG", &spec.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the host exited at once")?;
        let base_url = format!("http://127.0.0.1:{port}");
        let ready = format!("{base_url}/readyz");
        let deadline = started + READY_TIMEOUT;
        loop {
            if let Ok(r) = probe
                .get(&ready)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status() == StatusCode::OK
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the host exited ({status}) before it was ready: {}",
                    log_tail(&log_path)
                )
                .into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the host did not answer /readyz within {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    log_tail(&log_path)
                )
                .into());
            }
            tokio::time::sleep(READY_POLL).await;
        }
        let startup = started.elapsed();
        Ok(HostProcess {
            child,
            pid,
            base_url,
            api_key,
            startup,
            _dir: dir,
        })
    }

    /// `127.0.0.1:<port>` of the host.
    pub fn addr(&self) -> String {
        self.base_url.trim_start_matches("http://").to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU time so far and memory of the process.
    pub fn stats(&self) -> Result<ProcStats, BoxError> {
        process::stats(self.pid)
    }

    /// A client for this host over `client`'s connection pool.
    pub fn client(&self, client: &reqwest::Client) -> Result<HostClient, BoxError> {
        Ok(HostClient {
            client: client.clone(),
            base: self.base_url.clone(),
            auth: HeaderValue::from_str(&format!("Bearer {}", self.api_key))?,
        })
    }

    /// Stops the process and reaps it (the temporary directory goes with `self`).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last lines of the host's log, for start-up errors.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n");
            if tail.is_empty() {
                "(no output)".into()
            } else {
                tail
            }
        }
        Err(_) => "(no log)".into(),
    }
}

/// Invokes actions on one host.
#[derive(Clone)]
pub struct HostClient {
    client: reqwest::Client,
    base: String,
    auth: HeaderValue,
}

/// One action's answer.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// HTTP status.
    pub status: StatusCode,
    /// `Retry-After`, when present.
    pub retry_after: Option<String>,
    /// The envelope (`Null` when the body was not JSON).
    pub envelope: Value,
}

impl Invoked {
    /// HTTP 200 and envelope status `success`.
    pub fn succeeded(&self) -> bool {
        self.status == StatusCode::OK && self.envelope["status"] == "success"
    }

    /// A summary value as text.
    pub fn summary(&self, key: &str) -> Option<String> {
        match &self.envelope["summary"][key] {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// One line saying what went wrong, for errors.
    pub fn describe(&self) -> String {
        format!(
            "HTTP {}: {}",
            self.status,
            crate::simctl::truncate(
                self.envelope["message"].as_str().unwrap_or("(no message)"),
                300
            )
        )
    }
}

impl HostClient {
    /// `POST /assets/bench/actions/{action}` with `{"parameters": params}`, not sent yet.
    pub fn request(&self, action: &str, params: &Value) -> reqwest::RequestBuilder {
        self.request_body(action, body_of(params))
    }

    /// The same with an already serialised body (load loops build it once).
    pub fn request_body(&self, action: &str, body: String) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/assets/{ASSET}/actions/{action}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
    }

    /// The `Authorization` header value callers send.
    pub fn auth_header(&self) -> &HeaderValue {
        &self.auth
    }

    /// An authenticated `GET {base}{path}`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// Runs an action and reads its envelope; `timeout` bounds the whole call.
    pub async fn invoke(
        &self,
        action: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Invoked, BoxError> {
        let resp = self.request(action, params).timeout(timeout).send().await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await?;
        let envelope = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Invoked {
            status,
            retry_after,
            envelope,
        })
    }

    /// Action ids the host knows (`GET /actions`).
    pub async fn action_ids(&self) -> Result<Vec<String>, BoxError> {
        let v = crate::simctl::ok_json(
            self.get("/actions")
                .timeout(Duration::from_secs(30))
                .send()
                .await?,
        )
        .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// `{"parameters": params}` as JSON text.
pub fn body_of(params: &Value) -> String {
    json!({ "parameters": params }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_toml_with_budget() {
        let app = AppCreds {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: "never-written".into(),
        };
        let spec = HostSpec {
            max_wait_secs: Some(5),
            families: vec!["hunting"],
            ..HostSpec::unlimited("warn")
        };
        let text = config_toml(
            8080,
            Path::new("/tmp/a \"b\""),
            "http://127.0.0.1:1",
            &app,
            &spec,
        );
        assert!(text.contains("state_dir = \"/tmp/a \\\"b\\\"\""));
        assert!(text.contains(
            "[assets.bench.budget]\nper_minute = 100000\nper_hour = 100000\n\
             hunting_per_minute = 100000\nhunting_per_hour = 100000\nmax_wait_secs = 5\n"
        ));
        assert!(text.contains("login_url = \"http://127.0.0.1:1\""));
        assert!(text.contains("graph_url = \"http://127.0.0.1:1\""));
        assert!(!text.contains("never-written"));
        assert!(!text.contains("ingestion"));
        assert!(!text.contains("[server.state]"));
        let spec = HostSpec {
            ingestion: Some(IngestionSpec {
                source: "graph",
                interval_secs: 10,
                first_run_lookback: "1h",
                max_per_poll: 1000,
            }),
            ..HostSpec::unlimited("warn")
        };
        let text = config_toml(8080, Path::new("/s"), "http://127.0.0.1:1", &app, &spec);
        assert!(text.ends_with(
            "[assets.bench.ingestion]\nenabled = true\nsource = \"graph\"\ninterval_secs = 10\n\
             first_run_lookback = \"1h\"\nmax_per_poll = 1000\n"
        ));
        let shared = SharedState::new("redis://127.0.0.1:1/0", "bench-a").unwrap();
        assert!(!format!("{shared:?}").contains(&shared.state_key));
        let spec = HostSpec {
            shared_state: Some(shared.clone()),
            ..HostSpec::unlimited("warn")
        };
        let text = config_toml(8080, Path::new("/s"), "http://127.0.0.1:1", &app, &spec);
        assert!(text.contains(
            "api_key_env = \"DEFENDER_BENCH_API_KEY\"\n\n[server.state]\nbackend = \"redis\"\n\
             redis_url_env = \"DEFENDER_BENCH_REDIS_URL\"\nkey_prefix = \"bench-a\"\n\n[assets.bench]\n"
        ));
        assert!(!text.contains(&shared.state_key));
        assert!(!text.contains("redis://"));
    }
}
