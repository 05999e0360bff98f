//! defender-soar: a SOAR plugin for Microsoft Defender for Endpoint.
//!
//! Module map and data flow:
//! - [`config`]: TOML + environment configuration, validated at start-up (assets, secrets,
//!   environments and their hosts).
//! - [`http`]: the axum host: API-key auth, request ids, tracing, limits, the result envelope,
//!   health, metrics, manifest, OpenAPI, and `POST /assets/{asset}/actions/{action}`.
//! - [`actions`]: action definitions (`actions/*.json`, embedded at build time), generic
//!   parameter validation, the registry binding each definition to its handler (with its
//!   consistency check), the manifest, and the one machine-action engine
//!   ([`actions::engine`]: submit once, resolve a busy device, follow with the asset's shared
//!   poller, answer final statuses from memory).
//! - [`auth`]: tokens from Entra ID (client credentials and interactive consent with PKCE,
//!   v1/v2), cached per asset and in its state file with one fetch in flight, refreshed ahead
//!   of expiry; consent sessions; the permission preflight; Entra errors as clear messages.
//! - [`state`]: per-asset state files: encrypted secrets, atomic replace, locks, key rotation.
//! - [`defender`]: the typed MDE client: the endpoint catalogue ([`defender::endpoints`]:
//!   method, path, rate family, permission, priority of every call), tolerant models, the
//!   OData filter builder, base URL per environment, timeouts, retries of idempotent calls,
//!   the client-side request budget (state-changing calls first) and 429 handling, Microsoft
//!   error bodies, OData paging.
//! - [`vault`]: content-addressed store of files retrieved from devices.
//! - [`envelope`]: the result envelope every action answers with, and the outcome policy (every
//!   error → envelope and HTTP status; `defender` and `auth` know nothing of it).
//! - [`app`]: the shared application state (config, assets with their clients, registry).
//!
//! A request enters [`http`], is authenticated, its parameters are validated against the
//! action's definition, the handler runs with an [`actions::ActionContext`] (the asset's
//! [`defender::DefenderClient`], which gets tokens from [`auth`]), and its outcome becomes an
//! [`envelope::Envelope`].

pub mod actions;
pub mod app;
pub mod audit;
pub mod auth;
pub mod callbacks;
pub mod cli;
pub mod config;
pub mod defender;
pub mod envelope;
pub mod http;
pub mod ingest;
pub mod overview;
pub mod redis_link;
pub mod state;
pub mod telemetry;
pub mod vault;
