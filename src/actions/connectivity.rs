//! `test_connectivity`: gets a token, calls the API once, reports what the token allows.
//!
//! Client-credentials assets always ask Entra for a new token (that is what checks the
//! credentials). Interactive assets use their stored token pair; without one the action answers
//! 409 with the consent URL, or with `wait_for_consent` waits for the consent to complete.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Action, ActionContext, definitions};
use crate::auth::{Audience, AuthError, Grants, missing_permissions};
use crate::config::AuthKind;
use crate::defender;
use crate::envelope::{ActionError, Outcome};

pub use crate::auth::satisfies;

/// What a pair of grants allows: the actions it lets run and, for each other one, the
/// permissions it misses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionCheck {
    /// Ids of the actions the grants allow.
    pub allowed: Vec<String>,
    /// Each blocked action's id with the permissions it misses.
    pub blocked: Vec<(String, Vec<String>)>,
}

/// Checks every action definition against the Defender permissions `granted` and the Microsoft
/// Graph permissions `graph_granted`. An action needing any one of its permissions
/// (`any_permission`) is allowed when one is granted.
pub fn check_permissions(granted: &[String], graph_granted: &[String]) -> PermissionCheck {
    let mut check = PermissionCheck::default();
    for d in definitions() {
        let (defender_needs, graph_needs): (Vec<String>, Vec<String>) = d
            .permissions
            .iter()
            .cloned()
            .partition(|p| Audience::of_permission(p) == Audience::Defender);
        let mut missing = missing_permissions(granted, &defender_needs);
        missing.extend(missing_permissions(graph_granted, &graph_needs));
        let enough = if d.any_permission {
            missing.len() < d.permissions.len()
        } else {
            missing.is_empty()
        };
        if enough {
            check.allowed.push(d.id.clone());
        } else {
            check.blocked.push((
                d.id.clone(),
                missing.into_iter().map(str::to_string).collect(),
            ));
        }
    }
    check
}

/// Tests the asset's credentials and API reachability.
pub struct TestConnectivity;

/// Parameters of `test_connectivity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Seconds to wait for an interactive asset's consent.
    #[serde(default)]
    pub wait_for_consent: u64,
}

/// The token the test uses: how long it lives and what it grants.
struct Acquired {
    expires_in: u64,
    grants: Grants,
}

/// A consent link for an interactive asset that needs consent: a fresh single-use ticket, or
/// (when none can be issued, e.g. too many are pending) the API route that answers one.
async fn consent_link(ctx: &ActionContext) -> (String, String) {
    let tokens = &ctx.asset.tokens;
    if tokens.auth_kind() == AuthKind::DeviceCode {
        return (
            tokens.consent_url().to_string(),
            tokens.consent_advice(false),
        );
    }
    match tokens.issue_ticket().await {
        Ok(ticket) => (
            ticket.url.expose_secret().to_string(),
            format!(
                "open the single-use link in summary.consent_url in a browser within {} minutes and sign in as an administrator of the tenant",
                ticket.expires_in / 60
            ),
        ),
        Err(e) => (
            tokens.consent_url().to_string(),
            format!(
                "no consent link could be issued ({e}); {}",
                tokens.how_to_consent()
            ),
        ),
    }
}

/// An interactive asset's token, waiting up to `wait` for a consent when there is none. The
/// consent-required answer carries a fresh consent link.
async fn interactive_token(ctx: &ActionContext, wait: Duration) -> Result<Acquired, AuthError> {
    let tokens = &ctx.asset.tokens;
    // Subscribed before looking, so a consent completing in between is not missed.
    let mut connected = tokens.subscribe();
    let token = match tokens.token().await {
        Err(AuthError::ConsentRequired { message, .. }) => {
            let (url, how) = consent_link(ctx).await;
            if wait.is_zero() {
                return Err(AuthError::ConsentRequired {
                    message: format!("{message}; {how}"),
                    url,
                });
            }
            ctx.progress(&format!(
                "waiting up to {} s for an admin to consent",
                wait.as_secs()
            ));
            // The link itself goes to the caller's terminal only, never to the log.
            ctx.progress_to_caller(&format!("consent link (single use): {url}"));
            let deadline = tokio::time::Instant::now() + wait;
            match tokio::time::timeout_at(deadline, connected.changed()).await {
                Ok(Ok(())) => {
                    ctx.progress("consent completed");
                    tokens.token().await?
                }
                _ => {
                    return Err(AuthError::ConsentRequired {
                        message: format!(
                            "asset '{}' is still not connected after waiting {} s: {how}",
                            ctx.asset.config.id,
                            wait.as_secs()
                        ),
                        url,
                    });
                }
            }
        }
        other => other?,
    };
    Ok(Acquired {
        expires_in: token.expires_in(),
        grants: token.grants(),
    })
}

impl Action for TestConnectivity {
    const ID: &'static str = "test_connectivity";
    type Params = Params;

    async fn run(ctx: ActionContext, p: Params) -> Result<Outcome, ActionError> {
        let asset = &ctx.asset;
        let endpoint = match asset.config.auth {
            AuthKind::ManagedIdentity => "managed identity",
            _ => asset.config.token_endpoint.as_str(),
        };
        let acquired = match asset.config.auth {
            AuthKind::ClientCredentials | AuthKind::Certificate | AuthKind::ManagedIdentity => {
                ctx.progress(&format!("requesting a token from the {endpoint} endpoint"));
                asset.tokens.fetch_fresh().await.map(|t| Acquired {
                    expires_in: t.expires_in.as_secs(),
                    grants: t.grants,
                })
            }
            AuthKind::AuthorizationCode | AuthKind::DeviceCode => {
                ctx.progress("using the token pair stored by the consent");
                interactive_token(&ctx, Duration::from_secs(p.wait_for_consent)).await
            }
        };
        let token = match acquired {
            Ok(t) => t,
            Err(e) => {
                if let Some(err) = e.action_error() {
                    return Err(err);
                }
                return Ok(Outcome::failed(format!("Connectivity test failed: {e}"))
                    .with_summary("token_endpoint", endpoint)
                    .with_summary("token_acquired", false));
            }
        };
        let call = defender::PROBE;
        ctx.progress(&format!("calling {call}"));
        let api = ctx.asset.defender.probe().await;
        let granted = token.grants.permissions.clone();
        let graph = graph_grants(&ctx).await;
        let graph_granted = graph
            .as_ref()
            .map(|g| g.permissions.clone())
            .unwrap_or_default();
        let check = check_permissions(&granted, &graph_granted);
        let allowed = check.allowed;
        let blocked: Vec<Value> = check
            .blocked
            .iter()
            .map(|(action, missing)| json!({"action": action, "missing_permissions": missing}))
            .collect();
        let base = Outcome::default()
            .with_summary("token_endpoint", endpoint)
            .with_summary("token_acquired", true)
            .with_summary("token_expires_in", token.expires_in)
            .with_summary("granted_permissions", granted.clone())
            .with_summary("api_call", call)
            .with_summary("graph_token_acquired", graph.is_ok())
            .with_summary("graph_permissions", graph_granted.clone())
            .with_summary("actions_allowed", allowed.len())
            .with_summary("actions_blocked", blocked.len());
        let graph_note = match &graph {
            Ok(g) => format!(
                "; Microsoft Graph: {} permissions granted",
                g.permissions.len()
            ),
            Err(e) => format!("; no Microsoft Graph token ({e}), so Graph actions are blocked"),
        };
        let mut outcome = match api {
            Ok(body) => {
                let seen = body
                    .get("value")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                Outcome {
                    message: format!(
                        "Connectivity test passed: token from the {endpoint} endpoint ({} permissions granted), {call} answered with {seen} device(s){graph_note}",
                        granted.len()
                    ),
                    ..base
                }
            }
            Err(e) => Outcome {
                failed: true,
                message: format!(
                    "Connectivity test failed: token acquired, but {call} failed: {e}"
                ),
                ..base
            },
        };
        outcome.data.push(json!({
            "granted_permissions": granted,
            "permission_claim": token.grants.claim,
            "token_version": token.grants.version,
            "graph_permissions": graph_granted,
            "graph_error": graph.err(),
            "allowed_actions": allowed,
            "blocked_actions": blocked,
        }));
        Ok(outcome)
    }
}

/// What the asset's Microsoft Graph token grants: a new one for application credentials (that
/// is what checks them), the stored or refreshed one for delegated grants. An error says why
/// there is none.
async fn graph_grants(ctx: &ActionContext) -> Result<Grants, String> {
    let tokens = &ctx.asset.graph_tokens;
    ctx.progress("requesting a Microsoft Graph token");
    if ctx.asset.config.auth.is_application() {
        tokens
            .fetch_fresh()
            .await
            .map(|t| t.grants)
            .map_err(|e| e.to_string())
    } else {
        tokens
            .token()
            .await
            .map(|t| t.grants())
            .map_err(|e| e.to_string())
    }
}
