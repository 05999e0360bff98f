//! What the admin console shows: where each asset's connection, permissions, ingestion and
//! request budget stand, its recent audit lines, and the host's own figures. Everything comes
//! from memory and the stored state (files or Redis); building an overview sends nothing to
//! Entra ID or Defender, and nothing in it is a secret (tokens are only decoded for their
//! permissions).

use std::collections::BTreeSet;
use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::actions::connectivity::check_permissions;
use crate::actions::definition::definitions;
use crate::app::{App, Asset};
use crate::audit::AuditLine;
use crate::auth::{Audience, AuthError, decode_grants, now_unix};
use crate::config::{AuthKind, Environment};
use crate::defender::FamilyUse;
use crate::state::{AssetState, StoredTokens};

/// Audit lines shown per asset.
pub const AUDIT_LINES: usize = 20;

/// Where an asset's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// A token is at hand or can be had without an admin.
    Connected,
    /// Application credentials not used yet: a token is fetched on the first call.
    NotUsedYet,
    /// An interactive asset without tokens: an admin must consent.
    NeedsConsent,
    /// Entra ID refused the stored refresh token (revoked, expired, password changed): an
    /// admin must consent again.
    GrantDead,
    /// The asset's state file cannot be read (wrong key, damaged file).
    StateBroken,
}

impl Connection {
    /// Short label (also the CSS class of the badge).
    pub fn label(self) -> &'static str {
        match self {
            Connection::Connected => "connected",
            Connection::NotUsedYet => "not used yet",
            Connection::NeedsConsent => "needs consent",
            Connection::GrantDead => "grant dead",
            Connection::StateBroken => "state file broken",
        }
    }

    /// Stable machine-readable name (the badge's `data-state`).
    pub fn code(self) -> &'static str {
        match self {
            Connection::Connected => "connected",
            Connection::NotUsedYet => "not_used_yet",
            Connection::NeedsConsent => "needs_consent",
            Connection::GrantDead => "grant_dead",
            Connection::StateBroken => "state_broken",
        }
    }

    /// Whether the state is healthy.
    pub fn ok(self) -> bool {
        matches!(self, Connection::Connected | Connection::NotUsedYet)
    }
}

/// An access token's times (never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    /// When it was obtained (unix seconds).
    pub obtained_at: i64,
    /// When it expires (unix seconds).
    pub expires_at: i64,
    /// Whether a refresh token is stored with it.
    pub has_refresh: bool,
}

impl TokenTimes {
    fn of(t: &StoredTokens) -> TokenTimes {
        TokenTimes {
            obtained_at: t.obtained_at,
            expires_at: t.expires_at,
            has_refresh: t.refresh_token.is_some(),
        }
    }
}

/// One missing permission and the actions it blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The permission.
    pub permission: String,
    /// The actions that cannot run without it.
    pub blocks: Vec<String>,
}

/// Granted against needed permissions of one API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// The API.
    pub audience: Audience,
    /// What its token grants; `None` while no token of it was seen.
    pub granted: Option<Vec<String>>,
    /// What the host's actions need of it.
    pub needed: Vec<String>,
    /// Needed permissions not granted, with what they block (empty while `granted` is
    /// unknown).
    pub missing: Vec<Missing>,
}

/// A webhook's delivery health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookView {
    /// The receiver's origin (its path and query may carry a token).
    pub shown: String,
    /// Events delivered.
    pub delivered: u64,
    /// Events written but not yet delivered to it.
    pub backlog: u64,
    /// Failed POSTs in a row.
    pub consecutive_failures: u64,
    /// When the last delivery succeeded (unix seconds).
    pub last_success_at: Option<i64>,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

/// Where an asset's alert ingestion stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionView {
    /// The configured polling interval.
    pub interval_secs: u64,
    /// When the last poll ended (unix seconds).
    pub last_poll_at: Option<i64>,
    /// Its outcome in words.
    pub last_outcome: Option<String>,
    /// The last poll error.
    pub last_error: Option<String>,
    /// The checkpoint (the newest alert time read).
    pub checkpoint: Option<String>,
    /// Whether the last poll left alerts to read.
    pub more: bool,
    /// Polls and failed polls since the state was created.
    pub polls: u64,
    /// Failed polls.
    pub errors: u64,
    /// Events in the journal.
    pub events: usize,
    /// The journal's last sequence number.
    pub last_seq: u64,
    /// Events dropped by compaction before every receiver had them.
    pub dropped: u64,
    /// The webhooks.
    pub webhooks: Vec<WebhookView>,
    /// With Redis: who holds the ingestion lease, in words.
    pub lease: Option<String>,
}

/// Everything the console shows of one asset.
#[derive(Debug, Clone)]
pub struct AssetView {
    /// Asset id.
    pub id: String,
    /// How it gets tokens.
    pub auth: AuthKind,
    /// Its cloud.
    pub environment: Environment,
    /// Its tenant (id or domain, as configured).
    pub tenant: String,
    /// Where the connection stands.
    pub connection: Connection,
    /// What that means and what to do, in words.
    pub advice: String,
    /// The Defender token's times.
    pub token: Option<TokenTimes>,
    /// The Microsoft Graph token's times.
    pub graph_token: Option<TokenTimes>,
    /// Defender and Graph permissions.
    pub permissions: [Permissions; 2],
    /// Ingestion, when enabled.
    pub ingestion: Option<IngestionView>,
    /// Request budget use per family (this host's calls).
    pub budget: Vec<FamilyUse>,
    /// Whether the budget is shared with other hosts (Redis), so the figures are this host's
    /// share of what the registration used.
    pub budget_shared: bool,
    /// The newest audit lines about it (newest first).
    pub audit: Vec<AuditLine>,
    /// Why the audit lines could not be read, if so.
    pub audit_error: Option<String>,
}

impl AssetView {
    /// Whether an admin can (re)connect it from the console.
    pub fn consentable(&self) -> bool {
        self.auth.is_delegated() && self.connection != Connection::StateBroken
    }
}

/// The host's own figures.
#[derive(Debug, Clone)]
pub struct ServerView {
    /// The version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Where state lives, in words.
    pub state_backend: String,
    /// Bytes in the vault.
    pub vault_bytes: u64,
    /// Files in the vault.
    pub vault_files: usize,
    /// The vault's limit on the total.
    pub vault_max_total_bytes: u64,
    /// The vault's limit per file.
    pub vault_max_file_bytes: u64,
    /// Why the vault could not be read, if so.
    pub vault_error: Option<String>,
    /// With Redis: the hosts sharing it (or why they cannot be listed); `None` with files.
    pub hosts: Option<Result<Vec<crate::redis_link::HostPresence>, String>>,
}

/// The server's figures.
pub async fn server(app: &App) -> ServerView {
    let vault = crate::vault::Vault::of(&app.config);
    let limits = vault.limits().clone();
    let (vault_bytes, vault_files, vault_error) = match vault.entries().await {
        Ok(entries) => (entries.iter().map(|e| e.size).sum(), entries.len(), None),
        Err(e) => {
            tracing::warn!(error = %e, "admin console: the vault cannot be listed");
            (
                0,
                0,
                Some("the vault cannot be listed (logged)".to_string()),
            )
        }
    };
    let hosts = match &app.redis {
        Some(link) => Some(link.hosts().await.map_err(|e| e.to_string())),
        None => None,
    };
    let state_backend = match &app.redis {
        Some(_) => format!(
            "redis (key prefix {}; state shared by every host on it)",
            app.config.server.state.key_prefix
        ),
        None => "files (one encrypted state file per asset)".to_string(),
    };
    ServerView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: app.started.elapsed().as_secs(),
        state_backend,
        hosts,
        vault_bytes,
        vault_files,
        vault_max_total_bytes: limits.max_total_bytes,
        vault_max_file_bytes: limits.max_file_bytes,
        vault_error,
    }
}

/// The view of every asset `allows` lets through, in id order.
pub async fn assets(app: &App, allows: impl Fn(&str) -> bool) -> Vec<AssetView> {
    let mut out = Vec::new();
    for (id, asset) in &app.assets {
        if allows(id) {
            out.push(asset_view(app, asset).await);
        }
    }
    out
}

/// The needed permissions of one API, from the action definitions.
fn needed(audience: Audience) -> Vec<String> {
    definitions()
        .iter()
        .flat_map(|d| d.permissions.iter())
        .filter(|p| Audience::of_permission(p) == audience)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Granted against needed for both APIs; what is blocked is counted only for an API whose
/// grants are known.
fn permissions(defender: Option<Vec<String>>, graph: Option<Vec<String>>) -> [Permissions; 2] {
    let needed_defender = needed(Audience::Defender);
    let needed_graph = needed(Audience::Graph);
    // Unknown grants count as "everything" so they block nothing in the check.
    let check = check_permissions(
        defender.as_deref().unwrap_or(&needed_defender),
        graph.as_deref().unwrap_or(&needed_graph),
    );
    let build = |audience: Audience, granted: Option<Vec<String>>, needed: Vec<String>| {
        let missing = match &granted {
            None => Vec::new(),
            Some(g) => needed
                .iter()
                .filter(|p| !crate::auth::satisfies(g, p))
                .map(|p| Missing {
                    permission: p.clone(),
                    blocks: check
                        .blocked
                        .iter()
                        .filter(|(_, m)| m.contains(p))
                        .map(|(a, _)| a.clone())
                        .collect(),
                })
                .collect(),
        };
        Permissions {
            audience,
            granted,
            needed,
            missing,
        }
    };
    [
        build(Audience::Defender, defender, needed_defender),
        build(Audience::Graph, graph, needed_graph),
    ]
}

/// Decoded permissions of a stored token (display only), `None` when there is none.
fn granted_of(t: Option<&StoredTokens>) -> Option<Vec<String>> {
    t.filter(|t| !t.access_token.expose_secret().is_empty())
        .map(|t| decode_grants(t.access_token.expose_secret()).permissions)
}

async fn asset_view(app: &App, asset: &Arc<Asset>) -> AssetView {
    let cfg = &asset.config;
    let (state, state_error) = match app.state.load(&cfg.id).await {
        Ok(s) => (s, None),
        Err(e) => {
            tracing::warn!(asset = %cfg.id, error = %e, "admin console: the asset's state cannot be read");
            let unreachable = matches!(e, crate::state::StateError::Backend { .. });
            (AssetState::default(), Some(unreachable))
        }
    };
    let (connection, advice) = match state_error {
        Some(true) => (
            Connection::StateBroken,
            "The shared state (Redis) cannot be reached, so actions that need the asset's state fail until it is back. Check that Redis runs and is reachable at the URL in server.state.redis_url_env; the host reconnects by itself.".to_string(),
        ),
        Some(false) => (
            Connection::StateBroken,
            "The asset's state file cannot be read, so no action can run on it. The host's log names the file and what is wrong: most often the state key changed (DEFENDER_SOAR_STATE_KEY or state.key). Restore the key; or move the file aside and connect the asset again.".to_string(),
        ),
        None => connection(asset, &state).await,
    };
    let defender_granted = granted_of(state.tokens.as_ref());
    let graph_granted = granted_of(state.graph_tokens.as_ref());
    let ingestion = match app.ingestors.get(&cfg.id) {
        Some(ing) => Some(ingestion_view(ing, &state).await),
        None => None,
    };
    let (audit, audit_error) = match app.audit.recent(&cfg.id, AUDIT_LINES).await {
        Ok(lines) => (lines, None),
        Err(e) => {
            tracing::warn!(asset = %cfg.id, error = %e, "admin console: the audit trail cannot be read");
            (
                Vec::new(),
                Some("the audit trail cannot be read (logged)".into()),
            )
        }
    };
    AssetView {
        id: cfg.id.clone(),
        auth: cfg.auth,
        environment: cfg.environment,
        tenant: cfg.tenant_id.clone(),
        connection,
        advice,
        token: state.tokens.as_ref().map(TokenTimes::of),
        graph_token: state
            .graph_tokens
            .as_ref()
            .filter(|t| !t.access_token.expose_secret().is_empty())
            .map(TokenTimes::of),
        permissions: permissions(defender_granted, graph_granted),
        ingestion,
        budget: asset.defender.budget().usage(),
        budget_shared: app.redis.is_some(),
        audit,
        audit_error,
    }
}

/// The connection state from the token manager's view (no request to Entra ID).
async fn connection(asset: &Asset, state: &AssetState) -> (Connection, String) {
    let how = if asset.config.auth == AuthKind::DeviceCode {
        "Use Connect to start a device code sign-in (an admin enters the code shown)."
    } else {
        "Use Connect to open a consent in this browser and sign in as an administrator of the tenant."
    };
    let mut peeked = asset.tokens.peek().await;
    if matches!(peeked, Ok(None)) && asset.config.auth.is_application() {
        // Only Microsoft Graph used so far (alert ingestion reads Graph alerts).
        if let Ok(Some(t)) = asset.graph_tokens.peek().await {
            peeked = Ok(Some(t));
        }
    }
    match peeked {
        Ok(Some(t)) => (
            Connection::Connected,
            format!(
                "A valid access token is at hand ({} min left){}.",
                t.expires_in() / 60,
                if asset.config.auth.is_delegated() {
                    "; it is renewed with the stored refresh token"
                } else {
                    "; a new one is fetched with the asset's credentials before it expires"
                }
            ),
        ),
        Ok(None) if asset.config.auth.is_delegated() => (
            Connection::Connected,
            "The access token has expired; the stored refresh token renews it on the next call."
                .into(),
        ),
        Ok(None) if state.tokens.is_some() || state.graph_tokens.is_some() => (
            Connection::Connected,
            "The access token has expired; a new one is fetched with the asset's credentials on the next call.".into(),
        ),
        Ok(None) => (
            Connection::NotUsedYet,
            "No token fetched yet: the first action (or test_connectivity) fetches one with the asset's credentials.".into(),
        ),
        Err(AuthError::ConsentRequired { .. })
            if state
                .tokens
                .as_ref()
                .is_some_and(|t| t.refresh_token.is_some()) =>
        {
            (
                Connection::GrantDead,
                format!(
                    "Entra ID refused the stored refresh token (revoked, expired or the consenting account changed). {how}"
                ),
            )
        }
        Err(AuthError::ConsentRequired { .. }) => (
            Connection::NeedsConsent,
            format!("No tokens are stored: an administrator must connect the asset. {how}"),
        ),
        Err(AuthError::State(_)) => (
            Connection::StateBroken,
            "The asset's state file cannot be used; the host's log says why and how to recover."
                .into(),
        ),
        Err(e) => (Connection::NeedsConsent, format!("{e}")),
    }
}

async fn ingestion_view(
    ing: &crate::ingest::poller::Ingestor,
    state: &AssetState,
) -> IngestionView {
    let st = state.ingestion.clone().unwrap_or_default();
    let stats = ing.journal().stats().await.ok();
    let last_seq = stats.map_or(0, |s| s.last_seq);
    let webhooks = ing
        .config()
        .webhooks
        .iter()
        .map(|hook| {
            let w = st.webhooks.get(&hook.id()).cloned().unwrap_or_default();
            WebhookView {
                shown: hook.shown(),
                delivered: w.delivered,
                backlog: last_seq.saturating_sub(w.cursor),
                consecutive_failures: w.consecutive_failures,
                last_success_at: w.last_success_at,
                last_error: w.last_error,
            }
        })
        .collect();
    let lease = match ing.lease() {
        None => None,
        Some(l) => Some(match l.holder().await {
            Ok(Some(h)) if h == l.name() => "this host polls and delivers".to_string(),
            Ok(Some(h)) => format!("the host {h} polls and delivers"),
            Ok(None) => "free: the next host to try takes it".to_string(),
            Err(e) => format!("unknown ({e})"),
        }),
    };
    IngestionView {
        lease,
        interval_secs: ing.config().interval_secs,
        last_poll_at: st.last_poll_at,
        last_outcome: st.last_outcome,
        last_error: st.last_error,
        checkpoint: st.checkpoint,
        more: st.more,
        polls: st.polls,
        errors: st.errors,
        events: stats.map_or(0, |s| s.events),
        last_seq,
        dropped: stats.map_or(0, |s| s.dropped),
        webhooks,
    }
}

/// "3 min ago", "2 h ago", "5 d ago" for a unix time (or "in …" for a future one).
pub fn relative(at: i64) -> String {
    let delta = now_unix() - at;
    let (n, future) = (delta.unsigned_abs(), delta < 0);
    let text = match n {
        0..60 => format!("{n} s"),
        60..3600 => format!("{} min", n / 60),
        3600..172_800 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}
