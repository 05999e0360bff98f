//! The closed-loop load generator: N workers over one shared keep-alive client, each sending
//! its next request as soon as the previous answer is read, until a deadline.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue};

use crate::BoxError;

/// Per-request timeout: bounds every worker's last request after the deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for load: shared connection pool sized for the workers, no proxies (loopback only),
/// no Nagle delay.
pub fn client(concurrency: usize) -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
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
    /// Requests that failed or were not answered 200.
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
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends `GET url` with `bearer` from `concurrency` workers for `duration`.
pub async fn get_loop(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<LoadResult, BoxError> {
    let auth = HeaderValue::from_str(&format!("Bearer {bearer}"))?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let auth = auth.clone();
        workers.spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(16 * 1024);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let ok = match client
                    .get(&url)
                    .header(AUTHORIZATION, auth.clone())
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.bytes().await.is_ok() && status == reqwest::StatusCode::OK
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
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
