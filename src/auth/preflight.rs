//! The permission preflight of one action invocation.
//!
//! An action's definition lists the permissions it needs. Before the first Defender API call
//! of the action, the token it is about to use is checked against that list (decoded `roles` /
//! `scp`, display-grade information: the API stays the authority): a token that lacks one is
//! never sent, and the action fails naming the permission. When the token is at hand without a
//! network call, `actions::invoke` checks before the handler runs; otherwise the check happens
//! inside the token source the moment the handler's first call obtains its token, so a request
//! refused by the handler's own parameter checks costs no token request either.
//!
//! The check is carried by a task-local [`ActionScope`] around the handler, which also records
//! the first consent-required or state-file failure met while getting tokens, so the invocation
//! can answer 409 or 500 instead of the handler's generic failure.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::{Audience, AuthError, BearerToken, TokenManager, missing_permissions};
use crate::config::AuthKind;

tokio::task_local! {
    static SCOPE: Arc<ActionScope>;
}

/// A token lacks permissions an action needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The missing permissions, in the definition's order.
    pub missing: Vec<String>,
    /// What the token grants.
    pub granted: Vec<String>,
    /// Names the permission, the action, what was granted and how to fix it.
    pub message: String,
}

impl TokenManager {
    /// Whether `token` carries every permission of `required` that belongs to this manager's
    /// audience, for `action_id`. A token whose claims cannot be read is not judged (the API
    /// decides).
    pub fn check_permissions(
        &self,
        action_id: &str,
        required: &[String],
        token: &BearerToken,
    ) -> Option<Denied> {
        let required: Vec<String> = required
            .iter()
            .filter(|p| Audience::of_permission(p) == self.audience())
            .cloned()
            .collect();
        if required.is_empty() {
            return None;
        }
        let grants = token.grants();
        if !grants.decoded {
            return None;
        }
        let missing: Vec<String> = missing_permissions(&grants.permissions, &required)
            .into_iter()
            .map(str::to_string)
            .collect();
        if missing.is_empty() {
            return None;
        }
        let granted = if grants.permissions.is_empty() {
            "none".to_string()
        } else {
            grants.permissions.join(", ")
        };
        let api = self.audience().name();
        let how = match self.auth {
            AuthKind::DeviceCode => format!(
                "grant it as a delegated {api} permission of the app registration and sign in again with `defender-soar consent {}` (or POST {})",
                self.asset_id(),
                self.consent_url()
            ),
            AuthKind::AuthorizationCode => format!(
                "grant it as a delegated {api} permission of the app registration and connect the asset again ({})",
                self.how_to_consent()
            ),
            AuthKind::ClientCredentials | AuthKind::Certificate => format!(
                "grant it as an application {api} permission of the app registration (with \
                 admin consent), then run the action again"
            ),
            AuthKind::ManagedIdentity => format!(
                "assign it as an app role of the {api} to the managed identity's service \
                 principal, then run the action again"
            ),
        };
        let plural = if missing.len() == 1 { "" } else { "s" };
        Some(Denied {
            message: format!(
                "the {} token lacks permission{plural} {} required by {action_id} (granted: {granted}); {how}",
                self.audience().name(),
                missing.join(", ")
            ),
            missing,
            granted: grants.permissions,
        })
    }
}

/// What one invocation's handler needs from its tokens, and what went wrong getting them.
#[derive(Debug)]
pub struct ActionScope {
    action_id: String,
    required: Vec<String>,
    denied: Mutex<Option<Denied>>,
    auth_error: Mutex<Option<AuthError>>,
}

impl ActionScope {
    /// A scope for `action_id` needing `required`.
    pub fn new(action_id: &str, required: &[String]) -> Arc<ActionScope> {
        Arc::new(ActionScope {
            action_id: action_id.to_string(),
            required: required.to_vec(),
            denied: Mutex::new(None),
            auth_error: Mutex::new(None),
        })
    }

    /// Runs `f` (the handler) inside this scope.
    pub async fn run<F: Future>(self: &Arc<Self>, f: F) -> F::Output {
        SCOPE.scope(self.clone(), f).await
    }

    /// The permission failure met, if any.
    pub fn denied(&self) -> Option<Denied> {
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first consent-required or state-file failure met while getting a token, if any.
    pub fn auth_error(&self) -> Option<AuthError> {
        self.auth_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Checks `token` against the current scope's permissions (none outside a scope); the
/// failure is recorded and its message answered.
pub(crate) fn check_in_scope(manager: &TokenManager, token: &BearerToken) -> Option<String> {
    SCOPE
        .try_with(|scope| {
            let denied = manager.check_permissions(&scope.action_id, &scope.required, token)?;
            let message = denied.message.clone();
            scope
                .denied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(denied);
            Some(message)
        })
        .ok()
        .flatten()
}

/// Records a token failure that the invocation answers itself (consent, state file).
pub(crate) fn record_error(error: &AuthError) {
    if error.action_error().is_none() {
        return;
    }
    let _ = SCOPE.try_with(|scope| {
        scope
            .auth_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| error.clone());
    });
}
