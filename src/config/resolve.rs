//! Turns the raw configuration into [`Config`]: defaults, parsing, validation, secret lookup.
//! Every problem found is collected (each naming its key) and reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::env::VarError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::Figment;
use secrecy::{ExposeSecret, SecretString};

use crate::auth::certificate::{CertificateInput, ClientCertificate};

use super::raw::{
    RawApiKey, RawAsset, RawBudget, RawConfig, RawIngestion, RawServer, RawStateBackend, RawVault,
    RawWebhook, Text, TextList,
};
use super::{
    ApiKeyConfig, AssetConfig, AssetScope, AuthKind, BudgetConfig, Config, ConfigError,
    DEFAULT_API_KEY_ENV, Environment, HuntingDisplay, IngestionConfig, LogFormat,
    ManagedIdentityConfig, RateLimit, Scope, ServerConfig, StateBackend, StateBackendConfig,
    TokenEndpoint, TriageFilters, WebhookConfig,
};
use super::{DownloadHosts, VaultConfig, WhenFull};

/// Default whole-request timeout of the host (actions may wait up to 3600 s).
pub(super) const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 3900;
/// Default request body limit: 16 MiB.
pub(super) const DEFAULT_BODY_LIMIT_BYTES: usize = 16 * 1024 * 1024;
/// Default time to send a request head, from its first byte.
pub(super) const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default time to send a whole request body.
pub(super) const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 30;
/// Default idle time of a kept-alive connection.
pub(super) const DEFAULT_KEEP_ALIVE_TIMEOUT_SECS: u64 = 60;
/// Default cap on connections served at once.
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default connect timeout of upstream calls.
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Default total timeout of one upstream call.
const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 60;
/// Longest asset id.
const MAX_ASSET_ID_LEN: usize = 64;
/// Longest domain name (tenant ids given as domains).
const MAX_DOMAIN_LEN: usize = 253;
/// Largest number of calls a budget key accepts (far above any Microsoft limit).
const MAX_BUDGET_CALLS: u32 = 100_000;
/// Longest configurable wait for a permit or a `Retry-After`.
const MAX_BUDGET_WAIT_SECS: u64 = 3600;

/// Reads an environment variable (the process environment, or a map in tests).
pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// [`EnvLookup`] over the process environment.
pub(super) fn process_env(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

/// Extracts the raw configuration from `figment` and resolves it.
pub(super) fn from_figment_with(
    figment: &Figment,
    env: EnvLookup<'_>,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = figment.extract().map_err(figment_error)?;
    resolve(raw, env)
}

/// Figment's errors (unknown keys, wrong types, TOML syntax) as [`ConfigError`]s.
fn figment_error(error: figment::Error) -> ConfigError {
    let errors = error.into_iter().map(one_figment_error).collect();
    ConfigError::from_list(errors)
        .unwrap_or_else(|| ConfigError::invalid("<configuration>", "could not be read"))
}

/// One figment error: key path (including the offending field name) and problem.
fn one_figment_error(error: figment::Error) -> ConfigError {
    use figment::error::Kind;

    let mut path = error.path.clone();
    let problem = match &error.kind {
        Kind::UnknownField(field, expected) => {
            push_field(&mut path, field);
            if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key; expected one of: {}", expected.join(", "))
            }
        }
        Kind::MissingField(field) => {
            push_field(&mut path, field);
            "required".to_owned()
        }
        Kind::DuplicateField(field) => {
            push_field(&mut path, field);
            "given more than once".to_owned()
        }
        Kind::Message(message) => without_source_lines(message),
        other => other.to_string(),
    };
    let source = error.metadata.as_ref().map(|md| match &md.source {
        Some(source) => format!("{} {source}", md.name),
        None => md.name.to_string(),
    });
    let key = if path.is_empty() {
        source
            .clone()
            .unwrap_or_else(|| "<configuration>".to_owned())
    } else {
        path.join(".")
    };
    let problem = match source {
        Some(source) if !path.is_empty() => format!("{problem} (in {source})"),
        _ => problem,
    };
    ConfigError::invalid(key, problem)
}

/// A parser message without the quoted source lines (`12 | client_secret = "..."`), which
/// could show a value that must not be printed; line and column numbers stay.
fn without_source_lines(message: &str) -> String {
    message
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            let gutter = line.trim_start_matches(|c: char| c.is_ascii_digit());
            !(gutter.starts_with(" |")
                || (digits == 0 && line.starts_with('|'))
                || line.starts_with('^'))
        })
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Appends `field` to `path` unless figment already put it there.
fn push_field(path: &mut Vec<String>, field: &str) {
    if path.last().map(String::as_str) != Some(field) {
        path.push(field.to_owned());
    }
}

/// Collects problems while resolving.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    /// Records a problem with `key`.
    fn push(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.0.push(ConfigError::invalid(key, problem));
    }

    /// `Some(value)` on success; records the problem and answers `None` otherwise.
    fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(problem) => {
                self.push(key, problem);
                None
            }
        }
    }
}

/// Validates and resolves the whole configuration.
fn resolve(raw: RawConfig, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let configured_assets: Vec<String> = raw.assets.keys().cloned().collect();
    let server = resolve_server(raw.server, env, &mut problems);
    if let Some(server) = &server {
        check_key_assets(&server.api_keys, &configured_assets, &mut problems);
    }
    let vault = resolve_vault(raw.vault, &mut problems);
    let mut assets = BTreeMap::new();
    let mut budgets = BTreeMap::new();
    let mut ingestion = BTreeMap::new();
    for (id, mut raw_asset) in raw.assets {
        let raw_budget = raw_asset.budget.take();
        let raw_ingestion = raw_asset.ingestion.take();
        let asset = resolve_asset(&id, raw_asset, env, &mut problems);
        let budget = match asset {
            Some(_) => resolve_budget(&id, raw_budget, &mut problems),
            None if is_valid_asset_id(&id) => resolve_budget(&id, raw_budget, &mut problems),
            None => None,
        };
        let ingest = match raw_ingestion {
            Some(raw) if is_valid_asset_id(&id) => resolve_ingestion(&id, raw, env, &mut problems),
            _ => Some(None),
        };
        if let (Some(asset), Some(budget), Some(ingest)) = (asset, budget, ingest) {
            assets.insert(id.clone(), asset);
            if let Some(i) = ingest {
                ingestion.insert(id.clone(), i);
            }
            budgets.insert(id, budget);
        }
    }
    match (ConfigError::from_list(problems.0), server) {
        (Some(error), _) => Err(error),
        (None, Some(server)) => Ok(Config {
            server,
            assets,
            budgets,
            ingestion,
            vault: vault.unwrap_or_default(),
        }),
        (None, None) => Err(ConfigError::invalid("server", "invalid")),
    }
}

/// `[server]`: defaults, parsing and the API key.
fn resolve_server(
    raw: RawServer,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<ServerConfig> {
    let defaults = ServerConfig::default();
    let api_key = resolve_api_key(&raw, env, problems);

    let listen = match raw.listen {
        Some(Text(v)) => problems.check("server.listen", parse_listen(&v)),
        None => Some(defaults.listen),
    };
    let public_url = match raw.public_url {
        Some(Text(v)) => problems.check("server.public_url", parse_http_url(&v)),
        None => Some(public_url_for(listen.unwrap_or(defaults.listen))),
    };
    let state_dir = match raw.state_dir {
        Some(Text(v)) if v.trim().is_empty() => {
            problems.push("server.state_dir", "must not be empty");
            None
        }
        Some(Text(v)) => Some(PathBuf::from(v)),
        None => Some(defaults.state_dir),
    };
    if raw.api_key.is_some() {
        problems.push(
            "server.api_key",
            "inline API keys are not allowed; use api_key_env (name of an environment \
             variable) or api_key_file (path of a file holding the key)",
        );
    }
    let request_timeout_secs = positive(
        problems,
        "server.request_timeout_secs",
        raw.request_timeout_secs,
        DEFAULT_REQUEST_TIMEOUT_SECS,
    );
    let body_limit_bytes = positive(
        problems,
        "server.body_limit_bytes",
        raw.body_limit_bytes,
        DEFAULT_BODY_LIMIT_BYTES,
    );
    let log_format = match raw.log_format {
        Some(Text(v)) => problems.check("server.log_format", LogFormat::from_str(&v)),
        None => Some(LogFormat::Text),
    };
    let api_keys = resolve_api_keys(raw.api_keys.unwrap_or_default(), env, problems);

    let mut callback_hosts = Vec::new();
    for (i, host) in raw
        .callback_hosts
        .map(|l| l.0)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let h = host.trim().to_ascii_lowercase();
        let valid = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if valid {
            callback_hosts.push(h);
        } else {
            problems.push(
                format!("server.callback_hosts[{i}]"),
                format!(
                    "{:?} is not a host name (letters, digits, '-' and dots)",
                    crate::actions::truncate(&host, 40)
                ),
            );
        }
    }
    let mut callback_secrets = BTreeMap::new();
    for (name, Text(var)) in raw.callback_secrets.unwrap_or_default() {
        let key = format!("server.callback_secrets.{name}");
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            problems.push(
                key,
                "a secret's name is 1 to 64 letters, digits, '_', '.' or '-'",
            );
            continue;
        }
        match signing_secret(var.trim(), env) {
            Ok(s) => {
                callback_secrets.insert(name, s);
            }
            Err(e) => problems.push(key, e),
        }
    }
    let header_read_timeout_secs = positive(
        problems,
        "server.header_read_timeout_secs",
        raw.header_read_timeout_secs,
        DEFAULT_HEADER_READ_TIMEOUT_SECS,
    );
    let body_read_timeout_secs = positive(
        problems,
        "server.body_read_timeout_secs",
        raw.body_read_timeout_secs,
        DEFAULT_BODY_READ_TIMEOUT_SECS,
    );
    let keep_alive_timeout_secs = positive(
        problems,
        "server.keep_alive_timeout_secs",
        raw.keep_alive_timeout_secs,
        DEFAULT_KEEP_ALIVE_TIMEOUT_SECS,
    );
    let max_connections = positive(
        problems,
        "server.max_connections",
        raw.max_connections,
        DEFAULT_MAX_CONNECTIONS,
    );
    let state = resolve_state_backend(raw.state.unwrap_or_default(), env, problems);

    Some(ServerConfig {
        listen: listen?,
        public_url: public_url?,
        state_dir: state_dir?,
        api_key: api_key?,
        request_timeout_secs: request_timeout_secs?,
        body_limit_bytes: body_limit_bytes?,
        log_format: log_format?,
        callback_hosts,
        callback_secrets,
        api_keys: api_keys?,
        header_read_timeout_secs: header_read_timeout_secs?,
        body_read_timeout_secs: body_read_timeout_secs?,
        keep_alive_timeout_secs: keep_alive_timeout_secs?,
        max_connections: max_connections?,
        state: state?,
    })
}

/// `[server.state]`: the backend, and for Redis its URL (from the environment), key prefix,
/// fallback share and lease.
fn resolve_state_backend(
    raw: RawStateBackend,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<StateBackendConfig> {
    let defaults = StateBackendConfig::default();
    if raw.redis_url.is_some() {
        problems.push(
            "server.state.redis_url",
            "an inline Redis URL is not allowed (it may carry a password); put it in an environment variable and name it in redis_url_env",
        );
    }
    let backend = match raw.backend.map(|t| t.0.trim().to_ascii_lowercase()) {
        None => Some(StateBackend::Files),
        Some(b) if b == "files" => Some(StateBackend::Files),
        Some(b) if b == "redis" => Some(StateBackend::Redis),
        Some(b) => {
            problems.push(
                "server.state.backend",
                format!(
                    "{:?} is not a state backend (allowed: files, redis)",
                    crate::actions::truncate(&b, 40)
                ),
            );
            None
        }
    };
    let redis_url_env = raw.redis_url_env.map(|t| t.0.trim().to_string());
    let mut redis_url = None;
    match (&backend, &redis_url_env) {
        (_, Some(var)) => match secret_from_env(var, env) {
            Ok(url) => {
                let text = url.expose_secret();
                let scheme_ok = text.starts_with("redis://") || text.starts_with("rediss://");
                if scheme_ok && url::Url::parse(text).is_ok_and(|u| u.host().is_some()) {
                    redis_url = Some(url);
                } else {
                    problems.push(
                        "server.state.redis_url_env",
                        format!("environment variable {var} does not hold a Redis URL (redis://host:port[/db] or rediss://…)"),
                    );
                }
            }
            Err(e) => problems.push("server.state.redis_url_env", e),
        },
        (Some(StateBackend::Redis), None) => problems.push(
            "server.state.redis_url_env",
            "backend = \"redis\" needs the name of the environment variable holding the Redis URL (redis://[:password@]host:port[/db] or rediss://…)",
        ),
        _ => {}
    }
    let key_prefix = match raw.key_prefix.map(|t| t.0) {
        None => Some(defaults.key_prefix),
        Some(p)
            if (1..=64).contains(&p.len())
                && p.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':')
                }) =>
        {
            Some(p)
        }
        Some(_) => {
            problems.push(
                "server.state.key_prefix",
                "must be 1 to 64 letters, digits, '_', '.', '-' or ':'",
            );
            None
        }
    };
    let fallback_share_percent = whole_number(
        problems,
        "server.state.fallback_share_percent",
        raw.fallback_share_percent,
        1..=100u8,
        defaults.fallback_share_percent,
        "per cent",
    );
    let lease_secs = whole_number(
        problems,
        "server.state.lease_secs",
        raw.lease_secs,
        2..=300u64,
        defaults.lease_secs,
        "seconds",
    );
    Some(StateBackendConfig {
        backend: backend?,
        redis_url_env,
        redis_url,
        key_prefix: key_prefix?,
        fallback_share_percent: fallback_share_percent?,
        lease_secs: lease_secs?,
    })
}

/// `[vault]`: defaults and parsing.
fn resolve_vault(raw: RawVault, problems: &mut Problems) -> Option<VaultConfig> {
    let defaults = VaultConfig::default();
    let vault_dir = match raw.vault_dir {
        Some(Text(v)) if v.trim().is_empty() => {
            problems.push("vault.vault_dir", "must not be empty");
            None
        }
        Some(Text(v)) => Some(Some(PathBuf::from(v))),
        None => Some(None),
    };
    let max_file_bytes = positive(
        problems,
        "vault.max_file_bytes",
        raw.max_file_bytes,
        defaults.max_file_bytes,
    );
    let max_total_bytes = positive(
        problems,
        "vault.max_total_bytes",
        raw.max_total_bytes,
        defaults.max_total_bytes,
    );
    let when_full = match raw.when_full {
        Some(Text(v)) => problems.check("vault.when_full", WhenFull::from_str(&v)),
        None => Some(defaults.when_full),
    };
    let max_gunzip_ratio = positive(
        problems,
        "vault.max_gunzip_ratio",
        raw.max_gunzip_ratio,
        defaults.max_gunzip_ratio,
    );
    let min_free_bytes = match raw.min_free_bytes {
        Some(Text(v)) => match v.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(
                    "vault.min_free_bytes",
                    format!("{v:?} is not a whole number of bytes (0 turns the check off)"),
                );
                None
            }
        },
        None => Some(defaults.min_free_bytes),
    };
    let retention_days = match raw.retention_days {
        Some(v) => positive(problems, "vault.retention_days", Some(v), 1u64).map(Some),
        None => Some(None),
    };
    let (max_file_bytes, max_total_bytes) = (max_file_bytes?, max_total_bytes?);
    if max_file_bytes > max_total_bytes {
        problems.push(
            "vault.max_file_bytes",
            format!("{max_file_bytes} is larger than vault.max_total_bytes ({max_total_bytes})"),
        );
        return None;
    }
    Some(VaultConfig {
        vault_dir: vault_dir?,
        max_file_bytes,
        max_total_bytes,
        when_full: when_full?,
        max_gunzip_ratio: max_gunzip_ratio?,
        min_free_bytes: min_free_bytes?,
        retention_days: retention_days?,
    })
}

/// Shortest secret of a `[[server.api_keys]]` entry.
pub(super) const MIN_API_KEY_LEN: usize = 32;

/// `[[server.api_keys]]`: every entry checked (problems name the entry by its name, or its
/// position when it has none); `None` when any problem was found.
fn resolve_api_keys(
    raw: Vec<RawApiKey>,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<Vec<ApiKeyConfig>> {
    let before = problems.0.len();
    let mut keys: Vec<ApiKeyConfig> = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let name = match &entry.name {
            Some(Text(n)) if is_valid_key_name(n) => n.clone(),
            Some(Text(n)) => {
                problems.push(
                    format!("server.api_keys[{i}].name"),
                    format!(
                        "'{}' is not a valid key name: 1 to 64 characters among A-Z a-z 0-9 _ . -",
                        crate::actions::truncate(n, 80)
                    ),
                );
                continue;
            }
            None => {
                problems.push(
                    format!("server.api_keys[{i}].name"),
                    "required: a unique name (1 to 64 characters among A-Z a-z 0-9 _ . -)",
                );
                continue;
            }
        };
        let key = format!("server.api_keys.{name}");
        if name == "default" || keys.iter().any(|k| k.name == name) {
            problems.push(
                format!("{key}.name"),
                "given more than once (names are unique; 'default' is the key of api_key_env)",
            );
            continue;
        }
        if entry.key.is_some() {
            problems.push(
                format!("{key}.key"),
                "inline API keys are not allowed; use key_env (name of an environment variable) or key_file (path of a file holding the key)",
            );
            continue;
        }
        let secret = match (&entry.key_env, &entry.key_file) {
            (Some(Text(var)), None) => {
                problems.check(&format!("{key}.key_env"), secret_from_env(var, env))
            }
            (None, Some(Text(path))) => problems.check(
                &format!("{key}.key_file"),
                secret_from_file(Path::new(path)),
            ),
            _ => {
                problems.push(
                    key.clone(),
                    "set exactly one of key_env (environment variable) and key_file (file path)",
                );
                None
            }
        };
        let Some(secret) = secret else { continue };
        if secret.expose_secret().chars().count() < MIN_API_KEY_LEN {
            problems.push(
                key.clone(),
                format!("the key is too short: at least {MIN_API_KEY_LEN} characters are required"),
            );
            continue;
        }
        if keys
            .iter()
            .any(|k| k.secret.expose_secret() == secret.expose_secret())
        {
            problems.push(key.clone(), "the same key is configured for another entry");
            continue;
        }
        let assets = match entry.assets {
            None => {
                problems.push(
                    format!("{key}.assets"),
                    "required: a list of asset ids, or \"*\" for every asset",
                );
                continue;
            }
            Some(TextList(list)) if list.len() == 1 && list[0] == "*" => AssetScope::All,
            Some(TextList(list)) if list.is_empty() || list.iter().any(|a| a == "*") => {
                problems.push(
                    format!("{key}.assets"),
                    "must be a non-empty list of asset ids, or \"*\" alone for every asset",
                );
                continue;
            }
            Some(TextList(list)) => AssetScope::Only(list.into_iter().collect()),
        };
        let mut scopes = BTreeSet::new();
        let allowed = Scope::ALL.map(Scope::as_str).join(", ");
        match entry.scopes {
            None => {
                problems.push(
                    format!("{key}.scopes"),
                    format!("required: a list among {allowed}"),
                );
                continue;
            }
            Some(TextList(list)) => {
                let mut bad = false;
                for s in &list {
                    match Scope::parse(s) {
                        Some(scope) => {
                            scopes.insert(scope);
                        }
                        None => {
                            problems.push(
                                format!("{key}.scopes"),
                                format!(
                                    "unknown scope '{}' (allowed: {allowed})",
                                    crate::actions::truncate(s, 40)
                                ),
                            );
                            bad = true;
                        }
                    }
                }
                if bad {
                    continue;
                }
                if scopes.is_empty() {
                    problems.push(
                        format!("{key}.scopes"),
                        format!("must name at least one of {allowed}"),
                    );
                    continue;
                }
            }
        }
        keys.push(ApiKeyConfig {
            name,
            secret,
            assets,
            scopes,
        });
    }
    (problems.0.len() == before).then_some(keys)
}

/// Whether `name` is a valid API key name: `[A-Za-z0-9_.-]{1,64}`.
fn is_valid_key_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Every asset a key names must be configured.
fn check_key_assets(keys: &[ApiKeyConfig], configured: &[String], problems: &mut Problems) {
    for k in keys {
        if let AssetScope::Only(ids) = &k.assets {
            for id in ids {
                if !configured.contains(id) {
                    problems.push(
                        format!("server.api_keys.{}.assets", k.name),
                        format!(
                            "unknown asset '{}' (configured: {})",
                            crate::actions::truncate(id, 64),
                            configured.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// The API key: `Some(None)` when nothing is configured and the default variable is unset.
fn resolve_api_key(
    raw: &RawServer,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<Option<SecretString>> {
    match (&raw.api_key_env, &raw.api_key_file) {
        (Some(_), Some(_)) => {
            problems.push(
                "server",
                "api_key_env and api_key_file are both set; set at most one",
            );
            None
        }
        (Some(Text(name)), None) => problems
            .check("server.api_key_env", secret_from_env(name, env))
            .map(Some),
        (None, Some(Text(path))) => problems
            .check("server.api_key_file", secret_from_file(Path::new(path)))
            .map(Some),
        (None, None) => match env(DEFAULT_API_KEY_ENV) {
            Ok(value) => Some(non_empty_secret(value)),
            Err(VarError::NotPresent) => Some(None),
            Err(VarError::NotUnicode(_)) => {
                problems.push(
                    "server.api_key_env",
                    format!("environment variable {DEFAULT_API_KEY_ENV} is not valid UTF-8"),
                );
                None
            }
        },
    }
}

/// An optional secret: `None` when empty after trimming the trailing newline.
fn non_empty_secret(value: String) -> Option<SecretString> {
    let value = trim_newline(value);
    (!value.is_empty()).then(|| SecretString::from(value))
}

/// `[assets.<id>]`: everything checked; `None` when any problem was found.
fn resolve_asset(
    id: &str,
    raw: RawAsset,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<AssetConfig> {
    if !is_valid_asset_id(id) {
        problems.push(
            format!("assets.{id:?}"),
            format!(
                "invalid asset id; ids are 1 to {MAX_ASSET_ID_LEN} characters from A-Z, a-z, \
                 0-9, '_' and '-'"
            ),
        );
        return None;
    }
    let key = |field: &str| format!("assets.{id}.{field}");
    let before = problems.0.len();

    let tenant_id = match &raw.tenant_id {
        Some(Text(v)) => problems.check(&key("tenant_id"), check_tenant_id(v)),
        None => {
            problems.push(key("tenant_id"), "required");
            None
        }
    };
    let auth = parse_or(
        problems,
        &key("auth"),
        raw.auth.clone(),
        AuthKind::default(),
    );
    let credentials = resolve_credentials(id, &raw, auth, env, problems);
    let environment = parse_or(
        problems,
        &key("environment"),
        raw.environment,
        Environment::default(),
    );
    let token_endpoint = parse_or(
        problems,
        &key("token_endpoint"),
        raw.token_endpoint,
        TokenEndpoint::default(),
    );
    let login_url = base_url(
        problems,
        &key("login_url"),
        raw.login_url,
        environment.map(Environment::login_url),
    );
    let api_url = base_url(
        problems,
        &key("api_url"),
        raw.api_url,
        environment.map(Environment::api_url),
    );
    let graph_url = base_url(
        problems,
        &key("graph_url"),
        raw.graph_url,
        environment.map(Environment::graph_url),
    );
    let connect_timeout_secs = positive(
        problems,
        &key("connect_timeout_secs"),
        raw.connect_timeout_secs,
        DEFAULT_CONNECT_TIMEOUT_SECS,
    );
    let http_timeout_secs = positive(
        problems,
        &key("http_timeout_secs"),
        raw.http_timeout_secs,
        DEFAULT_HTTP_TIMEOUT_SECS,
    );
    let download_hosts = match raw.download_hosts {
        Some(list) => problems.check(&key("download_hosts"), DownloadHosts::parse(&list.0)),
        None => environment.map(DownloadHosts::for_environment),
    };
    let disabled_actions = raw
        .disabled_actions
        .map(|list| list.0.into_iter().collect())
        .unwrap_or_default();
    let allow_offboard = match raw.allow_offboard {
        None => Some(false),
        Some(Text(v)) => match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                problems.push(
                    key("allow_offboard"),
                    format!(
                        "{:?} is not true or false",
                        crate::actions::truncate(&v, 40)
                    ),
                );
                None
            }
        },
    };
    let allowed_consenters: Vec<String> = raw
        .allowed_consenters
        .map(|list| list.0)
        .unwrap_or_default();
    for (i, who) in allowed_consenters.iter().enumerate() {
        if let Err(problem) = check_consenter(who) {
            problems.push(format!("{}[{i}]", key("allowed_consenters")), problem);
        }
    }
    let list = |l: Option<TextList>| l.map(|l| l.0).unwrap_or_default();
    let lookback_days = match raw.lookback_days {
        None => Some(None),
        Some(Text(v)) => match v.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_LOOKBACK_DAYS).contains(&n) => Some(Some(n)),
            _ => {
                problems.push(
                    key("lookback_days"),
                    format!("{v:?} is not a whole number of days from 1 to {MAX_LOOKBACK_DAYS}"),
                );
                None
            }
        },
    };
    let triage = lookback_days.map(|lookback_days| TriageFilters {
        classifications: list(raw.ignore_classifications),
        determinations: list(raw.ignore_determinations),
        severities: list(raw.ignore_severities),
        statuses: list(raw.ignore_statuses),
        service_sources: list(raw.ignore_service_sources),
        lookback_days,
    });
    let mut hunting = HuntingDisplay::default();
    for (name, given, into) in [
        (
            "hunting_summary_fields",
            raw.hunting_summary_fields,
            &mut hunting.summary_fields,
        ),
        (
            "hunting_ignore_fields",
            raw.hunting_ignore_fields,
            &mut hunting.ignore_fields,
        ),
    ] {
        for (i, field) in list(given).into_iter().enumerate() {
            let field = field.trim().to_string();
            if is_column_name(&field) {
                into.push(field);
            } else {
                problems.push(
                    format!("{}[{i}]", key(name)),
                    format!(
                        "{:?} is not a column name (letters, digits and _, at most 128, not starting with a digit)",
                        crate::actions::truncate(&field, 40)
                    ),
                );
            }
        }
    }
    if let (Some(auth), Some(tenant)) = (auth, tenant_id.as_deref())
        && auth.is_delegated()
        && MULTI_TENANT_AUTHORITIES
            .iter()
            .any(|m| m.eq_ignore_ascii_case(tenant))
    {
        problems.push(
            key("tenant_id"),
            format!(
                "{tenant:?} lets users of any tenant sign in, which an asset with delegated permissions must not allow; set the tenant's id (a GUID) or one of its verified domains"
            ),
        );
    }

    if problems.0.len() != before {
        return None;
    }
    let environment = environment?;
    let credentials = credentials?;
    Some(AssetConfig {
        id: id.to_owned(),
        tenant_id: tenant_id?,
        client_id: credentials.client_id,
        client_secret: credentials.client_secret,
        client_secret_file: credentials.client_secret_file,
        certificate: credentials.certificate,
        managed_identity: credentials.managed_identity,
        auth: auth?,
        environment,
        token_endpoint: token_endpoint?,
        login_url: login_url?,
        api_url: api_url?,
        graph_url: graph_url?,
        resource: environment.resource().to_owned(),
        disabled_actions,
        allow_offboard: allow_offboard?,
        allowed_consenters,
        triage: triage?,
        hunting,
        connect_timeout_secs: connect_timeout_secs?,
        http_timeout_secs: http_timeout_secs?,
        download_hosts: download_hosts?,
    })
}

/// A hunting column name: letters, digits and `_`, not starting with a digit, 1–128 long.
fn is_column_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What an asset authenticates with, resolved for its auth kind.
struct Credentials {
    client_id: String,
    client_secret: Option<SecretString>,
    client_secret_file: Option<PathBuf>,
    certificate: Option<ClientCertificate>,
    managed_identity: Option<ManagedIdentityConfig>,
}

/// `client_id` and the credential keys of `auth`; keys that belong to another kind are
/// refused so a half-changed configuration is noticed. `None` after recording a problem (or
/// when `auth` itself is invalid).
fn resolve_credentials(
    id: &str,
    raw: &RawAsset,
    auth: Option<AuthKind>,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<Credentials> {
    let key = |field: &str| format!("assets.{id}.{field}");
    if raw.client_secret.is_some() {
        problems.push(
            key("client_secret"),
            "inline secrets are not allowed; use client_secret_env (name of an environment \
             variable) or client_secret_file (path of a file holding the secret)",
        );
    }
    let auth = auth?;
    let before = problems.0.len();
    let refuse = |problems: &mut Problems, field: &str, given: bool, hint: &str| {
        if given {
            problems.push(
                key(field),
                format!("not used with auth = \"{}\"{hint}", auth.as_str()),
            );
        }
    };
    let secret_keys = [
        ("client_secret_env", raw.client_secret_env.is_some()),
        ("client_secret_file", raw.client_secret_file.is_some()),
    ];
    let certificate_keys = [
        ("certificate_file", raw.certificate_file.is_some()),
        ("private_key_file", raw.private_key_file.is_some()),
        (
            "private_key_password_env",
            raw.private_key_password_env.is_some(),
        ),
    ];
    let identity_keys = [
        (
            "managed_identity_client_id",
            raw.managed_identity_client_id.is_some(),
        ),
        ("managed_identity_url", raw.managed_identity_url.is_some()),
    ];
    if !auth.uses_secret() {
        for (field, given) in secret_keys {
            refuse(problems, field, given, " (it needs no client secret)");
        }
    }
    if auth != AuthKind::Certificate {
        for (field, given) in certificate_keys {
            refuse(problems, field, given, "; it is for auth = \"certificate\"");
        }
    }
    if auth != AuthKind::ManagedIdentity {
        for (field, given) in identity_keys {
            refuse(
                problems,
                field,
                given,
                "; it is for auth = \"managed_identity\"",
            );
        }
    }

    if auth == AuthKind::ManagedIdentity {
        refuse(
            problems,
            "client_id",
            raw.client_id.is_some(),
            "; for a user-assigned identity set managed_identity_client_id to its client id",
        );
        let identity_client_id = match &raw.managed_identity_client_id {
            Some(Text(v)) => problems
                .check(&key("managed_identity_client_id"), check_client_id(v))
                .map(Some),
            None => Some(None),
        };
        let url = match &raw.managed_identity_url {
            Some(Text(v)) => problems
                .check(&key("managed_identity_url"), parse_http_url(v))
                .map(|u| u.to_string()),
            None => Some(ManagedIdentityConfig::DEFAULT_URL.to_owned()),
        };
        if problems.0.len() != before {
            return None;
        }
        let identity_client_id = identity_client_id?;
        return Some(Credentials {
            client_id: identity_client_id.clone().unwrap_or_default(),
            client_secret: None,
            client_secret_file: None,
            certificate: None,
            managed_identity: Some(ManagedIdentityConfig {
                client_id: identity_client_id,
                url: url?,
            }),
        });
    }

    let client_id = match &raw.client_id {
        Some(Text(v)) => problems.check(&key("client_id"), check_client_id(v)),
        None => {
            problems.push(key("client_id"), "required");
            None
        }
    };
    if auth == AuthKind::Certificate {
        let certificate = resolve_certificate(id, raw, env, problems);
        if problems.0.len() != before {
            return None;
        }
        return Some(Credentials {
            client_id: client_id?,
            client_secret: None,
            client_secret_file: None,
            certificate: Some(certificate?),
            managed_identity: None,
        });
    }

    // `Some(None)`: no secret, which only a device code sign-in (a public client) accepts.
    let (client_secret, client_secret_file) =
        match (&raw.client_secret_env, &raw.client_secret_file) {
            (Some(_), Some(_)) => {
                problems.push(
                    format!("assets.{id}"),
                    "client_secret_env and client_secret_file are both set; set exactly one",
                );
                (None, None)
            }
            (Some(Text(name)), None) => (
                problems
                    .check(&key("client_secret_env"), secret_from_env(name, env))
                    .map(Some),
                None,
            ),
            (None, Some(Text(path))) => (
                problems
                    .check(
                        &key("client_secret_file"),
                        secret_from_file(Path::new(path)),
                    )
                    .map(Some),
                Some(PathBuf::from(path)),
            ),
            (None, None) if raw.client_secret.is_some() => (None, None),
            (None, None) if auth == AuthKind::DeviceCode => (Some(None), None),
            (None, None) => {
                problems.push(
                    format!("assets.{id}"),
                    format!(
                        "a client secret is required with auth = \"{}\": set \
                         client_secret_env or client_secret_file (or use auth = \"certificate\" \
                         or \"managed_identity\")",
                        auth.as_str()
                    ),
                );
                (None, None)
            }
        };
    if problems.0.len() != before {
        return None;
    }
    Some(Credentials {
        client_id: client_id?,
        client_secret: client_secret?,
        client_secret_file,
        certificate: None,
        managed_identity: None,
    })
}

/// `certificate_file`, `private_key_file` and `private_key_password_env`, read and checked.
fn resolve_certificate(
    id: &str,
    raw: &RawAsset,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<ClientCertificate> {
    let key = |field: &str| format!("assets.{id}.{field}");
    let path = |problems: &mut Problems, field: &str, value: &Option<Text>| match value {
        Some(Text(v)) if v.trim().is_empty() => {
            problems.push(key(field), "must be a file path");
            None
        }
        Some(Text(v)) => Some(PathBuf::from(v)),
        None => {
            problems.push(
                key(field),
                "required with auth = \"certificate\" (path of a PEM file)",
            );
            None
        }
    };
    let certificate_file = path(problems, "certificate_file", &raw.certificate_file);
    let private_key_file = path(problems, "private_key_file", &raw.private_key_file);
    let password = match &raw.private_key_password_env {
        Some(Text(name)) => problems
            .check(&key("private_key_password_env"), secret_from_env(name, env))
            .map(Some),
        None => Some(None),
    };
    let (certificate_file, private_key_file, password) =
        (certificate_file?, private_key_file?, password?);
    match ClientCertificate::load(&certificate_file, &private_key_file, password.as_ref()) {
        Ok(c) => Some(c),
        Err(e) => {
            let field = match e.input {
                CertificateInput::Certificate => "certificate_file",
                CertificateInput::PrivateKey => "private_key_file",
                CertificateInput::Password => "private_key_password_env",
            };
            problems.push(key(field), e.problem);
            None
        }
    }
}

/// `[assets.<id>.budget]`: each key a whole number within bounds, defaults from
/// [`BudgetConfig::STANDARD`]; `None` when any problem was found.
fn resolve_budget(
    id: &str,
    raw: Option<RawBudget>,
    problems: &mut Problems,
) -> Option<BudgetConfig> {
    let Some(raw) = raw else {
        return Some(BudgetConfig::default());
    };
    let standard = BudgetConfig::STANDARD;
    let key = |field: &str| format!("assets.{id}.budget.{field}");
    let mut limit = |prefix: &str,
                     per_minute: Option<Text>,
                     per_hour: Option<Text>,
                     default: RateLimit|
     -> Option<RateLimit> {
        let minute = budget_calls(problems, &key(&format!("{prefix}per_minute")), per_minute);
        let hour = budget_calls(problems, &key(&format!("{prefix}per_hour")), per_hour);
        Some(RateLimit {
            per_minute: minute?.unwrap_or(default.per_minute),
            per_hour: hour?.or(default.per_hour),
        })
    };
    let default = limit("", raw.per_minute, raw.per_hour, standard.default);
    let live_response = limit(
        "live_response_",
        raw.live_response_per_minute,
        raw.live_response_per_hour,
        standard.live_response,
    );
    let package_uri = limit(
        "package_uri_",
        raw.package_uri_per_minute,
        raw.package_uri_per_hour,
        standard.package_uri,
    );
    let hunting = limit(
        "hunting_",
        raw.hunting_per_minute,
        raw.hunting_per_hour,
        standard.hunting,
    );
    let graph = limit(
        "graph_",
        raw.graph_per_minute,
        raw.graph_per_hour,
        standard.graph,
    );
    let max_wait_secs = match raw.max_wait_secs {
        None => Some(standard.max_wait_secs),
        Some(Text(v)) => match v.trim().parse::<u64>() {
            Ok(n) if n <= MAX_BUDGET_WAIT_SECS => Some(n),
            _ => {
                problems.push(
                    key("max_wait_secs"),
                    format!(
                        "{v:?} is not a whole number of seconds from 0 to {MAX_BUDGET_WAIT_SECS}"
                    ),
                );
                None
            }
        },
    };
    Some(BudgetConfig {
        default: default?,
        live_response: live_response?,
        package_uri: package_uri?,
        hunting: hunting?,
        graph: graph?,
        max_wait_secs: max_wait_secs?,
    })
}

/// Longest `first_run_lookback` (30 days), in seconds.
const MAX_FIRST_RUN_LOOKBACK_SECS: u64 = 30 * 86_400;
/// Shortest `interval_secs`.
const MIN_INGESTION_INTERVAL_SECS: u64 = 10;
/// Largest `max_per_poll`.
const MAX_PER_POLL: u32 = 10_000;

/// `[assets.<id>.ingestion]`: `Some(Some(..))` when valid, `None` after recording problems.
fn resolve_ingestion(
    id: &str,
    raw: RawIngestion,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<Option<IngestionConfig>> {
    let key = |field: &str| format!("assets.{id}.ingestion.{field}");
    let before = problems.0.len();
    let defaults = IngestionConfig::default();
    let mut flag = |name: &str, value: Option<Text>, default: bool| match value {
        None => Some(default),
        Some(Text(v)) => match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                problems.push(
                    key(name),
                    format!(
                        "{:?} is not true or false",
                        crate::actions::truncate(&v, 40)
                    ),
                );
                None
            }
        },
    };
    let enabled = flag("enabled", raw.enabled, false);
    let include_updates = flag("include_updates", raw.include_updates, false);
    let expand_evidence = flag("expand_evidence", raw.expand_evidence, false);
    let adaptive = flag("adaptive", raw.adaptive, defaults.adaptive);
    let source = parse_or(problems, &key("source"), raw.source, defaults.source);
    let interval_secs = whole_number(
        problems,
        &key("interval_secs"),
        raw.interval_secs,
        MIN_INGESTION_INTERVAL_SECS..=86_400,
        defaults.interval_secs,
        "seconds",
    );
    let max_per_poll = whole_number(
        problems,
        &key("max_per_poll"),
        raw.max_per_poll,
        1..=MAX_PER_POLL,
        defaults.max_per_poll,
        "",
    );
    let actions_floor_percent = whole_number(
        problems,
        &key("actions_floor_percent"),
        raw.actions_floor_percent,
        10..=90,
        defaults.actions_floor_percent,
        "per cent",
    );
    let first_run_lookback_secs = match raw.first_run_lookback {
        None => Some(defaults.first_run_lookback_secs),
        Some(Text(v)) => match parse_span(&v) {
            Some(n) if (1..=MAX_FIRST_RUN_LOOKBACK_SECS).contains(&n) => Some(n),
            _ => {
                problems.push(
                    key("first_run_lookback"),
                    format!(
                        "{:?} is not a span like \"12h\" or \"7d\" (s, m, h, d) of at most 30d",
                        crate::actions::truncate(&v, 40)
                    ),
                );
                None
            }
        },
    };
    let mut filter = |name: &str, value: Option<TextList>, allowed: Option<&[&str]>| {
        let mut out = Vec::new();
        for (i, v) in value
            .map(|l| l.0)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let v = v.trim().to_string();
            let known = allowed.is_none_or(|a| a.iter().any(|x| x.eq_ignore_ascii_case(&v)));
            if v.is_empty() || v.len() > 128 || !known {
                let also = allowed
                    .map(|a| format!("; allowed: {}", a.join(", ")))
                    .unwrap_or_default();
                problems.push(
                    format!("{}[{i}]", key(name)),
                    format!(
                        "{:?} is not a valid value{also}",
                        crate::actions::truncate(&v, 40)
                    ),
                );
            } else {
                out.push(v);
            }
        }
        out
    };
    let statuses = filter(
        "statuses",
        raw.statuses,
        Some(&["new", "inProgress", "resolved", "unknown"]),
    );
    let severities = filter(
        "severities",
        raw.severities,
        Some(&["informational", "low", "medium", "high", "unknown"]),
    );
    let categories = filter("categories", raw.categories, None);
    let detection_sources = filter("detection_sources", raw.detection_sources, None);
    let service_sources = filter("service_sources", raw.service_sources, None);
    let outbox_max_events = whole_number(
        problems,
        &key("outbox_max_events"),
        raw.outbox_max_events,
        MIN_OUTBOX..=MAX_OUTBOX,
        defaults.outbox_max_events,
        "",
    );
    let mut webhooks = Vec::new();
    for (i, hook) in raw.webhooks.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{}[{i}]", key("webhooks"));
        if let Some(w) = resolve_webhook(&at, hook, env, problems) {
            if webhooks.iter().any(|o: &WebhookConfig| o.url == w.url) {
                problems.push(format!("{at}.url"), "is listed twice; each receiver once");
            } else {
                webhooks.push(w);
            }
        }
    }
    if problems.0.len() != before {
        return None;
    }
    Some(Some(IngestionConfig {
        enabled: enabled?,
        source: source?,
        interval_secs: interval_secs?,
        statuses,
        severities,
        categories,
        detection_sources,
        service_sources,
        include_updates: include_updates?,
        first_run_lookback_secs: first_run_lookback_secs?,
        max_per_poll: max_per_poll?,
        expand_evidence: expand_evidence?,
        outbox_max_events: outbox_max_events?,
        webhooks,
        adaptive: adaptive?,
        actions_floor_percent: actions_floor_percent?,
    }))
}

/// Smallest `outbox_max_events`.
const MIN_OUTBOX: usize = 100;
/// Largest `outbox_max_events`.
const MAX_OUTBOX: usize = 10_000_000;
/// Shortest signing secret (webhooks, callbacks).
const MIN_SIGNING_SECRET: usize = 16;

/// A signing secret (webhooks, callbacks) from the environment variable `name`: set and at
/// least [`MIN_SIGNING_SECRET`] characters. Errors name the variable, never the value.
fn signing_secret(name: &str, env: EnvLookup<'_>) -> Result<SecretString, String> {
    let secret = secret_from_env(name, env)?;
    if secret.expose_secret().chars().count() < MIN_SIGNING_SECRET {
        return Err(format!(
            "the secret in {name} is shorter than {MIN_SIGNING_SECRET} characters"
        ));
    }
    Ok(secret)
}

/// One webhook (`at` is its key, e.g. `assets.contoso.ingestion.webhooks[0]`).
fn resolve_webhook(
    at: &str,
    raw: RawWebhook,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> Option<WebhookConfig> {
    let before = problems.0.len();
    let url = match raw.url {
        None => {
            problems.push(format!("{at}.url"), "is required (an http or https URL)");
            None
        }
        Some(Text(v)) => match url::Url::parse(v.trim()) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() => {
                problems.push(
                    format!("{at}.url"),
                    "must be an http or https URL with a host",
                );
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                problems.push(
                    format!("{at}.url"),
                    "must not carry a user name or password; receivers check the X-Signature \
                     header instead",
                );
                None
            }
            Ok(u) => Some(u),
            Err(_) => {
                problems.push(
                    format!("{at}.url"),
                    format!("{:?} is not a URL", crate::actions::truncate(&v, 40)),
                );
                None
            }
        },
    };
    let secret = match &raw.secret_env {
        None => {
            problems.push(
                format!("{at}.secret_env"),
                "is required: the environment variable holding the signing secret",
            );
            None
        }
        Some(Text(name)) => problems.check(
            &format!("{at}.secret_env"),
            signing_secret(name.trim(), env),
        ),
    };
    let batch_size = whole_number(
        problems,
        &format!("{at}.batch_size"),
        raw.batch_size,
        1..=1000,
        DEFAULT_WEBHOOK_BATCH,
        "",
    );
    let retry_max_secs = whole_number(
        problems,
        &format!("{at}.retry_max_secs"),
        raw.retry_max_secs,
        1..=3600,
        DEFAULT_WEBHOOK_RETRY_MAX_SECS,
        "seconds",
    );
    if problems.0.len() != before {
        return None;
    }
    Some(WebhookConfig {
        url: url?,
        secret_env: raw.secret_env.map(|t| t.0.trim().to_string())?,
        secret: secret?,
        batch_size: batch_size?,
        retry_max_secs: retry_max_secs?,
    })
}

/// Default longest wait between failed webhook POSTs.
pub(crate) const DEFAULT_WEBHOOK_RETRY_MAX_SECS: u64 = 300;

/// Default most events in one webhook POST.
const DEFAULT_WEBHOOK_BATCH: usize = 100;

/// A span like `90s`, `30m`, `12h`, `7d` in seconds.
fn parse_span(text: &str) -> Option<u64> {
    let t = text.trim();
    let unit = t.chars().last()?;
    let n: u64 = t[..t.len() - unit.len_utf8()].trim().parse().ok()?;
    let mult = match unit.to_ascii_lowercase() {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A budget's number of calls: `Some(None)` when not set, `None` after recording a problem.
fn budget_calls(problems: &mut Problems, key: &str, value: Option<Text>) -> Option<Option<u32>> {
    let Some(Text(v)) = value else {
        return Some(None);
    };
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_BUDGET_CALLS).contains(&n) => Some(Some(n)),
        _ => {
            problems.push(
                key,
                format!("{v:?} is not a whole number of calls from 1 to {MAX_BUDGET_CALLS}"),
            );
            None
        }
    }
}

/// A whole number in `range` (`default` when absent), or `None` after recording a problem at
/// `key` that says what is allowed (`unit` words it, e.g. "seconds"; may be empty).
fn whole_number<T>(
    problems: &mut Problems,
    key: &str,
    value: Option<Text>,
    range: std::ops::RangeInclusive<T>,
    default: T,
    unit: &str,
) -> Option<T>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let Some(Text(v)) = value else {
        return Some(default);
    };
    match v.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" of {unit}")
            };
            problems.push(
                key,
                format!(
                    "{:?} is not a whole number{unit} from {} to {}",
                    crate::actions::truncate(&v, 40),
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

/// Parses an enum-like value with its `FromStr` (whose error lists the allowed values).
fn parse_or<T: FromStr<Err = String>>(
    problems: &mut Problems,
    key: &str,
    value: Option<Text>,
    default: T,
) -> Option<T> {
    match value {
        Some(Text(v)) => problems.check(key, v.parse()),
        None => Some(default),
    }
}

/// A positive integer with a default.
fn positive<T>(problems: &mut Problems, key: &str, value: Option<Text>, default: T) -> Option<T>
where
    T: FromStr + PartialOrd + From<u8>,
{
    let Some(Text(v)) = value else {
        return Some(default);
    };
    match v.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Some(n),
        _ => {
            problems.push(key, format!("{v:?} is not a positive whole number"));
            None
        }
    }
}

/// An override URL checked and stripped of its trailing slash, or the environment's default.
fn base_url(
    problems: &mut Problems,
    key: &str,
    value: Option<Text>,
    default: Option<&'static str>,
) -> Option<String> {
    match value {
        Some(Text(v)) => problems
            .check(key, parse_http_url(&v))
            .map(|url| url.as_str().trim_end_matches('/').to_owned()),
        None => default.map(str::to_owned),
    }
}

/// `ip:port`.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        format!("{value:?} is not a socket address; expected an IP address and port such as 127.0.0.1:8080")
    })
}

/// An absolute http(s) URL with a host and neither credentials, query nor fragment.
fn parse_http_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value.trim()).map_err(|e| {
        format!("{value:?} is not a valid URL ({e}); expected http(s)://host[:port][/path]")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{value:?} is not an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{value:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not contain credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{value:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// The default public URL for a listen address (unspecified addresses become loopback).
pub(super) fn public_url_for(listen: SocketAddr) -> url::Url {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let text = format!("http://{}", SocketAddr::new(ip, listen.port()));
    // A socket address always forms a valid URL authority; the fallback is never used.
    url::Url::parse(&text).unwrap_or_else(|_| default_public_url())
}

/// `http://127.0.0.1:8080`.
fn default_public_url() -> url::Url {
    url::Url::parse("http://127.0.0.1:8080").expect("literal URL is valid")
}

/// `[A-Za-z0-9_-]{1,64}`.
fn is_valid_asset_id(id: &str) -> bool {
    (1..=MAX_ASSET_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Hyphenated GUID: 8-4-4-4-12 hex digits.
fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Domain name: labels of letters, digits and '-', separated by '.'.
fn is_domain(value: &str) -> bool {
    value.len() <= MAX_DOMAIN_LEN
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Tenant: a GUID or a domain name.
fn check_tenant_id(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if is_guid(value) || is_domain(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is neither a GUID nor a domain name (letters, digits, '-' and '.')"
        ))
    }
}

/// Longest `lookback_days` (ten years).
const MAX_LOOKBACK_DAYS: u32 = 3650;

/// Tenant values of Entra's multi-tenant authorities.
const MULTI_TENANT_AUTHORITIES: [&str; 3] = ["common", "organizations", "consumers"];

/// An `allowed_consenters` entry: a user principal name or an object id (GUID).
fn check_consenter(value: &str) -> Result<(), String> {
    let value = value.trim();
    let upn = value.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && is_domain(domain) && !value.contains(char::is_whitespace)
    });
    if upn || is_guid(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is neither a user principal name (user@domain) nor an object id (a GUID)"
        ))
    }
}

/// Client id: a GUID.
fn check_client_id(value: &str) -> Result<String, String> {
    if is_guid(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        ))
    }
}

/// Removes trailing `\n` / `\r\n` (files usually end with one).
fn trim_newline(mut value: String) -> String {
    let len = value.trim_end_matches(['\n', '\r']).len();
    value.truncate(len);
    value
}

/// A secret from the environment variable `name` (non-empty).
fn secret_from_env(name: &str, env: EnvLookup<'_>) -> Result<SecretString, String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(format!("{name:?} is not a valid environment variable name"));
    }
    match env(name) {
        Ok(value) => {
            non_empty_secret(value).ok_or_else(|| format!("environment variable {name} is empty"))
        }
        Err(VarError::NotPresent) => Err(format!("environment variable {name} is not set")),
        Err(VarError::NotUnicode(_)) => {
            Err(format!("environment variable {name} is not valid UTF-8"))
        }
    }
}

/// A secret from the file at `path` (trailing newline removed, non-empty). Errors mention the
/// path, never the content.
fn secret_from_file(path: &Path) -> Result<SecretString, String> {
    if path.as_os_str().is_empty() {
        return Err("must be a file path".to_owned());
    }
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Ok(value) => non_empty_secret(value).ok_or_else(|| format!("file {shown} is empty")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("file {shown} does not exist"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(format!("file {shown} is not valid UTF-8"))
        }
        Err(e) => Err(format!("cannot read file {shown}: {}", io_problem(&e))),
    }
}

/// An I/O error's kind in words (no content, no OS noise beyond the kind).
pub(super) fn io_problem(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => error.to_string(),
    }
}
