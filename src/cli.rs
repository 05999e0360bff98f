//! The command line: `serve`, `demo`, `invoke`, `consent`, `actions`, `manifest` (design §2).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};
use rand::RngCore;
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::actions::{self, Invocation};
use crate::app::App;
use crate::auth::DeviceCodeOutcome;
use crate::config::{
    AssetConfig, AuthKind, Config, Environment, IngestionConfig, IngestionSource, LogFormat,
    TokenEndpoint,
};

/// SOAR actions for Microsoft Defender for Endpoint over one REST host.
#[derive(Parser)]
#[command(name = "defender-soar", version)]
struct Cli {
    /// Log format (overrides server.log_format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host (production).
    Serve {
        /// Configuration file (TOML); also DEFENDER_SOAR_CONFIG.
        #[arg(long, env = "DEFENDER_SOAR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the host and the embedded simulator with a `demo` asset.
    Demo {
        /// Address of the host.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run one action in-process and print its envelope.
    Invoke {
        /// Asset id (`demo` runs against the embedded simulator when no config is given).
        asset: String,
        /// Action id.
        action: String,
        /// A parameter as key=value (repeatable; numbers and booleans are recognised).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// A JSON file holding the parameters object.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Configuration file (TOML); also DEFENDER_SOAR_CONFIG.
        #[arg(long, env = "DEFENDER_SOAR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Connect a device code asset: shows a code to enter on another device's browser and
    /// waits for the sign-in (Ctrl-C aborts).
    Consent {
        /// Asset id (an asset with auth = "device_code").
        asset: String,
        /// Configuration file (TOML); also DEFENDER_SOAR_CONFIG.
        #[arg(long, env = "DEFENDER_SOAR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Re-encrypt every state file under a new state key (stop other processes first). The new
    /// key comes from DEFENDER_SOAR_NEW_STATE_KEY (base64 of 32 bytes) or is generated.
    RotateStateKey {
        /// Configuration file (TOML); also DEFENDER_SOAR_CONFIG.
        #[arg(long, env = "DEFENDER_SOAR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Copy every asset's state between the state files and Redis (`--to redis` or
    /// `--to files`), verify each copy, and leave the source untouched. Stop the hosts first.
    MigrateState {
        /// Where the state goes.
        #[arg(long, value_enum)]
        to: MigrateTarget,
        /// Configuration file (TOML); also DEFENDER_SOAR_CONFIG. `[server.state]` must name
        /// the Redis (redis_url_env) whichever the direction.
        #[arg(long, env = "DEFENDER_SOAR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The audit trail: `audit verify` checks every line's link to the previous one.
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// List actions.
    Actions,
    /// Print the manifest generated from actions/.
    Manifest,
}

/// Where `migrate-state` copies to.
#[derive(Clone, Copy, ValueEnum)]
enum MigrateTarget {
    /// From the state files into Redis.
    Redis,
    /// From Redis into the state files.
    Files,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walks every file of `<state_dir>/audit` in date order: exits 0 printing how many lines
    /// verified, or 1 naming the file and line of the first broken link.
    Verify {
        /// Configuration file (TOML); also DEFENDER_SOAR_CONFIG.
        #[arg(long, env = "DEFENDER_SOAR_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// `audit verify`.
fn audit_verify(config: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = config.server.state_dir.join("audit");
    match crate::audit::verify(&dir) {
        Ok(n) => {
            println!("audit trail {}: {n} lines verified", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("defender-soar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the CLI.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_override = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    match cli.command {
        Command::Actions => {
            for d in actions::definitions() {
                println!("{:<32} {:<12} {}", d.id, d.action_type, d.description);
            }
            ExitCode::SUCCESS
        }
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => audit_verify(config),
        Command::Manifest => {
            print!("{}", actions::manifest::manifest_pretty());
            ExitCode::SUCCESS
        }
        Command::Serve { config } => run_async(async move {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("defender-soar: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::telemetry::init_logging(log_override.unwrap_or(config.server.log_format));
            serve(config).await
        }),
        Command::RotateStateKey { config } => run_async(async move {
            crate::telemetry::init_logging(log_override.unwrap_or(LogFormat::Text));
            rotate_state_key(config).await
        }),
        Command::MigrateState { to, config } => run_async(async move {
            crate::telemetry::init_logging(log_override.unwrap_or(LogFormat::Text));
            migrate_state(to, config).await
        }),
        Command::Consent { asset, config } => run_async(async move {
            crate::telemetry::init_logging(log_override.unwrap_or(LogFormat::Text));
            consent(asset, config).await
        }),
        Command::Demo { listen } => run_async(async move {
            crate::telemetry::init_logging(log_override.unwrap_or(LogFormat::Text));
            demo(listen).await
        }),
        Command::Invoke {
            asset,
            action,
            params,
            json,
            config,
        } => run_async(async move {
            crate::telemetry::init_logging(log_override.unwrap_or(LogFormat::Text));
            invoke(asset, action, params, json, config).await
        }),
    }
}

fn run_async(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("defender-soar: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    let listen = config.server.listen;
    // Without api_key_env/api_key_file, the [[server.api_keys]] alone open the host (an
    // empty default key is no key).
    let key = match config.server.api_key.clone() {
        Some(k) => k,
        None if !config.server.api_keys.is_empty() => SecretString::from(String::new()),
        None => {
            eprintln!(
                "defender-soar: configuration: server.api_key_env: no API key (set DEFENDER_SOAR_API_KEY, server.api_key_file or [[server.api_keys]])"
            );
            return ExitCode::from(2);
        }
    };
    let app = match App::build(config, key) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("defender-soar: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%listen, assets = app.assets.len(), "defender-soar serving");
    match crate::http::serve(app, listener, crate::http::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("defender-soar: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `consent ASSET`: a device code sign-in in this process; the tokens land in the asset's
/// state file, where a running host finds them.
async fn consent(asset_id: String, config: Option<PathBuf>) -> ExitCode {
    let app = match in_process_app(Config::load(config.as_deref()).map_err(|e| e.to_string())) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let Some(asset) = app.asset(&asset_id) else {
        let known: Vec<&str> = app.assets.keys().map(String::as_str).collect();
        eprintln!(
            "defender-soar: no asset '{asset_id}' is configured (configured: {})",
            known.join(", ")
        );
        return ExitCode::from(2);
    };
    let tokens = asset.tokens.clone();
    match asset.config.auth {
        AuthKind::DeviceCode => {}
        AuthKind::AuthorizationCode => {
            eprintln!(
                "defender-soar: asset '{asset_id}' uses interactive consent (auth = \"authorization_code\"): \
                 with the host running, {}. For a sign-in from another device, set \
                 auth = \"device_code\" for this asset.",
                tokens.how_to_consent()
            );
            return ExitCode::from(2);
        }
        other => {
            eprintln!(
                "defender-soar: asset '{asset_id}' uses auth = \"{}\" and needs no sign-in",
                other.as_str()
            );
            return ExitCode::from(2);
        }
    }
    let start = match tokens.start_device_code().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", start.message);
    eprintln!(
        "… waiting up to {} s for the sign-in (code {}, Ctrl-C aborts)",
        start.expires_in, start.user_code
    );
    let mut outcome = tokens.device_code_outcome();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(start.expires_in);
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(30));
    ticker.tick().await;
    let ended = loop {
        tokio::select! {
            r = outcome.wait_for(|o| !matches!(o, DeviceCodeOutcome::Pending { .. })) => {
                break r.map(|o| o.clone()).ok();
            }
            _ = ticker.tick() => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                eprintln!("… still waiting ({} s left)", left.as_secs());
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("defender-soar: aborted; nothing was stored");
                return ExitCode::from(130);
            }
        }
    };
    match ended {
        Some(DeviceCodeOutcome::Connected { user, oid }) => {
            let who = match (user, oid) {
                (Some(u), Some(o)) => format!("{u} (object id {o})"),
                (Some(u), None) => u,
                (None, Some(o)) => format!("object id {o}"),
                (None, None) => "an unnamed account".to_string(),
            };
            println!("asset '{asset_id}' connected: signed in as {who}");
            ExitCode::SUCCESS
        }
        Some(DeviceCodeOutcome::Failed { message }) => {
            eprintln!("defender-soar: {message}");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("defender-soar: the sign-in ended without an outcome; nothing was stored");
            ExitCode::FAILURE
        }
    }
}

/// `migrate-state`: copies every asset of the source store into the target, reads each back
/// and compares; the source is only read. Exits 0 when every asset verified, 1 otherwise.
async fn migrate_state(to: MigrateTarget, config: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::from(2);
        }
    };
    let link = match crate::redis_link::RedisLink::of(&config.server.state) {
        Ok(Some(link)) => std::sync::Arc::new(link),
        Ok(None) => {
            eprintln!(
                "defender-soar: migrate-state needs the Redis in [server.state]: set redis_url_env (and the variable it names)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::from(2);
        }
    };
    let files = match crate::state::StateStore::open(&config.server.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::from(2);
        }
    };
    let redis = files.with_redis(link.clone());
    let (source, target) = match to {
        MigrateTarget::Redis => (&files, &redis),
        MigrateTarget::Files => (&redis, &files),
    };
    let assets = match source.assets().await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("defender-soar: cannot list the source's assets: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0usize;
    for asset in &assets {
        let outcome = match source.load(asset).await {
            Ok(state) => target.replace_and_verify(asset, state).await,
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(true) => migrate_journal(to, &config.server.state_dir, &link, asset)
                .await
                .map(|journal| {
                    if let Some(n) = journal {
                        eprintln!(
                            "defender-soar: {asset}: alert journal ({n} events) copied and verified"
                        );
                    }
                    true
                })
                .map_err(|e| crate::state::StateError::Backend {
                    asset: asset.clone(),
                    op: "migrate the alert journal of",
                    message: e,
                }),
            other => other,
        };
        match outcome {
            Ok(true) => eprintln!("defender-soar: {asset}: copied and verified"),
            Ok(false) => {
                failed += 1;
                eprintln!("defender-soar: {asset}: the copy reads back different");
            }
            Err(e) => {
                failed += 1;
                eprintln!("defender-soar: {asset}: {e}");
            }
        }
    }
    let (from, into) = (source.backend_name(), target.backend_name());
    if failed == 0 {
        println!(
            "{} asset(s) copied from {from} to {into} and verified; the {from} copy is unchanged",
            assets.len()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "defender-soar: {failed} of {} asset(s) not migrated; the {from} copy is unchanged",
            assets.len()
        );
        ExitCode::FAILURE
    }
}

/// Copies an asset's alert journal (the feed and the webhooks' outbox) the way `to` says,
/// keeping its sequence numbers so the webhook cursors in the asset's state stay right; reads
/// it back and compares. `Ok(None)` when the source has none.
async fn migrate_journal(
    to: MigrateTarget,
    state_dir: &std::path::Path,
    link: &std::sync::Arc<crate::redis_link::RedisLink>,
    asset: &str,
) -> Result<Option<usize>, String> {
    use crate::ingest::journal::{Journal, journal_path};
    const ALL: usize = usize::MAX / 2;
    let path = journal_path(state_dir, asset);
    let redis = crate::ingest::redis_journal::RedisJournal::new(link.clone(), asset, ALL);
    let (copy, back) = match to {
        MigrateTarget::Redis => {
            if !path.exists() {
                return Ok(None);
            }
            let copy = Journal::open(&path, ALL)
                .and_then(|j| j.export())
                .map_err(|e| e.to_string())?;
            redis.import(&copy).await.map_err(|e| e.to_string())?;
            let back = redis.export().await.map_err(|e| e.to_string())?;
            (copy, back)
        }
        MigrateTarget::Files => {
            let copy = redis.export().await.map_err(|e| e.to_string())?;
            if copy.records.is_empty() && copy.base == 0 && copy.alert_ids.is_empty() {
                return Ok(None);
            }
            Journal::import(&path, &copy).map_err(|e| e.to_string())?;
            let back = Journal::open(&path, ALL)
                .and_then(|j| j.export())
                .map_err(|e| e.to_string())?;
            (copy, back)
        }
    };
    if back.same_as(&copy) {
        Ok(Some(copy.records.len()))
    } else {
        Err("the copy of the alert journal reads back different".into())
    }
}

/// Environment variable holding the new key for `rotate-state-key`.
const NEW_STATE_KEY_ENV: &str = "DEFENDER_SOAR_NEW_STATE_KEY";

async fn rotate_state_key(config: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match crate::state::StateStore::open(&config.server.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::from(2);
        }
    };
    let (new_key, generated) = match std::env::var_os(NEW_STATE_KEY_ENV) {
        Some(v) => match crate::state::key_from_env_value(&v) {
            Ok(k) => (k, false),
            Err(_) => {
                eprintln!("defender-soar: {NEW_STATE_KEY_ENV}: must be base64 of 32 bytes");
                return ExitCode::from(2);
            }
        },
        None => {
            let mut k = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            (k, true)
        }
    };
    match store.rotate_key(new_key).await {
        Ok(n) => {
            eprintln!(
                "defender-soar: {n} state file(s) in {} re-encrypted under the new key",
                config.server.state_dir.display()
            );
            match store.key_source() {
                crate::state::KeySource::File(path) => {
                    eprintln!("defender-soar: the new key is in {}", path.display());
                }
                _ if generated => {
                    eprintln!(
                        "defender-soar: set {} to this new key before the next start:",
                        crate::state::STATE_KEY_ENV
                    );
                    println!(
                        "{}",
                        base64::engine::general_purpose::STANDARD.encode(new_key)
                    );
                }
                _ => eprintln!(
                    "defender-soar: set {} to the value of {NEW_STATE_KEY_ENV} before the next start",
                    crate::state::STATE_KEY_ENV
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("defender-soar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo asset's configuration, wired to a simulator at `sim_base`.
pub fn demo_asset(sim: &defender_sim::Scenario, sim_base: &str) -> Option<AssetConfig> {
    let tenant = sim.first_tenant()?;
    let app = tenant.apps.first()?;
    let env = Environment::Public;
    Some(AssetConfig {
        id: "demo".to_string(),
        tenant_id: tenant.id.clone(),
        client_id: app.client_id.clone(),
        client_secret: Some(SecretString::from(app.secret.clone())),
        client_secret_file: None,
        certificate: None,
        managed_identity: None,
        auth: AuthKind::ClientCredentials,
        environment: env,
        token_endpoint: TokenEndpoint::V2,
        login_url: sim_base.to_string(),
        api_url: sim_base.to_string(),
        graph_url: sim_base.to_string(),
        resource: env.resource().to_string(),
        disabled_actions: BTreeSet::new(),
        allow_offboard: false,
        allowed_consenters: Vec::new(),
        triage: Default::default(),
        hunting: Default::default(),
        connect_timeout_secs: 10,
        http_timeout_secs: 60,
        download_hosts: crate::config::DownloadHosts::parse(&[
            "http://127.0.0.1".to_string(),
            "http://localhost".to_string(),
        ])
        .unwrap_or_else(|_| crate::config::DownloadHosts::for_environment(env)),
    })
}

/// A configuration with the demo asset on a simulator (defaults for everything else).
pub fn demo_config(listen: SocketAddr, sim_base: &str) -> Result<Config, String> {
    let mut config = Config::from_toml_str("").map_err(|e| e.to_string())?;
    config.server.listen = listen;
    config.server.public_url = format!("http://{listen}")
        .parse()
        .map_err(|e| format!("public url: {e}"))?;
    let scenario = defender_sim::Scenario::default_scenario();
    let asset = demo_asset(&scenario, sim_base).ok_or("the default scenario has no app")?;
    config.ingestion.insert(asset.id.clone(), demo_ingestion());
    config.assets.insert(asset.id.clone(), asset);
    Ok(config)
}

/// Alert ingestion of the demo asset: Microsoft Graph's alerts every 10 s (the shortest
/// interval allowed), the first poll reaching back a day.
pub fn demo_ingestion() -> IngestionConfig {
    IngestionConfig {
        enabled: true,
        source: IngestionSource::Graph,
        interval_secs: 10,
        ..IngestionConfig::default()
    }
}

/// The application for a command that runs in this process (`invoke`, `consent`): no HTTP
/// listener, so a random API key. A bad configuration is printed and exits 2.
fn in_process_app(config: Result<Config, String>) -> Result<Arc<App>, ExitCode> {
    let built = config
        .and_then(|c| App::build(c, SecretString::from(random_key())).map_err(|e| e.to_string()));
    built.map_err(|e| {
        eprintln!("defender-soar: {e}");
        ExitCode::from(2)
    })
}

fn random_key() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn demo(listen: SocketAddr) -> ExitCode {
    let sim = match defender_sim::start(
        "127.0.0.1:0"
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
        defender_sim::Scenario::default_scenario(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("defender-soar: cannot start the simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match demo_config(listen, &sim.base_url()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key = std::env::var("DEFENDER_SOAR_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(random_key);
    let app = match App::build(config, SecretString::from(key.clone())) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("defender-soar: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("defender-soar: cannot listen on {listen}: {e} (try --listen 127.0.0.1:0)");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    println!("{}", demo_banner(addr, &key, &sim.base_url()));
    let result = crate::http::serve(app, listener, crate::http::shutdown_signal()).await;
    sim.stop().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("defender-soar: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `demo` prints: where it listens, the key, and curl examples that work when pasted.
pub fn demo_banner(addr: SocketAddr, key: &str, sim: &str) -> String {
    let base = format!("http://{addr}");
    format!(
        "defender-soar demo\n\
         \n  host:      {base}\n  simulator: {sim} (Entra ID + Defender for Endpoint, default scenario)\n  asset:     demo\n  API key:   {key}\n  console:   {base}/admin (open it in a browser and sign in with the API key)\n\
         \nTry:\n\
         \n  export KEY='{key}'\n\
         \n  # check credentials and API access\n  curl -s -X POST {base}/assets/demo/actions/test_connectivity \\\n    -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' -d '{{\"parameters\":{{}}}}'; echo\n\
         \n  # list Windows 11 devices\n  curl -s -X POST {base}/assets/demo/actions/list_devices \\\n    -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n    -d '{{\"parameters\":{{\"input_type\":\"All\",\"query\":\"osPlatform eq '\"'\"'Windows11'\"'\"'\",\"limit\":10}}}}'; echo\n\
         \n  # alert triage: new high-severity alerts, the first one with its evidence, then assign and classify it\n  ALERTS=$(curl -s -X POST {base}/assets/demo/actions/list_alerts \\\n    -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n    -d '{{\"parameters\":{{\"status\":\"New\",\"severity\":\"High\",\"limit\":5}}}}'); echo \"$ALERTS\"\n  ALERT=$(echo \"$ALERTS\" | grep -o '\"id\":\"da[^\"]*\"' | head -n 1 | cut -d'\"' -f4)\n  curl -s -X POST {base}/assets/demo/actions/get_alert \\\n    -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n    -d '{{\"parameters\":{{\"alert_id\":\"'\"$ALERT\"'\",\"expand_evidence\":true}}}}'; echo\n  curl -s -X POST {base}/assets/demo/actions/update_alert \\\n    -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n    -d '{{\"parameters\":{{\"alert_id\":\"'\"$ALERT\"'\",\"status\":\"InProgress\",\"assigned_to\":\"analyst@contoso.com\",\"classification\":\"TruePositive\",\"determination\":\"Malware\",\"comment\":\"Triaged from the playbook\"}}}}'; echo\n\
         \n  # hunting: every device that reached a phishing domain (a template), then a KQL query of your own\n  curl -s -X POST {base}/assets/demo/actions/run_hunting_template \\\n    -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n    -d '{{\"parameters\":{{\"template\":\"devices_reached_domain\",\"entity\":\"login-microsoft-verify.example\",\"timespan\":\"P30D\"}}}}'; echo\n  curl -s -X POST {base}/assets/demo/actions/run_query \\\n    -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n    -d '{{\"parameters\":{{\"query\":\"DeviceProcessEvents | where ProcessCommandLine contains \\\"wevtutil\\\" | project Timestamp, DeviceName, ProcessCommandLine | take 5\"}}}}'; echo\n\
         \n  # the actions and the manifest\n  curl -s {base}/actions -H \"Authorization: Bearer $KEY\"; echo\n  curl -s {base}/manifest.json -H \"Authorization: Bearer $KEY\"; echo\n\
         \n  # alert feed: the host reads the demo asset's alerts every 10 s; make three new alerts in the simulator, then read the feed\n  curl -s -X POST {sim}/_sim/alerts -H 'Content-Type: application/json' -d '{{\"count\":3,\"severity\":\"High\"}}'; echo\n  curl -s \"{base}/assets/demo/alerts/feed?cursor=0&limit=100\" -H \"Authorization: Bearer $KEY\"; echo\n  # next_cursor in the answer is the seq of the last event read: pass it as cursor= to get only newer events\n\
         \nPress ctrl-c to stop.\n"
    )
}

fn parse_param(kv: &str) -> Result<(String, Value), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("--param '{kv}': expected KEY=VALUE"))?;
    let value = match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => v
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(v.to_string())),
    };
    Ok((k.to_string(), value))
}

async fn invoke(
    asset: String,
    action: String,
    params: Vec<String>,
    json: Option<PathBuf>,
    config: Option<PathBuf>,
) -> ExitCode {
    let mut parameters = Map::new();
    if let Some(path) = json {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| format!("--json {}: {e}", path.display()))
            .and_then(|t| {
                serde_json::from_str::<Map<String, Value>>(&t)
                    .map_err(|e| format!("--json {}: not a JSON object: {e}", path.display()))
            });
        match parsed {
            Ok(m) => parameters = m,
            Err(e) => {
                eprintln!("defender-soar: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for kv in &params {
        match parse_param(kv) {
            Ok((k, v)) => {
                parameters.insert(k, v);
            }
            Err(e) => {
                eprintln!("defender-soar: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // Without a configuration, `demo` runs against an embedded simulator.
    let mut _sim = None;
    let config = if config.is_none() && asset == "demo" {
        let sim = match defender_sim::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            defender_sim::Scenario::default_scenario(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("defender-soar: cannot start the simulator: {e}");
                return ExitCode::FAILURE;
            }
        };
        let c = demo_config(SocketAddr::from(([127, 0, 0, 1], 0)), &sim.base_url());
        _sim = Some(sim);
        c
    } else {
        Config::load(config.as_deref()).map_err(|e| e.to_string())
    };
    let app = match in_process_app(config) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let progress: actions::ProgressSink = Arc::new(|line: &str| eprintln!("… {line}"));
    // A state-changing action run from the command line is audited like one over HTTP (key
    // `cli`); it is not run when the trail cannot be written.
    let audited = actions::definition::resolve(&action).is_some_and(|(d, _)| !d.read_only);
    if audited && let Err(e) = app.audit.check_writable().await {
        eprintln!("defender-soar: the audit trail cannot be written ({e}); the action was not run");
        return ExitCode::FAILURE;
    }
    let audit_params = parameters.clone();
    let resp = actions::invoke(
        app.clone(),
        Invocation {
            asset_id: &asset,
            action_id: &action,
            parameters,
            idempotency_key: None,
            progress: Some(progress),
        },
    )
    .await;
    if audited {
        let record = crate::audit::AuditRecord {
            key: "cli".into(),
            addr: "-".into(),
            request_id: "-".into(),
            asset: asset.clone(),
            action: action.clone(),
            parameters: audit_params,
            event_id: resp
                .envelope
                .summary
                .get("event_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            outcome: Some(crate::audit::AuditOutcome {
                status: resp.status.as_u16(),
                message: resp.envelope.message.clone(),
            }),
        };
        if let Err(e) = app.audit.append(record).await {
            eprintln!(
                "defender-soar: warning: the action ran but its audit line could not be written: {e}"
            );
        }
    }
    match serde_json::to_string_pretty(&resp.envelope) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("defender-soar: {e}"),
    }
    let ok = resp.status.is_success() && resp.envelope.status == crate::envelope::Status::Success;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse() {
        assert_eq!(parse_param("limit=5").unwrap().1, Value::from(5));
        assert_eq!(parse_param("x=true").unwrap().1, Value::Bool(true));
        assert_eq!(parse_param("q=a=b").unwrap().1, Value::from("a=b"));
        assert!(parse_param("nokey").is_err());
    }
}
