//! The token manager of one asset: an in-memory cache backed by the asset's state file.
//!
//! Any caller that finds no fresh token in memory waits for the asset's one fetch lock; the
//! first one through re-reads the state file (a restarted host, or another process, may have
//! stored a usable token) and otherwise asks Entra: client credentials, or the stored refresh
//! token for interactive assets. Every caller queued behind it then finds the new token in
//! memory, so concurrent callers share one token request. A token is refreshed when less than
//! a fifth of its life (at most 5 minutes) is left.
//!
//! Hosts may share one state directory. Before asking Entra, the fetcher takes the asset's
//! token lock (`<asset>_token.lock`, see [`StateStore::lock_tokens`]) and reads the stored pair
//! again: when another host has just refreshed, its new access token is used and the rotated
//! refresh token is never redeemed twice. A refresh Entra refuses is checked against the state
//! file too (a newer pair there is used), and an asset marked as needing consent picks up a
//! pair another host stored after that (the mark only applies to the refresh token it names).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    AuthType, AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RedirectUrl,
    RefreshToken, Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use super::certificate::{ASSERTION_TYPE, ClientCertificate};
use super::entra::{self, EntraError, EntraTokenResponse, OAuthHttp};
use super::{Audience, AuthError, Grants, decode_grants, now_unix, preflight};
use crate::config::{AssetConfig, AuthKind, ManagedIdentityConfig, ServerConfig, TokenEndpoint};
use crate::defender::{DefenderError, TokenSource};
use crate::state::{AssetState, StateStore, StoredTokens, UpdateError};

/// The oauth2 client of an asset: authorize and token endpoints set, redirect URI set.
pub(crate) type EntraClient = oauth2::Client<
    EntraError,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Grant names stored with the tokens.
pub(crate) const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// Grant name of tokens obtained through consent (and their refreshes).
pub(crate) const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// Grant name of tokens obtained with a certificate's client assertion.
pub(crate) const GRANT_CERTIFICATE: &str = "certificate";
/// Grant name of tokens obtained from the managed identity endpoint.
pub(crate) const GRANT_MANAGED_IDENTITY: &str = "managed_identity";
/// `api-version` of the instance metadata token endpoint.
const IMDS_API_VERSION: &str = "2018-02-01";
/// Grant name of tokens obtained with a device code sign-in (and their refreshes).
pub(crate) const GRANT_DEVICE_CODE: &str = "device_code";

/// Lifetime assumed when Entra gives none.
const DEFAULT_LIFETIME_SECS: i64 = 3599;
/// Longest margin before expiry at which a token is renewed.
const MAX_MARGIN_SECS: i64 = 300;

/// An access token with its validity (unix seconds).
#[derive(Clone)]
pub struct BearerToken {
    /// The token itself.
    pub secret: SecretString,
    /// When it was obtained.
    pub obtained_at: i64,
    /// When it expires.
    pub expires_at: i64,
}

impl BearerToken {
    /// Seconds of validity left (never negative).
    pub fn expires_in(&self) -> u64 {
        u64::try_from(self.expires_at - now_unix()).unwrap_or(0)
    }

    /// What the token says it grants (display only).
    pub fn grants(&self) -> Grants {
        decode_grants(self.secret.expose_secret())
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("obtained_at", &self.obtained_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A freshly fetched token and what it grants.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    /// Lifetime Entra gave it.
    pub expires_in: Duration,
    /// Decoded grants.
    pub grants: Grants,
}

/// Whether a token obtained at `obtained_at` and expiring at `expires_at` is still worth using
/// at `now`: more than a fifth of its life (at most 5 minutes) is left.
pub(crate) fn is_fresh(obtained_at: i64, expires_at: i64, now: i64) -> bool {
    let lifetime = (expires_at - obtained_at).max(1);
    let margin = (lifetime / 5).min(MAX_MARGIN_SECS);
    expires_at - now > margin
}

/// What the in-memory cache holds.
#[derive(Default)]
struct Cache {
    /// The token in use.
    current: Option<BearerToken>,
    /// The last token the API refused: never taken back from the state file.
    rejected: Option<SecretString>,
    /// Set while the asset needs consent (cleared when tokens arrive).
    consent: Option<AuthError>,
    /// A refresh token Entra refused as dead: not offered again.
    dead_refresh: Option<SecretString>,
}

/// The client secret in use and, when it comes from a file, what the file looked like when it
/// was last read (to notice a rotation cheaply).
struct SecretHolder {
    current: Option<SecretString>,
    file: Option<PathBuf>,
    stamp: Option<FileStamp>,
}

/// Modification time and length of a secret file.
type FileStamp = (Option<SystemTime>, u64);

/// The stamp of the file at `path`, `None` when it cannot be read.
fn file_stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// What the state file offers after a refused refresh.
enum Newer {
    /// Nothing newer than the refused refresh token.
    None,
    /// Another process stored a pair whose access token is fresh (now in use).
    Fresh(BearerToken),
    /// Another process stored a pair with a different refresh token, its access token stale.
    Refresh(SecretString),
}

/// The tokens of one asset, every auth kind.
pub struct TokenManager {
    /// The API the tokens are for.
    pub(crate) audience: Audience,
    pub(crate) asset_id: String,
    pub(crate) auth: AuthKind,
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    /// Authority base without tenant (for resolving a tenant domain to its id).
    pub(crate) login_url: String,
    /// `public_url` without a trailing slash.
    pub(crate) public_url: String,
    /// Users (UPN or object id) allowed to connect the asset; empty allows any user of the
    /// tenant.
    pub(crate) allowed_consenters: Vec<String>,
    /// The tenant id a configured domain resolves to, asked once.
    pub(crate) tenant_guid: tokio::sync::OnceCell<String>,
    /// The oauth2 client without its secret (added by [`TokenManager::client`]).
    base_client: EntraClient,
    secret: Mutex<SecretHolder>,
    certificate: Option<ClientCertificate>,
    managed_identity: Option<ManagedIdentityConfig>,
    pub(crate) token_url: String,
    pub(crate) token_endpoint: TokenEndpoint,
    pub(crate) resource: String,
    pub(crate) scope: String,
    pub(crate) http: OAuthHttp,
    pub(crate) store: StateStore,
    consent_url: String,
    cache: Mutex<Cache>,
    /// One token request (or consent completion) at a time per asset.
    pub(crate) flight: tokio::sync::Mutex<()>,
    /// Bumped whenever a consent completes, for `test_connectivity` waiting on it.
    connected: watch::Sender<u64>,
    /// The asset's device code sign-in, when it uses one.
    pub(crate) device: super::device_code::DeviceFlow,
    /// Hashes of consent states used recently (to tell a replay from a forgery).
    pub(crate) consumed: Mutex<VecDeque<(String, i64)>>,
}

impl TokenManager {
    /// Builds the token manager of an asset over the host's state store.
    pub fn new(
        asset: &AssetConfig,
        server: &ServerConfig,
        store: StateStore,
        http: reqwest::Client,
    ) -> Result<TokenManager, AuthError> {
        Self::build(asset, server, store, http, Audience::Defender)
    }

    /// The token manager of an asset's Microsoft Graph tokens (the cloud's Graph resource).
    /// For delegated grants it redeems the asset's one refresh token, kept with the Defender
    /// pair, and stores the rotated one there.
    pub fn for_graph(
        asset: &AssetConfig,
        server: &ServerConfig,
        store: StateStore,
        http: reqwest::Client,
    ) -> Result<TokenManager, AuthError> {
        Self::build(asset, server, store, http, Audience::Graph)
    }

    fn build(
        asset: &AssetConfig,
        server: &ServerConfig,
        store: StateStore,
        http: reqwest::Client,
        audience: Audience,
    ) -> Result<TokenManager, AuthError> {
        let invalid = |what: &str, url: &str| {
            AuthError::Config(format!(
                "asset {}: {what} {url} is not a valid URL",
                asset.id
            ))
        };
        let token_url = TokenUrl::new(asset.token_url())
            .map_err(|_| invalid("token URL", &asset.token_url()))?;
        let auth_url = AuthUrl::new(asset.authorize_url())
            .map_err(|_| invalid("authorize URL", &asset.authorize_url()))?;
        let redirect = RedirectUrl::new(server.redirect_uri())
            .map_err(|_| invalid("redirect URI", &server.redirect_uri()))?;
        let base_client = oauth2::Client::new(ClientId::new(asset.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(auth_url)
            .set_token_uri(token_url)
            .set_redirect_uri(redirect);
        let public_url = server.public_url.as_str().trim_end_matches('/').to_string();
        let consent_url = format!("{public_url}/assets/{}/consent", asset.id);
        let resource = match audience {
            Audience::Defender => asset.resource.clone(),
            Audience::Graph => asset.environment.graph_resource().to_string(),
        };
        Ok(TokenManager {
            audience,
            asset_id: asset.id.clone(),
            auth: asset.auth,
            tenant_id: asset.tenant_id.clone(),
            client_id: asset.client_id.clone(),
            login_url: asset.login_url.clone(),
            public_url,
            allowed_consenters: asset.allowed_consenters.clone(),
            tenant_guid: tokio::sync::OnceCell::new(),
            base_client,
            secret: Mutex::new(SecretHolder {
                current: asset.client_secret.clone(),
                stamp: asset.client_secret_file.as_deref().and_then(file_stamp),
                file: asset.client_secret_file.clone(),
            }),
            certificate: asset.certificate.clone(),
            managed_identity: asset.managed_identity.clone(),
            token_url: asset.token_url(),
            token_endpoint: asset.token_endpoint,
            scope: format!("{resource}/.default"),
            resource,
            http: OAuthHttp(http),
            store,
            consent_url,
            cache: Mutex::new(Cache::default()),
            flight: tokio::sync::Mutex::new(()),
            connected: watch::Sender::new(0),
            device: super::device_code::DeviceFlow::default(),
            consumed: Mutex::new(VecDeque::new()),
        })
    }

    /// The asset's id.
    pub fn asset_id(&self) -> &str {
        &self.asset_id
    }

    /// How the asset obtains tokens.
    pub fn auth_kind(&self) -> AuthKind {
        self.auth
    }

    /// The API these tokens are for.
    pub fn audience(&self) -> Audience {
        self.audience
    }

    /// `{public_url}/assets/<asset>/consent`: the authenticated call that answers a
    /// single-use consent link.
    pub fn consent_url(&self) -> &str {
        &self.consent_url
    }

    /// How an admin starts a consent, for messages.
    pub fn how_to_consent(&self) -> String {
        format!(
            "POST {} with the API key, or run test_connectivity, answers a single-use consent link to open in a browser",
            self.consent_url
        )
    }

    /// A receiver that changes each time a consent for this asset completes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.connected.subscribe()
    }

    /// The consent-required error while this process knows the asset to need consent (an
    /// in-memory mark: [`TokenManager::peek`] checks it against the state file).
    pub fn consent_required(&self) -> Option<AuthError> {
        self.lock_cache().consent.clone()
    }

    /// The oauth2 client with the current client secret (the secret file is read again first
    /// when it changed).
    pub(crate) fn client(&self) -> EntraClient {
        match self.current_secret() {
            Some(s) => self
                .base_client
                .clone()
                .set_client_secret(ClientSecret::new(s.expose_secret().to_string())),
            None => self.base_client.clone(),
        }
    }

    /// The client secret in use (the file read again first when it changed), if any.
    pub(crate) fn current_secret(&self) -> Option<SecretString> {
        self.reload_secret(false);
        self.secret
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current
            .clone()
    }

    /// Reads the secret file again when its modification time or length changed (or always,
    /// with `force`); answers whether the secret in use changed. An unreadable or empty file
    /// leaves the current secret in place. The secret itself is never logged.
    fn reload_secret(&self, force: bool) -> bool {
        let mut holder = self.secret.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = holder.file.clone() else {
            return false;
        };
        let stamp = file_stamp(&path);
        if !force && stamp == holder.stamp {
            return false;
        }
        holder.stamp = stamp;
        let value = match std::fs::read_to_string(&path) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(asset = %self.asset_id, file = %path.display(), error = %e.kind(),
                    "client secret file cannot be read; keeping the secret in use");
                return false;
            }
        };
        let value = value.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            tracing::warn!(asset = %self.asset_id, file = %path.display(),
                "client secret file is empty; keeping the secret in use");
            return false;
        }
        if holder
            .current
            .as_ref()
            .is_some_and(|c| c.expose_secret() == value)
        {
            return false;
        }
        holder.current = Some(SecretString::from(value.to_string()));
        tracing::info!(asset = %self.asset_id, file = %path.display(),
            "client secret file changed: using the new secret");
        true
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self) -> Option<BearerToken> {
        let now = now_unix();
        self.lock_cache()
            .current
            .as_ref()
            .filter(|t| is_fresh(t.obtained_at, t.expires_at, now))
            .cloned()
    }

    /// A valid access token: the cached one, a stored one, or one obtained now (one request
    /// at a time per asset, shared by every concurrent caller).
    pub async fn token(&self) -> Result<BearerToken, AuthError> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _flight = self.flight.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        self.obtain().await
    }

    /// The token to use if it is at hand without asking Entra (in memory, or fresh in the
    /// state file); `None` when one must be fetched or refreshed. Fails when the asset needs
    /// consent (an interactive asset without a usable refresh token) or its state file is
    /// broken.
    pub async fn peek(&self) -> Result<Option<BearerToken>, AuthError> {
        if let Some(t) = self.cached() {
            return Ok(Some(t));
        }
        // The state file, not the in-memory consent mark, decides: another process may have
        // stored a newer pair since this one found its grant dead.
        let stored = self.load_usable().await?;
        if let Some(token) = self.use_stored(stored.as_ref()) {
            return Ok(Some(token));
        }
        if self.auth.is_delegated() {
            self.usable_refresh_token(stored.as_ref())?;
        }
        Ok(None)
    }

    /// Always asks for a new application token (client credentials, certificate or managed
    /// identity: test_connectivity checks the credentials with it); the token is stored and
    /// used afterwards.
    pub async fn fetch_fresh(&self) -> Result<FetchedToken, AuthError> {
        let _flight = self.flight.lock().await;
        let token = self.app_token().await?;
        Ok(FetchedToken {
            expires_in: Duration::from_secs(
                u64::try_from(token.expires_at - token.obtained_at).unwrap_or(0),
            ),
            grants: token.grants(),
        })
    }

    /// Drops `rejected` (the API answered 401 with it) so the next call obtains a new token.
    pub fn invalidate(&self, rejected: &SecretString) {
        let mut cache = self.lock_cache();
        if cache
            .current
            .as_ref()
            .is_some_and(|c| c.secret.expose_secret() == rejected.expose_secret())
        {
            cache.current = None;
        }
        cache.rejected = Some(rejected.clone());
    }

    /// Whether stored tokens belong to this asset's kind and target (a changed configuration
    /// makes old tokens useless).
    fn stored_usable(&self, t: &StoredTokens) -> bool {
        let grant_ok = t.grant == grant_of(self.auth);
        grant_ok && t.scope.as_deref().is_none_or(|s| s == self.target())
    }

    /// The `scope` (v2) or `resource` (v1) tokens are requested for.
    pub(crate) fn target(&self) -> &str {
        if self.auth == AuthKind::ManagedIdentity {
            return &self.resource;
        }
        match self.token_endpoint {
            TokenEndpoint::V2 => &self.scope,
            TokenEndpoint::V1 => &self.resource,
        }
    }

    /// The stored access token, when it is fresh and not the one the API refused.
    fn fresh_stored(&self, t: &StoredTokens) -> Option<BearerToken> {
        let rejected = self
            .lock_cache()
            .rejected
            .as_ref()
            .is_some_and(|r| r.expose_secret() == t.access_token.expose_secret());
        (!rejected && is_fresh(t.obtained_at, t.expires_at, now_unix())).then(|| BearerToken {
            secret: t.access_token.clone(),
            obtained_at: t.obtained_at,
            expires_at: t.expires_at,
        })
    }

    /// The stored refresh token, or the consent-required error when there is none or Entra
    /// already refused that very token (a different, newer one stored by another process is
    /// offered).
    fn usable_refresh_token(
        &self,
        stored: Option<&StoredTokens>,
    ) -> Result<SecretString, AuthError> {
        let Some(tokens) = stored else {
            let how = match self.auth {
                AuthKind::DeviceCode => "signs in with a device code",
                _ => "uses interactive consent",
            };
            return Err(self.needs_consent(format!(
                "asset '{}' {how} and has no tokens yet: {}",
                self.asset_id,
                self.consent_advice(false)
            )));
        };
        let Some(rt) = tokens.refresh_token.clone() else {
            return Err(self.needs_consent(format!(
                "asset '{}' has no refresh token stored (its access token expired): {}",
                self.asset_id,
                self.consent_advice(true)
            )));
        };
        let cache = self.lock_cache();
        if let (Some(dead), Some(err)) = (&cache.dead_refresh, &cache.consent)
            && dead.expose_secret() == rt.expose_secret()
        {
            return Err(err.clone());
        }
        Ok(rt)
    }

    /// Called with the fetch lock held and no fresh token in memory. Hosts sharing the state
    /// directory take turns through the asset's token lock: the stored pair is read again
    /// under it, so a pair another process has just stored is used instead of redeeming the
    /// refresh token it replaced.
    async fn obtain(&self) -> Result<BearerToken, AuthError> {
        let stored = self.load_usable().await?;
        if let Some(token) = self.use_stored(stored.as_ref()) {
            return Ok(token);
        }
        if self.auth.is_delegated() {
            // A grant already known to be dead fails without waiting for the lock.
            self.usable_refresh_token(stored.as_ref())?;
        }
        let _lock = self
            .store
            .lock_tokens(&self.asset_id)
            .await
            .map_err(|e| AuthError::State(e.to_string()))?;
        let stored = self.load_usable().await?;
        if let Some(token) = self.use_stored(stored.as_ref()) {
            return Ok(token);
        }
        match self.auth {
            AuthKind::ClientCredentials | AuthKind::Certificate | AuthKind::ManagedIdentity => {
                self.app_token().await
            }
            AuthKind::AuthorizationCode | AuthKind::DeviceCode => {
                let rt = self.usable_refresh_token(stored.as_ref())?;
                self.refresh(rt).await
            }
        }
    }

    /// What an admin does to (re)connect the asset.
    pub(crate) fn consent_advice(&self, again: bool) -> String {
        let again = if again { " again" } else { "" };
        match self.auth {
            AuthKind::DeviceCode => format!(
                "an admin must sign in{again} with a device code: run `defender-soar consent {}` or call POST {}",
                self.asset_id, self.consent_url
            ),
            _ => format!(
                "an admin must connect it{again} ({})",
                self.how_to_consent()
            ),
        }
    }

    /// The grant name stored with tokens of this asset's delegated kind.
    fn delegated_grant(&self) -> &'static str {
        match self.auth {
            AuthKind::DeviceCode => GRANT_DEVICE_CODE,
            _ => GRANT_AUTHORIZATION_CODE,
        }
    }

    /// The stored pair, when it belongs to this asset's kind and target.
    async fn load_usable(&self) -> Result<Option<StoredTokens>, AuthError> {
        let state = self
            .store
            .load(&self.asset_id)
            .await
            .map_err(|e| AuthError::State(e.to_string()))?;
        Ok(self.slot(state))
    }

    /// The stored tokens of this manager's audience that fit its kind and target. A Graph
    /// manager of a delegated grant sees the Graph access token (if any) with the asset's
    /// refresh token, which is kept with the Defender pair.
    fn slot(&self, state: AssetState) -> Option<StoredTokens> {
        match self.audience {
            Audience::Defender => state.tokens.filter(|t| self.stored_usable(t)),
            Audience::Graph if !self.auth.is_delegated() => {
                state.graph_tokens.filter(|t| self.stored_usable(t))
            }
            Audience::Graph => {
                let pair = state.tokens.filter(|t| t.grant == grant_of(self.auth))?;
                let access = state
                    .graph_tokens
                    .filter(|t| t.scope.as_deref().is_none_or(|s| s == self.target()));
                Some(match access {
                    Some(graph) => StoredTokens {
                        refresh_token: pair.refresh_token,
                        grant: pair.grant,
                        ..graph
                    },
                    // No Graph token yet: only the refresh token to redeem for one.
                    None => StoredTokens {
                        access_token: SecretString::from(String::new()),
                        refresh_token: pair.refresh_token,
                        expires_at: 0,
                        obtained_at: 0,
                        grant: pair.grant,
                        scope: Some(self.target().to_string()),
                    },
                })
            }
        }
    }

    /// Puts the stored access token in use when it is fresh and not the one the API refused.
    fn use_stored(&self, stored: Option<&StoredTokens>) -> Option<BearerToken> {
        let token = stored.and_then(|t| self.fresh_stored(t))?;
        self.install(&token);
        tracing::debug!(asset = %self.asset_id, "using the stored access token");
        Some(token)
    }

    /// Records and returns a consent-required error.
    fn needs_consent(&self, message: String) -> AuthError {
        let err = AuthError::ConsentRequired {
            message,
            url: self.consent_url.clone(),
        };
        self.lock_cache().consent = Some(err.clone());
        err
    }

    /// Makes `token` the one in use and clears the consent flag.
    pub(crate) fn install(&self, token: &BearerToken) {
        let mut cache = self.lock_cache();
        cache.current = Some(token.clone());
        cache.consent = None;
        cache.dead_refresh = None;
    }

    /// Signals waiters that a consent completed.
    pub(crate) fn notify_connected(&self) {
        self.connected.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A new application token for this asset's kind; stored. Fetch lock held.
    async fn app_token(&self) -> Result<BearerToken, AuthError> {
        match (&self.certificate, &self.managed_identity) {
            (Some(certificate), _) if self.auth == AuthKind::Certificate => {
                self.certificate_grant(certificate).await
            }
            (_, Some(identity)) if self.auth == AuthKind::ManagedIdentity => {
                self.managed_identity_token(identity).await
            }
            _ => self.client_credentials().await,
        }
    }

    /// One client credentials request (secret or, with `assertion`, a certificate's client
    /// assertion) for the asset's scope (v2) or resource (v1).
    async fn request_app_token(
        &self,
        assertion: Option<String>,
    ) -> Result<EntraTokenResponse, oauth2::RequestTokenError<entra::TransportError, EntraError>>
    {
        let client = match assertion {
            Some(_) => self.base_client.clone(),
            None => self.client(),
        };
        let mut request = client.exchange_client_credentials();
        if let Some(assertion) = assertion {
            request = request
                .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                .add_extra_param("client_assertion", assertion);
        }
        request = match self.token_endpoint {
            TokenEndpoint::V2 => request.add_scope(Scope::new(self.scope.clone())),
            TokenEndpoint::V1 => request.add_extra_param("resource", self.resource.clone()),
        };
        request.request_async(&self.http).await
    }

    /// Client credentials grant with the client secret; the token is stored. A refused secret
    /// makes the secret file be read again and, when it holds a new secret, the request is
    /// made once more with it. Fetch lock held.
    async fn client_credentials(&self) -> Result<BearerToken, AuthError> {
        let obtained_at = now_unix();
        let mut result = self.request_app_token(None).await;
        if let Err(oauth2::RequestTokenError::ServerResponse(err)) = &result
            && is_refused_secret(err)
            && self.reload_secret(true)
        {
            tracing::info!(asset = %self.asset_id, "client secret refused; retrying with the secret now in the file");
            result = self.request_app_token(None).await;
        }
        self.count_fetch(GRANT_CLIENT_CREDENTIALS, result.is_ok());
        let response = result.map_err(|e| self.explain(e))?;
        let stored = self.stored_from(&response, obtained_at, GRANT_CLIENT_CREDENTIALS, None);
        self.persist(stored, obtained_at).await
    }

    /// Client credentials grant with a fresh certificate client assertion; stored. Fetch
    /// lock held.
    async fn certificate_grant(
        &self,
        certificate: &ClientCertificate,
    ) -> Result<BearerToken, AuthError> {
        let obtained_at = now_unix();
        let assertion = certificate
            .assertion(&self.client_id, &self.token_url, obtained_at)
            .map_err(|e| AuthError::Config(format!("asset {}: {e}", self.asset_id)))?;
        let result = self.request_app_token(Some(assertion)).await;
        self.count_fetch(GRANT_CERTIFICATE, result.is_ok());
        let response = result.map_err(|e| match e {
            oauth2::RequestTokenError::ServerResponse(err) => AuthError::Refused {
                message: explain_certificate_refusal(
                    &err,
                    &self.tenant_id,
                    &self.client_id,
                    certificate,
                ),
                code: err.code(),
            },
            other => self.explain(other),
        })?;
        let stored = self.stored_from(&response, obtained_at, GRANT_CERTIFICATE, None);
        self.persist(stored, obtained_at).await
    }

    /// A token from the managed identity (instance metadata) endpoint; stored. Fetch lock held.
    async fn managed_identity_token(
        &self,
        identity: &ManagedIdentityConfig,
    ) -> Result<BearerToken, AuthError> {
        let obtained_at = now_unix();
        let result = self.request_managed_identity(identity).await;
        self.count_fetch(GRANT_MANAGED_IDENTITY, result.is_ok());
        let response = result?;
        let stored = self.stored_from(&response, obtained_at, GRANT_MANAGED_IDENTITY, None);
        self.persist(stored, obtained_at).await
    }

    /// `GET {url}?api-version=2018-02-01&resource=...[&client_id=...]` with `Metadata: true`.
    async fn request_managed_identity(
        &self,
        identity: &ManagedIdentityConfig,
    ) -> Result<EntraTokenResponse, AuthError> {
        let mut url = reqwest::Url::parse(&identity.url).map_err(|_| {
            AuthError::Config(format!(
                "asset {}: managed_identity_url {} is not a valid URL",
                self.asset_id, identity.url
            ))
        })?;
        let host = url.host_str().unwrap_or_default().to_string();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("api-version", IMDS_API_VERSION)
                .append_pair("resource", &self.resource);
            if let Some(id) = &identity.client_id {
                query.append_pair("client_id", id);
            }
        }
        let which = match &identity.client_id {
            Some(id) => format!("the user-assigned managed identity {id}"),
            None => "the system-assigned managed identity".to_string(),
        };
        let resp = self
            .http
            .0
            .get(url)
            .header("Metadata", "true")
            .send()
            .await
            .map_err(|e| {
                AuthError::Transport(format!(
                    "managed identity endpoint {host}: {}: the host must run on an Azure \
                     resource with {which} assigned (or set managed_identity_url)",
                    entra::failure_kind(&e)
                ))
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|_| {
            AuthError::Transport(format!(
                "managed identity endpoint {host}: reading the answer failed"
            ))
        })?;
        if !status.is_success() {
            return Err(explain_identity_refusal(status, &body, &which));
        }
        serde_json::from_slice(&body).map_err(|_| {
            AuthError::Transport(format!(
                "managed identity endpoint {host} answered something that is not a token response"
            ))
        })
    }

    /// Refresh token grant for an interactive asset; the new pair replaces the old one in one
    /// state update. Fetch lock and token lock held. When Entra refuses the grant, the stored
    /// pair is read again before consent is asked for: if another process stored a newer pair
    /// meanwhile, its fresh access token is used, or its refresh token is redeemed (once).
    async fn refresh(&self, refresh_token: SecretString) -> Result<BearerToken, AuthError> {
        let mut refresh_token = refresh_token;
        let mut retried = false;
        loop {
            let obtained_at = now_unix();
            let result = self.redeem(&refresh_token).await;
            self.count_fetch("refresh_token", result.is_ok());
            let response = match result {
                Ok(r) => r,
                Err(oauth2::RequestTokenError::ServerResponse(err)) if needs_new_consent(&err) => {
                    if !retried {
                        match self.newer_pair(&refresh_token).await? {
                            Newer::Fresh(token) => return Ok(token),
                            Newer::Refresh(newer) => {
                                tracing::info!(asset = %self.asset_id, "refresh token refused, but another process stored a newer one: using it");
                                refresh_token = newer;
                                retried = true;
                                continue;
                            }
                            Newer::None => {}
                        }
                    }
                    let explained = err.explain(&self.tenant_id, &self.client_id);
                    tracing::warn!(asset = %self.asset_id, error = %explained, "refresh token refused: consent needed");
                    let err = self.needs_consent(format!(
                        "asset '{}': the stored grant can no longer be used ({explained}): {}",
                        self.asset_id,
                        self.consent_advice(true)
                    ));
                    self.lock_cache().dead_refresh = Some(refresh_token);
                    return Err(err);
                }
                Err(e) => return Err(self.explain(e)),
            };
            let stored = self.stored_from(
                &response,
                obtained_at,
                self.delegated_grant(),
                Some(refresh_token.clone()),
            );
            let token = self
                .persist_refreshed(stored, &refresh_token, obtained_at)
                .await?;
            tracing::info!(asset = %self.asset_id, expires_in = token.expires_at - obtained_at, "access token refreshed");
            return Ok(token);
        }
    }

    /// One refresh token request.
    async fn redeem(
        &self,
        refresh_token: &SecretString,
    ) -> Result<EntraTokenResponse, oauth2::RequestTokenError<entra::TransportError, EntraError>>
    {
        let rt = RefreshToken::new(refresh_token.expose_secret().to_string());
        let client = self.client();
        let mut request = client.exchange_refresh_token(&rt);
        request = match self.token_endpoint {
            TokenEndpoint::V2 => request
                .add_scope(Scope::new(self.scope.clone()))
                .add_scope(Scope::new("offline_access".to_string())),
            TokenEndpoint::V1 => request.add_extra_param("resource", self.resource.clone()),
        };
        request.request_async(&self.http).await
    }

    /// After Entra refused `refused`: what the state file holds now, if it is a different
    /// (newer) pair.
    async fn newer_pair(&self, refused: &SecretString) -> Result<Newer, AuthError> {
        let stored = self.load_usable().await?;
        let Some(tokens) = stored else {
            return Ok(Newer::None);
        };
        let Some(rt) = tokens.refresh_token.clone() else {
            return Ok(Newer::None);
        };
        if rt.expose_secret() == refused.expose_secret() {
            return Ok(Newer::None);
        }
        Ok(match self.use_stored(Some(&tokens)) {
            Some(token) => Newer::Fresh(token),
            None => Newer::Refresh(rt),
        })
    }

    /// The stored form of a token response. `previous_refresh` is kept when Entra sent no
    /// new refresh token.
    pub(crate) fn stored_from(
        &self,
        response: &EntraTokenResponse,
        obtained_at: i64,
        grant: &str,
        previous_refresh: Option<SecretString>,
    ) -> StoredTokens {
        let lifetime = response
            .expires_in
            .and_then(|s| i64::try_from(s).ok())
            .or_else(|| {
                response
                    .expires_on
                    .and_then(|on| i64::try_from(on).ok())
                    .map(|on| on - obtained_at)
            })
            .unwrap_or(DEFAULT_LIFETIME_SECS)
            .max(1);
        StoredTokens {
            access_token: SecretString::from(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|r| SecretString::from(r.secret().clone()))
                .or(previous_refresh),
            expires_at: obtained_at + lifetime,
            obtained_at,
            grant: grant.to_string(),
            scope: Some(self.target().to_string()),
        }
    }

    /// Stores `tokens` (one atomic update, pruning expired consent sessions) and puts the
    /// access token in use.
    pub(crate) async fn persist(
        &self,
        tokens: StoredTokens,
        now: i64,
    ) -> Result<BearerToken, AuthError> {
        let token = BearerToken {
            secret: tokens.access_token.clone(),
            obtained_at: tokens.obtained_at,
            expires_at: tokens.expires_at,
        };
        let audience = self.audience;
        self.store
            .update(&self.asset_id, move |s: &mut AssetState| {
                prune_sessions(s, now);
                put(s, audience, tokens);
                Ok::<(), Infallible>(())
            })
            .await
            .map_err(|e| AuthError::State(e.into_state().to_string()))?;
        self.install(&token);
        Ok(token)
    }

    /// Stores the pair of a new delegated grant (a consent or a device code sign-in): it
    /// replaces the asset's pair, and the Graph token of the previous grant is dropped.
    pub(crate) async fn persist_new_grant(
        &self,
        tokens: StoredTokens,
        now: i64,
    ) -> Result<BearerToken, AuthError> {
        let token = BearerToken {
            secret: tokens.access_token.clone(),
            obtained_at: tokens.obtained_at,
            expires_at: tokens.expires_at,
        };
        self.store
            .update(&self.asset_id, move |s: &mut AssetState| {
                prune_sessions(s, now);
                s.tokens = Some(tokens);
                s.graph_tokens = None;
                Ok::<(), Infallible>(())
            })
            .await
            .map_err(|e| AuthError::State(e.into_state().to_string()))?;
        self.install(&token);
        Ok(token)
    }

    /// Stores a refreshed pair, unless the stored pair no longer holds `redeemed`: a consent
    /// completed meanwhile (consents do not wait for the token lock), and its pair stays. The
    /// stored pair is then used when its access token is fresh, else the refreshed one (in
    /// memory only).
    async fn persist_refreshed(
        &self,
        tokens: StoredTokens,
        redeemed: &SecretString,
        now: i64,
    ) -> Result<BearerToken, AuthError> {
        let token = BearerToken {
            secret: tokens.access_token.clone(),
            obtained_at: tokens.obtained_at,
            expires_at: tokens.expires_at,
        };
        let expected = redeemed.clone();
        let audience = self.audience;
        let written = self
            .store
            .update(&self.asset_id, move |s: &mut AssetState| {
                let replaced = s
                    .tokens
                    .as_ref()
                    .and_then(|t| t.refresh_token.as_ref())
                    .is_some_and(|rt| rt.expose_secret() != expected.expose_secret());
                if replaced {
                    return Err(());
                }
                prune_sessions(s, now);
                put(s, audience, tokens);
                Ok(())
            })
            .await;
        match written {
            Ok(()) => {}
            Err(UpdateError::Inner(())) => {
                tracing::info!(asset = %self.asset_id, "a new pair was stored during the refresh: keeping it");
                if let Some(stored) = self.use_stored(self.load_usable().await?.as_ref()) {
                    return Ok(stored);
                }
            }
            Err(UpdateError::State(e)) => return Err(AuthError::State(e.to_string())),
        }
        self.install(&token);
        Ok(token)
    }

    pub(crate) fn count_fetch(&self, grant: &'static str, ok: bool) {
        metrics::counter!("defender_token_fetches_total",
            "asset" => self.asset_id.clone(),
            "grant" => grant,
            "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
    }

    /// A token request failure as a message for people (never the raw body).
    pub(crate) fn explain(
        &self,
        e: oauth2::RequestTokenError<entra::TransportError, EntraError>,
    ) -> AuthError {
        match e {
            oauth2::RequestTokenError::ServerResponse(err) => AuthError::Refused {
                message: err.explain(&self.tenant_id, &self.client_id),
                code: err.code(),
            },
            oauth2::RequestTokenError::Request(t) => AuthError::Transport(t.0),
            // The Parse variant holds the raw body, which may contain a token: never show it.
            oauth2::RequestTokenError::Parse(_, _) => AuthError::Transport(
                "the token endpoint answered something that is not a token response".to_string(),
            ),
            oauth2::RequestTokenError::Other(msg) => {
                AuthError::Transport(format!("token request failed: {msg}"))
            }
        }
    }
}

/// The stored grant name of tokens of `kind`.
fn grant_of(kind: AuthKind) -> &'static str {
    match kind {
        AuthKind::ClientCredentials => GRANT_CLIENT_CREDENTIALS,
        AuthKind::AuthorizationCode => GRANT_AUTHORIZATION_CODE,
        AuthKind::Certificate => GRANT_CERTIFICATE,
        AuthKind::ManagedIdentity => GRANT_MANAGED_IDENTITY,
        AuthKind::DeviceCode => GRANT_DEVICE_CODE,
    }
}

/// Whether Entra refused the client secret (wrong or expired): worth reading the secret
/// file again.
fn is_refused_secret(err: &EntraError) -> bool {
    matches!(err.code(), Some(7000215 | 7000222)) || err.error == "invalid_client"
}

/// A refused certificate assertion explained, naming the certificate's thumbprint.
fn explain_certificate_refusal(
    err: &EntraError,
    tenant: &str,
    client_id: &str,
    certificate: &ClientCertificate,
) -> String {
    let thumbprint = certificate.thumbprint_sha256();
    match err.code() {
        Some(700027) => format!(
            "certificate rejected (AADSTS700027): the certificate (x5t#S256 {thumbprint}) is \
             not registered for app {client_id} in tenant {tenant}, or the signature did not \
             verify; upload certificate_file to the app registration's certificates: {}",
            err.summary()
        ),
        Some(700024) => format!(
            "client assertion rejected (AADSTS700024): it is outside its validity period; \
             check this machine's clock: {}",
            err.summary()
        ),
        Some(700023) => format!(
            "client assertion rejected (AADSTS700023): its audience is not the token endpoint \
             it was sent to (check login_url): {}",
            err.summary()
        ),
        Some(700021) => format!(
            "client assertion rejected (AADSTS700021): its issuer or subject is not the app \
             {client_id}: {}",
            err.summary()
        ),
        _ => err.explain(tenant, client_id),
    }
}

/// A refusal of the managed identity endpoint as a message for people.
fn explain_identity_refusal(status: reqwest::StatusCode, body: &[u8], which: &str) -> AuthError {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| {
        parsed
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect::<String>()
    };
    let (error, description) = (text("error"), text("error_description"));
    let detail = match (error.is_empty(), description.is_empty()) {
        (false, false) => format!("{error}: {description}"),
        (false, true) => error.clone(),
        (true, false) => description.clone(),
        (true, true) => "no details".to_string(),
    };
    let lower = description.to_ascii_lowercase();
    let advice = if lower.contains("identity not found") {
        format!(
            "{which} is not assigned to the Azure resource the host runs on; assign it, or \
             fix managed_identity_client_id"
        )
    } else if lower.contains("metadata") {
        "the endpoint wants the Metadata header; is managed_identity_url an instance metadata \
         endpoint?"
            .to_string()
    } else if error == "invalid_resource" || lower.contains("aadsts500011") {
        "the Defender API is not available in the identity's tenant: check the environment"
            .to_string()
    } else if status.is_server_error() || status.as_u16() == 429 {
        "the endpoint is busy or failing; try again later".to_string()
    } else {
        format!("{which} could not get a token")
    };
    let message = format!(
        "managed identity token refused (HTTP {}, {detail}): {advice}",
        status.as_u16()
    );
    if status.is_server_error() || status.as_u16() == 429 {
        AuthError::Transport(message)
    } else {
        AuthError::Refused {
            message,
            code: None,
        }
    }
}

/// Whether a refused refresh means only a new consent can help.
fn needs_new_consent(err: &EntraError) -> bool {
    err.is_dead_grant()
        || matches!(
            err.error.as_str(),
            "invalid_grant" | "interaction_required" | "consent_required"
        )
}

/// Puts `tokens` in `audience`'s place in the state: the Defender pair, or the Graph access
/// token (whose refresh token, when the grant rotated it, replaces the asset's one).
fn put(s: &mut AssetState, audience: Audience, tokens: StoredTokens) {
    match audience {
        Audience::Defender => s.tokens = Some(tokens),
        Audience::Graph => {
            if let Some(rt) = tokens.refresh_token.clone()
                && let Some(pair) = s.tokens.as_mut()
            {
                pair.refresh_token = Some(rt);
            }
            s.graph_tokens = Some(StoredTokens {
                refresh_token: None,
                ..tokens
            });
        }
    }
}

/// Drops consent sessions and tickets that have expired at `now`.
pub(crate) fn prune_sessions(state: &mut AssetState, now: i64) {
    state.consent_sessions.retain(|s| s.expires_at > now);
    state.consent_tickets.retain(|t| t.expires_at > now);
}

impl TokenSource for TokenManager {
    fn token(&self) -> BoxFuture<'_, Result<SecretString, DefenderError>> {
        Box::pin(async move {
            let token = TokenManager::token(self).await.map_err(|e| {
                preflight::record_error(&e);
                DefenderError::Auth(e.to_string())
            })?;
            // The action's permission preflight, when the token was not at hand before.
            if let Some(message) = preflight::check_in_scope(self, &token) {
                return Err(DefenderError::Auth(message));
            }
            Ok(token.secret)
        })
    }

    fn invalidate(&self, rejected: &SecretString) {
        TokenManager::invalidate(self, rejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_margin_is_a_fifth_up_to_five_minutes() {
        // One hour: renewed in the last 5 minutes.
        assert!(is_fresh(0, 3600, 3600 - 301));
        assert!(!is_fresh(0, 3600, 3600 - 300));
        // Ten minutes: renewed in the last 2 minutes.
        assert!(is_fresh(0, 600, 600 - 121));
        assert!(!is_fresh(0, 600, 600 - 120));
        // Expired, or nonsense.
        assert!(!is_fresh(0, 10, 11));
        assert!(!is_fresh(10, 0, 5));
    }

    #[test]
    fn dead_grants_need_consent() {
        let e = |error: &str, code: Option<u64>| EntraError {
            error: error.into(),
            error_codes: code.into_iter().collect(),
            ..Default::default()
        };
        assert!(needs_new_consent(&e("invalid_grant", Some(70008))));
        assert!(needs_new_consent(&e("invalid_grant", Some(700082))));
        assert!(needs_new_consent(&e("invalid_grant", Some(50173))));
        assert!(needs_new_consent(&e("invalid_grant", None)));
        assert!(needs_new_consent(&e("interaction_required", Some(50076))));
        assert!(!needs_new_consent(&e("invalid_client", Some(7000215))));
        assert!(!needs_new_consent(&e("temporarily_unavailable", None)));
    }
}
