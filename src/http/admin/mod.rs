//! The admin console: `GET /admin` in a browser. An admin signs in once with an API key that
//! has the `admin` scope; the browser then carries only a session cookie (HttpOnly,
//! SameSite=Strict). Every form carries the session's CSRF token (the sign-in form a token
//! bound to a short-lived cookie), and a POST a browser marks as cross-site is refused. Pages
//! are rendered on the server from escaped values, load one stylesheet from this host and no
//! script, and never show a secret or a token.
//!
//! Routes: `GET /admin`, `POST /admin/sign-in`, `POST /admin/sign-out`,
//! `POST /admin/assets/{asset}/connect` (starts the asset's ticketed consent or device code
//! sign-in) and `GET /admin/style.css`.

pub mod render;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::html::cookie;
use crate::app::App;
use crate::audit::{AuditOutcome, AuditRecord};
use crate::config::Scope;
use session::{Session, is_token, random_token, same_token};

/// The console's content security policy: its own stylesheet, forms posting to itself, nothing
/// else.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Longest form body read.
const MAX_FORM_BYTES: usize = 4096;
/// How long the sign-in form's token lives.
const SIGN_IN_FORM_SECS: u64 = 600;

fn https(app: &App) -> bool {
    app.config.server.public_url.scheme() == "https"
}

/// The session cookie's name: `__Host-` prefixed (Secure, host-only) over https.
fn session_cookie(app: &App) -> &'static str {
    if https(app) {
        "__Host-defender-soar-admin"
    } else {
        "defender-soar-admin"
    }
}

/// The sign-in form's cookie name.
fn sign_in_cookie(app: &App) -> &'static str {
    if https(app) {
        "__Host-defender-soar-admin-sign-in"
    } else {
        "defender-soar-admin-sign-in"
    }
}

/// A `Set-Cookie` value (`value` empty: clears the cookie).
fn set_cookie(app: &App, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
    let max_age = if value.is_empty() { 0 } else { max_age };
    let secure = if https(app) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// An HTML answer with the console's headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    super::html::secure(&mut resp, CSP);
    resp
}

/// A 303 to the console.
fn back_to_console() -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/admin"));
    super::html::secure(&mut resp, CSP);
    resp
}

/// The signed-in session of the request, if any.
fn session_of(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers, session_cookie(app))?;
    app.console.get(id).map(|s| (id.to_string(), s))
}

/// Form fields, first occurrence of each name wins.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if !out.iter().any(|(name, _)| *name == k) {
            out.push((k.into_owned(), v.into_owned()));
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether the browser says the POST came from another site (`Sec-Fetch-Site: cross-site`).
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

/// The 403 page for a signed-in form that is cross-site or lacks the session's CSRF token;
/// `None` when the form may be acted on.
fn refused_form(session: &Session, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let fields = form(&body[..body.len().min(MAX_FORM_BYTES)]);
    (cross_site(headers) || !session.csrf_ok(field(&fields, "csrf"))).then(|| forged(Some(session)))
}

/// A refusal of a form that did not come from this host's page.
fn forged(session: Option<&Session>) -> Response {
    html(
        StatusCode::FORBIDDEN,
        render::message_page(
            session,
            "Form refused",
            "err",
            "This form did not carry a valid CSRF token (it came from another page, or the page is older than the session). Nothing was changed. Reload the console and try again.",
        ),
    )
}

/// Appends an audit line of the console; a line that cannot be written is logged.
async fn audit(
    app: &App,
    key: &str,
    addr: &str,
    headers: &HeaderMap,
    action: &str,
    status: u16,
    message: &str,
) {
    let record = AuditRecord {
        key: key.to_string(),
        addr: addr.to_string(),
        request_id: super::routes::request_id(headers),
        asset: String::new(),
        action: action.to_string(),
        parameters: Map::new(),
        event_id: None,
        outcome: Some(AuditOutcome {
            status,
            message: message.to_string(),
        }),
    };
    if let Err(e) = app.audit.append(record).await {
        tracing::error!(action, error = %e, "audit line of the admin console not written");
    }
}

/// `GET /admin`: the console, or the sign-in form.
pub async fn console(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session_of(&app, &headers) else {
        return sign_in_form(&app, StatusCode::OK, None);
    };
    let server = crate::overview::server(&app).await;
    let assets = crate::overview::assets(&app, |id| session.assets.allows(id)).await;
    html(
        StatusCode::OK,
        render::console_page(&session, &server, &assets, app.console.count()),
    )
}

/// The sign-in form with a fresh form token (and its cookie).
fn sign_in_form(app: &App, status: StatusCode, problem: Option<&str>) -> Response {
    let token = random_token();
    let mut resp = html(status, render::sign_in_page(&token, problem));
    if let Some(c) = set_cookie(app, sign_in_cookie(app), &token, SIGN_IN_FORM_SECS) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// `POST /admin/sign-in` (form `api_key`, `csrf`): opens a session for an admin-scoped key.
pub async fn sign_in(
    State(app): State<Arc<App>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let addr = connect.map(|c| c.0.0.ip());
    let shown_addr = addr.map_or_else(|| "-".to_string(), |a| a.to_string());
    if body.len() > MAX_FORM_BYTES {
        return sign_in_form(
            &app,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("The form was too large."),
        );
    }
    let fields = form(&body);
    let form_token = field(&fields, "csrf").filter(|t| is_token(t));
    let cookie_token = cookie(&headers, sign_in_cookie(&app)).filter(|t| is_token(t));
    let bound = matches!((form_token, cookie_token), (Some(f), Some(c)) if same_token(f, c));
    if cross_site(&headers) || !bound {
        tracing::warn!(addr = %shown_addr, "admin console: sign-in form without a valid CSRF token refused");
        return sign_in_form(
            &app,
            StatusCode::FORBIDDEN,
            Some(
                "The sign-in form expired or did not come from this page. Nothing was checked; enter the key again.",
            ),
        );
    }
    let presented = field(&fields, "api_key").unwrap_or_default().trim();
    let found = if presented.is_empty() {
        None
    } else {
        app.keys.lookup(presented)
    };
    let Some((name, assets, scopes)) = found else {
        metrics::counter!("defender_auth_failures_total", "reason" => "unknown_key").increment(1);
        if let Some(a) = addr {
            app.keys.record_failure(a);
            if app.keys.blocked_for(a).is_some() {
                metrics::counter!("defender_auth_failures_total", "reason" => "throttled")
                    .increment(1);
                tokio::time::sleep(super::api_key::SLOW_DOWN).await;
            }
        }
        tracing::warn!(key = "unknown", addr = %shown_addr, "admin console: sign-in with an unknown API key");
        audit(
            &app,
            "unknown",
            &shown_addr,
            &headers,
            "admin_sign_in",
            401,
            "sign-in refused: unknown API key",
        )
        .await;
        return sign_in_form(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("This API key was not accepted."),
        );
    };
    if !scopes.contains(&Scope::Admin) {
        metrics::counter!("defender_auth_failures_total", "reason" => "scope").increment(1);
        tracing::warn!(key = %name, addr = %shown_addr, "admin console: sign-in with a key without the admin scope");
        audit(
            &app,
            &name,
            &shown_addr,
            &headers,
            "admin_sign_in",
            403,
            "sign-in refused: the key lacks the admin scope",
        )
        .await;
        return sign_in_form(
            &app,
            StatusCode::FORBIDDEN,
            Some("This API key lacks the admin scope the console needs."),
        );
    }
    let (id, _) = app.console.create(&name, assets);
    tracing::info!(key = %name, addr = %shown_addr, "admin console: signed in");
    audit(
        &app,
        &name,
        &shown_addr,
        &headers,
        "admin_sign_in",
        200,
        "signed in to the admin console",
    )
    .await;
    let mut resp = back_to_console();
    let h = resp.headers_mut();
    if let Some(c) = set_cookie(
        &app,
        session_cookie(&app),
        id.expose_secret(),
        session::LIFETIME.as_secs(),
    ) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = set_cookie(&app, sign_in_cookie(&app), "", 0) {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

/// `POST /admin/sign-out` (form `csrf`): ends the session.
pub async fn sign_out(
    State(app): State<Arc<App>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((id, session)) = session_of(&app, &headers) else {
        return back_to_console();
    };
    if let Some(refused) = refused_form(&session, &headers, &body) {
        return refused;
    }
    app.console.remove(&id);
    let addr = connect.map_or_else(|| "-".to_string(), |c| c.0.0.ip().to_string());
    audit(
        &app,
        &session.key,
        &addr,
        &headers,
        "admin_sign_out",
        200,
        "signed out of the admin console",
    )
    .await;
    let mut resp = back_to_console();
    if let Some(c) = set_cookie(&app, session_cookie(&app), "", 0) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// `POST /admin/assets/{asset}/connect` (form `csrf`): starts the asset's consent (a page with
/// the single-use consent link) or device code sign-in (a page with the code).
pub async fn connect(
    State(app): State<Arc<App>>,
    Path(asset_id): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((_, session)) = session_of(&app, &headers) else {
        return sign_in_form(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("Sign in first: the session ended or was never opened."),
        );
    };
    if let Some(refused) = refused_form(&session, &headers, &body) {
        return refused;
    }
    if !app.assets.contains_key(&asset_id) || !session.assets.allows(&asset_id) {
        return html(
            StatusCode::NOT_FOUND,
            render::message_page(
                Some(&session),
                "Unknown asset",
                "err",
                "No asset with this id is configured for this key. Nothing was started.",
            ),
        );
    }
    let addr = connect.map_or_else(|| "-".to_string(), |c| c.0.0.ip().to_string());
    let resp = super::oauth::consent_audited(
        &app,
        &asset_id,
        session.key.clone(),
        addr,
        super::routes::request_id(&headers),
    )
    .await;
    let summary = &resp.envelope.summary;
    let text = |k: &str| summary.get(k).and_then(Value::as_str).map(str::to_string);
    if !resp.status.is_success() {
        return html(
            resp.status,
            render::message_page(
                Some(&session),
                "Connect not started",
                "err",
                &resp.envelope.message,
            ),
        );
    }
    let page = match (text("consent_url"), text("user_code")) {
        (Some(url), _) => render::consent_link_page(&session, &asset_id, &url),
        (None, Some(code)) => render::device_code_page(
            &session,
            &asset_id,
            &code,
            &text("verification_uri").unwrap_or_default(),
            summary
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        (None, None) => render::message_page(
            Some(&session),
            "Connect started",
            "ok",
            &resp.envelope.message,
        ),
    };
    html(StatusCode::OK, page)
}

/// `GET /admin/style.css`: the console's stylesheet.
pub async fn style() -> Response {
    let mut resp = render::STYLE.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
