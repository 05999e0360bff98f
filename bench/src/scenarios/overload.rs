//! `overload`: offered load five times the asset's upstream budget. The asset's budget and the
//! simulator's rate limit are both 100 calls per minute; callers send `list_devices` (limit 1)
//! at 500 per minute, open loop (at a fixed rate whatever the answers), for the configured
//! time. Counted: the 429s the simulator returned to the host (target 0), the calls served,
//! those answered 503 with `Retry-After`, latency.
//!
//! Baseline, at the same time and the same rate: a naive connector calling the simulator
//! directly with a second app registration (the simulator limits each app separately), so it
//! meets the same 100/min limit without a budget of its own.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use super::{Options, Stack};
use crate::BoxError;
use crate::host_process::HostSpec;
use crate::load::{self, percentile};
use crate::report::{Section, Table, Target, num};
use crate::simctl;

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[("upstream 429s under 5× overload", "0 429")];

/// Calls per minute of the budget and of the simulator's limit.
const PER_MINUTE: u32 = 100;
/// Calls per minute of the budget that reads such as `list_devices` may use: the host keeps a
/// tenth of each window for state-changing calls.
const READ_PER_MINUTE: u32 = PER_MINUTE - PER_MINUTE / 10;
/// Offered load as a multiple of the budget.
const FACTOR: u32 = 5;
/// Timeout of one call (the host may wait for a permit up to its max_wait_secs, 30 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// One answered (or failed) call.
#[derive(Debug, Clone)]
struct Call {
    /// HTTP status (`None` when no answer came).
    status: Option<StatusCode>,
    /// The answer was a result: 200 from the API, or a success envelope from the host.
    served: bool,
    retry_after: Option<String>,
    ms: f64,
}

impl Call {
    /// A call that got no answer.
    fn lost(ms: f64) -> Call {
        Call {
            status: None,
            served: false,
            retry_after: None,
            ms,
        }
    }
}

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let client = load::client(64)?;
    let spec = HostSpec {
        per_minute: PER_MINUTE,
        per_hour: 1500,
        max_wait_secs: None,
        families: Vec::new(),
        log_level: options.host_log.clone(),
        ingestion: None,
        max_connections: None,
        shared_state: None,
    };
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits = Default::default();
            s.rate_limits.default.per_minute = PER_MINUTE;
            Ok(())
        },
        &spec,
    )
    .await?;
    let result = measure(&stack, options).await;
    stack.stop().await;
    result
}

async fn measure(stack: &Stack, options: &Options) -> Result<Section, BoxError> {
    let rate_per_min = f64::from(PER_MINUTE * FACTOR);
    let interval = Duration::from_secs_f64(60.0 / rate_per_min);
    let count = (options.overload.as_secs_f64() / interval.as_secs_f64()).round() as usize;
    let naive_app = simctl::app_creds(&stack.scenario, 1)?;
    let naive_token = stack.ctl.token(&naive_app).await?;
    let before = stack.ctl.counters().await?;

    let mut host_set: JoinSet<Call> = JoinSet::new();
    let mut naive_set: JoinSet<Call> = JoinSet::new();
    let list_url = stack.ctl.url("/api/machines?$top=1");
    let params = json!({"input_type": "All", "limit": 1});
    let start = Instant::now();
    for i in 0..count {
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        let api = stack.api.clone();
        let p = params.clone();
        host_set.spawn(async move {
            let t0 = Instant::now();
            let r = api.invoke("list_devices", &p, CALL_TIMEOUT).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            match r {
                Ok(inv) => Call {
                    status: Some(inv.status),
                    served: inv.succeeded(),
                    retry_after: inv.retry_after,
                    ms,
                },
                Err(_) => Call::lost(ms),
            }
        });
        let client = stack.ctl.client.clone();
        let url = list_url.clone();
        let token = naive_token.clone();
        naive_set.spawn(async move {
            let t0 = Instant::now();
            let r = client
                .get(&url)
                .bearer_auth(token)
                .timeout(CALL_TIMEOUT)
                .send()
                .await;
            match r {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let read = resp.bytes().await.is_ok();
                    Call {
                        status: Some(status),
                        served: read && status == StatusCode::OK,
                        retry_after,
                        ms: t0.elapsed().as_secs_f64() * 1000.0,
                    }
                }
                Err(_) => Call::lost(t0.elapsed().as_secs_f64() * 1000.0),
            }
        });
    }
    let offered_secs = start.elapsed().as_secs_f64();
    let host = join_all(&mut host_set).await;
    let naive = join_all(&mut naive_set).await;
    let after = stack.ctl.counters().await?;

    let naive_429 = naive
        .iter()
        .filter(|c| c.status == Some(StatusCode::TOO_MANY_REQUESTS))
        .count() as u64;
    let total_429 = after.throttled.saturating_sub(before.throttled);
    let host_429 = total_429.saturating_sub(naive_429);

    let mut table = Table::new(&[
        "path",
        "offered",
        "offered/min",
        "served (200)",
        "503 with Retry-After",
        "429 to the caller",
        "other failures",
        "upstream 429s",
        "p50 ms",
        "p99 ms",
        "p99 served ms",
    ]);
    let rate = |n: usize| {
        if offered_secs > 0.0 {
            n as f64 * 60.0 / offered_secs
        } else {
            0.0
        }
    };
    for (label, calls, upstream_429) in [
        ("host (budget 100/min)", &host, host_429),
        ("naive direct connector", &naive, naive_429),
    ] {
        let served: Vec<&Call> = calls.iter().filter(|c| c.served).collect();
        let with_retry = calls
            .iter()
            .filter(|c| {
                c.status == Some(StatusCode::SERVICE_UNAVAILABLE) && c.retry_after.is_some()
            })
            .count();
        let throttled = calls
            .iter()
            .filter(|c| c.status == Some(StatusCode::TOO_MANY_REQUESTS))
            .count();
        let other = calls.len() - served.len() - with_retry - throttled;
        let mut all: Vec<f64> = calls.iter().map(|c| c.ms).collect();
        all.sort_by(f64::total_cmp);
        let mut ok: Vec<f64> = served.iter().map(|c| c.ms).collect();
        ok.sort_by(f64::total_cmp);
        table.row(vec![
            label.into(),
            calls.len().to_string(),
            num(rate(calls.len()), 0),
            served.len().to_string(),
            with_retry.to_string(),
            throttled.to_string(),
            other.to_string(),
            upstream_429.to_string(),
            num(percentile(&all, 50.0), 1),
            num(percentile(&all, 99.0), 1),
            num(percentile(&ok, 99.0), 1),
        ]);
    }
    let retry_values: Vec<u64> = host
        .iter()
        .filter_map(|c| c.retry_after.as_deref()?.trim().parse().ok())
        .collect();
    let mut notes = vec![
        format!(
            "Asset budget {PER_MINUTE}/min (1500/h) and simulator limit {PER_MINUTE}/min per app; \
             {count} calls offered at {rate_per_min:.0}/min ({FACTOR}× the budget) over \
             {offered_secs:.1} s, open loop, to the host and, at the same moments, to the \
             simulator directly (second app). The host's `max_wait_secs` is its default (30 s)."
        ),
        format!(
            "Upstream 429s of the host = the simulator's 429 count ({total_429}) minus those the \
             naive connector received ({naive_429})."
        ),
    ];
    if let (Some(min), Some(max)) = (retry_values.iter().min(), retry_values.iter().max()) {
        notes.push(format!("Retry-After sent by the host: {min} s to {max} s."));
    }
    if options.overload < Duration::from_secs(60) {
        notes.push(format!(
            "A per-minute budget starts full: over {:.0} s, {FACTOR}× the rate offers {:.1}× the \
             minute's budget in total. `list_devices` is a read, and reads may use \
             {READ_PER_MINUTE} of the {PER_MINUTE} calls a minute (the host keeps a tenth for \
             state-changing calls): the host can serve {READ_PER_MINUTE} and refuse {}, the \
             naive connector meets the simulator's {PER_MINUTE}/min and has {} refused.",
            options.overload.as_secs_f64(),
            count as f64 / f64::from(PER_MINUTE),
            count.saturating_sub(READ_PER_MINUTE as usize),
            count.saturating_sub(PER_MINUTE as usize)
        ));
    }
    Ok(Section {
        title: String::new(),
        notes,
        tables: vec![table],
        targets: vec![Target::at_most_count(TARGETS[0].0, host_429, 0, "429")],
        failed: false,
    })
}

/// Waits for every call of a set.
async fn join_all(set: &mut JoinSet<Call>) -> Vec<Call> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        out.push(joined.unwrap_or(Call::lost(0.0)));
    }
    out
}
