//! The authorize endpoint: `GET` checks the request and renders the consent page; `POST`
//! (the consent form) checks it again and sends the user back to the client with a code or
//! an error.
//!
//! Requests whose tenant, client or redirect URI cannot be trusted get an error page and never
//! a redirect; later problems are reported to the client through the redirect, as Entra does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::pages::{self, Consent};
use super::{
    AadError, Diag, Params, Version, audience_of_scope, no_cache, opaque_token,
    redirect_uri_allowed, resource_well_formed, wants_offline_access,
};
use crate::scenario::{App, Tenant};
use crate::state::{AuthCode, Sim};

/// Parameters of an authorize request that the consent form carries forward.
const CARRIED: [&str; 12] = [
    "client_id",
    "response_type",
    "redirect_uri",
    "response_mode",
    "scope",
    "resource",
    "state",
    "code_challenge",
    "code_challenge_method",
    "login_hint",
    "prompt",
    "nonce",
];

/// `GET /{tenant}/oauth2/authorize`.
pub async fn show_v1(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    show(&sim, &tenant, &headers, query.as_deref(), Version::V1)
}

/// `GET /{tenant}/oauth2/v2.0/authorize`.
pub async fn show_v2(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    show(&sim, &tenant, &headers, query.as_deref(), Version::V2)
}

/// `POST /{tenant}/oauth2/authorize` (the consent form).
pub async fn decide_v1(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&sim, &tenant, &headers, &body, Version::V1)
}

/// `POST /{tenant}/oauth2/v2.0/authorize` (the consent form).
pub async fn decide_v2(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&sim, &tenant, &headers, &body, Version::V2)
}

/// How the result travels back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

/// Where and how to answer the client.
#[derive(Debug, Clone)]
struct Target {
    redirect_uri: String,
    mode: ResponseMode,
    state: Option<String>,
}

/// A request that passed every check.
struct Checked {
    tenant: Tenant,
    app: App,
    target: Target,
    resource_or_scope: String,
    audience: String,
    challenge: Option<(String, String)>,
    login_hint: Option<String>,
}

/// Why a request is refused: on a page (nothing trustworthy to redirect to) or via redirect.
enum Refusal {
    Page(AadError),
    Redirect(Target, AadError),
}

fn check(sim: &Sim, tenant_key: &str, params: &Params, v: Version) -> Result<Checked, Refusal> {
    let tenant = sim.world().scenario.tenant(tenant_key).cloned();
    let tenant = tenant.ok_or_else(|| Refusal::Page(AadError::unknown_tenant(tenant_key)))?;
    if let Some(name) = params.duplicate() {
        return Err(Refusal::Page(AadError::duplicated(name)));
    }
    let client_id = params.require("client_id").map_err(Refusal::Page)?;
    let label = if tenant.name.is_empty() {
        tenant.id.clone()
    } else {
        tenant.name.clone()
    };
    let app = tenant
        .apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
        .cloned()
        .ok_or_else(|| Refusal::Page(AadError::unknown_client(client_id, &label)))?;
    let redirect_uri = params.require("redirect_uri").map_err(Refusal::Page)?;
    if !redirect_uri_allowed(&app.redirect_uris, redirect_uri)
        || url::Url::parse(redirect_uri).is_err()
    {
        return Err(Refusal::Page(AadError::bad(
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URIs configured for the application '{}'. Make sure the redirect URI \
                 sent in the request matches one added to your application in the Azure portal.",
                app.client_id
            ),
        )));
    }
    let mode = match params.get("response_mode") {
        None | Some("query") => ResponseMode::Query,
        Some("fragment") => ResponseMode::Fragment,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return Err(Refusal::Page(AadError::bad(
                "invalid_request",
                70007,
                format!("The response_mode '{other}' is not supported."),
            )));
        }
    };
    let target = Target {
        redirect_uri: redirect_uri.to_string(),
        mode,
        state: params.get("state").map(str::to_string),
    };
    let back = |e: AadError| Refusal::Redirect(target.clone(), e);

    let response_type = params.require("response_type").map_err(back)?;
    if response_type != "code" {
        return Err(back(AadError::bad(
            "unsupported_response_type",
            70005,
            format!("response_type '{response_type}' is not enabled for the application."),
        )));
    }
    let (resource_or_scope, audience) = match v {
        Version::V2 => {
            let scope = params.require("scope").map_err(back)?;
            (scope.to_string(), audience_of_scope(scope))
        }
        Version::V1 => {
            let resource = params.get("resource").unwrap_or_default();
            let audience = if resource.is_empty() {
                audience_of_scope("")
            } else {
                resource.to_string()
            };
            (resource.to_string(), audience)
        }
    };
    if !resource_well_formed(&audience) {
        return Err(back(AadError::unknown_resource(&audience, &label)));
    }
    let challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (None, None) => None,
        (None, Some(_)) => return Err(back(AadError::missing("code_challenge"))),
        (Some(challenge), method) => {
            // Entra takes a challenge without a method as plain (it does not assume S256).
            let method = match method {
                None | Some("plain") => "plain",
                Some("S256") => "S256",
                Some(other) => {
                    return Err(back(AadError::bad(
                        "invalid_request",
                        90023,
                        format!(
                            "Invalid code_challenge_method '{other}': the supported methods are \
                             S256 and plain."
                        ),
                    )));
                }
            };
            if !(43..=128).contains(&challenge.len()) {
                return Err(back(AadError::bad(
                    "invalid_request",
                    501491,
                    "Invalid size of Code_Challenge parameter.",
                )));
            }
            Some((challenge.to_string(), method.to_string()))
        }
    };
    if params.get("prompt") == Some("none") {
        return Err(back(AadError::bad(
            "login_required",
            50058,
            "A silent sign-in request was sent but no user is signed in.",
        )));
    }
    Ok(Checked {
        tenant,
        app,
        target,
        resource_or_scope,
        audience,
        challenge,
        login_hint: params.get("login_hint").map(str::to_string),
    })
}

fn show(
    sim: &Sim,
    tenant_key: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    v: Version,
) -> Response {
    let diag = Diag::new(sim, headers);
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let c = match check(sim, tenant_key, &params, v) {
        Ok(c) => c,
        Err(r) => return refuse(r, &diag),
    };
    let hidden: Vec<(&str, &str)> = CARRIED
        .iter()
        .filter_map(|name| params.get(name).map(|value| (*name, value)))
        .collect();
    let action = format!("/{}/oauth2/{}authorize", c.tenant.id, v.path_prefix());
    let tenant_name = if c.tenant.name.is_empty() {
        &c.tenant.id
    } else {
        &c.tenant.name
    };
    let app_name = if c.app.name.is_empty() {
        &c.app.client_id
    } else {
        &c.app.name
    };
    let body = pages::consent(&Consent {
        app_name,
        client_id: &c.app.client_id,
        tenant_name,
        login_hint: c.login_hint.as_deref(),
        users: &c.tenant.users,
        resource: &c.audience,
        permissions: c.app.delegated_scopes(),
        offline: v == Version::V1 || wants_offline_access(&c.resource_or_scope),
        action: &action,
        hidden: &hidden,
    });
    pages::html(StatusCode::OK, body, &diag, false)
}

fn decide(sim: &Sim, tenant_key: &str, headers: &HeaderMap, body: &[u8], v: Version) -> Response {
    let diag = Diag::new(sim, headers);
    let params = Params::parse(body);
    let c = match check(sim, tenant_key, &params, v) {
        Ok(c) => c,
        Err(r) => return refuse(r, &diag),
    };
    let state = c.target.state.as_deref();
    match params.get("decision") {
        Some("accept") => {
            // The account that signs in: the form's choice, else the login hint, else the
            // tenant's first user. An account of another tenant gets a token of its own home
            // tenant, as a multi-tenant authority would issue.
            let named = params.get("user").or(c.login_hint.as_deref());
            let user = match named {
                Some(name) => match sim.world().scenario.user(name) {
                    Some(u) => u,
                    None if params.get("user").is_none() => c.tenant.default_user(),
                    None => {
                        return pages::error_response(
                            &AadError::bad(
                                "invalid_request",
                                50034,
                                format!(
                                    "The user account {name} does not exist in the directory. \
                                     To sign into this application, the account must be added \
                                     to the directory."
                                ),
                            ),
                            &diag,
                        );
                    }
                },
                None => c.tenant.default_user(),
            };
            let code = opaque_token("1.A");
            let session_state = uuid::Uuid::new_v4().to_string();
            sim.world().codes.insert(
                code.clone(),
                AuthCode {
                    tenant_id: c.tenant.id.clone(),
                    client_id: c.app.client_id.clone(),
                    redirect_uri: c.target.redirect_uri.clone(),
                    code_challenge: c.challenge.clone(),
                    resource_or_scope: c.resource_or_scope.clone(),
                    issued_at: sim.clock.unix(),
                    redeemed: false,
                    user,
                },
            );
            let mut pairs = vec![("code", code.as_str())];
            if let Some(s) = state {
                pairs.push(("state", s));
            }
            if v == Version::V1 {
                pairs.push(("session_state", session_state.as_str()));
            }
            send_back(&c.target, &pairs, &diag)
        }
        Some("decline") => {
            let err = AadError::bad(
                "access_denied",
                65004,
                "User declined to consent to access the app.",
            );
            refuse(Refusal::Redirect(c.target.clone(), err), &diag)
        }
        _ => pages::error_response(&AadError::missing("decision"), &diag),
    }
}

fn refuse(refusal: Refusal, diag: &Diag) -> Response {
    match refusal {
        Refusal::Page(err) => pages::error_response(&err, diag),
        Refusal::Redirect(target, err) => {
            let description = err.description(diag);
            let mut pairs = vec![
                ("error", err.error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = target.state.as_deref() {
                pairs.push(("state", s));
            }
            send_back(&target, &pairs, diag)
        }
    }
}

/// Sends the result to the redirect URI (keeping its own query) in the requested mode.
fn send_back(target: &Target, pairs: &[(&str, &str)], diag: &Diag) -> Response {
    let Ok(mut url) = url::Url::parse(&target.redirect_uri) else {
        return pages::error_response(&AadError::missing("redirect_uri"), diag);
    };
    match target.mode {
        ResponseMode::FormPost => {
            let body = pages::form_post(url.as_str(), pairs);
            return pages::html(StatusCode::OK, body, diag, true);
        }
        ResponseMode::Query => {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        ResponseMode::Fragment => {
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            url.set_fragment(Some(&fragment));
        }
    }
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return pages::error_response(&AadError::missing("redirect_uri"), diag);
    };
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert("location", location);
    no_cache(h);
    diag.add_headers(h);
    resp
}
