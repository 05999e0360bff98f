//! The token endpoints: client credentials, authorization code (with PKCE), rotating refresh
//! tokens and device codes, answered in the v1 or v2 shape.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    AadError, Diag, Params, REFRESH_TOKEN_LIFETIME_SECS, Version, audience_of_scope,
    entra_timestamp, json_response, opaque_token, resource_well_formed, wants_offline_access,
};
use crate::jwt::{self, TokenRequest};
use crate::scenario::{App, SignedIn, Tenant};
use crate::state::{RefreshGrant, Sim};

/// `POST /{tenant}/oauth2/token` (v1: `resource`, numbers as strings).
pub async fn token_v1(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&sim, &tenant, &headers, &body, Version::V1)
}

/// `POST /{tenant}/oauth2/v2.0/token` (v2: `scope`).
pub async fn token_v2(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&sim, &tenant, &headers, &body, Version::V2)
}

fn answer(sim: &Sim, tenant: &str, headers: &HeaderMap, body: &[u8], v: Version) -> Response {
    let diag = Diag::new(sim, headers);
    match grant(sim, tenant, headers, body, v) {
        Ok(token) => json_response(StatusCode::OK, &token, &diag),
        Err(e) => e.into_token_response(&diag),
    }
}

/// The grant types this endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    ClientCredentials,
    AuthorizationCode,
    RefreshToken,
    DeviceCode,
}

impl Grant {
    fn parse(s: &str) -> Option<Grant> {
        match s {
            "client_credentials" => Some(Grant::ClientCredentials),
            "authorization_code" => Some(Grant::AuthorizationCode),
            "refresh_token" => Some(Grant::RefreshToken),
            // v1 clients of old also name it `device_code`.
            "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => {
                Some(Grant::DeviceCode)
            }
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::AuthorizationCode => "authorization_code",
            Grant::RefreshToken => "refresh_token",
            Grant::DeviceCode => "device_code",
        }
    }
}

/// Everything a successful request leads to, before it is shaped as v1 or v2.
pub(crate) struct Issued {
    access_token: String,
    iat: i64,
    exp: i64,
    /// v1 `resource` (the audience).
    resource: String,
    /// v2 `scope` of the answer.
    scope: String,
    /// Delegated permissions (v1 `scope` of interactive answers).
    delegated: Option<String>,
    refresh_token: Option<String>,
}

fn grant(
    sim: &Sim,
    tenant_key: &str,
    headers: &HeaderMap,
    body: &[u8],
    v: Version,
) -> Result<Value, AadError> {
    let params = Params::parse(body);
    let (tenant, numbers_as_strings) = {
        let w = sim.world();
        let t = w.scenario.tenant(tenant_key).cloned();
        (t, w.scenario.v1_numbers_as_strings)
    };
    let tenant = tenant.ok_or_else(|| AadError::unknown_tenant(tenant_key))?;
    if let Some(name) = params.duplicate() {
        return Err(AadError::duplicated(name));
    }
    let grant_type = params.require("grant_type")?;
    let grant = Grant::parse(grant_type).ok_or_else(|| {
        AadError::bad(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
    })?;
    let basic = basic_credentials(headers);
    let client_id = params
        .get("client_id")
        .map(str::to_string)
        .or_else(|| basic.as_ref().map(|b| b.0.clone()))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| AadError::missing("client_id"))?;
    match grant {
        Grant::ClientCredentials => {
            params.require(v.target_param())?;
        }
        Grant::AuthorizationCode => {
            params.require("code")?;
            params.require("redirect_uri")?;
        }
        Grant::RefreshToken => {
            params.require("refresh_token")?;
        }
        Grant::DeviceCode => {
            if params.get("code").is_none() {
                params.require("device_code")?;
            }
        }
    }
    let app = tenant
        .apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(&client_id))
        .cloned()
        .ok_or_else(|| AadError::unknown_client(&client_id, tenant_label(&tenant)))?;
    let secret = params
        .get("client_secret")
        .map(str::to_string)
        .or_else(|| basic.map(|b| b.1));
    let login_base = crate::api::base_url(headers);
    let token_url = format!("{login_base}/{tenant_key}/oauth2/{}token", v.path_prefix());
    // The device code grant also serves public clients: a secret is checked when sent.
    let public_client = grant == Grant::DeviceCode
        && secret.as_deref().is_none_or(str::is_empty)
        && params.get("client_assertion").is_none();
    if !public_client {
        authenticate(sim, &app, secret.as_deref(), &params, &token_url)?;
    }

    let issued = match grant {
        Grant::ClientCredentials => client_credentials(sim, &tenant, &app, &params, v, &login_base),
        Grant::AuthorizationCode => authorization_code(sim, &tenant, &app, &params, v, &login_base),
        Grant::RefreshToken => refresh(sim, &tenant, &app, &params, v, &login_base),
        Grant::DeviceCode => {
            super::device_code::redeem(sim, &tenant, &app, &params, v, &login_base)
        }
    }?;
    // Client credentials proven with a certificate are counted apart from secret ones.
    let by_certificate = params.get("client_assertion").is_some();
    sim.count_token(match grant {
        Grant::ClientCredentials if by_certificate => "certificate",
        other => other.name(),
    });
    Ok(shape(&issued, v, numbers_as_strings))
}

/// `client_id`/`client_secret` from `Authorization: Basic` (form-encoded, per RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn tenant_label(tenant: &Tenant) -> &str {
    if tenant.name.is_empty() {
        &tenant.id
    } else {
        &tenant.name
    }
}

/// Checks the client's credential: a certificate client assertion (see [`assertion`]) or the
/// client secret (AADSTS7000218 missing, 7000215 wrong, 7000222 expired).
fn authenticate(
    sim: &Sim,
    app: &App,
    secret: Option<&str>,
    params: &Params,
    token_url: &str,
) -> Result<(), AadError> {
    if let Some(assertion) = params.get("client_assertion") {
        return super::assertion::check(sim, app, params, assertion, token_url);
    }
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(AadError::client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        ));
    };
    if secret != app.secret {
        return Err(AadError::client(
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{}'.",
                app.client_id
            ),
        ));
    }
    if app.secret_expired {
        return Err(AadError::client(
            7000222,
            format!(
                "The provided client secret keys for app '{}' are expired. Visit the Azure \
                 portal to create new keys for your app: https://aka.ms/NewClientSecret, or \
                 consider using certificate credentials for added security: \
                 https://aka.ms/certCreds.",
                app.client_id
            ),
        ));
    }
    Ok(())
}

/// The audience named by a v1 `resource` or a v2 `scope`, checked to be well formed.
fn audience(target: &str, v: Version, tenant: &Tenant) -> Result<String, AadError> {
    let aud = match v {
        Version::V1 => target.to_string(),
        Version::V2 => audience_of_scope(target),
    };
    if !resource_well_formed(&aud) {
        return Err(AadError::unknown_resource(&aud, tenant_label(tenant)));
    }
    Ok(aud)
}

fn client_credentials(
    sim: &Sim,
    tenant: &Tenant,
    app: &App,
    params: &Params,
    v: Version,
    login_base: &str,
) -> Result<Issued, AadError> {
    let target = params.require(v.target_param())?;
    if v == Version::V2 {
        let scopes: Vec<&str> = target.split_whitespace().collect();
        if scopes.len() != 1 || !scopes[0].ends_with("/.default") {
            return Err(AadError::bad(
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {target} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            ));
        }
    }
    let aud = audience(target, v, tenant)?;
    let granted = app.roles_for(&aud);
    let roles = (!granted.is_empty()).then(|| granted.to_vec());
    let (access_token, iat, exp) = jwt::issue(
        sim,
        &TokenRequest {
            tenant_id: &tenant.id,
            client_id: &app.client_id,
            audience: &aud,
            roles,
            scopes: None,
            v2: v == Version::V2,
            login_base,
            user: None,
        },
    );
    Ok(Issued {
        access_token,
        iat,
        exp,
        resource: aud,
        scope: target.to_string(),
        delegated: None,
        refresh_token: None,
    })
}

/// `Provided grant is invalid or malformed` (unknown code or refresh token, or another client's).
fn bad_grant() -> AadError {
    AadError::bad(
        "invalid_grant",
        70000,
        "Provided grant is invalid or malformed.",
    )
}

fn expired_grant() -> AadError {
    AadError::bad(
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send a \
         new interactive authorization request for this user and resource.",
    )
}

/// Base64url (no padding) of SHA-256, the S256 PKCE transform.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorization_code(
    sim: &Sim,
    tenant: &Tenant,
    app: &App,
    params: &Params,
    v: Version,
    login_base: &str,
) -> Result<Issued, AadError> {
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let verifier = params.get("code_verifier");
    let now = sim.clock.unix();
    let target = {
        let mut w = sim.world();
        let lifetime = w.scenario.code_lifetime_secs as i64;
        let entry = w
            .codes
            .get_mut(code)
            .filter(|c| {
                c.tenant_id.eq_ignore_ascii_case(&tenant.id)
                    && c.client_id.eq_ignore_ascii_case(&app.client_id)
            })
            .ok_or_else(bad_grant)?;
        if entry.redeemed {
            return Err(AadError::bad(
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid \
                 code or use an existing refresh token.",
            ));
        }
        if now - entry.issued_at >= lifetime {
            return Err(expired_grant());
        }
        if entry.redirect_uri != redirect_uri {
            return Err(AadError::bad(
                "invalid_grant",
                500112,
                format!(
                    "The reply address '{redirect_uri}' does not match the reply address '{}' \
                     provided when requesting Authorization code.",
                    entry.redirect_uri
                ),
            ));
        }
        if let Some((challenge, method)) = &entry.code_challenge {
            let verifier = verifier.ok_or_else(|| AadError::missing("code_verifier"))?;
            let computed = if method.eq_ignore_ascii_case("S256") {
                s256(verifier)
            } else {
                verifier.to_string()
            };
            if &computed != challenge {
                return Err(AadError::bad(
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the \
                     authorization request.",
                ));
            }
        }
        let target = requested_target(params, v, &entry.resource_or_scope, tenant)?;
        entry.redeemed = true;
        (target, entry.user.clone())
    };
    let (target, user) = target;
    delegated(sim, tenant, app, &target, v, login_base, &user)
}

fn refresh(
    sim: &Sim,
    tenant: &Tenant,
    app: &App,
    params: &Params,
    v: Version,
    login_base: &str,
) -> Result<Issued, AadError> {
    let token = params.require("refresh_token")?;
    let now = sim.clock.unix();
    let target = {
        let mut w = sim.world();
        let entry = w.refresh_tokens.get_mut(token).ok_or_else(|| {
            AadError::bad(
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            )
        })?;
        if !entry.tenant_id.eq_ignore_ascii_case(&tenant.id)
            || !entry.client_id.eq_ignore_ascii_case(&app.client_id)
        {
            return Err(bad_grant());
        }
        if entry.revoked {
            return Err(expired_grant());
        }
        if now >= entry.expires_at {
            let issued = entra_timestamp((entry.expires_at - REFRESH_TOKEN_LIFETIME_SECS) * 1000);
            return Err(AadError::bad(
                "invalid_grant",
                700082,
                format!(
                    "The refresh token has expired due to inactivity. The token was issued on \
                     {issued} and was inactive for 90.00:00:00."
                ),
            ));
        }
        let target = requested_target(params, v, &entry.resource_or_scope, tenant)?;
        // Rotation: this token stops working once a new one is issued in its place.
        entry.revoked = true;
        (target, entry.user.clone())
    };
    let (target, user) = target;
    let mut issued = delegated(sim, tenant, app, &target, v, login_base, &user)?;
    if issued.refresh_token.is_none() {
        // The grant being refreshed was an offline one, so it stays offline.
        issued.refresh_token = Some(new_refresh_token(sim, tenant, app, &target, &user));
    }
    Ok(issued)
}

/// What a code or refresh token is redeemed for: the request's `resource`/`scope` when given,
/// else the original grant's; checked before the grant is used up.
fn requested_target(
    params: &Params,
    v: Version,
    original: &str,
    tenant: &Tenant,
) -> Result<String, AadError> {
    let target = match params.get(v.target_param()) {
        Some(t) => t.to_string(),
        // A grant made through v2 (a scope list) redeemed at v1 is for the resource it names.
        None if v == Version::V1
            && (original.ends_with("/.default") || !resource_well_formed(original)) =>
        {
            audience_of_scope(original)
        }
        None => original.to_string(),
    };
    if target.is_empty() {
        return Err(AadError::missing(v.target_param()));
    }
    audience(&target, v, tenant)?;
    Ok(target)
}

/// Issues a delegated token (`scp`) for `user` and, when the request allows it, a refresh
/// token.
pub(crate) fn delegated(
    sim: &Sim,
    tenant: &Tenant,
    app: &App,
    target: &str,
    v: Version,
    login_base: &str,
    user: &SignedIn,
) -> Result<Issued, AadError> {
    let aud = audience(target, v, tenant)?;
    let scopes = app.scopes_for(&aud).to_vec();
    let (access_token, iat, exp) = jwt::issue(
        sim,
        &TokenRequest {
            tenant_id: &tenant.id,
            client_id: &app.client_id,
            audience: &aud,
            roles: None,
            scopes: Some(scopes.clone()),
            v2: v == Version::V2,
            login_base,
            user: Some(user),
        },
    );
    let offline = v == Version::V1 || wants_offline_access(target);
    let refresh_token = offline.then(|| new_refresh_token(sim, tenant, app, target, user));
    let scope = scopes
        .iter()
        .map(|s| format!("{aud}/{s}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Issued {
        access_token,
        iat,
        exp,
        resource: aud,
        scope,
        delegated: Some(scopes.join(" ")),
        refresh_token,
    })
}

fn new_refresh_token(
    sim: &Sim,
    tenant: &Tenant,
    app: &App,
    target: &str,
    user: &SignedIn,
) -> String {
    let token = opaque_token("0.A");
    let expires_at = sim.clock.unix() + REFRESH_TOKEN_LIFETIME_SECS;
    let mut w = sim.world();
    w.refresh_tokens.insert(
        token.clone(),
        RefreshGrant {
            tenant_id: tenant.id.clone(),
            client_id: app.client_id.clone(),
            resource_or_scope: target.to_string(),
            expires_at,
            revoked: false,
            user: user.clone(),
        },
    );
    token
}

/// Shapes the answer: v2 with numbers; v1 with `expires_on`, `not_before`, `resource` and
/// numbers as strings unless the scenario says otherwise.
fn shape(issued: &Issued, v: Version, numbers_as_strings: bool) -> Value {
    let lifetime = issued.exp - issued.iat;
    let mut m = Map::new();
    m.insert("token_type".into(), json!("Bearer"));
    match v {
        Version::V2 => {
            m.insert("scope".into(), json!(issued.scope));
            m.insert("expires_in".into(), json!(lifetime));
            m.insert("ext_expires_in".into(), json!(lifetime));
        }
        Version::V1 => {
            let num = |n: i64| {
                if numbers_as_strings {
                    json!(n.to_string())
                } else {
                    json!(n)
                }
            };
            if let Some(scp) = &issued.delegated {
                m.insert("scope".into(), json!(scp));
            }
            m.insert("expires_in".into(), num(lifetime));
            m.insert("ext_expires_in".into(), num(lifetime));
            m.insert("expires_on".into(), num(issued.exp));
            m.insert("not_before".into(), num(issued.iat));
            m.insert("resource".into(), json!(issued.resource));
        }
    }
    m.insert("access_token".into(), json!(issued.access_token));
    if let Some(rt) = &issued.refresh_token {
        m.insert("refresh_token".into(), json!(rt));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_example() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let raw = STANDARD.encode("my%20id:s%3Acret+x");
        h.insert("authorization", format!("Basic {raw}").parse().unwrap());
        assert_eq!(
            basic_credentials(&h),
            Some(("my id".to_string(), "s:cret x".to_string()))
        );
    }
}
