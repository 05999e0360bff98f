//! Alert ingestion: a poller per asset with `[assets.<id>.ingestion] enabled = true` reads
//! new and updated alerts into a durable per-asset event journal, read back by the feed route.

pub mod journal;
