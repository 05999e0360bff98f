//! Shared helpers for the simulator's own tests.
#![allow(dead_code)]

use defender_sim::{Scenario, SimHandle};

/// Starts a simulator on a random loopback port.
pub async fn start(scenario: Scenario) -> SimHandle {
    defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
}

/// The default scenario.
pub fn scenario() -> Scenario {
    Scenario::default_scenario()
}

/// A client that does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A bearer token with all roles of the first app (minted directly, no token request).
pub fn token(sim: &SimHandle) -> String {
    defender_sim::jwt::test_token(sim).unwrap()
}
