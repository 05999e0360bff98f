//! `token-coalescing`: a burst of concurrent actions (`list_devices` with limit 1) on an asset
//! that has no token yet, and how many tokens the host asks Entra for (simulator counter
//! `tokens_issued`). Baseline, measured in the same run: what a connector that runs one process
//! per action does: one token request, then the API call, per action (the process start-up
//! itself is not counted).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use super::{Options, Stack};
use crate::BoxError;
use crate::host_process::HostSpec;
use crate::load::{self, percentile};
use crate::report::{Section, Table, Target, num, ratio};
use crate::simctl::{self, route_count, tokens_issued};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[("tokens requested for a cold burst", "1 token")];

/// Timeout of one action of the burst.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The simulator route of a machine list.
const LIST_ROUTE: &str = "GET /api/machines";

/// What one burst measured.
struct Burst {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    tokens: u64,
    api_calls: u64,
    wall: Duration,
    latencies_ms: Vec<f64>,
}

/// Runs the scenario on its own simulator and a cold host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let n = options.burst;
    let client = load::client(n + 8)?;
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits.disabled = true;
            Ok(())
        },
        &HostSpec::unlimited(&options.host_log),
    )
    .await?;
    let result = measure(&stack, n).await;
    stack.stop().await;
    result
}

async fn measure(stack: &Stack, n: usize) -> Result<Section, BoxError> {
    let before = stack.ctl.counters().await?;
    if tokens_issued(&before) != 0 {
        return Err("the simulator issued tokens before the burst: the asset is not cold".into());
    }

    // The host: n concurrent list_devices on the cold asset.
    let params = json!({"input_type": "All", "limit": 1});
    let mut set = JoinSet::new();
    let start = Instant::now();
    for _ in 0..n {
        let api = stack.api.clone();
        let params = params.clone();
        set.spawn(async move {
            let t0 = Instant::now();
            let r = api.invoke("list_devices", &params, CALL_TIMEOUT).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            match r {
                Ok(inv) if inv.succeeded() => (ms, None),
                Ok(inv) => (ms, Some(inv.describe())),
                Err(e) => (ms, Some(e.to_string())),
            }
        });
    }
    let mut host = collect(&mut set, start).await;
    let mid = stack.ctl.counters().await?;
    host.tokens = tokens_issued(&mid) - tokens_issued(&before);
    host.api_calls = route_count(&mid, LIST_ROUTE) - route_count(&before, LIST_ROUTE);

    // The baseline: one token request per action, then the same API call.
    let list_url = stack.ctl.url("/api/machines?$top=1");
    let mut set = JoinSet::new();
    let start = Instant::now();
    for _ in 0..n {
        let ctl = stack.ctl.clone();
        let app = stack.app.clone();
        let url = list_url.clone();
        set.spawn(async move {
            let t0 = Instant::now();
            let r: Result<(), String> = async {
                let token = ctl.token(&app).await.map_err(|e| e.to_string())?;
                let resp = ctl
                    .client
                    .get(&url)
                    .bearer_auth(token)
                    .timeout(CALL_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                simctl::ok_json(resp).await.map_err(|e| e.to_string())?;
                Ok(())
            }
            .await;
            (t0.elapsed().as_secs_f64() * 1000.0, r.err())
        });
    }
    let mut base = collect(&mut set, start).await;
    let after = stack.ctl.counters().await?;
    base.tokens = tokens_issued(&after) - tokens_issued(&mid);
    base.api_calls = route_count(&after, LIST_ROUTE) - route_count(&mid, LIST_ROUTE);

    let mut table = Table::new(&[
        "path",
        "actions",
        "succeeded",
        "failed",
        "tokens requested",
        "API calls",
        "burst wall time s",
        "p50 ms",
        "p99 ms",
    ]);
    for (label, b) in [
        ("host, cold asset", &host),
        ("baseline: one token per action", &base),
    ] {
        let mut lat = b.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        table.row(vec![
            label.into(),
            n.to_string(),
            b.ok.to_string(),
            b.failed.to_string(),
            b.tokens.to_string(),
            b.api_calls.to_string(),
            num(b.wall.as_secs_f64(), 2),
            num(percentile(&lat, 50.0), 1),
            num(percentile(&lat, 99.0), 1),
        ]);
    }
    let mut notes = vec![
        format!(
            "{n} `list_devices` (limit 1) sent at once to a host that has just started and holds \
             no token; then, against the same simulator, {n} concurrent \"per-process \
             connector\" actions that each request a token and make the same API call. \
             Simulator rate limits off, asset budget 100,000/min."
        ),
        format!(
            "Tokens requested, baseline / host: {}.",
            ratio(base.tokens as f64, host.tokens as f64)
        ),
    ];
    for (label, b) in [("host", &host), ("baseline", &base)] {
        if let Some(e) = &b.first_error {
            notes.push(format!("First {label} failure: {e}"));
        }
    }
    Ok(Section {
        title: String::new(),
        notes,
        tables: vec![table],
        targets: vec![Target::at_most_count(TARGETS[0].0, host.tokens, 1, "token")],
        failed: false,
    })
}

/// Waits for every task of a burst.
async fn collect(set: &mut JoinSet<(f64, Option<String>)>, start: Instant) -> Burst {
    let mut b = Burst {
        ok: 0,
        failed: 0,
        first_error: None,
        tokens: 0,
        api_calls: 0,
        wall: Duration::ZERO,
        latencies_ms: Vec::new(),
    };
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((ms, None)) => {
                b.ok += 1;
                b.latencies_ms.push(ms);
            }
            Ok((ms, Some(e))) => {
                b.failed += 1;
                b.latencies_ms.push(ms);
                b.first_error.get_or_insert(e);
            }
            Err(e) => {
                b.failed += 1;
                b.first_error.get_or_insert(e.to_string());
            }
        }
    }
    b.wall = start.elapsed();
    b
}
