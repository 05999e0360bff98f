//! The poller of one asset: every `interval_secs` it lists the alerts whose last update is at
//! or after its checkpoint (less a two-minute overlap for clock skew), ordered by last update,
//! following every page up to `max_per_poll`; turns them into events, appends the events to
//! the journal and only then advances the checkpoint `(timestamp, ids at that timestamp)` in
//! the asset's state file. A poll that stopped at `max_per_poll` is continued from the
//! checkpoint itself, leaving out by id the alerts journaled there already. A failed list
//! (429, 5xx, transport) leaves the checkpoint alone.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::journal::{Event, EventKind, Journal, JournalError, SharedJournal, journal_path};
use crate::app::Asset;
use crate::config::{IngestionConfig, IngestionSource};
use crate::defender::ListQuery;
use crate::defender::endpoints::{ALERTS, GRAPH_ALERTS, GRAPH_ALERTS_MAX_TOP};
use crate::defender::odata::Filter;
use crate::state::{IngestionState, StateStore};

/// How far before the checkpoint each poll reads again (clock skew, late writes).
pub const OVERLAP: Duration = Duration::from_secs(120);

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
        })
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
        let _polling = self.polling.lock().await;
        let asset_id = self.asset.config.id.clone();
        let result = self.poll().await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let outcome = result.clone();
        let saved = self
            .store
            .update(&asset_id, move |s| {
                let st = s.ingestion.get_or_insert_with(IngestionState::default);
                st.polls += 1;
                st.last_poll_at = Some(now);
                match outcome {
                    Ok((report, _)) => {
                        st.last_outcome = Some("ok".into());
                        st.last_error = None;
                        st.delivered += report.appended as u64;
                    }
                    Err(e) => {
                        st.last_outcome = Some("failed".into());
                        st.last_error = Some(e);
                        st.errors += 1;
                    }
                }
                Ok::<_, String>(())
            })
            .await;
        if let Err(e) = saved {
            tracing::warn!(asset = %asset_id, "could not record the ingestion poll: {e}");
        }
        result.map(|(report, _)| report)
    }

    /// One poll: list, journal, then checkpoint. Answers the report and the new state.
    async fn poll(&self) -> Result<(PollReport, IngestionState), String> {
        let asset_id = self.asset.config.id.clone();
        let state = self
            .store
            .load(&asset_id)
            .await
            .map_err(|e| format!("reading the ingestion state: {e}"))?
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
        let alerts = match self.config.source {
            IngestionSource::Graph => {
                self.asset
                    .graph
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
                    .list(&ALERTS.at(&[]), &query, wanted)
                    .await
            }
        }
        .map_err(|e| format!("listing alerts: {e}"))?;

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
                .map_err(|e| format!("reading the alert journal: {e}"))?
        };
        let mut events = Vec::new();
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
            let created = text(alert, created_field);
            let kind = if self.config.include_updates && created.and_then(parse_time) != updated_at
            {
                EventKind::Updated
            } else {
                EventKind::Created
            };
            events.push(Event {
                event_key: format!("{}@{}", id.unwrap_or("?"), updated.unwrap_or("?")),
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
            .map_err(|e| format!("writing the alert journal: {e}"))?;
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
            .map_err(|e| format!("saving the ingestion checkpoint: {e}"))?;
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

    /// Polls every `interval_secs` (the first poll at once; sooner again while a poll stops
    /// at `max_per_poll`) until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let interval = Duration::from_secs(self.config.interval_secs);
        loop {
            let wait = match self.poll_now().await {
                Ok(r) if r.more => Duration::from_secs(1),
                Ok(_) => interval,
                Err(e) => {
                    tracing::warn!(asset = %self.asset.config.id, "ingestion poll failed: {e}");
                    interval
                }
            };
            tokio::time::sleep(wait).await;
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
    fn a_mark_keeps_the_newest_time_and_its_ids() {
        let mut m = None;
        for (secs, id) in [(5, "a"), (7, "b"), (7, "c"), (6, "d"), (7, "b")] {
            let at = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            Mark::see(&mut m, at, &at.format(&Rfc3339).unwrap(), id);
        }
        assert_eq!(m, Some(mark(7, &["b", "c"])));
    }
}
