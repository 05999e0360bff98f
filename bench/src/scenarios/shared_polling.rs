//! `shared-polling`: many callers following a few machine actions that stay in flight (manual
//! timings in the simulator), and how many `GET /api/machineactions/{id}` reach the simulator
//! per second, against a naive connector that sends one GET per poll.
//!
//! Three ways of polling, each for the measured time: back to back (each caller sends its next
//! `get_status` as soon as the previous answer arrives), paced (each caller once per second),
//! and held (`get_status` with `wait`: the call is held by the host for the whole run). For
//! held calls the naive baseline is each held call polling on its own once per second (the
//! host's interval while a `get_status` wait is held).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use super::{Options, Stack};
use crate::BoxError;
use crate::host_process::{HostSpec, body_of};
use crate::load::{self, LoadResult, Pace, percentile};
use crate::report::{Section, Table, Target, num};
use crate::simctl::{self, route_count};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[(
    "shared polling: upstream GETs vs naive (back-to-back polls)",
    "≥ 10× fewer",
)];

/// The simulator route of a machine action read.
const ACTION_ROUTE: &str = "GET /api/machineactions/{id}";
/// Period of the paced callers.
const PACED: Duration = Duration::from_secs(1);
/// Poll interval of the naive baseline for held calls.
const HELD_NAIVE: Duration = Duration::from_secs(1);

/// One way of polling, measured.
struct Run {
    label: &'static str,
    polls: u64,
    errors: u64,
    secs: f64,
    upstream: u64,
    naive: f64,
    naive_note: &'static str,
    /// Whether calls per second mean anything (not for one held call per caller).
    paced_by_callers: bool,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let client = load::client(options.pollers + 8)?;
    let events = options.events;
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits.disabled = true;
            s.timings.manual = true;
            simctl::ensure_machines(s, events)
        },
        &HostSpec::unlimited(&options.host_log),
    )
    .await?;
    let result = measure(&stack, options).await;
    stack.stop().await;
    result
}

async fn measure(stack: &Stack, options: &Options) -> Result<Section, BoxError> {
    let callers = options.pollers;
    let token = stack.ctl.token(&stack.app).await?;
    let machines = simctl::machine_ids(&stack.scenario);
    let mut ids = Vec::with_capacity(options.events);
    for m in machines.iter().take(options.events) {
        ids.push(stack.ctl.isolate(&token, m).await?);
    }
    if ids.len() < options.events {
        return Err("not enough machines for the events".into());
    }
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| body_of(&json!({"event_id": id})))
        .collect();
    // Warm-up: the host's token and connections (not measured).
    closed_or_paced(stack, &bodies, callers, Pace::Closed, options.warmup).await?;

    let secs = options.duration.as_secs_f64();
    let mut runs = Vec::new();
    for (label, pace) in [
        ("back to back", Pace::Closed),
        ("once per second per caller", Pace::Every(PACED)),
    ] {
        let before = stack.ctl.counters().await?;
        let r = closed_or_paced(stack, &bodies, callers, pace, options.duration).await?;
        let after = stack.ctl.counters().await?;
        runs.push(Run {
            label,
            polls: r.requests,
            errors: r.errors,
            secs: r.elapsed.as_secs_f64(),
            upstream: route_count(&after, ACTION_ROUTE) - route_count(&before, ACTION_ROUTE),
            naive: r.requests as f64,
            naive_note: "one GET per poll",
            paced_by_callers: true,
            p50_ms: r.percentile_ms(50.0),
            p99_ms: r.percentile_ms(99.0),
        });
    }

    // Held: every caller holds one get_status with wait for the whole measured time.
    let wait = options.duration.as_secs().max(1);
    let before = stack.ctl.counters().await?;
    let mut set = JoinSet::new();
    let start = Instant::now();
    for i in 0..callers {
        let api = stack.api.clone();
        let id = ids[i % ids.len()].clone();
        set.spawn(async move {
            let t0 = Instant::now();
            let r = api
                .invoke(
                    "get_status",
                    &json!({"event_id": id, "wait": wait}),
                    Duration::from_secs(wait + 60),
                )
                .await;
            let ok = matches!(&r, Ok(inv) if inv.succeeded());
            (t0.elapsed().as_secs_f64() * 1000.0, ok)
        });
    }
    let mut lat = Vec::with_capacity(callers);
    let mut errors = 0u64;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((ms, ok)) => {
                lat.push(ms);
                if !ok {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
    }
    let held_secs = start.elapsed().as_secs_f64();
    let after = stack.ctl.counters().await?;
    lat.sort_by(f64::total_cmp);
    runs.push(Run {
        label: "held (get_status wait)",
        polls: callers as u64,
        errors,
        secs: held_secs,
        upstream: route_count(&after, ACTION_ROUTE) - route_count(&before, ACTION_ROUTE),
        naive: callers as f64 * held_secs / HELD_NAIVE.as_secs_f64(),
        naive_note: "each held call polling every 1 s",
        paced_by_callers: false,
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
    });

    let mut table = Table::new(&[
        "callers poll",
        "calls to the host",
        "calls/s",
        "upstream GETs",
        "upstream GET/s",
        "naive GET/s",
        "naive baseline",
        "fewer upstream GETs",
        "errors",
        "p50 ms",
        "p99 ms",
    ]);
    for r in &runs {
        let per_sec = |x: f64| if r.secs > 0.0 { x / r.secs } else { 0.0 };
        table.row(vec![
            r.label.into(),
            r.polls.to_string(),
            if r.paced_by_callers {
                num(per_sec(r.polls as f64), 0)
            } else {
                "—".into()
            },
            r.upstream.to_string(),
            num(per_sec(r.upstream as f64), 1),
            num(per_sec(r.naive), 0),
            r.naive_note.into(),
            factor(r.naive, r.upstream as f64),
            r.errors.to_string(),
            num(r.p50_ms, 2),
            num(r.p99_ms, 2),
        ]);
    }
    let back = &runs[0];
    let fewer = if back.upstream > 0 {
        back.naive / back.upstream as f64
    } else {
        back.naive
    };
    Ok(Section {
        title: String::new(),
        notes: vec![
            format!(
                "{callers} callers, caller i following event i mod {} ({} isolate actions kept \
                 Pending by manual timings), {secs:.1} s per way of polling; held calls use \
                 `wait` = {wait} s. Upstream GETs are the simulator's count of \
                 `GET /api/machineactions/{{id}}`. Simulator rate limits off, asset budget \
                 100,000/min.",
                ids.len(),
                ids.len(),
            ),
            "How many GETs a naive connector makes depends on how often its callers poll: the \
             host answers a status request from a check less than 500 ms old and holds one \
             poller per event, so its upstream rate stays near its own polling windows while \
             the naive rate grows with the callers. The target is judged on back-to-back polls."
                .to_string(),
        ],
        tables: vec![table],
        targets: vec![Target::at_least(TARGETS[0].0, fewer, 10.0, "×", 1)],
        failed: false,
    })
}

/// `naive / host` as `N×` (∞ when the host made none).
fn factor(naive: f64, host: f64) -> String {
    if host > 0.0 {
        format!("{:.1}×", naive / host)
    } else if naive > 0.0 {
        "∞".into()
    } else {
        "—".into()
    }
}

/// Callers sending `get_status` (wait 0) for their event, closed loop or paced.
async fn closed_or_paced(
    stack: &Stack,
    bodies: &[String],
    callers: usize,
    pace: Pace,
    duration: Duration,
) -> Result<LoadResult, BoxError> {
    let api = stack.api.clone();
    let bodies = bodies.to_vec();
    load::run(
        callers,
        duration,
        pace,
        move |i| api.request_body("get_status", bodies[i % bodies.len()].clone()),
        load::is_success_envelope,
    )
    .await
}
