//! The benchmarks, one module each; [`run`] dispatches on the name given on the command line.

pub mod sim_throughput;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::BoxError;
use crate::report::Report;

/// The benchmarks this binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// `GET /api/machineactions/{id}` against a separate `defender-sim` process.
    SimThroughput,
}

impl ScenarioName {
    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioName::SimThroughput => "sim-throughput",
        }
    }
}

/// What every benchmark is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it, to open connections and warm caches.
    pub warmup: Duration,
    /// Concurrent workers.
    pub concurrency: usize,
    /// The `defender-sim` executable.
    pub sim_bin: PathBuf,
}

/// Runs one benchmark.
pub async fn run(name: ScenarioName, options: &Options) -> Result<Report, BoxError> {
    match name {
        ScenarioName::SimThroughput => sim_throughput::run(options).await,
    }
}
