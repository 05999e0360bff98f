//! `startup`: the time from exec of `defender-soar serve` to `/readyz` answering 200 (probed
//! every millisecond), over several starts, each with a fresh state directory (so each start
//! also creates the state key file); the host's idle RSS once ready; and the RSS the host had
//! after the host-overhead runs, when that scenario ran before.

use std::time::Duration;

use super::{Options, Shared};
use crate::BoxError;
use crate::host_process::{HostProcess, HostSpec};
use crate::load::{self, median};
use crate::report::{Section, Table, Target, mib, num};
use crate::sim_process::SimProcess;
use crate::simctl::{self, SimControl};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[
    ("start-up (exec → /readyz 200), median", "< 50 ms"),
    ("idle RSS after start-up, median", "< 20 MiB"),
];

/// How long the host idles before its RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs the scenario: one simulator (the asset's URLs point at it), several host starts.
pub async fn run(options: &Options, shared: &Shared) -> Result<Section, BoxError> {
    let client = load::client(8)?;
    let sim = SimProcess::spawn(&options.sim_bin).await?;
    let result = measure(&sim, options, shared, &client).await;
    sim.stop().await;
    result
}

async fn measure(
    sim: &SimProcess,
    options: &Options,
    shared: &Shared,
    client: &reqwest::Client,
) -> Result<Section, BoxError> {
    let ctl = SimControl::new(client.clone(), sim.base_url());
    ctl.wait_ready().await?;
    let scenario = ctl.scenario().await?;
    let app = simctl::app_creds(&scenario, 0)?;
    let spec = HostSpec::unlimited(&options.host_log);
    let mut startups = Vec::new();
    let mut idle = Vec::new();
    let mut table = Table::new(&[
        "run",
        "exec → /readyz ms",
        "idle VmRSS MiB",
        "idle VmHWM MiB",
    ]);
    for run in 1..=options.startup_runs.max(1) {
        // A new client per start: no connection is reused from the previous process.
        let probe = load::client(2)?;
        let host =
            HostProcess::spawn(&options.host_bin, sim.base_url(), &app, &spec, &probe).await?;
        tokio::time::sleep(SETTLE).await;
        let stats = host.stats();
        let startup = host.startup;
        host.stop().await;
        let stats = stats?;
        startups.push(startup);
        idle.push(stats.rss_kib);
        table.row(vec![
            run.to_string(),
            num(startup.as_secs_f64() * 1000.0, 1),
            mib(stats.rss_kib),
            mib(stats.max_rss_kib),
        ]);
    }
    let median_startup = median(&startups);
    let mut sorted_idle = idle.clone();
    sorted_idle.sort_unstable();
    let median_idle = load::percentile(&sorted_idle, 50.0);
    let (min, max) = (
        startups.iter().min().copied().unwrap_or_default(),
        startups.iter().max().copied().unwrap_or_default(),
    );
    table.row(vec![
        "median".into(),
        num(median_startup.as_secs_f64() * 1000.0, 1),
        mib(median_idle),
        String::new(),
    ]);

    let mut memory =
        Table::new(&["host state", "VmRSS MiB", "VmHWM MiB"]).with_caption("Memory of the host:");
    memory.row(vec![
        "idle after start-up (median)".into(),
        mib(median_idle),
        "—".into(),
    ]);
    match shared.rss_after_overhead {
        Some((rss, hwm)) => memory.row(vec![
            "after the host-overhead runs".into(),
            mib(rss),
            mib(hwm),
        ]),
        None => memory.row(vec![
            "after the host-overhead runs".into(),
            "not measured (host-overhead did not run first)".into(),
            "—".into(),
        ]),
    }
    Ok(Section {
        title: String::new(),
        notes: vec![format!(
            "{} starts of `defender-soar serve` with one asset, each with a fresh state \
             directory; the time runs from just before the exec to the first 200 of `/readyz` \
             (probed every millisecond over new connections): {:.1} ms to {:.1} ms. Idle RSS \
             read {} ms after ready.",
            startups.len(),
            min.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0,
            SETTLE.as_millis()
        )],
        tables: vec![table, memory],
        targets: vec![
            Target::below(
                TARGETS[0].0,
                median_startup.as_secs_f64() * 1000.0,
                50.0,
                "ms",
                1,
            ),
            Target::below(TARGETS[1].0, median_idle as f64 / 1024.0, 20.0, "MiB", 1),
        ],
        failed: false,
    })
}
