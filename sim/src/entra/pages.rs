//! HTML rendered by the authorize endpoint: the consent page, the error page (shown when the
//! request cannot be sent back to the client) and the `form_post` response page.
//!
//! Every value placed into markup goes through [`escape_html`]; the pages load no external
//! assets.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{AadError, Diag, escape_html, no_cache};

const STYLE: &str = "\
body{margin:0;background:#f2f2f2;font-family:'Segoe UI',Helvetica,Arial,sans-serif;color:#1b1b1b}\
main{max-width:440px;margin:48px auto;background:#fff;padding:36px 44px;\
box-shadow:0 2px 6px rgba(0,0,0,.2)}\
.brand{font-weight:600;color:#5e5e5e;margin-bottom:20px}\
h1{font-size:24px;font-weight:600;margin:0 0 12px}\
.app{font-size:18px;font-weight:600}\
.muted{color:#5e5e5e;font-size:13px}\
ul{padding-left:20px}li{margin:6px 0;font-size:14px}\
.buttons{display:flex;justify-content:flex-end;gap:8px;margin-top:28px}\
button{min-width:108px;padding:6px 12px;font-size:15px;border:1px solid #8c8c8c;\
background:#e1e1e1;cursor:pointer}\
button#accept{background:#0067b8;border-color:#0067b8;color:#fff}\
.error{color:#a80000;font-weight:600}\
pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:8px}";

/// Content-Security-Policy of the pages: inline style only; `form_post` adds its one script.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";
const CSP_FORM_POST: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

/// What the consent page shows and carries.
pub struct Consent<'a> {
    /// The app asking for access.
    pub app_name: &'a str,
    /// Its client id.
    pub client_id: &'a str,
    /// The tenant's display name.
    pub tenant_name: &'a str,
    /// The signed-in user hint, when the request named one.
    pub login_hint: Option<&'a str>,
    /// Accounts of the tenant offered on the page (the first is the default).
    pub users: &'a [crate::scenario::User],
    /// The resource the permissions are for.
    pub resource: &'a str,
    /// The delegated permissions requested.
    pub permissions: &'a [String],
    /// Whether the app asks to keep access (a refresh token).
    pub offline: bool,
    /// Where the form posts (the authorize endpoint of the same version and tenant).
    pub action: &'a str,
    /// The original request's parameters, carried as hidden fields.
    pub hidden: &'a [(&'a str, &'a str)],
}

/// A whole page around `body` (already escaped markup) titled `title`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"none\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<main>\n<div class=\"brand\">Microsoft (simulated sign-in)</div>\n\
         {body}</main>\n</body>\n</html>\n",
        escape_html(title)
    )
}

/// The consent page: the app, the tenant, the permissions and one form with Accept / Decline.
pub fn consent(c: &Consent<'_>) -> String {
    let mut body = String::new();
    if let Some(user) = c.login_hint {
        body.push_str(&format!(
            "<div class=\"muted\" id=\"user\">{}</div>\n",
            escape_html(user)
        ));
    }
    body.push_str("<h1>Permissions requested</h1>\n");
    body.push_str(&format!(
        "<div class=\"app\" id=\"app-name\">{}</div>\n<div class=\"muted\">App ID: {}</div>\n",
        escape_html(c.app_name),
        escape_html(c.client_id)
    ));
    body.push_str(&format!(
        "<p>This app would like to access <span id=\"resource\">{}</span> in \
         <strong id=\"tenant-name\">{}</strong> on your behalf:</p>\n<ul id=\"permissions\">\n",
        escape_html(c.resource),
        escape_html(c.tenant_name)
    ));
    if c.permissions.is_empty() {
        body.push_str("<li>Sign you in</li>\n");
    }
    for p in c.permissions {
        body.push_str(&format!("<li>{}</li>\n", escape_html(p)));
    }
    if c.offline {
        body.push_str("<li>Maintain access to data you have given it access to</li>\n");
    }
    body.push_str(
        "</ul>\n<p class=\"muted\">Accepting lets this app use your data as described in its terms of \
         service and privacy statement. You can change these permissions later.</p>\n",
    );
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\" id=\"consent\">\n",
        escape_html(c.action)
    ));
    for (name, value) in c.hidden {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape_html(name),
            escape_html(value)
        ));
    }
    let upns: Vec<&str> = c.users.iter().map(|u| u.upn.as_str()).collect();
    body.push_str(&account_and_decision(&upns, c.login_hint));
    page("Permissions requested", &body)
}

/// The end of a sign-in form: the account to sign in as (`user`, preselected when it matches
/// `selected`; omitted when there are no accounts) and the Decline / Accept buttons
/// (`decision`).
pub fn account_and_decision(upns: &[&str], selected: Option<&str>) -> String {
    let mut out = String::new();
    if !upns.is_empty() {
        out.push_str("<label>Sign in as <select name=\"user\" id=\"account\">\n");
        for upn in upns {
            let chosen = selected.is_some_and(|h| h.eq_ignore_ascii_case(upn));
            out.push_str(&format!(
                "<option value=\"{0}\"{1}>{0}</option>\n",
                escape_html(upn),
                if chosen { " selected" } else { "" },
            ));
        }
        out.push_str("</select></label>\n");
    }
    out.push_str(
        "<div class=\"buttons\">\n\
         <button type=\"submit\" name=\"decision\" value=\"decline\" id=\"decline\">Decline</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"accept\" id=\"accept\">Accept</button>\n\
         </div>\n</form>\n",
    );
    out
}

/// The error page: the AADSTS code and message with the request's diagnostics.
pub fn error(err: &AadError, diag: &Diag) -> String {
    let body = format!(
        "<h1>Sorry, but we're having trouble signing you in.</h1>\n\
         <p class=\"error\" id=\"error-code\">AADSTS{}</p>\n<p id=\"error-message\">{}</p>\n\
         <pre>Error: {}\nRequest Id: {}\nCorrelation Id: {}\nTimestamp: {}</pre>\n",
        err.code,
        escape_html(&err.message),
        escape_html(err.error),
        escape_html(&diag.trace_id),
        escape_html(&diag.correlation_id),
        escape_html(&diag.timestamp)
    );
    page("Sign in error", &body)
}

/// The `response_mode=form_post` answer: a form that posts the result to the client.
pub fn form_post(action: &str, fields: &[(&str, &str)]) -> String {
    let mut body = format!(
        "<form method=\"post\" name=\"hiddenform\" action=\"{}\">\n",
        escape_html(action)
    );
    for (name, value) in fields {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape_html(name),
            escape_html(value)
        ));
    }
    body.push_str(
        "<noscript><p>Script is disabled. Click Submit to continue.</p>\
         <button type=\"submit\">Submit</button></noscript>\n</form>\n\
         <script>document.forms.hiddenform.submit();</script>\n",
    );
    page("Working...", &body)
}

/// An HTML answer with no-cache, framing and content-security headers.
pub fn html(status: StatusCode, body: String, diag: &Diag, form_post: bool) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_cache(h);
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(if form_post { CSP_FORM_POST } else { CSP }),
    );
    diag.add_headers(h);
    resp
}

/// The error page as a 400 answer.
pub fn error_response(err: &AadError, diag: &Diag) -> Response {
    html(StatusCode::BAD_REQUEST, error(err, diag), diag, false)
}
