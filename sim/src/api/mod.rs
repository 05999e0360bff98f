//! The Defender for Endpoint API under `/api` (paths arrive lower-cased, see `faults`), and the
//! Microsoft Graph security API under `/v1.0/security` ([`graph`]).

use std::sync::Arc;

use axum::Router;

use crate::state::Sim;

pub mod alerts;
pub mod auth;
pub mod download;
pub mod enrichment;
pub mod graph;
pub mod graph_security;
pub mod hunting;
pub mod indicators;
pub mod library;
pub mod live_response;
pub mod machine_actions;
pub mod machines;
pub mod odata;
pub mod related;
pub mod tvm;

/// Routes of the API, all behind [`auth::guard`], plus the unauthenticated download links.
pub fn routes(sim: Arc<Sim>) -> Router<Arc<Sim>> {
    let sim_for_graph = sim.clone();
    let guarded = Router::new()
        .merge(machines::routes())
        .merge(machine_actions::routes())
        .merge(live_response::routes())
        .merge(library::routes())
        .merge(related::routes())
        .merge(alerts::routes())
        .merge(hunting::routes())
        .merge(indicators::routes())
        .merge(enrichment::routes())
        .merge(tvm::routes())
        .route_layer(axum::middleware::from_fn_with_state(sim, auth::guard));
    guarded
        .merge(graph::routes(sim_for_graph))
        .merge(download::routes())
}

/// `@odata.context` base for answers: `http://{host}/api/$metadata#...`.
pub fn odata_context(headers: &axum::http::HeaderMap, fragment: &str) -> String {
    format!("{}/api/$metadata#{fragment}", base_url(headers))
}

/// `http://{Host}` of the request, for absolute links (nextLink, download links).
pub fn base_url(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Who the caller is in `requestor` and `createdBy` fields: its app's display name, else its
/// client id.
pub fn requestor(scenario: &crate::scenario::Scenario, claims: &crate::jwt::Claims) -> String {
    let client_id = claims.client_id();
    scenario
        .tenant(&claims.tid)
        .and_then(|t| {
            t.apps
                .iter()
                .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
        })
        .map(|a| a.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client_id.to_string())
}
