//! Alert ingestion: a poller per asset with `[assets.<id>.ingestion] enabled = true` reads
//! new and updated alerts into a durable per-asset event journal, read back by the feed route
//! and pushed to the asset's webhooks.

pub mod journal;
pub mod lease;
pub mod poller;
pub mod redis_journal;
pub mod webhook;

use std::sync::Arc;

use crate::app::App;

/// Starts the poller and the webhook deliveries of every asset with ingestion enabled;
/// answers their tasks (abort them to stop).
pub fn start(app: &Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for ingestor in app.ingestors.values() {
        tasks.push(tokio::spawn(ingestor.clone().run()));
        for hook in &ingestor.config().webhooks {
            let delivery =
                webhook::Delivery::new(ingestor.clone(), hook.clone(), app.deliveries.clone());
            tasks.push(tokio::spawn(delivery.run()));
        }
    }
    tasks
}
