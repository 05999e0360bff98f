//! defender-sim: a local simulator of Entra ID and the Microsoft Defender for Endpoint API.
//!
//! Module map and data flow:
//! - [`scenario`]: the serde model of what the simulator holds (tenants, apps, machines, device
//!   files, library, timings, outcomes, limits); [`scenario::Scenario::default_scenario`] ships
//!   with the crate.
//! - [`alerts`]: the alerts of the scenario and those generated from its seed.
//! - [`state`]: the shared [`state::Sim`]: the mutable [`state::World`] behind one mutex, the
//!   adjustable [`state::Clock`], the request [`state::Counters`] and the fault queue.
//! - [`entra`]: `/{tenant}/oauth2/...` token and authorize (consent page) endpoints; [`jwt`]
//!   signs and verifies the access tokens they issue.
//! - [`api`]: the Defender for Endpoint API under `/api` (bearer check, roles, rate limits,
//!   machines, machine actions, live response, library files, download links).
//! - [`graph_data`]: Microsoft Graph alerts_v2 and incidents per tenant, generated from the
//!   scenario.
//! - [`control`]: `/_sim/...` routes for tests and demos (loopback only).
//! - [`faults`]: the outer middleware: path normalisation, fault injection, counting.
//!
//! A request enters [`router`], passes the fault/counter middleware, is routed to an Entra,
//! API or control handler, which locks the world, reads or changes it, and answers.

pub mod actions;
pub mod alert_feed;
pub mod alerts;
pub mod api;
pub mod control;
pub mod entra;
pub mod error;
pub mod faults;
pub mod graph_data;
pub mod hunting_data;
pub mod jwt;
pub mod kql;
pub mod scenario;
pub mod state;
pub mod tvm_data;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use scenario::Scenario;
pub use state::{Counters, Fault, FaultKind, Sim};

/// Builds the full simulator application (all routes and middleware) over a shared state.
pub fn router(sim: Arc<Sim>) -> Router {
    let inner = Router::new()
        .merge(entra::routes())
        .merge(api::routes(sim.clone()))
        .merge(control::routes())
        .route_layer(axum::middleware::from_fn(faults::remember_route))
        .fallback(error::not_found_fallback)
        .with_state(sim.clone());
    Router::new()
        .fallback_service(inner)
        .layer(axum::middleware::from_fn_with_state(sim, faults::outer))
}

/// A running simulator: its address and a handle on its state.
pub struct SimHandle {
    /// The address the simulator listens on.
    pub addr: SocketAddr,
    /// The shared state, for direct control from in-process tests.
    pub sim: Arc<Sim>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// `http://ADDR`, the base for `login_url` and `api_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl std::ops::Deref for SimHandle {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

/// Starts a simulator on `listen` (use port 0 for a random port) with `scenario`.
pub async fn start(listen: SocketAddr, scenario: Scenario) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(listen).await?;
    start_on(listener, scenario).await
}

/// Starts a simulator on an already bound listener.
pub async fn start_on(listener: TcpListener, scenario: Scenario) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(scenario));
    let app = router(sim.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle {
        addr,
        sim,
        shutdown: Some(tx),
        task: Some(task),
    })
}
