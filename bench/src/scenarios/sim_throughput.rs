//! `sim-throughput`: how many `GET /api/machineactions/{id}` a separate `defender-sim` process
//! answers over loopback keep-alive connections, and what it costs in CPU and memory.
//!
//! Setup: start the simulator on a free loopback port, load its scenario again with rate limits
//! disabled (`PUT /_sim/scenario`), take a client credentials token from the v2 token endpoint
//! with the first app, isolate the first machine; then warm up and measure.

use serde_json::{Value, json};

use super::Options;
use crate::BoxError;
use crate::load;
use crate::process;
use crate::report::{Section, Table};
use crate::sim_process::SimProcess;
use crate::simctl::{self, SimControl, ok_json};

/// Runs the benchmark; the simulator is stopped whatever happens.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let sim = SimProcess::spawn(&options.sim_bin).await?;
    let result = measure(&sim, options).await;
    sim.stop().await;
    result
}

/// Setup, warm-up and the measured run against a started simulator.
async fn measure(sim: &SimProcess, options: &Options) -> Result<Section, BoxError> {
    let base = sim.base_url().to_string();
    let client = load::client(options.concurrency)?;
    let ctl = SimControl::new(client.clone(), &base);
    ctl.wait_ready().await?;

    let mut scenario = ctl.scenario().await?;
    scenario.rate_limits.disabled = true;
    ctl.put_scenario(&scenario).await?;

    let app = simctl::app_creds(&scenario, 0)?;
    let machine_id = scenario
        .machines
        .first()
        .and_then(|m| m.get("id"))
        .and_then(Value::as_str)
        .ok_or("the scenario has no machine")?;
    let token = ctl.token(&app).await?;

    let action = ok_json(
        client
            .post(format!("{base}/api/machines/{machine_id}/isolate"))
            .bearer_auth(&token)
            .json(&json!({"Comment": "defender-bench sim-throughput", "IsolationType": "Full"}))
            .send()
            .await?,
    )
    .await?;
    let action_id = action["id"].as_str().ok_or("the action answer has no id")?;
    let url = format!("{base}/api/machineactions/{action_id}");

    let warm = load::get_loop(&client, &url, &token, options.concurrency, options.warmup).await?;
    if warm.errors > 0 {
        return Err(format!(
            "{} of {} warm-up requests failed",
            warm.errors, warm.requests
        )
        .into());
    }
    let before = sim.stats()?;
    let own_before = process::own_cpu_secs()?;
    let run = load::get_loop(&client, &url, &token, options.concurrency, options.duration).await?;
    let own_cpu = process::own_cpu_secs()? - own_before;
    let after = sim.stats()?;

    let cpu = after.cpu_secs - before.cpu_secs;
    let secs = run.elapsed.as_secs_f64();
    let percent = |cpu: f64| if secs > 0.0 { 100.0 * cpu / secs } else { 0.0 };
    let mut table = Table::new(&[
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "sim CPU s",
        "sim CPU %",
        "sim max RSS MiB",
        "bench CPU %",
    ]);
    table.row(vec![
        run.requests.to_string(),
        format!("{:.0}", run.rate()),
        format!("{:.3}", run.percentile_ms(50.0)),
        format!("{:.3}", run.percentile_ms(99.0)),
        run.errors.to_string(),
        format!("{cpu:.2}"),
        format!("{:.0}", percent(cpu)),
        format!("{:.1}", after.max_rss_kib as f64 / 1024.0),
        format!("{:.0}", percent(own_cpu)),
    ]);
    Ok(Section {
        title: "sim-throughput: GET /api/machineactions/{id}".into(),
        notes: vec![format!(
            "`GET /api/machineactions/{{id}}` straight to a `defender-sim` process (rate limits \
             off): {} keep-alive workers, {:.1} s measured after {:.1} s warm-up.",
            options.concurrency,
            secs,
            options.warmup.as_secs_f64(),
        )],
        tables: vec![table],
        targets: Vec::new(),
        failed: false,
    })
}
