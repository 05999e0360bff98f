//! `hunting`: advanced hunting through the host. Two parts, each beside the same requests sent
//! straight to the simulator in the same run:
//!
//! 1. Many small queries (`DeviceInfo | take 5`, 1,000 by default) with `run_query` on the
//!    Defender route (`api` = `mde`) and on the Graph route (`api` = `graph`), from closed-loop
//!    callers, against the same `POST /api/advancedqueries/run` and
//!    `POST /v1.0/security/runHuntingQuery` with a bearer token from the simulator's token
//!    endpoint: latency p50/p99, the host's overhead per query (difference of medians),
//!    throughput, CPU per process.
//! 2. One large answer (`DeviceProcessEvents | take 100000`): straight from the simulator, and
//!    through the host with `limit` 1,000 and with `limit` 100,000; wall time, rows/s, bytes
//!    of the upstream answer and of the host's envelope, and the host's memory while it runs
//!    (VmRSS sampled every 20 ms, and VmHWM), which shows whether the host keeps only the rows
//!    it returns.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use super::{Options, Stack, cpu_percent};
use crate::BoxError;
use crate::host_process::{HostSpec, body_of};
use crate::load::{self, LoadResult};
use crate::process::{self, RssSampler};
use crate::report::{Section, Table, mib, num, ratio};
use crate::simctl::{self, GRAPH_SCOPE, route_count_suffix};

/// The small query of part 1.
const SMALL_QUERY: &str = "DeviceInfo | take 5";
/// Rows the small query answers.
const SMALL_ROWS: usize = 5;
/// Closed-loop callers of part 1.
const CALLERS: usize = 16;
/// Unmeasured queries per path before part 1 (connections, tokens, code paths).
const WARMUP_QUERIES: usize = 2 * CALLERS;
/// Synthetic `DeviceProcessEvents` rows beyond the large answer's size.
const SPARE_EVENTS: usize = 20_000;
/// `limit` of the bounded large-answer run.
const SMALL_LIMIT: usize = 1_000;
/// `timeout` of the large runs, seconds.
const LARGE_TIMEOUT_SECS: u64 = 300;
/// How often the host's VmRSS is read during a large run.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// The Defender hunting route.
const MDE_ROUTE: &str = "/api/advancedqueries/run";
/// The Graph hunting route.
const GRAPH_ROUTE: &str = "/v1.0/security/runHuntingQuery";

/// Where a run of part 1 sends its queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `POST /api/advancedqueries/run` to the simulator.
    DirectMde,
    /// `run_query` with `api` = `mde` through the host.
    HostMde,
    /// `POST /v1.0/security/runHuntingQuery` to the simulator.
    DirectGraph,
    /// `run_query` with `api` = `graph` through the host.
    HostGraph,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::DirectMde => "direct POST /api/advancedqueries/run",
            Path::HostMde => "host run_query, api = mde",
            Path::DirectGraph => "direct POST /v1.0/security/runHuntingQuery",
            Path::HostGraph => "host run_query, api = graph",
        }
    }

    fn is_host(self) -> bool {
        matches!(self, Path::HostMde | Path::HostGraph)
    }

    /// The simulator route the path ends on.
    fn route(self) -> &'static str {
        match self {
            Path::DirectMde | Path::HostMde => MDE_ROUTE,
            Path::DirectGraph | Path::HostGraph => GRAPH_ROUTE,
        }
    }
}

/// One measured run of part 1.
struct Run {
    path: Path,
    callers: usize,
    load: LoadResult,
    upstream: u64,
    host_cpu: f64,
    sim_cpu: f64,
    bench_cpu: f64,
}

/// Bearer tokens of the direct paths.
struct Tokens {
    mde: HeaderValue,
    graph: HeaderValue,
}

/// Runs the scenario on its own simulator and host.
pub async fn run(options: &Options) -> Result<Section, BoxError> {
    let client = load::client(CALLERS + 8)?;
    let rows = options.hunting_rows;
    let spec = HostSpec {
        families: vec!["hunting", "graph"],
        ..HostSpec::unlimited(&options.host_log)
    };
    let stack = Stack::start(
        options,
        &client,
        |s| {
            s.rate_limits.disabled = true;
            s.hunting.max_rows = s.hunting.max_rows.max(rows);
            s.hunting.latency_ms = 0;
            s.hunting.synthetic_events = rows + SPARE_EVENTS;
            Ok(())
        },
        &spec,
    )
    .await?;
    let result = measure(&stack, options, &client).await;
    stack.stop().await;
    result
}

async fn measure(
    stack: &Stack,
    options: &Options,
    client: &reqwest::Client,
) -> Result<Section, BoxError> {
    let known = stack.api.action_ids().await?;
    if !known.iter().any(|a| a == "run_query") {
        return Err("the host does not list run_query (`GET /actions`)".into());
    }
    let tokens = Tokens {
        mde: bearer(&stack.ctl.token(&stack.app).await?)?,
        graph: bearer(&stack.ctl.token_for(&stack.app, GRAPH_SCOPE).await?)?,
    };

    // One query on each path, checked: the answers hold the rows asked for. The first one
    // also has the simulator generate its tables (synthetic events included).
    let generated = Instant::now();
    for path in [Path::DirectMde, Path::DirectGraph] {
        let resp = direct_request(stack, client, &tokens, path, SMALL_QUERY)
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        let v = simctl::ok_json(resp).await?;
        let n = result_rows(&v).map_or(0, <[Value]>::len);
        if n != SMALL_ROWS {
            return Err(
                format!("{} answered {n} rows, expected {SMALL_ROWS}", path.label()).into(),
            );
        }
    }
    let generation_secs = generated.elapsed().as_secs_f64();
    for (path, api) in [(Path::HostMde, "mde"), (Path::HostGraph, "graph")] {
        let inv = stack
            .api
            .invoke("run_query", &small_params(api), Duration::from_secs(60))
            .await?;
        if !inv.succeeded() {
            return Err(format!("{}: {}", path.label(), inv.describe()).into());
        }
        let returned = inv.summary("rows_returned");
        let used = inv.summary("api");
        if returned.as_deref() != Some("5") || used.as_deref() != Some(api) {
            return Err(format!(
                "{}: rows_returned {returned:?}, api {used:?} (expected 5 on {api})",
                path.label()
            )
            .into());
        }
    }

    // Part 1: warm-up, then the measured runs.
    let plan = [
        Path::DirectMde,
        Path::HostMde,
        Path::DirectGraph,
        Path::HostGraph,
    ];
    for path in plan {
        small_run(stack, client, &tokens, path, CALLERS, WARMUP_QUERIES).await?;
    }
    let mut runs = Vec::new();
    for callers in [CALLERS, 1] {
        for path in plan {
            let queries = options.hunting_queries;
            runs.push(small_run(stack, client, &tokens, path, callers, queries).await?);
        }
    }
    let small = small_tables(&runs)?;

    // Part 2: the large answer, bounded limit first so its VmHWM is not the other run's.
    let large_query = format!("DeviceProcessEvents | take {}", options.hunting_rows);
    let direct = large_direct(stack, client, &tokens, &large_query).await?;
    let bounded = large_host(stack, &large_query, SMALL_LIMIT.min(options.hunting_rows)).await?;
    let full = large_host(stack, &large_query, options.hunting_rows).await?;
    let large = large_table(options.hunting_rows, &direct, &[&bounded, &full]);

    let upstream_mib = direct.bytes as f64 / (1024.0 * 1024.0);
    Ok(Section {
        title: String::new(),
        notes: vec![
            format!(
                "Part 1: {} queries `{SMALL_QUERY}` per path from {CALLERS} closed-loop callers, \
                 then from 1, over keep-alive connections, after {WARMUP_QUERIES} unmeasured \
                 ones per path. \
                 The host runs `run_query` (`limit` 1000, answer {SMALL_ROWS} rows) with `api` \
                 `mde` or `graph`; the direct paths send the same query to the same simulator \
                 route with a bearer token from its token endpoint (`Timespan` `P30D` on \
                 Graph, as the host sends). Simulator rate limits off; asset budgets \
                 (default, `hunting_`, `graph_`) 100,000 a minute and an hour; host log level \
                 `{}`.",
                options.hunting_queries, options.host_log,
            ),
            format!(
                "Part 2: `{large_query}` (the simulator holds {} synthetic \
                 `DeviceProcessEvents` rows besides its own; generating its tables took {:.2} s, \
                 before any measured query). Rows/s = {} upstream rows / wall time. The host's \
                 memory is sampled from `/proc/<pid>/status` every {} ms (VmRSS) and read \
                 once after each run (VmHWM, the process's peak so far); the bounded `limit` \
                 runs first so its VmHWM is its own. The upstream answer is {} MiB.",
                options.hunting_rows + SPARE_EVENTS,
                generation_secs,
                options.hunting_rows,
                SAMPLE_EVERY.as_millis(),
                num(upstream_mib, 1),
            ),
            "The host, the simulator and the load generator share the machine's cores (CPU % \
             is of one core); the simulator evaluates each query (KQL over its tables) and \
             serialises the rows, the host adds its HTTP, API key, budget, token, the upstream \
             call, the streaming parse of the answer and its envelope."
                .to_string(),
        ],
        tables: vec![small.0, small.1, large],
        targets: Vec::new(),
        failed: false,
    })
}

/// `Bearer {token}` as a header value.
fn bearer(token: &str) -> Result<HeaderValue, BoxError> {
    Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
}

/// `run_query` parameters of the small query on `api`.
fn small_params(api: &str) -> Value {
    json!({"query": SMALL_QUERY, "api": api})
}

/// The bearer header and body of the direct request of `path` for `query`.
fn direct_parts(tokens: &Tokens, path: Path, query: &str) -> (HeaderValue, String) {
    match path {
        Path::DirectGraph | Path::HostGraph => (
            tokens.graph.clone(),
            json!({"Query": query, "Timespan": "P30D"}).to_string(),
        ),
        Path::DirectMde | Path::HostMde => {
            (tokens.mde.clone(), json!({"Query": query}).to_string())
        }
    }
}

/// The direct request of `path` for `query`, not sent yet.
fn direct_request(
    stack: &Stack,
    client: &reqwest::Client,
    tokens: &Tokens,
    path: Path,
    query: &str,
) -> reqwest::RequestBuilder {
    let (auth, body) = direct_parts(tokens, path, query);
    client
        .post(stack.ctl.url(path.route()))
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
}

/// `Results` (Defender) or `results` (Graph) of an answer.
fn result_rows(v: &Value) -> Option<&[Value]> {
    v.get("Results")
        .or_else(|| v.get("results"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
}

/// `queries` small queries on `path` from `callers` closed-loop callers, with the upstream
/// hunting calls and the CPU time of each process over the run.
async fn small_run(
    stack: &Stack,
    client: &reqwest::Client,
    tokens: &Tokens,
    path: Path,
    callers: usize,
    queries: usize,
) -> Result<Run, BoxError> {
    let before = stack.ctl.counters().await?;
    let host0 = stack.host.stats()?;
    let sim0 = stack.sim.stats()?;
    let own0 = process::own_cpu_secs()?;
    let load = if path.is_host() {
        let api = stack.api.clone();
        let body = body_of(&small_params(if path == Path::HostMde {
            "mde"
        } else {
            "graph"
        }));
        load::run_count(
            callers,
            queries,
            move |_| api.request_body("run_query", body.clone()),
            load::is_success_envelope,
        )
        .await?
    } else {
        let url = stack.ctl.url(path.route());
        let (auth, body) = direct_parts(tokens, path, SMALL_QUERY);
        let client = client.clone();
        load::run_count(
            callers,
            queries,
            move |_| {
                client
                    .post(&url)
                    .header(AUTHORIZATION, auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            },
            load::is_ok,
        )
        .await?
    };
    let bench_cpu = process::own_cpu_secs()? - own0;
    let sim1 = stack.sim.stats()?;
    let host1 = stack.host.stats()?;
    let after = stack.ctl.counters().await?;
    Ok(Run {
        path,
        callers,
        upstream: route_count_suffix(&after, path.route())
            .saturating_sub(route_count_suffix(&before, path.route())),
        host_cpu: host1.cpu_secs - host0.cpu_secs,
        sim_cpu: sim1.cpu_secs - sim0.cpu_secs,
        bench_cpu,
        load,
    })
}

/// The results table of part 1 and the ratios host / direct per API and number of callers.
fn small_tables(runs: &[Run]) -> Result<(Table, Table), BoxError> {
    let find = |p: Path, callers: usize| {
        runs.iter()
            .find(|r| r.path == p && r.callers == callers)
            .ok_or("a run is missing")
    };
    let direct_of = |r: &Run| match r.path {
        Path::HostMde | Path::DirectMde => find(Path::DirectMde, r.callers),
        Path::HostGraph | Path::DirectGraph => find(Path::DirectGraph, r.callers),
    };
    let mut table = Table::new(&[
        "path",
        "callers",
        "queries",
        "queries/s",
        "vs direct",
        "p50 ms",
        "p99 ms",
        "errors",
        "upstream queries per call",
        "host CPU %",
        "sim CPU %",
        "bench CPU %",
        "host CPU µs/query",
        "sim CPU µs/query",
    ]);
    let per_query = |cpu: f64, r: &Run| {
        if r.load.requests > 0 {
            num(cpu * 1e6 / r.load.requests as f64, 0)
        } else {
            "—".into()
        }
    };
    for r in runs {
        let direct = direct_of(r)?;
        let secs = r.load.elapsed.as_secs_f64();
        let host = r.path.is_host();
        table.row(vec![
            r.path.label().to_string(),
            r.callers.to_string(),
            r.load.requests.to_string(),
            num(r.load.rate(), 0),
            if host {
                ratio(r.load.rate(), direct.load.rate())
            } else {
                "baseline".into()
            },
            num(r.load.percentile_ms(50.0), 3),
            num(r.load.percentile_ms(99.0), 3),
            r.load.errors.to_string(),
            if r.load.requests > 0 {
                num(r.upstream as f64 / r.load.requests as f64, 3)
            } else {
                "—".into()
            },
            if host {
                num(cpu_percent(r.host_cpu, secs), 0)
            } else {
                "—".into()
            },
            num(cpu_percent(r.sim_cpu, secs), 0),
            num(cpu_percent(r.bench_cpu, secs), 0),
            if host {
                per_query(r.host_cpu, r)
            } else {
                "—".into()
            },
            per_query(r.sim_cpu, r),
        ]);
    }
    let columns = [
        (Path::HostMde, Path::DirectMde, CALLERS),
        (Path::HostGraph, Path::DirectGraph, CALLERS),
        (Path::HostMde, Path::DirectMde, 1),
        (Path::HostGraph, Path::DirectGraph, 1),
    ];
    let mut pairs = Vec::new();
    for (host, direct, callers) in columns {
        pairs.push((find(host, callers)?, find(direct, callers)?));
    }
    let mut ratios = Table::new(&[
        "host / direct",
        &format!("mde, {CALLERS} callers"),
        &format!("graph, {CALLERS} callers"),
        "mde, 1 caller",
        "graph, 1 caller",
    ])
    .with_caption("Ratios, host over direct (same queries, same number of callers):");
    let row = |label: &str, f: &dyn Fn(&Run, &Run) -> String| {
        let mut cells = vec![label.to_string()];
        cells.extend(pairs.iter().map(|(h, d)| f(h, d)));
        cells
    };
    ratios.row(row("throughput", &|h, d| {
        ratio(h.load.rate(), d.load.rate())
    }));
    for (label, p) in [("p50 latency", 50.0), ("p99 latency", 99.0)] {
        ratios.row(row(label, &|h, d| {
            ratio(h.load.percentile_ms(p), d.load.percentile_ms(p))
        }));
    }
    ratios.row(row(
        "overhead per query, p50 host − p50 direct (ms)",
        &|h, d| num(h.load.percentile_ms(50.0) - d.load.percentile_ms(50.0), 3),
    ));
    Ok((table, ratios))
}

/// The large answer read straight from the simulator.
struct Direct {
    secs: f64,
    bytes: u64,
    rows: usize,
}

/// The large answer through the host with one `limit`.
struct HostLarge {
    limit: usize,
    secs: f64,
    envelope_bytes: u64,
    total: Option<String>,
    returned: usize,
    rss_before_kib: u64,
    peak_kib: u64,
    hwm_after_kib: u64,
    rss_after_kib: u64,
    cpu_secs: f64,
    samples: u64,
}

/// `query` on Defender's route, read to the end by the bench (rows counted after the clock
/// stops).
async fn large_direct(
    stack: &Stack,
    client: &reqwest::Client,
    tokens: &Tokens,
    query: &str,
) -> Result<Direct, BoxError> {
    let t0 = Instant::now();
    let resp = direct_request(stack, client, tokens, Path::DirectMde, query)
        .timeout(Duration::from_secs(LARGE_TIMEOUT_SECS))
        .send()
        .await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let secs = t0.elapsed().as_secs_f64();
    if !status.is_success() {
        return Err(format!(
            "the direct large query answered {status}: {}",
            simctl::truncate(&String::from_utf8_lossy(&body), 300)
        )
        .into());
    }
    let v: Value = serde_json::from_slice(&body)?;
    Ok(Direct {
        secs,
        bytes: body.len() as u64,
        rows: result_rows(&v).map_or(0, <[Value]>::len),
    })
}

/// `query` through the host with `limit`, the host's memory sampled while it runs.
async fn large_host(stack: &Stack, query: &str, limit: usize) -> Result<HostLarge, BoxError> {
    let pid = stack.host.pid();
    let before = stack.host.stats()?;
    let sampler = RssSampler::start(
        pid,
        SAMPLE_EVERY,
        Duration::from_secs(LARGE_TIMEOUT_SECS + 60),
    );
    let t0 = Instant::now();
    let sent = stack
        .api
        .request(
            "run_query",
            &json!({"query": query, "api": "mde", "limit": limit, "timeout": LARGE_TIMEOUT_SECS}),
        )
        .timeout(Duration::from_secs(LARGE_TIMEOUT_SECS + 60))
        .send()
        .await;
    let answer = match sent {
        Ok(resp) => {
            let status = resp.status();
            resp.bytes().await.map(|b| (status, b))
        }
        Err(e) => Err(e),
    };
    let secs = t0.elapsed().as_secs_f64();
    let (peak_kib, samples) = sampler.finish().await;
    let (status, body) = answer?;
    let after = stack.host.stats()?;
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != reqwest::StatusCode::OK || envelope["status"] != "success" {
        return Err(format!(
            "run_query with limit {limit} answered HTTP {status}: {}",
            simctl::truncate(envelope["message"].as_str().unwrap_or("(no message)"), 300)
        )
        .into());
    }
    let returned = envelope["data"].as_array().map_or(0, Vec::len);
    if returned != limit {
        return Err(format!("run_query with limit {limit} returned {returned} rows").into());
    }
    Ok(HostLarge {
        limit,
        secs,
        envelope_bytes: body.len() as u64,
        total: match &envelope["summary"]["total_results"] {
            Value::Null => None,
            v => Some(v.to_string()),
        },
        returned,
        rss_before_kib: before.rss_kib,
        peak_kib: peak_kib.max(after.rss_kib),
        hwm_after_kib: after.max_rss_kib,
        rss_after_kib: after.rss_kib,
        cpu_secs: after.cpu_secs - before.cpu_secs,
        samples,
    })
}

/// The table of part 2.
fn large_table(rows: usize, direct: &Direct, host: &[&HostLarge]) -> Table {
    let mut table = Table::new(&[
        "path",
        "rows upstream",
        "rows returned",
        "wall s",
        "rows/s",
        "vs direct",
        "upstream answer MiB",
        "answer to the caller MiB",
        "host VmRSS before MiB",
        "host peak VmRSS MiB (sampled)",
        "peak − before MiB",
        "host VmHWM after MiB",
        "host VmRSS after MiB",
        "host CPU s",
        "samples",
    ]);
    let rate = |secs: f64| {
        if secs > 0.0 { rows as f64 / secs } else { 0.0 }
    };
    let bytes_mib = |b: u64| num(b as f64 / (1024.0 * 1024.0), 1);
    table.row(vec![
        "direct POST /api/advancedqueries/run".into(),
        direct.rows.to_string(),
        direct.rows.to_string(),
        num(direct.secs, 2),
        num(rate(direct.secs), 0),
        "baseline".into(),
        bytes_mib(direct.bytes),
        bytes_mib(direct.bytes),
        "—".into(),
        "—".into(),
        "—".into(),
        "—".into(),
        "—".into(),
        "—".into(),
        "—".into(),
    ]);
    for h in host {
        table.row(vec![
            format!("host run_query, api = mde, limit {}", h.limit),
            h.total.clone().unwrap_or_else(|| "—".into()),
            h.returned.to_string(),
            num(h.secs, 2),
            num(rate(h.secs), 0),
            ratio(rate(h.secs), rate(direct.secs)),
            bytes_mib(direct.bytes),
            bytes_mib(h.envelope_bytes),
            mib(h.rss_before_kib),
            mib(h.peak_kib),
            mib(h.peak_kib.saturating_sub(h.rss_before_kib)),
            mib(h.hwm_after_kib),
            mib(h.rss_after_kib),
            num(h.cpu_secs, 2),
            h.samples.to_string(),
        ]);
    }
    table
}
