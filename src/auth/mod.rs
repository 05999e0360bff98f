//! Tokens from Entra ID for each asset: the token manager (cached in memory and in the asset's
//! state file, refreshed ahead of expiry, one fetch in flight per asset), interactive consent
//! sessions (`/start_oauth` → `/result`), and the permissions a token grants.
//!
//! - [`TokenManager`]: one per asset, every auth kind. Client-credentials assets fetch a new
//!   token when the old one nears expiry; interactive assets redeem their refresh token, and the
//!   rotated refresh token replaces the old one in the same state-file update as the new access
//!   token. A dead grant turns into [`AuthError::ConsentRequired`] with the consent URL.
//! - [`consent`]: consent sessions (random single-use `state`, PKCE S256, 10 minutes) stored
//!   in the asset's state file, and the code exchange that ends one.
//! - [`device_code`]: device code sign-in for `auth = "device_code"` assets: the code for the
//!   admin, the background poll, the token pair stored like a consent's.
//! - [`entra`]: Entra response and error shapes and the HTTP adapter for the oauth2 crate.
//! - [`preflight`]: the per-invocation permission check run before an action's first API
//!   call, and the record of consent/state failures met while getting its tokens.
//! - [`decode_grants`] / [`satisfies`]: what a token says it allows (display and preflight
//!   only; the API stays the authority).

pub mod certificate;
pub mod consent;
pub mod device_code;
pub mod entra;
pub mod preflight;
mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::Value;

pub use device_code::{DeviceCodeOutcome, DeviceCodeStart};
pub use preflight::{ActionScope, Denied};
pub use tokens::{BearerToken, FetchedToken, TokenManager};

/// The API a token is for: each asset has a token manager per audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// The Defender for Endpoint API (`/api/...`).
    Defender,
    /// Microsoft Graph (`/v1.0/security/...`).
    Graph,
}

impl Audience {
    /// The audience a permission belongs to: Microsoft Graph's security permissions
    /// (`SecurityAlert.*`, `SecurityIncident.*`, `ThreatHunting.*`, `SecurityEvents.*`), else
    /// the Defender API.
    pub fn of_permission(permission: &str) -> Audience {
        const GRAPH: [&str; 4] = [
            "SecurityAlert.",
            "SecurityIncident.",
            "ThreatHunting.",
            "SecurityEvents.",
        ];
        if GRAPH.iter().any(|p| permission.starts_with(p)) {
            Audience::Graph
        } else {
            Audience::Defender
        }
    }

    /// The API's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Audience::Defender => "Defender for Endpoint API",
            Audience::Graph => "Microsoft Graph",
        }
    }
}

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
    /// An interactive asset has no usable grant: an admin must consent (again) at `url`.
    #[error("{message}")]
    ConsentRequired {
        /// What is wrong, ending with the consent URL.
        message: String,
        /// `{public_url}/assets/<asset>/consent` (or, from test_connectivity, a consent link).
        url: String,
    },
    /// The asset's state file cannot be read or written; the message says how to recover.
    #[error("{0}")]
    State(String),
}

/// What a token grants, decoded from its claims (for display only, never trusted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `roles` (application permissions) or `scp` (delegated) entries.
    pub permissions: Vec<String>,
    /// `roles` or `scp`, whichever the token carried (empty when neither).
    pub claim: &'static str,
    /// Token version claim (`1.0` / `2.0`).
    pub version: Option<String>,
    /// Whether the token was a readable JWT at all (an opaque token grants nothing we can see).
    pub decoded: bool,
}

/// The claims of a JWT, read without verifying it (the token came from Entra over TLS; the
/// API stays the authority). `None` when the token is not a readable JWT.
pub fn claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Decodes the permissions of a JWT access token without verifying it (display only).
pub fn decode_grants(token: &str) -> Grants {
    let claims = claims(token).map_or(Value::Null, Value::Object);
    let decoded = claims.is_object();
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
            decoded,
        };
    }
    if let Some(scp) = claims.get("scp").and_then(Value::as_str) {
        return Grants {
            permissions: scp.split_whitespace().map(str::to_string).collect(),
            claim: "scp",
            version,
            decoded,
        };
    }
    Grants {
        version,
        decoded,
        ..Grants::default()
    }
}

/// Whether `granted` satisfies `required`. Definitions name application permissions
/// (`Machine.Read.All`); the delegated form drops `.All` (`Machine.Read` in `scp`), and
/// `X.ReadWrite[.All]` implies `X.Read[.All]`.
pub fn satisfies(granted: &[String], required: &str) -> bool {
    let base = required.strip_suffix(".All").unwrap_or(required);
    let mut accepted = vec![required.to_string(), base.to_string()];
    if let Some(resource) = base.strip_suffix(".Read") {
        accepted.push(format!("{resource}.ReadWrite.All"));
        accepted.push(format!("{resource}.ReadWrite"));
    }
    granted.iter().any(|g| accepted.contains(g))
}

/// The entries of `required` that `granted` does not satisfy, in order.
pub fn missing_permissions<'a>(granted: &[String], required: &'a [String]) -> Vec<&'a str> {
    required
        .iter()
        .map(String::as_str)
        .filter(|p| !satisfies(granted, p))
        .collect()
}

/// Seconds since the unix epoch (the clock of token and consent-session expiry).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
        assert!(g.decoded);
        assert_eq!(g.permissions, vec!["Machine.Isolate", "Machine.Read.All"]);
        let t = format!("h.{}.s", enc(r#"{"scp":"Machine.Read Alert.Read"}"#));
        assert_eq!(decode_grants(&t).permissions.len(), 2);
        let g = decode_grants("garbage");
        assert_eq!(g.permissions.len(), 0);
        assert!(!g.decoded);
        let t = format!("h.{}.s", enc(r#"{"aud":"x"}"#));
        let g = decode_grants(&t);
        assert!(g.decoded && g.permissions.is_empty() && g.claim.is_empty());
    }

    #[test]
    fn readwrite_implies_read() {
        let g = vec!["Machine.ReadWrite.All".to_string()];
        assert!(satisfies(&g, "Machine.Read.All"));
        assert!(satisfies(&g, "Machine.ReadWrite.All"));
        assert!(!satisfies(&g, "Machine.Isolate"));
        // Delegated names drop `.All`.
        let d = vec!["Machine.ReadWrite".to_string(), "Alert.Read".to_string()];
        assert!(satisfies(&d, "Machine.Read.All"));
        assert!(satisfies(&d, "Machine.ReadWrite.All"));
        assert!(satisfies(&d, "Alert.Read.All"));
        assert!(!satisfies(&d, "Alert.ReadWrite.All"));
        assert!(!satisfies(&d, "Machine.Isolate"));
        let i = vec!["Machine.Isolate".to_string()];
        assert!(satisfies(&i, "Machine.Isolate"));
        assert!(!satisfies(&i, "Machine.Read.All"));
        let required = vec![
            "Machine.Read.All".to_string(),
            "Machine.Isolate".to_string(),
        ];
        assert_eq!(missing_permissions(&g, &required), vec!["Machine.Isolate"]);
    }
}
