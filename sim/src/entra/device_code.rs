//! The device authorization grant: `POST /{tenant}/oauth2[/v2.0]/devicecode` hands out a device
//! code and a user code, the user enters the code on `/devicelogin` (choosing the account and
//! accepting or declining), and the client polls the token endpoint with
//! `grant_type=urn:ietf:params:oauth:grant-type:device_code` until the answer is a token.
//!
//! Polling answers: `authorization_pending` (AADSTS70016) until the user decides, `slow_down`
//! when polls come faster than the interval (which then grows by 5 seconds),
//! `authorization_declined` after a decline, `expired_token` (AADSTS70020) past the code's
//! lifetime, and a delegated token (with a refresh token) once accepted. A device code is
//! redeemed once.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rand::Rng;
use serde_json::{Value, json};

use super::pages;
use super::token::{Issued, delegated};
use super::{
    AadError, Diag, Params, Version, audience_of_scope, escape_html, json_response, opaque_token,
    resource_well_formed,
};
use crate::scenario::{App, Tenant};
use crate::state::{DeviceGrant, DeviceStatus, Sim};

/// Characters of user codes (as Entra: upper-case letters and digits).
const USER_CODE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Length of a user code.
const USER_CODE_LEN: usize = 9;

/// `POST /{tenant}/oauth2/devicecode` (v1: `resource`).
pub async fn start_v1(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    start(&sim, &tenant, &headers, &body, Version::V1)
}

/// `POST /{tenant}/oauth2/v2.0/devicecode` (v2: `scope`).
pub async fn start_v2(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    start(&sim, &tenant, &headers, &body, Version::V2)
}

fn start(sim: &Sim, tenant_key: &str, headers: &HeaderMap, body: &[u8], v: Version) -> Response {
    let diag = Diag::new(sim, headers);
    match issue(sim, tenant_key, headers, body, v) {
        Ok(answer) => json_response(StatusCode::OK, &answer, &diag),
        Err(e) => e.into_token_response(&diag),
    }
}

fn issue(
    sim: &Sim,
    tenant_key: &str,
    headers: &HeaderMap,
    body: &[u8],
    v: Version,
) -> Result<Value, AadError> {
    let params = Params::parse(body);
    let (tenant, numbers_as_strings, lifetime, interval) = {
        let w = sim.world();
        (
            w.scenario.tenant(tenant_key).cloned(),
            w.scenario.v1_numbers_as_strings,
            w.scenario.device_code_lifetime_secs,
            w.scenario.device_code_interval_secs.max(1),
        )
    };
    let tenant = tenant.ok_or_else(|| AadError::unknown_tenant(tenant_key))?;
    if let Some(name) = params.duplicate() {
        return Err(AadError::duplicated(name));
    }
    let client_id = params.require("client_id")?;
    let app = tenant
        .apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
        .cloned()
        .ok_or_else(|| AadError::unknown_client(client_id, label(&tenant)))?;
    let target = params.require(v.target_param())?.to_string();
    let audience = match v {
        Version::V1 => target.clone(),
        Version::V2 => audience_of_scope(&target),
    };
    if !resource_well_formed(&audience) {
        return Err(AadError::unknown_resource(&audience, label(&tenant)));
    }
    let device_code = opaque_token("DAQABAAEAAAD");
    let user_code = new_user_code();
    let verification_uri = format!("{}/devicelogin", crate::api::base_url(headers));
    sim.world().device_codes.insert(
        device_code.clone(),
        DeviceGrant {
            tenant_id: tenant.id.clone(),
            client_id: app.client_id.clone(),
            resource_or_scope: target,
            user_code: user_code.clone(),
            expires_at: sim.clock.unix() + i64::try_from(lifetime).unwrap_or(i64::MAX / 2),
            interval_secs: interval,
            last_poll_ms: None,
            status: DeviceStatus::Pending,
        },
    );
    let message = format!(
        "To sign in, use a web browser to open the page {verification_uri} and enter the code \
         {user_code} to authenticate."
    );
    let num = |n: u64| {
        if v == Version::V1 && numbers_as_strings {
            json!(n.to_string())
        } else {
            json!(n)
        }
    };
    // v1 names the page `verification_url`, v2 `verification_uri`.
    let uri_key = match v {
        Version::V1 => "verification_url",
        Version::V2 => "verification_uri",
    };
    Ok(json!({
        "user_code": user_code,
        "device_code": device_code,
        uri_key: verification_uri,
        "expires_in": num(lifetime),
        "interval": num(interval),
        "message": message,
    }))
}

/// Nine random upper-case letters and digits.
pub fn new_user_code() -> String {
    let mut rng = rand::thread_rng();
    (0..USER_CODE_LEN)
        .map(|_| char::from(USER_CODE_CHARS[rng.gen_range(0..USER_CODE_CHARS.len())]))
        .collect()
}

fn label(tenant: &Tenant) -> &str {
    if tenant.name.is_empty() {
        &tenant.id
    } else {
        &tenant.name
    }
}

/// The token grant: what a poll with `device_code` gets. The caller authenticated the client.
pub(crate) fn redeem(
    sim: &Sim,
    tenant: &Tenant,
    app: &App,
    params: &Params,
    v: Version,
    login_base: &str,
) -> Result<Issued, AadError> {
    let code = params
        .get("device_code")
        .or_else(|| params.get("code"))
        .ok_or_else(|| AadError::missing("device_code"))?;
    let now_ms = sim.clock.now_ms();
    let (target, user) = {
        let mut w = sim.world();
        let grant = w
            .device_codes
            .get_mut(code)
            .filter(|g| {
                g.tenant_id.eq_ignore_ascii_case(&tenant.id)
                    && g.client_id.eq_ignore_ascii_case(&app.client_id)
            })
            .ok_or_else(|| {
                AadError::bad(
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed.",
                )
            })?;
        if grant.status == DeviceStatus::Redeemed {
            return Err(AadError::bad(
                "invalid_grant",
                54005,
                "OAuth2 device code was already redeemed, please retry with a new device code.",
            ));
        }
        if now_ms.div_euclid(1000) >= grant.expires_at {
            return Err(AadError::bad(
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This \
                 device code has expired.",
            ));
        }
        match grant.status.clone() {
            DeviceStatus::Approved(user) => {
                grant.status = DeviceStatus::Redeemed;
                (grant.resource_or_scope.clone(), user)
            }
            DeviceStatus::Declined => {
                return Err(AadError::bad(
                    "authorization_declined",
                    70000,
                    "The end user declined the authorization request.",
                ));
            }
            DeviceStatus::Pending | DeviceStatus::Redeemed => {
                // Polls closer together than three quarters of the interval are too fast.
                let min_gap = i64::try_from(grant.interval_secs * 750).unwrap_or(i64::MAX);
                let too_fast = grant.last_poll_ms.is_some_and(|t| now_ms - t < min_gap);
                grant.last_poll_ms = Some(now_ms);
                if too_fast {
                    grant.interval_secs += 5;
                    return Err(AadError::bad(
                        "slow_down",
                        70016,
                        "OAuth 2.0 device flow error. Polling too often: wait longer between \
                         requests.",
                    ));
                }
                return Err(AadError::bad(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                ));
            }
        }
    };
    delegated(sim, tenant, app, &target, v, login_base, &user)
}

/// `GET /devicelogin`: the page where the user enters the code (`?otc=` fills it in).
pub async fn show(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let diag = Diag::new(&sim, &headers);
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let users: Vec<String> = sim
        .world()
        .scenario
        .tenants
        .iter()
        .flat_map(|t| t.users.iter().map(|u| u.upn.clone()))
        .collect();
    let prefill = params.get("otc").unwrap_or_default();
    let mut body = String::from(
        "<h1>Enter code</h1>\n<p>Enter the code displayed on your app or device.</p>\n\
         <form method=\"post\" action=\"/devicelogin\" id=\"devicelogin\">\n",
    );
    body.push_str(&format!(
        "<p><input type=\"text\" name=\"code\" id=\"code\" value=\"{}\" autocomplete=\"off\" \
         placeholder=\"Code\"></p>\n",
        escape_html(prefill)
    ));
    let upns: Vec<&str> = users.iter().map(String::as_str).collect();
    body.push_str(&pages::account_and_decision(&upns, None));
    pages::html(
        StatusCode::OK,
        pages::page("Enter code", &body),
        &diag,
        false,
    )
}

/// `POST /devicelogin`: completes the code with the chosen account, or declines it.
pub async fn decide(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let diag = Diag::new(&sim, &headers);
    let params = Params::parse(&body);
    match decide_inner(&sim, &params) {
        Ok(text) => {
            let body = format!(
                "<h1>{}</h1>\n<p id=\"device-done\">{}</p>\n",
                text.0, text.1
            );
            pages::html(StatusCode::OK, pages::page(text.0, &body), &diag, false)
        }
        Err(e) => pages::error_response(&e, &diag),
    }
}

/// The page's title and escaped message, or the error shown instead.
fn decide_inner(sim: &Sim, params: &Params) -> Result<(&'static str, String), AadError> {
    let entered = params.require("code")?;
    let code: String = entered
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let decision = params.require("decision")?;
    let now = sim.clock.unix();
    let mut w = sim.world();
    let (device_code, tenant_id, client_id) = w
        .device_codes
        .iter()
        .find(|(_, g)| g.user_code == code)
        .map(|(k, g)| (k.clone(), g.tenant_id.clone(), g.client_id.clone()))
        .ok_or_else(|| {
            AadError::bad(
                "invalid_request",
                70000,
                "The code you entered is not valid. Check the code and try again.",
            )
        })?;
    let tenant = w
        .scenario
        .tenant(&tenant_id)
        .cloned()
        .ok_or_else(|| AadError::unknown_tenant(&tenant_id))?;
    let user = match (decision, params.get("user")) {
        ("accept", Some(name)) => Some(w.scenario.user(name).ok_or_else(|| {
            AadError::bad(
                "invalid_request",
                50034,
                format!(
                    "The user account {name} does not exist in the directory. To sign into this \
                     application, the account must be added to the directory."
                ),
            )
        })?),
        ("accept", None) => Some(tenant.default_user()),
        ("decline", _) => None,
        _ => return Err(AadError::missing("decision")),
    };
    let Some(grant) = w.device_codes.get_mut(&device_code) else {
        return Err(AadError::missing("code"));
    };
    if now >= grant.expires_at {
        return Err(AadError::bad(
            "expired_token",
            70019,
            "The code you entered has expired. Get a new code from the device and try again.",
        ));
    }
    if grant.status != DeviceStatus::Pending {
        return Err(AadError::bad(
            "invalid_request",
            70000,
            "The code you entered was already used. Get a new code from the device and try again.",
        ));
    }
    let app_name = tenant
        .apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(&client_id))
        .map(|a| {
            if a.name.is_empty() {
                a.client_id.clone()
            } else {
                a.name.clone()
            }
        })
        .unwrap_or(client_id);
    match user {
        Some(user) => {
            let upn = user.upn.clone();
            grant.status = DeviceStatus::Approved(user);
            Ok((
                "You're signed in",
                format!(
                    "{} signed in to the {} application on your device. You may now close this \
                     window.",
                    escape_html(&upn),
                    escape_html(&app_name)
                ),
            ))
        }
        None => {
            grant.status = DeviceStatus::Declined;
            Ok((
                "Sign-in declined",
                format!(
                    "You declined to sign in to the {} application.",
                    escape_html(&app_name)
                ),
            ))
        }
    }
}
