//! Microsoft Graph security API under `/v1.0/security/...` (alerts_v2, incidents, hunting):
//! the guard that checks the token is for Graph (401 `InvalidAuthenticationToken` otherwise,
//! as Graph answers a Defender token), the role table of its routes, Graph's error shape, and
//! the routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{Family, check_rate};
use crate::jwt::{self, TokenError};
use crate::state::Sim;

/// The role table of Graph routes: (method, route template) → any one of these permissions.
pub const GRAPH_ROLE_TABLE: &[(&str, &str, &[&str])] = &[
    ("GET", "/v1.0/security/alerts_v2", READ_ALERTS),
    ("GET", "/v1.0/security/alerts_v2/{id}", READ_ALERTS),
    ("PATCH", "/v1.0/security/alerts_v2/{id}", WRITE_ALERTS),
    (
        "POST",
        "/v1.0/security/alerts_v2/{id}/comments",
        WRITE_ALERTS,
    ),
    ("GET", "/v1.0/security/incidents", READ_INCIDENTS),
    ("GET", "/v1.0/security/incidents/{id}", READ_INCIDENTS),
    ("PATCH", "/v1.0/security/incidents/{id}", WRITE_INCIDENTS),
    (
        "POST",
        "/v1.0/security/incidents/{id}/comments",
        WRITE_INCIDENTS,
    ),
    (
        "POST",
        super::hunting::GRAPH_HUNTING_PATH,
        &["ThreatHunting.Read.All"],
    ),
];

const READ_ALERTS: &[&str] = &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"];
const WRITE_ALERTS: &[&str] = &["SecurityAlert.ReadWrite.All"];
const READ_INCIDENTS: &[&str] = &[
    "SecurityIncident.Read.All",
    "SecurityIncident.ReadWrite.All",
];
const WRITE_INCIDENTS: &[&str] = &["SecurityIncident.ReadWrite.All"];

/// Permissions a Graph route needs (any one of them); unknown routes need a security read role.
pub fn lookup(method: &str, route: &str) -> &'static [&'static str] {
    GRAPH_ROLE_TABLE
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map_or(
            &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"][..],
            |(_, _, roles)| *roles,
        )
}

/// Routes of the Graph security API, each behind [`guard`] (`layer`, not `route_layer`, so
/// the router may still be empty while no Graph resource is served).
pub fn routes(sim: Arc<Sim>) -> Router<Arc<Sim>> {
    Router::new()
        .merge(super::graph_security::routes())
        .merge(super::hunting::graph_routes())
        .layer(axum::middleware::from_fn_with_state(sim, guard))
}

/// A Graph error answer: `{"error":{"code","message","innerError":{date, request-id,
/// client-request-id}}}`.
#[derive(Debug, Clone)]
pub struct GraphError {
    /// HTTP status.
    pub status: StatusCode,
    /// Graph error code (`InvalidAuthenticationToken`, `Forbidden`, `NotFound`, `BadRequest`).
    pub code: &'static str,
    /// Human readable message.
    pub message: String,
    /// Retry-After seconds for 429.
    pub retry_after: Option<u64>,
}

impl GraphError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> GraphError {
        GraphError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "innerError": {
                "date": date,
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

/// Route-layer middleware over every Graph route: a valid token whose audience is Graph and
/// that carries one of the route's permissions, within the Graph rate limit; the verified
/// claims go into the request extensions.
pub async fn guard(State(sim): State<Arc<Sim>>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let unauthorized = |message: &str| {
        GraphError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
        .into_response()
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    let Some(token) = bearer else {
        return unauthorized("Access token is empty.");
    };
    let claims = match jwt::verify(&sim, &token) {
        Ok(c) => c,
        Err(TokenError::Expired) => {
            return unauthorized("Lifetime validation failed, the token is expired.");
        }
        Err(TokenError::Invalid) => return unauthorized("Access token validation failure."),
    };
    if !crate::entra::is_graph_audience(&claims.aud) {
        return unauthorized("Access token validation failure. Invalid audience.");
    }
    let roles = lookup(req.method().as_str(), &route);
    if !roles.iter().any(|r| claims.has_permission(r)) {
        return GraphError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Missing role permissions on the request. API requires one of '{}'.",
                roles.join(", ")
            ),
        )
        .into_response();
    }
    // Hunting also spends the advanced queries budget (45/min, 1500/h), shared with MDE.
    let hunting = route == super::hunting::GRAPH_HUNTING_PATH;
    let checked = check_rate(&sim, &claims, Family::Graph).and_then(|()| {
        if hunting {
            check_rate(&sim, &claims, Family::AdvancedQueries)
        } else {
            Ok(())
        }
    });
    if let Err(e) = checked {
        let mut refused = GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests.",
        );
        refused.retry_after = e.retry_after;
        return refused.into_response();
    }
    req.extensions_mut().insert(claims);
    next.run(req).await
}
