//! Shared simulator state: the world behind one mutex, the clock, counters and the fault queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::actions::ActionStore;
use crate::scenario::{Scenario, SignedIn};

/// The simulator: everything a handler needs.
pub struct Sim {
    /// The mutable world. Handlers lock it briefly and never across an await.
    pub world: Mutex<World>,
    /// Simulated time (wall clock plus an adjustable offset).
    pub clock: Clock,
    /// Request and token counters.
    pub counters: Mutex<Counters>,
    /// Pending injected faults.
    pub faults: Mutex<Vec<Fault>>,
    /// Key signing access tokens and download links.
    pub signing_key: [u8; 32],
    /// The scenario as last loaded (start or `load_scenario`), for [`Sim::reset`].
    pub loaded: Mutex<Scenario>,
    /// Tokens whose signature was verified, with their claims (lifetime checks still run on
    /// every use). Keyed by the whole token, so a changed token is verified afresh.
    pub verified: Mutex<HashMap<String, crate::jwt::Claims>>,
}

/// The mutable part of the simulator.
pub struct World {
    /// The active scenario (machines and library change as the API is used).
    pub scenario: Scenario,
    /// Issued authorization codes, by code.
    pub codes: HashMap<String, AuthCode>,
    /// Live refresh tokens, by token.
    pub refresh_tokens: HashMap<String, RefreshGrant>,
    /// Issued device codes, by device code.
    pub device_codes: HashMap<String, DeviceGrant>,
    /// Access tokens with a sequence number below this (per `tenant/client`, or `*`) are expired.
    pub tokens_expired_below: HashMap<String, u64>,
    /// Sequence number of the next access token.
    pub next_token_seq: u64,
    /// Machine actions.
    pub actions: ActionStore,
    /// Alerts: the scenario's and the generated ones, newest first (changed by PATCH,
    /// batchUpdate and CreateAlertByReference).
    pub alerts: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Rate limiter windows: key `tenant/client/family` → call times (ms of sim time).
    pub rate_windows: HashMap<String, std::collections::VecDeque<i64>>,
    /// `jti` of client assertions already redeemed → their `exp` (forgotten once expired).
    pub used_assertions: HashMap<String, i64>,
    /// Microsoft Graph alerts and incidents, per tenant (generated on first use).
    pub graph: crate::graph_data::GraphStore,
    /// Advanced hunting tables other than the alert ones (generated on first use).
    pub hunting: Option<crate::kql::Tables>,
    /// Custom indicators: the scenario's, then those created through the API.
    pub indicators: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The id the next created indicator gets.
    pub next_indicator_id: u64,
    /// Automated investigations started by `startInvestigation`: (tenant id, investigation).
    pub investigations: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
    /// Serial number of the next alert created through the control API.
    pub next_created_alert: u64,
}

impl World {
    /// A fresh world over a scenario.
    pub fn new(scenario: Scenario) -> World {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let alerts = crate::alerts::load(&scenario, now_ms);
        let scenario_indicators = crate::api::indicators::load(&scenario);
        World {
            alerts,
            scenario,
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            device_codes: HashMap::new(),
            tokens_expired_below: HashMap::new(),
            next_token_seq: 1,
            actions: ActionStore::default(),
            rate_windows: HashMap::new(),
            used_assertions: HashMap::new(),
            graph: crate::graph_data::GraphStore::default(),
            hunting: None,
            indicators: scenario_indicators.0,
            next_indicator_id: scenario_indicators.1,
            investigations: Vec::new(),
            next_created_alert: 1,
        }
    }
}

/// An issued authorization code.
#[derive(Debug, Clone)]
pub struct AuthCode {
    /// Tenant id the code was issued in.
    pub tenant_id: String,
    /// Client it was issued to.
    pub client_id: String,
    /// The exact redirect_uri of the authorize request.
    pub redirect_uri: String,
    /// PKCE challenge and method, when the authorize request had one.
    pub code_challenge: Option<(String, String)>,
    /// v1 `resource` or v2 `scope` of the authorize request.
    pub resource_or_scope: String,
    /// Issued at (unix seconds, sim time).
    pub issued_at: i64,
    /// Already redeemed once.
    pub redeemed: bool,
    /// Who signed in and consented.
    pub user: SignedIn,
}

/// Where a device code stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Nobody has entered the user code yet.
    Pending,
    /// The user declined on `/devicelogin`.
    Declined,
    /// The user signed in and accepted.
    Approved(SignedIn),
    /// Tokens were issued for it (a device code is redeemed once).
    Redeemed,
}

/// An issued device code.
#[derive(Debug, Clone)]
pub struct DeviceGrant {
    /// Tenant id the code was issued in.
    pub tenant_id: String,
    /// Client it was issued to.
    pub client_id: String,
    /// v1 `resource` or v2 `scope` of the device code request.
    pub resource_or_scope: String,
    /// The code the user types on `/devicelogin` (9 upper-case letters and digits).
    pub user_code: String,
    /// Expires at (unix seconds, sim time).
    pub expires_at: i64,
    /// Seconds the client must wait between polls (grows by 5 with each `slow_down`).
    pub interval_secs: u64,
    /// Time of the last poll (ms of sim time), for `slow_down`.
    pub last_poll_ms: Option<i64>,
    /// Where it stands.
    pub status: DeviceStatus,
}

/// A refresh token grant.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Scope/resource of the original grant.
    pub resource_or_scope: String,
    /// Expires at (unix seconds, sim time).
    pub expires_at: i64,
    /// Revoked (AADSTS70008 on use).
    pub revoked: bool,
    /// The user the grant was made by.
    pub user: SignedIn,
}

impl Sim {
    /// A simulator over a scenario, with a fresh random signing key.
    pub fn new(scenario: Scenario) -> Sim {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Sim {
            loaded: Mutex::new(scenario.clone()),
            verified: Mutex::new(HashMap::new()),
            world: Mutex::new(World::new(scenario)),
            clock: Clock::default(),
            counters: Mutex::new(Counters::default()),
            faults: Mutex::new(Vec::new()),
            signing_key: key,
        }
    }

    /// Locks the world (a poisoned lock is recovered: the world stays usable).
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the scenario and resets everything that was derived from the old one.
    pub fn load_scenario(&self, scenario: Scenario) {
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = scenario.clone();
        {
            let mut w = self.world();
            // Token sequence numbers keep growing, so expiring "every token issued so far"
            // also covers tokens issued before the reload.
            let next_token_seq = w.next_token_seq;
            *w = World::new(scenario);
            w.next_token_seq = next_token_seq;
        }
        self.reset_counters();
        self.clear_faults();
    }

    /// The advanced hunting tables as queries see them now: the device, mail and identity
    /// tables (generated once, at the simulated time of first use) and the alert tables of
    /// the live alerts. Cheap to call: tables are shared, not copied.
    pub fn hunting_tables(&self) -> crate::kql::Tables {
        let now_ms = self.clock.now_ms();
        let mut w = self.world();
        let base = match &w.hunting {
            Some(t) => t.clone(),
            None => {
                let t = crate::hunting_data::device_tables(&w.scenario, now_ms);
                w.hunting = Some(t.clone());
                t
            }
        };
        let mut tables = base;
        crate::hunting_data::add_alert_tables(&mut tables, &w.alerts);
        tables
    }

    /// A copy of the active scenario.
    pub fn scenario(&self) -> Scenario {
        self.world().scenario.clone()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Zeroes the counters.
    pub fn reset_counters(&self) {
        *self.counters.lock().unwrap_or_else(|p| p.into_inner()) = Counters::default();
    }

    /// Adds a fault for the next matching requests.
    pub fn inject_fault(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Removes all pending faults.
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Records a request (called by the counting middleware).
    pub fn count_request(&self, method: &str, route: &str, path: &str, status: u16) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.by_route
            .entry(format!("{method} {route}"))
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
        *c.by_path.entry(format!("{method} {path}")).or_default() += 1;
        c.total += 1;
        if status == 429 {
            c.throttled += 1;
        }
    }

    /// Records an issued token.
    pub fn count_token(&self, grant: &str) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.tokens_issued.entry(grant.to_string()).or_default() += 1;
    }

    /// Makes every access token issued so far for `tenant_id/client_id` (or all, when None) expired.
    pub fn expire_access_tokens(&self, tenant_client: Option<&str>) {
        let mut w = self.world();
        let below = w.next_token_seq;
        let key = tenant_client.map_or_else(|| "*".to_string(), str::to_ascii_lowercase);
        w.tokens_expired_below.insert(key, below);
    }

    /// Revokes every refresh token (of one client when given).
    pub fn revoke_refresh_tokens(&self, client_id: Option<&str>) {
        let mut w = self.world();
        for g in w.refresh_tokens.values_mut() {
            if client_id.is_none_or(|c| g.client_id.eq_ignore_ascii_case(c)) {
                g.revoked = true;
            }
        }
    }

    /// Starts over from the scenario as last loaded: actions, codes, refresh tokens, rate
    /// windows, counters and faults are cleared; the clock and signing key are kept.
    pub fn reset(&self) {
        let scenario = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.load_scenario(scenario);
    }

    /// Live response sessions not yet final, all tenants.
    pub fn live_sessions(&self) -> u64 {
        let now = self.clock.now_ms();
        self.world().actions.live_sessions_total(now) as u64
    }

    /// Moves a machine action one stage along (Pending → InProgress → final) and answers its
    /// JSON (without `@odata.context`).
    pub fn advance_action(
        &self,
        id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ActionControlError> {
        let now = self.clock.now_ms();
        let mut w = self.world();
        let action = w
            .actions
            .get_mut(id)
            .ok_or_else(|| ActionControlError::NotFound(id.to_string()))?;
        action.advance(now);
        Ok(action.to_json(now))
    }

    /// Forces a machine action's final status (`Succeeded`, `Failed`, `TimeOut` or
    /// `Cancelled`) and answers its JSON (without `@odata.context`).
    pub fn complete_action(
        &self,
        id: &str,
        status: &str,
        error: Option<String>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ActionControlError> {
        if !crate::actions::is_final(status) {
            return Err(ActionControlError::NotFinal(status.to_string()));
        }
        let now = self.clock.now_ms();
        let mut w = self.world();
        let action = w
            .actions
            .get_mut(id)
            .ok_or_else(|| ActionControlError::NotFound(id.to_string()))?;
        action.complete(status, error, now);
        Ok(action.to_json(now))
    }
}

/// Why a control call on a machine action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionControlError {
    /// No action has this id.
    #[error("machine action {0} was not found")]
    NotFound(String),
    /// The requested status is not a final one.
    #[error("status `{0}` is not one of Succeeded, Failed, TimeOut, Cancelled")]
    NotFinal(String),
}

/// Simulated time: the wall clock plus an offset that tests can advance.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Milliseconds since the unix epoch, simulated.
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        real + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Seconds since the unix epoch, simulated.
    pub fn unix(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves simulated time forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }

    /// RFC 3339 UTC timestamp with 7 fractional digits, as Defender writes them.
    pub fn format_ms(ms: i64) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() / 100
        )
    }
}

/// What the simulator has seen. Serialised by `GET /_sim/counters`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Total requests.
    pub total: u64,
    /// Requests by `METHOD /route/{template}` then by status code.
    pub by_route: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests by `METHOD /actual/path` (lower-cased for `/api` paths).
    pub by_path: BTreeMap<String, u64>,
    /// Tokens issued by grant type.
    pub tokens_issued: BTreeMap<String, u64>,
    /// 429 answers.
    pub throttled: u64,
    /// Live response sessions currently open (filled in when read).
    #[serde(default)]
    pub live_sessions: u64,
}

impl Counters {
    /// Requests to an exact path (`/api` paths compare case-insensitively).
    pub fn path(&self, method: &str, path: &str) -> u64 {
        let key = format!("{method} {}", crate::faults::normalize_path(path));
        self.by_path.get(&key).copied().unwrap_or(0)
    }

    /// Requests to a route template (e.g. `/api/machineactions/{id}`), any status.
    pub fn route(&self, method: &str, route: &str) -> u64 {
        self.by_route
            .get(&format!("{method} {route}"))
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// Requests to a route template answered with `status`.
    pub fn route_status(&self, method: &str, route: &str, status: u16) -> u64 {
        self.by_route
            .get(&format!("{method} {route}"))
            .and_then(|m| m.get(&status.to_string()).copied())
            .unwrap_or(0)
    }

    /// Tokens issued for a grant type (`client_credentials`, `authorization_code`, `refresh_token`).
    pub fn tokens(&self, grant: &str) -> u64 {
        self.tokens_issued.get(grant).copied().unwrap_or(0)
    }

    /// Tokens issued, all grants.
    pub fn tokens_total(&self) -> u64 {
        self.tokens_issued.values().sum()
    }
}

/// A fault to inject on the next matching requests.
// No `deny_unknown_fields` here: serde refuses every field of a flattened enum with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Path pattern: `*` matches any run of characters; case-insensitive.
    pub path: String,
    /// How many requests it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

/// The kinds of injected fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer this status with this body (JSON text) and headers, without running the handler.
    Status {
        /// Status code.
        status: u16,
        /// Body text (an MDE error body when absent).
        #[serde(default)]
        body: Option<String>,
        /// Extra headers (e.g. Retry-After).
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// Delay the request, then run it normally.
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Close the connection without an answer.
    Drop,
    /// Run the handler, then answer a truncated, unparsable JSON body.
    MalformedJson,
}
