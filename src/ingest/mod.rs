//! Alert ingestion: a poller per asset with `[assets.<id>.ingestion] enabled = true` reads
//! new and updated alerts into a durable per-asset event journal, read back by the feed route.

pub mod journal;
pub mod poller;

use std::sync::Arc;

use crate::app::App;

/// Starts the poller of every asset with ingestion enabled; answers their tasks (abort them to
/// stop).
pub fn start(app: &Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    app.ingestors
        .values()
        .map(|i| tokio::spawn(i.clone().run()))
        .collect()
}
