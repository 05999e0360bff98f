//! `defender-sim`: runs the simulator as a process.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use defender_sim::Scenario;

/// Local simulator of Entra ID and the Microsoft Defender for Endpoint API.
#[derive(Parser)]
#[command(name = "defender-sim", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Scenario file (JSON); the built-in default scenario when absent.
    #[arg(long)]
    scenario: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "defender_sim=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let scenario = match &cli.scenario {
        Some(path) => match Scenario::from_file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("defender-sim: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        None => Scenario::default_scenario(),
    };
    let handle = match defender_sim::start(cli.listen, scenario).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("defender-sim: cannot listen on {}: {e}", cli.listen);
            return std::process::ExitCode::from(1);
        }
    };
    println!("defender-sim listening on {}", handle.base_url());
    let _ = tokio::signal::ctrl_c().await;
    handle.stop().await;
    std::process::ExitCode::SUCCESS
}
