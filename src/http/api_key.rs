//! API-key check: `Authorization: Bearer <key>`, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::envelope::{ActionError, EnvelopeResponse};

/// Whether `presented` equals `expected`, in time independent of where they differ (and of
/// their lengths: both are hashed first).
pub fn key_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into() && !expected.is_empty()
}

/// Middleware: 401 envelope unless the request carries the API key.
pub async fn require(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    let ok = presented.is_some_and(|k| key_matches(k, app.api_key.expose_secret()));
    if ok {
        return next.run(req).await;
    }
    let message = if presented.is_some() {
        "API key rejected"
    } else {
        "missing API key: send 'Authorization: Bearer <api key>'"
    };
    let (action, asset) = action_and_asset(req.uri().path());
    EnvelopeResponse::error(
        &action,
        &asset,
        serde_json::Map::new(),
        &ActionError::Unauthorized(message.to_string()),
    )
    .into_response()
}

/// Action and asset ids from an `/assets/{asset}/actions/{action}` path, for the envelope.
fn action_and_asset(path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["assets", asset, "actions", action] => (
            crate::actions::truncate(action, 64),
            crate::actions::truncate(asset, 64),
        ),
        _ => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(key_matches("abc", "abc"));
        assert!(!key_matches("abd", "abc"));
        assert!(!key_matches("", ""));
        assert!(!key_matches("abcd", "abc"));
    }
}
