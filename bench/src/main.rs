//! `defender-bench`: load benchmarks over loopback.
//!
//! Module map: [`scenarios`] holds one module per benchmark (each starts what it measures and
//! returns a [`report::Report`]); [`sim_process`] runs `defender-sim` as a child process and
//! reads its CPU time and memory from `/proc`; [`load`] is the closed-loop load generator.
//!
//! Build the simulator and the bench first, then run the bench from the same directory:
//! `cargo build --release -p defender-sim -p defender-bench &&
//! target/release/defender-bench --scenario sim-throughput`.

mod load;
mod report;
mod scenarios;
mod sim_process;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::scenarios::{Options, ScenarioName};

/// Errors of a benchmark run (each is printed once and ends the run).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Load benchmarks of the Defender for Endpoint simulator over loopback.
#[derive(Parser)]
#[command(name = "defender-bench", version)]
struct Cli {
    /// Benchmark to run.
    #[arg(long, value_enum, default_value_t = ScenarioName::SimThroughput)]
    scenario: ScenarioName,
    /// Measured seconds (default 10, or 3 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: Option<u64>,
    /// Concurrent keep-alive workers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Short run (3 s measured unless --duration is given).
    #[arg(long)]
    quick: bool,
    /// The `defender-sim` executable (default: next to this executable).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let sim_bin = match cli.sim_bin {
        Some(p) => p,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name(format!("defender-sim{}", std::env::consts::EXE_SUFFIX)),
            Err(e) => {
                eprintln!("defender-bench: cannot locate own executable: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if !sim_bin.is_file() {
        eprintln!(
            "defender-bench: {} not found; build it with \
             `cargo build --release -p defender-sim -p defender-bench` (or pass --sim-bin)",
            sim_bin.display()
        );
        return ExitCode::from(2);
    }
    let secs = cli.duration.unwrap_or(if cli.quick { 3 } else { 10 });
    let options = Options {
        duration: Duration::from_secs(secs),
        warmup: Duration::from_millis(if cli.quick { 500 } else { 1000 }),
        concurrency: cli.concurrency as usize,
        sim_bin,
    };
    match scenarios::run(cli.scenario, &options).await {
        Ok(report) => {
            print!("{}", report.to_markdown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("defender-bench: {} failed: {e}", cli.scenario.name());
            ExitCode::FAILURE
        }
    }
}
