//! The benchmarks, one module each, and what they share: the options, the results one
//! scenario hands to a later one, and [`Stack`], a simulator plus a host started for one
//! scenario as separate processes.

pub mod bulk;
pub mod completion_lag;
pub mod edge_load;
pub mod final_status;
pub mod host_overhead;
pub mod hunting;
pub mod ingestion;
pub mod large_file;
pub mod overload;
pub mod shared_polling;
pub mod sim_throughput;
pub mod startup;
pub mod token_coalescing;
pub mod two_hosts;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use defender_sim::Scenario;

use crate::BoxError;
use crate::host_process::{HostClient, HostProcess, HostSpec};
use crate::report::{Section, Target};
use crate::sim_process::SimProcess;
use crate::simctl::{self, AppCreds, SimControl};

/// The benchmarks this binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// get_status through the host vs the same GET straight to the simulator.
    HostOverhead,
    /// 1,000 concurrent actions on a cold asset: tokens requested.
    TokenCoalescing,
    /// 500 callers polling 50 in-flight actions: upstream GETs.
    SharedPolling,
    /// 5× the asset's upstream budget: 429s, 503s, latency.
    Overload,
    /// Time from an isolate becoming final to the host answering.
    CompletionLag,
    /// A 1 GiB get_file: throughput and the host's peak memory.
    LargeFile,
    /// Time from exec to /readyz, idle memory.
    Startup,
    /// get_status of actions already final (answered from the host's cache) vs direct GETs.
    FinalStatus,
    /// `GET /api/machineactions/{id}` against the simulator alone.
    SimThroughput,
    /// Advanced hunting: small queries through the host vs direct, and a 100,000-row answer.
    Hunting,
    /// Alert ingestion: lag through the feed vs a scheduled `on_poll`, and a 10,000-alert
    /// backlog.
    Ingestion,
    /// Bulk containment: one `quarantine_devices` call vs sequential `quarantine_device` calls.
    Bulk,
    /// 2,000 idle and 200 slow-body connections while 64 callers run get_status.
    EdgeLoad,
    /// Two hosts on one Redis, each offered 5× the tenant budget: upstream 429s, calls sent
    /// against the budget, throughput and p99 per host vs one host.
    TwoHosts,
}

impl ScenarioName {
    /// Every scenario, in run order.
    pub const ALL: [ScenarioName; 14] = [
        ScenarioName::HostOverhead,
        ScenarioName::TokenCoalescing,
        ScenarioName::SharedPolling,
        ScenarioName::Overload,
        ScenarioName::CompletionLag,
        ScenarioName::LargeFile,
        ScenarioName::Startup,
        ScenarioName::FinalStatus,
        ScenarioName::SimThroughput,
        ScenarioName::Hunting,
        ScenarioName::Ingestion,
        ScenarioName::EdgeLoad,
        ScenarioName::Bulk,
        ScenarioName::TwoHosts,
    ];

    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioName::HostOverhead => "host-overhead",
            ScenarioName::TokenCoalescing => "token-coalescing",
            ScenarioName::SharedPolling => "shared-polling",
            ScenarioName::Overload => "overload",
            ScenarioName::CompletionLag => "completion-lag",
            ScenarioName::LargeFile => "large-file",
            ScenarioName::Startup => "startup",
            ScenarioName::FinalStatus => "final-status",
            ScenarioName::SimThroughput => "sim-throughput",
            ScenarioName::Hunting => "hunting",
            ScenarioName::Ingestion => "ingestion",
            ScenarioName::Bulk => "bulk",
            ScenarioName::EdgeLoad => "edge-load",
            ScenarioName::TwoHosts => "two-hosts",
        }
    }

    /// The section heading.
    pub fn title(self) -> &'static str {
        match self {
            ScenarioName::HostOverhead => "1. host-overhead: get_status through the host vs direct",
            ScenarioName::TokenCoalescing => {
                "2. token-coalescing: 1,000 concurrent actions on a cold asset"
            }
            ScenarioName::SharedPolling => {
                "3. shared-polling: 500 callers polling 50 in-flight actions"
            }
            ScenarioName::Overload => "4. overload: 5× the asset's upstream budget",
            ScenarioName::CompletionLag => {
                "5a. completion-lag: isolate final → quarantine_device answered"
            }
            ScenarioName::LargeFile => "5b. large-file: get_file of a generated device file",
            ScenarioName::Startup => "6. startup: exec → /readyz, idle memory",
            ScenarioName::FinalStatus => {
                "7. final-status: callers polling the status of final actions"
            }
            ScenarioName::SimThroughput => "sim-throughput: the simulator alone",
            ScenarioName::Hunting => {
                "8. hunting: run_query through the host vs direct, and a large answer"
            }
            ScenarioName::Ingestion => {
                "9. ingestion: alert lag through the feed vs a scheduled on_poll, and a 10,000-alert backlog"
            }
            ScenarioName::Bulk => {
                "11. bulk: quarantine_devices on many devices vs sequential quarantine_device calls"
            }
            ScenarioName::EdgeLoad => {
                "10. edge-load: 2,000 idle and 200 slow-body connections while 64 callers run get_status"
            }
            ScenarioName::TwoHosts => {
                "12. two-hosts: 2 × 5× the tenant budget over two hosts sharing Redis"
            }
        }
    }

    /// The targets the scenario measures (name, goal), for the targets table when it could
    /// not run.
    pub fn targets(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ScenarioName::HostOverhead => host_overhead::TARGETS,
            ScenarioName::TokenCoalescing => token_coalescing::TARGETS,
            ScenarioName::SharedPolling => shared_polling::TARGETS,
            ScenarioName::Overload => overload::TARGETS,
            ScenarioName::CompletionLag => completion_lag::TARGETS,
            ScenarioName::LargeFile => large_file::TARGETS,
            ScenarioName::Startup => startup::TARGETS,
            ScenarioName::FinalStatus => final_status::TARGETS,
            ScenarioName::Ingestion => ingestion::TARGETS,
            ScenarioName::Bulk => bulk::TARGETS,
            ScenarioName::EdgeLoad => edge_load::TARGETS,
            ScenarioName::TwoHosts => two_hosts::TARGETS,
            ScenarioName::SimThroughput | ScenarioName::Hunting => &[],
        }
    }
}

/// What every benchmark is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measured time of each throughput run (host-overhead, shared-polling, final-status,
    /// sim-throughput).
    pub duration: Duration,
    /// Unmeasured time before a throughput run, to open connections and warm caches.
    pub warmup: Duration,
    /// Concurrent callers of host-overhead, final-status and sim-throughput.
    pub concurrency: usize,
    /// Actions in the cold burst of token-coalescing.
    pub burst: usize,
    /// Callers and events of shared-polling.
    pub pollers: usize,
    /// In-flight events of shared-polling.
    pub events: usize,
    /// Offered-load time of overload.
    pub overload: Duration,
    /// Offered-load time of two-hosts.
    pub two_hosts: Duration,
    /// Actions per duration in completion-lag (as many again for the 5 s poller).
    pub lag_runs: usize,
    /// Size of the large-file download, in bytes.
    pub file_bytes: u64,
    /// Start-ups measured.
    pub startup_runs: usize,
    /// Small queries per path in hunting.
    pub hunting_queries: usize,
    /// Rows of the large answer in hunting.
    pub hunting_rows: usize,
    /// Time the bench creates alerts in the lag part of ingestion.
    pub ingestion: Duration,
    /// Devices in each path of bulk.
    pub bulk_devices: usize,
    /// The `defender-sim` executable.
    pub sim_bin: PathBuf,
    /// The `defender-soar` executable.
    pub host_bin: PathBuf,
    /// `RUST_LOG` of the host processes.
    pub host_log: String,
}

/// Results a scenario leaves for a later one.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// VmRSS and VmHWM (KiB) of the host at the end of host-overhead.
    pub rss_after_overhead: Option<(u64, u64)>,
}

/// Runs one benchmark; a failure becomes a section saying so, with its targets not measured.
pub async fn run(name: ScenarioName, options: &Options, shared: &mut Shared) -> Section {
    let result = match name {
        ScenarioName::HostOverhead => host_overhead::run(options, shared).await,
        ScenarioName::TokenCoalescing => token_coalescing::run(options).await,
        ScenarioName::SharedPolling => shared_polling::run(options).await,
        ScenarioName::Overload => overload::run(options).await,
        ScenarioName::CompletionLag => completion_lag::run(options).await,
        ScenarioName::LargeFile => large_file::run(options).await,
        ScenarioName::Startup => startup::run(options, shared).await,
        ScenarioName::FinalStatus => final_status::run(options).await,
        ScenarioName::SimThroughput => sim_throughput::run(options).await,
        ScenarioName::Hunting => hunting::run(options).await,
        ScenarioName::Ingestion => ingestion::run(options).await,
        ScenarioName::Bulk => bulk::run(options).await,
        ScenarioName::EdgeLoad => edge_load::run(options).await,
        ScenarioName::TwoHosts => two_hosts::run(options).await,
    };
    match result {
        Ok(mut section) => {
            section.title = name.title().to_string();
            section
        }
        Err(e) => failed(name, &format!("failed: {e}")),
    }
}

/// The section of a scenario that did not produce results.
pub fn failed(name: ScenarioName, why: &str) -> Section {
    Section {
        title: name.title().to_string(),
        notes: vec![format!("**{}** {why}", name.name())],
        tables: Vec::new(),
        targets: name
            .targets()
            .iter()
            .map(|(n, g)| Target::not_measured(n, g, why))
            .collect(),
        failed: true,
    }
}

/// A simulator and a host pointed at it, each its own process, for one scenario.
pub struct Stack {
    /// The simulator process.
    pub sim: SimProcess,
    /// Its control and Defender API client.
    pub ctl: SimControl,
    /// The host process.
    pub host: HostProcess,
    /// The host's action client.
    pub api: HostClient,
    /// The scenario loaded into the simulator.
    pub scenario: Scenario,
    /// The credentials the host's asset uses (first app of the first tenant).
    pub app: AppCreds,
}

impl Stack {
    /// Starts the simulator, loads its default scenario changed by `setup`, then starts the
    /// host with one asset configured by `spec`. Both are killed if anything fails.
    pub async fn start(
        options: &Options,
        client: &reqwest::Client,
        setup: impl FnOnce(&mut Scenario) -> Result<(), BoxError>,
        spec: &HostSpec,
    ) -> Result<Stack, BoxError> {
        let sim = SimProcess::spawn(&options.sim_bin).await?;
        let ctl = SimControl::new(client.clone(), sim.base_url());
        ctl.wait_ready().await?;
        let mut scenario = ctl.scenario().await?;
        setup(&mut scenario)?;
        ctl.put_scenario(&scenario).await?;
        let app = simctl::app_creds(&scenario, 0)?;
        let probe = crate::load::client(4)?;
        let host =
            HostProcess::spawn(&options.host_bin, sim.base_url(), &app, spec, &probe).await?;
        let api = host.client(client)?;
        Ok(Stack {
            sim,
            ctl,
            host,
            api,
            scenario,
            app,
        })
    }

    /// Stops both processes.
    pub async fn stop(self) {
        self.host.stop().await;
        self.sim.stop().await;
    }
}

/// `100 × cpu / secs` (0 when no time passed).
pub fn cpu_percent(cpu_secs: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        100.0 * cpu_secs / secs
    } else {
        0.0
    }
}

/// Timings with every action final at once.
pub fn instant_timings() -> defender_sim::scenario::Timings {
    defender_sim::scenario::Timings {
        pending_ms: 0,
        in_progress_ms: 0,
        per_type: Default::default(),
        manual: false,
    }
}
