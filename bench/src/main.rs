//! `defender-bench`: the benchmark suite of the plugin host, over loopback.
//!
//! Module map: [`scenarios`] holds one module per benchmark (each starts the processes it
//! measures and returns a [`report::Section`]) and [`scenarios::Stack`], a simulator plus a
//! host; [`sim_process`] and [`host_process`] run `defender-sim` and `defender-soar serve` as
//! child processes (killed on drop), [`redis_process`] runs `redis-server` for the scenarios
//! with several hosts on shared state; [`simctl`] talks to the simulator's control and Defender
//! APIs; [`process`] reads CPU time and memory from `/proc`; [`load`] is the load generator;
//! [`report`] and [`machine`] build the markdown report.
//!
//! Build the workspace first, then run the suite (the simulator and the host are found next to
//! this executable): `cargo build --release --workspace &&
//! cargo run --release -p defender-bench -- --quick`.

mod host_process;
mod load;
mod machine;
mod process;
mod redis_process;
mod report;
mod scenarios;
mod sim_process;
mod simctl;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::report::Document;
use crate::scenarios::{Options, ScenarioName, Shared};

/// Errors of a benchmark run (each is printed once and ends the scenario).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Benchmarks of the defender-soar host and the Defender simulator, over loopback.
#[derive(Parser)]
#[command(name = "defender-bench", version)]
struct Cli {
    /// Scenarios to run, comma-separated (default: all of them, in order).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<ScenarioName>,
    /// Short run for checking the suite works (whole suite under a minute).
    #[arg(long)]
    quick: bool,
    /// Measured seconds of each throughput run: host-overhead, shared-polling, final-status,
    /// sim-throughput (default 10, 1.5 with --quick).
    #[arg(long, value_parser = seconds)]
    duration: Option<f64>,
    /// Seconds of offered load in overload (default 30, 15 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    overload_secs: Option<u64>,
    /// Seconds of offered load in two-hosts (default 90, 25 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    two_hosts_secs: Option<u64>,
    /// Actions per duration and side in completion-lag (default 20, 4 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=200))]
    lag_runs: Option<u64>,
    /// Size of the large-file download in MiB (default 1024, 256 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16384))]
    file_mib: Option<u64>,
    /// Small queries per path in hunting (default 1000, 100 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100000))]
    hunting_queries: Option<u64>,
    /// Rows of the large answer in hunting (default 100000, 20000 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1000..=100000))]
    hunting_rows: Option<u64>,
    /// Seconds the bench creates alerts in the lag part of ingestion (default 180, 30 with
    /// --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(5..=3600))]
    ingestion_secs: Option<u64>,
    /// Devices in each path of bulk (default 200, 20 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=500))]
    bulk_devices: Option<u64>,
    /// Host start-ups measured in startup (default 5).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    startup_runs: u64,
    /// Concurrent callers in host-overhead, final-status and sim-throughput.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Actions in the cold burst of token-coalescing.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10000))]
    burst: u64,
    /// `RUST_LOG` of the host processes.
    #[arg(long, default_value = "warn")]
    host_log: String,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `defender-sim` executable (default: next to this executable).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// The `defender-soar` executable (default: next to this executable).
    #[arg(long)]
    host_bin: Option<PathBuf>,
}

/// Parses a number of seconds between 0.1 and 3600.
fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.1..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0.1 and 3600 seconds".into())
    }
}

/// The executable `name`: `given`, or next to this executable; an error saying how to build
/// it when it is missing.
fn binary(given: Option<PathBuf>, name: &str, flag: &str) -> Result<PathBuf, String> {
    let path = match given {
        Some(p) => p,
        None => process::sibling_binary(name).map_err(|e| e.to_string())?,
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build the workspace first with `cargo build --release --workspace` \
             (or pass {flag})",
            path.display()
        ))
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bins = binary(cli.sim_bin.clone(), "defender-sim", "--sim-bin").and_then(|sim| {
        Ok((
            sim,
            binary(cli.host_bin.clone(), "defender-soar", "--host-bin")?,
        ))
    });
    let (sim_bin, host_bin) = match bins {
        Ok(b) => b,
        Err(e) => {
            eprintln!("defender-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let quick = cli.quick;
    let options = Options {
        duration: Duration::from_secs_f64(cli.duration.unwrap_or(if quick { 1.5 } else { 10.0 })),
        warmup: Duration::from_millis(if quick { 300 } else { 1000 }),
        concurrency: cli.concurrency as usize,
        burst: cli.burst as usize,
        pollers: 500,
        events: 50,
        overload: Duration::from_secs(cli.overload_secs.unwrap_or(if quick { 15 } else { 30 })),
        two_hosts: Duration::from_secs(cli.two_hosts_secs.unwrap_or(if quick { 25 } else { 90 })),
        lag_runs: cli.lag_runs.unwrap_or(if quick { 4 } else { 20 }) as usize,
        file_bytes: cli.file_mib.unwrap_or(if quick { 256 } else { 1024 }) * 1024 * 1024,
        startup_runs: cli.startup_runs as usize,
        hunting_queries: cli
            .hunting_queries
            .unwrap_or(if quick { 100 } else { 1000 }) as usize,
        hunting_rows: cli
            .hunting_rows
            .unwrap_or(if quick { 20_000 } else { 100_000 }) as usize,
        ingestion: Duration::from_secs(cli.ingestion_secs.unwrap_or(if quick { 30 } else { 180 })),
        bulk_devices: cli.bulk_devices.unwrap_or(if quick { 20 } else { 200 }) as usize,
        sim_bin,
        host_bin,
        host_log: cli.host_log.clone(),
    };
    let selected: Vec<ScenarioName> = if cli.scenario.is_empty() {
        ScenarioName::ALL.to_vec()
    } else {
        ScenarioName::ALL
            .into_iter()
            .filter(|s| cli.scenario.contains(s))
            .collect()
    };

    let mut doc = Document {
        header: vec![
            format!("date: {}", machine::date()),
            format!("commit: {}", machine::commit()),
            format!(
                "machine: {}, {}, {}",
                machine::cpu(),
                machine::memory(),
                machine::kernel()
            ),
            format!(
                "mode: {}; scenarios: {}",
                if quick { "--quick" } else { "full" },
                selected
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "processes: the bench (load generator), `defender-sim` and `defender-soar serve`, \
             each its own process on loopback, sharing the machine's cores; a fresh simulator \
             and host per scenario"
                .to_string(),
        ],
        sections: Vec::new(),
        footer: Vec::new(),
    };

    let suite = async {
        let mut shared = Shared::default();
        let mut times = Vec::new();
        let mut sections = Vec::new();
        for name in &selected {
            eprintln!("defender-bench: running {} ...", name.name());
            let t0 = Instant::now();
            let section = scenarios::run(*name, &options, &mut shared).await;
            let took = t0.elapsed();
            eprintln!(
                "defender-bench: {} done in {:.1} s",
                name.name(),
                took.as_secs_f64()
            );
            times.push((*name, took));
            sections.push(section);
        }
        (sections, times)
    };
    let started = Instant::now();
    // Ctrl-C drops the suite future: every child process is killed on drop.
    let (sections, times) = tokio::select! {
        r = suite => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("defender-bench: interrupted; child processes stopped");
            return ExitCode::from(130);
        }
    };
    let total = started.elapsed();
    let failed = sections.iter().any(|s| s.failed);
    doc.sections = sections;
    doc.footer.push(format!(
        "Run time: {:.1} s in all ({}).",
        total.as_secs_f64(),
        times
            .iter()
            .map(|(n, t)| format!("{} {:.1} s", n.name(), t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let markdown = doc.to_markdown();
    print!("{markdown}");
    if let Some(path) = &cli.out
        && let Err(e) = std::fs::write(path, &markdown)
    {
        eprintln!("defender-bench: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if failed {
        eprintln!("defender-bench: some scenarios failed (see the report)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
