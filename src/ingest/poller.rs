//! The poller of one asset: every `interval_secs` it lists the alerts whose last update is at
//! or after its checkpoint (less a two-minute overlap for clock skew), ordered by last update,
//! following every page up to `max_per_poll`; turns them into events, appends the events to
//! the journal and only then advances the checkpoint `(timestamp, ids at that timestamp)` in
//! the asset's state file. A poll that stopped at `max_per_poll` is continued from the
//! checkpoint itself, leaving out by id the alerts journaled there already. A failed list
//! (429, 5xx, transport) leaves the checkpoint alone.
//!
//! The lists take their budget permits at [`Priority::Background`]: a poll only uses the share
//! of each window above the asset's `actions_floor_percent`, and never queues ahead of a
//! playbook's calls. With `adaptive` on, the time to the next poll follows what the last one
//! found ([`next_wait`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::journal::{Event, EventKind, Journal, JournalError, SharedJournal, journal_path};
use crate::app::Asset;
use crate::config::{IngestionConfig, IngestionSource};
use crate::defender::endpoints::{ALERTS, GRAPH_ALERTS, GRAPH_ALERTS_MAX_TOP};
use crate::defender::odata::Filter;
use crate::defender::{ListQuery, Priority};
use crate::state::{IngestionState, StateStore};

/// How far before the checkpoint each poll reads again (clock skew, late writes).
pub const OVERLAP: Duration = Duration::from_secs(120);

/// The wait after a poll that stopped at `max_per_poll`.
pub const MORE_WAIT: Duration = Duration::from_secs(1);
/// The shortest wait after a poll that found new alerts (adaptive polling).
pub const MIN_WAIT: Duration = Duration::from_secs(2);
/// Failed polls back off up to this many intervals (adaptive polling).
pub const MAX_BACKOFF_INTERVALS: u32 = 4;
/// Longest `Retry-After` honoured between two polls.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How a poll ended, as far as the time to the next one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// New events were journaled.
    Found,
    /// Nothing new.
    Quiet,
    /// The poll stopped at `max_per_poll`: more alerts are waiting.
    More,
    /// The poll failed; `failures` counts it and the failures just before it, `retry_after` is
    /// the wait the error asked for, if any.
    Failed {
        /// Failed polls in a row, this one included (at least 1).
        failures: u32,
        /// The error's `Retry-After` (Microsoft's, or the request budget's).
        retry_after: Option<Duration>,
    },
}

/// The wait before the next poll, from the configured `interval`, whether polling is
/// `adaptive`, the wait before the poll that just ended (`previous`) and how it ended.
///
/// A poll that stopped at `max_per_poll` continues after [`MORE_WAIT`]. Adaptive: one that
/// found new alerts is followed after max([`MIN_WAIT`], interval / 4) (never more than the
/// interval); each quiet one doubles the wait back up to the interval; a failed one waits the
/// interval, doubling with each failure in a row up to [`MAX_BACKOFF_INTERVALS`] intervals.
/// Not adaptive: the interval. Either way a failure waits at least its `Retry-After` (at most
/// [`MAX_RETRY_AFTER`]).
pub fn next_wait(interval: Duration, adaptive: bool, previous: Duration, pace: Pace) -> Duration {
    let fast = MIN_WAIT.max(interval / 4).min(interval);
    match pace {
        Pace::More => MORE_WAIT,
        Pace::Found if adaptive => fast,
        Pace::Quiet if adaptive => previous.saturating_mul(2).clamp(fast, interval),
        Pace::Found | Pace::Quiet => interval,
        Pace::Failed {
            failures,
            retry_after,
        } => {
            let backoff = if adaptive {
                let doublings = failures.saturating_sub(1).min(8);
                interval
                    .saturating_mul(1u32 << doublings)
                    .min(interval.saturating_mul(MAX_BACKOFF_INTERVALS))
            } else {
                interval
            };
            backoff.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
        }
    }
}

/// Why a poll failed: the message recorded in the state, and the error's `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollError {
    /// What went wrong (no secrets).
    pub message: String,
    /// How long the API or the request budget asked to wait, if it did.
    pub retry_after: Option<Duration>,
}

impl PollError {
    fn new(message: String) -> PollError {
        PollError {
            message,
            retry_after: None,
        }
    }
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Alerts read, less those left out as journaled at the checkpoint by an earlier poll.
    pub fetched: usize,
    /// Events appended to the journal.
    pub appended: usize,
    /// The checkpoint after the poll.
    pub checkpoint: Option<String>,
    /// The poll stopped at `max_per_poll` (more follow on the next one).
    pub more: bool,
}

/// A position in the list ordered by last update: a time (parsed and as written) and the ids
/// of the alerts read at exactly that time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The last-update time.
    pub at: OffsetDateTime,
    /// `at` as Microsoft wrote it (kept for the next `$filter`).
    pub raw: String,
    /// Ids of the alerts read with exactly this last update.
    pub ids: BTreeSet<String>,
}

impl Mark {
    /// Moves `mark` to the alert `id` last updated at `at` when that is newer, or adds `id` to
    /// it when just as new.
    pub fn see(mark: &mut Option<Mark>, at: OffsetDateTime, raw: &str, id: &str) {
        match mark {
            Some(m) if at < m.at => {}
            Some(m) if at == m.at => {
                m.ids.insert(id.to_string());
            }
            _ => {
                *mark = Some(Mark {
                    at,
                    raw: raw.to_string(),
                    ids: BTreeSet::from([id.to_string()]),
                });
            }
        }
    }

    /// The ids, sorted.
    pub fn sorted_ids(self) -> Vec<String> {
        self.ids.into_iter().collect()
    }
}

/// The checkpoint after a poll, from the one before it (`old`), the newest alert the poll read
/// (`read`) and whether it stopped at `max_per_poll` (`more`).
///
/// A poll that read everything there was moves the checkpoint to the newest alert it read, or
/// leaves it where it was when it read only older ones (the overlap). A poll that stopped at
/// its limit checkpoints the last alert it read, even one older than `old`: it read the list in
/// order up to there and no further, so the next poll must continue from there — keeping the
/// newer `old` would step over the unread alerts between the two (many alerts arriving late,
/// inside the overlap window). Ids at the same time as `old` are kept with it.
pub fn next_checkpoint(old: Option<Mark>, read: Option<Mark>, more: bool) -> Option<Mark> {
    match (old, read) {
        (old, None) => old,
        (None, Some(read)) => Some(read),
        (Some(mut old), Some(read)) if read.at == old.at => {
            old.ids.extend(read.ids);
            Some(old)
        }
        (Some(old), Some(read)) if read.at < old.at && !more => Some(old),
        (Some(_), Some(read)) => Some(read),
    }
}

/// The ingestion of one asset: its settings, its journal, its state.
pub struct Ingestor {
    asset: Arc<Asset>,
    config: IngestionConfig,
    store: StateStore,
    /// The journal (outbox of the webhooks, store of the feed).
    journal: SharedJournal,
    /// Held by a poll: one at a time.
    polling: tokio::sync::Mutex<()>,
    /// With the Redis backend: the lease only whose holder polls and delivers.
    lease: Option<Arc<super::lease::Lease>>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("asset", &self.asset.config.id)
            .field("config", &self.config)
            .finish()
    }
}

/// The field names of a source: (last update, creation).
fn fields(source: IngestionSource) -> (&'static str, &'static str) {
    match source {
        IngestionSource::Graph => ("lastUpdateDateTime", "createdDateTime"),
        IngestionSource::Mde => ("lastUpdateTime", "alertCreationTime"),
    }
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

fn text<'a>(alert: &'a Value, key: &str) -> Option<&'a str> {
    alert.get(key).and_then(Value::as_str)
}

/// Whether `value` is among `allowed` (any case); an empty list allows everything.
fn allowed(allowed: &[String], value: Option<&str>) -> bool {
    allowed.is_empty() || value.is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
}

impl Ingestor {
    /// Opens the asset's journal under `state_dir`.
    pub fn open(
        asset: Arc<Asset>,
        config: IngestionConfig,
        store: StateStore,
    ) -> Result<Ingestor, JournalError> {
        let path = journal_path(store.dir(), &asset.config.id);
        let journal = Journal::open(&path, config.outbox_max_events)?;
        Ok(Ingestor {
            asset,
            config,
            store,
            journal: SharedJournal::new(journal),
            polling: tokio::sync::Mutex::new(()),
            lease: None,
        })
    }

    /// The ingestion of an asset whose state is in Redis: the journal in Redis, shared by
    /// every host, and the lease (held under the name `holder`, lasting `lease`) that lets one
    /// host at a time poll and deliver.
    pub fn shared(
        asset: Arc<Asset>,
        config: IngestionConfig,
        store: StateStore,
        link: Arc<crate::redis_link::RedisLink>,
        holder: String,
        lease: Duration,
    ) -> Ingestor {
        let journal = super::redis_journal::RedisJournal::new(
            link.clone(),
            &asset.config.id,
            config.outbox_max_events,
        );
        let lease = super::lease::Lease::new(link, &asset.config.id, holder, lease);
        Ingestor {
            asset,
            config,
            store,
            journal: SharedJournal::redis(journal),
            polling: tokio::sync::Mutex::new(()),
            lease: Some(lease),
        }
    }

    /// Waits until this host may poll and deliver (at once without a lease); answers whether
    /// it had to wait for the lease.
    pub async fn wait_leading(&self) -> bool {
        match &self.lease {
            Some(lease) => lease.wait().await,
            None => false,
        }
    }

    /// The lease, with the Redis backend.
    pub fn lease(&self) -> Option<&Arc<super::lease::Lease>> {
        self.lease.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &IngestionConfig {
        &self.config
    }

    /// The journal.
    pub fn journal(&self) -> &SharedJournal {
        &self.journal
    }

    /// The asset.
    pub fn asset(&self) -> &Arc<Asset> {
        &self.asset
    }

    /// The state store.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Whether the alert passes the configured filters.
    fn keeps(&self, alert: &Value) -> bool {
        let c = &self.config;
        allowed(&c.statuses, text(alert, "status"))
            && allowed(&c.severities, text(alert, "severity"))
            && allowed(&c.categories, text(alert, "category"))
            && allowed(&c.detection_sources, text(alert, "detectionSource"))
            && allowed(&c.service_sources, text(alert, "serviceSource"))
    }

    /// Runs one poll now (waiting for one in progress to end first).
    pub async fn poll_now(&self) -> Result<PollReport, String> {
        self.poll_recorded().await.map_err(|e| e.message)
    }

    /// Runs one poll and records its outcome in the state and the metrics.
    async fn poll_recorded(&self) -> Result<PollReport, PollError> {
        let _polling = self.polling.lock().await;
        let asset_id = self.asset.config.id.clone();
        let result = self.poll().await;
        let now = OffsetDateTime::now_utc();
        let now_secs = now.unix_timestamp();
        let outcome = result.clone();
        let saved = self
            .store
            .update(&asset_id, move |s| {
                let st = s.ingestion.get_or_insert_with(IngestionState::default);
                st.polls += 1;
                st.last_poll_at = Some(now_secs);
                match outcome {
                    Ok((report, _)) => {
                        st.last_outcome = Some("ok".into());
                        st.last_error = None;
                        st.delivered += report.appended as u64;
                    }
                    Err(e) => {
                        st.last_outcome = Some("failed".into());
                        st.last_error = Some(e.message);
                        st.errors += 1;
                    }
                }
                Ok::<_, String>(st.checkpoint.clone())
            })
            .await;
        let checkpoint = match saved {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                tracing::warn!(asset = %asset_id, "could not record the ingestion poll: {e}");
                None
            }
        };
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!(
            "defender_ingestion_polls_total",
            "asset" => asset_id.clone(),
            "outcome" => outcome
        )
        .increment(1);
        if let Some(at) = checkpoint.as_deref().and_then(parse_time) {
            metrics::gauge!(
                "defender_ingestion_checkpoint_age_seconds",
                "asset" => asset_id.clone()
            )
            .set((now - at).as_seconds_f64().max(0.0));
        }
        if let Ok((report, _)) = &result {
            metrics::gauge!("defender_ingestion_backlog", "asset" => asset_id)
                .set(if report.more { 1.0 } else { 0.0 });
        }
        result.map(|(report, _)| report)
    }

    /// One poll: list, journal, then checkpoint (the caller holds `polling`). Answers the
    /// report and the new state.
    async fn poll(&self) -> Result<(PollReport, IngestionState), PollError> {
        let asset_id = self.asset.config.id.clone();
        let state = self
            .store
            .load(&asset_id)
            .await
            .map_err(|e| PollError::new(format!("reading the ingestion state: {e}")))?
            .ingestion
            .unwrap_or_default();
        let (updated_field, created_field) = fields(self.config.source);
        let checkpoint = state.checkpoint.as_deref().and_then(parse_time);
        let start = checkpoint.unwrap_or_else(|| {
            OffsetDateTime::now_utc() - Duration::from_secs(self.config.first_run_lookback_secs)
        });
        // A poll that stopped at max_per_poll continues at the checkpoint itself, past the
        // alerts already seen there; otherwise the overlap is read again.
        let continuing = state.more && checkpoint.is_some();
        let mut filter = if continuing {
            Filter::ge_datetime_exact(updated_field, start)
        } else {
            Filter::ge_datetime(updated_field, start - OVERLAP)
        };
        if self.config.source == IngestionSource::Graph {
            for (field, values) in [
                ("status", &self.config.statuses),
                ("severity", &self.config.severities),
                ("serviceSource", &self.config.service_sources),
            ] {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                if let Some(f) = Filter::any_of(field, &values) {
                    filter = filter.and(f);
                }
            }
        }
        let mut query = ListQuery::new()
            .filter(filter.as_str())
            .order_by_asc(updated_field);
        // A continuing poll reads the alerts at the checkpoint again and leaves out, by id,
        // those already journaled there: counting them off with `$skip` would skip an unseen
        // alert whenever one of the seen ones moved on (updated) in between, and Microsoft
        // orders tied timestamps as it likes. The seen ones still at the checkpoint come back
        // on top of the `max_per_poll` new ones, so the read asks for that many more.
        let seen: HashSet<&str> = if continuing {
            state.ids_at_checkpoint.iter().map(String::as_str).collect()
        } else {
            HashSet::new()
        };
        let limit = self.config.max_per_poll as usize;
        let wanted = limit.saturating_add(seen.len());
        // Every page at background priority: polls leave the actions floor of each budget
        // window to playbooks and never queue ahead of their calls.
        let alerts = match self.config.source {
            IngestionSource::Graph => {
                self.asset
                    .graph
                    .with_priority(Priority::Background)
                    .list_with_page_size(
                        &GRAPH_ALERTS.at(&[]),
                        &query,
                        wanted,
                        GRAPH_ALERTS_MAX_TOP,
                    )
                    .await
            }
            IngestionSource::Mde => {
                if self.config.expand_evidence {
                    query = query.expand("evidence");
                }
                self.asset
                    .defender
                    .with_priority(Priority::Background)
                    .list(&ALERTS.at(&[]), &query, wanted)
                    .await
            }
        }
        .map_err(|e| PollError {
            message: format!("listing alerts: {e}"),
            retry_after: e.retry_after(),
        })?;

        let known = if self.config.include_updates {
            HashSet::new()
        } else {
            let ids = alerts
                .iter()
                .filter_map(|a| text(a, "id").map(str::to_string))
                .collect();
            self.journal
                .alerts_known(ids)
                .await
                .map_err(|e| PollError::new(format!("reading the alert journal: {e}")))?
        };
        let mut events: Vec<Event> = Vec::new();
        let mut keys: HashSet<String> = HashSet::new();
        let mut newest_read: Option<Mark> = None;
        let mut skipped = 0usize;
        for alert in &alerts {
            let id = text(alert, "id");
            let updated = text(alert, updated_field);
            let updated_at = updated.and_then(parse_time);
            if let (Some(id), Some(at)) = (id, updated_at)
                && at == start
                && seen.contains(id)
            {
                // Journaled by an earlier poll, unchanged since.
                skipped += 1;
                continue;
            }
            if let (Some(id), Some(at), Some(raw)) = (id, updated_at, updated) {
                Mark::see(&mut newest_read, at, raw, id);
            } else {
                tracing::warn!(
                    asset = %asset_id,
                    alert_id = id.unwrap_or("?"),
                    "an alert without a usable id or {updated_field} is delivered as it is"
                );
            }
            if !self.keeps(alert) {
                continue;
            }
            if id.is_some_and(|i| known.contains(i)) {
                continue;
            }
            let event_key = format!("{}@{}", id.unwrap_or("?"), updated.unwrap_or("?"));
            if !keys.insert(event_key.clone()) {
                continue;
            }
            let created = text(alert, created_field);
            let kind = if self.config.include_updates && created.and_then(parse_time) != updated_at
            {
                EventKind::Updated
            } else {
                EventKind::Created
            };
            events.push(Event {
                event_key,
                kind,
                asset: asset_id.clone(),
                source: self.config.source.as_str().to_string(),
                alert: alert.clone(),
            });
        }
        let appended = self
            .journal
            .append(events)
            .await
            .map_err(|e| PollError::new(format!("writing the alert journal: {e}")))?;
        record_appended(&asset_id, &appended, updated_field);
        let appended = appended.len();
        let more = alerts.len() >= wanted;
        let old = checkpoint.map(|at| Mark {
            at,
            raw: state.checkpoint.clone().unwrap_or_default(),
            ids: state.ids_at_checkpoint.iter().cloned().collect(),
        });
        let next = next_checkpoint(old, newest_read, more);
        let new_state = IngestionState {
            checkpoint: Some(next.as_ref().map_or_else(
                // Nothing seen yet: remember where the first run started.
                || {
                    start
                        .format(&Rfc3339)
                        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
                },
                |m| m.raw.clone(),
            )),
            ids_at_checkpoint: next.map(Mark::sorted_ids).unwrap_or_default(),
            more,
            ..state
        };
        let to_save = new_state.clone();
        self.store
            .update(&asset_id, move |s| {
                let st = s.ingestion.get_or_insert_with(IngestionState::default);
                st.checkpoint = to_save.checkpoint;
                st.ids_at_checkpoint = to_save.ids_at_checkpoint;
                st.more = to_save.more;
                Ok::<_, String>(())
            })
            .await
            .map_err(|e| PollError::new(format!("saving the ingestion checkpoint: {e}")))?;
        Ok((
            PollReport {
                fetched: alerts.len() - skipped,
                appended,
                checkpoint: new_state.checkpoint.clone(),
                more,
            },
            new_state,
        ))
    }

    /// Polls until the task is aborted: the first poll at once, each next one after
    /// [`next_wait`], recorded as the state's `next_poll_at`.
    pub async fn run(self: Arc<Self>) {
        let interval = Duration::from_secs(self.config.interval_secs);
        let asset_id = self.asset.config.id.clone();
        let mut wait = interval;
        let mut failures = 0u32;
        loop {
            self.wait_leading().await;
            let pace = match self.poll_recorded().await {
                Ok(r) => {
                    failures = 0;
                    if r.more {
                        Pace::More
                    } else if r.appended > 0 {
                        Pace::Found
                    } else {
                        Pace::Quiet
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(asset = %asset_id, "ingestion poll failed: {e}");
                    Pace::Failed {
                        failures,
                        retry_after: e.retry_after,
                    }
                }
            };
            wait = next_wait(interval, self.config.adaptive, wait, pace);
            let next = OffsetDateTime::now_utc() + wait;
            let saved = self
                .store
                .update(&asset_id, move |s| {
                    s.ingestion
                        .get_or_insert_with(IngestionState::default)
                        .next_poll_at = Some(next.unix_timestamp());
                    Ok::<_, String>(())
                })
                .await;
            if let Err(e) = saved {
                tracing::warn!(asset = %asset_id, "could not record the next ingestion poll: {e}");
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counts the events just journaled by kind, and how long after its last update each alert
/// reached the journal.
fn record_appended(asset: &str, events: &[Event], updated_field: &str) {
    let now = OffsetDateTime::now_utc();
    for event in events {
        let at = text(&event.alert, updated_field).and_then(parse_time);
        let kind = match event.kind {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
        };
        metrics::counter!(
            "defender_ingestion_events_total",
            "asset" => asset.to_string(),
            "kind" => kind
        )
        .increment(1);
        if let Some(at) = at {
            metrics::histogram!(
                "defender_ingestion_lag_seconds",
                "asset" => asset.to_string()
            )
            .record((now - at).as_seconds_f64().max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(secs: i64, ids: &[&str]) -> Mark {
        let at = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        Mark {
            at,
            raw: at.format(&Rfc3339).unwrap(),
            ids: ids.iter().map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn the_checkpoint_follows_what_was_read() {
        // Nothing read: unchanged.
        assert_eq!(
            next_checkpoint(Some(mark(10, &["a"])), None, false),
            Some(mark(10, &["a"]))
        );
        // Newer alerts read: the newest.
        assert_eq!(
            next_checkpoint(Some(mark(10, &["a"])), Some(mark(20, &["b"])), false),
            Some(mark(20, &["b"]))
        );
        // Only the overlap read (older): unchanged.
        assert_eq!(
            next_checkpoint(Some(mark(10, &["a"])), Some(mark(5, &["c"])), false),
            Some(mark(10, &["a"]))
        );
        // The same time: ids joined.
        assert_eq!(
            next_checkpoint(Some(mark(10, &["a"])), Some(mark(10, &["b"])), true),
            Some(mark(10, &["a", "b"]))
        );
        // Stopped at the limit inside the overlap: the next poll continues from there.
        assert_eq!(
            next_checkpoint(Some(mark(10, &["a"])), Some(mark(5, &["c"])), true),
            Some(mark(5, &["c"]))
        );
        assert_eq!(
            next_checkpoint(None, Some(mark(5, &["c"])), true),
            Some(mark(5, &["c"]))
        );
    }

    #[test]
    fn the_wait_follows_what_the_poll_found() {
        let s = Duration::from_secs;
        let interval = s(60);
        let next = |previous, pace| next_wait(interval, true, previous, pace);
        // New alerts: the next poll comes sooner.
        assert_eq!(next(s(60), Pace::Found), s(15));
        // Quiet polls double back up to the interval, never past it.
        assert_eq!(next(s(15), Pace::Quiet), s(30));
        assert_eq!(next(s(30), Pace::Quiet), s(60));
        assert_eq!(next(s(60), Pace::Quiet), s(60));
        // Stopped at max_per_poll: one second, then a quiet poll starts from the short wait.
        assert_eq!(next(s(60), Pace::More), s(1));
        assert_eq!(next(s(1), Pace::Quiet), s(15));
        // A short interval: never below two seconds, never above the interval.
        assert_eq!(next_wait(s(4), true, s(4), Pace::Found), s(2));
        assert_eq!(next_wait(s(1), true, s(1), Pace::Found), s(1));
        assert_eq!(next_wait(s(8), true, s(8), Pace::Found), s(2));
        assert_eq!(next_wait(s(8), true, s(2), Pace::Quiet), s(4));
        let ms = Duration::from_millis;
        assert_eq!(next_wait(s(10), true, s(10), Pace::Found), ms(2500));
        assert_eq!(next_wait(s(10), true, ms(2500), Pace::Quiet), s(5));
    }

    #[test]
    fn failed_polls_back_off_and_honour_retry_after() {
        let s = Duration::from_secs;
        let interval = s(60);
        let failed = |failures, retry_after| Pace::Failed {
            failures,
            retry_after,
        };
        let next = |pace| next_wait(interval, true, s(15), pace);
        assert_eq!(next(failed(1, None)), s(60));
        assert_eq!(next(failed(2, None)), s(120));
        assert_eq!(next(failed(3, None)), s(240));
        assert_eq!(next(failed(4, None)), s(240));
        assert_eq!(next(failed(u32::MAX, None)), s(240));
        // A Retry-After longer than the backoff is waited out; a shorter one changes nothing.
        assert_eq!(next(failed(1, Some(s(90)))), s(90));
        assert_eq!(next(failed(3, Some(s(90)))), s(240));
        assert_eq!(next(failed(1, Some(s(3600)))), s(3600));
        assert_eq!(next(failed(1, Some(s(10 * 86_400)))), MAX_RETRY_AFTER);
        // The first success after failures: back to the short or the full wait.
        assert_eq!(next_wait(interval, true, s(240), Pace::Found), s(15));
        assert_eq!(next_wait(interval, true, s(240), Pace::Quiet), s(60));
    }

    #[test]
    fn without_adaptive_the_interval_holds() {
        let s = Duration::from_secs;
        let interval = s(60);
        for (previous, pace) in [
            (s(60), Pace::Found),
            (s(1), Pace::Quiet),
            (
                s(60),
                Pace::Failed {
                    failures: 3,
                    retry_after: None,
                },
            ),
        ] {
            assert_eq!(next_wait(interval, false, previous, pace), s(60));
        }
        assert_eq!(next_wait(interval, false, s(60), Pace::More), s(1));
        assert_eq!(
            next_wait(
                interval,
                false,
                s(60),
                Pace::Failed {
                    failures: 1,
                    retry_after: Some(s(300))
                }
            ),
            s(300)
        );
    }

    #[test]
    fn a_mark_keeps_the_newest_time_and_its_ids() {
        let mut m = None;
        for (secs, id) in [(5, "a"), (7, "b"), (7, "c"), (6, "d"), (7, "b")] {
            let at = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            Mark::see(&mut m, at, &at.format(&Rfc3339).unwrap(), id);
        }
        assert_eq!(m, Some(mark(7, &["b", "c"])));
    }
}
