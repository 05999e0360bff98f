//! Device code sign-in (`auth = "device_code"`): for admins without a browser next to the host.
//!
//! [`TokenManager::start_device_code`] asks Entra for a device code (`/devicecode` of the
//! asset's endpoint version) and answers what the admin needs: the user code, the page to
//! enter it on and Entra's message. One background task per asset then polls the token
//! endpoint at the interval Entra gave (5 seconds more after each `slow_down`), retrying
//! transport failures, until the admin signs in, declines, or the code expires. A sign-in
//! stores the token pair like an interactive consent (one state-file update), puts the access
//! token in use and wakes `test_connectivity` callers waiting for a consent; refreshes then run
//! as for consented assets.
//!
//! At most one sign-in is pending per asset: starting again while one is pending answers the
//! same code (a new one once it expired). The outcome is published on a watch channel
//! ([`TokenManager::device_code_outcome`]). The device code itself never leaves this module:
//! it is not logged, not stored and not part of any answer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::entra::{EntraError, EntraTokenResponse, number_or_string};
use super::tokens::{GRANT_DEVICE_CODE, TokenManager};
use super::{AuthError, now_unix};
use crate::config::{AuthKind, TokenEndpoint};

/// The grant type of device code polls.
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Seconds added to the interval after each `slow_down`.
const SLOW_DOWN_SECS: u64 = 5;
/// Interval used when Entra gives none.
const DEFAULT_INTERVAL_SECS: u64 = 5;
/// Lifetime assumed when Entra gives none.
const DEFAULT_EXPIRES_IN_SECS: u64 = 900;

/// What the admin needs to sign in: the code and where to enter it (never the device code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCodeStart {
    /// The code the admin types on the verification page.
    pub user_code: String,
    /// The page to open (Entra's `https://microsoft.com/devicelogin`).
    pub verification_uri: String,
    /// Seconds left before the code expires.
    pub expires_in: u64,
    /// Seconds between polls of the token endpoint.
    pub interval: u64,
    /// Entra's instructions for the admin, naming the page and the code.
    pub message: String,
}

/// Where the asset's device code sign-in stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCodeOutcome {
    /// No sign-in started since the host started.
    Idle,
    /// A code was handed out; the host is polling.
    Pending {
        /// The code the admin types.
        user_code: String,
        /// The page to type it on.
        verification_uri: String,
        /// When the code expires (unix seconds).
        expires_at: i64,
    },
    /// An admin signed in: the tokens are stored and in use.
    Connected {
        /// The signed-in user's name (`upn` or `preferred_username` of the token), when given.
        user: Option<String>,
        /// The signed-in user's object id (`oid`), when given.
        oid: Option<String>,
    },
    /// The sign-in ended without tokens (declined, expired, refused); nothing was stored.
    Failed {
        /// What happened and what to do.
        message: String,
    },
}

/// A sign-in being polled.
struct Pending {
    start: DeviceCodeStart,
    deadline: Instant,
    /// Tells this flow's task from a later one's.
    id: u64,
}

/// The device code state of one asset (held by its token manager).
pub(crate) struct DeviceFlow {
    /// The pending sign-in; the lock is held while a new code is requested, so concurrent
    /// starts share one code.
    pending: tokio::sync::Mutex<Option<Pending>>,
    outcome: watch::Sender<DeviceCodeOutcome>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Default for DeviceFlow {
    fn default() -> Self {
        DeviceFlow {
            pending: tokio::sync::Mutex::new(None),
            outcome: watch::Sender::new(DeviceCodeOutcome::Idle),
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

/// The device code answer of either endpoint version (v1 says `verification_url` and sends
/// numbers as strings).
#[derive(Deserialize)]
struct DeviceCodeResponse {
    device_code: String,
    user_code: String,
    #[serde(default)]
    verification_uri: Option<String>,
    #[serde(default)]
    verification_url: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "number_or_string")]
    interval: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

/// How one poll went.
enum Poll {
    Tokens(Box<EntraTokenResponse>),
    Pending,
    SlowDown,
    /// Worth trying again (transport failure, server error, unreadable answer).
    Retry(String),
    /// Ends the flow without tokens.
    Fail(String),
}

impl TokenManager {
    /// Starts a device code sign-in (or answers the pending one) and polls for its outcome in
    /// the background. Only for `auth = "device_code"` assets.
    pub async fn start_device_code(self: &Arc<Self>) -> Result<DeviceCodeStart, AuthError> {
        if self.auth != AuthKind::DeviceCode {
            return Err(AuthError::Config(format!(
                "asset '{}' uses auth = \"{}\", not a device code sign-in{}",
                self.asset_id,
                self.auth.as_str(),
                if self.auth == AuthKind::AuthorizationCode {
                    format!(
                        ": an admin consents in a browser ({})",
                        self.how_to_consent()
                    )
                } else {
                    String::new()
                }
            )));
        }
        let mut pending = self.device.pending.lock().await;
        if let Some(p) = pending.as_ref() {
            // Still worth typing: at least a few seconds left.
            let left = p.deadline.saturating_duration_since(Instant::now());
            if left > Duration::from_secs(5) {
                let mut start = p.start.clone();
                start.expires_in = left.as_secs();
                return Ok(start);
            }
        }
        let (start, device_code) = self.request_device_code().await?;
        let id = self
            .device
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(start.expires_in);
        *pending = Some(Pending {
            start: start.clone(),
            deadline,
            id,
        });
        self.device
            .outcome
            .send_replace(DeviceCodeOutcome::Pending {
                user_code: start.user_code.clone(),
                verification_uri: start.verification_uri.clone(),
                expires_at: now_unix() + i64::try_from(start.expires_in).unwrap_or(0),
            });
        drop(pending);
        tracing::info!(asset = %self.asset_id, expires_in = start.expires_in, interval = start.interval,
            "device code sign-in started: waiting for an admin to enter the code");
        tokio::spawn(poll_until_done(
            Arc::downgrade(self),
            device_code,
            start.interval,
            deadline,
            id,
        ));
        Ok(start)
    }

    /// The outcome of the asset's device code sign-ins: `Pending` while one runs, then
    /// `Connected` or `Failed`.
    pub fn device_code_outcome(&self) -> watch::Receiver<DeviceCodeOutcome> {
        self.device.outcome.subscribe()
    }

    /// Asks Entra for a device code.
    async fn request_device_code(&self) -> Result<(DeviceCodeStart, SecretString), AuthError> {
        let token_url = self.token_url.as_str();
        let url = token_url
            .strip_suffix("token")
            .map(|base| format!("{base}devicecode"))
            .ok_or_else(|| {
                AuthError::Config(format!(
                    "asset {}: cannot derive the device code URL from {token_url}",
                    self.asset_id
                ))
            })?;
        let scope = format!("{} offline_access", self.scope);
        let target = match self.token_endpoint {
            TokenEndpoint::V2 => ("scope", scope.as_str()),
            TokenEndpoint::V1 => ("resource", self.resource.as_str()),
        };
        let form = [("client_id", self.client_id.as_str()), target];
        let host = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let resp = self
            .http
            .0
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::Transport(transport_message(&host, &e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|_| {
            AuthError::Transport(format!(
                "device code endpoint {host}: reading the answer failed"
            ))
        })?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<EntraError>(&body) {
                Ok(err) if !err.error.is_empty() => AuthError::Refused {
                    message: format!(
                        "device code request refused: {}",
                        err.explain(&self.tenant_id, self.client_id.as_str())
                    ),
                    code: err.code(),
                },
                _ => AuthError::Transport(format!(
                    "device code endpoint {host} answered HTTP {}",
                    status.as_u16()
                )),
            });
        }
        let answer: DeviceCodeResponse = serde_json::from_slice(&body).map_err(|_| {
            AuthError::Transport(format!(
                "device code endpoint {host} answered something that is not a device code"
            ))
        })?;
        let verification_uri = answer
            .verification_uri
            .or(answer.verification_url)
            .unwrap_or_else(|| "https://microsoft.com/devicelogin".to_string());
        let message = answer.message.unwrap_or_else(|| {
            format!(
                "To sign in, use a web browser to open the page {verification_uri} and enter the code {} to authenticate.",
                answer.user_code
            )
        });
        Ok((
            DeviceCodeStart {
                user_code: answer.user_code,
                verification_uri,
                expires_in: answer.expires_in.unwrap_or(DEFAULT_EXPIRES_IN_SECS).max(1),
                interval: answer.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1),
                message,
            },
            SecretString::from(answer.device_code),
        ))
    }

    /// One poll of the token endpoint.
    async fn poll_once(&self, device_code: &SecretString) -> Poll {
        let url = self.token_url.clone();
        let client_id = self.client_id.as_str().to_string();
        let mut form = vec![
            ("grant_type", DEVICE_CODE_GRANT.to_string()),
            ("client_id", client_id.clone()),
            ("device_code", device_code.expose_secret().to_string()),
        ];
        if let Some(secret) = &self.current_secret() {
            form.push(("client_secret", secret.expose_secret().to_string()));
        }
        let host = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let resp = match self.http.0.post(&url).form(&form).send().await {
            Ok(r) => r,
            Err(e) => return Poll::Retry(transport_message(&host, &e)),
        };
        let status = resp.status();
        let Ok(body) = resp.bytes().await else {
            return Poll::Retry(format!("token endpoint {host}: reading the answer failed"));
        };
        if status.is_success() {
            return match serde_json::from_slice::<EntraTokenResponse>(&body) {
                Ok(t) => Poll::Tokens(Box::new(t)),
                Err(_) => Poll::Retry(format!(
                    "token endpoint {host} answered something that is not a token response"
                )),
            };
        }
        let err = match serde_json::from_slice::<EntraError>(&body) {
            Ok(e) if !e.error.is_empty() => e,
            _ => {
                return Poll::Retry(format!(
                    "token endpoint {host} answered HTTP {}",
                    status.as_u16()
                ));
            }
        };
        match err.error.as_str() {
            "authorization_pending" => Poll::Pending,
            "slow_down" => Poll::SlowDown,
            "authorization_declined" | "access_denied" => Poll::Fail(format!(
                "the sign-in for asset '{}' was declined; nothing was stored",
                self.asset_id
            )),
            "expired_token" | "code_expired" => Poll::Fail(self.expired_message()),
            "temporarily_unavailable" => Poll::Retry(err.explain(&self.tenant_id, &client_id)),
            _ if status.is_server_error() => Poll::Retry(err.explain(&self.tenant_id, &client_id)),
            _ => Poll::Fail(format!(
                "the device code sign-in for asset '{}' was refused: {}",
                self.asset_id,
                err.explain(&self.tenant_id, &client_id)
            )),
        }
    }

    fn expired_message(&self) -> String {
        format!(
            "the device code for asset '{}' expired before anyone signed in; nothing was stored: start again with `defender-soar consent {}`",
            self.asset_id, self.asset_id
        )
    }

    /// Checks who signed in (tenant, audience, `allowed_consenters`, as for a browser
    /// consent), then stores the pair like a consent, puts the token in use and wakes
    /// waiters. A refused user ends the flow with nothing stored.
    async fn complete_device_code(
        &self,
        response: &EntraTokenResponse,
        obtained_at: i64,
    ) -> Result<DeviceCodeOutcome, AuthError> {
        let _flight = self.flight.lock().await;
        let stored = self.stored_from(response, obtained_at, GRANT_DEVICE_CODE, None);
        let consenter = match self
            .check_consenter(stored.access_token.expose_secret())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let message = format!("{e}; nothing was stored");
                tracing::warn!(asset = %self.asset_id, "{message}");
                return Ok(DeviceCodeOutcome::Failed { message });
            }
        };
        let has_refresh = stored.refresh_token.is_some();
        self.persist_new_grant(stored, obtained_at).await?;
        self.notify_connected();
        tracing::info!(asset = %self.asset_id, connected_by = %consenter.label(),
            refresh_token = has_refresh, "device code sign-in completed: asset connected");
        Ok(DeviceCodeOutcome::Connected {
            user: consenter.upn,
            oid: consenter.oid,
        })
    }

    /// Ends flow `id` (unless a newer one replaced it) with `outcome`.
    async fn finish_device_code(&self, id: u64, outcome: DeviceCodeOutcome) {
        let mut pending = self.device.pending.lock().await;
        if pending.as_ref().is_some_and(|p| p.id == id) {
            *pending = None;
            self.device.outcome.send_replace(outcome);
        }
    }
}

/// The background poll of one device code.
async fn poll_until_done(
    manager: Weak<TokenManager>,
    device_code: SecretString,
    interval: u64,
    deadline: Instant,
    id: u64,
) {
    let mut interval = Duration::from_secs(interval);
    loop {
        tokio::time::sleep(interval).await;
        // The asset's host went away (configuration reloaded, test ended): stop.
        let Some(tm) = manager.upgrade() else {
            return;
        };
        if tm
            .device
            .pending
            .lock()
            .await
            .as_ref()
            .is_none_or(|p| p.id != id)
        {
            return;
        }
        if Instant::now() >= deadline {
            let message = tm.expired_message();
            tracing::warn!(asset = %tm.asset_id, "{message}");
            tm.finish_device_code(id, DeviceCodeOutcome::Failed { message })
                .await;
            return;
        }
        let obtained_at = now_unix();
        match tm.poll_once(&device_code).await {
            Poll::Pending => {}
            Poll::SlowDown => interval += Duration::from_secs(SLOW_DOWN_SECS),
            Poll::Retry(why) => {
                tracing::warn!(asset = %tm.asset_id, error = %why, "device code poll failed; trying again");
            }
            Poll::Fail(message) => {
                tm.count_fetch(GRANT_DEVICE_CODE, false);
                tracing::warn!(asset = %tm.asset_id, "{message}");
                tm.finish_device_code(id, DeviceCodeOutcome::Failed { message })
                    .await;
                return;
            }
            Poll::Tokens(response) => {
                tm.count_fetch(GRANT_DEVICE_CODE, true);
                let outcome = match tm.complete_device_code(&response, obtained_at).await {
                    Ok(o) => o,
                    Err(e) => {
                        let message = format!(
                            "asset '{}': signed in, but the tokens could not be stored: {e}",
                            tm.asset_id
                        );
                        tracing::warn!(asset = %tm.asset_id, "{message}");
                        DeviceCodeOutcome::Failed { message }
                    }
                };
                tm.finish_device_code(id, outcome).await;
                return;
            }
        }
    }
}

fn transport_message(host: &str, e: &reqwest::Error) -> String {
    format!("{host}: {}", super::entra::failure_kind(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_answers_parse() {
        let v1: DeviceCodeResponse = serde_json::from_str(
            r#"{"user_code":"ABC","device_code":"d","verification_url":"https://microsoft.com/devicelogin","expires_in":"900","interval":"5","message":"m"}"#,
        )
        .unwrap();
        assert_eq!(
            (v1.expires_in, v1.interval, v1.verification_url.is_some()),
            (Some(900), Some(5), true)
        );
        let v2: DeviceCodeResponse = serde_json::from_str(
            r#"{"user_code":"ABC","device_code":"d","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5}"#,
        )
        .unwrap();
        assert_eq!(v2.interval, Some(5));
        assert!(v2.message.is_none());
    }
}
