//! `large-file`: `get_file` of a generated device file (1 GiB by default) through the host,
//! its throughput and the host's peak memory while it runs (VmRSS sampled every 50 ms, and
//! VmHWM). Baseline: the bench downloads the same result link itself (a fresh link for the
//! host's event id) and discards the bytes.
//!
//! The host's path is the whole action: the live response request, the wait for it to succeed
//! (the simulator's timings are 0), a fresh download link, and the download streamed through
//! gunzip and SHA-256/SHA-1 into the vault on disk.

use std::time::{Duration, Instant};

use defender_sim::scenario::DeviceFile;
use serde_json::json;

use super::{Options, Stack, cpu_percent, instant_timings};
use crate::BoxError;
use crate::host_process::HostSpec;
use crate::load;
use crate::process::RssSampler;
use crate::report::{Section, Table, Target, mib, num, ratio};
use crate::simctl;

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[("host peak RSS during the get_file", "< 64 MiB")];

/// The file's path on the device.
const FILE_PATH: &str = "C:\\Temp\\huge.bin";
/// The `timeout` parameter of get_file.
const ACTION_TIMEOUT_SECS: u64 = 600;
/// How often the host's VmRSS is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Peak RSS limit, in MiB.
const RSS_LIMIT_MIB: f64 = 64.0;

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let client = load::client(8)?;
    let bytes = options.file_bytes;
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits.disabled = true;
            s.timings = instant_timings();
            let machine = simctl::machine_ids(s)
                .into_iter()
                .next()
                .ok_or("the scenario has no machine")?;
            s.device_files.entry(machine).or_default().push(DeviceFile {
                path: FILE_PATH.to_string(),
                content: None,
                content_base64: None,
                size: Some(bytes),
                zeros: false,
            });
            Ok(())
        },
        &HostSpec::unlimited(&options.host_log),
    )
    .await?;
    let result = measure(&stack, bytes).await;
    stack.stop().await;
    result
}

async fn measure(stack: &Stack, bytes: u64) -> Result<Section, BoxError> {
    let size_label = size_label(bytes);
    let known = stack.api.action_ids().await?;
    if !known.iter().any(|a| a == "get_file") {
        return Ok(skipped("`GET /actions` does not list it"));
    }
    let machine = simctl::machine_ids(&stack.scenario)
        .into_iter()
        .next()
        .ok_or("the scenario has no machine")?;
    let pid = stack.host.pid();
    let before = stack.host.stats()?;
    let sampler = RssSampler::start(
        pid,
        SAMPLE_EVERY,
        Duration::from_secs(ACTION_TIMEOUT_SECS + 60),
    );
    let t0 = Instant::now();
    let inv = stack
        .api
        .invoke(
            "get_file",
            &json!({
                "device_id": machine,
                "file_path": FILE_PATH,
                "comment": "defender-bench large file",
                "timeout": ACTION_TIMEOUT_SECS,
            }),
            Duration::from_secs(ACTION_TIMEOUT_SECS + 60),
        )
        .await;
    let host_secs = t0.elapsed().as_secs_f64();
    let (sampled_max, samples) = sampler.finish().await;
    let inv = inv?;
    let after = stack.host.stats()?;
    let message = inv.envelope["message"].as_str().unwrap_or_default();
    if inv.status == reqwest::StatusCode::NOT_FOUND || message.contains("no handler") {
        return Ok(skipped(&format!("the host answered {}", inv.describe())));
    }
    if !inv.succeeded() {
        return Err(format!("get_file failed: {}", inv.describe()).into());
    }
    let vault_id = inv
        .summary("vault_id")
        .ok_or("no vault_id in the summary")?;
    let event_id = inv
        .summary("event_id")
        .ok_or("no event_id in the summary")?;
    let stored = stored_size(stack, &vault_id).await;
    if let Some(s) = stored
        && s != bytes
    {
        return Err(format!("the vault holds {s} bytes, expected {bytes}").into());
    }

    // Baseline: the same result downloaded by the bench.
    let token = stack.ctl.token(&stack.app).await?;
    let link = stack.ctl.result_link(&token, &event_id).await?;
    let t0 = Instant::now();
    let mut resp = stack
        .ctl
        .client
        .get(&link)
        .timeout(Duration::from_secs(ACTION_TIMEOUT_SECS))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("the direct download answered {}", resp.status()).into());
    }
    let mut downloaded = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        downloaded += chunk.len() as u64;
    }
    let direct_secs = t0.elapsed().as_secs_f64();

    let mbps = |n: u64, secs: f64| {
        if secs > 0.0 {
            n as f64 / 1e6 / secs
        } else {
            0.0
        }
    };
    let host_mbps = mbps(bytes, host_secs);
    let direct_mbps = mbps(downloaded, direct_secs);
    let peak_kib = sampled_max.max(after.max_rss_kib);
    let mut table = Table::new(&[
        "path",
        "bytes",
        "time s",
        "MB/s",
        "vs direct",
        "host peak VmRSS MiB (sampled)",
        "host VmHWM MiB",
        "host CPU s",
        "host CPU %",
    ]);
    table.row(vec![
        "host get_file → vault".into(),
        bytes.to_string(),
        num(host_secs, 2),
        num(host_mbps, 0),
        ratio(host_mbps, direct_mbps),
        mib(sampled_max),
        mib(after.max_rss_kib),
        num(after.cpu_secs - before.cpu_secs, 2),
        num(cpu_percent(after.cpu_secs - before.cpu_secs, host_secs), 0),
    ]);
    table.row(vec![
        "baseline: direct download of the link".into(),
        downloaded.to_string(),
        num(direct_secs, 2),
        num(direct_mbps, 0),
        "baseline".into(),
        "—".into(),
        "—".into(),
        "—".into(),
        "—".into(),
    ]);
    Ok(Section {
        title: String::new(),
        notes: vec![
            format!(
                "A {size_label} generated file on a device (`{FILE_PATH}`); the simulator serves \
                 it gzip-wrapped (stored blocks). Simulator timings 0, rate limits off. The host \
                 time covers the whole action; the baseline only reads the bytes of a fresh \
                 link for the host's event id and throws them away. MB = 10^6 bytes."
            ),
            format!(
                "Host memory before the action: VmRSS {} MiB, VmHWM {} MiB; {samples} VmRSS \
                 samples taken during it. Vault copy {}.",
                mib(before.rss_kib),
                mib(before.max_rss_kib),
                match stored {
                    Some(s) => format!("checked: {s} bytes"),
                    None => "size not reported by /vault/{id}/info".into(),
                }
            ),
        ],
        tables: vec![table],
        targets: vec![Target::below(
            &format!("host peak RSS during a {size_label} get_file"),
            peak_kib as f64 / 1024.0,
            RSS_LIMIT_MIB,
            "MiB",
            1,
        )],
        failed: false,
    })
}

/// The section when this build of the host cannot run `get_file`.
fn skipped(why: &str) -> Section {
    Section {
        title: String::new(),
        notes: vec![format!(
            "**skipped**: this build of the host has no working `get_file` action ({why}); \
             rebuild once live response has landed."
        )],
        tables: Vec::new(),
        targets: vec![Target::not_measured(
            TARGETS[0].0,
            TARGETS[0].1,
            "skipped: get_file is not available in this build",
        )],
        failed: false,
    }
}

/// The size the vault reports for `vault_id`, when it does.
async fn stored_size(stack: &Stack, vault_id: &str) -> Option<u64> {
    let resp = stack
        .api
        .get(&format!("/vault/{vault_id}/info"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    let v = simctl::ok_json(resp).await.ok()?;
    v["size"].as_u64().or_else(|| v["data"]["size"].as_u64())
}

/// `1 GiB`, `256 MiB` or a byte count.
fn size_label(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= 1024 * MIB && bytes.is_multiple_of(1024 * MIB) {
        format!("{} GiB", bytes / (1024 * MIB))
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} B")
    }
}
