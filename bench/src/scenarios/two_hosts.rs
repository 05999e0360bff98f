//! `two-hosts`: two host processes on one Redis, sharing one tenant budget. The app
//! registration's budget and the simulator's rate limit are both 100 calls per minute; each
//! host is offered `list_devices` (limit 1) at 5× the budget, 500 per minute, open loop, for
//! the configured time, so the tenant sees 10× its budget. Counted: the 429s the simulator
//! returned (target 0), the calls that reached the simulator against the tenant budget of the
//! minutes the run spanned (target: never above it), and per host the calls served, those
//! answered 503 with `Retry-After`, throughput and latency.
//!
//! Baseline, at the same moments and the same rate per host: one host alone on Redis (same
//! backend, so only the number of hosts differs) and one host alone on the files backend
//! (the default, as in `overload`). Each setup has its own simulator, so its counters are its
//! own; the two Redis setups use their own key prefixes on one `redis-server`.

use std::time::{Duration, Instant};

use defender_sim::Counters;
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use super::Options;
use crate::BoxError;
use crate::host_process::{HostClient, HostProcess, HostSpec, SharedState};
use crate::load::{self, percentile};
use crate::process::ProcStats;
use crate::redis_process::RedisProcess;
use crate::report::{Section, Table, Target, num};
use crate::sim_process::SimProcess;
use crate::simctl::{self, SimControl};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[
    ("upstream 429s over two hosts", "0 429"),
    (
        "calls sent within the tenant budget (two hosts)",
        "≤ the budget of the minutes spanned",
    ),
];

/// Calls per minute of the tenant budget and of the simulator's limit.
const PER_MINUTE: u32 = 100;
/// Calls per hour of the tenant budget.
const PER_HOUR: u32 = 1500;
/// Calls per minute of the budget that reads such as `list_devices` may use (the host keeps a
/// tenth of each window for state-changing calls).
const READ_PER_MINUTE: u32 = PER_MINUTE - PER_MINUTE / 10;
/// Offered load per host as a multiple of the budget.
const FACTOR: u32 = 5;
/// Timeout of one call (the host may wait for a permit up to its max_wait_secs, 30 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// One configuration measured: its hosts share a simulator (and, on Redis, a key prefix).
struct Setup {
    /// Row label.
    label: &'static str,
    /// Host processes.
    hosts: usize,
    /// `key_prefix` on the shared Redis; the files backend when `None`.
    redis_prefix: Option<&'static str>,
}

/// The setups, baselines first.
const SETUPS: [Setup; 3] = [
    Setup {
        label: "one host, files backend",
        hosts: 1,
        redis_prefix: None,
    },
    Setup {
        label: "one host, Redis",
        hosts: 1,
        redis_prefix: Some("bench-one"),
    },
    Setup {
        label: "two hosts, Redis",
        hosts: 2,
        redis_prefix: Some("bench-two"),
    },
];
/// Index in [`SETUPS`] of the one-host Redis baseline.
const ONE_REDIS: usize = 1;
/// Index in [`SETUPS`] of the two hosts.
const TWO: usize = 2;

/// A setup's processes.
struct Running {
    sim: SimProcess,
    ctl: SimControl,
    hosts: Vec<HostProcess>,
    apis: Vec<HostClient>,
}

/// One answered (or failed) call.
#[derive(Debug, Clone)]
struct Call {
    /// HTTP status (`None` when no answer came).
    status: Option<StatusCode>,
    /// A success envelope.
    served: bool,
    retry_after: Option<String>,
    ms: f64,
    /// When the answer came, in seconds since the load started.
    done_secs: f64,
}

impl Call {
    fn with_retry(&self) -> bool {
        self.status == Some(StatusCode::SERVICE_UNAVAILABLE) && self.retry_after.is_some()
    }
}

/// Runs the scenario on its own Redis, simulators and hosts.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let redis = RedisProcess::spawn().await?;
    let client = load::client(64)?;
    let mut running = Vec::new();
    let mut result = Ok(());
    for setup in &SETUPS {
        match start(setup, options, &client, &redis).await {
            Ok(r) => running.push(r),
            Err(e) => {
                result = Err(format!("{}: {e}", setup.label));
                break;
            }
        }
    }
    let section = match result {
        Ok(()) => measure(&running, &redis, options).await,
        Err(e) => Err(e.into()),
    };
    for r in running {
        for h in r.hosts {
            h.stop().await;
        }
        r.sim.stop().await;
    }
    redis.stop().await;
    section
}

/// Starts a setup's simulator (limit 100/min per app) and its hosts (budget 100/min).
async fn start(
    setup: &Setup,
    options: &Options,
    client: &reqwest::Client,
    redis: &RedisProcess,
) -> Result<Running, BoxError> {
    let sim = SimProcess::spawn(&options.sim_bin).await?;
    let ctl = SimControl::new(client.clone(), sim.base_url());
    ctl.wait_ready().await?;
    let mut scenario = ctl.scenario().await?;
    scenario.rate_limits = Default::default();
    scenario.rate_limits.default.per_minute = PER_MINUTE;
    ctl.put_scenario(&scenario).await?;
    let app = simctl::app_creds(&scenario, 0)?;
    let shared_state = match setup.redis_prefix {
        Some(prefix) => Some(SharedState::new(&redis.url(), prefix)?),
        None => None,
    };
    let spec = HostSpec {
        per_minute: PER_MINUTE,
        per_hour: PER_HOUR,
        shared_state,
        ..HostSpec::unlimited(&options.host_log)
    };
    let probe = load::client(4)?;
    let mut hosts = Vec::new();
    let mut apis = Vec::new();
    for _ in 0..setup.hosts {
        let host =
            HostProcess::spawn(&options.host_bin, sim.base_url(), &app, &spec, &probe).await?;
        apis.push(host.client(client)?);
        hosts.push(host);
    }
    Ok(Running {
        sim,
        ctl,
        hosts,
        apis,
    })
}

/// Requests the simulator counted on its Defender API routes (`/api/...`), any status.
fn api_calls(c: &Counters) -> u64 {
    c.by_route
        .iter()
        .filter(|(k, _)| {
            k.split_once(' ')
                .is_some_and(|(_, route)| route.starts_with("/api/"))
        })
        .flat_map(|(_, m)| m.values())
        .sum()
}

/// What one setup measured.
struct Measured {
    /// Calls per host.
    calls: Vec<Vec<Call>>,
    /// CPU seconds per host during the load.
    cpu: Vec<f64>,
    /// Seconds from the first call offered to the last answer.
    span_secs: f64,
    /// Defender API calls the simulator received.
    upstream: u64,
    /// 429s the simulator answered.
    upstream_429: u64,
}

impl Measured {
    /// Rolling-minute windows the run spanned: calls in `[0, T]` fit in `⌊T/60⌋ + 1` of them.
    fn windows(&self) -> u64 {
        (self.span_secs / 60.0).floor() as u64 + 1
    }

    /// The tenant budget of those windows (the hourly limit included).
    fn budget(&self) -> u64 {
        (u64::from(PER_MINUTE) * self.windows()).min(u64::from(PER_HOUR))
    }

    fn all(&self) -> impl Iterator<Item = &Call> {
        self.calls.iter().flatten()
    }
}

async fn measure(
    running: &[Running],
    redis: &RedisProcess,
    options: &Options,
) -> Result<Section, BoxError> {
    let rate_per_min = f64::from(PER_MINUTE * FACTOR);
    let interval = Duration::from_secs_f64(60.0 / rate_per_min);
    let count = (options.two_hosts.as_secs_f64() / interval.as_secs_f64()).round() as usize;
    let params = json!({"input_type": "All", "limit": 1});

    let mut before = Vec::new();
    let mut cpu_before: Vec<Vec<ProcStats>> = Vec::new();
    for r in running {
        before.push(r.ctl.counters().await?);
        cpu_before.push(
            r.hosts
                .iter()
                .map(HostProcess::stats)
                .collect::<Result<_, _>>()?,
        );
    }
    let redis_before = redis.stats()?;

    let mut set: JoinSet<(usize, usize, Call)> = JoinSet::new();
    let start = Instant::now();
    for i in 0..count {
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        for (s, r) in running.iter().enumerate() {
            for (h, api) in r.apis.iter().enumerate() {
                let api = api.clone();
                let p = params.clone();
                set.spawn(async move {
                    let t0 = Instant::now();
                    let r = api.invoke("list_devices", &p, CALL_TIMEOUT).await;
                    let ms = t0.elapsed().as_secs_f64() * 1000.0;
                    let done_secs = start.elapsed().as_secs_f64();
                    let call = match r {
                        Ok(inv) => Call {
                            status: Some(inv.status),
                            served: inv.succeeded(),
                            retry_after: inv.retry_after,
                            ms,
                            done_secs,
                        },
                        Err(_) => Call {
                            status: None,
                            served: false,
                            retry_after: None,
                            ms,
                            done_secs,
                        },
                    };
                    (s, h, call)
                });
            }
        }
    }
    let offered_secs = start.elapsed().as_secs_f64();
    let mut calls: Vec<Vec<Vec<Call>>> = running
        .iter()
        .map(|r| vec![Vec::new(); r.apis.len()])
        .collect();
    let mut lost = 0usize;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((s, h, call)) => calls[s][h].push(call),
            Err(_) => lost += 1,
        }
    }
    let redis_cpu = redis.stats()?.cpu_secs - redis_before.cpu_secs;

    let mut measured = Vec::new();
    for (s, (r, calls)) in running.iter().zip(calls).enumerate() {
        let after = r.ctl.counters().await?;
        let cpu = r
            .hosts
            .iter()
            .zip(&cpu_before[s])
            .map(|(h, b)| Ok(h.stats()?.cpu_secs - b.cpu_secs))
            .collect::<Result<Vec<f64>, BoxError>>()?;
        let span_secs = calls
            .iter()
            .flatten()
            .map(|c| c.done_secs)
            .fold(offered_secs, f64::max);
        measured.push(Measured {
            calls,
            cpu,
            span_secs,
            upstream: api_calls(&after).saturating_sub(api_calls(&before[s])),
            upstream_429: after.throttled.saturating_sub(before[s].throttled),
        });
    }

    let mut tenant = Table::new(&[
        "setup",
        "hosts",
        "offered",
        "served (200)",
        "503 with Retry-After",
        "other failures",
        "span s",
        "calls sent upstream",
        "tenant budget (windows)",
        "sent / budget",
        "upstream 429s",
    ])
    .with_caption("Per setup (the tenant's view):");
    for (setup, m) in SETUPS.iter().zip(&measured) {
        let offered = m.all().count();
        let served = m.all().filter(|c| c.served).count();
        let with_retry = m.all().filter(|c| c.with_retry()).count();
        tenant.row(vec![
            setup.label.into(),
            setup.hosts.to_string(),
            offered.to_string(),
            served.to_string(),
            with_retry.to_string(),
            (offered - served - with_retry).to_string(),
            num(m.span_secs, 1),
            m.upstream.to_string(),
            format!("{} ({})", m.budget(), m.windows()),
            format!("{:.0}%", 100.0 * m.upstream as f64 / m.budget() as f64),
            m.upstream_429.to_string(),
        ]);
    }

    let mut per_host = Table::new(&[
        "setup",
        "host",
        "offered",
        "offered/min",
        "served",
        "served/min",
        "503 with Retry-After",
        "p50 ms",
        "p99 ms",
        "p99 served ms",
        "host CPU s",
    ])
    .with_caption("Per host:");
    // (served/min, p99 ms) per host, for the ratios.
    let mut host_figures: Vec<Vec<(f64, f64)>> = Vec::new();
    for (setup, m) in SETUPS.iter().zip(&measured) {
        let mut figures = Vec::new();
        for (h, calls) in m.calls.iter().enumerate() {
            let per_min = |n: usize| {
                if m.span_secs > 0.0 {
                    n as f64 * 60.0 / m.span_secs
                } else {
                    0.0
                }
            };
            let served: Vec<&Call> = calls.iter().filter(|c| c.served).collect();
            let mut all: Vec<f64> = calls.iter().map(|c| c.ms).collect();
            all.sort_by(f64::total_cmp);
            let mut ok: Vec<f64> = served.iter().map(|c| c.ms).collect();
            ok.sort_by(f64::total_cmp);
            let p99 = percentile(&all, 99.0);
            figures.push((per_min(served.len()), p99));
            per_host.row(vec![
                setup.label.into(),
                (h + 1).to_string(),
                calls.len().to_string(),
                num(
                    calls.len() as f64 * 60.0 / offered_secs.max(f64::EPSILON),
                    0,
                ),
                served.len().to_string(),
                num(per_min(served.len()), 1),
                calls.iter().filter(|c| c.with_retry()).count().to_string(),
                num(percentile(&all, 50.0), 1),
                num(p99, 1),
                num(percentile(&ok, 99.0), 1),
                num(m.cpu.get(h).copied().unwrap_or(0.0), 2),
            ]);
        }
        host_figures.push(figures);
    }

    let (one_rate, one_p99) = host_figures[ONE_REDIS][0];
    let ratio = |x: f64, base: f64| {
        if base > 0.0 {
            format!("{:.2}×", x / base)
        } else {
            "—".into()
        }
    };
    let two = &host_figures[TWO];
    let two_rate: f64 = two.iter().map(|f| f.0).sum();
    let mut ratios = Table::new(&["two hosts / one host (Redis)", "host 1", "host 2", "both"])
        .with_caption("Ratios, two hosts over the one-host Redis baseline of the same run:");
    ratios.row(vec![
        "served per minute".into(),
        ratio(two[0].0, one_rate),
        ratio(two.get(1).map_or(0.0, |f| f.0), one_rate),
        ratio(two_rate, one_rate),
    ]);
    ratios.row(vec![
        "p99 latency (all calls)".into(),
        ratio(two[0].1, one_p99),
        ratio(two.get(1).map_or(0.0, |f| f.1), one_p99),
        "—".into(),
    ]);

    let two_m = &measured[TWO];
    let retry_values: Vec<u64> = two_m
        .all()
        .filter_map(|c| c.retry_after.as_deref()?.trim().parse().ok())
        .collect();
    let mut notes = vec![
        format!(
            "Tenant budget {PER_MINUTE}/min ({PER_HOUR}/h) per app registration and simulator \
             limit {PER_MINUTE}/min per app; every host is offered {count} `list_devices` calls \
             at {rate_per_min:.0}/min ({FACTOR}× the budget) over {offered_secs:.1} s, open \
             loop, all setups at the same moments, each setup on its own simulator. The two \
             Redis setups share one `redis-server` (no persistence) under their own key \
             prefixes; the hosts of a setup share its state key. `max_wait_secs` is the host's \
             default (30 s)."
        ),
        format!(
            "Calls sent upstream = the simulator's count of Defender API requests; the tenant \
             budget is {PER_MINUTE} × the rolling-minute windows the setup's span (first call \
             offered → last answer) covers, ⌊span / 60 s⌋ + 1. `list_devices` is a read, and \
             reads may use {READ_PER_MINUTE} of each window's {PER_MINUTE} (the host keeps a \
             tenth for state-changing calls). Served/min = served × 60 / span."
        ),
        format!("CPU of redis-server during the load: {redis_cpu:.2} s."),
    ];
    if let (Some(min), Some(max)) = (retry_values.iter().min(), retry_values.iter().max()) {
        notes.push(format!(
            "Retry-After sent by the two hosts: {min} s to {max} s."
        ));
    }
    if lost > 0 {
        notes.push(format!("{lost} calls were lost by the load generator."));
    }
    if options.two_hosts < Duration::from_secs(60) {
        notes.push(format!(
            "A per-minute budget starts full: a run shorter than a minute is one window, so \
             each setup can be served at most {READ_PER_MINUTE} reads in all whatever its \
             number of hosts, and served/min over-states the steady rate."
        ));
    }
    Ok(Section {
        title: String::new(),
        notes,
        tables: vec![tenant, per_host, ratios],
        targets: vec![
            Target::at_most_count(TARGETS[0].0, two_m.upstream_429, 0, "429"),
            Target::at_most(
                TARGETS[1].0,
                two_m.upstream as f64,
                two_m.budget() as f64,
                "calls",
                0,
            ),
        ],
        failed: false,
    })
}
