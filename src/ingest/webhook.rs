//! Push delivery: one task per configured webhook of an asset reads the journal from the
//! receiver's own cursor and POSTs `{"events": [...]}` batches, signed with
//! `X-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. The cursor (the last
//! sequence number the receiver answered 2xx for) is kept in the asset's state file, so a
//! restart resumes where the receiver stopped acknowledging. A failed POST is retried with
//! backoff (1 s doubling up to `retry_max_secs`, default 5 min, with jitter, or the
//! receiver's `Retry-After`) for as long as
//! the journal keeps the events; each receiver has its own task, so one that keeps failing
//! holds up neither the others nor the poll. Events the journal dropped (see
//! `outbox_max_events`) before a receiver got them are counted and logged, never silently
//! skipped.
//!
//! Delivery is at least once: a host that dies after the receiver answered 2xx and before the
//! cursor reached the disk sends that batch again after the restart. The `event_key` lets a
//! receiver drop it.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::journal::Record;
use super::poller::Ingestor;
use crate::config::WebhookConfig;
use crate::state::{IngestionState, WebhookState};

/// Shortest wait after a failed POST.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait after failed POSTs (or a receiver's Retry-After) whatever the configuration.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest a POST may take, connection included.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle task waits for new events before it looks at the journal again anyway.
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// Longest error text kept in the state.
const MAX_ERROR_LEN: usize = 200;

/// The `X-Signature` header value for `body` sent at unix time `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return format!("t={t},v1="),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The wait after `failures` failed POSTs in a row (at least 1), before jitter: 1 s doubling
/// up to `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1u32 << exp).min(max)
}

/// `d` less up to a fifth, at random (so receivers coming back are not hit by every host at
/// once).
pub(crate) fn jitter(d: Duration) -> Duration {
    let fifth = d.as_millis() as u64 / 5;
    if fifth == 0 {
        return d;
    }
    d.saturating_sub(Duration::from_millis(
        rand::thread_rng().gen_range(0..=fifth),
    ))
}

/// A receiver's `Retry-After` in seconds (capped at the longest backoff).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_BACKOFF))
}

/// The last-update time field of an event's alert, by source.
fn updated_at(record: &Record) -> Option<OffsetDateTime> {
    let field = match record.event.source.as_str() {
        "mde" => "lastUpdateTime",
        _ => "lastUpdateDateTime",
    };
    record
        .event
        .alert
        .get(field)
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

/// The HTTP client the host POSTs webhooks and completion callbacks with: one for every
/// receiver, so connections to a receiver are pooled (10 s to connect, 30 s per POST).
pub fn delivery_client() -> reqwest::Client {
    crate::defender::DefenderClient::http_client(Duration::from_secs(10), POST_TIMEOUT)
}

/// The delivery task of one webhook.
pub struct Delivery {
    ingestor: Arc<Ingestor>,
    hook: WebhookConfig,
    http: reqwest::Client,
    id: String,
}

/// What a POST came to.
enum Posted {
    /// 2xx.
    Accepted,
    /// Anything else, with the wait the receiver asked for.
    Refused(String, Option<Duration>),
}

impl Delivery {
    /// The task of `hook` on `ingestor`'s journal, POSTing with `http` (the host's client for
    /// deliveries, see [`delivery_client`]).
    pub fn new(ingestor: Arc<Ingestor>, hook: WebhookConfig, http: reqwest::Client) -> Delivery {
        let id = hook.id();
        Delivery {
            ingestor,
            hook,
            http,
            id,
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff(failures, Duration::from_secs(self.hook.retry_max_secs))
    }

    fn asset_id(&self) -> &str {
        &self.ingestor.asset().config.id
    }

    /// The receiver's stored delivery state.
    async fn stored(&self) -> Result<WebhookState, String> {
        let state = self
            .ingestor
            .store()
            .load(self.asset_id())
            .await
            .map_err(|e| format!("reading the ingestion state: {e}"))?;
        Ok(state
            .ingestion
            .and_then(|i| i.webhooks.get(&self.id).cloned())
            .unwrap_or_default())
    }

    /// Applies `f` to the receiver's stored delivery state.
    async fn record(&self, f: impl FnOnce(&mut WebhookState) + Send + 'static) {
        let id = self.id.clone();
        let saved = self
            .ingestor
            .store()
            .update(self.asset_id(), move |s| {
                let st = s.ingestion.get_or_insert_with(IngestionState::default);
                f(st.webhooks.entry(id).or_default());
                Ok::<_, String>(())
            })
            .await;
        if let Err(e) = saved {
            tracing::warn!(asset = %self.asset_id(), webhook = %self.id, "could not record the webhook delivery: {e}");
        }
    }

    /// POSTs one batch.
    async fn post(&self, records: &[Record]) -> Posted {
        let events: Vec<&crate::ingest::journal::Event> =
            records.iter().map(|r| &r.event).collect();
        let body = match serde_json::to_vec(&json!({ "events": events })) {
            Ok(b) => b,
            Err(e) => return Posted::Refused(format!("encoding the events: {e}"), None),
        };
        let t = OffsetDateTime::now_utc().unix_timestamp();
        let signed = {
            use secrecy::ExposeSecret;
            signature(self.hook.secret.expose_secret().as_bytes(), t, &body)
        };
        let (first, last) = match (records.first(), records.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return Posted::Accepted,
        };
        let sent = self
            .http
            .post(self.hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Signature", signed)
            .header("X-Delivery-Id", format!("{}-{first}-{last}", self.id))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Posted::Accepted,
            Ok(r) => Posted::Refused(
                format!("the receiver answered {}", r.status()),
                retry_after(&r),
            ),
            Err(e) => {
                let what = if e.is_timeout() {
                    "the receiver did not answer in time"
                } else if e.is_connect() {
                    "the receiver could not be reached"
                } else {
                    "the request to the receiver failed"
                };
                Posted::Refused(what.to_string(), None)
            }
        }
    }

    /// Delivers until the task is aborted.
    pub async fn run(self) {
        let labels = [
            ("asset", self.asset_id().to_string()),
            ("webhook", self.id.clone()),
        ];
        let journal = self.ingestor.journal().clone();
        let mut newest = journal.subscribe();
        let mut failures = 0u32;
        self.ingestor.wait_leading().await;
        let mut cursor = loop {
            match self.stored().await {
                Ok(s) => break s.cursor,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(asset = %self.asset_id(), webhook = %self.id, "{e}");
                    tokio::time::sleep(jitter(self.backoff(failures))).await;
                }
            }
        };
        failures = 0;
        tracing::info!(asset = %self.asset_id(), webhook = %self.id, receiver = %self.hook.shown(), cursor, "webhook delivery started");
        loop {
            if self.ingestor.wait_leading().await {
                // Another host delivered while this one waited: continue from its cursor.
                match self.stored().await {
                    Ok(s) => cursor = cursor.max(s.cursor),
                    Err(e) => {
                        tracing::warn!(asset = %self.asset_id(), webhook = %self.id, "{e}");
                        tokio::time::sleep(jitter(self.backoff(1))).await;
                        continue;
                    }
                }
                tracing::info!(asset = %self.asset_id(), webhook = %self.id, cursor, "webhook delivery resumed on this host");
            }
            let batch = match journal.read_from(cursor, self.hook.batch_size).await {
                Ok(b) => b,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(asset = %self.asset_id(), webhook = %self.id, "{e}");
                    tokio::time::sleep(jitter(self.backoff(failures))).await;
                    continue;
                }
            };
            let Some(first) = batch.first().map(|r| r.seq) else {
                metrics::gauge!("defender_webhook_backlog", &labels).set(0.0);
                // Nothing to send: wait for the next append (or look again after a while).
                let _ = tokio::time::timeout(IDLE_RECHECK, async {
                    while *newest.borrow_and_update() <= cursor {
                        if newest.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                })
                .await;
                continue;
            };
            let missed = first.saturating_sub(cursor + 1);
            if missed > 0 {
                tracing::error!(
                    asset = %self.asset_id(), webhook = %self.id, missed,
                    "events were dropped from the full journal before this receiver acknowledged them \
                     (raise outbox_max_events or fix the receiver)"
                );
                metrics::counter!("defender_webhook_events_total", "asset" => labels[0].1.clone(), "webhook" => self.id.clone(), "outcome" => "dropped").increment(missed);
                self.record(move |w| w.dropped += missed).await;
            }
            let last = batch.last().map_or(cursor, |r| r.seq);
            let newest_seq = *newest.borrow();
            metrics::gauge!("defender_webhook_backlog", &labels)
                .set(newest_seq.saturating_sub(cursor) as f64);
            match self.post(&batch).await {
                Posted::Accepted => {
                    let now = OffsetDateTime::now_utc();
                    for r in &batch {
                        if let Some(at) = updated_at(r) {
                            metrics::histogram!("defender_webhook_lag_seconds", &labels)
                                .record((now - at).as_seconds_f64().max(0.0));
                        }
                    }
                    let n = batch.len() as u64;
                    metrics::counter!("defender_webhook_events_total", "asset" => labels[0].1.clone(), "webhook" => self.id.clone(), "outcome" => "delivered").increment(n);
                    metrics::counter!("defender_webhook_posts_total", "asset" => labels[0].1.clone(), "webhook" => self.id.clone(), "outcome" => "ok").increment(1);
                    let at = now.unix_timestamp();
                    self.record(move |w| {
                        w.cursor = w.cursor.max(last);
                        w.delivered += n;
                        w.last_success_at = Some(at);
                        w.failing_since = None;
                        w.consecutive_failures = 0;
                    })
                    .await;
                    cursor = last;
                    failures = 0;
                }
                Posted::Refused(why, asked) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!("defender_webhook_posts_total", "asset" => labels[0].1.clone(), "webhook" => self.id.clone(), "outcome" => "failed").increment(1);
                    let wait = asked.unwrap_or_else(|| jitter(self.backoff(failures)));
                    tracing::warn!(
                        asset = %self.asset_id(), webhook = %self.id, receiver = %self.hook.shown(),
                        failures, retry_in_secs = wait.as_secs(), "webhook delivery failed: {why}"
                    );
                    let at = OffsetDateTime::now_utc().unix_timestamp();
                    let why = crate::actions::truncate(&why, MAX_ERROR_LEN).to_string();
                    self.record(move |w| {
                        w.failures += 1;
                        w.consecutive_failures += 1;
                        w.failing_since.get_or_insert(at);
                        w.last_error = Some(why);
                        w.last_failure_at = Some(at);
                    })
                    .await;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // RFC 4231 style check against an independent computation of the same construction.
        let sig = signature(b"0123456789abcdef", 1_700_000_000, b"{\"events\":[]}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(b"1700000000.{\"events\":[]}");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("t=1700000000,v1={want}"));
        assert_eq!(want.len(), 64);
        // Another time or body gives another signature.
        assert_ne!(
            sig,
            signature(b"0123456789abcdef", 1_700_000_001, b"{\"events\":[]}")
        );
        assert_ne!(
            sig,
            signature(b"0123456789abcdef", 1_700_000_000, b"{\"events\":[1]}")
        );
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(0, max), Duration::from_secs(1));
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(2, max), Duration::from_secs(2));
        assert_eq!(backoff(5, max), Duration::from_secs(16));
        assert_eq!(backoff(9, max), Duration::from_secs(256));
        assert_eq!(backoff(10, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
        assert_eq!(backoff(3, Duration::from_secs(1)), Duration::from_secs(1));
        for f in 1..20 {
            let j = jitter(backoff(f, max));
            assert!(j <= backoff(f, max) && j >= backoff(f, max) * 4 / 5);
        }
    }
}
