//! TODO: filled in by its own change.

use std::sync::Arc;

use axum::Router;

use crate::state::Sim;

/// Routes.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
}
