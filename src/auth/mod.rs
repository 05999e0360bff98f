//! Tokens from Entra ID for each asset: cached in memory, fetched ahead of expiry, one fetch
//! in flight per asset shared by every concurrent caller.

pub mod entra;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::future::BoxFuture;
use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, Scope, StandardRevocableToken,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::{AssetConfig, TokenEndpoint};
use crate::defender::{DefenderError, TokenSource};
use entra::{EntraError, EntraTokenResponse, OAuthHttp};

type EntraClient = oauth2::Client<
    EntraError,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why a token could not be had. Messages are for people and never carry a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Entra refused (bad secret, unknown tenant, ...).
    #[error("{message}")]
    Refused {
        /// Explained message with the AADSTS code.
        message: String,
        /// The AADSTS code.
        code: Option<u64>,
    },
    /// The token endpoint could not be reached or answered garbage.
    #[error("{0}")]
    Transport(String),
    /// The asset's configuration cannot produce a token request.
    #[error("{0}")]
    Config(String),
}

/// What a token grants, decoded from its claims (for display only, never trusted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `roles` (application permissions) or `scp` (delegated) entries.
    pub permissions: Vec<String>,
    /// `roles` or `scp`, whichever the token carried.
    pub claim: &'static str,
    /// Token version claim (`1.0` / `2.0`).
    pub version: Option<String>,
}

/// Decodes the permissions of a JWT access token without verifying it (display only).
pub fn decode_grants(token: &str) -> Grants {
    let payload = token.split('.').nth(1).unwrap_or_default();
    let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let version = claims
        .get("ver")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(roles) = claims.get("roles").and_then(Value::as_array) {
        return Grants {
            permissions: roles
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            claim: "roles",
            version,
        };
    }
    if let Some(scp) = claims.get("scp").and_then(Value::as_str) {
        return Grants {
            permissions: scp.split_whitespace().map(str::to_string).collect(),
            claim: "scp",
            version,
        };
    }
    Grants {
        version,
        ..Grants::default()
    }
}

struct Cached {
    token: SecretString,
    fetched: Instant,
    lifetime: Duration,
}

impl Cached {
    /// Usable when more than a fifth of its life (at most 5 minutes) is left.
    fn fresh(&self) -> bool {
        let margin = (self.lifetime / 5).min(Duration::from_secs(300));
        self.fetched.elapsed() + margin < self.lifetime
    }
}

/// A fetched token and what it grants.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    /// Lifetime Entra gave it.
    pub expires_in: Duration,
    /// Decoded grants.
    pub grants: Grants,
}

/// The tokens of one client-credentials asset.
pub struct AssetTokens {
    asset_id: String,
    tenant_id: String,
    client_id: String,
    client: EntraClient,
    token_endpoint: TokenEndpoint,
    resource: String,
    scope: String,
    http: OAuthHttp,
    cache: Mutex<Option<Cached>>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl AssetTokens {
    /// Builds the token manager of an asset.
    pub fn new(asset: &AssetConfig, http: reqwest::Client) -> Result<AssetTokens, AuthError> {
        let token_url = TokenUrl::new(asset.token_url()).map_err(|_| {
            AuthError::Config(format!(
                "asset {}: token URL {} is not a valid URL",
                asset.id,
                asset.token_url()
            ))
        })?;
        let client = oauth2::Client::new(ClientId::new(asset.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                asset.client_secret.expose_secret().to_string(),
            ))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        Ok(AssetTokens {
            asset_id: asset.id.clone(),
            tenant_id: asset.tenant_id.clone(),
            client_id: asset.client_id.clone(),
            client,
            token_endpoint: asset.token_endpoint,
            resource: asset.resource.clone(),
            scope: asset.scope(),
            http: OAuthHttp(http),
            cache: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<SecretString> {
        let guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|c| c.fresh())
            .map(|c| c.token.clone())
    }

    /// A valid token: the cached one, or one fetched now (one fetch at a time per asset).
    pub async fn current(&self) -> Result<SecretString, AuthError> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _guard = self.fetch_lock.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        self.fetch().await.map(|(token, _)| token)
    }

    /// Always asks Entra for a new token (used by test_connectivity to check credentials).
    pub async fn fetch_fresh(&self) -> Result<FetchedToken, AuthError> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch().await.map(|(_, f)| f)
    }

    async fn fetch(&self) -> Result<(SecretString, FetchedToken), AuthError> {
        let mut request = self.client.exchange_client_credentials();
        request = match self.token_endpoint {
            TokenEndpoint::V2 => request.add_scope(Scope::new(self.scope.clone())),
            TokenEndpoint::V1 => request.add_extra_param("resource", self.resource.clone()),
        };
        let started = Instant::now();
        let result = request.request_async(&self.http).await;
        metrics::counter!("defender_token_fetches_total",
            "asset" => self.asset_id.clone(),
            "grant" => "client_credentials",
            "outcome" => if result.is_ok() { "ok" } else { "error" })
        .increment(1);
        let response = result.map_err(|e| self.explain(e))?;
        let expires_in = response
            .expires_in()
            .unwrap_or(Duration::from_secs(3599))
            .max(Duration::from_secs(1));
        let token = SecretString::from(response.access_token().secret().clone());
        let grants = decode_grants(token.expose_secret());
        tracing::info!(asset = %self.asset_id, expires_in = expires_in.as_secs(), "access token fetched");
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            token: token.clone(),
            fetched: started,
            lifetime: expires_in,
        });
        Ok((token, FetchedToken { expires_in, grants }))
    }

    fn explain(
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

impl TokenSource for AssetTokens {
    fn token(&self) -> BoxFuture<'_, Result<SecretString, DefenderError>> {
        Box::pin(async move {
            self.current()
                .await
                .map_err(|e| DefenderError::Auth(e.to_string()))
        })
    }

    fn invalidate(&self, rejected: &SecretString) {
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if guard
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == rejected.expose_secret())
        {
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_decode_roles_and_scp() {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let t = format!(
            "h.{}.s",
            enc(r#"{"roles":["Machine.Isolate","Machine.Read.All"],"ver":"1.0"}"#)
        );
        let g = decode_grants(&t);
        assert_eq!(g.claim, "roles");
        assert_eq!(g.permissions, vec!["Machine.Isolate", "Machine.Read.All"]);
        let t = format!("h.{}.s", enc(r#"{"scp":"Machine.Read Alert.Read"}"#));
        assert_eq!(decode_grants(&t).permissions.len(), 2);
        assert_eq!(decode_grants("garbage").permissions.len(), 0);
    }
}
