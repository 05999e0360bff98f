//! `test_connectivity`: gets a token, calls the API once, reports what the token allows.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Action, ActionContext, definitions};
use crate::config::{AuthKind, TokenEndpoint};
use crate::envelope::{ActionError, Outcome};

/// Tests the asset's credentials and API reachability.
pub struct TestConnectivity;

/// Parameters of `test_connectivity`.
#[derive(Debug, Deserialize)]
pub struct Params {
    /// Seconds to wait for an interactive asset's consent.
    #[serde(default)]
    pub wait_for_consent: u64,
}

/// Whether `granted` satisfies `required` (`X.ReadWrite.All` implies `X.Read.All`).
pub fn satisfies(granted: &[String], required: &str) -> bool {
    granted.iter().any(|g| {
        g == required
            || required
                .strip_suffix(".Read.All")
                .is_some_and(|base| g == &format!("{base}.ReadWrite.All"))
    })
}

impl Action for TestConnectivity {
    const ID: &'static str = "test_connectivity";
    type Params = Params;

    async fn run(ctx: ActionContext, _p: Params) -> Result<Outcome, ActionError> {
        let asset = &ctx.asset;
        if asset.config.auth == AuthKind::AuthorizationCode {
            let url = format!(
                "{}/start_oauth?asset_id={}",
                ctx.app
                    .config
                    .server
                    .public_url
                    .as_str()
                    .trim_end_matches('/'),
                asset.config.id
            );
            return Err(ActionError::ConsentRequired {
                message: format!(
                    "asset '{}' uses interactive consent and has no tokens yet: an admin must consent at {url}",
                    asset.config.id
                ),
                url,
            });
        }
        let endpoint = match asset.config.token_endpoint {
            TokenEndpoint::V1 => "v1",
            TokenEndpoint::V2 => "v2",
        };
        ctx.progress(&format!("requesting a token from the {endpoint} endpoint"));
        let token = match asset.tokens.fetch_fresh().await {
            Ok(t) => t,
            Err(e) => {
                return Ok(Outcome::failed(format!("Connectivity test failed: {e}"))
                    .with_summary("token_endpoint", endpoint)
                    .with_summary("token_acquired", false));
            }
        };
        ctx.progress("calling GET /api/machines?$top=1");
        let call = "GET /api/machines?$top=1";
        let api = ctx.asset.defender.get("/api/machines?$top=1").await;
        let granted = token.grants.permissions.clone();
        let mut allowed = Vec::new();
        let mut blocked = Vec::new();
        for d in definitions() {
            let missing: Vec<&str> = d
                .permissions
                .iter()
                .map(String::as_str)
                .filter(|p| !satisfies(&granted, p))
                .collect();
            if missing.is_empty() {
                allowed.push(d.id.clone());
            } else {
                blocked.push(json!({"action": d.id, "missing_permissions": missing}));
            }
        }
        let base = Outcome::default()
            .with_summary("token_endpoint", endpoint)
            .with_summary("token_acquired", true)
            .with_summary("token_expires_in", token.expires_in.as_secs())
            .with_summary("granted_permissions", granted.clone())
            .with_summary("api_call", call)
            .with_summary("actions_allowed", allowed.len())
            .with_summary("actions_blocked", blocked.len());
        let mut outcome = match api {
            Ok(body) => {
                let seen = body
                    .get("value")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                Outcome {
                    message: format!(
                        "Connectivity test passed: token from the {endpoint} endpoint ({} permissions granted), {call} answered with {seen} device(s)",
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
            "allowed_actions": allowed,
            "blocked_actions": blocked,
        }));
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readwrite_implies_read() {
        let g = vec!["Machine.ReadWrite.All".to_string()];
        assert!(satisfies(&g, "Machine.Read.All"));
        assert!(satisfies(&g, "Machine.ReadWrite.All"));
        assert!(!satisfies(&g, "Machine.Isolate"));
    }
}
