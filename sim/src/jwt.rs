//! Access tokens: JWTs signed by the simulator (HS256 with its per-process key).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::scenario::SignedIn;
use crate::state::Sim;

/// Claims of a simulator access token (the ones Entra puts in Defender tokens).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Audience: the Defender resource.
    pub aud: String,
    /// Issuer: `https://sts.windows.net/{tid}/` (v1) or `{login}/{tid}/v2.0` (v2).
    pub iss: String,
    /// Tenant id.
    pub tid: String,
    /// Object id of the app's service principal (or the signed-in user).
    pub oid: String,
    /// Client id (v1 tokens).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub appid: Option<String>,
    /// Client id (v2 tokens).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub azp: Option<String>,
    /// Token version: "1.0" or "2.0".
    pub ver: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expires (unix seconds).
    pub exp: i64,
    /// Application permissions (client credentials tokens).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub roles: Option<Vec<String>>,
    /// Delegated permissions, space separated (interactive tokens).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scp: Option<String>,
    /// The signed-in user's principal name (v1 delegated tokens).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upn: Option<String>,
    /// The signed-in user's principal name (v2 delegated tokens).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preferred_username: Option<String>,
    /// The signed-in user's display name (delegated tokens).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Unique token id.
    pub jti: String,
    /// Issue sequence number inside this simulator (lets the control API expire earlier tokens).
    #[serde(default)]
    pub seq: u64,
}

impl Claims {
    /// The client id, whichever claim carries it.
    pub fn client_id(&self) -> &str {
        self.appid
            .as_deref()
            .or(self.azp.as_deref())
            .unwrap_or_default()
    }

    /// Whether the token grants `permission` (in `roles` or `scp`).
    pub fn has_permission(&self, permission: &str) -> bool {
        self.roles
            .as_ref()
            .is_some_and(|r| r.iter().any(|p| p == permission))
            || self
                .scp
                .as_deref()
                .is_some_and(|s| s.split(' ').any(|p| p == permission))
    }
}

/// Signs claims into a compact JWT.
pub fn sign(sim: &Sim, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("defender-sim".to_string());
    // Encoding an owned, well-formed struct with an HMAC key cannot fail.
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&sim.signing_key))
        .unwrap_or_default()
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this simulator signed (or malformed).
    Invalid,
    /// Past `exp` (simulated clock) or expired by the control API.
    Expired,
}

/// Most verified tokens remembered at once.
const VERIFIED_CACHE_MAX: usize = 4096;

/// Checks the signature and decodes the claims (no lifetime checks).
fn verify_signature(sim: &Sim, token: &str) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(&sim.signing_key),
        &validation,
    )
    .map(|d| d.claims)
    .map_err(|_| TokenError::Invalid)
}

/// Verifies a token's signature and lifetime against the simulated clock.
pub fn verify(sim: &Sim, token: &str) -> Result<Claims, TokenError> {
    let cached = sim
        .verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .cloned();
    let claims = match cached {
        Some(c) => c,
        None => {
            let c = verify_signature(sim, token)?;
            let mut cache = sim.verified.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: a long run issuing many tokens starts over rather than growing.
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
            cache.insert(token.to_string(), c.clone());
            c
        }
    };
    let now = sim.clock.unix();
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    let w = sim.world();
    let key = format!("{}/{}", claims.tid, claims.client_id()).to_ascii_lowercase();
    let cutoff = [
        w.tokens_expired_below.get(&key),
        w.tokens_expired_below.get("*"),
    ]
    .into_iter()
    .flatten()
    .copied()
    .max();
    if cutoff.is_some_and(|c| claims.seq < c) {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// What an access token is issued for.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// Tenant id.
    pub tenant_id: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Audience (the Defender resource).
    pub audience: &'a str,
    /// Application roles (client credentials); None for delegated tokens.
    pub roles: Option<Vec<String>>,
    /// Delegated scopes (interactive); None for app tokens.
    pub scopes: Option<Vec<String>>,
    /// v1 (`"1.0"`) or v2 (`"2.0"`) token.
    pub v2: bool,
    /// Issuer base (login authority as the client reached it).
    pub login_base: &'a str,
    /// The signed-in user (delegated tokens): `oid`, `upn`/`preferred_username` and `tid`
    /// come from the account.
    pub user: Option<&'a SignedIn>,
}

/// Issues a signed access token; returns (token, issued_at, expires_at).
pub fn issue(sim: &Sim, req: &TokenRequest<'_>) -> (String, i64, i64) {
    let now = sim.clock.unix();
    let (lifetime, seq) = {
        let mut w = sim.world();
        let seq = w.next_token_seq;
        w.next_token_seq += 1;
        (w.scenario.token_lifetime_secs as i64, seq)
    };
    // A delegated token names the account's home tenant.
    let tenant_id = req.user.map_or(req.tenant_id, |u| u.tenant_id.as_str());
    let claims = Claims {
        aud: req.audience.to_string(),
        iss: if req.v2 {
            format!(
                "{}/{}/v2.0",
                req.login_base.trim_end_matches('/'),
                tenant_id
            )
        } else {
            format!("https://sts.windows.net/{}/", tenant_id)
        },
        tid: tenant_id.to_string(),
        oid: req
            .user
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), |u| u.oid.clone()),
        upn: req.user.filter(|_| !req.v2).map(|u| u.upn.clone()),
        preferred_username: req.user.filter(|_| req.v2).map(|u| u.upn.clone()),
        name: req.user.map(|u| u.name.clone()).filter(|n| !n.is_empty()),
        appid: (!req.v2).then(|| req.client_id.to_string()),
        azp: req.v2.then(|| req.client_id.to_string()),
        ver: if req.v2 { "2.0" } else { "1.0" }.to_string(),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        roles: req.roles.clone(),
        scp: req.scopes.as_ref().map(|s| s.join(" ")),
        jti: uuid::Uuid::new_v4().to_string(),
        seq,
    };
    (sign(sim, &claims), now, now + lifetime)
}

/// A token for the scenario's first app of the first tenant with all its roles (for tests).
pub fn test_token(sim: &Sim) -> Option<String> {
    let (tenant, app) = {
        let w = sim.world();
        let t = w.scenario.first_tenant()?.clone();
        let a = t.apps.first()?.clone();
        (t, a)
    };
    Some(
        issue(
            sim,
            &TokenRequest {
                tenant_id: &tenant.id,
                client_id: &app.client_id,
                audience: "https://api.securitycenter.microsoft.com",
                roles: Some(app.roles.clone()),
                scopes: None,
                v2: true,
                login_base: "https://login.microsoftonline.com",
                user: None,
            },
        )
        .0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn cached_tokens_still_expire_and_changed_tokens_are_refused() {
        let sim = Sim::new(Scenario::default_scenario());
        let token = test_token(&sim).unwrap();
        assert!(verify(&sim, &token).is_ok());
        assert!(
            verify(&sim, &token).is_ok(),
            "second use comes from the cache"
        );
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(verify(&sim, &tampered), Err(TokenError::Invalid));
        sim.expire_access_tokens(None);
        assert_eq!(verify(&sim, &token), Err(TokenError::Expired));
        let fresh = test_token(&sim).unwrap();
        sim.clock.advance(std::time::Duration::from_secs(4000));
        assert_eq!(verify(&sim, &fresh), Err(TokenError::Expired));
    }
}
