//! `completion-lag`: the time between the simulator finalising an isolate and the host
//! answering `quarantine_device` (timeout 60), for actions that take 0.2 s, 1 s and 3 s,
//! beside a fixed 5 s poller (what peers do: submit, sleep 5 s, check, repeat) measured in the
//! same run against the simulator directly.
//!
//! The final moment is the action's `lastUpdateDateTimeUtc` read from the simulator after the
//! answer (the simulator's clock is the wall clock: nothing advances it here). Each action runs
//! on its own device (one pending isolate per device). The three durations overlap: timings are
//! set, a batch is submitted, and the next timings are set only once the simulator has counted
//! the batch's isolate requests (timings apply to actions created afterwards).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Options, Stack};
use crate::BoxError;
use crate::host_process::HostSpec;
use crate::load::{self, percentile_f64};
use crate::report::{Section, Table, Target, num, ratio};
use crate::simctl::{self, SimControl, now_ms, parse_utc_ms, route_count};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[
    ("completion lag median, 0.2 s actions", "< 0.5 s"),
    ("completion lag median, 1 s actions", "< 0.5 s"),
    ("completion lag median, 3 s actions", "< 0.5 s"),
];

/// How long the actions take, in milliseconds.
const DURATIONS_MS: [u64; 3] = [200, 1000, 3000];
/// Poll interval of the baseline.
const BASELINE_POLL: Duration = Duration::from_secs(5);
/// Polls the baseline makes at most.
const BASELINE_MAX_POLLS: u32 = 20;
/// The `timeout` parameter of `quarantine_device`.
const ACTION_TIMEOUT_SECS: u64 = 60;
/// The simulator route of an isolate.
const ISOLATE_ROUTE: &str = "POST /api/machines/{id}/isolate";
/// How long to wait for a batch's isolate requests to reach the simulator.
const BATCH_SUBMIT_WAIT: Duration = Duration::from_secs(30);

/// Which side measured a lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Host,
    Poller,
}

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let per_side = options.lag_runs.max(1);
    let machines = DURATIONS_MS.len() * 2 * per_side;
    let client = load::client(machines + 8)?;
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits.disabled = true;
            simctl::ensure_machines(s, machines)
        },
        &HostSpec::unlimited(&options.host_log),
    )
    .await?;
    let result = measure(&stack, per_side).await;
    stack.stop().await;
    result
}

async fn measure(stack: &Stack, per_side: usize) -> Result<Section, BoxError> {
    let token = stack.ctl.token(&stack.app).await?;
    let machines = simctl::machine_ids(&stack.scenario);
    // The host's token first, so the first batch does not include its fetch.
    let warm = stack
        .api
        .invoke(
            "list_devices",
            &json!({"limit": 1}),
            Duration::from_secs(30),
        )
        .await?;
    if !warm.succeeded() {
        return Err(format!("warm-up list_devices failed: {}", warm.describe()).into());
    }
    let mut posts = route_count(&stack.ctl.counters().await?, ISOLATE_ROUTE);
    let mut set: JoinSet<(usize, Side, Result<f64, String>)> = JoinSet::new();
    let mut next_machine = 0usize;
    let started = Instant::now();
    for (di, &ms) in DURATIONS_MS.iter().enumerate() {
        stack
            .ctl
            .put_timings(&json!({"pending_ms": ms / 2, "in_progress_ms": ms - ms / 2}))
            .await?;
        for _ in 0..per_side {
            let device = machines[next_machine].clone();
            next_machine += 1;
            let api = stack.api.clone();
            let ctl = stack.ctl.clone();
            let host_token = token.clone();
            set.spawn(async move {
                let r = host_lag(&api, &ctl, &host_token, &device).await;
                (di, Side::Host, r.map_err(|e| e.to_string()))
            });
            let device = machines[next_machine].clone();
            next_machine += 1;
            let ctl = stack.ctl.clone();
            let poller_token = token.clone();
            set.spawn(async move {
                let r = poller_lag(&ctl, &poller_token, &device).await;
                (di, Side::Poller, r.map_err(|e| e.to_string()))
            });
        }
        posts += 2 * per_side as u64;
        let deadline = Instant::now() + BATCH_SUBMIT_WAIT;
        loop {
            if route_count(&stack.ctl.counters().await?, ISOLATE_ROUTE) >= posts {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the isolate requests of the {ms} ms batch did not reach the simulator in {} s",
                    BATCH_SUBMIT_WAIT.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut lags: Vec<[Vec<f64>; 2]> = DURATIONS_MS.iter().map(|_| [vec![], vec![]]).collect();
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((di, side, Ok(lag))) => lags[di][side as usize].push(lag),
            Ok((di, side, Err(e))) => {
                errors.push(format!("{} ms, {side:?}: {e}", DURATIONS_MS[di]))
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let wall = started.elapsed().as_secs_f64();

    let mut table = Table::new(&[
        "action takes",
        "runs (host / poller)",
        "host median s",
        "host p90 s",
        "host max s",
        "5 s poller median s",
        "5 s poller p90 s",
        "poller / host (median)",
    ]);
    let mut targets = Vec::new();
    for (di, &ms) in DURATIONS_MS.iter().enumerate() {
        let [host, poller] = &lags[di];
        let hm = percentile_f64(host, 50.0);
        let pm = percentile_f64(poller, 50.0);
        table.row(vec![
            format!("{:.1} s", ms as f64 / 1000.0),
            format!("{} / {}", host.len(), poller.len()),
            num(hm, 3),
            num(percentile_f64(host, 90.0), 3),
            num(percentile_f64(host, 100.0), 3),
            num(pm, 3),
            num(percentile_f64(poller, 90.0), 3),
            ratio(pm, hm),
        ]);
        if host.is_empty() {
            targets.push(Target::not_measured(
                TARGETS[di].0,
                TARGETS[di].1,
                "no host run succeeded",
            ));
        } else {
            targets.push(Target::below(TARGETS[di].0, hm, 0.5, "s", 3));
        }
    }
    let mut notes = vec![
        format!(
            "{per_side} isolates per duration through the host (`quarantine_device`, type Full, \
             timeout {ACTION_TIMEOUT_SECS}) and {per_side} submitted directly and checked every \
             {} s, each on its own device; the three batches overlap ({wall:.1} s in all). \
             Lag = moment the answer was read (host) or the final status was seen (poller) − \
             the action's `lastUpdateDateTimeUtc`. Half of each duration is Pending, half \
             InProgress. Simulator rate limits off, asset budget 100,000/min.",
            BASELINE_POLL.as_secs()
        ),
        "The host checks 250 ms after submitting, then at intervals growing ×1.5 toward 5 s; \
         the lag is the time from the final moment to the next check plus one round trip."
            .to_string(),
    ];
    if !errors.is_empty() {
        notes.push(format!(
            "{} runs failed; first: {}",
            errors.len(),
            errors[0]
        ));
    }
    Ok(Section {
        title: String::new(),
        notes,
        tables: vec![table],
        targets,
        failed: false,
    })
}

/// `quarantine_device` through the host; the lag between the action's final moment and the
/// answer, in seconds.
async fn host_lag(
    api: &crate::host_process::HostClient,
    ctl: &SimControl,
    token: &str,
    device: &str,
) -> Result<f64, BoxError> {
    let inv = api
        .invoke(
            "quarantine_device",
            &json!({
                "device_id": device,
                "type": "Full",
                "comment": "defender-bench completion lag",
                "timeout": ACTION_TIMEOUT_SECS,
            }),
            Duration::from_secs(ACTION_TIMEOUT_SECS + 30),
        )
        .await?;
    let answered = now_ms();
    if !inv.succeeded() {
        return Err(inv.describe().into());
    }
    let status = inv.summary("quarantine_status").unwrap_or_default();
    if status != "Succeeded" {
        return Err(format!("the host answered with status {status}, not Succeeded").into());
    }
    let id = inv
        .summary("event_id")
        .ok_or("no event_id in the summary")?;
    let action = ctl.action(token, &id).await?;
    let final_ms = final_moment(&action)?;
    Ok((answered - final_ms) as f64 / 1000.0)
}

/// The baseline: isolate directly, then check every 5 s until final; the lag between the
/// final moment and the check that saw it, in seconds.
async fn poller_lag(ctl: &SimControl, token: &str, device: &str) -> Result<f64, BoxError> {
    let id = ctl.isolate(token, device).await?;
    for _ in 0..BASELINE_MAX_POLLS {
        tokio::time::sleep(BASELINE_POLL).await;
        let action = ctl.action(token, &id).await?;
        let seen = now_ms();
        if matches!(
            action["status"].as_str(),
            Some("Succeeded" | "Failed" | "TimeOut" | "Cancelled")
        ) {
            return Ok((seen - final_moment(&action)?) as f64 / 1000.0);
        }
    }
    Err(format!("action {id} was not final after {BASELINE_MAX_POLLS} polls").into())
}

/// `lastUpdateDateTimeUtc` of a final MachineAction, in unix milliseconds.
fn final_moment(action: &Value) -> Result<i64, BoxError> {
    let text = action["lastUpdateDateTimeUtc"]
        .as_str()
        .ok_or("the action has no lastUpdateDateTimeUtc")?;
    parse_utc_ms(text).ok_or_else(|| format!("unreadable time {text}").into())
}
