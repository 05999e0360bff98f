//! Integration tests: the real host over HTTP on a random port against an in-process simulator.

mod helpers;
#[path = "../support/redis_server.rs"]
mod redis_server;
#[path = "../support/webhook_receiver.rs"]
mod webhook_receiver;

mod actions_framework;
mod admin_console;
mod alerts;
mod audit;
mod bulk;
mod callbacks;
mod connectivity;
mod consent;
mod credentials;
mod device_code;
mod devices;
mod edge;
mod enrichment;
mod graph;
mod graph_audience;
mod host;
mod hunting;
mod indicators;
mod ingestion;
mod library;
mod live_response;
mod machine;
mod scopes;
mod secrets;
mod shared_dir;
mod shared_state;
mod tenant_budget;
mod throttling;
mod token_manager;
mod tokens;
mod vulnerabilities;
