//! The Defender for Endpoint API under `/api`.

use std::sync::Arc;

use axum::Router;

use crate::state::Sim;

/// Routes of the API (bearer-checked, rate limited).
pub fn routes(_sim: Arc<Sim>) -> Router<Arc<Sim>> {
    Router::new()
}
