//! API keys: `Authorization: Bearer <key>` checked against every configured key in constant
//! time, then the key's scopes and assets checked against the route (design §6, scoped keys).
//!
//! The key of `server.api_key_env` is the key `default` with every scope on every asset;
//! `[[server.api_keys]]` add named keys with some scopes on some assets. A request without a
//! known key gets 401; a known key out of its scope or assets gets 403 naming the missing scope
//! or asset (never the key). Failed authentications are logged (key name or `unknown`, source
//! address; never the presented secret) and counted in `defender_auth_failures_total{reason}`;
//! once an address has [`MAX_FAILURES`] failures within [`FAILURE_WINDOW`], each further
//! failed attempt from it is answered only after [`SLOW_DOWN`] until the window ends, so
//! guessing slows to a crawl while a valid key from the same address (callers behind one NAT
//! or proxy) is never locked out.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Map;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::actions::definition::Definition;
use crate::app::App;
use crate::config::{ApiKeyConfig, AssetScope, Scope};
use crate::envelope::{ActionError, EnvelopeResponse};

/// Failed authentications from one address that start the slow-down.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a failed attempt from an address over [`MAX_FAILURES`] waits for its answer.
pub const SLOW_DOWN: Duration = Duration::from_millis(250);
/// Most addresses remembered in the failure table.
const MAX_TRACKED_ADDRESSES: usize = 4096;
/// The name of the key of `server.api_key_env`.
pub const DEFAULT_KEY_NAME: &str = "default";
/// Actions of the `live_response` scope (whatever their type).
pub const LIVE_RESPONSE_ACTIONS: [&str; 6] = [
    "put_file",
    "get_file",
    "run_script",
    "get_live_response_result",
    "upload_library_file",
    "delete_library_file",
];

/// Whether `presented` equals `expected`, in time independent of where they differ (and of
/// their lengths: both are hashed first).
pub fn key_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into() && !expected.is_empty()
}

/// The scope an action needs: live response actions ([`LIVE_RESPONSE_ACTIONS`]) need
/// `live_response`; `contain` and `correct` actions, and `generic` ones that change state, need
/// `respond`; everything else (`investigate`, `test`, `ingest`, hunting, read-only `generic`)
/// needs `read`.
pub fn scope_of_action(def: &Definition) -> Scope {
    if LIVE_RESPONSE_ACTIONS.contains(&def.id.as_str()) {
        return Scope::LiveResponse;
    }
    match def.action_type.as_str() {
        "contain" | "correct" => Scope::Respond,
        "generic" if !def.read_only => Scope::Respond,
        _ => Scope::Read,
    }
}

/// Who made an authenticated request (a request extension set by [`require`]).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name.
    pub key: String,
    /// The assets the key may use.
    pub assets: AssetScope,
    /// The caller's address, when known.
    pub addr: Option<IpAddr>,
}

impl Caller {
    /// The caller's address as text (`-` when unknown).
    pub fn addr_text(&self) -> String {
        self.addr.map_or_else(|| "-".to_string(), |a| a.to_string())
    }
}

/// One usable key.
struct Key {
    name: String,
    secret: SecretString,
    assets: AssetScope,
    scopes: BTreeSet<Scope>,
}

/// The configured keys and the table of failing addresses.
pub struct KeyRing {
    keys: Vec<Key>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.names())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// The `default` key (every scope, every asset; skipped when empty) and the scoped keys.
    pub fn new(default: &SecretString, scoped: &[ApiKeyConfig]) -> KeyRing {
        let mut keys = Vec::new();
        if !default.expose_secret().is_empty() {
            keys.push(Key {
                name: DEFAULT_KEY_NAME.to_string(),
                secret: default.clone(),
                assets: AssetScope::All,
                scopes: Scope::ALL.into_iter().collect(),
            });
        }
        for k in scoped {
            keys.push(Key {
                name: k.name.clone(),
                secret: k.secret.clone(),
                assets: k.assets.clone(),
                scopes: k.scopes.clone(),
            });
        }
        KeyRing {
            keys,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The key names.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The key `presented` is, comparing it with every key (no early exit, so the time does
    /// not tell which key nearly matched).
    fn find(&self, presented: &str) -> Option<&Key> {
        let mut found = None;
        for k in &self.keys {
            if key_matches(presented, k.secret.expose_secret()) && found.is_none() {
                found = Some(k);
            }
        }
        found
    }

    /// The name, assets and scopes of the key `presented` is (constant time, as for requests).
    pub fn lookup(&self, presented: &str) -> Option<(String, AssetScope, BTreeSet<Scope>)> {
        self.find(presented)
            .map(|k| (k.name.clone(), k.assets.clone(), k.scopes.clone()))
    }

    /// Seconds `addr` must wait before trying again, when it failed too often.
    pub fn blocked_for(&self, addr: IpAddr) -> Option<u64> {
        let table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = table.get(&addr)?;
        let elapsed = start.elapsed();
        (*count >= MAX_FAILURES && elapsed < FAILURE_WINDOW)
            .then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    /// Records a failed authentication from `addr`.
    pub fn record_failure(&self, addr: IpAddr) {
        let mut table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !table.contains_key(&addr) && table.len() >= MAX_TRACKED_ADDRESSES {
            table.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if table.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = table.iter().min_by_key(|(_, (s, _))| *s).map(|(a, _)| *a)
            {
                table.remove(&oldest);
            }
        }
        let entry = table.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// What a route needs: a scope (none: any known key) and the asset it touches.
struct Need {
    scope: Option<Scope>,
    asset: Option<String>,
    action: String,
}

/// The scope and asset a request path needs.
fn need_of(path: &str) -> Need {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let need = |scope, asset: Option<&str>, action: &str| Need {
        scope,
        asset: asset.map(str::to_string),
        action: action.to_string(),
    };
    match parts.as_slice() {
        ["assets", asset, "actions", action] => {
            let scope =
                crate::actions::definition::resolve(action).map(|(d, _)| scope_of_action(d));
            need(scope, Some(asset), action)
        }
        ["assets", asset, "consent"] => need(Some(Scope::Admin), Some(asset), "consent"),
        ["assets", asset, "alerts", "feed"] => need(Some(Scope::Read), Some(asset), ""),
        ["vault", ..] | ["actions"] => need(Some(Scope::Read), None, ""),
        ["metrics"] | ["manifest.json"] | ["openapi.json"] | ["audit"] => {
            need(Some(Scope::Admin), None, "")
        }
        _ => need(None, None, ""),
    }
}

fn count_failure(reason: &'static str) {
    metrics::counter!("defender_auth_failures_total", "reason" => reason).increment(1);
}

/// Middleware: authenticates the key (401, slowed down after repeated failures), checks the route's
/// scope and asset (403), and adds the [`Caller`] to the request's extensions.
pub async fn require(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let shown_addr = addr.map_or_else(|| "-".to_string(), |a| a.to_string());
    let path = req.uri().path().to_string();
    let need = need_of(&path);
    let asset_shown = need
        .asset
        .as_deref()
        .map(|a| crate::actions::truncate(a, 64))
        .unwrap_or_default();
    let action_shown = crate::actions::truncate(&need.action, 64);
    let reject = |e: ActionError| {
        EnvelopeResponse::error(&action_shown, &asset_shown, Map::new(), &e).into_response()
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    let Some(presented) = presented else {
        count_failure("missing");
        tracing::info!(key = "unknown", addr = %shown_addr, "authentication failed: no API key");
        return reject(ActionError::Unauthorized(
            "missing API key: send 'Authorization: Bearer <api key>'".into(),
        ));
    };
    let Some(key) = app.keys.find(presented) else {
        count_failure("unknown_key");
        let slowed = addr.is_some_and(|a| {
            app.keys.record_failure(a);
            app.keys.blocked_for(a).is_some()
        });
        if slowed {
            count_failure("throttled");
            tracing::warn!(key = "unknown", addr = %shown_addr, "authentication failed: unknown API key (address slowed down after repeated failures)");
            tokio::time::sleep(SLOW_DOWN).await;
        } else {
            tracing::warn!(key = "unknown", addr = %shown_addr, "authentication failed: unknown API key");
        }
        return reject(ActionError::Unauthorized("API key rejected".into()));
    };
    if let Some(scope) = need.scope
        && !key.scopes.contains(&scope)
    {
        count_failure("scope");
        tracing::warn!(key = %key.name, addr = %shown_addr, scope = scope.as_str(), "authorization failed: missing scope");
        return reject(ActionError::Disabled(format!(
            "this API key lacks the scope '{}' this route needs",
            scope.as_str()
        )));
    }
    if let Some(asset) = &need.asset
        && !key.assets.allows(asset)
    {
        count_failure("asset");
        tracing::warn!(key = %key.name, addr = %shown_addr, asset = %asset_shown, "authorization failed: asset not allowed");
        return reject(ActionError::Disabled(format!(
            "this API key may not use asset '{asset_shown}'"
        )));
    }
    req.extensions_mut().insert(Caller {
        key: key.name.clone(),
        assets: key.assets.clone(),
        addr,
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(key_matches("abc", "abc"));
        assert!(!key_matches("abd", "abc"));
        assert!(!key_matches("", ""));
        assert!(!key_matches("abcd", "abc"));
    }

    #[test]
    fn action_scopes() {
        let scope = |id: &str| scope_of_action(crate::actions::definition::resolve(id).unwrap().0);
        assert_eq!(scope("get_status"), Scope::Read);
        assert_eq!(scope("run_query"), Scope::Read);
        assert_eq!(scope("test_connectivity"), Scope::Read);
        assert_eq!(scope("quarantine_device"), Scope::Respond);
        assert_eq!(scope("unquarantine_device"), Scope::Respond);
        assert_eq!(scope("update_alert"), Scope::Respond);
        assert_eq!(scope("get_file"), Scope::LiveResponse);
        assert_eq!(scope("run_script"), Scope::LiveResponse);
    }

    #[test]
    fn slow_down_after_failures() {
        let ring = KeyRing::new(&SecretString::from("k".to_string()), &[]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            ring.record_failure(a);
        }
        assert!(ring.blocked_for(a).is_none());
        ring.record_failure(a);
        assert!(ring.blocked_for(a).unwrap() <= 60);
        assert!(ring.blocked_for("10.0.0.2".parse().unwrap()).is_none());
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            ring.record_failure(IpAddr::from(i.to_be_bytes()));
        }
        assert!(ring.failures.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }
}
