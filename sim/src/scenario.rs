//! The scenario: everything the simulator is seeded with, as a serde model (JSON files).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The built-in scenario, used when no scenario file is given.
const DEFAULT_SCENARIO: &str = include_str!("../scenarios/default.json");

/// Everything the simulator is seeded with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Tenants with their registered apps.
    pub tenants: Vec<Tenant>,
    /// Machines as Defender returns them (free-form JSON objects, `id` required).
    #[serde(default)]
    pub machines: Vec<Map<String, Value>>,
    /// Files present on devices, for live response GetFile, keyed by machine id.
    #[serde(default)]
    pub device_files: BTreeMap<String, Vec<DeviceFile>>,
    /// Machines that communicated with a domain (`/api/domains/{domain}/machines`), by domain.
    #[serde(default)]
    pub domain_machines: BTreeMap<String, Vec<String>>,
    /// Machines that saw a file (`/api/files/{sha}/machines`), by SHA1 or SHA256.
    #[serde(default)]
    pub file_machines: BTreeMap<String, Vec<String>>,
    /// The tenant's live response library.
    #[serde(default)]
    pub library: Vec<LibraryFile>,
    /// Alerts as Defender returns them (free-form JSON objects, `id` required; `evidence`
    /// is served with `$expand=evidence` and feeds `/alerts/{id}/files|ips|domains|user`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Map<String, Value>>,
    /// Alerts generated at load time from a seed, after `alerts` (see [`crate::alerts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_generation: Option<AlertGeneration>,
    /// Lifecycle timings of machine actions.
    #[serde(default)]
    pub timings: Timings,
    /// Planned outcomes of machine actions (first matching rule wins; default Succeeded).
    #[serde(default)]
    pub outcomes: Vec<OutcomeRule>,
    /// Access token lifetime in seconds.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    /// Authorization code lifetime in seconds.
    #[serde(default = "default_code_lifetime")]
    pub code_lifetime_secs: u64,
    /// Device code lifetime in seconds (`expires_in` of the device code answer; Entra: 900).
    #[serde(default = "default_device_code_lifetime")]
    pub device_code_lifetime_secs: u64,
    /// Polling interval in seconds the device code answer asks for (Entra: 5).
    #[serde(default = "default_device_code_interval")]
    pub device_code_interval_secs: u64,
    /// Rate limits per (tenant, app, endpoint family).
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Live response sessions allowed at once per tenant.
    #[serde(default = "default_tenant_sessions")]
    pub max_live_sessions_per_tenant: usize,
    /// Page size the API uses for lists when the caller gives no `$top` (Defender pages at 10,000).
    #[serde(default = "default_page_size")]
    pub default_page_size: usize,
    /// v1 token responses carry numbers as strings (as Entra does); false answers numbers.
    #[serde(default = "yes")]
    pub v1_numbers_as_strings: bool,
    /// Validity of live response download links, in seconds.
    #[serde(default = "default_link_lifetime")]
    pub download_link_lifetime_secs: u64,
    /// Advanced hunting settings (row limit, latency, synthetic events).
    #[serde(default)]
    pub hunting: Hunting,
    /// Custom indicators (threat intelligence) as Defender returns them (free-form JSON
    /// objects, `id` required), served by `/api/indicators`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indicators: Vec<Map<String, Value>>,
    /// Most active (unexpired) indicators the tenant holds before a new one is refused
    /// (Defender: 15,000); a test lowers it to reach the limit cheaply.
    #[serde(default = "default_max_active_indicators")]
    pub max_active_indicators: usize,
}

/// Advanced hunting settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hunting {
    /// Most rows a query may answer (Microsoft: 100,000); more is a 400.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Each query answers after this many milliseconds (real time).
    #[serde(default)]
    pub latency_ms: u64,
    /// This many extra deterministic `DeviceProcessEvents` rows (for benchmarks), generated
    /// once on first use.
    #[serde(default)]
    pub synthetic_events: usize,
}

impl Default for Hunting {
    fn default() -> Self {
        Hunting {
            max_rows: default_max_rows(),
            latency_ms: 0,
            synthetic_events: 0,
        }
    }
}

fn default_max_rows() -> usize {
    100_000
}

/// An Entra ID tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Tenant id (a GUID; the token endpoint also accepts `domain`).
    pub id: String,
    /// A verified domain name of the tenant (e.g. contoso.onmicrosoft.com).
    #[serde(default)]
    pub domain: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Registered applications.
    #[serde(default)]
    pub apps: Vec<App>,
    /// Users who can sign in (consent pages, device codes); the first is the default.
    #[serde(default)]
    pub users: Vec<User>,
    /// Managed identities of Azure resources in this tenant (answered by the instance
    /// metadata endpoint `GET /metadata/identity/oauth2/token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_identities: Vec<ManagedIdentity>,
}

/// A managed identity: its client id, app roles and whether it is the system-assigned one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentity {
    /// Client id of the identity's service principal.
    pub client_id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// App roles granted to the identity (tokens carry them in `roles`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The identity answered when the request names no `client_id`.
    #[serde(default)]
    pub system_assigned: bool,
}

/// A user account of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Object id (a GUID).
    pub id: String,
    /// User principal name (`admin@contoso.onmicrosoft.com`).
    pub upn: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// A user who signed in, with the tenant that holds the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// Object id.
    pub oid: String,
    /// User principal name.
    pub upn: String,
    /// Display name.
    pub name: String,
    /// Home tenant id of the account.
    pub tenant_id: String,
}

impl Tenant {
    /// The user who signs in when nobody is named: the first user, or a built-in
    /// administrator of the tenant when the scenario lists none.
    pub fn default_user(&self) -> SignedIn {
        match self.users.first() {
            Some(u) => SignedIn::of(self, u),
            None => {
                let domain = self.domain.clone().unwrap_or_else(|| self.id.clone());
                SignedIn {
                    oid: stable_guid(&self.id),
                    upn: format!("admin@{domain}"),
                    name: "Administrator".to_string(),
                    tenant_id: self.id.clone(),
                }
            }
        }
    }
}

/// A GUID derived from `seed` (the same seed gives the same GUID).
fn stable_guid(seed: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

impl SignedIn {
    /// `user` of `tenant`.
    pub fn of(tenant: &Tenant, user: &User) -> SignedIn {
        SignedIn {
            oid: user.id.clone(),
            upn: user.upn.clone(),
            name: user.name.clone(),
            tenant_id: tenant.id.clone(),
        }
    }
}

/// An app registration with its secret and granted permissions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Application (client) id.
    pub client_id: String,
    /// Display name shown on the consent page.
    #[serde(default)]
    pub name: String,
    /// The client secret.
    pub secret: String,
    /// The secret has expired (AADSTS7000222).
    #[serde(default)]
    pub secret_expired: bool,
    /// Application permissions granted (client credentials tokens carry them in `roles`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Delegated permissions (interactive tokens carry them in `scp`); defaults to `roles`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Microsoft Graph application permissions (tokens for a Graph audience carry these in
    /// `roles` instead of the Defender ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph_roles: Vec<String>,
    /// Delegated Microsoft Graph permissions; defaults to `graph_roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_scopes: Option<Vec<String>>,
    /// Registered redirect URIs (loopback ones match any port).
    #[serde(default = "default_redirect_uris")]
    pub redirect_uris: Vec<String>,
    /// Certificates registered as credentials (PEM), for client assertions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}

impl App {
    /// Delegated permissions: `scopes` when given, else the app roles.
    pub fn delegated_scopes(&self) -> &[String] {
        self.scopes.as_deref().unwrap_or(&self.roles)
    }

    /// Application permissions a token for `audience` carries.
    pub fn roles_for(&self, audience: &str) -> &[String] {
        if crate::entra::is_graph_audience(audience) {
            &self.graph_roles
        } else {
            &self.roles
        }
    }

    /// Delegated permissions a token for `audience` carries.
    pub fn scopes_for(&self, audience: &str) -> &[String] {
        if crate::entra::is_graph_audience(audience) {
            self.graph_scopes.as_deref().unwrap_or(&self.graph_roles)
        } else {
            self.delegated_scopes()
        }
    }
}

/// A file on a device, for GetFile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFile {
    /// Full path on the device (matched case-insensitively).
    pub path: String,
    /// Text content.
    #[serde(default)]
    pub content: Option<String>,
    /// Base64 content (binary files).
    #[serde(default)]
    pub content_base64: Option<String>,
    /// Generated content of this many bytes (deterministic), when neither content is given.
    #[serde(default)]
    pub size: Option<u64>,
    /// With `size`: the generated content is `size` zero bytes, compressed as hard as deflate
    /// can (about 1000:1), which makes the download a gzip bomb.
    #[serde(default)]
    pub zeros: bool,
}

/// A live response library file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryFile {
    /// File name (letters, digits, '-', '_', '.').
    pub file_name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Whether the script takes parameters.
    #[serde(default)]
    pub has_parameters: bool,
    /// Parameters description.
    #[serde(default)]
    pub parameters_description: Option<String>,
    /// Content (text).
    #[serde(default)]
    pub content: String,
    /// What a RunScript of this file prints (defaults to a line naming the script and args).
    #[serde(default)]
    pub script_output: Option<String>,
    /// What a RunScript of this file writes to stderr.
    #[serde(default)]
    pub script_errors: Option<String>,
    /// Exit code of a RunScript of this file.
    #[serde(default)]
    pub exit_code: i64,
    /// Who uploaded it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Base64 content for binary files (takes precedence over `content`).
    #[serde(default)]
    pub content_base64: Option<String>,
    /// Upload time (RFC 3339); a fixed date when absent.
    #[serde(default)]
    pub creation_time: Option<String>,
    /// Last replacement time (RFC 3339); the creation time when absent.
    #[serde(default)]
    pub last_updated_time: Option<String>,
}

/// How long a machine action stays in each non-final state, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// Time spent Pending before InProgress.
    #[serde(default = "default_pending_ms")]
    pub pending_ms: u64,
    /// Time spent InProgress before the final status.
    #[serde(default = "default_in_progress_ms")]
    pub in_progress_ms: u64,
    /// Per action type overrides (`Isolate`, `LiveResponse`, ...).
    #[serde(default)]
    pub per_type: BTreeMap<String, StageTimings>,
    /// When true, actions never move by themselves: only `/_sim/actions/{id}/advance` or
    /// `/_sim/actions/{id}/complete` (or a clock advance) moves them.
    #[serde(default)]
    pub manual: bool,
}

/// Per type timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTimings {
    /// Time spent Pending.
    pub pending_ms: u64,
    /// Time spent InProgress.
    pub in_progress_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            pending_ms: default_pending_ms(),
            in_progress_ms: default_in_progress_ms(),
            per_type: BTreeMap::new(),
            manual: false,
        }
    }
}

impl Timings {
    /// Timings that apply to an action of `action_type`.
    pub fn for_type(&self, action_type: &str) -> StageTimings {
        self.per_type
            .get(action_type)
            .cloned()
            .unwrap_or(StageTimings {
                pending_ms: self.pending_ms,
                in_progress_ms: self.in_progress_ms,
            })
    }
}

/// A planned outcome for matching machine actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRule {
    /// Action type to match (`Isolate`, `LiveResponse`, ...); any when absent.
    #[serde(default, rename = "type")]
    pub action_type: Option<String>,
    /// Machine id to match; any when absent.
    #[serde(default)]
    pub machine_id: Option<String>,
    /// Final status: Succeeded, Failed, TimeOut or Cancelled.
    pub status: String,
    /// Error text put in live response command errors when the status is Failed.
    #[serde(default)]
    pub error: Option<String>,
    /// How many more actions this rule applies to (unlimited when absent).
    #[serde(default)]
    pub remaining: Option<u64>,
}

/// How many alerts to generate at load time, and from which seed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertGeneration {
    /// Number of alerts.
    pub count: usize,
    /// Seed: the same seed and machines give the same alerts (times relative to load).
    #[serde(default)]
    pub seed: u64,
    /// Alerts are spread over this many days before the load time.
    #[serde(default = "default_alert_days")]
    pub days: u32,
}

fn default_alert_days() -> u32 {
    60
}

/// A limit: calls per minute and per hour.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Calls allowed per rolling minute.
    pub per_minute: u32,
    /// Calls allowed per rolling hour.
    pub per_hour: u32,
}

/// Rate limits per endpoint family, applied per (tenant, app).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Most endpoints.
    #[serde(default = "limit_default")]
    pub default: Limit,
    /// POST runliveresponse.
    #[serde(default = "limit_live_response")]
    pub live_response: Limit,
    /// GET getPackageUri.
    #[serde(default = "limit_package")]
    pub package_uri: Limit,
    /// POST advancedqueries/run.
    #[serde(default = "limit_hunting")]
    pub advanced_queries: Limit,
    /// The Microsoft Graph security API (per tenant and app).
    #[serde(default = "limit_graph")]
    pub graph: Limit,
    /// POST alerts/batchUpdate (10/min, 500/h).
    #[serde(default = "limit_alert_batch")]
    pub alert_batch_update: Limit,
    /// POST alerts/CreateAlertByReference (15/min).
    #[serde(default = "limit_create_alert")]
    pub create_alert: Limit,
    /// POST machines/{id}/startInvestigation (50/h).
    #[serde(default = "limit_start_investigation")]
    pub start_investigation: Limit,
    /// Disable rate limiting entirely (benchmarks of the simulator itself).
    #[serde(default)]
    pub disabled: bool,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            default: limit_default(),
            live_response: limit_live_response(),
            package_uri: limit_package(),
            advanced_queries: limit_hunting(),
            graph: limit_graph(),
            alert_batch_update: limit_alert_batch(),
            create_alert: limit_create_alert(),
            start_investigation: limit_start_investigation(),
            disabled: false,
        }
    }
}

fn limit_default() -> Limit {
    Limit {
        per_minute: 100,
        per_hour: 1500,
    }
}
fn limit_live_response() -> Limit {
    Limit {
        per_minute: 10,
        per_hour: 600,
    }
}
fn limit_package() -> Limit {
    Limit {
        per_minute: 2,
        per_hour: 120,
    }
}
fn limit_hunting() -> Limit {
    Limit {
        per_minute: 45,
        per_hour: 1500,
    }
}
fn limit_graph() -> Limit {
    Limit {
        per_minute: 150,
        per_hour: 9000,
    }
}
fn limit_alert_batch() -> Limit {
    Limit {
        per_minute: 10,
        per_hour: 500,
    }
}
fn limit_start_investigation() -> Limit {
    Limit {
        per_minute: 50,
        per_hour: 50,
    }
}

fn limit_create_alert() -> Limit {
    Limit {
        per_minute: 15,
        per_hour: 900,
    }
}
fn default_token_lifetime() -> u64 {
    3599
}
fn default_code_lifetime() -> u64 {
    600
}
fn default_device_code_lifetime() -> u64 {
    900
}
fn default_device_code_interval() -> u64 {
    5
}
fn default_tenant_sessions() -> usize {
    25
}
fn default_page_size() -> usize {
    10_000
}
fn default_max_active_indicators() -> usize {
    15_000
}
fn default_link_lifetime() -> u64 {
    1800
}
fn default_pending_ms() -> u64 {
    500
}
fn default_in_progress_ms() -> u64 {
    1500
}
fn yes() -> bool {
    true
}
fn default_redirect_uris() -> Vec<String> {
    vec![
        "http://127.0.0.1/result".to_string(),
        "http://localhost/result".to_string(),
    ]
}

/// Errors reading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The content is not a valid scenario.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// The scenario that ships with the crate.
    pub fn default_scenario() -> Scenario {
        // The embedded file is part of the crate and checked by a unit test.
        match Self::from_json(DEFAULT_SCENARIO) {
            Ok(s) => s,
            Err(e) => panic!("built-in scenario is invalid: {e}"),
        }
    }

    /// Parses and checks a scenario from JSON text.
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario =
            serde_json::from_str(text).map_err(|e| ScenarioError::Invalid(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    /// Reads a scenario file (JSON).
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Checks references inside the scenario.
    pub fn check(&self) -> Result<(), ScenarioError> {
        for (i, m) in self.machines.iter().enumerate() {
            match m.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => {}
                _ => {
                    return Err(ScenarioError::Invalid(format!(
                        "machines[{i}] has no string `id`"
                    )));
                }
            }
        }
        for (i, a) in self.alerts.iter().enumerate() {
            match a.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => {}
                _ => {
                    return Err(ScenarioError::Invalid(format!(
                        "alerts[{i}] has no string `id`"
                    )));
                }
            }
        }
        for r in &self.outcomes {
            if !matches!(
                r.status.as_str(),
                "Succeeded" | "Failed" | "TimeOut" | "Cancelled"
            ) {
                return Err(ScenarioError::Invalid(format!(
                    "outcome status `{}` is not one of Succeeded, Failed, TimeOut, Cancelled",
                    r.status
                )));
            }
        }
        Ok(())
    }

    /// The first tenant (the scenario's main one).
    pub fn first_tenant(&self) -> Option<&Tenant> {
        self.tenants.first()
    }

    /// Finds a tenant by id or domain (case-insensitive).
    pub fn tenant(&self, id_or_domain: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| {
            t.id.eq_ignore_ascii_case(id_or_domain)
                || t.domain
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(id_or_domain))
        })
    }

    /// Finds a user of any tenant by UPN or object id (case-insensitive).
    pub fn user(&self, upn_or_id: &str) -> Option<SignedIn> {
        self.tenants.iter().find_map(|t| {
            t.users
                .iter()
                .find(|u| {
                    u.upn.eq_ignore_ascii_case(upn_or_id) || u.id.eq_ignore_ascii_case(upn_or_id)
                })
                .map(|u| SignedIn::of(t, u))
        })
    }

    /// Finds a machine by id (case-insensitive).
    pub fn machine(&self, id: &str) -> Option<&Map<String, Value>> {
        self.machines.iter().find(|m| {
            m.get("id")
                .and_then(Value::as_str)
                .is_some_and(|mid| mid.eq_ignore_ascii_case(id))
        })
    }

    /// Finds a library file by name (case-insensitive).
    pub fn library_file(&self, name: &str) -> Option<&LibraryFile> {
        self.library
            .iter()
            .find(|f| f.file_name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scenario_parses() {
        let s = Scenario::default_scenario();
        assert!(!s.tenants.is_empty());
        assert!(s.machines.len() >= 3);
    }

    #[test]
    fn bad_outcome_is_rejected() {
        let e = Scenario::from_json(r#"{"tenants":[],"outcomes":[{"status":"Maybe"}]}"#);
        assert!(e.is_err());
    }
}
