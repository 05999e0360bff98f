//! The consent routes an admin's browser visits: `GET /start_oauth?asset_id=X` opens a consent
//! session and redirects to Entra ID; `GET /result` is where Entra ID sends the browser back.
//!
//! Both answer small self-contained HTML pages (no scripts, no external assets) with
//! `Content-Security-Policy: default-src 'none'`, `no-store` caching and no referrer, and every
//! value taken from the request is HTML-escaped. Neither route needs the API key: the browser
//! of an admin cannot carry it, and the state/PKCE checks are what protect them.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::auth::consent::{self, ConsentError};
use crate::auth::{AuthError, Grants};
use crate::config::AuthKind;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;\
background:#f4f5f7;color:#1b1b1b;margin:0}main{max-width:560px;margin:48px auto;background:#fff;\
padding:32px 40px;border-radius:6px;box-shadow:0 1px 4px rgba(0,0,0,.15)}h1{font-size:22px;\
margin:0 0 16px}.ok{color:#107c10}.err{color:#a80000}code{background:#f2f2f2;padding:1px 4px}\
li{margin:4px 0}.muted{color:#5e5e5e;font-size:13px}\
pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:8px}";

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Escapes text for HTML element content and attribute values.
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

/// Cuts a request-controlled value before it is shown.
fn cut(text: &str, max: usize) -> String {
    crate::actions::truncate(text, max)
}

/// Adds the headers every consent answer carries.
fn secure(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, max-age=0"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// An HTML page. `body` is markup built from escaped values only.
fn page(status: StatusCode, title: &str, class: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"none\">\n<title>{title}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<main>\n<h1 class=\"{class}\" id=\"title\">{title}</h1>\n{body}\
         <p class=\"muted\">defender-soar</p>\n</main>\n</body>\n</html>\n",
        title = escape_html(title),
    );
    let mut resp = (status, html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(&mut resp);
    resp
}

/// An error page (400 unless told otherwise): what happened and what to do.
fn error_page(status: StatusCode, title: &str, body: &str) -> Response {
    page(status, title, "err", body)
}

/// A paragraph of escaped text.
fn para(text: &str) -> String {
    format!("<p>{}</p>\n", escape_html(text))
}

/// The "start again" paragraph with the consent link.
fn start_again(url: &str) -> String {
    format!(
        "<p>Nothing was stored. To connect the asset, start again at <a href=\"{u}\">{u}</a>.</p>\n",
        u = escape_html(url)
    )
}

/// Query parameters, first occurrence of each name wins.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /start_oauth?asset_id=X`: opens a consent session and redirects to Entra ID.
#[utoipa::path(get, path = "/start_oauth",
    params(("asset_id" = String, Query, min_length = 1,
        description = "Asset to connect (one with auth = authorization_code); the first occurrence counts")),
    responses(
        (status = 302, description = "A consent session is open (valid 10 minutes, single use): redirect to the environment's Entra ID authorize endpoint",
            headers(("Location" = String, description = "The authorize URL, with the session's state and PKCE challenge"))),
        (status = 400, description = "HTML page: asset_id missing or empty, the asset uses client credentials (no consent needed), or its configuration cannot open a consent", body = String, content_type = "text/html"),
        (status = 404, description = "HTML page: no asset with this id", body = String, content_type = "text/html"),
        (status = 500, description = "HTML page: the asset's state file cannot be read or written, or the authorize URL is invalid", body = String, content_type = "text/html")))]
pub async fn start_oauth(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    let Some(asset_id) = query.get("asset_id").filter(|a| !a.is_empty()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Which asset?",
            &para(
                "This page needs the asset to connect: open /start_oauth?asset_id=<asset id> (the id is the key under [assets] in the configuration).",
            ),
        );
    };
    let Some(asset) = app.asset(asset_id) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Unknown asset",
            &para(&format!(
                "No asset named '{}' is configured on this host. Check the asset id (the key under [assets] in the configuration).",
                cut(asset_id, 64)
            )),
        );
    };
    if asset.config.auth != AuthKind::AuthorizationCode {
        return error_page(
            StatusCode::BAD_REQUEST,
            "No consent needed",
            &para(&format!(
                "Asset '{asset_id}' uses client credentials: it gets its tokens with the app's own secret and needs no interactive consent. Grant the app's permissions (and admin consent) in the app registration instead, then run test_connectivity. To use interactive consent, set auth = \"authorization_code\" for this asset."
            )),
        );
    }
    match asset.tokens.start_consent().await {
        Ok(url) => {
            let Ok(location) = HeaderValue::from_str(&url) else {
                return error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Consent could not start",
                    &para(
                        "The authorize URL built from the asset's configuration is not a valid header value.",
                    ),
                );
            };
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(header::LOCATION, location);
            secure(&mut resp);
            resp
        }
        Err(e) => {
            tracing::warn!(asset = %asset_id, error = %e, "consent session could not be opened");
            let status = match e {
                AuthError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            error_page(
                status,
                "Consent could not start",
                &para(&format!("Asset '{asset_id}': {e}")),
            )
        }
    }
}

/// The list of granted permissions as markup.
fn granted_list(grants: &Grants) -> String {
    if grants.permissions.is_empty() {
        return para(
            "The token carries no permissions for the Defender API: check the app registration's API permissions.",
        );
    }
    let mut out = String::from("<p>Granted permissions:</p>\n<ul id=\"permissions\">\n");
    for p in &grants.permissions {
        out.push_str(&format!("<li>{}</li>\n", escape_html(p)));
    }
    out.push_str("</ul>\n");
    out
}

/// `GET /result`: where Entra ID sends the admin back with a code (or an error) and the state.
#[utoipa::path(get, path = "/result",
    params(
        ("code" = Option<String>, Query, description = "Authorization code (Entra ID's answer to an accepted consent)"),
        ("state" = String, Query, description = "The consent session's state, `<asset_id>.<random>`, issued by /start_oauth; single use (without it the answer is 400)"),
        ("error" = Option<String>, Query, description = "Entra ID error (e.g. access_denied when the admin declined); when present, nothing is exchanged or stored"),
        ("error_description" = Option<String>, Query, description = "Entra ID's error text, shown on the page")),
    responses(
        (status = 200, description = "HTML page: the asset is connected (the token pair is stored) and the granted permissions", body = String, content_type = "text/html"),
        (status = 400, description = "HTML page: the consent was declined or refused (error), the state is missing, unknown, for another or an unknown asset, replayed or expired, the code is missing, or Entra ID refused to exchange the code; nothing stored changed", body = String, content_type = "text/html"),
        (status = 500, description = "HTML page: the asset's state file cannot be read or written", body = String, content_type = "text/html")))]
pub async fn result(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    let state = query.get("state").filter(|s| !s.is_empty());
    let claimed = state.and_then(consent::asset_of_state);
    let asset = claimed.and_then(|id| app.asset(id));

    if let Some(error) = query.get("error") {
        // Declined or refused at Entra: show what it said; nothing is read or written.
        let description = query.get("error_description").unwrap_or_default();
        let which = match (&asset, state) {
            (Some(a), Some(s)) if a.tokens.has_session(s).await => {
                format!("for asset '{}' ", a.config.id)
            }
            _ => String::new(),
        };
        let logged: String = error.chars().filter(|c| !c.is_control()).take(64).collect();
        tracing::info!(error = %logged, "consent not given");
        let mut body = para(&format!(
            "The consent {which}was not given: Entra ID answered {}.",
            cut(error, 100)
        ));
        if !description.is_empty() {
            body.push_str(&format!(
                "<p>Details:</p>\n<pre id=\"description\">{}</pre>\n",
                escape_html(&cut(description, 2000))
            ));
        }
        body.push_str(&para(
            "Nothing was stored and the asset's state is unchanged. An admin can start the consent again from /start_oauth.",
        ));
        let title = if error == "access_denied" {
            "Consent declined"
        } else {
            "Consent not given"
        };
        return error_page(StatusCode::BAD_REQUEST, title, &body);
    }

    let Some(state) = state else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Missing state",
            &para(
                "This answer carries no state parameter, so it cannot belong to a consent started here. Nothing was stored. Start the consent at /start_oauth?asset_id=<asset id>.",
            ),
        );
    };
    let Some(asset_id) = claimed else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown consent",
            &para(
                "This answer's state was not issued by this host (it is malformed or was tampered with). Nothing was stored. Start the consent at /start_oauth?asset_id=<asset id>.",
            ),
        );
    };
    let Some(asset) = asset else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown asset",
            &para(&format!(
                "This answer names asset '{asset_id}', which is not configured on this host. Nothing was stored."
            )),
        );
    };
    let url = asset.tokens.consent_url().to_string();
    match asset
        .tokens
        .complete_consent(state, query.get("code"))
        .await
    {
        Ok(connected) => {
            let minutes = connected.expires_in / 60;
            let mut body = para(&format!(
                "The token pair is stored (encrypted) in the asset's state file; the access token is valid for about {minutes} minutes and is renewed automatically."
            ));
            if !connected.refresh_token {
                body.push_str(&para("Entra ID returned no refresh token: when the access token expires, consent will be needed again."));
            }
            body.push_str(&granted_list(&connected.grants));
            body.push_str(&para("You can close this window. Playbooks can now run actions on this asset; test_connectivity shows which actions the permissions allow."));
            page(
                StatusCode::OK,
                &format!("Asset {} is now connected", connected.asset_id),
                "ok",
                &body,
            )
        }
        Err(e) => {
            tracing::warn!(asset = %asset_id, error = %e, "consent answer refused");
            let (status, title, text) = match &e {
                ConsentError::Unknown { .. } => (
                    StatusCode::BAD_REQUEST,
                    "Unknown consent",
                    format!(
                        "This answer's state does not belong to any consent started here for asset '{asset_id}': it was forged, belongs to another asset, or is older than a restart."
                    ),
                ),
                ConsentError::Replayed { .. } => (
                    StatusCode::BAD_REQUEST,
                    "Consent already used",
                    format!(
                        "This consent answer for asset '{asset_id}' was already used; each consent can be completed once (reloading the page does not repeat it)."
                    ),
                ),
                ConsentError::Expired { .. } => (
                    StatusCode::BAD_REQUEST,
                    "Consent expired",
                    format!(
                        "The consent for asset '{asset_id}' was started more than {} minutes ago and has expired.",
                        consent::SESSION_LIFETIME_SECS / 60
                    ),
                ),
                ConsentError::MissingCode { .. } => (
                    StatusCode::BAD_REQUEST,
                    "No authorization code",
                    format!(
                        "Entra ID sent the browser back for asset '{asset_id}' without an authorization code."
                    ),
                ),
                ConsentError::Exchange { message, .. } => (
                    StatusCode::BAD_REQUEST,
                    "Consent failed",
                    format!(
                        "Entra ID did not exchange the authorization code for asset '{asset_id}': {message}. This consent is used up."
                    ),
                ),
                ConsentError::State(message) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "State file problem",
                    format!("Asset '{asset_id}': {message}"),
                ),
            };
            let mut body = para(&text);
            if !matches!(e, ConsentError::State(_)) {
                body.push_str(&start_again(&url));
            }
            error_page(status, title, &body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;"
        );
    }

    #[test]
    fn first_parameter_wins() {
        let q = Query::parse(Some("state=a&state=b&code=%3Cx%3E"));
        assert_eq!(q.get("state"), Some("a"));
        assert_eq!(q.get("code"), Some("<x>"));
        assert_eq!(q.get("error"), None);
    }
}
