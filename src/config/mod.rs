//! Configuration: defaults, a TOML file and `DEFENDER_SOAR__SECTION__KEY` environment overrides,
//! layered with figment, then validated and resolved (secrets read, hosts chosen) at start-up.
//!
//! The file shape is design.md §3. Every problem names the key it concerns and stops start-up;
//! secrets are read from environment variables or files (never inline) and only ever held as
//! [`SecretString`], which no `Debug` output here reveals.
//!
//! Environment overrides split on `__`: `DEFENDER_SOAR__SERVER__LISTEN` sets `server.listen`,
//! `DEFENDER_SOAR__ASSETS__CONTOSO__TENANT_ID` sets `assets.contoso.tenant_id`. Environment
//! variable names are case-insensitive, so keys coming from the environment are lower-cased:
//! an asset defined *only* through the environment gets a lower-case id, while an override
//! whose id matches (ignoring case) an asset of the file applies to that asset.

pub mod edge;
mod raw;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::auth::certificate::ClientCertificate;
pub use edge::{DownloadHosts, HostRule, VaultConfig, WhenFull};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "DEFENDER_SOAR__";

/// Environment variable holding the API key when `server.api_key_env` is not set.
pub const DEFAULT_API_KEY_ENV: &str = "DEFENDER_SOAR_API_KEY";

/// The whole validated configuration: the HTTP host and the configured tenants ("assets").
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP host.
    pub server: ServerConfig,
    /// Assets by id (ids match `[A-Za-z0-9_-]{1,64}`).
    pub assets: BTreeMap<String, AssetConfig>,
    /// Request budgets by asset id (`[assets.<id>.budget]`, defaults filled in); an asset
    /// without an entry uses [`BudgetConfig::default`] (see [`Config::budget`]).
    pub budgets: BTreeMap<String, BudgetConfig>,
    /// Alert ingestion by asset id (`[assets.<id>.ingestion]`, defaults filled in); only assets
    /// with the section have an entry. See [`Config::ingestion`].
    pub ingestion: BTreeMap<String, IngestionConfig>,
    /// `[vault]`: the vault's directory and limits.
    pub vault: VaultConfig,
}

/// Where ingestion reads alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IngestionSource {
    /// Microsoft Graph `security/alerts_v2` (default).
    #[default]
    Graph,
    /// Defender for Endpoint `/api/alerts`.
    Mde,
}

impl IngestionSource {
    /// The configured spelling (`graph`, `mde`), also written in events.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestionSource::Graph => "graph",
            IngestionSource::Mde => "mde",
        }
    }
}

impl FromStr for IngestionSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "graph" => Ok(IngestionSource::Graph),
            "mde" => Ok(IngestionSource::Mde),
            _ => Err(format!(
                "{:?} is not a source; use graph or mde",
                crate::actions::truncate(s, 40)
            )),
        }
    }
}

/// An asset's alert ingestion (`[assets.<id>.ingestion]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionConfig {
    /// `enabled` (default false): whether the host polls this asset's alerts.
    pub enabled: bool,
    /// `source` (default graph).
    pub source: IngestionSource,
    /// `interval_secs` (default 60, at least 10): time between polls.
    pub interval_secs: u64,
    /// `statuses`: only alerts with one of these statuses (any case); empty keeps all.
    pub statuses: Vec<String>,
    /// `severities`: only alerts with one of these severities (any case); empty keeps all.
    pub severities: Vec<String>,
    /// `categories`: only alerts in one of these categories (any case); empty keeps all.
    pub categories: Vec<String>,
    /// `detection_sources`: only alerts from one of these detection sources; empty keeps all.
    pub detection_sources: Vec<String>,
    /// `service_sources`: only alerts from one of these service sources (Graph); empty keeps all.
    pub service_sources: Vec<String>,
    /// `include_updates` (default false): an alert whose last update moved is delivered again.
    pub include_updates: bool,
    /// `first_run_lookback` in seconds (default 1 day, at most 30 days): how far the first
    /// poll reaches back.
    pub first_run_lookback_secs: u64,
    /// `max_per_poll` (default 1000, 1..=10000): most alerts read by one poll.
    pub max_per_poll: u32,
    /// `expand_evidence` (default false): MDE alerts are read with `$expand=evidence`.
    pub expand_evidence: bool,
    /// `outbox_max_events` (default 100000, 100..=10000000): most events the journal keeps
    /// (the webhooks' outbox and the feed); older ones are dropped first.
    pub outbox_max_events: usize,
    /// `webhooks`: where events are pushed.
    pub webhooks: Vec<WebhookConfig>,
    /// `adaptive` (default true): the next poll comes sooner after one that found new alerts
    /// and backs off after failures (see [`crate::ingest::poller::next_wait`]).
    pub adaptive: bool,
    /// `actions_floor_percent` (default 50, 10..=90): the share of every budget window that
    /// ingestion's polls leave free for playbook actions.
    pub actions_floor_percent: u8,
}

/// A push receiver of ingestion events (`[[assets.<id>.ingestion.webhooks]]`).
#[derive(Clone)]
pub struct WebhookConfig {
    /// `url`: http or https, no user name or password in it.
    pub url: url::Url,
    /// `secret_env`: the environment variable holding the signing secret.
    pub secret_env: String,
    /// The signing secret (at least 16 characters).
    pub secret: SecretString,
    /// `batch_size` (default 100, 1..=1000): most events in one POST.
    pub batch_size: usize,
    /// `retry_max_secs` (default 300, 1..=3600): longest wait between failed POSTs (the wait
    /// starts at 1 s and doubles).
    pub retry_max_secs: u64,
}

impl WebhookConfig {
    /// A stable identifier of the receiver (derived from its URL), under which its delivery
    /// cursor is kept: the URL itself may carry a token in its path or query.
    pub fn id(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.url.as_str().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The URL without its path and query (which may carry a token), for logs and status.
    pub fn shown(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

impl PartialEq for WebhookConfig {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
            && self.secret_env == other.secret_env
            && self.batch_size == other.batch_size
            && self.retry_max_secs == other.retry_max_secs
    }
}

impl Eq for WebhookConfig {}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.shown())
            .field("secret_env", &self.secret_env)
            .field("batch_size", &self.batch_size)
            .field("retry_max_secs", &self.retry_max_secs)
            .finish_non_exhaustive()
    }
}

impl Default for IngestionConfig {
    fn default() -> Self {
        IngestionConfig {
            enabled: false,
            source: IngestionSource::Graph,
            interval_secs: 60,
            statuses: Vec::new(),
            severities: Vec::new(),
            categories: Vec::new(),
            detection_sources: Vec::new(),
            service_sources: Vec::new(),
            include_updates: false,
            first_run_lookback_secs: 86_400,
            max_per_poll: 1000,
            expand_evidence: false,
            outbox_max_events: crate::ingest::journal::DEFAULT_MAX_EVENTS,
            webhooks: Vec::new(),
            adaptive: true,
            actions_floor_percent: crate::defender::DEFAULT_ACTIONS_FLOOR_PERCENT,
        }
    }
}

/// Settings of the HTTP host.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address the host listens on; default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Public base URL; the OAuth redirect URI is `{public_url}/result`. Default: derived from
    /// `listen` (`http://127.0.0.1:8080` for the default address).
    pub public_url: url::Url,
    /// Directory of per-asset state files and the vault; default `state`.
    pub state_dir: PathBuf,
    /// API key callers must present, from `api_key_env` (default `DEFENDER_SOAR_API_KEY`) or
    /// `api_key_file`; `None` when the default variable is unset and nothing else is configured.
    pub api_key: Option<SecretString>,
    /// Whole-request timeout of the HTTP host in seconds; default 3900 (actions may wait 3600 s).
    pub request_timeout_secs: u64,
    /// Largest accepted request body in bytes; default 16 MiB.
    pub body_limit_bytes: usize,
    /// Log output format; default text.
    pub log_format: LogFormat,
    /// `callback_hosts`: hosts (besides loopback) a `callback_url` may name over plain http.
    pub callback_hosts: Vec<String>,
    /// `[server.callback_secrets]`: name → secret (from the environment variable named),
    /// signing completion callbacks.
    pub callback_secrets: BTreeMap<String, SecretString>,
    /// Scoped API keys (`[[server.api_keys]]`), besides the `default` key of `api_key`.
    pub api_keys: Vec<ApiKeyConfig>,
    /// `header_read_timeout_secs`: time a client has to send a request's head once it sent
    /// its first byte; default 10.
    pub header_read_timeout_secs: u64,
    /// `body_read_timeout_secs`: time a client has to send a whole request body; default 30.
    pub body_read_timeout_secs: u64,
    /// `keep_alive_timeout_secs`: an idle connection (no request in flight, nothing sent
    /// either way) is closed after this long; default 60.
    pub keep_alive_timeout_secs: u64,
    /// `max_connections`: connections served at once; more wait in the listen backlog until
    /// one closes. Default 1024.
    pub max_connections: usize,
    /// `[server.state]`: where per-asset state, budgets and leases live.
    pub state: StateBackendConfig,
}

/// Which store keeps the per-asset state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateBackend {
    /// One encrypted file per asset in `state_dir` (the default; one host, or hosts sharing a
    /// local directory).
    #[default]
    Files,
    /// A Redis server shared by every host.
    Redis,
}

impl StateBackend {
    /// The configuration spelling: `files` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateBackend::Files => "files",
            StateBackend::Redis => "redis",
        }
    }
}

/// `[server.state]`.
#[derive(Clone)]
pub struct StateBackendConfig {
    /// `backend`: `files` (default) or `redis`.
    pub backend: StateBackend,
    /// `redis_url_env`: the environment variable holding the Redis URL (`redis://` or
    /// `rediss://`, password and database in the URL).
    pub redis_url_env: Option<String>,
    /// The Redis URL read from it (it may carry a password).
    pub redis_url: Option<SecretString>,
    /// `key_prefix`: every Redis key starts with it and a colon (default `defender-soar`).
    pub key_prefix: String,
    /// `fallback_share_percent` (1–100, default 50): the share of each tenant budget a host
    /// uses on its own while Redis cannot be reached.
    pub fallback_share_percent: u8,
    /// `lease_secs` (2–300, default 15): how long an ingestion lease lasts without renewal;
    /// another host takes over within twice that after the holder dies.
    pub lease_secs: u64,
}

impl Default for StateBackendConfig {
    fn default() -> Self {
        StateBackendConfig {
            backend: StateBackend::Files,
            redis_url_env: None,
            redis_url: None,
            key_prefix: "defender-soar".to_string(),
            fallback_share_percent: 50,
            lease_secs: 15,
        }
    }
}

impl fmt::Debug for StateBackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateBackendConfig")
            .field("backend", &self.backend)
            .field("redis_url_env", &self.redis_url_env)
            .field("redis_url", &self.redis_url.as_ref().map(|_| Redacted))
            .field("key_prefix", &self.key_prefix)
            .field("fallback_share_percent", &self.fallback_share_percent)
            .field("lease_secs", &self.lease_secs)
            .finish()
    }
}

/// What a scoped API key may do (`[[server.api_keys]]` `scopes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Investigation, hunting, test and ingestion actions, status, feed and vault reads.
    Read,
    /// Containment and correction actions (and other state-changing generic actions).
    Respond,
    /// Live response: put_file, get_file, run_script, get_live_response_result, library
    /// upload and delete.
    LiveResponse,
    /// Consent, manifest, metrics, OpenAPI document, audit trail.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Scope::Read,
        Scope::Respond,
        Scope::LiveResponse,
        Scope::Admin,
    ];

    /// The name used in configuration and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Respond => "respond",
            Scope::LiveResponse => "live_response",
            Scope::Admin => "admin",
        }
    }

    /// The scope called `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The assets a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetScope {
    /// `"*"`: every asset.
    All,
    /// These asset ids.
    Only(BTreeSet<String>),
}

impl AssetScope {
    /// Whether `asset` is covered.
    pub fn allows(&self, asset: &str) -> bool {
        match self {
            AssetScope::All => true,
            AssetScope::Only(ids) => ids.contains(asset),
        }
    }
}

/// One scoped API key (`[[server.api_keys]]`).
#[derive(Clone)]
pub struct ApiKeyConfig {
    /// Unique name (`[A-Za-z0-9_.-]{1,64}`), shown in logs and the audit trail.
    pub name: String,
    /// The secret callers present (at least 32 characters), from `key_env` or `key_file`.
    pub secret: SecretString,
    /// Assets it may use.
    pub assets: AssetScope,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("name", &self.name)
            .field("secret", &Redacted)
            .field("assets", &self.assets)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl ServerConfig {
    /// The OAuth redirect URI: `{public_url}/result` (no doubled slash).
    pub fn redirect_uri(&self) -> String {
        format!("{}/result", self.public_url.as_str().trim_end_matches('/'))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        ServerConfig {
            listen,
            public_url: resolve::public_url_for(listen),
            state_dir: PathBuf::from("state"),
            api_key: None,
            request_timeout_secs: resolve::DEFAULT_REQUEST_TIMEOUT_SECS,
            body_limit_bytes: resolve::DEFAULT_BODY_LIMIT_BYTES,
            log_format: LogFormat::Text,
            callback_hosts: Vec::new(),
            callback_secrets: BTreeMap::new(),
            api_keys: Vec::new(),
            header_read_timeout_secs: resolve::DEFAULT_HEADER_READ_TIMEOUT_SECS,
            body_read_timeout_secs: resolve::DEFAULT_BODY_READ_TIMEOUT_SECS,
            keep_alive_timeout_secs: resolve::DEFAULT_KEEP_ALIVE_TIMEOUT_SECS,
            max_connections: resolve::DEFAULT_MAX_CONNECTIONS,
            state: StateBackendConfig::default(),
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url.as_str())
            .field("state_dir", &self.state_dir)
            .field("api_key", &self.api_key.as_ref().map(|_| Redacted))
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("log_format", &self.log_format)
            .field("callback_hosts", &self.callback_hosts)
            .field(
                "callback_secrets",
                &self.callback_secrets.keys().collect::<Vec<_>>(),
            )
            .field("api_keys", &self.api_keys)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("body_read_timeout_secs", &self.body_read_timeout_secs)
            .field("keep_alive_timeout_secs", &self.keep_alive_timeout_secs)
            .field("max_connections", &self.max_connections)
            .field("state", &self.state)
            .finish()
    }
}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Builds a `FromStr` error that lists the allowed values.
fn unknown_value(what: &str, value: &str, allowed: &[&str]) -> String {
    format!(
        "unknown {what} {value:?}; allowed values: {}",
        allowed.join(", ")
    )
}

/// Log output format of the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The configuration spelling: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(unknown_value("log format", s, &["text", "json"])),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an asset obtains tokens from Entra ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Application permissions: client id + secret, no user involved.
    #[default]
    ClientCredentials,
    /// Delegated permissions after an interactive admin consent (`/start_oauth`).
    AuthorizationCode,
    /// Application permissions: client id + a certificate's private key (a signed client
    /// assertion), no secret.
    Certificate,
    /// Application permissions of the Azure managed identity of the machine the host runs on
    /// (instance metadata endpoint), no credential in the configuration.
    ManagedIdentity,
    /// Delegated permissions after an admin signs in on another device with a device code
    /// (`defender-soar consent ASSET`); the client secret is optional (a public client).
    DeviceCode,
}

impl AuthKind {
    /// Every kind, in documentation order.
    pub const ALL: [AuthKind; 5] = [
        AuthKind::ClientCredentials,
        AuthKind::AuthorizationCode,
        AuthKind::DeviceCode,
        AuthKind::Certificate,
        AuthKind::ManagedIdentity,
    ];

    /// The configuration spelling: `client_credentials`, `authorization_code`,
    /// `device_code`, `certificate` or `managed_identity`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::ClientCredentials => "client_credentials",
            AuthKind::AuthorizationCode => "authorization_code",
            AuthKind::Certificate => "certificate",
            AuthKind::ManagedIdentity => "managed_identity",
            AuthKind::DeviceCode => "device_code",
        }
    }

    /// Whether tokens carry application permissions (`roles`) obtained without a user.
    pub fn is_application(self) -> bool {
        !self.is_delegated()
    }

    /// Whether tokens carry a signed-in user's delegated permissions (a consent or a device
    /// code sign-in stored a refresh token).
    pub fn is_delegated(self) -> bool {
        matches!(self, AuthKind::AuthorizationCode | AuthKind::DeviceCode)
    }

    /// Whether the kind authenticates with a client secret (optional for `device_code`).
    pub fn uses_secret(self) -> bool {
        matches!(
            self,
            AuthKind::ClientCredentials | AuthKind::AuthorizationCode | AuthKind::DeviceCode
        )
    }
}

impl FromStr for AuthKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        AuthKind::ALL
            .into_iter()
            .find(|k| k.as_str() == norm)
            .ok_or_else(|| unknown_value("auth", s, &AuthKind::ALL.map(AuthKind::as_str)))
    }
}

impl fmt::Display for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Microsoft cloud (and, for the commercial cloud, the API region) an asset's tenant
/// lives in; it picks the login, API and Graph hosts and the token resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Environment {
    /// Commercial cloud.
    #[default]
    Public,
    /// US Government Community Cloud.
    Gcc,
    /// US Government Community Cloud High.
    GccHigh,
    /// US Department of Defense.
    Dod,
    /// Commercial cloud, API served from the United States.
    Us,
    /// Commercial cloud, API served from the European Union.
    Eu,
    /// Commercial cloud, API served from the United Kingdom.
    Uk,
    /// Commercial cloud, API host chosen by geographic proximity.
    Global,
}

/// Token resource of the commercial cloud (every commercial region shares it).
const PUBLIC_RESOURCE: &str = "https://api.securitycenter.microsoft.com";

impl Environment {
    /// Every environment, in documentation order.
    pub const ALL: [Environment; 8] = [
        Environment::Public,
        Environment::Gcc,
        Environment::GccHigh,
        Environment::Dod,
        Environment::Us,
        Environment::Eu,
        Environment::Uk,
        Environment::Global,
    ];

    /// Entra ID authority base (without tenant).
    pub fn login_url(self) -> &'static str {
        match self {
            Environment::GccHigh | Environment::Dod => "https://login.microsoftonline.us",
            _ => "https://login.microsoftonline.com",
        }
    }

    /// MDE API base (without `/api`).
    pub fn api_url(self) -> &'static str {
        match self {
            Environment::Public => PUBLIC_RESOURCE,
            Environment::Gcc => "https://api-gcc.securitycenter.microsoft.us",
            Environment::GccHigh | Environment::Dod => {
                "https://api-gov.securitycenter.microsoft.us"
            }
            Environment::Us => "https://us.api.security.microsoft.com",
            Environment::Eu => "https://eu.api.security.microsoft.com",
            Environment::Uk => "https://uk.api.security.microsoft.com",
            Environment::Global => "https://api.security.microsoft.com",
        }
    }

    /// Microsoft Graph base (without `/v1.0`).
    pub fn graph_url(self) -> &'static str {
        match self {
            Environment::GccHigh => "https://graph.microsoft.us",
            Environment::Dod => "https://dod-graph.microsoft.us",
            _ => "https://graph.microsoft.com",
        }
    }

    /// Microsoft Graph's token resource in this cloud (its host, whatever `graph_url` says).
    pub fn graph_resource(self) -> &'static str {
        self.graph_url()
    }

    /// Token resource (v1 `resource`; v2 scope is `{resource}/.default`): the commercial
    /// resource for Public and its regions, the API base for the government clouds.
    pub fn resource(self) -> &'static str {
        match self {
            Environment::Gcc | Environment::GccHigh | Environment::Dod => self.api_url(),
            _ => PUBLIC_RESOURCE,
        }
    }

    /// The configuration spelling: `Public`, `GCC`, `GCC High`, `DoD`, `US`, `EU`, `UK` or
    /// `Global`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Public => "Public",
            Environment::Gcc => "GCC",
            Environment::GccHigh => "GCC High",
            Environment::Dod => "DoD",
            Environment::Us => "US",
            Environment::Eu => "EU",
            Environment::Uk => "UK",
            Environment::Global => "Global",
        }
    }
}

impl FromStr for Environment {
    type Err = String;

    /// Case-insensitive; spaces, `_` and `-` are ignored (`GCC High`, `GCCHigh`, `gcc_high`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = |v: &str| -> String {
            v.chars()
                .filter(|c| !matches!(c, ' ' | '_' | '-'))
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let wanted = norm(s);
        Environment::ALL
            .into_iter()
            .find(|e| norm(e.as_str()) == wanted)
            .ok_or_else(|| {
                unknown_value("environment", s, &Environment::ALL.map(Environment::as_str))
            })
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Environment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which Entra token endpoint an asset uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenEndpoint {
    /// `/oauth2/token` with `resource=...`.
    V1,
    /// `/oauth2/v2.0/token` with `scope={resource}/.default`.
    #[default]
    V2,
}

impl TokenEndpoint {
    /// The configuration spelling: `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenEndpoint::V1 => "v1",
            TokenEndpoint::V2 => "v2",
        }
    }
}

impl FromStr for TokenEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" => Ok(TokenEndpoint::V1),
            "v2" => Ok(TokenEndpoint::V2),
            _ => Err(unknown_value("token endpoint", s, &["v1", "v2"])),
        }
    }
}

impl fmt::Display for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured tenant + app registration, resolved and validated.
#[derive(Clone)]
pub struct AssetConfig {
    /// Asset id (the key under `[assets]`).
    pub id: String,
    /// Entra tenant: a GUID or a domain name.
    pub tenant_id: String,
    /// App registration's client id (a GUID).
    pub client_id: String,
    /// Client secret, read from `client_secret_env` or `client_secret_file`; `None` for the
    /// kinds that use none (certificate, managed identity).
    pub client_secret: Option<SecretString>,
    /// `client_secret_file` when the secret came from a file: it is read again when it
    /// changes, so a rotated secret is used without a restart.
    pub client_secret_file: Option<PathBuf>,
    /// The certificate credential (`auth = "certificate"`), read and checked at start-up.
    pub certificate: Option<ClientCertificate>,
    /// Managed identity settings (`auth = "managed_identity"`).
    pub managed_identity: Option<ManagedIdentityConfig>,
    /// How tokens are obtained; default client credentials.
    pub auth: AuthKind,
    /// Microsoft cloud; default Public.
    pub environment: Environment,
    /// Token endpoint version; default v2.
    pub token_endpoint: TokenEndpoint,
    /// Authority base without tenant: the override or the environment's; no trailing slash.
    pub login_url: String,
    /// API base without `/api`: the override or the environment's; no trailing slash.
    pub api_url: String,
    /// Microsoft Graph base without `/v1.0`: the `graph_url` override or the environment's; no
    /// trailing slash.
    pub graph_url: String,
    /// Token resource: always the environment's, even when the URLs are overridden.
    pub resource: String,
    /// Action ids this asset refuses, as configured.
    pub disabled_actions: BTreeSet<String>,
    /// `allow_offboard`: whether `offboard_device` may offboard devices of this asset
    /// (default false: it cannot be undone through the API).
    pub allow_offboard: bool,
    /// Users (UPN or object id) allowed to connect an interactive asset; empty allows any
    /// user of the tenant.
    pub allowed_consenters: Vec<String>,
    /// What alert and incident lists leave out (`ignore_*`, `lookback_days`).
    pub triage: TriageFilters,
    /// How hunting answers are shown (`hunting_summary_fields`, `hunting_ignore_fields`).
    pub hunting: HuntingDisplay,
    /// Connect timeout of upstream calls in seconds; default 10.
    pub connect_timeout_secs: u64,
    /// Total timeout of one upstream call in seconds; default 60.
    pub http_timeout_secs: u64,
    /// `download_hosts`: hosts result and package links may point at; default the blob
    /// storage domains of the asset's cloud, HTTPS only.
    pub download_hosts: DownloadHosts,
}

impl AssetConfig {
    /// Token endpoint URL for this asset's tenant and endpoint version.
    pub fn token_url(&self) -> String {
        match self.token_endpoint {
            TokenEndpoint::V1 => format!("{}/{}/oauth2/token", self.login_url, self.tenant_id),
            TokenEndpoint::V2 => {
                format!("{}/{}/oauth2/v2.0/token", self.login_url, self.tenant_id)
            }
        }
    }

    /// Authorize (consent) endpoint URL for this asset's tenant and endpoint version.
    pub fn authorize_url(&self) -> String {
        match self.token_endpoint {
            TokenEndpoint::V1 => {
                format!("{}/{}/oauth2/authorize", self.login_url, self.tenant_id)
            }
            TokenEndpoint::V2 => {
                format!(
                    "{}/{}/oauth2/v2.0/authorize",
                    self.login_url, self.tenant_id
                )
            }
        }
    }

    /// v2 scope: `{resource}/.default`.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.resource)
    }
}

impl fmt::Debug for AssetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetConfig")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| Redacted),
            )
            .field("client_secret_file", &self.client_secret_file)
            .field("certificate", &self.certificate)
            .field("managed_identity", &self.managed_identity)
            .field("auth", &self.auth)
            .field("environment", &self.environment)
            .field("token_endpoint", &self.token_endpoint)
            .field("login_url", &self.login_url)
            .field("api_url", &self.api_url)
            .field("graph_url", &self.graph_url)
            .field("resource", &self.resource)
            .field("disabled_actions", &self.disabled_actions)
            .field("allow_offboard", &self.allow_offboard)
            .field("allowed_consenters", &self.allowed_consenters)
            .field("triage", &self.triage)
            .field("hunting", &self.hunting)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("http_timeout_secs", &self.http_timeout_secs)
            .field("download_hosts", &self.download_hosts)
            .finish()
    }
}

/// Where an asset with `auth = "managed_identity"` gets its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedIdentityConfig {
    /// Client id of a user-assigned identity (`managed_identity_client_id`); `None` for the
    /// system-assigned identity.
    pub client_id: Option<String>,
    /// The instance metadata token endpoint (`managed_identity_url`; default
    /// [`ManagedIdentityConfig::DEFAULT_URL`]).
    pub url: String,
}

impl ManagedIdentityConfig {
    /// Azure's instance metadata service token endpoint.
    pub const DEFAULT_URL: &'static str = "http://169.254.169.254/metadata/identity/oauth2/token";
}

/// How an asset's hunting answers are shown: the columns whose values the summary highlights,
/// and the columns left out of the rows (names compared ignoring case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HuntingDisplay {
    /// `hunting_summary_fields`: columns whose first values the summary shows.
    pub summary_fields: Vec<String>,
    /// `hunting_ignore_fields`: columns dropped from the rows.
    pub ignore_fields: Vec<String>,
}

/// What every alert and incident list of an asset leaves out: records whose classification,
/// determination, severity, status or service source is listed (compared ignoring case, so
/// Defender's `TruePositive` and Graph's `truePositive` match alike), and records created more
/// than `lookback_days` ago.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriageFilters {
    /// `ignore_classifications`.
    pub classifications: Vec<String>,
    /// `ignore_determinations`.
    pub determinations: Vec<String>,
    /// `ignore_severities`.
    pub severities: Vec<String>,
    /// `ignore_statuses`.
    pub statuses: Vec<String>,
    /// `ignore_service_sources` (Graph `serviceSource`; Defender's `detectionSource` too).
    pub service_sources: Vec<String>,
    /// `lookback_days`: only records created in the last N days (1 to 3650).
    pub lookback_days: Option<u32>,
}

/// Calls allowed to one endpoint family in any rolling minute and, optionally, hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Calls per rolling minute (at least 1).
    pub per_minute: u32,
    /// Calls per rolling hour; `None` for no hourly limit.
    pub per_hour: Option<u32>,
}

impl RateLimit {
    /// `per_minute` calls a minute and `per_hour` an hour.
    pub const fn new(per_minute: u32, per_hour: Option<u32>) -> RateLimit {
        RateLimit {
            per_minute,
            per_hour,
        }
    }
}

/// An asset's client-side request budget (`[assets.<id>.budget]`), per endpoint family, kept
/// below Microsoft's documented limits so the host slows down before Defender answers 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetConfig {
    /// Most endpoints: `per_minute` (100) and `per_hour` (1500).
    pub default: RateLimit,
    /// `POST .../runliveresponse`: `live_response_per_minute` (10), `live_response_per_hour`
    /// (none).
    pub live_response: RateLimit,
    /// `GET .../getPackageUri`: `package_uri_per_minute` (2), `package_uri_per_hour` (120).
    pub package_uri: RateLimit,
    /// `POST /api/advancedqueries/run`: `hunting_per_minute` (45), `hunting_per_hour` (1500).
    pub hunting: RateLimit,
    /// Microsoft Graph security API calls: `graph_per_minute` (150), `graph_per_hour` (9000).
    pub graph: RateLimit,
    /// Longest wait, in seconds, for a permit or a `Retry-After` of a call without an action
    /// deadline (`max_wait_secs`, 30; 0 never waits).
    pub max_wait_secs: u64,
}

impl BudgetConfig {
    /// Microsoft's documented limits.
    pub const STANDARD: BudgetConfig = BudgetConfig {
        default: RateLimit::new(100, Some(1500)),
        live_response: RateLimit::new(10, None),
        package_uri: RateLimit::new(2, Some(120)),
        hunting: RateLimit::new(45, Some(1500)),
        graph: RateLimit::new(150, Some(9000)),
        max_wait_secs: 30,
    };
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig::STANDARD
    }
}

/// Why the configuration cannot be used; start-up stops on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One key (or the file itself) is missing, malformed or unusable.
    #[error("configuration: {key}: {problem}")]
    Invalid {
        /// Dotted key path (`assets.contoso.client_id`), or the file path for file problems.
        key: String,
        /// What is wrong and, where useful, what is allowed.
        problem: String,
    },
    /// Several problems, shown one per line.
    #[error("{}", join_lines(.0))]
    Multiple(Vec<ConfigError>),
}

impl ConfigError {
    /// An error about one key.
    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// One error, or all of them when there are several; `None` when the list is empty.
    fn from_list(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ConfigError::Multiple(errors)),
        }
    }

    /// Every single problem (a [`ConfigError::Multiple`] flattened).
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Multiple(all) => all.iter().flat_map(ConfigError::problems).collect(),
            single => vec![single],
        }
    }
}

/// Display helper for [`ConfigError::Multiple`].
fn join_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Loads defaults → the TOML file at `path` (when given; it must exist) → environment
    /// overrides `DEFENDER_SOAR__SECTION__KEY`, then validates and resolves secrets.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                check_readable_file(path)?;
                Figment::from(Toml::file_exact(path))
            }
            None => Figment::new(),
        };
        Self::resolve_layers(file, ENV_PREFIX, &resolve::process_env)
    }

    /// Like [`Config::load`] with the file's content given as a string (environment
    /// overrides still apply).
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        Self::resolve_layers(
            Figment::from(Toml::string(toml)),
            ENV_PREFIX,
            &resolve::process_env,
        )
    }

    /// Validates and resolves whatever `f` provides (no layers added).
    pub fn from_figment(f: Figment) -> Result<Config, ConfigError> {
        resolve::from_figment_with(&f, &resolve::process_env)
    }

    /// The asset with this id.
    pub fn asset(&self, id: &str) -> Option<&AssetConfig> {
        self.assets.get(id)
    }

    /// The ingestion settings of the asset `id` when its ingestion is enabled.
    pub fn ingestion(&self, id: &str) -> Option<&IngestionConfig> {
        self.ingestion.get(id).filter(|i| i.enabled)
    }

    /// The request budget of the asset `id`: its `[assets.<id>.budget]`, or the defaults.
    pub fn budget(&self, id: &str) -> BudgetConfig {
        self.budgets.get(id).copied().unwrap_or_default()
    }

    /// Adds the environment layer (`prefix` + `SECTION__KEY`) on top of `file` and resolves.
    fn resolve_layers(
        file: Figment,
        prefix: &str,
        env: resolve::EnvLookup<'_>,
    ) -> Result<Config, ConfigError> {
        let figment = file.clone().merge(env_provider(&file, prefix));
        resolve::from_figment_with(&figment, env)
    }
}

/// The environment-override provider. Keys are lower-cased, except that an asset id matching
/// (ignoring case) an asset already defined in `file` takes that asset's spelling.
fn env_provider(file: &Figment, prefix: &str) -> Env {
    let known_ids: Vec<String> = match file.find_value("assets") {
        Ok(figment::value::Value::Dict(_, dict)) => dict.keys().cloned().collect(),
        _ => Vec::new(),
    };
    // `lowercase(false)` must come last: figment resets it with every `map`/`filter`.
    Env::prefixed(prefix)
        .split("__")
        .map(move |key| {
            let mut parts: Vec<String> = key
                .as_str()
                .split('.')
                .map(str::to_ascii_lowercase)
                .collect();
            if parts.len() > 1
                && parts[0] == "assets"
                && !known_ids.contains(&parts[1])
                && let Some(id) = known_ids
                    .iter()
                    .find(|id| id.eq_ignore_ascii_case(&parts[1]))
            {
                parts[1] = id.clone();
            }
            parts.join(".").into()
        })
        .lowercase(false)
}

/// Fails with a clear message when the configuration file cannot be read.
fn check_readable_file(path: &Path) -> Result<(), ConfigError> {
    let key = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => match std::fs::File::open(path) {
            Ok(_) => Ok(()),
            Err(e) => Err(ConfigError::invalid(
                key,
                format!(
                    "cannot read configuration file: {}",
                    resolve::io_problem(&e)
                ),
            )),
        },
        Ok(_) => Err(ConfigError::invalid(
            key,
            "configuration file is not a regular file",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::invalid(
            key,
            "configuration file does not exist",
        )),
        Err(e) => Err(ConfigError::invalid(
            key,
            format!(
                "cannot read configuration file: {}",
                resolve::io_problem(&e)
            ),
        )),
    }
}
