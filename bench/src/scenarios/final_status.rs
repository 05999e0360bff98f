//! `final-status`: polling the status of machine actions that are already final. Closed-loop
//! callers (the configured concurrency, one event each) send `get_status` to the host, against
//! the same number of callers sending `GET /api/machineactions/{id}` straight to the simulator.
//!
//! The host keeps the actions it has seen in a final status (per asset, up to 10,000), so only
//! the first read of each event goes upstream; every later `get_status` is answered from that
//! cache. The upstream GETs of the host, first reads included, are read from the simulator's
//! counters and divided by the number of events.
//!
//! Setup: the simulator with rate limits off and timings 0 (an isolate is final at once), one
//! machine per caller, one isolate per machine sent straight to the simulator; the host (asset
//! budget 100,000/min) first sees the actions in its warm-up run. A last direct run repeats
//! the polling with the simulator's rate limits on (Defender's 100 calls a minute per app):
//! the throughput target compares successful answers against that run, which is what polling
//! Defender directly yields.

use super::host_overhead::{Path, Run, measure_run};
use super::{Options, Stack, cpu_percent, instant_timings};
use crate::BoxError;
use crate::host_process::HostSpec;
use crate::load::{self, LoadResult};
use crate::report::{Section, Table, Target, num, ratio};
use crate::simctl;

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[
    (
        "final-status host answers/s, × direct polling under Defender's rate limit",
        "≥ 10×",
    ),
    (
        "final-status upstream GETs per event (first read included)",
        "≤ 1 GET",
    ),
];

/// Successful answers per second of a run (200, and for the host a `success` envelope).
fn ok_rate(load: &LoadResult) -> f64 {
    let secs = load.elapsed.as_secs_f64();
    if secs > 0.0 {
        load.requests.saturating_sub(load.errors) as f64 / secs
    } else {
        0.0
    }
}

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let callers = options.concurrency;
    let client = load::client(callers + 8)?;
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits.disabled = true;
            s.timings = instant_timings();
            simctl::ensure_machines(s, callers)
        },
        &HostSpec::unlimited(&options.host_log),
    )
    .await?;
    let result = measure(&stack, options, &client).await;
    stack.stop().await;
    result
}

async fn measure(
    stack: &Stack,
    options: &Options,
    client: &reqwest::Client,
) -> Result<Section, BoxError> {
    let callers = options.concurrency;
    let token = stack.ctl.token(&stack.app).await?;
    let machines = simctl::machine_ids(&stack.scenario);
    let mut ids = Vec::with_capacity(callers);
    for m in machines.iter().take(callers) {
        ids.push(stack.ctl.isolate(&token, m).await?);
    }
    if ids.len() < callers {
        return Err(format!("{} machines for {callers} callers", ids.len()).into());
    }
    // Timings are 0: every action is final at once. Check each one.
    for id in &ids {
        let action = stack.ctl.action(&token, id).await?;
        if action["status"] != "Succeeded" {
            return Err(format!("action {id} is {} instead of final", action["status"]).into());
        }
    }

    // Warm-up: the host's first read of each event (its only upstream GET), open connections.
    let first = measure_run(
        stack,
        client,
        &token,
        &ids,
        Path::HostPerCaller,
        ids.len(),
        options.warmup,
    )
    .await?;
    measure_run(
        stack,
        client,
        &token,
        &ids,
        Path::Direct,
        ids.len(),
        options.warmup,
    )
    .await?;
    let direct = measure_run(
        stack,
        client,
        &token,
        &ids,
        Path::Direct,
        ids.len(),
        options.duration,
    )
    .await?;
    let host = measure_run(
        stack,
        client,
        &token,
        &ids,
        Path::HostPerCaller,
        ids.len(),
        options.duration,
    )
    .await?;

    // The same direct polling against an API that enforces Defender's limit (100 calls a
    // minute per app): the simulator with its rate limits on, fresh final actions, a fresh
    // token. This is what a fleet of playbooks polling Defender directly gets.
    let mut limited = stack.scenario.clone();
    limited.rate_limits.disabled = false;
    stack.ctl.put_scenario(&limited).await?;
    let limited_token = stack.ctl.token(&stack.app).await?;
    let mut limited_ids = Vec::with_capacity(callers);
    for m in machines.iter().take(callers) {
        limited_ids.push(stack.ctl.isolate(&limited_token, m).await?);
    }
    let direct_limited = measure_run(
        stack,
        client,
        &limited_token,
        &limited_ids,
        Path::Direct,
        limited_ids.len(),
        options.duration,
    )
    .await?;

    let events = ids.len();
    let host_gets = first.upstream_gets + host.upstream_gets;
    let gets_per_event = host_gets as f64 / events as f64;
    let speedup = ok_rate(&host.load) / ok_rate(&direct_limited.load).max(f64::MIN_POSITIVE);

    let mut table = Table::new(&[
        "path",
        "callers",
        "events",
        "requests",
        "req/s",
        "successful/s",
        "vs direct",
        "p50 ms",
        "p99 ms",
        "errors",
        "upstream GETs in the run",
        "upstream GETs per event",
        "host CPU %",
        "sim CPU %",
        "bench CPU %",
        "host CPU µs/call",
        "sim CPU µs/call",
    ]);
    let per_call = |cpu: f64, r: &Run| {
        if r.load.requests > 0 {
            num(cpu * 1e6 / r.load.requests as f64, 0)
        } else {
            "—".into()
        }
    };
    for (label, r, is_host) in [
        ("direct GET to the simulator, no rate limit", &direct, false),
        (
            "direct GET, Defender's rate limit (100/min per app)",
            &direct_limited,
            false,
        ),
        ("host get_status (final status cached)", &host, true),
    ] {
        let secs = r.load.elapsed.as_secs_f64();
        table.row(vec![
            label.to_string(),
            callers.to_string(),
            events.to_string(),
            r.load.requests.to_string(),
            num(r.load.rate(), 0),
            num(ok_rate(&r.load), 1),
            if std::ptr::eq(r, &direct) {
                "baseline".into()
            } else {
                ratio(ok_rate(&r.load), ok_rate(&direct.load))
            },
            num(r.load.percentile_ms(50.0), 3),
            num(r.load.percentile_ms(99.0), 3),
            r.load.errors.to_string(),
            r.upstream_gets.to_string(),
            if is_host {
                num(gets_per_event, 3)
            } else {
                num(r.upstream_gets as f64 / events as f64, 0)
            },
            if is_host {
                num(cpu_percent(r.host_cpu, secs), 0)
            } else {
                "—".into()
            },
            num(cpu_percent(r.sim_cpu, secs), 0),
            num(cpu_percent(r.bench_cpu, secs), 0),
            if is_host {
                per_call(r.host_cpu, r)
            } else {
                "—".into()
            },
            per_call(r.sim_cpu, r),
        ]);
    }

    Ok(Section {
        title: String::new(),
        notes: vec![
            format!(
                "{callers} closed-loop callers over keep-alive connections, each on its own \
                 isolate action that is already final, {:.1} s per run after a {:.1} s warm-up. \
                 The host path is `get_status` (`{{\"event_id\": ...}}`); the direct path sends \
                 `GET /api/machineactions/{{id}}` with a bearer token, once with the \
                 simulator's rate limits off (raw speed) and once with them on, as Defender \
                 enforces them (100 calls a minute per app; answers past it are 429s and count \
                 as errors, not as successful answers). Asset budget 100,000/min; host log \
                 level `{}`.",
                options.duration.as_secs_f64(),
                options.warmup.as_secs_f64(),
                options.host_log,
            ),
            format!(
                "The host read each event upstream during its warm-up ({} GETs for {events} \
                 events) and {} times in the measured run: \"upstream GETs per event\" counts \
                 both, so the host's measured calls were answered from its cache of final \
                 statuses. The three processes share the machine's cores (CPU % is of one core): \
                 without an upstream call, a host answer still costs its HTTP request, API-key \
                 check, validation and JSON envelope.",
                first.upstream_gets, host.upstream_gets,
            ),
            "The throughput target compares successful answers: polling Defender directly, \
             a fleet of callers gets at most 100 answers a minute per app whatever its \
             concurrency, while the host answers final statuses without spending any of \
             that budget. Against the unlimited simulator, both sides are bound by the same \
             two cores (the load generator included), so that ratio measures CPU per request, \
             not the cache."
                .to_string(),
        ],
        tables: vec![table],
        targets: vec![
            Target::at_least(TARGETS[0].0, speedup, 10.0, "×", 2),
            Target::at_most(TARGETS[1].0, gets_per_event, 1.0, "GET", 3),
        ],
        failed: false,
    })
}
