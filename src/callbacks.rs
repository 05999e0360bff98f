//! Completion callbacks: an action that can outlive its `timeout` (the device actions, the
//! investigation package, live response) takes `callback_url` and `callback_secret_ref`. When
//! the action started something to follow (its answer carries an `event_id`), the callback is
//! recorded in the asset's state file before the answer is sent; a task then follows the event
//! with the asset's shared poller (no upstream call of its own), and once the event is final it
//! builds the final envelope — the answer `get_status`, or the action resumed by its
//! `event_id`, would give (with the vault id of a downloaded file) — and POSTs it to the URL,
//! signed like the ingestion webhooks (`X-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`), retrying with backoff for up to a day. A host that restarts picks up every
//! callback not delivered yet. `get_status` says whether an event's callback is pending,
//! failing or delivered.
//!
//! `callback_url` must be https, or http to a loopback address or to a host listed in
//! `[server] callback_hosts`; `callback_secret_ref` names an entry of
//! `[server.callback_secrets]` (the only one when absent). Anything else is refused with 400
//! before the action runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use regex::Regex;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::actions::waiting::{self, WaitSpec, Waited};
use crate::actions::{ActionContext, Invocation};
use crate::app::App;
use crate::config::ServerConfig;
use crate::defender::DefenderError;
use crate::envelope::{ActionError, EnvelopeResponse};
use crate::ingest::webhook::{backoff, jitter, signature};
use crate::state::{CallbackRecord, now_unix};
use futures::future::BoxFuture;

/// The parameter naming where the final envelope goes.
pub const URL_PARAM: &str = "callback_url";
/// The parameter naming the secret that signs it.
pub const SECRET_PARAM: &str = "callback_secret_ref";
/// How long the host tries to deliver a callback (from when it was asked for).
const GIVE_UP_AFTER_SECS: i64 = 24 * 3600;
/// Longest wait between failed POSTs.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Delivered records are kept this long (for `get_status`), then pruned.
const KEEP_DELIVERED_SECS: i64 = 7 * 24 * 3600;
/// How long one wait on the shared poller holds before it is renewed.
const WAIT_CHUNK: Duration = Duration::from_secs(3600);

/// The device actions, whose final envelope is `get_status`'s.
const DEVICE_ACTIONS: &[&str] = &[
    "quarantine_device",
    "unquarantine_device",
    "quarantine_file",
    "scan_device",
    "restrict_app_execution",
    "remove_app_restriction",
];
/// The actions resumed by their own `event_id` for the final envelope.
const RESUMED_ACTIONS: &[&str] = &[
    "collect_investigation_package",
    "get_file",
    "put_file",
    "run_script",
];

/// Whether `action` takes a callback.
pub fn accepts(action: &str) -> bool {
    DEVICE_ACTIONS.contains(&action) || RESUMED_ACTIONS.contains(&action)
}

/// The action (and its parameters) whose answer is the final envelope of `action`'s event.
fn resume_of(action: &str, event_id: &str) -> (String, Map<String, Value>) {
    let mut params = Map::new();
    params.insert("event_id".into(), json!(event_id));
    if RESUMED_ACTIONS.contains(&action) {
        (action.to_string(), params)
    } else {
        ("get_status".to_string(), params)
    }
}

/// The shapes `callback_url` may take, unanchored (checked before the URL is parsed): https to a host
/// name, or http to a host name or loopback address; a port; a path and query of URL-safe
/// characters; no user name or password. Host labels have no double hyphen (no punycode) and
/// the last one starts with a letter (no numeric host), so every URL that matches parses.
pub fn url_pattern() -> &'static str {
    concat!(
        "(?:https://(?:[A-Za-z0-9](?:-?[A-Za-z0-9])*\\.)*[A-Za-z](?:-?[A-Za-z0-9])*",
        "|http://(?:(?:[A-Za-z0-9](?:-?[A-Za-z0-9])*\\.)*[A-Za-z](?:-?[A-Za-z0-9])*",
        "|127\\.0\\.0\\.1|\\[::1\\]))",
        "(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
        "(?:/[A-Za-z0-9._~/-]*)?(?:\\?[A-Za-z0-9._~=&-]*)?"
    )
}

fn url_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&format!("^{}$", url_pattern())).ok())
        .as_ref()
}

/// What a caller asked for.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where the final envelope goes.
    pub url: url::Url,
    /// The secret that signs it.
    pub secret_ref: String,
}

/// Checks `callback_url` against the server's settings.
pub fn check_url(server: &ServerConfig, raw: &str) -> Result<url::Url, String> {
    let shaped = url_regex().is_some_and(|re| re.is_match(raw));
    let url = url::Url::parse(raw)
        .ok()
        .filter(|_| shaped)
        .ok_or_else(|| {
            format!(
                "parameter '{URL_PARAM}': '{}' is not an http or https URL without user name \
                 or password (host name, optional port, path and query of URL-safe characters)",
                crate::actions::truncate(raw, 80)
            )
        })?;
    if url.scheme() == "https" {
        return Ok(url);
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
    if loopback || server.callback_hosts.contains(&host) {
        Ok(url)
    } else {
        Err(format!(
            "parameter '{URL_PARAM}': plain http is allowed only to loopback addresses and to \
             the hosts in [server] callback_hosts ({}); use https",
            if server.callback_hosts.is_empty() {
                "none configured".to_string()
            } else {
                server.callback_hosts.join(", ")
            }
        ))
    }
}

/// Takes the callback parameters out of an action's validated parameters (the handler never
/// sees them); `None` when no `callback_url` is given. A bad URL or secret name is refused
/// before anything runs.
pub fn take(
    server: &ServerConfig,
    action: &str,
    params: &mut Map<String, Value>,
) -> Result<Option<Spec>, ActionError> {
    let url = params.remove(URL_PARAM);
    let secret = params.remove(SECRET_PARAM);
    let text = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (url, secret) = (text(&url), text(&secret));
    let Some(url) = url else {
        if secret.is_some() {
            return Err(ActionError::InvalidParameter(format!(
                "parameter '{SECRET_PARAM}' is given without '{URL_PARAM}'"
            )));
        }
        return Ok(None);
    };
    if !accepts(action) {
        return Err(ActionError::InvalidParameter(format!(
            "parameter '{URL_PARAM}': {action} answers at once; callbacks are for actions that \
             can outlive their timeout"
        )));
    }
    let url = check_url(server, &url).map_err(ActionError::InvalidParameter)?;
    let names: Vec<&String> = server.callback_secrets.keys().collect();
    let secret_ref = match (secret, names.as_slice()) {
        (Some(s), _) if server.callback_secrets.contains_key(&s) => s,
        (Some(s), _) => {
            return Err(ActionError::InvalidParameter(format!(
                "parameter '{SECRET_PARAM}': '{}' is not a configured callback secret (configured: {})",
                crate::actions::truncate(&s, 64),
                if names.is_empty() {
                    "none; add [server.callback_secrets]".to_string()
                } else {
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        (None, [only]) => (*only).clone(),
        (None, []) => {
            return Err(ActionError::InvalidParameter(format!(
                "parameter '{URL_PARAM}': callbacks are signed, and no secret is configured; add \
                 [server.callback_secrets]"
            )));
        }
        (None, _) => {
            return Err(ActionError::InvalidParameter(format!(
                "parameter '{SECRET_PARAM}' is required: several callback secrets are configured ({})",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    Ok(Some(Spec { url, secret_ref }))
}

/// Where callbacks stand, by (asset, event id), for `get_status` (mirrors the state files).
#[derive(Debug, Default)]
pub struct Registry {
    status: Mutex<HashMap<(String, String), String>>,
}

impl Registry {
    /// The status of the callback of `event_id` on `asset`: `pending`, `failing`,
    /// `delivered` or `failed`.
    pub fn status(&self, asset: &str, event_id: &str) -> Option<String> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(asset.to_string(), event_id.to_ascii_lowercase()))
            .cloned()
    }

    fn set(&self, asset: &str, event_id: &str, status: &str) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (asset.to_string(), event_id.to_ascii_lowercase()),
                status.to_string(),
            );
    }
}

/// Records the callback of the event an action answered with (durable when this returns) and
/// starts its follower. Answers the callback's status for the summary: `pending`, or why no
/// callback will come.
pub async fn register(
    app: &Arc<App>,
    asset: &str,
    action: &str,
    spec: Spec,
    event_id: Option<&str>,
) -> String {
    let Some(event_id) = event_id.filter(|e| !e.is_empty()) else {
        return "none: the action started nothing to follow".into();
    };
    let (resume_action, resume_params) = resume_of(action, event_id);
    let now = now_unix();
    let record = CallbackRecord {
        action: action.to_string(),
        url: spec.url.to_string(),
        secret_ref: spec.secret_ref,
        resume_action,
        resume_params,
        created_at: now,
        status: "pending".into(),
        attempts: 0,
        last_error: None,
        delivered_at: None,
    };
    let key = event_id.to_string();
    let saved = app
        .state
        .update(asset, move |s| {
            s.callbacks
                .retain(|_, r| r.status != "delivered" || now - r.created_at < KEEP_DELIVERED_SECS);
            // A callback already owed for this event (an earlier call) stays as it is.
            s.callbacks.entry(key).or_insert(record);
            Ok::<_, String>(())
        })
        .await;
    if let Err(e) = saved {
        tracing::error!(asset, event_id, "the callback could not be recorded: {e}");
        return "none: the callback could not be recorded (see the host's log)".into();
    }
    app.callbacks.set(asset, event_id, "pending");
    tokio::spawn(follow(app.clone(), asset.to_string(), event_id.to_string()));
    "pending".into()
}

/// Starts a follower for every callback not delivered yet (after a restart).
pub fn resume_all(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        for asset in app.assets.keys() {
            let state = match app.state.load(asset).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(asset = %asset, "callbacks not resumed: {e}");
                    continue;
                }
            };
            for (event_id, record) in state.callbacks {
                app.callbacks.set(asset, &event_id, &record.status);
                if matches!(record.status.as_str(), "pending" | "failing") {
                    tokio::spawn(follow(app.clone(), asset.clone(), event_id));
                }
            }
        }
    })
}

/// Applies `f` to the stored record of `event_id` and mirrors its status.
async fn update(
    app: &App,
    asset: &str,
    event_id: &str,
    f: impl FnOnce(&mut CallbackRecord) + Send + 'static,
) {
    let key = event_id.to_string();
    let saved = app
        .state
        .update(asset, move |s| {
            Ok::<_, String>(s.callbacks.get_mut(&key).map(|r| {
                f(r);
                r.status.clone()
            }))
        })
        .await;
    match saved {
        Ok(Some(status)) => app.callbacks.set(asset, event_id, &status),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            asset,
            event_id,
            "the callback record could not be updated: {e}"
        ),
    }
}

/// Follows the event to its final status, then delivers the callback.
async fn follow(app: Arc<App>, asset_id: String, event_id: String) {
    let Some(asset) = app.asset(&asset_id) else {
        return;
    };
    let record = match app.state.load(&asset_id).await {
        Ok(s) => match s.callbacks.get(&event_id) {
            Some(r) => r.clone(),
            None => return,
        },
        Err(e) => {
            tracing::warn!(asset = %asset_id, event_id, "callback not followed: {e}");
            return;
        }
    };
    let Some(ctx) = ActionContext::background(app.clone(), asset, "get_status") else {
        return;
    };
    let mut failures = 0u32;
    loop {
        let now = tokio::time::Instant::now();
        let spec = WaitSpec {
            event_id: event_id.clone(),
            known: None,
            hold_until: now + WAIT_CHUNK,
            answer_by: now + WAIT_CHUNK,
            fresh_since: None,
            eager: false,
        };
        match waiting::wait(&ctx, spec).await {
            Ok(Waited::Final(_)) => break,
            Ok(Waited::Running { .. }) => failures = 0,
            Err(
                e @ (DefenderError::NotFound { .. }
                | DefenderError::Forbidden { .. }
                | DefenderError::Unauthorized(_)),
            ) => {
                tracing::warn!(asset = %asset_id, event_id, "the event cannot be followed: {e}");
                break;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(asset = %asset_id, event_id, "following the event failed: {e}");
                tokio::time::sleep(jitter(backoff(failures, MAX_RETRY))).await;
            }
        }
        if now_unix() - record.created_at > GIVE_UP_AFTER_SECS {
            update(&app, &asset_id, &event_id, |r| {
                r.status = "failed".into();
                r.last_error = Some("the event was not final within a day".into());
            })
            .await;
            return;
        }
    }
    // The final envelope, as get_status (or the action resumed) answers it.
    let answer = final_envelope(
        app.clone(),
        asset_id.clone(),
        record.resume_action.clone(),
        record.resume_params.clone(),
    )
    .await;
    let body = match serde_json::to_vec(&answer.envelope) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(asset = %asset_id, event_id, "the final envelope cannot be encoded: {e}");
            return;
        }
    };
    deliver(&app, &asset_id, &event_id, &record, &body).await;
}

/// Runs `action` with `params` (the resumption that gives the final envelope). Boxed: an action
/// run may register a callback, whose follower runs an action in turn.
fn final_envelope(
    app: Arc<App>,
    asset: String,
    action: String,
    params: Map<String, Value>,
) -> BoxFuture<'static, EnvelopeResponse> {
    Box::pin(async move {
        crate::actions::invoke(
            app,
            Invocation {
                asset_id: &asset,
                action_id: &action,
                parameters: params,
                idempotency_key: None,
                progress: None,
            },
        )
        .await
    })
}

/// POSTs `body` until the receiver answers 2xx or a day has passed since the callback was
/// asked for.
async fn deliver(app: &App, asset: &str, event_id: &str, record: &CallbackRecord, body: &[u8]) {
    let Some(secret) = app.config.server.callback_secrets.get(&record.secret_ref) else {
        update(app, asset, event_id, |r| {
            r.status = "failed".into();
            r.last_error = Some("its callback secret is no longer configured".into());
        })
        .await;
        return;
    };
    let http = &app.deliveries;
    let mut failures = 0u32;
    loop {
        let t = OffsetDateTime::now_utc().unix_timestamp();
        let signed = signature(secret.expose_secret().as_bytes(), t, body);
        let sent = http
            .post(&record.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Signature", signed)
            .header("X-Event-Id", event_id)
            .body(body.to_vec())
            .send()
            .await;
        let problem = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the receiver answered {}", r.status())),
            Err(e) if e.is_timeout() => Some("the receiver did not answer in time".into()),
            Err(e) if e.is_connect() => Some("the receiver could not be reached".into()),
            Err(_) => Some("the request to the receiver failed".into()),
        };
        metrics::counter!(
            "defender_callback_posts_total",
            "outcome" => if problem.is_none() { "ok" } else { "failed" }
        )
        .increment(1);
        match problem {
            None => {
                update(app, asset, event_id, move |r| {
                    r.status = "delivered".into();
                    r.attempts += 1;
                    r.delivered_at = Some(t);
                    r.last_error = None;
                })
                .await;
                tracing::info!(asset, event_id, "callback delivered");
                return;
            }
            Some(why) => {
                failures = failures.saturating_add(1);
                let give_up = now_unix() - record.created_at > GIVE_UP_AFTER_SECS;
                let shown = why.clone();
                update(app, asset, event_id, move |r| {
                    r.status = if give_up { "failed" } else { "failing" }.into();
                    r.attempts += 1;
                    r.last_error = Some(why);
                })
                .await;
                let origin = url::Url::parse(&record.url)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default();
                tracing::warn!(asset, event_id, receiver = %origin, failures, "callback delivery failed: {shown}");
                if give_up {
                    return;
                }
                tokio::time::sleep(jitter(backoff(failures, MAX_RETRY))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(hosts: &[&str], secrets: &[&str]) -> ServerConfig {
        ServerConfig {
            callback_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            callback_secrets: secrets
                .iter()
                .map(|s| (s.to_string(), "0123456789abcdef0123".to_string().into()))
                .collect(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn callback_urls_are_https_or_http_to_loopback_and_listed_hosts() {
        let s = server(&["n8n.internal"], &[]);
        for ok in [
            "https://hooks.example.com/defender?token=abc",
            "https://hooks.example.com:8443/a/b",
            "http://127.0.0.1:5678/webhook/x",
            "http://127.0.0.1:65535/hook",
            "http://localhost/x",
            "http://[::1]:9000/x",
            "http://n8n.internal:5678/webhook/defender",
        ] {
            assert!(check_url(&s, ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/x",
            "ftp://hooks.example.com/x",
            "https://user:pw@hooks.example.com/x",
            "https://10.0.0.1/x",
            "https://xn--a.example/x",
            "https://hooks.example.com/x y",
            "https://hooks.example.com/#frag",
            "https://hooks.example.com:65536/x",
            "not a url",
            "",
        ] {
            assert!(check_url(&s, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_secret_is_named_or_the_only_one() {
        let mut p = Map::new();
        p.insert(URL_PARAM.into(), json!("https://h.example/x"));
        let one = server(&[], &["n8n"]);
        let spec = take(&one, "scan_device", &mut p.clone()).unwrap().unwrap();
        assert_eq!(spec.secret_ref, "n8n");
        let none = server(&[], &[]);
        let e = take(&none, "scan_device", &mut p.clone()).unwrap_err();
        assert!(e.to_string().contains("callback_secrets"), "{e}");
        let two = server(&[], &["a", "b"]);
        let e = take(&two, "scan_device", &mut p.clone()).unwrap_err();
        assert!(e.to_string().contains(SECRET_PARAM), "{e}");
        let mut named = p.clone();
        named.insert(SECRET_PARAM.into(), json!("b"));
        let spec = take(&two, "scan_device", &mut named).unwrap().unwrap();
        assert_eq!(spec.secret_ref, "b");
        assert!(
            !named.contains_key(URL_PARAM),
            "taken out of the parameters"
        );
        let mut unknown = p.clone();
        unknown.insert(SECRET_PARAM.into(), json!("c"));
        assert!(take(&two, "scan_device", &mut unknown).is_err());
        assert!(take(&one, "list_devices", &mut p.clone()).is_err());
        let mut nothing = Map::new();
        assert!(take(&none, "scan_device", &mut nothing).unwrap().is_none());
    }

    #[test]
    fn the_final_envelope_comes_from_get_status_or_the_resumed_action() {
        assert_eq!(resume_of("scan_device", "e1").0, "get_status");
        assert_eq!(resume_of("get_file", "e1").0, "get_file");
        assert_eq!(resume_of("get_file", "e1").1["event_id"], "e1");
    }
}
