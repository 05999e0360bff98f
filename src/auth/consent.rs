//! Interactive consent sessions: `/start_oauth` opens one, `/result` ends it.
//!
//! A session is a random single-use `state` bound to the asset (`<asset_id>.<43 characters of
//! base64url randomness>`, 256 bits) and a PKCE S256 pair, valid 10 minutes. Only the SHA-256
//! of the state and the (encrypted) verifier are stored, in the asset's state file. The asset id
//! prefix lets `/result` find the file; the hash proves the state was issued for that asset.
//! Completing a session exchanges the code with the verifier and the exact redirect URI, and
//! stores the token pair and removes the session in one state-file update. A session is used
//! once: a failed exchange consumes it too. Unknown, replayed, expired or incomplete answers
//! change nothing stored.

use std::convert::Infallible;

use base64::Engine;
use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::tokens::{BearerToken, GRANT_AUTHORIZATION_CODE, TokenManager, prune_sessions};
use super::{AuthError, Grants, now_unix};
use crate::config::{AuthKind, TokenEndpoint};
use crate::state::{AssetState, ConsentSession, UpdateError};

/// How long a consent session lives, in seconds.
pub const SESSION_LIFETIME_SECS: i64 = 600;
/// Most pending sessions kept per asset (the oldest is dropped; `/start_oauth` is public).
pub const MAX_PENDING_SESSIONS: usize = 16;
/// How many recently used states are remembered to recognise a replay.
const REMEMBERED_CONSUMED: usize = 256;

/// A new random state for `asset_id`: the id, a dot, 32 random bytes as base64url.
pub fn new_state(asset_id: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{asset_id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Hex SHA-256 of a state value (what the state file keeps).
pub fn hash_state(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `id` has the shape of an asset id (`[A-Za-z0-9_-]{1,64}`).
pub fn is_asset_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The asset id a state claims to belong to, when it has the right shape.
pub fn asset_of_state(state: &str) -> Option<&str> {
    let (asset, random) = state.split_once('.')?;
    let random_ok = random.len() >= 43
        && random.len() <= 128
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (is_asset_id(asset) && random_ok).then_some(asset)
}

/// A consent completed: the asset is connected.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The asset.
    pub asset_id: String,
    /// What the new token grants (display only).
    pub grants: Grants,
    /// Seconds of validity of the access token.
    pub expires_in: i64,
    /// Whether a refresh token came with it (without one, consent is needed again at expiry).
    pub refresh_token: bool,
}

/// Why a consent answer was not accepted. Nothing stored changed, except that a session
/// whose code exchange failed is used up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsentError {
    /// No session of this asset has this state (forged, for another asset, or from before a
    /// restart that lost the memory of it being used).
    #[error("the consent answer's state is unknown for asset '{asset_id}'")]
    Unknown {
        /// The asset the state names.
        asset_id: String,
    },
    /// The session was already used.
    #[error("the consent answer for asset '{asset_id}' was already used")]
    Replayed {
        /// The asset.
        asset_id: String,
    },
    /// The session's 10 minutes are over.
    #[error("the consent session for asset '{asset_id}' expired")]
    Expired {
        /// The asset.
        asset_id: String,
    },
    /// The answer carried no code.
    #[error("the consent answer for asset '{asset_id}' carried no authorization code")]
    MissingCode {
        /// The asset.
        asset_id: String,
    },
    /// Entra refused the code; the session is used up.
    #[error("the authorization code for asset '{asset_id}' could not be exchanged: {message}")]
    Exchange {
        /// The asset.
        asset_id: String,
        /// The explained Entra error (no secrets).
        message: String,
    },
    /// The state file could not be read or written.
    #[error("{0}")]
    State(String),
}

impl TokenManager {
    /// Opens a consent session and answers the authorize URL to send the admin to.
    pub async fn start_consent(&self) -> Result<String, AuthError> {
        if self.auth != AuthKind::AuthorizationCode {
            return Err(AuthError::Config(format!(
                "asset '{}' uses client credentials and needs no consent",
                self.asset_id
            )));
        }
        let state = new_state(&self.asset_id);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let now = now_unix();
        let session = ConsentSession {
            state_hash: hash_state(&state),
            verifier: SecretString::from(verifier.into_secret()),
            created_at: now,
            expires_at: now + SESSION_LIFETIME_SECS,
        };
        self.store
            .update(&self.asset_id, move |s: &mut AssetState| {
                prune_sessions(s, now);
                while s.consent_sessions.len() >= MAX_PENDING_SESSIONS {
                    s.consent_sessions.remove(0);
                }
                s.consent_sessions.push(session);
                Ok::<(), Infallible>(())
            })
            .await
            .map_err(|e| AuthError::State(e.into_state().to_string()))?;
        let client = self.client();
        let mut request = client
            .authorize_url(move || CsrfToken::new(state))
            .set_pkce_challenge(challenge)
            .add_extra_param("response_mode", "query");
        request = match self.token_endpoint {
            TokenEndpoint::V2 => request
                .add_scope(Scope::new(self.scope.clone()))
                .add_scope(Scope::new("offline_access".to_string())),
            TokenEndpoint::V1 => request.add_extra_param("resource", self.resource.clone()),
        };
        let (url, _) = request.url();
        tracing::info!(asset = %self.asset_id, "consent session opened");
        Ok(url.to_string())
    }

    /// Whether `state` names a pending, unexpired session of this asset (read-only).
    pub async fn has_session(&self, state: &str) -> bool {
        let hash = hash_state(state);
        let now = now_unix();
        match self.store.load(&self.asset_id).await {
            Ok(s) => s
                .consent_sessions
                .iter()
                .any(|c| c.state_hash == hash && c.expires_at > now),
            Err(_) => false,
        }
    }

    fn remember_consumed(&self, hash: String, now: i64) {
        let mut q = self.consumed.lock().unwrap_or_else(|p| p.into_inner());
        q.retain(|(_, until)| *until > now);
        if q.len() >= REMEMBERED_CONSUMED {
            q.pop_front();
        }
        q.push_back((hash, now + SESSION_LIFETIME_SECS * 6));
    }

    fn was_consumed(&self, hash: &str) -> bool {
        let q = self.consumed.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().any(|(h, _)| h == hash)
    }

    /// Ends the consent session named by `state` with the authorization `code`: exchanges the
    /// code (with the session's PKCE verifier and the exact redirect URI) and stores the token
    /// pair, removing the session in the same update.
    pub async fn complete_consent(
        &self,
        state: &str,
        code: Option<&str>,
    ) -> Result<Connected, ConsentError> {
        let asset_id = self.asset_id.clone();
        if self.auth != AuthKind::AuthorizationCode {
            return Err(ConsentError::Unknown { asset_id });
        }
        let hash = hash_state(state);
        // Completions and refreshes of one asset take turns.
        let _flight = self.flight.lock().await;
        let loaded = self
            .store
            .load(&self.asset_id)
            .await
            .map_err(|e| ConsentError::State(e.to_string()))?;
        let Some(session) = loaded
            .consent_sessions
            .iter()
            .find(|s| s.state_hash == hash)
            .cloned()
        else {
            return Err(if self.was_consumed(&hash) {
                ConsentError::Replayed { asset_id }
            } else {
                ConsentError::Unknown { asset_id }
            });
        };
        let now = now_unix();
        if session.expires_at <= now {
            return Err(ConsentError::Expired { asset_id });
        }
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            return Err(ConsentError::MissingCode { asset_id });
        };

        let client = self.client();
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(
                session.verifier.expose_secret().to_string(),
            ));
        request = match self.token_endpoint {
            TokenEndpoint::V2 => {
                request.add_extra_param("scope", format!("{} offline_access", self.scope))
            }
            TokenEndpoint::V1 => request.add_extra_param("resource", self.resource.clone()),
        };
        let obtained_at = now_unix();
        let result = request.request_async(&self.http).await;
        metrics::counter!("defender_token_fetches_total",
            "asset" => self.asset_id.clone(),
            "grant" => GRANT_AUTHORIZATION_CODE,
            "outcome" => if result.is_ok() { "ok" } else { "error" })
        .increment(1);
        self.remember_consumed(hash.clone(), now);

        let tokens = match result {
            Ok(response) => {
                self.stored_from(&response, obtained_at, GRANT_AUTHORIZATION_CODE, None)
            }
            Err(e) => {
                let message = self.explain(e).to_string();
                tracing::warn!(asset = %self.asset_id, error = %message, "consent code exchange failed");
                // The session is used up either way.
                let consumed = self
                    .store
                    .update(&self.asset_id, {
                        let hash = hash.clone();
                        move |s: &mut AssetState| {
                            prune_sessions(s, now);
                            s.consent_sessions.retain(|c| c.state_hash != hash);
                            Ok::<(), Infallible>(())
                        }
                    })
                    .await;
                if let Err(e) = consumed {
                    tracing::warn!(asset = %self.asset_id, error = %e, "could not remove a used consent session");
                }
                return Err(ConsentError::Exchange { asset_id, message });
            }
        };
        let token = BearerToken {
            secret: tokens.access_token.clone(),
            obtained_at: tokens.obtained_at,
            expires_at: tokens.expires_at,
        };
        let has_refresh = tokens.refresh_token.is_some();
        let stored = self
            .store
            .update(&self.asset_id, {
                let hash = hash.clone();
                move |s: &mut AssetState| {
                    let before = s.consent_sessions.len();
                    s.consent_sessions.retain(|c| c.state_hash != hash);
                    if s.consent_sessions.len() == before {
                        // Someone else used the session meanwhile: keep what they stored.
                        return Err(());
                    }
                    prune_sessions(s, now);
                    s.tokens = Some(tokens);
                    Ok(())
                }
            })
            .await;
        match stored {
            Ok(()) => {}
            Err(UpdateError::Inner(())) => return Err(ConsentError::Replayed { asset_id }),
            Err(UpdateError::State(e)) => return Err(ConsentError::State(e.to_string())),
        }
        self.install(&token);
        self.notify_connected();
        tracing::info!(asset = %self.asset_id, refresh_token = has_refresh, "consent completed: asset connected");
        Ok(Connected {
            asset_id,
            grants: token.grants(),
            expires_in: token.expires_at - obtained_at,
            refresh_token: has_refresh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_long_random_and_name_their_asset() {
        let a = new_state("contoso");
        let b = new_state("contoso");
        assert_ne!(a, b);
        let (prefix, random) = a.split_once('.').unwrap();
        assert_eq!(prefix, "contoso");
        assert_eq!(random.len(), 43);
        assert_eq!(asset_of_state(&a), Some("contoso"));
        assert_eq!(asset_of_state("contoso"), None);
        assert_eq!(asset_of_state("contoso.short"), None);
        assert_eq!(asset_of_state(&format!("../x.{random}")), None);
        assert_eq!(asset_of_state(&format!("a.{random}<")), None);
        assert_eq!(asset_of_state(&format!(".{random}")), None);
    }

    #[test]
    fn state_hash_is_hex_sha256() {
        assert_eq!(
            hash_state("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn asset_ids() {
        assert!(is_asset_id("a-b_C9"));
        assert!(!is_asset_id(""));
        assert!(!is_asset_id(&"a".repeat(65)));
        assert!(!is_asset_id("a.b"));
    }
}
