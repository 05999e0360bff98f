//! The consent routes. `POST /assets/{asset}/consent` (API key) answers a single-use consent
//! link; an admin's browser opens it at `GET /start_oauth?ticket=…`, which binds the browser
//! with a cookie and redirects to Entra ID; `GET /result` is where Entra ID sends the browser
//! back, and it must carry that cookie.
//!
//! The two browser routes answer small self-contained HTML pages (no scripts, no external
//! assets) with `Content-Security-Policy: default-src 'none'`, `no-store` caching and no
//! referrer; every value taken from the request is HTML-escaped. They need no API key (a
//! browser cannot carry it) and assume a hostile caller: without a valid ticket nothing is
//! written, `HEAD` never opens anything, Entra's error text is shown only for a consent this
//! browser started, and no page shows a file path (the log has the details).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::Map;

use crate::app::App;
use crate::auth::Grants;
use crate::auth::consent::{self, ConsentError, TicketError};
use crate::config::AuthKind;
use crate::envelope::{ActionError, Envelope, EnvelopeResponse, Outcome};

pub use super::html::escape_html;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;\
background:#f4f5f7;color:#1b1b1b;margin:0}main{max-width:560px;margin:48px auto;background:#fff;\
padding:32px 40px;border-radius:6px;box-shadow:0 1px 4px rgba(0,0,0,.15)}h1{font-size:22px;\
margin:0 0 16px}.ok{color:#107c10}.err{color:#a80000}code{background:#f2f2f2;padding:1px 4px}\
li{margin:4px 0}.muted{color:#5e5e5e;font-size:13px}\
pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:8px}";

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Cuts a request-controlled value before it is shown.
fn cut(text: &str, max: usize) -> String {
    crate::actions::truncate(text, max)
}

/// Adds the headers every consent answer carries.
fn secure(resp: &mut Response) {
    super::html::secure(resp, CSP);
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

/// Name of the browser-binding cookie: `__Host-` prefixed (Secure, host-only) when the public
/// URL is https; browsers refuse that prefix without Secure, so plain http uses a bare name.
fn cookie_name(app: &App) -> &'static str {
    if https(app) {
        "__Host-defender-soar-consent"
    } else {
        "defender-soar-consent"
    }
}

fn https(app: &App) -> bool {
    app.config.server.public_url.scheme() == "https"
}

/// The `Set-Cookie` value binding the browser (or clearing the binding when `value` is empty).
fn binding_cookie(app: &App, value: &str) -> Option<HeaderValue> {
    let max_age = if value.is_empty() {
        0
    } else {
        consent::SESSION_LIFETIME_SECS
    };
    let secure = if https(app) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(app)
    ))
    .ok()
}

/// The binding cookie's value from the request, when it has the shape this host issues.
fn binding_from(app: &App, headers: &HeaderMap) -> Option<String> {
    super::html::cookie(headers, cookie_name(app))
        .map(str::to_string)
        .filter(|v| consent::is_browser_value(v))
}

/// How an admin gets a new consent link, for pages.
fn new_link_hint(asset_id: Option<&str>) -> String {
    let asset = asset_id.unwrap_or("<asset id>");
    format!(
        "Consent links come from the host's API: POST /assets/{asset}/consent with the API key (or run test_connectivity on the asset) answers a single-use link valid for {} minutes; open it in the browser you sign in with.",
        consent::TICKET_LIFETIME_SECS / 60
    )
}

/// The page for a state file problem: generic, the details (paths) go to the log only.
fn state_problem_page(asset_id: &str, detail: &str) -> Response {
    tracing::error!(asset = %asset_id, error = %detail, "consent: the asset's state file cannot be used");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "State file problem",
        &para(&format!(
            "The host could not read or write the state of asset '{asset_id}'. Nothing was changed. The host's log says what is wrong and how to recover."
        )),
    )
}

/// `GET /start_oauth?ticket=…`: trades a consent link for a consent session bound to this
/// browser and redirects to Entra ID. `HEAD` answers without opening anything.
#[utoipa::path(get, path = "/start_oauth",
    params(("ticket" = String, Query, min_length = 1,
        description = "Single-use consent link value answered by POST /assets/{asset}/consent (valid 10 minutes); the first occurrence counts")),
    responses(
        (status = 302, description = "A consent session is open (valid 10 minutes, single use, bound to this browser by an HttpOnly cookie): redirect to the environment's Entra ID authorize endpoint",
            headers(("Location" = String, description = "The authorize URL, with the session's state and PKCE challenge"),
                ("Set-Cookie" = String, description = "The browser-binding cookie (`__Host-defender-soar-consent` over https)"))),
        (status = 400, description = "HTML page: no ticket, or the ticket is malformed, unknown, expired or already used; nothing was stored", body = String, content_type = "text/html"),
        (status = 500, description = "HTML page: the asset's state file cannot be read or written (details in the log)", body = String, content_type = "text/html")))]
pub async fn start_oauth(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if method == Method::HEAD {
        // Link checkers and previews: nothing is looked up or opened.
        let mut resp = StatusCode::OK.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        secure(&mut resp);
        return resp;
    }
    let query = Query::parse(raw.as_deref());
    let Some(ticket) = query.get("ticket").filter(|t| !t.is_empty()) else {
        let asset = query
            .get("asset_id")
            .filter(|a| consent::is_asset_id(a))
            .map(str::to_string);
        return error_page(
            StatusCode::BAD_REQUEST,
            "A consent link is needed",
            &para(&format!(
                "This page opens a consent only from a consent link, so that nobody but an operator of this host can start one. {}",
                new_link_hint(asset.as_deref())
            )),
        );
    };
    let invalid = |asset: Option<&str>| {
        error_page(
            StatusCode::BAD_REQUEST,
            "Consent link not valid",
            &format!(
                "{}{}",
                para(
                    "This consent link is not valid: it is malformed, unknown or expired. Nothing was stored."
                ),
                para(&new_link_hint(asset))
            ),
        )
    };
    let Some(asset_id) = consent::asset_of_state(ticket) else {
        return invalid(None);
    };
    let Some(asset) = app.asset(asset_id) else {
        return invalid(None);
    };
    match asset.tokens.open_session(ticket).await {
        Ok(opened) => {
            audit_browser_step(
                &app,
                &headers,
                asset_id,
                "consent_ticket",
                302,
                "consent link opened; sent to Entra ID",
            )
            .await;
            let Ok(location) = HeaderValue::from_str(&opened.authorize_url) else {
                tracing::error!(asset = %asset_id, "the authorize URL is not a valid header value");
                return error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Consent could not start",
                    &para(
                        "The authorize URL built from the asset's configuration is not valid; the host's log has details.",
                    ),
                );
            };
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(header::LOCATION, location);
            if let Some(cookie) = binding_cookie(&app, opened.browser.expose_secret()) {
                resp.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            secure(&mut resp);
            resp
        }
        Err(TicketError::Used { .. }) => error_page(
            StatusCode::BAD_REQUEST,
            "Consent link already used",
            &format!(
                "{}{}",
                para(
                    "This consent link was already opened once; each link works once. Nothing was stored."
                ),
                para(&new_link_hint(Some(asset_id)))
            ),
        ),
        Err(TicketError::Unknown { .. }) => invalid(Some(asset_id)),
        Err(TicketError::State(detail)) => state_problem_page(asset_id, &detail),
        Err(e) => error_page(
            StatusCode::BAD_REQUEST,
            "No consent needed",
            &para(&format!("{e}.")),
        ),
    }
}

/// Appends the audit line of a consent step taken in a browser (no API key: `key` is `-`). A
/// line that cannot be written is logged; the step itself is not undone.
async fn audit_browser_step(
    app: &App,
    headers: &HeaderMap,
    asset: &str,
    action: &str,
    status: u16,
    message: &str,
) {
    let record = crate::audit::AuditRecord {
        key: "-".into(),
        addr: "-".into(),
        request_id: super::routes::request_id(headers),
        asset: asset.to_string(),
        action: action.to_string(),
        parameters: Map::new(),
        event_id: None,
        outcome: Some(crate::audit::AuditOutcome {
            status,
            message: message.to_string(),
        }),
    };
    if let Err(e) = app.audit.append(record).await {
        tracing::error!(asset, action, error = %e, "audit line of a consent step not written");
    }
}

/// `POST /assets/{asset}/consent` (API key): starts a consent. An interactive asset answers a
/// single-use consent link to open in a browser.
#[utoipa::path(post, path = "/assets/{asset}/consent",
    params(("asset" = String, Path, description = "Asset id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Envelope (action `consent`): for `authorization_code`, `summary.consent_url` is a single-use link valid `summary.expires_in` seconds, to open in the browser the admin signs in with; for `device_code`, `summary.user_code` and `summary.verification_uri` (the host polls Entra until the admin signs in)", body = crate::envelope::Envelope),
        (status = 409, description = "Envelope: the asset authenticates without a user (client credentials, certificate, managed identity) and needs no consent", body = crate::envelope::Envelope),
        (status = 401, description = "Envelope: missing or wrong API key", body = crate::envelope::Envelope),
        (status = 404, description = "Envelope: no asset with this id", body = crate::envelope::Envelope),
        (status = 502, description = "Envelope: Entra ID refused or failed the device code request", body = crate::envelope::Envelope),
        (status = 429, description = "Envelope: too many consents are pending for this asset (none is dropped); retry after the time in Retry-After", body = crate::envelope::Envelope),
        (status = 500, description = "Envelope: the asset's state file cannot be read or written", body = crate::envelope::Envelope)))]
pub async fn request_consent(
    State(app): State<Arc<App>>,
    Path(asset_id): Path<String>,
    caller: Option<axum::Extension<super::api_key::Caller>>,
    headers: HeaderMap,
) -> EnvelopeResponse {
    let (key, addr) = caller.as_ref().map_or_else(
        || ("-".to_string(), "-".to_string()),
        |c| (c.key.clone(), c.addr_text()),
    );
    consent_audited(
        &app,
        &asset_id,
        key,
        addr,
        super::routes::request_id(&headers),
    )
    .await
}

/// Starts a consent for `asset_id` on behalf of key `key` at `addr` and writes its audit line
/// (the API route and the admin console's Connect button). Refused when the audit trail cannot
/// be written.
pub async fn consent_audited(
    app: &Arc<App>,
    asset_id: &str,
    key: String,
    addr: String,
    request_id: String,
) -> EnvelopeResponse {
    let known = app.assets.contains_key(asset_id);
    if known && let Err(e) = app.audit.check_writable().await {
        tracing::error!(error = %e, "audit trail not writable; consent refused");
        return EnvelopeResponse::error(
            "consent",
            asset_id,
            Map::new(),
            &ActionError::Internal(
                "the audit trail cannot be written (logged); no consent was started".into(),
            ),
        );
    }
    let mut resp = start_consent(app, asset_id).await;
    if known {
        // The answer's message may carry a device code's user code: the line says what
        // happened without it.
        let message = match (
            resp.status.is_success(),
            resp.envelope.summary.contains_key("user_code"),
        ) {
            (true, true) => "device code sign-in started".to_string(),
            (true, false) => "single-use consent link issued".to_string(),
            (false, _) => resp.envelope.message.clone(),
        };
        let record = crate::audit::AuditRecord {
            key,
            addr,
            request_id,
            asset: asset_id.to_string(),
            action: "consent".into(),
            parameters: Map::new(),
            event_id: None,
            outcome: Some(crate::audit::AuditOutcome {
                status: resp.status.as_u16(),
                message,
            }),
        };
        if let Err(e) = app.audit.append(record).await {
            tracing::error!(error = %e, "audit line of a consent start not written");
            resp.envelope.message.push_str(
                " [warning: the consent started but its audit line could not be written (logged)]",
            );
        }
    }
    resp
}

/// The work of `POST /assets/{asset}/consent`.
async fn start_consent(app: &Arc<App>, asset_id: &str) -> EnvelopeResponse {
    const ACTION: &str = "consent";
    let reject = |e: ActionError| EnvelopeResponse::error(ACTION, asset_id, Map::new(), &e);
    let Some(asset) = app.asset(asset_id) else {
        return reject(ActionError::NotFound(format!(
            "unknown asset '{}'",
            crate::actions::truncate(asset_id, 64)
        )));
    };
    if asset.config.auth == AuthKind::DeviceCode {
        return match asset.tokens.start_device_code().await {
            Ok(start) => {
                let outcome = Outcome::success(format!(
                    "An administrator of tenant {} opens {} on any device within {} minutes, enters the code {} and signs in; the host stores the tokens as soon as they do",
                    asset.config.tenant_id,
                    start.verification_uri,
                    start.expires_in / 60,
                    start.user_code
                ))
                .with_summary("auth", asset.config.auth.as_str())
                .with_summary("user_code", start.user_code.as_str())
                .with_summary("verification_uri", start.verification_uri.as_str())
                .with_summary("expires_in", start.expires_in)
                .with_summary("interval", start.interval);
                EnvelopeResponse::ok(Envelope::from_outcome(
                    ACTION,
                    asset_id,
                    Map::new(),
                    outcome,
                ))
            }
            Err(e) => match e.action_error() {
                Some(err) => reject(err),
                None => reject(ActionError::Upstream(e.to_string())),
            },
        };
    }
    match asset.tokens.issue_ticket().await {
        Ok(ticket) => {
            let outcome = Outcome::success(format!(
                "Open the link in summary.consent_url in a browser within {} minutes and sign in as an administrator of tenant {}; the link works once, in that browser",
                ticket.expires_in / 60,
                asset.config.tenant_id
            ))
            .with_summary("auth", asset.config.auth.as_str())
            .with_summary("consent_url", ticket.url.expose_secret())
            .with_summary("expires_in", ticket.expires_in);
            EnvelopeResponse::ok(Envelope::from_outcome(
                ACTION,
                asset_id,
                Map::new(),
                outcome,
            ))
        }
        Err(e @ TicketError::TooMany { .. }) => {
            let mut r = reject(ActionError::Failed(e.to_string()));
            r.status = StatusCode::TOO_MANY_REQUESTS;
            r.retry_after = Some(60);
            r
        }
        Err(TicketError::State(detail)) => reject(ActionError::Internal(detail)),
        // The request is well formed; the asset's configuration has nothing to consent to.
        Err(e) => {
            let mut r = reject(ActionError::Failed(e.to_string()));
            r.status = StatusCode::CONFLICT;
            r
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

/// Adds the header that clears the browser-binding cookie.
fn clear_binding(app: &App, mut resp: Response) -> Response {
    if let Some(cookie) = binding_cookie(app, "") {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// `GET /result`: where Entra ID sends the admin back with a code (or an error) and the state.
#[utoipa::path(get, path = "/result",
    params(
        ("code" = Option<String>, Query, description = "Authorization code (Entra ID's answer to an accepted consent)"),
        ("state" = String, Query, description = "The consent session's state, `<asset_id>.<random>`, issued by /start_oauth; single use (without it the answer is 400)"),
        ("error" = Option<String>, Query, description = "Entra ID error (e.g. access_denied when the admin declined); when present, nothing is exchanged or stored"),
        ("error_description" = Option<String>, Query, description = "Entra ID's error text, shown only when the state belongs to a consent this browser started")),
    responses(
        (status = 200, description = "HTML page: the asset is connected (the token pair is stored), who connected it, and the granted permissions", body = String, content_type = "text/html"),
        (status = 400, description = "HTML page: the consent was declined or refused (error), the state is missing, unknown, for another or an unknown asset, replayed or expired, the answer came from another browser (no or wrong binding cookie), the code is missing, or Entra ID refused to exchange the code; nothing stored changed", body = String, content_type = "text/html"),
        (status = 403, description = "HTML page: the signed-in user may not connect the asset (wrong tenant, a token for another resource, or not in allowed_consenters); nothing was stored", body = String, content_type = "text/html"),
        (status = 500, description = "HTML page: the asset's state file cannot be read or written (details in the log)", body = String, content_type = "text/html")))]
pub async fn result(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let state = query.get("state").filter(|s| !s.is_empty());
    let claimed = state.and_then(consent::asset_of_state);
    let asset = claimed.and_then(|id| app.asset(id));
    let browser = binding_from(&app, &headers);

    if let Some(error) = query.get("error") {
        // Declined or refused at Entra: nothing is exchanged or written. Entra's words are
        // shown only for a consent this browser started, so forged links cannot put text on
        // this host's pages.
        let ours = match (&asset, state) {
            (Some(a), Some(s)) => a.tokens.has_session(s, browser.as_deref()).await,
            _ => false,
        };
        let logged: String = error.chars().filter(|c| !c.is_control()).take(64).collect();
        tracing::info!(error = %logged, matched = ours, "consent not given");
        if !ours {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Consent not completed",
                &format!(
                    "{}{}",
                    para(
                        "The consent was not completed, and this answer does not belong to a consent started in this browser. Nothing was stored."
                    ),
                    para(&new_link_hint(None))
                ),
            );
        }
        let asset_id = claimed.unwrap_or_default();
        let description = query.get("error_description").unwrap_or_default();
        let mut body = para(&format!(
            "The consent for asset '{asset_id}' was not given: Entra ID answered {}.",
            cut(error, 100)
        ));
        if !description.is_empty() {
            body.push_str(&format!(
                "<p>Details:</p>\n<pre id=\"description\">{}</pre>\n",
                escape_html(&cut(description, 2000))
            ));
        }
        body.push_str(&para(
            "Nothing was stored and the asset's state is unchanged. An operator can ask for a new consent link.",
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
            &format!(
                "{}{}",
                para(
                    "This answer carries no state parameter, so it cannot belong to a consent started here. Nothing was stored."
                ),
                para(&new_link_hint(None))
            ),
        );
    };
    let Some(asset_id) = claimed else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown consent",
            &format!(
                "{}{}",
                para(
                    "This answer's state was not issued by this host (it is malformed or was tampered with). Nothing was stored."
                ),
                para(&new_link_hint(None))
            ),
        );
    };
    let Some(asset) = asset else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown consent",
            &format!(
                "{}{}",
                para(
                    "This answer's state does not belong to any consent started here. Nothing was stored."
                ),
                para(&new_link_hint(None))
            ),
        );
    };
    match asset
        .tokens
        .complete_consent(state, query.get("code"), browser.as_deref())
        .await
    {
        Ok(connected) => {
            audit_browser_step(
                &app,
                &headers,
                asset_id,
                "consent_completed",
                200,
                &format!("connected by {}", connected.consenter.label()),
            )
            .await;
            let minutes = connected.expires_in / 60;
            let mut body = format!(
                "<p>Connected by <strong id=\"consenter\">{}</strong>.</p>\n",
                escape_html(&connected.consenter.label())
            );
            body.push_str(&para(&format!(
                "The token pair is stored (encrypted) in the asset's state file; the access token is valid for about {minutes} minutes and is renewed automatically."
            )));
            if !connected.refresh_token {
                body.push_str(&para("Entra ID returned no refresh token: when the access token expires, consent will be needed again."));
            }
            body.push_str(&granted_list(&connected.grants));
            body.push_str(&para("You can close this window. Playbooks can now run actions on this asset; test_connectivity shows which actions the permissions allow."));
            clear_binding(
                &app,
                page(
                    StatusCode::OK,
                    &format!("Asset {} is now connected", connected.asset_id),
                    "ok",
                    &body,
                ),
            )
        }
        Err(e) => {
            tracing::warn!(asset = %asset_id, error = %e, "consent answer refused");
            let (status, title, text) = match &e {
                ConsentError::Unknown { .. } => (
                    StatusCode::BAD_REQUEST,
                    "Unknown consent",
                    "This answer's state does not belong to any consent started here: it was forged, belongs to another asset, or is older than a restart.".to_string(),
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
                ConsentError::OtherBrowser { .. } => (
                    StatusCode::BAD_REQUEST,
                    "Consent started in another browser",
                    format!(
                        "This answer for asset '{asset_id}' did not come from the browser that opened the consent link, so it is not accepted."
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
                ConsentError::Refused { reason, .. } => (
                    StatusCode::FORBIDDEN,
                    "Consent refused",
                    format!(
                        "The consent for asset '{asset_id}' was refused: {reason}. The asset's tokens are unchanged; sign in again with an allowed account, or ask for a new consent link."
                    ),
                ),
                ConsentError::State(detail) => return state_problem_page(asset_id, detail),
            };
            let mut body = para(&text);
            body.push_str(&para("Nothing was stored."));
            body.push_str(&para(&new_link_hint(Some(asset_id))));
            error_page(status, title, &body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_parameter_wins() {
        let q = Query::parse(Some("state=a&state=b&code=%3Cx%3E"));
        assert_eq!(q.get("state"), Some("a"));
        assert_eq!(q.get("code"), Some("<x>"));
        assert_eq!(q.get("error"), None);
    }
}
