//! `edge-load`: 64 callers run `get_status` (answered from the host's cache of final
//! statuses) first alone, then while 2,000 idle keep-alive connections and 200 slow-body
//! clients (one body byte every 500 ms) hold the host; the callers' p99 under load against
//! their unloaded p99 in the same run, and the host's open files against its limit.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::host_overhead::{Path, measure_run};
use super::{Options, Stack, instant_timings};
use crate::BoxError;
use crate::host_process::HostSpec;
use crate::load;
use crate::report::{Section, Table, Target, num};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[
    (
        "edge: callers' p99 under hostile load, × unloaded p99",
        "≤ 2.0×",
    ),
    (
        "edge: host open files under hostile load",
        "< max_connections",
    ),
];

/// Idle keep-alive connections.
const IDLE: usize = 2000;
/// Slow-body clients.
const SLOW: usize = 200;
/// The host's `max_connections`: above the hostile connections, so the callers' connections
/// are served; the cap itself bounds the host's files.
const MAX_CONNECTIONS: usize = 4096;

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let callers = options.concurrency;
    let client = load::client(callers + 8)?;
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.timings = instant_timings();
            s.rate_limits.disabled = true;
            Ok(())
        },
        &HostSpec {
            max_connections: Some(MAX_CONNECTIONS),
            ..HostSpec::unlimited(&options.host_log)
        },
    )
    .await?;
    let result = measure(&stack, options, &client).await;
    stack.stop().await;
    result
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn file_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The bench's own open-file limit (its soft limit), with a warning when below `need`.
fn own_file_limit(need: u64) -> u64 {
    let current = file_limit(std::process::id()).unwrap_or(0);
    if current < need {
        // The shell's `ulimit -n` decides; report what there is.
        eprintln!("edge-load: open-file limit {current} is below the {need} this scenario needs");
    }
    current
}

async fn measure(
    stack: &Stack,
    options: &Options,
    client: &reqwest::Client,
) -> Result<Section, BoxError> {
    let callers = options.concurrency;
    let need = (IDLE + SLOW + callers + 256) as u64;
    let own_limit = own_file_limit(need);
    if own_limit < need {
        return Err(format!(
            "the bench's open-file limit is {own_limit}, below the {need} it needs (raise `ulimit -n`)"
        )
        .into());
    }
    let token = stack.ctl.token(&stack.app).await?;
    let machines = crate::simctl::machine_ids(&stack.scenario);
    let mut ids = Vec::with_capacity(callers);
    for m in machines.iter().take(callers) {
        ids.push(stack.ctl.isolate(&token, m).await?);
    }
    let pid = stack.host.pid();
    let run = |d| {
        measure_run(
            stack,
            client,
            &token,
            &ids,
            Path::HostPerCaller,
            ids.len(),
            d,
        )
    };
    run(options.warmup).await?;
    let files_unloaded = open_files(pid);
    let unloaded = run(options.duration).await?;

    // The hostile load: idle keep-alive connections (one request sent, then nothing) and
    // slow-body clients (an authenticated POST announcing 1,000 bytes, one byte per 500 ms).
    let addr = stack.host.addr();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut s = TcpStream::connect(&addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await?;
        idle.push(s);
    }
    let auth = stack.api.auth_header().to_str()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(&addr).await?;
        let head = format!(
            "POST /assets/bench/actions/get_status HTTP/1.1\r\nHost: bench\r\n\
             Authorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        let mut stop = stop_rx.clone();
        slow.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => {
                        if s.write_all(b" ").await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let loaded = run(options.duration).await?;
    let files_loaded = open_files(pid);
    let _ = stop_tx.send(true);
    while slow.join_next().await.is_some() {}
    drop(idle);
    let limit = file_limit(pid).unwrap_or(0);

    let p99_unloaded = unloaded.load.percentile_ms(99.0);
    let p99_loaded = loaded.load.percentile_ms(99.0);
    let ratio = if p99_unloaded > 0.0 {
        p99_loaded / p99_unloaded
    } else {
        0.0
    };
    let mut table = Table::new(&[
        "run",
        "calls",
        "errors",
        "p50 ms",
        "p99 ms",
        "host open files",
    ]);
    for (label, r, files) in [
        ("unloaded", &unloaded, files_unloaded),
        ("2,000 idle + 200 slow-body clients", &loaded, files_loaded),
    ] {
        table.row(vec![
            label.into(),
            r.load.requests.to_string(),
            r.load.errors.to_string(),
            num(r.load.percentile_ms(50.0), 3),
            num(r.load.percentile_ms(99.0), 3),
            files.to_string(),
        ]);
    }
    Ok(Section {
        title: String::new(),
        notes: vec![format!(
            "{callers} callers, `get_status` of final actions (answered from the host's cache), \
             {:.1} s per run. The host runs with `max_connections` {MAX_CONNECTIONS} and the default \
             header (10 s), body (30 s) and keep-alive (60 s) timeouts. The host's open-file \
             limit is {limit}.",
            options.duration.as_secs_f64()
        )],
        tables: vec![table],
        targets: vec![
            Target::at_most(TARGETS[0].0, ratio, 2.0, "×", 2),
            Target::below(
                TARGETS[1].0,
                files_loaded as f64,
                MAX_CONNECTIONS as f64,
                "files",
                0,
            ),
        ],
        failed: false,
    })
}
