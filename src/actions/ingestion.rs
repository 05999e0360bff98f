//! Alert ingestion as actions: `ingestion_status` reports where the asset's poller stands
//! (from its state and journal, without calling Microsoft); `on_poll` is Splunk's ingestion
//! action, reading the alerts created since a time straight from `/api/alerts` as containers,
//! for a SOAR platform that schedules its own polls (the poller's checkpoint is not touched).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::alerts::moment;
use super::{Action, ActionContext, HandlerFn, erase};
use crate::defender::{Filter, ListQuery, endpoints};
use crate::envelope::{ActionError, Outcome};

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![erase::<IngestionStatus>(), erase::<OnPoll>()]
}

// --- ingestion_status ----------------------------------------------------------------------

/// `ingestion_status`.
pub struct IngestionStatus;

/// Parameters of `ingestion_status` (none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {}

/// A unix time as RFC 3339 UTC.
fn unix_to_text(secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

impl Action for IngestionStatus {
    const ID: &'static str = "ingestion_status";
    type Params = StatusParams;

    async fn run(ctx: ActionContext, _: StatusParams) -> Result<Outcome, ActionError> {
        let asset_id = ctx.asset.config.id.clone();
        let Some(ingestor) = ctx.app.ingestors.get(&asset_id).cloned() else {
            return Ok(Outcome::failed(format!(
                "alert ingestion is off for asset {asset_id}: set [assets.{asset_id}.ingestion] \
                 enabled = true to turn it on"
            )));
        };
        let stats = ingestor
            .journal()
            .stats()
            .await
            .map_err(|e| ActionError::Internal(format!("reading the alert journal: {e}")))?;
        let (last_seq, size) = (stats.last_seq, stats.size_bytes);
        let state = ctx
            .app
            .state
            .load(&asset_id)
            .await
            .map_err(|e| ActionError::Internal(format!("reading the ingestion state: {e}")))?
            .ingestion
            .unwrap_or_default();
        let config = ingestor.config();
        let last_poll_at = state.last_poll_at.and_then(unix_to_text);
        let webhooks: Vec<Value> = config
            .webhooks
            .iter()
            .map(|hook| {
                let id = hook.id();
                let w = state.webhooks.get(&id).cloned().unwrap_or_default();
                json!({
                    "id": id,
                    "receiver": hook.shown(),
                    "cursor": w.cursor,
                    "backlog": last_seq.saturating_sub(w.cursor),
                    "delivered": w.delivered,
                    "failures": w.failures,
                    "consecutive_failures": w.consecutive_failures,
                    "dropped": w.dropped,
                    "last_success_at": w.last_success_at.and_then(unix_to_text),
                    "last_failure_at": w.last_failure_at.and_then(unix_to_text),
                    "failing_since": w.failing_since.and_then(unix_to_text),
                    "last_error": w.last_error,
                    "healthy": w.consecutive_failures == 0,
                })
            })
            .collect();
        let failing = webhooks.iter().filter(|w| w["healthy"] == false).count();
        let next_poll_at = state.next_poll_at.and_then(unix_to_text);
        let data = json!({
            "enabled": config.enabled,
            "source": config.source.as_str(),
            "interval_secs": config.interval_secs,
            "max_per_poll": config.max_per_poll,
            "include_updates": config.include_updates,
            "adaptive": config.adaptive,
            "actions_floor_percent": config.actions_floor_percent,
            "last_poll_at": last_poll_at,
            "next_poll_at": next_poll_at,
            "last_outcome": state.last_outcome,
            "last_error": state.last_error,
            "polls": state.polls,
            "checkpoint": state.checkpoint,
            "ids_at_checkpoint": state.ids_at_checkpoint.len(),
            "more": state.more,
            "journal_last_seq": last_seq,
            "journal_size_bytes": size,
            "journal_events_kept": stats.events,
            "journal_dropped_since_start": stats.dropped,
            "outbox_max_events": config.outbox_max_events,
            "delivered": state.delivered,
            "errors": state.errors,
            "webhooks": webhooks,
        });
        let message = match (&state.last_outcome, &last_poll_at) {
            (Some(outcome), Some(at)) => format!(
                "Ingestion is on; the last poll ended {at} ({outcome}); {} events journaled",
                last_seq
            ),
            _ => "Ingestion is on; no poll has ended yet".to_string(),
        };
        let mut outcome = Outcome::success(message)
            .with_summary("enabled", config.enabled)
            .with_summary("last_outcome", data["last_outcome"].clone())
            .with_summary("last_poll_at", data["last_poll_at"].clone())
            .with_summary("next_poll_at", data["next_poll_at"].clone())
            .with_summary("checkpoint", data["checkpoint"].clone())
            .with_summary("journal_last_seq", last_seq)
            .with_summary("delivered", state.delivered)
            .with_summary("errors", state.errors)
            .with_summary("webhooks", webhooks.len())
            .with_summary("webhooks_failing", failing);
        outcome.data = vec![data];
        Ok(outcome)
    }
}

// --- on_poll -------------------------------------------------------------------------------

/// `on_poll`.
pub struct OnPoll;

/// Parameters of `on_poll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPollParams {
    /// Alerts created at or after this time (default one day ago).
    #[serde(default)]
    pub start_time: Option<String>,
    /// Most containers answered.
    pub container_count: u64,
    /// Accepted for Splunk playbooks; each container has one artifact.
    pub artifact_count: u64,
}

/// How far back `on_poll` reads without a `start_time`.
pub const DEFAULT_LOOKBACK: Duration = Duration::days(1);

/// A container's severity from a Defender alert severity (any case): high, medium or low.
pub fn container_severity(severity: Option<&str>) -> &'static str {
    match severity.map(str::to_ascii_lowercase).as_deref() {
        Some("high") => "high",
        Some("medium") => "medium",
        _ => "low",
    }
}

/// The container of one alert (Splunk's shape).
pub fn container(alert: Value) -> Value {
    let text = |key: &str| alert.get(key).and_then(Value::as_str).map(str::to_string);
    let cef = match &alert {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    json!({
        "name": text("title").unwrap_or_else(|| "Defender alert".to_string()),
        "source_data_identifier": text("id"),
        "severity": container_severity(text("severity").as_deref()),
        "start_time": text("alertCreationTime"),
        "artifacts": [{"name": "alert", "cef": cef}],
    })
}

impl Action for OnPoll {
    const ID: &'static str = "on_poll";
    type Params = OnPollParams;

    async fn run(ctx: ActionContext, p: OnPollParams) -> Result<Outcome, ActionError> {
        let start = match p
            .start_time
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(raw) => moment("start_time", raw)?,
            None => OffsetDateTime::now_utc() - DEFAULT_LOOKBACK,
        };
        let query = ListQuery::new()
            .filter(Filter::ge_datetime("alertCreationTime", start).as_str())
            .order_by_asc("alertCreationTime");
        let limit = usize::try_from(p.container_count).unwrap_or(usize::MAX);
        let alerts = match ctx
            .asset
            .defender
            .list(&endpoints::ALERTS.at(&[]), &query, limit)
            .await
        {
            Ok(a) => a,
            Err(e) => return super::listing::failure(e, "listing alerts", None),
        };
        let containers: Vec<Value> = super::listing::records(alerts)
            .into_iter()
            .map(container)
            .collect();
        let since = start
            .format(&Rfc3339)
            .unwrap_or_else(|_| "the start time".into());
        let n = containers.len();
        let mut outcome = Outcome::success(format!(
            "{} created since {since}",
            super::listing::found(n, "alert", "alerts")
        ))
        .with_summary("total_containers", n);
        outcome.data = containers;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_to_three_levels() {
        for (given, want) in [
            (Some("High"), "high"),
            (Some("medium"), "medium"),
            (Some("Low"), "low"),
            (Some("Informational"), "low"),
            (Some("UnSpecified"), "low"),
            (None, "low"),
        ] {
            assert_eq!(container_severity(given), want, "{given:?}");
        }
    }

    #[test]
    fn a_container_carries_the_alert() {
        let alert = json!({"id": "da1", "title": "Malware", "severity": "High",
            "alertCreationTime": "2025-11-01T00:00:00Z", "machineId": "m1"});
        let c = container(alert.clone());
        assert_eq!(c["name"], "Malware");
        assert_eq!(c["source_data_identifier"], "da1");
        assert_eq!(c["severity"], "high");
        assert_eq!(c["start_time"], "2025-11-01T00:00:00Z");
        assert_eq!(c["artifacts"], json!([{"name": "alert", "cef": alert}]));
    }
}
