//! The load generator: workers over one shared keep-alive client. Closed loop (each worker
//! sends its next request as soon as the previous answer is read) or paced (each worker sends
//! one request per period), always until a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use crate::BoxError;

/// Per-request timeout of load requests: bounds every worker's last request after the deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for load: shared connection pool sized for the workers, no proxies (loopback only),
/// no Nagle delay.
pub fn client(concurrency: usize) -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Requests completed (answered or failed).
    pub requests: u64,
    /// Requests that failed or whose answer did not pass the check.
    pub errors: u64,
    /// Wall time from the start until the last worker finished.
    pub elapsed: Duration,
    /// Latency of every request, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    /// Completed requests per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`th percentile latency (nearest rank), in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p) as f64 / 1000.0
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nearest-rank percentile of unsorted floats (0 when empty).
pub fn percentile_f64(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, p)
}

/// Median of unsorted durations (zero when empty).
pub fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort_unstable();
    percentile(&v, 50.0)
}

/// Decides whether an answer counts as a success.
pub type Check = fn(StatusCode, &[u8]) -> bool;

/// Answered 200.
pub fn is_ok(status: StatusCode, _body: &[u8]) -> bool {
    status == StatusCode::OK
}

/// Answered 200 with an envelope whose status is `success`.
pub fn is_success_envelope(status: StatusCode, body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"status\":\"success\"";
    status == StatusCode::OK && body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// How workers pace their requests.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// The next request as soon as the previous answer is read.
    Closed,
    /// One request per period; worker `i` of `n` starts `i/n` of a period late, so the
    /// requests spread evenly.
    Every(Duration),
}

/// Runs `concurrency` workers until `duration` has passed; worker `i` sends the requests
/// `make(i)` builds, paced by `pace`, and `check` judges each answer.
pub async fn run<F>(
    concurrency: usize,
    duration: Duration,
    pace: Pace,
    make: F,
    check: Check,
) -> Result<LoadResult, BoxError>
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let make = make.clone();
        workers.spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4 * 1024);
            let mut errors = 0u64;
            let (period, mut next) = match pace {
                Pace::Closed => (Duration::ZERO, start),
                Pace::Every(p) => (p, start + p.mul_f64(i as f64 / concurrency.max(1) as f64)),
            };
            while next < deadline && Instant::now() < deadline {
                if !period.is_zero() {
                    tokio::time::sleep_until(next.into()).await;
                    next += period;
                }
                let t0 = Instant::now();
                let ok = match make(i).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(body) => check(status, &body),
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                };
                latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut result = LoadResult::default();
    while let Some(joined) = workers.join_next().await {
        let (latencies, errors) = joined?;
        result.requests += latencies.len() as u64;
        result.errors += errors;
        result.latencies_us.extend(latencies);
    }
    result.elapsed = start.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}

/// Sends `total` requests from `concurrency` closed-loop workers (each takes the next request
/// number as soon as its previous answer is read); `make(n)` builds request `n` and `check`
/// judges each answer. Bounded by the count; each request by the client's timeout.
pub async fn run_count<F>(
    concurrency: usize,
    total: usize,
    make: F,
    check: Check,
) -> Result<LoadResult, BoxError>
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, total.max(1)) {
        let (make, next) = (make.clone(), next.clone());
        workers.spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let t0 = Instant::now();
                let ok = match make(n).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(body) => check(status, &body),
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                };
                latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut result = LoadResult::default();
    while let Some(joined) = workers.join_next().await {
        let (latencies, errors) = joined?;
        result.requests += latencies.len() as u64;
        result.errors += errors;
        result.latencies_us.extend(latencies);
    }
    result.elapsed = start.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}

/// Sends `GET url` with `bearer` from `concurrency` closed-loop workers for `duration`.
pub async fn get_loop(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<LoadResult, BoxError> {
    let auth = HeaderValue::from_str(&format!("Bearer {bearer}"))?;
    let client = client.clone();
    let url = url.to_string();
    run(
        concurrency,
        duration,
        Pace::Closed,
        move |_| client.get(&url).header(AUTHORIZATION, auth.clone()),
        is_ok,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7u32], 99.0), 7);
        assert_eq!(percentile::<u32>(&[], 50.0), 0);
        assert_eq!(percentile_f64(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(
            median(&[
                Duration::from_millis(5),
                Duration::from_millis(1),
                Duration::from_millis(3)
            ]),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn envelope_check() {
        assert!(is_success_envelope(
            StatusCode::OK,
            br#"{"action":"x","status":"success"}"#
        ));
        assert!(!is_success_envelope(
            StatusCode::OK,
            br#"{"action":"x","status":"failed"}"#
        ));
        assert!(!is_success_envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"success"}"#
        ));
    }
}
