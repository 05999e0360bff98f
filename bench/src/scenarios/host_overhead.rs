//! `host-overhead`: what the host adds to a status read. `get_status` of a machine action that
//! is already final, through the host (`POST /assets/bench/actions/get_status`), against the
//! same `GET /api/machineactions/{id}` sent straight to the simulator; closed-loop callers at
//! the configured concurrency and at one caller, each run with its CPU use per process.
//!
//! The host keeps the actions it has seen in a final status, so after its first read of an
//! event (in the warm-up) a `get_status` on it makes no upstream call: the host rows measure
//! the host's own work (HTTP, API key, validation, cache lookup, envelope) against a direct
//! GET. The "one event per caller" rows spread the callers over as many events, the "all
//! callers on one event" row puts them on one. The upstream GETs per call are read from the
//! simulator's counters, so the table says what each row measured.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::json;

use super::{Options, Shared, Stack, cpu_percent, instant_timings};
use crate::BoxError;
use crate::host_process::{HostSpec, body_of};
use crate::load::{self, LoadResult, Pace};
use crate::process;
use crate::report::{Section, Table, Target, mib, num, ratio};
use crate::simctl::{self, route_count};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[
    ("host overhead p50 at 1 caller (host − direct)", "< 0.2 ms"),
    (
        "host throughput, concurrent callers (one event each), % of direct",
        "≥ 50 %",
    ),
];

/// The simulator route of a machine action read.
const ACTION_ROUTE: &str = "GET /api/machineactions/{id}";

/// Where a run sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// `GET /api/machineactions/{id}` to the simulator.
    Direct,
    /// `get_status` through the host, caller `i` on event `i` (answered from the cache of
    /// final statuses after the warm-up).
    HostPerCaller,
    /// `get_status` through the host, every caller on the same event (answered from the
    /// cache of final statuses after the warm-up).
    HostShared,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct GET to the simulator",
            Path::HostPerCaller => "host get_status, one event per caller",
            Path::HostShared => "host get_status, all callers on one event",
        }
    }
}

/// One measured run.
pub(super) struct Run {
    pub(super) path: Path,
    pub(super) callers: usize,
    pub(super) load: LoadResult,
    pub(super) upstream_gets: u64,
    pub(super) host_cpu: f64,
    pub(super) sim_cpu: f64,
    pub(super) bench_cpu: f64,
}

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options, shared: &mut Shared) -> Result<Section, BoxError> {
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
    let result = measure(&stack, options, shared, &client).await;
    stack.stop().await;
    result
}

async fn measure(
    stack: &Stack,
    options: &Options,
    shared: &mut Shared,
    client: &reqwest::Client,
) -> Result<Section, BoxError> {
    let callers = options.concurrency;
    let token = stack.ctl.token(&stack.app).await?;
    let machines = simctl::machine_ids(&stack.scenario);
    let mut ids = Vec::with_capacity(callers);
    for m in machines.iter().take(callers) {
        ids.push(stack.ctl.isolate(&token, m).await?);
    }
    // Timings are 0: every action is final at once. Check one to be sure.
    let first = stack.ctl.action(&token, &ids[0]).await?;
    if first["status"] != "Succeeded" {
        return Err(format!("the isolate action is {} instead of final", first["status"]).into());
    }

    // Warm-up: open connections, get the host's token, fault in code paths; the host reads
    // every event once here and keeps it as final.
    measure_run(
        stack,
        client,
        &token,
        &ids,
        Path::HostPerCaller,
        callers,
        options.warmup,
    )
    .await?;
    measure_run(
        stack,
        client,
        &token,
        &ids,
        Path::Direct,
        callers,
        options.warmup,
    )
    .await?;

    let plan = [
        (Path::Direct, callers),
        (Path::HostPerCaller, callers),
        (Path::HostShared, callers),
        (Path::Direct, 1),
        (Path::HostPerCaller, 1),
    ];
    let mut runs = Vec::new();
    for (path, n) in plan {
        runs.push(measure_run(stack, client, &token, &ids, path, n, options.duration).await?);
    }
    let after = stack.host.stats()?;
    shared.rss_after_overhead = Some((after.rss_kib, after.max_rss_kib));

    let find = |path: Path, n: usize| runs.iter().find(|r| r.path == path && r.callers == n);
    let (Some(direct_n), Some(host_n), Some(direct_1), Some(host_1)) = (
        find(Path::Direct, callers),
        find(Path::HostPerCaller, callers),
        find(Path::Direct, 1),
        find(Path::HostPerCaller, 1),
    ) else {
        return Err("a run is missing".into());
    };

    let mut table = Table::new(&[
        "path",
        "callers",
        "requests",
        "req/s",
        "vs direct",
        "p50 ms",
        "p99 ms",
        "errors",
        "upstream GETs per call",
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
    for r in &runs {
        let direct = if r.callers == 1 { direct_1 } else { direct_n };
        let secs = r.load.elapsed.as_secs_f64();
        let is_host = r.path != Path::Direct;
        table.row(vec![
            r.path.label().to_string(),
            r.callers.to_string(),
            r.load.requests.to_string(),
            num(r.load.rate(), 0),
            if is_host {
                ratio(r.load.rate(), direct.load.rate())
            } else {
                "baseline".into()
            },
            num(r.load.percentile_ms(50.0), 3),
            num(r.load.percentile_ms(99.0), 3),
            r.load.errors.to_string(),
            if is_host && r.load.requests > 0 {
                num(r.upstream_gets as f64 / r.load.requests as f64, 3)
            } else {
                "1 (itself)".into()
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

    let mut ratios = Table::new(&["host / direct", &format!("{callers} callers"), "1 caller"])
        .with_caption("Ratios, host (one event per caller) over direct:");
    ratios.row(vec![
        "throughput".into(),
        ratio(host_n.load.rate(), direct_n.load.rate()),
        ratio(host_1.load.rate(), direct_1.load.rate()),
    ]);
    for (label, p) in [("p50 latency", 50.0), ("p99 latency", 99.0)] {
        ratios.row(vec![
            label.into(),
            ratio(host_n.load.percentile_ms(p), direct_n.load.percentile_ms(p)),
            ratio(host_1.load.percentile_ms(p), direct_1.load.percentile_ms(p)),
        ]);
    }
    ratios.row(vec![
        "p50 added by the host (ms)".into(),
        num(
            host_n.load.percentile_ms(50.0) - direct_n.load.percentile_ms(50.0),
            3,
        ),
        num(
            host_1.load.percentile_ms(50.0) - direct_1.load.percentile_ms(50.0),
            3,
        ),
    ]);

    let host_runs = runs.iter().filter(|r| r.path != Path::Direct);
    let (host_calls, host_gets) = host_runs.fold((0, 0), |(calls, gets), r| {
        (calls + r.load.requests, gets + r.upstream_gets)
    });
    let answered = if host_gets == 0 {
        format!(
            "The host read each event upstream once, in the warm-up; its {host_calls} measured \
             calls made no upstream GET (answered from its cache of final statuses), so the \
             host rows compare the host's own work with a direct GET."
        )
    } else {
        format!(
            "The host's {host_calls} measured calls made {host_gets} upstream GETs \
             ({} per call); see \"upstream GETs per call\" for each row.",
            num(host_gets as f64 / host_calls.max(1) as f64, 3)
        )
    };
    let overhead = host_1.load.percentile_ms(50.0) - direct_1.load.percentile_ms(50.0);
    let share = 100.0 * host_n.load.rate() / direct_n.load.rate().max(f64::MIN_POSITIVE);
    Ok(Section {
        title: String::new(),
        notes: vec![
            format!(
                "Closed-loop callers over keep-alive connections, {:.1} s per run after a {:.1} s \
                 warm-up. The host answers `get_status` of {callers} isolate actions that are \
                 already final; the direct path sends the same `GET /api/machineactions/{{id}}` \
                 with a bearer token. Simulator rate limits off, asset budget 100,000/min; host \
                 log level `{}`.",
                options.duration.as_secs_f64(),
                options.warmup.as_secs_f64(),
                options.host_log,
            ),
            answered,
            "The host, the simulator and the load generator share the machine's cores: the CPU \
             columns show who used them (CPU % is of one core), and when the machine runs out \
             of cores the throughput ratio follows the CPU each request costs."
                .to_string(),
            format!(
                "Host memory after these runs: VmRSS {} MiB, VmHWM {} MiB.",
                mib(after.rss_kib),
                mib(after.max_rss_kib)
            ),
        ],
        tables: vec![table, ratios],
        targets: vec![
            Target::below(TARGETS[0].0, overhead, 0.2, "ms", 3),
            Target::at_least(TARGETS[1].0, share, 50.0, "%", 0),
        ],
        failed: false,
    })
}

/// One run of `callers` closed-loop callers on `path` for `duration`, with the upstream GETs
/// and the CPU time of each process over it (also used by `final-status`).
pub(super) async fn measure_run(
    stack: &Stack,
    client: &reqwest::Client,
    token: &str,
    ids: &[String],
    path: Path,
    callers: usize,
    duration: Duration,
) -> Result<Run, BoxError> {
    let before = stack.ctl.counters().await?;
    let host0 = stack.host.stats()?;
    let sim0 = stack.sim.stats()?;
    let own0 = process::own_cpu_secs()?;
    let load = match path {
        Path::Direct => {
            let auth = HeaderValue::from_str(&format!("Bearer {token}"))?;
            let urls: Vec<String> = ids
                .iter()
                .map(|id| stack.ctl.url(&format!("/api/machineactions/{id}")))
                .collect();
            let client = client.clone();
            load::run(
                callers,
                duration,
                Pace::Closed,
                move |i| {
                    client
                        .get(&urls[i % urls.len()])
                        .header(AUTHORIZATION, auth.clone())
                },
                load::is_ok,
            )
            .await?
        }
        Path::HostPerCaller | Path::HostShared => {
            let bodies: Vec<String> = ids
                .iter()
                .map(|id| body_of(&json!({"event_id": id})))
                .collect();
            let api = stack.api.clone();
            let shared = path == Path::HostShared;
            load::run(
                callers,
                duration,
                Pace::Closed,
                move |i| {
                    let body = if shared {
                        bodies[0].clone()
                    } else {
                        bodies[i % bodies.len()].clone()
                    };
                    api.request_body("get_status", body)
                },
                load::is_success_envelope,
            )
            .await?
        }
    };
    let bench_cpu = process::own_cpu_secs()? - own0;
    let sim1 = stack.sim.stats()?;
    let host1 = stack.host.stats()?;
    let after = stack.ctl.counters().await?;
    Ok(Run {
        path,
        callers,
        upstream_gets: route_count(&after, ACTION_ROUTE)
            .saturating_sub(route_count(&before, ACTION_ROUTE)),
        host_cpu: host1.cpu_secs - host0.cpu_secs,
        sim_cpu: sim1.cpu_secs - sim0.cpu_secs,
        bench_cpu,
        load,
    })
}
