//! The API guard: bearer token check (401), the per-endpoint role table (403) and the
//! per-(tenant, app, endpoint family) rate limits (429 + Retry-After).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::jwt::{self, Claims, TokenError};
use crate::scenario::Limit;
use crate::state::Sim;

/// Rate limit families (each has its own budget per tenant and app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Most endpoints: 100/min, 1500/h.
    Default,
    /// POST runliveresponse: 10/min.
    LiveResponse,
    /// GET getPackageUri: 2/min, 120/h.
    PackageUri,
    /// POST advancedqueries/run: 45/min, 1500/h.
    AdvancedQueries,
    /// Microsoft Graph security API (alerts_v2, incidents, hunting).
    Graph,
    /// POST alerts/batchUpdate: 10/min, 500/h.
    AlertBatchUpdate,
    /// POST alerts/CreateAlertByReference: 15/min.
    CreateAlert,
    /// POST machines/{id}/startInvestigation: 50/h.
    StartInvestigation,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Default => "default",
            Family::LiveResponse => "liveresponse",
            Family::PackageUri => "packageuri",
            Family::AdvancedQueries => "advancedqueries",
            Family::Graph => "graph",
            Family::AlertBatchUpdate => "alertbatchupdate",
            Family::CreateAlert => "createalert",
            Family::StartInvestigation => "startinvestigation",
        }
    }
}

const READ_MACHINES: &[&str] = &["Machine.Read.All", "Machine.ReadWrite.All"];
const READ_ALERTS: &[&str] = &["Alert.Read.All", "Alert.ReadWrite.All"];
const WRITE_ALERTS: &[&str] = &["Alert.ReadWrite.All"];
const TI: &[&str] = &["Ti.ReadWrite", "Ti.ReadWrite.All"];
const SOFTWARE: &[&str] = &["Software.Read.All", "Software.Read"];
const VULNERABILITY: &[&str] = &["Vulnerability.Read.All", "Vulnerability.Read"];
const RECOMMENDATION: &[&str] = &[
    "SecurityRecommendation.Read.All",
    "SecurityRecommendation.Read",
];
const SCORE: &[&str] = &["Score.Read.All", "Score.Read"];
const ANY_MACHINE_ACTION: &[&str] = &[
    "Machine.Isolate",
    "Machine.RestrictExecution",
    "Machine.Scan",
    "Machine.StopAndQuarantine",
    "Machine.CollectForensics",
    "Machine.Offboard",
    "Machine.LiveResponse",
    "Machine.ReadWrite.All",
];

/// The role table: (method, route template) → any one of these roles, and the rate family.
/// Templates are lower-case: `/api` paths are normalised before routing.
pub const ROLE_TABLE: &[(&str, &str, &[&str], Family)] = &[
    ("GET", "/api/machines", READ_MACHINES, Family::Default),
    ("GET", "/api/machines/{id}", READ_MACHINES, Family::Default),
    (
        "POST",
        "/api/machines/{id}/tags",
        &["Machine.ReadWrite.All"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/isolate",
        &["Machine.Isolate"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/unisolate",
        &["Machine.Isolate"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/stopandquarantinefile",
        &["Machine.StopAndQuarantine"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/runantivirusscan",
        &["Machine.Scan"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/restrictcodeexecution",
        &["Machine.RestrictExecution"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/unrestrictcodeexecution",
        &["Machine.RestrictExecution"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/collectinvestigationpackage",
        &["Machine.CollectForensics"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/offboard",
        &["Machine.Offboard"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/runliveresponse",
        &["Machine.LiveResponse"],
        Family::LiveResponse,
    ),
    ("GET", "/api/machineactions", READ_MACHINES, Family::Default),
    (
        "GET",
        "/api/machineactions/{id}",
        READ_MACHINES,
        Family::Default,
    ),
    (
        "POST",
        "/api/machineactions/{id}/cancel",
        ANY_MACHINE_ACTION,
        Family::Default,
    ),
    (
        "GET",
        "/api/machineactions/{id}/getpackageuri",
        &[
            "Machine.CollectForensics",
            "Machine.Read.All",
            "Machine.ReadWrite.All",
        ],
        Family::PackageUri,
    ),
    (
        "GET",
        "/api/machineactions/{id}/{function}",
        &["Machine.LiveResponse"],
        Family::Default,
    ),
    (
        "GET",
        "/api/libraryfiles",
        &["Library.Manage"],
        Family::Default,
    ),
    (
        "POST",
        "/api/libraryfiles",
        &["Library.Manage"],
        Family::Default,
    ),
    (
        "DELETE",
        "/api/libraryfiles/{name}",
        &["Library.Manage"],
        Family::Default,
    ),
    (
        "POST",
        "/api/advancedqueries/run",
        &["AdvancedQuery.Read.All", "AdvancedQuery.Read"],
        Family::AdvancedQueries,
    ),
    ("GET", "/api/alerts", READ_ALERTS, Family::Default),
    ("GET", "/api/alerts/{id}", READ_ALERTS, Family::Default),
    ("PATCH", "/api/alerts/{id}", WRITE_ALERTS, Family::Default),
    (
        "POST",
        "/api/alerts/batchupdate",
        WRITE_ALERTS,
        Family::AlertBatchUpdate,
    ),
    (
        "POST",
        "/api/alerts/createalertbyreference",
        WRITE_ALERTS,
        Family::CreateAlert,
    ),
    (
        "GET",
        "/api/alerts/{id}/user",
        &["User.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/alerts/{id}/files",
        &["File.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/alerts/{id}/ips",
        &["Ip.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/alerts/{id}/domains",
        &["URL.Read.All", "Url.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/domains/{domain}/alerts",
        READ_ALERTS,
        Family::Default,
    ),
    (
        "GET",
        "/api/files/{sha}/alerts",
        READ_ALERTS,
        Family::Default,
    ),
    ("GET", "/api/ips/{ip}/alerts", READ_ALERTS, Family::Default),
    (
        "GET",
        "/api/users/{user}/alerts",
        READ_ALERTS,
        Family::Default,
    ),
    (
        "GET",
        "/api/machines/{id}/alerts",
        READ_ALERTS,
        Family::Default,
    ),
    // Custom indicators: Ti.ReadWrite sees the app's own, Ti.ReadWrite.All every app's.
    ("GET", "/api/indicators", TI, Family::Default),
    ("GET", "/api/indicators/{id}", TI, Family::Default),
    ("POST", "/api/indicators", TI, Family::Default),
    ("POST", "/api/indicators/import", TI, Family::Default),
    ("POST", "/api/indicators/batchdelete", TI, Family::Default),
    ("DELETE", "/api/indicators/{id}", TI, Family::Default),
    // Enrichment and device information.
    (
        "GET",
        "/api/files/{sha}",
        &["File.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/files/{sha}/stats",
        &["File.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/ips/{ip}/stats",
        &["Ip.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/domains/{domain}/stats",
        &["URL.Read.All", "Url.Read.All"],
        Family::Default,
    ),
    (
        "GET",
        "/api/files/{sha}/machines",
        READ_MACHINES,
        Family::Default,
    ),
    (
        "GET",
        "/api/domains/{domain}/machines",
        READ_MACHINES,
        Family::Default,
    ),
    (
        "GET",
        "/api/users/{user}/machines",
        READ_MACHINES,
        Family::Default,
    ),
    (
        "GET",
        "/api/machines/{id}/logonusers",
        &["User.Read.All"],
        Family::Default,
    ),
    (
        "POST",
        "/api/machines/{id}/startinvestigation",
        WRITE_ALERTS,
        Family::StartInvestigation,
    ),
    ("GET", "/api/investigations", READ_ALERTS, Family::Default),
    (
        "GET",
        "/api/investigations/{id}",
        READ_ALERTS,
        Family::Default,
    ),
    // Threat and vulnerability management.
    (
        "GET",
        "/api/machines/{id}/software",
        SOFTWARE,
        Family::Default,
    ),
    (
        "GET",
        "/api/machines/{id}/vulnerabilities",
        VULNERABILITY,
        Family::Default,
    ),
    (
        "GET",
        "/api/machines/{id}/getmissingkbs",
        SOFTWARE,
        Family::Default,
    ),
    (
        "GET",
        "/api/machines/{id}/recommendations",
        RECOMMENDATION,
        Family::Default,
    ),
    ("GET", "/api/software", SOFTWARE, Family::Default),
    ("GET", "/api/software/{id}", SOFTWARE, Family::Default),
    (
        "GET",
        "/api/software/{id}/distributions",
        SOFTWARE,
        Family::Default,
    ),
    (
        "GET",
        "/api/software/{id}/getmissingkbs",
        SOFTWARE,
        Family::Default,
    ),
    (
        "GET",
        "/api/software/{id}/machinereferences",
        SOFTWARE,
        Family::Default,
    ),
    (
        "GET",
        "/api/software/{id}/vulnerabilities",
        VULNERABILITY,
        Family::Default,
    ),
    (
        "GET",
        "/api/vulnerabilities",
        VULNERABILITY,
        Family::Default,
    ),
    (
        "GET",
        "/api/vulnerabilities/machinesvulnerabilities",
        VULNERABILITY,
        Family::Default,
    ),
    (
        "GET",
        "/api/vulnerabilities/{id}",
        VULNERABILITY,
        Family::Default,
    ),
    (
        "GET",
        "/api/vulnerabilities/{id}/machinereferences",
        VULNERABILITY,
        Family::Default,
    ),
    ("GET", "/api/exposurescore", SCORE, Family::Default),
    ("GET", "/api/configurationscore", SCORE, Family::Default),
];

/// Roles and family for a route; unknown routes need any machine read role.
pub fn lookup(method: &Method, route: &str) -> (&'static [&'static str], Family) {
    ROLE_TABLE
        .iter()
        .find(|(m, r, _, _)| *m == method.as_str() && *r == route)
        .map(|(_, _, roles, fam)| (*roles, *fam))
        .unwrap_or((READ_MACHINES, Family::Default))
}

/// Route-layer middleware over every `/api` route: puts the verified [`Claims`] into the
/// request extensions for handlers (`Extension<Claims>`).
pub async fn guard(State(sim): State<Arc<Sim>>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
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
        return refuse(
            req,
            ApiError::unauthorized("Authorization header is missing or is not a Bearer token"),
        )
        .await;
    };
    let claims = match jwt::verify(&sim, &token) {
        Ok(c) => c,
        Err(TokenError::Expired) => {
            return refuse(req, ApiError::unauthorized("The access token has expired")).await;
        }
        Err(TokenError::Invalid) => {
            return refuse(req, ApiError::unauthorized("The access token is invalid")).await;
        }
    };
    if crate::entra::is_graph_audience(&claims.aud) {
        // A Microsoft Graph token is not one for the Defender API.
        return refuse(
            req,
            ApiError::unauthorized("The access token's audience is not the Defender API"),
        )
        .await;
    }
    let (roles, family) = lookup(req.method(), &route);
    if !roles.iter().any(|r| claims.has_permission(r)) {
        let e = ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The application does not have any of the required application roles: {}",
                roles.join(", ")
            ),
        );
        return refuse(req, e).await;
    }
    if let Err(e) = check_rate(&sim, &claims, family) {
        return refuse(req, e).await;
    }
    req.extensions_mut().insert(claims);
    next.run(req).await
}

/// Most request body read and discarded before refusing a request.
const DRAIN_LIMIT: usize = 300 * 1024 * 1024;

/// Refuses a request after reading its body to the end (as a front end does), so a client
/// still sending a large upload gets the answer instead of a broken connection.
async fn refuse(req: Request, error: ApiError) -> Response {
    use futures::StreamExt;
    let mut body = req.into_body().into_data_stream();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = body.next().await {
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
    error.into_response()
}

/// Counts one call against the caller's budget for `family`; 429 with Retry-After when spent.
pub fn check_rate(sim: &Sim, claims: &Claims, family: Family) -> Result<(), ApiError> {
    let now = sim.clock.now_ms();
    let mut w = sim.world();
    let limits = &w.scenario.rate_limits;
    if limits.disabled {
        return Ok(());
    }
    let limit: Limit = match family {
        Family::Default => limits.default,
        Family::LiveResponse => limits.live_response,
        Family::PackageUri => limits.package_uri,
        Family::AdvancedQueries => limits.advanced_queries,
        Family::Graph => limits.graph,
        Family::AlertBatchUpdate => limits.alert_batch_update,
        Family::CreateAlert => limits.create_alert,
        Family::StartInvestigation => limits.start_investigation,
    };
    let key =
        format!("{}/{}/{}", claims.tid, claims.client_id(), family.name()).to_ascii_lowercase();
    let window = w.rate_windows.entry(key).or_default();
    while window.front().is_some_and(|t| *t <= now - 3_600_000) {
        window.pop_front();
    }
    let in_minute = window.iter().filter(|t| **t > now - 60_000).count();
    if in_minute >= limit.per_minute as usize {
        // The oldest call inside the minute leaves the window at +60 s.
        let oldest = window
            .iter()
            .find(|t| **t > now - 60_000)
            .copied()
            .unwrap_or(now);
        let wait_ms = (oldest + 60_000 - now).max(0);
        return Err(ApiError::too_many(((wait_ms + 999) / 1000) as u64));
    }
    if window.len() >= limit.per_hour as usize {
        let oldest = window.front().copied().unwrap_or(now);
        let wait_ms = (oldest + 3_600_000 - now).max(0);
        return Err(ApiError::too_many(((wait_ms + 999) / 1000) as u64));
    }
    window.push_back(now);
    Ok(())
}
