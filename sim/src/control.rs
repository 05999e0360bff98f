//! `/_sim/...`: control routes for tests and demos (loopback only).

use std::sync::Arc;

use axum::Router;

use crate::state::Sim;

/// Control routes.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
}
