//! `bulk`: isolating many devices in one `quarantine_devices` call against the same number of
//! `quarantine_device` calls made one after the other (what a playbook looping over devices
//! does), both through the host, on actions that take one second on the device. The
//! simulator's rate limits are off and the asset's budget is generous: this measures the
//! orchestration, not Defender's limits.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Options, Stack};
use crate::BoxError;
use crate::host_process::HostSpec;
use crate::load;
use crate::report::{Section, Table, Target, num, ratio};
use crate::simctl::{self, route_count};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[("bulk wall time vs sequential calls", "≥ 10× faster")];

/// The simulator route of an isolate.
const ISOLATE_ROUTE: &str = "POST /api/machines/{id}/isolate";
/// How long each action takes on the device (half Pending, half InProgress).
const ACTION_MS: u64 = 1000;

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let n = options.bulk_devices.max(1);
    let client = load::client(16)?;
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits.disabled = true;
            s.timings.pending_ms = ACTION_MS / 2;
            s.timings.in_progress_ms = ACTION_MS - ACTION_MS / 2;
            simctl::ensure_machines(s, 2 * n)
        },
        &HostSpec::unlimited(&options.host_log),
    )
    .await?;
    let result = measure(&stack, n).await;
    stack.stop().await;
    result
}

async fn measure(stack: &Stack, n: usize) -> Result<Section, BoxError> {
    let machines = simctl::machine_ids(&stack.scenario);
    let (bulk_devices, single_devices) = machines.split_at(n);
    let single_devices = &single_devices[..n];
    // The host's token first.
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

    // One call for n devices.
    let started = Instant::now();
    let bulk = stack
        .api
        .invoke(
            "quarantine_devices",
            &json!({
                "device_ids": bulk_devices.join(","),
                "type": "Full",
                "comment": "defender-bench bulk",
                "timeout": 60,
            }),
            Duration::from_secs(120),
        )
        .await?;
    let bulk_secs = started.elapsed().as_secs_f64();
    let bulk_ok = bulk
        .summary("succeeded")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let posts_after_bulk = route_count(&stack.ctl.counters().await?, ISOLATE_ROUTE);

    // n calls, one after the other.
    let started = Instant::now();
    let mut single_ok = 0usize;
    for device in single_devices {
        let inv = stack
            .api
            .invoke(
                "quarantine_device",
                &json!({
                    "device_id": device,
                    "type": "Full",
                    "comment": "defender-bench sequential",
                    "timeout": 60,
                }),
                Duration::from_secs(90),
            )
            .await?;
        if inv.succeeded() && inv.summary("quarantine_status").as_deref() == Some("Succeeded") {
            single_ok += 1;
        }
    }
    let single_secs = started.elapsed().as_secs_f64();
    let posts = route_count(&stack.ctl.counters().await?, ISOLATE_ROUTE);

    let mut table = Table::new(&[
        "path",
        "devices",
        "succeeded",
        "isolate POSTs",
        "wall s",
        "s per device",
    ]);
    table.row(vec![
        "`quarantine_devices`, one call".into(),
        n.to_string(),
        bulk_ok.to_string(),
        posts_after_bulk.to_string(),
        num(bulk_secs, 2),
        num(bulk_secs / n as f64, 3),
    ]);
    table.row(vec![
        "`quarantine_device`, sequential calls".into(),
        n.to_string(),
        single_ok.to_string(),
        (posts - posts_after_bulk).to_string(),
        num(single_secs, 2),
        num(single_secs / n as f64, 3),
    ]);
    let speedup = if bulk_secs > 0.0 {
        single_secs / bulk_secs
    } else {
        0.0
    };
    let mut notes = vec![format!(
        "{n} devices isolated by one `quarantine_devices` call (timeout 60) and {n} other \
         devices by `quarantine_device` calls made one after the other (each waits for its \
         final status), both through the host. Each isolate takes {:.1} s on the simulated \
         device; simulator rate limits off, asset budget 100,000/min. Sequential / bulk wall \
         time: {}.",
        ACTION_MS as f64 / 1000.0,
        ratio(single_secs, bulk_secs)
    )];
    if bulk_ok != n || single_ok != n {
        notes.push(format!(
            "not every isolate succeeded: bulk {bulk_ok}/{n}, sequential {single_ok}/{n} ({})",
            bulk.describe()
        ));
    }
    Ok(Section {
        title: String::new(),
        notes,
        tables: vec![table],
        targets: vec![Target::at_least(TARGETS[0].0, speedup, 10.0, "×", 1)],
        failed: false,
    })
}
