//! `sim-throughput`: how many `GET /api/machineactions/{id}` a separate `defender-sim` process
//! answers over loopback keep-alive connections, and what it costs in CPU and memory.
//!
//! Setup: start the simulator on a free loopback port, load its scenario again with rate limits
//! disabled (`PUT /_sim/scenario`), take a client credentials token from the v2 token endpoint
//! with the first app, isolate the first machine; then warm up and measure.

use std::time::Duration;

use defender_sim::Scenario;
use serde_json::{Value, json};

use super::Options;
use crate::BoxError;
use crate::load;
use crate::report::Report;
use crate::sim_process::{self, SimProcess};

/// How long the simulator may take to answer its health check.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The Defender resource, as a v2 scope.
const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

/// Runs the benchmark; the simulator is stopped whatever happens.
pub async fn run(options: &Options) -> Result<Report, BoxError> {
    let sim = SimProcess::spawn(&options.sim_bin).await?;
    let result = measure(&sim, options).await;
    sim.stop().await;
    result
}

/// Setup, warm-up and the measured run against a started simulator.
async fn measure(sim: &SimProcess, options: &Options) -> Result<Report, BoxError> {
    let base = sim.base_url().to_string();
    let client = load::client(options.concurrency)?;
    wait_ready(&client, &base).await?;

    let mut scenario: Scenario = ok_json(client.get(format!("{base}/_sim/scenario")).send().await?)
        .await
        .and_then(|v| Ok(serde_json::from_value(v)?))?;
    scenario.rate_limits.disabled = true;
    ok_json(
        client
            .put(format!("{base}/_sim/scenario"))
            .json(&scenario)
            .send()
            .await?,
    )
    .await?;

    let tenant = scenario
        .tenants
        .first()
        .ok_or("the scenario has no tenant")?;
    let app = tenant.apps.first().ok_or("the first tenant has no app")?;
    let machine_id = scenario
        .machines
        .first()
        .and_then(|m| m.get("id"))
        .and_then(Value::as_str)
        .ok_or("the scenario has no machine")?;

    let token = ok_json(
        client
            .post(format!("{base}/{}/oauth2/v2.0/token", tenant.id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.client_id.as_str()),
                ("client_secret", app.secret.as_str()),
                ("scope", SCOPE),
            ])
            .send()
            .await?,
    )
    .await?;
    let token = token["access_token"]
        .as_str()
        .ok_or("the token answer has no access_token")?
        .to_string();

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
    let own_before = sim_process::own_cpu_secs()?;
    let run = load::get_loop(&client, &url, &token, options.concurrency, options.duration).await?;
    let own_cpu = sim_process::own_cpu_secs()? - own_before;
    let after = sim.stats()?;

    let cpu = after.cpu_secs - before.cpu_secs;
    let secs = run.elapsed.as_secs_f64();
    let percent = |cpu: f64| if secs > 0.0 { 100.0 * cpu / secs } else { 0.0 };
    Ok(Report {
        title: "sim-throughput: GET /api/machineactions/{id}".into(),
        notes: vec![format!(
            "{} keep-alive workers, {:.1} s measured after {:.1} s warm-up, {} CPU cores, \
             simulator {}",
            options.concurrency,
            secs,
            options.warmup.as_secs_f64(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            options.sim_bin.display(),
        )],
        header: [
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "sim CPU s",
            "sim CPU %",
            "sim max RSS MiB",
            "bench CPU %",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![vec![
            run.requests.to_string(),
            format!("{:.0}", run.rate()),
            format!("{:.3}", run.percentile_ms(50.0)),
            format!("{:.3}", run.percentile_ms(99.0)),
            run.errors.to_string(),
            format!("{cpu:.2}"),
            format!("{:.0}", percent(cpu)),
            format!("{:.1}", after.max_rss_kib as f64 / 1024.0),
            format!("{:.0}", percent(own_cpu)),
        ]],
    })
}

/// Polls `GET /_sim/health` until it answers, within [`READY_TIMEOUT`].
async fn wait_ready(client: &reqwest::Client, base: &str) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        match client.get(format!("{base}/_sim/health")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err("the simulator did not answer its health check".into());
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The JSON body of a 2xx answer; an error naming the status and body otherwise.
async fn ok_json(resp: reqwest::Response) -> Result<Value, BoxError> {
    let status = resp.status();
    let url = resp.url().path().to_string();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {text}").into());
    }
    Ok(serde_json::from_str(&text)?)
}
