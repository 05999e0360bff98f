//! When and how long to wait before repeating an idempotent call, and `Retry-After` parsing.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use time::OffsetDateTime;
use time::macros::format_description;

/// Wait used for a 429 whose answer has no usable `Retry-After`.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Jittered exponential backoff for idempotent calls (GET, DELETE) that failed with a 5xx or a
/// transport error. POST and PATCH never use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub base_delay: Duration,
    /// Upper bound of one wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::standard()
    }
}

impl RetryPolicy {
    /// 3 retries, 200 ms doubling, at most 2 s per wait, ±50 % jitter.
    pub const fn standard() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }

    /// The standard number of retries with millisecond waits, for tests.
    pub const fn for_tests() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    /// Never retry.
    pub const fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// The waits between attempts: exponential from `base_delay`, capped at `max_delay`, with
    /// jitter, `max_retries` of them.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder;
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize);
        let max = self.max_delay;
        let jittered = if self.base_delay.is_zero() {
            builder
        } else {
            builder.with_jitter()
        };
        jittered.build().map(move |d| d.min(max))
    }
}

/// Statuses an idempotent call is repeated for.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// `Retry-After` of an answer, or [`DEFAULT_RETRY_AFTER`] when absent or unreadable.
pub(crate) fn retry_after_or_default(headers: &HeaderMap) -> Duration {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, OffsetDateTime::now_utc()))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// Seconds (`7`, also `1.5`) or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, relative to
/// `now`; a date in the past means no wait).
pub(crate) fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    let wait = at - now;
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = datetime!(2026-01-01 10:00:00 UTC);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn missing_retry_after_defaults_to_a_minute() {
        assert_eq!(
            retry_after_or_default(&HeaderMap::new()),
            DEFAULT_RETRY_AFTER
        );
    }

    #[test]
    fn backoff_is_bounded_in_count_and_length() {
        let p = RetryPolicy::standard();
        for _ in 0..50 {
            let waits: Vec<Duration> = p.backoff().collect();
            assert_eq!(waits.len(), 3);
            assert!(waits[0] >= Duration::from_millis(200), "{waits:?}");
            assert!(
                waits.iter().all(|d| *d <= Duration::from_secs(2)),
                "{waits:?}"
            );
        }
        assert_eq!(RetryPolicy::none().backoff().count(), 0);
    }
}
