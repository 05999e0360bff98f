//! `ingestion`: alert ingestion through the host's poller and its pull feed.
//!
//! Part 1, lag: the host ingests the simulator's Graph alerts every 10 s while the bench creates
//! alerts at a steady rate (`POST /_sim/alerts`, one alert per request) and a consumer reads
//! `GET /assets/bench/alerts/feed` every 150 ms, following `next_cursor`. Lag per alert = the
//! moment the consumer read its event − the alert's `createdDateTime` in the event (the
//! simulator's clock is the wall clock here: nothing advances it, and the run checks that each
//! creation time falls inside the bench's create request). Baseline in the same run: a
//! Splunk-style scheduler invoking the host's `on_poll` every 10 s with `start_time` = the
//! newest `alertCreationTime` it has received (Splunk's `last_time` state), its lag measured
//! the same way (answer received − creation), and the alerts it missed or delivered again.
//!
//! Part 2, backlog: 10,000 alerts are created before the host starts; the host's first poll
//! reaches back an hour. Measured: the time from the host's exec until the feed holds all
//! 10,000 (alerts/s), the host's peak memory (VmRSS sampled every 50 ms, and VmHWM) and that
//! every alert is in the feed exactly once (read again after one more poll).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Options, Stack};
use crate::BoxError;
use crate::host_process::{ASSET, HostClient, HostProcess, HostSpec, IngestionSpec};
use crate::load::{self, percentile_f64};
use crate::process::RssSampler;
use crate::report::{Section, Table, Target, mib, num, ratio};
use crate::sim_process::SimProcess;
use crate::simctl::{self, SimControl, now_ms, parse_utc_ms};

/// Targets of this scenario (name, goal).
pub const TARGETS: &[(&str, &str)] = &[
    (
        "ingestion lag median, interval 10 s (interval / 2 + 1 s)",
        "≤ 6.00 s",
    ),
    (
        "ingestion lag run: alerts missing or repeated in the feed",
        "0 alerts",
    ),
    (
        "ingestion backlog of 10,000: alerts missing or repeated in the feed",
        "0 alerts",
    ),
];

/// `interval_secs` of the host's poller and the baseline's schedule.
const INTERVAL_SECS: u64 = 10;
/// Alerts the bench creates per second in the lag run (one request each).
const ALERTS_PER_SEC: u64 = 3;
/// How often the consumer reads the feed when it has caught up.
const FEED_EVERY: Duration = Duration::from_millis(150);
/// Events per feed page.
const FEED_LIMIT: usize = 1000;
/// Alerts created before the host starts in the backlog run.
const BACKLOG: usize = 10_000;
/// `max_per_poll` of both runs (the host's default).
const MAX_PER_POLL: u32 = 1000;
/// How long the backlog may take to reach the feed.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(300);
/// How often the host's VmRSS is read during the backlog.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Timeout of one feed read or one `on_poll`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs both parts, each on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let client = load::client(8)?;
    let lag = lag_run(options, &client).await?;
    let backlog = backlog_run(options, &client).await?;
    Ok(section(&lag, &backlog))
}

// --- part 1: lag -----------------------------------------------------------------------------

/// When the bench created one alert: wall clock before sending and after the answer (ms).
#[derive(Debug, Clone, Copy)]
struct Created {
    sent_ms: i64,
    answered_ms: i64,
}

/// The deliveries of one side, by alert id.
#[derive(Debug, Default)]
struct Deliveries {
    /// Lag of the first delivery of each alert, in seconds.
    first_lag: HashMap<String, f64>,
    /// Deliveries of an alert already delivered.
    repeated: u64,
    /// Creation times (ms) as delivered, for the clock check.
    created_ms: HashMap<String, i64>,
    /// Events or containers of alerts the bench did not create.
    other: u64,
    /// Failed reads or polls, and the first error.
    errors: u64,
    first_error: Option<String>,
}

impl Deliveries {
    /// Records one delivery of alert `id` created at `created_ms`, read at `read_ms`.
    fn record(&mut self, id: &str, created_ms: Option<i64>, read_ms: i64, ours: bool) {
        if !ours {
            self.other += 1;
            return;
        }
        if self.first_lag.contains_key(id) {
            self.repeated += 1;
            return;
        }
        let lag = created_ms.map_or(f64::NAN, |c| (read_ms - c) as f64 / 1000.0);
        self.first_lag.insert(id.to_string(), lag);
        if let Some(c) = created_ms {
            self.created_ms.insert(id.to_string(), c);
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn lags(&self) -> Vec<f64> {
        self.first_lag.values().copied().collect()
    }
}

/// What the lag run measured.
struct LagResult {
    created: HashMap<String, Created>,
    feed: Deliveries,
    on_poll: Deliveries,
    on_poll_calls: u64,
    creating_secs: f64,
    wall_secs: f64,
    create_errors: u64,
}

async fn lag_run(options: &Options, client: &reqwest::Client) -> Result<LagResult, BoxError> {
    let spec = HostSpec {
        ingestion: Some(IngestionSpec {
            source: "graph",
            interval_secs: INTERVAL_SECS,
            first_run_lookback: "1m",
            max_per_poll: MAX_PER_POLL,
        }),
        ..HostSpec::unlimited(&options.host_log)
    };
    let stack = Stack::start(
        options,
        client,
        |s| {
            s.rate_limits.disabled = true;
            Ok(())
        },
        &spec,
    )
    .await?;
    let result = measure_lag(&stack, options.ingestion).await;
    stack.stop().await;
    result
}

async fn measure_lag(stack: &Stack, creating: Duration) -> Result<LagResult, BoxError> {
    let created: Arc<Mutex<HashMap<String, Created>>> = Arc::default();
    let feed: Arc<Mutex<Deliveries>> = Arc::default();
    let on_poll: Arc<Mutex<Deliveries>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let started_ms = now_ms();

    // The consumer: reads the feed from the start, following next_cursor.
    let consumer = {
        let (api, created, feed, stop) = (
            stack.api.clone(),
            created.clone(),
            feed.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut cursor = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match read_feed(&api, cursor).await {
                    Ok((events, next, read_ms)) => {
                        let full = events.len() >= FEED_LIMIT;
                        let known = lock(&created);
                        let mut seen = lock(&feed);
                        for e in &events {
                            let alert = &e["alert"];
                            let id = alert["id"].as_str().unwrap_or_default();
                            let at = alert["createdDateTime"].as_str().and_then(parse_utc_ms);
                            seen.record(id, at, read_ms, known.contains_key(id));
                        }
                        drop((known, seen));
                        cursor = next;
                        if full {
                            continue;
                        }
                    }
                    Err(e) => lock(&feed).error(e.to_string()),
                }
                tokio::time::sleep(FEED_EVERY).await;
            }
        })
    };

    // The baseline: on_poll every interval, start_time = the newest creation time received.
    let baseline = {
        let (api, created, on_poll, stop) = (
            stack.api.clone(),
            created.clone(),
            on_poll.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut start_time =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(started_ms) * 1_000_000)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
            let mut calls = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(INTERVAL_SECS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wait_for(&stop) => break,
                }
                calls += 1;
                match scheduled_poll(&api, &start_time).await {
                    Ok((containers, read_ms)) => {
                        let known = lock(&created);
                        let mut seen = lock(&on_poll);
                        let mut newest: Option<(i64, String)> = None;
                        for c in &containers {
                            let id = c["source_data_identifier"].as_str().unwrap_or_default();
                            let raw = c["start_time"].as_str().unwrap_or_default();
                            let at = parse_utc_ms(raw);
                            seen.record(id, at, read_ms, known.contains_key(id));
                            if let Some(at) = at
                                && newest.as_ref().is_none_or(|(n, _)| at > *n)
                            {
                                newest = Some((at, raw.to_string()));
                            }
                        }
                        if let Some((_, raw)) = newest {
                            start_time = raw;
                        }
                    }
                    Err(e) => lock(&on_poll).error(e.to_string()),
                }
            }
            calls
        })
    };

    // The producer: ALERTS_PER_SEC alerts a second, one per request, for `creating`.
    let total = (creating.as_secs_f64() * ALERTS_PER_SEC as f64)
        .round()
        .max(1.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ALERTS_PER_SEC as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut create_errors = 0u64;
    for _ in 0..total {
        tick.tick().await;
        let sent_ms = now_ms();
        match stack.ctl.create_alerts(1).await {
            Ok(ids) => {
                let answered_ms = now_ms();
                let mut known = lock(&created);
                for id in ids {
                    known.insert(
                        id,
                        Created {
                            sent_ms,
                            answered_ms,
                        },
                    );
                }
            }
            Err(_) => create_errors += 1,
        }
    }
    let creating_secs = started.elapsed().as_secs_f64();

    // Drain: both sides get up to two intervals (and 5 s) to deliver every alert.
    let deadline = Instant::now() + Duration::from_secs(2 * INTERVAL_SECS + 5);
    loop {
        let all = {
            let known = lock(&created);
            let delivered_all =
                |d: &Deliveries| known.keys().all(|id| d.first_lag.contains_key(id));
            delivered_all(&lock(&feed)) && delivered_all(&lock(&on_poll))
        };
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = consumer.await;
    let on_poll_calls = baseline.await.unwrap_or(0);
    let wall_secs = started.elapsed().as_secs_f64();
    let created = std::mem::take(&mut *lock(&created));
    let feed = std::mem::take(&mut *lock(&feed));
    let on_poll = std::mem::take(&mut *lock(&on_poll));
    Ok(LagResult {
        created,
        feed,
        on_poll,
        on_poll_calls,
        creating_secs,
        wall_secs,
        create_errors,
    })
}

/// Resolves once `flag` is set (checked every 50 ms).
async fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mutex's value (a poisoned lock still holds usable counts).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One feed page after `cursor`: the events, the next cursor and when the page was read (ms).
async fn read_feed(api: &HostClient, cursor: u64) -> Result<(Vec<Value>, u64, i64), BoxError> {
    let v = simctl::ok_json(
        api.get(&format!(
            "/assets/{ASSET}/alerts/feed?cursor={cursor}&limit={FEED_LIMIT}"
        ))
        .timeout(CALL_TIMEOUT)
        .send()
        .await?,
    )
    .await?;
    let read_ms = now_ms();
    let events = v["events"]
        .as_array()
        .ok_or("the feed answer has no events")?
        .clone();
    let next = v["next_cursor"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .ok_or("the feed answer has no usable next_cursor")?;
    Ok((events, next, read_ms))
}

/// The host's `on_poll` with `start_time`: the containers and when they arrived (ms).
async fn scheduled_poll(api: &HostClient, start_time: &str) -> Result<(Vec<Value>, i64), BoxError> {
    let inv = api
        .invoke(
            "on_poll",
            &json!({"start_time": start_time, "container_count": 10000, "artifact_count": 1}),
            CALL_TIMEOUT,
        )
        .await?;
    let read_ms = now_ms();
    if !inv.succeeded() {
        return Err(format!("on_poll failed: {}", inv.describe()).into());
    }
    let containers = inv.envelope["data"].as_array().cloned().unwrap_or_default();
    Ok((containers, read_ms))
}

// --- part 2: backlog -------------------------------------------------------------------------

/// What the backlog run measured.
struct BacklogResult {
    create_secs: f64,
    startup_secs: f64,
    /// From the host's exec until the feed held every alert.
    to_all_secs: Option<f64>,
    in_feed: usize,
    missing: usize,
    repeated: u64,
    other: u64,
    polls: Option<u64>,
    peak_rss_kib: u64,
    hwm_kib: u64,
    rss_before_kib: u64,
    cpu_secs: f64,
    samples: u64,
}

async fn backlog_run(
    options: &Options,
    client: &reqwest::Client,
) -> Result<BacklogResult, BoxError> {
    let sim = SimProcess::spawn(&options.sim_bin).await?;
    let result = backlog_measure(options, client, &sim).await;
    sim.stop().await;
    result
}

async fn backlog_measure(
    options: &Options,
    client: &reqwest::Client,
    sim: &SimProcess,
) -> Result<BacklogResult, BoxError> {
    let ctl = SimControl::new(client.clone(), sim.base_url());
    ctl.wait_ready().await?;
    let mut scenario = ctl.scenario().await?;
    scenario.rate_limits.disabled = true;
    ctl.put_scenario(&scenario).await?;
    let app = simctl::app_creds(&scenario, 0)?;
    let t0 = Instant::now();
    let ids = ctl.create_alerts(BACKLOG).await?;
    let create_secs = t0.elapsed().as_secs_f64();
    let spec = HostSpec {
        ingestion: Some(IngestionSpec {
            source: "graph",
            interval_secs: INTERVAL_SECS,
            first_run_lookback: "1h",
            max_per_poll: MAX_PER_POLL,
        }),
        ..HostSpec::unlimited(&options.host_log)
    };
    let probe = load::client(4)?;
    let exec = Instant::now();
    let host = HostProcess::spawn(&options.host_bin, sim.base_url(), &app, &spec, &probe).await?;
    let sampler = RssSampler::start(host.pid(), SAMPLE_EVERY, BACKLOG_DEADLINE);
    let result = backlog_follow(&host, client, &ids, exec, sampler).await;
    host.stop().await;
    result.map(|r| BacklogResult { create_secs, ..r })
}

async fn backlog_follow(
    host: &HostProcess,
    client: &reqwest::Client,
    ids: &[String],
    exec: Instant,
    sampler: RssSampler,
) -> Result<BacklogResult, BoxError> {
    let api = host.client(client)?;
    let before = host.stats()?;
    let mut count: HashMap<&str, u64> = ids.iter().map(|i| (i.as_str(), 0)).collect();
    let mut other = 0u64;
    let mut cursor = 0u64;
    let mut in_feed = 0usize;
    let mut to_all = None;
    let mut read = |events: &[Value], count: &mut HashMap<&str, u64>, in_feed: &mut usize| {
        for e in events {
            match e["alert"]["id"].as_str().and_then(|id| count.get_mut(id)) {
                Some(n) => {
                    *n += 1;
                    if *n == 1 {
                        *in_feed += 1;
                    }
                }
                None => other += 1,
            }
        }
    };
    let deadline = exec + BACKLOG_DEADLINE;
    while Instant::now() < deadline {
        let (events, next, _) = read_feed(&api, cursor).await?;
        read(&events, &mut count, &mut in_feed);
        cursor = next;
        if in_feed == ids.len() {
            to_all = Some(exec.elapsed().as_secs_f64());
            break;
        }
        if events.len() < FEED_LIMIT {
            tokio::time::sleep(FEED_EVERY).await;
        }
    }
    let (peak_rss_kib, samples) = sampler.finish().await;
    let after = host.stats()?;
    // Exactly once: one more poll after the last alert arrived, then the rest of the feed.
    let mut polls = ingestion_polls(&api).await.ok();
    if let Some(p) = polls {
        let wait_until = Instant::now() + Duration::from_secs(INTERVAL_SECS + 10);
        while Instant::now() < wait_until {
            match ingestion_polls(&api).await {
                Ok(now) if now > p => {
                    polls = Some(now);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    loop {
        let (events, next, _) = read_feed(&api, cursor).await?;
        read(&events, &mut count, &mut in_feed);
        cursor = next;
        if events.len() < FEED_LIMIT {
            break;
        }
    }
    let missing = count.values().filter(|n| **n == 0).count();
    let repeated = count.values().map(|n| n.saturating_sub(1)).sum();
    Ok(BacklogResult {
        create_secs: 0.0,
        startup_secs: host.startup.as_secs_f64(),
        to_all_secs: to_all,
        in_feed,
        missing,
        repeated,
        other,
        polls,
        peak_rss_kib,
        hwm_kib: after.max_rss_kib,
        rss_before_kib: before.rss_kib,
        cpu_secs: after.cpu_secs,
        samples,
    })
}

/// Polls the host's poller has made so far (`ingestion_status`).
async fn ingestion_polls(api: &HostClient) -> Result<u64, BoxError> {
    let inv = api
        .invoke("ingestion_status", &json!({}), CALL_TIMEOUT)
        .await?;
    if !inv.succeeded() {
        return Err(inv.describe().into());
    }
    inv.envelope["data"][0]["polls"]
        .as_u64()
        .ok_or_else(|| "ingestion_status has no polls".into())
}

// --- the report ------------------------------------------------------------------------------

fn section(lag: &LagResult, backlog: &BacklogResult) -> Section {
    let created = lag.created.len();
    let missed = |d: &Deliveries| {
        lag.created
            .keys()
            .filter(|id| !d.first_lag.contains_key(*id))
            .count()
    };
    let feed_lags = lag.feed.lags();
    let feed_median = percentile_f64(&feed_lags, 50.0);
    // The clock check: each creation time in the feed lies within its create request.
    let outside = lag
        .feed
        .created_ms
        .iter()
        .filter(|(id, at)| {
            lag.created
                .get(*id)
                .is_some_and(|c| **at < c.sent_ms || **at > c.answered_ms)
        })
        .count();

    let mut table = Table::new(&[
        "path",
        "alerts created",
        "delivered",
        "missed",
        "delivered again",
        "lag median s",
        "lag p99 s",
        "lag max s",
        "vs feed (median)",
        "failed reads",
    ]);
    for (name, d, base) in [
        (
            format!("host feed (poller every {INTERVAL_SECS} s, consumer every 150 ms)"),
            &lag.feed,
            true,
        ),
        (
            format!(
                "on_poll every {INTERVAL_SECS} s, start_time = newest alertCreationTime ({} calls)",
                lag.on_poll_calls
            ),
            &lag.on_poll,
            false,
        ),
    ] {
        let lags = d.lags();
        let m = percentile_f64(&lags, 50.0);
        table.row(vec![
            name,
            created.to_string(),
            d.first_lag.len().to_string(),
            missed(d).to_string(),
            d.repeated.to_string(),
            num(m, 2),
            num(percentile_f64(&lags, 99.0), 2),
            num(percentile_f64(&lags, 100.0), 2),
            if base {
                "baseline".into()
            } else {
                ratio(m, feed_median)
            },
            d.errors.to_string(),
        ]);
    }

    let mut backlog_table = Table::new(&[
        "alerts before start",
        "in the feed",
        "missing",
        "repeated",
        "other events",
        "polls",
        "exec → all in the feed s",
        "alerts/s",
        "host VmRSS after start-up MiB",
        "host peak VmRSS MiB (sampled)",
        "host VmHWM MiB",
        "host CPU s",
    ]);
    backlog_table.row(vec![
        BACKLOG.to_string(),
        backlog.in_feed.to_string(),
        backlog.missing.to_string(),
        backlog.repeated.to_string(),
        backlog.other.to_string(),
        backlog.polls.map_or("—".into(), |p| p.to_string()),
        backlog.to_all_secs.map_or("—".into(), |s| num(s, 2)),
        backlog
            .to_all_secs
            .map_or("—".into(), |s| num(BACKLOG as f64 / s, 0)),
        mib(backlog.rss_before_kib),
        mib(backlog.peak_rss_kib),
        mib(backlog.hwm_kib),
        num(backlog.cpu_secs, 2),
    ]);

    let mut notes = vec![
        format!(
            "Part 1, lag: the asset ingests Graph alerts (`source = \"graph\"`, `interval_secs = \
             {INTERVAL_SECS}`, `max_per_poll = {MAX_PER_POLL}`) while the bench creates {ALERTS_PER_SEC} \
             alerts a second for {:.0} s (`POST /_sim/alerts`, one alert per request) and a consumer \
             reads the feed every 150 ms (limit {FEED_LIMIT}, following `next_cursor`); then up to \
             {} s for the last ones ({:.1} s in all). Lag = the moment an event was read − the \
             alert's `createdDateTime` in it. Baseline in the same run: the host's `on_poll` \
             invoked every {INTERVAL_SECS} s by the bench as a scheduler, with `start_time` = the \
             newest `alertCreationTime` received so far (Splunk's `last_time`); its lag = answer \
             received − creation time; an alert in two answers counts as delivered again. Only \
             alerts the bench created are counted (feed events of the scenario's own alerts: {}). \
             Simulator rate limits off, asset budget 100,000/min.",
            lag.creating_secs,
            2 * INTERVAL_SECS + 5,
            lag.wall_secs,
            lag.feed.other,
        ),
        format!(
            "Clock: the simulator's clock is the wall clock (nothing advances it); {} of {} \
             creation times read from the feed lie inside their create request (sent … answered \
             on the bench's clock).",
            lag.feed.created_ms.len() - outside,
            lag.feed.created_ms.len()
        ),
        format!(
            "Part 2, backlog: {BACKLOG} alerts created 1 ms apart in one request ({:.2} s) before \
             the host starts with `first_run_lookback = \"1h\"`, `max_per_poll = {MAX_PER_POLL}` \
             (a poll that stops at the limit is followed 1 s later); the feed is read as in part 1 \
             from the host's exec (start-up {:.3} s) until it holds all {BACKLOG}, then once more \
             after the next poll to check that none was delivered twice. The host's VmRSS is \
             sampled every {} ms ({} samples); VmHWM and CPU are read once at the end.",
            backlog.create_secs,
            backlog.startup_secs,
            SAMPLE_EVERY.as_millis(),
            backlog.samples,
        ),
    ];
    if lag.create_errors > 0 {
        notes.push(format!("{} create requests failed.", lag.create_errors));
    }
    for (side, d) in [("feed", &lag.feed), ("on_poll", &lag.on_poll)] {
        if let Some(e) = &d.first_error {
            notes.push(format!("{} {side} reads failed; first: {e}", d.errors));
        }
    }

    let mut targets = Vec::new();
    if feed_lags.is_empty() {
        targets.push(Target::not_measured(
            TARGETS[0].0,
            TARGETS[0].1,
            "no alert reached the feed",
        ));
    } else {
        let limit = INTERVAL_SECS as f64 / 2.0 + 1.0;
        targets.push(Target::at_most(TARGETS[0].0, feed_median, limit, "s", 2));
    }
    targets.push(Target::at_most_count(
        TARGETS[1].0,
        (missed(&lag.feed) as u64) + lag.feed.repeated,
        0,
        "alerts",
    ));
    targets.push(Target::at_most_count(
        TARGETS[2].0,
        backlog.missing as u64 + backlog.repeated,
        0,
        "alerts",
    ));
    Section {
        title: String::new(),
        notes,
        tables: vec![table, backlog_table],
        targets,
        failed: false,
    }
}
