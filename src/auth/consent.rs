//! Interactive consent: tickets, sessions and the check of who consented.
//!
//! 1. An authenticated caller (`POST /assets/{asset}/consent`, or `test_connectivity`) gets a
//!    single-use **ticket** link `/start_oauth?ticket=<asset_id>.<random>` (256 bits, 10
//!    minutes). Only the ticket's SHA-256 is stored, in the asset's state file, so any host
//!    sharing the state directory accepts it. Pending tickets and sessions are capped per asset;
//!    when the cap is reached the newest request is refused and nothing older is evicted.
//! 2. `/start_oauth` trades a valid ticket for a **session**: a random single-use `state` bound
//!    to the asset, a PKCE S256 pair and a browser-binding value the page sets as a cookie. A
//!    request without a valid ticket writes nothing.
//! 3. `/result` must come from the same browser (the cookie's hash matches the session's), then
//!    exchanges the code with the verifier and the exact redirect URI, and checks **who
//!    consented**: the token's `tid` is the asset's tenant (a domain is resolved to its id once),
//!    its `aud` is the Defender resource, and the user is one of `allowed_consenters` when that
//!    is set. Only then is the token pair stored, in the same update that removes the session.
//!
//! A session is used once: a failed exchange consumes it too. A refused consenter, and unknown,
//! replayed, expired, foreign-browser or incomplete answers change nothing stored.

use std::convert::Infallible;

use base64::Engine;
use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::tokens::{BearerToken, GRANT_AUTHORIZATION_CODE, TokenManager, prune_sessions};
use super::{Grants, now_unix};
use crate::config::{AuthKind, TokenEndpoint};
use crate::state::{AssetState, ConsentSession, ConsentTicket, UpdateError};

/// How long a consent session lives, in seconds.
pub const SESSION_LIFETIME_SECS: i64 = 600;
/// How long a consent ticket lives, in seconds.
pub const TICKET_LIFETIME_SECS: i64 = 600;
/// Most pending consents (tickets and sessions together) per asset; past it new ones are
/// refused and nothing pending is dropped.
pub const MAX_PENDING: usize = 8;
/// How many recently used states and tickets are remembered to recognise a replay.
const REMEMBERED_CONSUMED: usize = 256;

/// Audiences a Defender for Endpoint token may carry besides the configured resource: the
/// legacy resource URI and the API's application id.
const DEFENDER_AUDIENCES: [&str; 2] = [
    "https://api.securitycenter.windows.com",
    "fc780465-2017-40d4-a0c5-307022471b92",
];

/// A new random value for `asset_id`: the id, a dot, 32 random bytes as base64url.
pub fn new_state(asset_id: &str) -> String {
    format!("{asset_id}.{}", random_token())
}

/// 32 random bytes as base64url (43 characters).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256 of a state, ticket or browser value (what the state file keeps).
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

/// The asset id a state or ticket claims to belong to, when it has the right shape.
pub fn asset_of_state(state: &str) -> Option<&str> {
    let (asset, random) = state.split_once('.')?;
    let random_ok = random.len() >= 43
        && random.len() <= 128
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (is_asset_id(asset) && random_ok).then_some(asset)
}

/// Whether a browser-binding cookie value has the shape this host issues.
pub fn is_browser_value(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A single-use consent link for an admin's browser.
pub struct Ticket {
    /// `{public_url}/start_oauth?ticket=…` (a secret until used: never logged).
    pub url: SecretString,
    /// Seconds it stays valid.
    pub expires_in: i64,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Why no ticket was issued or no session opened from one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TicketError {
    /// The asset does not use interactive consent.
    #[error("asset '{asset_id}' uses {auth} and needs no browser consent")]
    NotInteractive {
        /// The asset.
        asset_id: String,
        /// Its auth kind.
        auth: AuthKind,
    },
    /// Too many consents are pending for this asset.
    #[error(
        "asset '{asset_id}' already has {MAX_PENDING} consents pending: complete one, or wait until they expire (at most {} minutes)",
        TICKET_LIFETIME_SECS / 60
    )]
    TooMany {
        /// The asset.
        asset_id: String,
    },
    /// No pending ticket has this value (forged, for another asset, or expired and pruned).
    #[error("this consent link is not valid for asset '{asset_id}': it is unknown or expired")]
    Unknown {
        /// The asset.
        asset_id: String,
    },
    /// The ticket was already used.
    #[error("this consent link for asset '{asset_id}' was already used; each link works once")]
    Used {
        /// The asset.
        asset_id: String,
    },
    /// The state file could not be read or written (details in the log only).
    #[error("{0}")]
    State(String),
}

/// A consent session opened from a ticket: where to send the browser and the value of the
/// cookie that binds the session to it.
pub struct Opened {
    /// The Entra authorize URL.
    pub authorize_url: String,
    /// The browser-binding cookie value (secret).
    pub browser: SecretString,
}

/// Who signed in and consented, read from the token's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consenter {
    /// User principal name (`upn`, `preferred_username`, `unique_name` or `email`), if any.
    pub upn: Option<String>,
    /// Object id, if any.
    pub oid: Option<String>,
    /// Tenant id the token was issued in.
    pub tid: Option<String>,
}

impl Consenter {
    /// Reads the consenter from a token's claims.
    pub fn from_token(token: &str) -> Option<Consenter> {
        let claims = super::claims(token)?;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Some(Consenter {
            upn: text("upn")
                .or_else(|| text("preferred_username"))
                .or_else(|| text("unique_name"))
                .or_else(|| text("email")),
            oid: text("oid"),
            tid: text("tid"),
        })
    }

    /// `upn (oid)`, or whichever is known; for pages and logs.
    pub fn label(&self) -> String {
        match (&self.upn, &self.oid) {
            (Some(u), Some(o)) => format!("{u} (object id {o})"),
            (Some(u), None) => u.clone(),
            (None, Some(o)) => format!("object id {o}"),
            (None, None) => "an unidentified user".to_string(),
        }
    }

    /// Whether the user is one of `allowed` (UPNs compared ignoring case, object ids too).
    pub fn is_one_of(&self, allowed: &[String]) -> bool {
        allowed.iter().any(|a| {
            self.upn
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(a))
                || self
                    .oid
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(a))
        })
    }
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
    /// Who connected the asset.
    pub consenter: Consenter,
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
    /// The answer came from a browser other than the one that opened the session.
    #[error("the consent answer for asset '{asset_id}' came from another browser")]
    OtherBrowser {
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
    /// The token is for the wrong tenant or resource, or the user may not connect the asset;
    /// nothing is stored (the file is not even rewritten).
    #[error("the consent for asset '{asset_id}' was refused: {reason}")]
    Refused {
        /// The asset.
        asset_id: String,
        /// Why, naming the user (never a token).
        reason: String,
        /// Who signed in, when the token said.
        consenter: Option<Consenter>,
    },
    /// The state file could not be read or written.
    #[error("{0}")]
    State(String),
}

impl TokenManager {
    fn ensure_interactive(&self) -> Result<(), TicketError> {
        if self.auth == AuthKind::AuthorizationCode {
            Ok(())
        } else {
            Err(TicketError::NotInteractive {
                asset_id: self.asset_id.clone(),
                auth: self.auth,
            })
        }
    }

    /// Issues a single-use consent link (for an authenticated caller).
    pub async fn issue_ticket(&self) -> Result<Ticket, TicketError> {
        self.ensure_interactive()?;
        let ticket = new_state(&self.asset_id);
        let now = now_unix();
        let entry = ConsentTicket {
            ticket_hash: hash_state(&ticket),
            created_at: now,
            expires_at: now + TICKET_LIFETIME_SECS,
        };
        self.store
            .update(&self.asset_id, move |s: &mut AssetState| {
                prune_sessions(s, now);
                if s.consent_tickets.len() + s.consent_sessions.len() >= MAX_PENDING {
                    return Err(());
                }
                s.consent_tickets.push(entry);
                Ok(())
            })
            .await
            .map_err(|e| match e {
                UpdateError::Inner(()) => TicketError::TooMany {
                    asset_id: self.asset_id.clone(),
                },
                UpdateError::State(e) => TicketError::State(e.to_string()),
            })?;
        tracing::info!(asset = %self.asset_id, "consent link issued");
        Ok(Ticket {
            url: SecretString::from(format!("{}/start_oauth?ticket={ticket}", self.public_url)),
            expires_in: TICKET_LIFETIME_SECS,
        })
    }

    /// Trades a valid ticket for a consent session bound to the browser that presented it,
    /// and answers the authorize URL. An invalid ticket changes nothing stored.
    pub async fn open_session(&self, ticket: &str) -> Result<Opened, TicketError> {
        self.ensure_interactive()?;
        let ticket_hash = hash_state(ticket);
        let now = now_unix();
        // Read first: a wrong ticket never takes the write lock or rewrites the file.
        let loaded = self
            .store
            .load(&self.asset_id)
            .await
            .map_err(|e| TicketError::State(e.to_string()))?;
        if !loaded
            .consent_tickets
            .iter()
            .any(|t| t.ticket_hash == ticket_hash && t.expires_at > now)
        {
            return Err(self.unknown_ticket(&ticket_hash));
        }
        let state = new_state(&self.asset_id);
        let browser = random_token();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let session = ConsentSession {
            state_hash: hash_state(&state),
            verifier: SecretString::from(verifier.into_secret()),
            created_at: now,
            expires_at: now + SESSION_LIFETIME_SECS,
            browser_hash: Some(hash_state(&browser)),
        };
        let traded = self
            .store
            .update(&self.asset_id, {
                let ticket_hash = ticket_hash.clone();
                move |s: &mut AssetState| {
                    prune_sessions(s, now);
                    let before = s.consent_tickets.len();
                    s.consent_tickets.retain(|t| t.ticket_hash != ticket_hash);
                    if s.consent_tickets.len() == before {
                        // Used (or expired) meanwhile.
                        return Err(());
                    }
                    s.consent_sessions.push(session);
                    Ok(())
                }
            })
            .await;
        match traded {
            Ok(()) => {}
            Err(UpdateError::Inner(())) => return Err(self.unknown_ticket(&ticket_hash)),
            Err(UpdateError::State(e)) => return Err(TicketError::State(e.to_string())),
        }
        self.remember_consumed(ticket_hash, now);
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
        tracing::info!(asset = %self.asset_id, "consent session opened from a consent link");
        Ok(Opened {
            authorize_url: url.to_string(),
            browser: SecretString::from(browser),
        })
    }

    fn unknown_ticket(&self, hash: &str) -> TicketError {
        let asset_id = self.asset_id.clone();
        if self.was_consumed(hash) {
            TicketError::Used { asset_id }
        } else {
            TicketError::Unknown { asset_id }
        }
    }

    /// Whether `state` names a pending, unexpired session of this asset opened by the browser
    /// holding `browser` (read-only).
    pub async fn has_session(&self, state: &str, browser: Option<&str>) -> bool {
        let hash = hash_state(state);
        let now = now_unix();
        match self.store.load(&self.asset_id).await {
            Ok(s) => s
                .consent_sessions
                .iter()
                .any(|c| c.state_hash == hash && c.expires_at > now && same_browser(c, browser)),
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

    /// The tenant id (GUID) tokens of this asset must carry: the configured one, or the id a
    /// configured domain resolves to (asked once from the tenant's OpenID configuration).
    async fn tenant_guid(&self) -> Result<String, String> {
        if uuid::Uuid::parse_str(&self.tenant_id).is_ok() {
            return Ok(self.tenant_id.to_ascii_lowercase());
        }
        self.tenant_guid
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/{}/v2.0/.well-known/openid-configuration",
                    self.login_url, self.tenant_id
                );
                let fail = |what: &str| {
                    format!(
                        "tenant '{}' could not be resolved to its id ({what}), so the consenting user's tenant cannot be checked",
                        self.tenant_id
                    )
                };
                let resp = self
                    .http
                    .0
                    .get(&url)
                    .send()
                    .await
                    .map_err(|_| fail("the OpenID configuration could not be fetched"))?;
                if !resp.status().is_success() {
                    return Err(fail(&format!(
                        "the OpenID configuration answered HTTP {}",
                        resp.status().as_u16()
                    )));
                }
                let body: Value = resp
                    .json()
                    .await
                    .map_err(|_| fail("the OpenID configuration is not JSON"))?;
                let issuer = body.get("issuer").and_then(Value::as_str).unwrap_or_default();
                issuer
                    .split('/')
                    .find(|part| uuid::Uuid::parse_str(part).is_ok())
                    .map(str::to_ascii_lowercase)
                    .ok_or_else(|| fail("its issuer names no tenant id"))
            })
            .await
            .cloned()
    }

    /// Checks who consented: tenant, audience and the allowed users.
    pub(crate) async fn check_consenter(
        &self,
        access_token: &str,
    ) -> Result<Consenter, ConsentError> {
        let refuse = |reason: String, consenter: Option<Consenter>| ConsentError::Refused {
            asset_id: self.asset_id.clone(),
            reason,
            consenter,
        };
        let Some(claims) = super::claims(access_token) else {
            return Err(refuse(
                "the access token's claims cannot be read, so who consented cannot be checked"
                    .to_string(),
                None,
            ));
        };
        let consenter = Consenter::from_token(access_token).unwrap_or_default();
        let who = consenter.label();
        let expected = self
            .tenant_guid()
            .await
            .map_err(|reason| refuse(reason, Some(consenter.clone())))?;
        match consenter.tid.as_deref() {
            Some(tid) if tid.eq_ignore_ascii_case(&expected) => {}
            Some(tid) => {
                return Err(refuse(
                    format!(
                        "{who} signed in from tenant {tid}, but the asset belongs to tenant {}",
                        self.tenant_id
                    ),
                    Some(consenter),
                ));
            }
            None => {
                return Err(refuse(
                    format!("the token of {who} names no tenant"),
                    Some(consenter),
                ));
            }
        }
        let aud = claims
            .get("aud")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let trimmed = aud.trim_end_matches('/');
        let aud_ok = trimmed.eq_ignore_ascii_case(self.resource.trim_end_matches('/'))
            || DEFENDER_AUDIENCES
                .iter()
                .any(|a| trimmed.eq_ignore_ascii_case(a));
        if !aud_ok {
            return Err(refuse(
                format!(
                    "the token of {who} is for '{}', not the Defender API ({})",
                    crate::actions::truncate(aud, 200),
                    self.resource
                ),
                Some(consenter),
            ));
        }
        if !self.allowed_consenters.is_empty() && !consenter.is_one_of(&self.allowed_consenters) {
            return Err(refuse(
                format!(
                    "{who} is not among the users allowed to connect this asset (allowed_consenters)"
                ),
                Some(consenter),
            ));
        }
        Ok(consenter)
    }

    /// Ends the consent session named by `state` with the authorization `code`, for the
    /// browser holding the session's cookie value `browser`: exchanges the code (with the
    /// session's PKCE verifier and the exact redirect URI), checks who consented, and stores
    /// the token pair, removing the session in the same update.
    pub async fn complete_consent(
        &self,
        state: &str,
        code: Option<&str>,
        browser: Option<&str>,
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
        if !same_browser(&session, browser) {
            return Err(ConsentError::OtherBrowser { asset_id });
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

        let checked = match result {
            Ok(response) => {
                let tokens =
                    self.stored_from(&response, obtained_at, GRANT_AUTHORIZATION_CODE, None);
                match self
                    .check_consenter(tokens.access_token.expose_secret())
                    .await
                {
                    Ok(consenter) => Ok((tokens, consenter)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                let message = self.explain(e).to_string();
                tracing::warn!(asset = %self.asset_id, error = %message, "consent code exchange failed");
                Err(ConsentError::Exchange {
                    asset_id: asset_id.clone(),
                    message,
                })
            }
        };
        let (tokens, consenter) = match checked {
            Ok(ok) => ok,
            Err(e) => {
                if let ConsentError::Refused { reason, .. } = &e {
                    // Nothing is written: the file stays as it was. The session stays bound to
                    // this browser, so the admin can sign in again with an allowed account.
                    tracing::warn!(asset = %self.asset_id, reason = %reason, "consent refused: nothing stored");
                    return Err(e);
                }
                // A failed exchange uses the session up.
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
                return Err(e);
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
                    // A Graph token of an earlier grant is not this user's.
                    s.graph_tokens = None;
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
        tracing::info!(asset = %self.asset_id, connected_by = %consenter.label(), refresh_token = has_refresh, "consent completed: asset connected");
        Ok(Connected {
            asset_id,
            grants: token.grants(),
            expires_in: token.expires_at - obtained_at,
            refresh_token: has_refresh,
            consenter,
        })
    }
}

/// Whether `browser` (the cookie value presented) is the one the session was opened for.
fn same_browser(session: &ConsentSession, browser: Option<&str>) -> bool {
    match (&session.browser_hash, browser) {
        (Some(expected), Some(value)) => {
            bool::from(expected.as_bytes().ct_eq(hash_state(value).as_bytes()))
        }
        _ => false,
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

    fn jwt(claims: &str) -> String {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", enc(r#"{"alg":"none"}"#), enc(claims))
    }

    #[test]
    fn consenters_are_read_from_any_user_claim() {
        let c = Consenter::from_token(&jwt(
            r#"{"tid":"T","oid":"O","upn":"a@b.c","preferred_username":"x@y.z"}"#,
        ))
        .unwrap();
        assert_eq!(c.upn.as_deref(), Some("a@b.c"));
        assert_eq!(c.label(), "a@b.c (object id O)");
        let c = Consenter::from_token(&jwt(r#"{"preferred_username":"x@y.z"}"#)).unwrap();
        assert_eq!(c.upn.as_deref(), Some("x@y.z"));
        assert!(c.oid.is_none() && c.tid.is_none());
        let c = Consenter::from_token(&jwt(r#"{"unique_name":"u@d.e","oid":""}"#)).unwrap();
        assert_eq!(c.label(), "u@d.e");
        assert!(Consenter::from_token("opaque-token").is_none());
        assert!(Consenter::from_token(&jwt("[1,2]")).is_none());
        assert_eq!(Consenter::default().label(), "an unidentified user");
    }

    #[test]
    fn allowed_consenters_match_upn_or_object_id_ignoring_case() {
        let c = Consenter {
            upn: Some("Admin@Contoso.com".into()),
            oid: Some("0D3B1F7E-52A4-4C1E-9A0B-6C2D8E4F1A01".into()),
            tid: None,
        };
        assert!(c.is_one_of(&["admin@contoso.com".into()]));
        assert!(c.is_one_of(&["0d3b1f7e-52a4-4c1e-9a0b-6c2d8e4f1a01".into()]));
        assert!(!c.is_one_of(&["analyst@contoso.com".into()]));
        assert!(!c.is_one_of(&[]));
        assert!(!Consenter::default().is_one_of(&["".into()]));
    }

    #[test]
    fn a_session_accepts_only_its_browser() {
        let browser = random_token();
        let session = ConsentSession {
            state_hash: String::new(),
            verifier: SecretString::from("v"),
            created_at: 0,
            expires_at: 1,
            browser_hash: Some(hash_state(&browser)),
        };
        assert!(is_browser_value(&browser));
        assert!(same_browser(&session, Some(&browser)));
        assert!(!same_browser(&session, Some(&random_token())));
        assert!(!same_browser(&session, None));
        let legacy = ConsentSession {
            browser_hash: None,
            ..session
        };
        assert!(!same_browser(&legacy, Some(&browser)));
        assert!(!is_browser_value("short"));
        assert!(!is_browser_value(&format!("{}=", "a".repeat(42))));
    }

    #[test]
    fn asset_ids() {
        assert!(is_asset_id("a-b_C9"));
        assert!(!is_asset_id(""));
        assert!(!is_asset_id(&"a".repeat(65)));
        assert!(!is_asset_id("a.b"));
    }
}
