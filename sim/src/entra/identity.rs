//! The managed identity endpoint of the Azure instance metadata service:
//! `GET /metadata/identity/oauth2/token?api-version=...&resource=...[&client_id=...]` with the
//! header `Metadata: true`. The identity is the scenario's one with that `client_id`, or the
//! system-assigned one; the answer has the v1 shape (numbers as strings unless the scenario
//! says otherwise) and carries the identity's app roles.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Diag, Params, json_response, resource_well_formed};
use crate::jwt::{self, TokenRequest};
use crate::scenario::ManagedIdentity;
use crate::state::Sim;

/// Issuer base of managed identity tokens (v1 tokens name `sts.windows.net` anyway).
const LOGIN: &str = "https://login.microsoftonline.com";

/// An error of the metadata service: status, `error`, `error_description`.
fn refuse(status: StatusCode, error: &str, description: &str, diag: &Diag) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
        diag,
    )
}

/// `GET /metadata/identity/oauth2/token`.
pub async fn token(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let diag = Diag::new(&sim, &headers);
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !metadata {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
            &diag,
        );
    }
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    if params.get("api-version").is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
            &diag,
        );
    }
    let Some(resource) = params.get("resource") else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
            &diag,
        );
    };
    if !resource_well_formed(resource) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            &format!("AADSTS500011: The resource principal named {resource} was not found."),
            &diag,
        );
    }
    let wanted = params.get("client_id");
    let (found, numbers_as_strings): (Option<(String, ManagedIdentity)>, bool) = {
        let w = sim.world();
        let found = w.scenario.tenants.iter().find_map(|t| {
            t.managed_identities
                .iter()
                .find(|i| match wanted {
                    Some(id) => i.client_id.eq_ignore_ascii_case(id),
                    None => i.system_assigned,
                })
                .map(|i| (t.id.clone(), i.clone()))
        });
        (found, w.scenario.v1_numbers_as_strings)
    };
    let Some((tenant_id, identity)) = found else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
            &diag,
        );
    };
    let (access_token, iat, exp) = jwt::issue(
        &sim,
        &TokenRequest {
            tenant_id: &tenant_id,
            client_id: &identity.client_id,
            audience: resource,
            roles: (!identity.roles.is_empty()).then(|| identity.roles.clone()),
            scopes: None,
            v2: false,
            login_base: LOGIN,
            user: None,
        },
    );
    sim.count_token("managed_identity");
    let num = |n: i64| -> Value {
        if numbers_as_strings {
            json!(n.to_string())
        } else {
            json!(n)
        }
    };
    let body = json!({
        "access_token": access_token,
        "client_id": identity.client_id,
        "expires_in": num(exp - iat),
        "expires_on": num(exp),
        "ext_expires_in": num(exp - iat),
        "not_before": num(iat),
        "resource": resource,
        "token_type": "Bearer",
    });
    json_response(StatusCode::OK, &body, &diag)
}
