//! `Idempotency-Key` for live response: the key → event id mapping in the asset's state file.
//!
//! Before a new live response is requested, the key is looked up in the asset's state: a
//! record made by the same action with the same parameters names the event to resume instead;
//! a record of another action or other parameters is refused. After Defender accepted the
//! request, the record is written (and made durable) before the wait begins, so a repeat of the
//! request — from the same process, or after the host was killed and restarted — resumes that
//! live response rather than starting another. Records older than [`RETENTION_SECS`] are
//! ignored and pruned whenever a record is written.
//!
//! Within one process, requests with the same key run the lookup, the POST and the write one
//! at a time; with the Redis backend, so do hosts sharing the Redis (the key's claim there).
//! Between processes sharing a state directory the one-session-per-device rule of Defender
//! stands in: a second POST is answered `ActiveRequestAlreadyExists` and resolved to the same
//! session.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::command::LiveCommand;
use crate::actions::{ActionContext, truncate};
use crate::envelope::ActionError;
use crate::state::{IdempotencyRecord, now_unix};

/// How long a key is remembered: seven days.
pub const RETENTION_SECS: i64 = 7 * 24 * 3600;

/// The SHA256 (hex) of what a new live response would do: the action, the device, the
/// command with its parameters and the comment, as one canonical JSON text. The timeout is
/// left out, so a repeat with a longer timeout resumes the same live response.
pub fn params_hash(action: &str, device_id: &str, command: &LiveCommand, comment: &str) -> String {
    let canonical = json!({
        "action": action,
        "device_id": device_id.trim().to_ascii_lowercase(),
        "command": command.to_json(),
        "comment": comment,
    })
    .to_string();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One lock per (asset, key): requests with the same key look up, submit and record one at a
/// time within this process.
pub fn key_lock(ctx: &ActionContext, key: &str) -> Arc<tokio::sync::Mutex<()>> {
    ctx.asset.idempotency_locks.get(key)
}

/// With the Redis backend, the key's claim across hosts (held until dropped), so requests with
/// the same key on different hosts also look up, submit and record one at a time.
pub async fn claim(
    ctx: &ActionContext,
    key: &str,
) -> Result<Option<crate::state::Claim>, ActionError> {
    ctx.app
        .state
        .claim(&ctx.asset.config.id, &format!("idempotency:{key}"))
        .await
        .map_err(|e| {
            ActionError::Internal(format!(
                "the Idempotency-Key cannot be claimed in the shared state: {e}"
            ))
        })
}

/// Whether a record is still within [`RETENTION_SECS`] at `now`.
fn live(record: &IdempotencyRecord, now: i64) -> bool {
    now.saturating_sub(record.created_at) < RETENTION_SECS
}

/// Drops the records older than [`RETENTION_SECS`].
pub fn prune(records: &mut BTreeMap<String, IdempotencyRecord>, now: i64) {
    records.retain(|_, r| live(r, now));
}

/// What a key's record says about a request.
pub fn check(
    record: Option<&IdempotencyRecord>,
    key: &str,
    action: &str,
    hash: &str,
    now: i64,
) -> Result<Option<String>, ActionError> {
    let Some(r) = record.filter(|r| live(r, now)) else {
        return Ok(None);
    };
    if r.action != action {
        return Err(ActionError::InvalidParameter(format!(
            "header 'Idempotency-Key': '{}' was used for {} (event {}); use a new key for {action}",
            truncate(key, 64),
            r.action,
            r.event_id
        )));
    }
    if r.params_hash != hash {
        return Err(ActionError::InvalidParameter(format!(
            "header 'Idempotency-Key': Idempotency-Key reused with different parameters ('{}' \
             started event {} with other parameters); use a new key",
            truncate(key, 64),
            r.event_id
        )));
    }
    Ok(Some(r.event_id.clone()))
}

/// The event an earlier request with `key` started, when it was the same action with the same
/// parameters; an error when the key was used otherwise.
pub async fn lookup(
    ctx: &ActionContext,
    key: &str,
    action: &str,
    hash: &str,
) -> Result<Option<String>, ActionError> {
    let state = ctx
        .app
        .state
        .load(&ctx.asset.config.id)
        .await
        .map_err(|e| {
            ActionError::Internal(format!(
                "the Idempotency-Key cannot be checked: the asset's state file cannot be read: {e}"
            ))
        })?;
    check(state.idempotency.get(key), key, action, hash, now_unix())
}

/// Records that `key` started `event_id` (durable when this returns), pruning old records.
/// A record for the key made meanwhile by another process wins and is kept.
pub async fn remember(
    ctx: &ActionContext,
    key: &str,
    action: &str,
    hash: &str,
    event_id: &str,
) -> Result<(), String> {
    let record = IdempotencyRecord {
        action: action.to_string(),
        event_id: event_id.to_string(),
        params_hash: hash.to_string(),
        created_at: now_unix(),
    };
    let key = key.to_string();
    ctx.app
        .state
        .update(&ctx.asset.config.id, move |s| {
            let now = now_unix();
            prune(&mut s.idempotency, now);
            s.idempotency.entry(key).or_insert(record);
            Ok::<_, std::convert::Infallible>(())
        })
        .await
        .map_err(|e| e.into_state().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, hash: &str, created_at: i64) -> IdempotencyRecord {
        IdempotencyRecord {
            action: action.into(),
            event_id: "e1".into(),
            params_hash: hash.into(),
            created_at,
        }
    }

    #[test]
    fn hash_is_canonical_and_ignores_nothing_that_matters() {
        let dev = "A".repeat(40);
        let cmd = LiveCommand::get_file("C:\\x");
        let h = params_hash("get_file", &dev, &cmd, "c");
        assert_eq!(h.len(), 64);
        assert_eq!(h, params_hash("get_file", &dev.to_lowercase(), &cmd, "c"));
        assert_ne!(h, params_hash("get_file", &dev, &cmd, "d"));
        assert_ne!(
            h,
            params_hash("get_file", &dev, &LiveCommand::get_file("C:\\y"), "c")
        );
        assert_ne!(h, params_hash("run_script", &dev, &cmd, "c"));
    }

    #[test]
    fn records_are_checked() {
        let now = 1_000_000;
        assert_eq!(check(None, "k", "get_file", "h", now).unwrap(), None);
        let r = record("get_file", "h", now - 10);
        assert_eq!(
            check(Some(&r), "k", "get_file", "h", now)
                .unwrap()
                .as_deref(),
            Some("e1")
        );
        let e = check(Some(&r), "k", "get_file", "other", now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Idempotency-Key reused with different parameters"),
            "{e}"
        );
        let e = check(Some(&r), "k", "run_script", "h", now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("get_file") && e.contains("run_script"), "{e}");
        let old = record("get_file", "h", now - RETENTION_SECS);
        assert_eq!(
            check(Some(&old), "k", "run_script", "x", now).unwrap(),
            None
        );
    }

    #[test]
    fn pruning_drops_week_old_records() {
        let now = 10 * RETENTION_SECS;
        let mut map = BTreeMap::new();
        map.insert("fresh".to_string(), record("get_file", "h", now - 60));
        map.insert(
            "edge".to_string(),
            record("get_file", "h", now - RETENTION_SECS + 1),
        );
        map.insert(
            "old".to_string(),
            record("get_file", "h", now - RETENTION_SECS),
        );
        prune(&mut map, now);
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(keys, ["edge", "fresh"]);
    }
}
