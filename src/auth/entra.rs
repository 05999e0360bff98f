//! Entra ID token endpoint details: response shapes (v1 numbers as strings), error bodies and
//! the AADSTS codes worth a clear message, and the oauth2 HTTP adapter over reqwest.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::{AccessToken, EmptyExtraTokenFields, RefreshToken, Scope, TokenResponse};
use serde::{Deserialize, Deserializer, Serialize};

/// A token response of either endpoint version: v1 carries numbers as strings.
#[derive(Clone, Deserialize, Serialize)]
pub struct EntraTokenResponse {
    /// The access token.
    pub access_token: AccessToken,
    /// Always "Bearer".
    pub token_type: oauth2::basic::BasicTokenType,
    /// Lifetime in seconds (number or string).
    #[serde(default, deserialize_with = "number_or_string")]
    pub expires_in: Option<u64>,
    /// v1: absolute expiry (unix seconds, string).
    #[serde(default, deserialize_with = "number_or_string")]
    pub expires_on: Option<u64>,
    /// Refresh token (delegated grants).
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    /// v2: granted scopes, space separated.
    #[serde(default, deserialize_with = "scopes")]
    pub scope: Option<Vec<Scope>>,
    /// v1: the resource.
    #[serde(default)]
    pub resource: Option<String>,
}

impl fmt::Debug for EntraTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokenResponse")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenResponse for EntraTokenResponse {
    type TokenType = oauth2::basic::BasicTokenType;
    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &Self::TokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scope.as_ref()
    }
}

/// Keeps the oauth2 crate's generic parameters satisfied.
pub type Extra = EmptyExtraTokenFields;

/// Accepts `3599`, `"3599"` or null.
pub fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Float(f64),
        Str(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        None => None,
        Some(NumOrStr::Num(n)) => Some(n),
        Some(NumOrStr::Float(f)) if f >= 0.0 => Some(f as u64),
        Some(NumOrStr::Float(_)) => None,
        Some(NumOrStr::Str(s)) => s.trim().parse().ok(),
    })
}

fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Scope>>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.map(|s| {
        s.split_whitespace()
            .map(|p| Scope::new(p.to_string()))
            .collect()
    }))
}

/// An Entra error body.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct EntraError {
    /// OAuth error (`invalid_client`, `invalid_grant`, ...).
    #[serde(default)]
    pub error: String,
    /// `AADSTSnnnn: text\r\nTrace ID: ...`.
    #[serde(default)]
    pub error_description: Option<String>,
    /// AADSTS codes.
    #[serde(default)]
    pub error_codes: Vec<u64>,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl EntraError {
    /// The main AADSTS code: from `error_codes`, else parsed from the description.
    pub fn code(&self) -> Option<u64> {
        self.error_codes.first().copied().or_else(|| {
            let d = self.error_description.as_deref()?;
            let rest = d.strip_prefix("AADSTS")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    }

    /// The first line of the description without the `AADSTSnnnn: ` prefix.
    pub fn summary(&self) -> String {
        let d = self.error_description.as_deref().unwrap_or_default();
        let first = d.lines().next().unwrap_or_default().trim();
        let text = match first.split_once(": ") {
            Some((code, rest)) if code.starts_with("AADSTS") => rest,
            _ => first,
        };
        text.chars().take(300).collect()
    }

    /// Whether the grant behind a refresh token or code is dead and consent is needed again.
    pub fn is_dead_grant(&self) -> bool {
        matches!(self.code(), Some(70008 | 700082 | 50173 | 54005))
            || (self.error == "invalid_grant" && self.code().is_none())
    }

    /// A clear message for a person: what is wrong and what to do, with the code.
    pub fn explain(&self, tenant: &str, client_id: &str) -> String {
        let code = self.code();
        let tag = code.map(|c| format!(" (AADSTS{c})")).unwrap_or_default();
        let corr = self
            .correlation_id
            .as_deref()
            .map(|c| format!("; correlation id {c}"))
            .unwrap_or_default();
        let (what, advice): (&str, String) = match code {
            Some(7000215) => (
                "client secret rejected",
                "the configured client_secret is not a valid secret of this app".into(),
            ),
            Some(7000222) => (
                "client secret expired",
                "create a new secret in the app registration and update the asset".into(),
            ),
            Some(700016) => (
                "application not found",
                format!(
                    "app {client_id} does not exist in tenant {tenant}: check client_id and that the app is consented there"
                ),
            ),
            Some(90002) => (
                "tenant not found",
                format!("tenant {tenant} was not found: check tenant_id and the environment"),
            ),
            Some(900144) => ("token request incomplete", self.summary()),
            Some(70008) => (
                "grant expired or revoked",
                "the refresh token or code has expired or was revoked".into(),
            ),
            Some(700082) => ("refresh token expired", "it was unused for too long".into()),
            Some(50173) => (
                "grant revoked",
                "a password change or an admin revoked it; a fresh consent is needed".into(),
            ),
            Some(54005) => (
                "code already redeemed",
                "the authorization code was used before".into(),
            ),
            Some(501481) => (
                "PKCE mismatch",
                "the code_verifier did not match the code_challenge".into(),
            ),
            Some(70011) => ("invalid scope", self.summary()),
            Some(65001) => (
                "consent missing",
                "the app has not been granted consent for the Defender API in this tenant".into(),
            ),
            Some(500011) => (
                "Defender API not found in tenant",
                "check the environment and that Defender for Endpoint is provisioned".into(),
            ),
            Some(700027) | Some(700024) => ("client assertion rejected", self.summary()),
            _ => ("token request refused", {
                let summary = self.summary();
                if summary.is_empty() {
                    self.error.clone()
                } else {
                    format!("{}: {summary}", self.error)
                }
            }),
        };
        format!("{what}{tag}: {advice}{corr}")
    }
}

impl fmt::Display for EntraError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.summary())
    }
}

impl oauth2::ErrorResponse for EntraError {}

/// Transport failure while talking to the token endpoint (no secrets in its text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// What went wrong with a request to Entra, in words that carry no URL or secret.
pub fn failure_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

/// The oauth2 HTTP adapter over the host's reqwest client (redirects never followed).
pub struct OAuthHttp(pub reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp {
    type Error = TransportError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = parts.uri.to_string();
            let host = parts.uri.host().unwrap_or_default().to_string();
            let resp = self
                .0
                .request(parts.method, &url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    TransportError(format!("token endpoint {host}: {}", failure_kind(&e)))
                })?;
            let mut builder = http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                builder = builder.header(k, v);
            }
            let bytes = resp.bytes().await.map_err(|_| {
                TransportError(format!("token endpoint {host}: reading the answer failed"))
            })?;
            builder
                .body(bytes.to_vec())
                .map_err(|_| TransportError(format!("token endpoint {host}: unreadable answer")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_strings_and_v2_numbers_parse() {
        let v1: EntraTokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"1388452167","not_before":"1388448267","resource":"https://api.securitycenter.microsoft.com","access_token":"x"}"#,
        )
        .unwrap();
        assert_eq!(v1.expires_in, Some(3599));
        assert_eq!(v1.expires_on, Some(1388452167));
        let v2: EntraTokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","scope":"a b","expires_in":3599,"ext_expires_in":0,"access_token":"x","unknown":1}"#,
        )
        .unwrap();
        assert_eq!(v2.expires_in, Some(3599));
        assert_eq!(v2.scope.map(|s| s.len()), Some(2));
    }

    #[test]
    fn error_code_from_codes_or_description() {
        let e: EntraError = serde_json::from_str(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t\r\nCorrelation ID: c","error_codes":[7000215],"correlation_id":"c"}"#,
        )
        .unwrap();
        assert_eq!(e.code(), Some(7000215));
        assert!(
            e.explain("t", "c")
                .contains("client secret rejected (AADSTS7000215)")
        );
        let e = EntraError {
            error: "invalid_grant".into(),
            error_description: Some("AADSTS70008: expired".into()),
            ..Default::default()
        };
        assert_eq!(e.code(), Some(70008));
        assert!(e.is_dead_grant());
    }

    #[test]
    fn debug_hides_tokens() {
        let v: EntraTokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":1,"access_token":"very-secret-token","refresh_token":"rt-secret"}"#,
        )
        .unwrap();
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("very-secret-token") && !dbg.contains("rt-secret"));
    }
}
