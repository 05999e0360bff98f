//! Entra ID: token endpoints (v1, v2) and the authorize endpoint with its consent page.
//!
//! - [`token`]: `POST /{tenant}/oauth2/token` and `/{tenant}/oauth2/v2.0/token` (client
//!   credentials, authorization code with PKCE, rotating refresh tokens).
//! - [`authorize`]: `GET`/`POST /{tenant}/oauth2[/v2.0]/authorize` (request checks, consent
//!   decision, redirect back to the client).
//! - [`assertion`]: certificate client assertions (JWT bearer) checked against the app's
//!   registered certificates.
//! - [`identity`]: the managed identity endpoint of the instance metadata service.
//! - [`device_code`]: `POST /{tenant}/oauth2[/v2.0]/devicecode`, the `/devicelogin` page
//!   where the user enters the code, and the device code grant of the token endpoint.
//! - [`pages`]: the HTML the authorize endpoint renders (consent, error, form_post).
//!
//! This file holds what they share: parameter parsing, Entra's error body, redirect URI
//! matching and scope/resource helpers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::json;

use crate::state::Sim;

pub mod assertion;
pub mod authorize;
pub mod device_code;
pub mod identity;
pub mod pages;
pub mod token;

/// Routes under `/{tenant}/oauth2/...`.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/{tenant}/oauth2/token", post(token::token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token::token_v2))
        .route(
            "/{tenant}/oauth2/authorize",
            get(authorize::show_v1).post(authorize::decide_v1),
        )
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize::show_v2).post(authorize::decide_v2),
        )
        .route("/{tenant}/oauth2/devicecode", post(device_code::start_v1))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(device_code::start_v2),
        )
        .route(
            "/devicelogin",
            get(device_code::show).post(device_code::decide),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/metadata/identity/oauth2/token", get(identity::token))
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`: the tenant's metadata, whose
/// `issuer` names the tenant id (how clients turn a domain into the tenant's GUID).
async fn openid_configuration(
    axum::extract::State(sim): axum::extract::State<Arc<Sim>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = sim.world().scenario.tenant(&tenant).cloned();
    let diag = Diag::new(&sim, &headers);
    let Some(t) = found else {
        return AadError::unknown_tenant(&tenant).into_token_response(&diag);
    };
    let base = crate::api::base_url(&headers);
    let id = &t.id;
    let body = json!({
        "issuer": format!("{base}/{id}/v2.0"),
        "authorization_endpoint": format!("{base}/{id}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{id}/oauth2/v2.0/token"),
        "device_authorization_endpoint": format!("{base}/{id}/oauth2/v2.0/devicecode"),
        "jwks_uri": format!("{base}/{id}/discovery/v2.0/keys"),
        "tenant_region_scope": "NA",
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    });
    json_response(StatusCode::OK, &body, &diag)
}

/// Refresh tokens live 90 days (Entra's default inactivity window).
pub const REFRESH_TOKEN_LIFETIME_SECS: i64 = 90 * 24 * 3600;

/// Scopes that name no resource (OpenID Connect and the refresh token request).
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Audience of tokens whose request names no resource (Microsoft Graph, as Entra does).
const GRAPH: &str = "https://graph.microsoft.com";

/// Microsoft Graph's resource ids in every cloud (and its application id).
const GRAPH_AUDIENCES: [&str; 4] = [
    GRAPH,
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "00000003-0000-0000-c000-000000000000",
];

/// Whether a token audience is Microsoft Graph (of any cloud).
pub fn is_graph_audience(aud: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    GRAPH_AUDIENCES.iter().any(|g| g.eq_ignore_ascii_case(aud))
}

/// The v1 (`resource`) or v2 (`scope`) protocol endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `/oauth2/token`, `/oauth2/authorize`.
    V1,
    /// `/oauth2/v2.0/token`, `/oauth2/v2.0/authorize`.
    V2,
}

impl Version {
    /// The parameter naming what the token is for: `resource` (v1) or `scope` (v2).
    pub fn target_param(self) -> &'static str {
        match self {
            Version::V1 => "resource",
            Version::V2 => "scope",
        }
    }

    /// The path segment after `oauth2/`: empty (v1) or `v2.0/`.
    pub fn path_prefix(self) -> &'static str {
        match self {
            Version::V1 => "",
            Version::V2 => "v2.0/",
        }
    }
}

/// Form or query parameters, with the first repeated name remembered (Entra refuses repeats).
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, String>,
    duplicate: Option<String>,
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` text (a body or a query string).
    pub fn parse(raw: &[u8]) -> Params {
        let mut params = Params::default();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if params.values.contains_key(k.as_ref()) {
                if params.duplicate.is_none() {
                    params.duplicate = Some(k.into_owned());
                }
                continue;
            }
            params.values.insert(k.into_owned(), v.into_owned());
        }
        params
    }

    /// A parameter's value; empty values count as absent, as Entra treats them.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A required parameter, or the AADSTS900144 error naming it.
    pub fn require(&self, name: &str) -> Result<&str, AadError> {
        self.get(name).ok_or_else(|| AadError::missing(name))
    }

    /// The first parameter given more than once.
    pub fn duplicate(&self) -> Option<&str> {
        self.duplicate.as_deref()
    }
}

/// Per-request diagnostics Entra puts in every error: trace id, correlation id, timestamp.
#[derive(Debug, Clone)]
pub struct Diag {
    /// Trace id (also the `x-ms-request-id` header).
    pub trace_id: String,
    /// Correlation id: the caller's `client-request-id` when it sent a GUID, else a fresh one.
    pub correlation_id: String,
    /// Whether the caller sent `client-request-id` (then it is echoed back).
    pub echo_correlation: bool,
    /// `YYYY-MM-DD HH:MM:SSZ` of the simulated clock.
    pub timestamp: String,
}

impl Diag {
    /// Diagnostics for a request.
    pub fn new(sim: &Sim, headers: &HeaderMap) -> Diag {
        let given = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| uuid::Uuid::parse_str(v.trim()).ok());
        Diag {
            trace_id: uuid::Uuid::new_v4().to_string(),
            correlation_id: given.unwrap_or_else(uuid::Uuid::new_v4).to_string(),
            echo_correlation: given.is_some(),
            timestamp: entra_timestamp(sim.clock.now_ms()),
        }
    }

    /// Adds `x-ms-request-id` (and `client-request-id` when the caller sent one).
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.trace_id) {
            headers.insert("x-ms-request-id", v);
        }
        if self.echo_correlation
            && let Ok(v) = HeaderValue::from_str(&self.correlation_id)
        {
            headers.insert("client-request-id", v);
        }
    }
}

/// `YYYY-MM-DD HH:MM:SSZ`, the timestamp format of Entra error bodies.
pub fn entra_timestamp(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// An Entra error: OAuth `error`, AADSTS number and message, HTTP status.
#[derive(Debug, Clone)]
pub struct AadError {
    /// HTTP status (400, or 401 for failed client authentication).
    pub status: StatusCode,
    /// OAuth error (`invalid_request`, `invalid_grant`, ...).
    pub error: &'static str,
    /// AADSTS number.
    pub code: u32,
    /// Message after `AADSTSnnnn: `.
    pub message: String,
}

impl AadError {
    /// A 400 error.
    pub fn bad(error: &'static str, code: u32, message: impl Into<String>) -> AadError {
        AadError {
            status: StatusCode::BAD_REQUEST,
            error,
            code,
            message: message.into(),
        }
    }

    /// A 401 `invalid_client` error (failed client authentication).
    pub fn client(code: u32, message: impl Into<String>) -> AadError {
        AadError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            code,
            message: message.into(),
        }
    }

    /// AADSTS900144: a required parameter is missing.
    pub fn missing(name: &str) -> AadError {
        Self::bad(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// AADSTS9000411: a parameter was given twice.
    pub fn duplicated(name: &str) -> AadError {
        Self::bad(
            "invalid_request",
            9000411,
            format!("The request is not properly formatted. The parameter '{name}' is duplicated."),
        )
    }

    /// AADSTS90002: the tenant does not exist.
    pub fn unknown_tenant(tenant: &str) -> AadError {
        Self::bad(
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        )
    }

    /// AADSTS700016: the client is not registered in the tenant.
    pub fn unknown_client(client_id: &str, tenant_label: &str) -> AadError {
        Self::bad(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant_label}'. This can happen if the application has not been installed by \
                 the administrator of the tenant or consented to by any user in the tenant. You \
                 may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// AADSTS500011: the resource is not a service principal of the tenant.
    pub fn unknown_resource(resource: &str, tenant_label: &str) -> AadError {
        Self::bad(
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant_label}. This can happen if the application has not been installed by \
                 the administrator of the tenant or consented to by any user in the tenant. You \
                 might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// `AADSTSnnnn: message` followed by the trace, correlation and timestamp lines.
    pub fn description(&self, diag: &Diag) -> String {
        format!(
            "AADSTS{}: {}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            self.code, self.message, diag.trace_id, diag.correlation_id, diag.timestamp
        )
    }

    /// `https://login.microsoftonline.com/error?code=nnnn`.
    pub fn error_uri(&self) -> String {
        format!("https://login.microsoftonline.com/error?code={}", self.code)
    }

    /// The JSON error answer of the token endpoint.
    pub fn into_token_response(self, diag: &Diag) -> Response {
        let body = json!({
            "error": self.error,
            "error_description": self.description(diag),
            "error_codes": [self.code],
            "timestamp": diag.timestamp,
            "trace_id": diag.trace_id,
            "correlation_id": diag.correlation_id,
            "error_uri": self.error_uri(),
        });
        json_response(self.status, &body, diag)
    }
}

/// A JSON answer with Entra's no-cache headers.
pub fn json_response(status: StatusCode, body: &serde_json::Value, diag: &Diag) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    no_cache(h);
    diag.add_headers(h);
    resp
}

/// `Cache-Control: no-store, no-cache` and `Pragma: no-cache`.
pub fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
}

/// A fresh opaque grant (authorization code or refresh token) with Entra's look.
pub fn opaque_token(prefix: &str) -> String {
    let mut bytes = [0u8; 48];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `given` matches one of the registered redirect URIs: exactly, or for loopback
/// addresses (`127.0.0.1`, `localhost`, `[::1]` over http) with any port.
pub fn redirect_uri_allowed(registered: &[String], given: &str) -> bool {
    if registered.iter().any(|r| r == given) {
        return true;
    }
    let Ok(given_url) = url::Url::parse(given) else {
        return false;
    };
    if !is_loopback(&given_url) || given_url.fragment().is_some() {
        return false;
    }
    registered.iter().any(|r| {
        url::Url::parse(r).is_ok_and(|reg| {
            is_loopback(&reg)
                && reg.host_str() == given_url.host_str()
                && reg.path() == given_url.path()
                && reg.query() == given_url.query()
                && reg.username() == given_url.username()
                && reg.password() == given_url.password()
        })
    })
}

fn is_loopback(u: &url::Url) -> bool {
    u.scheme() == "http" && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// Whether a resource identifier is well formed (an absolute URI or an application id).
pub fn resource_well_formed(resource: &str) -> bool {
    !resource.chars().any(char::is_whitespace)
        && (uuid::Uuid::parse_str(resource).is_ok() || url::Url::parse(resource).is_ok())
}

/// The resource a single v2 scope names: `X/.default` and `X/Permission` name `X`; a bare
/// permission names Microsoft Graph.
pub fn resource_of_scope(scope: &str) -> String {
    if let Some(r) = scope.strip_suffix("/.default") {
        return r.to_string();
    }
    if let Some((scheme, rest)) = scope.split_once("://")
        && let Some((resource, _permission)) = rest.rsplit_once('/')
    {
        return format!("{scheme}://{resource}");
    }
    if scope.contains("://") {
        return scope.to_string();
    }
    GRAPH.to_string()
}

/// The scopes of a v2 `scope` value that name a resource (OIDC scopes left out).
pub fn resource_scopes(scope: &str) -> Vec<&str> {
    scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.iter().any(|o| o.eq_ignore_ascii_case(s)))
        .collect()
}

/// The audience of a token requested with a v2 `scope` value.
pub fn audience_of_scope(scope: &str) -> String {
    resource_scopes(scope)
        .first()
        .map_or_else(|| GRAPH.to_string(), |s| resource_of_scope(s))
}

/// Whether a v2 `scope` value asks for a refresh token.
pub fn wants_offline_access(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| s.eq_ignore_ascii_case("offline_access"))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain"), "plain");
    }

    #[test]
    fn loopback_ignores_port_only() {
        let reg = vec![
            "http://127.0.0.1/result".to_string(),
            "https://app.example.com/cb".to_string(),
        ];
        assert!(redirect_uri_allowed(&reg, "http://127.0.0.1/result"));
        assert!(redirect_uri_allowed(&reg, "http://127.0.0.1:53123/result"));
        assert!(!redirect_uri_allowed(&reg, "http://127.0.0.1:53123/other"));
        assert!(!redirect_uri_allowed(&reg, "http://localhost:53123/result"));
        assert!(!redirect_uri_allowed(&reg, "https://127.0.0.1:5/result"));
        assert!(redirect_uri_allowed(&reg, "https://app.example.com/cb"));
        assert!(!redirect_uri_allowed(
            &reg,
            "https://app.example.com:444/cb"
        ));
        assert!(!redirect_uri_allowed(&reg, "https://app.example.com/cb/"));
    }

    #[test]
    fn scope_resources() {
        assert_eq!(
            audience_of_scope("https://api.securitycenter.microsoft.com/.default offline_access"),
            "https://api.securitycenter.microsoft.com"
        );
        assert_eq!(
            audience_of_scope("offline_access https://api.x.com/Machine.Read.All"),
            "https://api.x.com"
        );
        assert_eq!(audience_of_scope("User.Read openid"), GRAPH);
        assert_eq!(audience_of_scope("openid"), GRAPH);
        assert!(wants_offline_access("x/.default Offline_Access"));
        assert!(!wants_offline_access("x/.default"));
    }

    #[test]
    fn params_reject_repeats_and_empty() {
        let p = Params::parse(b"a=1&b=&a=2&c=x%20y");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
        assert_eq!(p.duplicate(), Some("a"));
    }

    #[test]
    fn timestamp_format() {
        assert_eq!(entra_timestamp(1_767_261_600_000), "2026-01-01 10:00:00Z");
    }
}
