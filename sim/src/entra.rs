//! Entra ID: token endpoints (v1, v2) and the authorize endpoint with its consent page.

use std::sync::Arc;

use axum::Router;

use crate::state::Sim;

/// Routes under `/{tenant}/oauth2/...`.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
}
