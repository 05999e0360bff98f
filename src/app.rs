//! Shared application state: configuration, the state store, the assets with their token
//! managers and clients, the API key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use secrecy::SecretString;

use crate::actions;
use crate::auth::TokenManager;
use crate::config::{AssetConfig, Config, ServerConfig};
use crate::defender::{DefenderClient, RequestBudget, TenantBudgets};
use crate::state::StateStore;

/// One configured tenant with its token manager and API client.
pub struct Asset {
    /// Its configuration.
    pub config: AssetConfig,
    /// Token manager of the Defender API (every auth kind), backed by the asset's state file;
    /// consents and device code sign-ins go through it.
    pub tokens: Arc<TokenManager>,
    /// Defender API client using those tokens.
    pub defender: DefenderClient,
    /// Token manager of Microsoft Graph (same credentials, same state file).
    pub graph_tokens: Arc<TokenManager>,
    /// Microsoft Graph client (base `graph_url`) using the Graph tokens.
    pub graph: DefenderClient,
    /// The machine actions it follows (shared pollers) and its recent final ones.
    pub tracker: actions::waiting::Tracker,
    /// One lock per investigation package being downloaded.
    pub package_locks: KeyedLocks,
    /// One lock per `Idempotency-Key` being looked up, submitted and recorded.
    pub idempotency_locks: KeyedLocks,
}

/// Async locks by key, created on first use and forgotten when nobody holds them: concurrent
/// work on the same key (a download, an idempotency key) runs one at a time.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// The lock of `key` (the same one for every caller while any holds it).
    pub fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }
}

impl Asset {
    /// Builds an asset's token manager (over `store`) and API clients, drawing on `budget`
    /// (its registration's request budget, [`TenantBudgets::for_asset`]), from its
    /// configuration.
    pub fn build(
        config: AssetConfig,
        server: &ServerConfig,
        budget: RequestBudget,
        store: StateStore,
    ) -> Result<Asset, String> {
        let http = DefenderClient::http_client(
            Duration::from_secs(config.connect_timeout_secs),
            Duration::from_secs(config.http_timeout_secs),
        );
        let tokens = Arc::new(
            TokenManager::new(&config, server, store.clone(), http.clone())
                .map_err(|e| e.to_string())?,
        );
        let graph_tokens = Arc::new(
            TokenManager::for_graph(&config, server, store, http.clone())
                .map_err(|e| e.to_string())?,
        );
        // One budget for both clients (and every asset of the registration): each family
        // has its own windows.
        let defender = DefenderClient::new(http.clone(), &config.api_url, tokens.clone())
            .with_request_budget(budget.clone());
        let graph = DefenderClient::new(http, &config.graph_url, graph_tokens.clone())
            .with_request_budget(budget);
        Ok(Asset {
            config,
            tokens,
            defender,
            graph_tokens,
            graph,
            tracker: actions::waiting::Tracker::default(),
            package_locks: KeyedLocks::default(),
            idempotency_locks: KeyedLocks::default(),
        })
    }

    /// The token managers of every audience.
    pub fn token_managers(&self) -> [&Arc<TokenManager>; 2] {
        [&self.tokens, &self.graph_tokens]
    }

    /// Whether the asset refuses this action.
    pub fn is_disabled(&self, action: &str) -> bool {
        self.config.disabled_actions.contains(action)
    }
}

/// Everything a request handler needs.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// Per-asset state files (tokens, consent sessions, idempotency, checkpoints).
    pub state: StateStore,
    /// Assets by id.
    pub assets: BTreeMap<String, Arc<Asset>>,
    /// The API key callers must present.
    pub api_key: SecretString,
    /// Every usable API key (`default`, from `api_key`, and `[[server.api_keys]]`) and the
    /// table of addresses failing to authenticate.
    pub keys: crate::http::api_key::KeyRing,
    /// The audit trail (`<state_dir>/audit`).
    pub audit: crate::audit::AuditLog,
    /// Summary keys handlers set without their definition declaring them (recorded by
    /// [`actions::invoke`] in debug builds only).
    pub summary_drift: actions::consistency::SummaryDrift,
    /// Alert ingestion of the assets that enable it, by asset id.
    pub ingestors: BTreeMap<String, Arc<crate::ingest::poller::Ingestor>>,
    /// Where completion callbacks stand.
    pub callbacks: crate::callbacks::Registry,
    /// When the application was built (uptime).
    pub started: std::time::Instant,
    /// The admin console's signed-in browsers.
    pub console: crate::http::admin::session::Sessions,
    /// The shared Redis when `[server.state] backend = "redis"`.
    pub redis: Option<Arc<crate::redis_link::RedisLink>>,
    /// This process's random id (its presence in Redis).
    pub instance_id: String,
    /// One request budget per app registration (tenant, client id), shared by its assets
    /// and, on Redis, by every host.
    pub budgets: TenantBudgets,
    /// The HTTP client webhooks and completion callbacks are POSTed with (pooled connections).
    pub deliveries: reqwest::Client,
}

impl App {
    /// Builds the application (an empty `api_key` configures no `default` key: only the
    /// `[[server.api_keys]]` open the host); fails with a clear message on a configuration the host cannot
    /// use (an unknown action in `disabled_actions`, an unusable token URL, a state directory
    /// or state key that cannot be used).
    pub fn build(config: Config, api_key: SecretString) -> Result<Arc<App>, String> {
        let _ = crate::telemetry::metrics();
        let state = StateStore::open(&config.server.state_dir)
            .map_err(|e| format!("cannot open the state store: {e}"))?;
        // The Redis URL may be configured for migrate-state alone: only the redis backend uses it.
        let redis = if config.server.state.backend == crate::config::StateBackend::Redis {
            crate::redis_link::RedisLink::of(&config.server.state)?.map(Arc::new)
        } else {
            None
        };
        let state = match &redis {
            Some(link) => state.with_redis(link.clone()),
            None => state,
        };
        let budgets = TenantBudgets::build(&config, redis.as_ref());
        let mut assets = BTreeMap::new();
        for (id, asset) in &config.assets {
            for action in &asset.disabled_actions {
                if actions::definition::resolve(action).is_none() {
                    let known: Vec<&str> = actions::definition::definitions()
                        .iter()
                        .map(|d| d.id.as_str())
                        .collect();
                    return Err(format!(
                        "configuration: assets.{id}.disabled_actions: unknown action '{action}' (known: {})",
                        known.join(", ")
                    ));
                }
            }
            assets.insert(
                id.clone(),
                Arc::new(Asset::build(
                    asset.clone(),
                    &config.server,
                    budgets
                        .for_asset(id)
                        .ok_or_else(|| format!("assets.{id}: no request budget"))?,
                    state.clone(),
                )?),
            );
        }
        let instance_id = crate::http::admin::session::random_token()[..12].to_string();
        // How this host names itself in leases other hosts read.
        let holder = format!("{} {instance_id}", config.server.public_url);
        if let Some(link) = &redis {
            for (id, asset) in &assets {
                asset.tracker.share(link.clone(), holder.clone(), id);
            }
        }
        let mut ingestors = BTreeMap::new();
        for (id, asset) in &assets {
            if let Some(settings) = config.ingestion(id) {
                let ingestor = match &redis {
                    Some(link) => crate::ingest::poller::Ingestor::shared(
                        asset.clone(),
                        settings.clone(),
                        state.clone(),
                        link.clone(),
                        holder.clone(),
                        std::time::Duration::from_secs(config.server.state.lease_secs),
                    ),
                    None => crate::ingest::poller::Ingestor::open(
                        asset.clone(),
                        settings.clone(),
                        state.clone(),
                    )
                    .map_err(|e| format!("assets.{id}.ingestion: {e}"))?,
                };
                ingestors.insert(id.clone(), Arc::new(ingestor));
            }
        }
        let keys = crate::http::api_key::KeyRing::new(&api_key, &config.server.api_keys);
        let audit = crate::audit::AuditLog::new(config.server.state_dir.join("audit"));
        Ok(Arc::new(App {
            config,
            state,
            assets,
            api_key,
            keys,
            audit,
            summary_drift: Default::default(),
            ingestors,
            callbacks: Default::default(),
            started: std::time::Instant::now(),
            console: Default::default(),
            redis,
            instance_id,
            budgets,
            deliveries: crate::ingest::webhook::delivery_client(),
        }))
    }

    /// An asset by id.
    pub fn asset(&self, id: &str) -> Option<Arc<Asset>> {
        self.assets.get(id).cloned()
    }
}
