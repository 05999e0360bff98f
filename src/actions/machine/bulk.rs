//! Bulk containment: one device action on up to 500 devices in one call
//! (`quarantine_devices`, `unquarantine_devices`, `scan_devices`, `restrict_app_executions`,
//! `quarantine_files`).
//!
//! Each device (an id, a computer name or an IP address) is resolved, then its action is
//! submitted and followed by the same engine as the single-device action: one POST per device,
//! never repeated, at the budget's containment priority; a device already running the same
//! kind of action has that action followed instead; every event is followed by the asset's
//! shared poller until it is final or the call's `timeout` has passed. Devices named twice
//! (or by two names that resolve to the same device) get one action. A device that fails —
//! unknown name, refused request, budget exhausted — gets a failed row and never stops the
//! others. The answer has one row per device and a summary of how they ended.
//!
//! With an `Idempotency-Key` the call is recorded in the asset's state: the key with a hash of
//! the parameters, and each device's event as it is accepted. A repeat of the call with the
//! same key follows the recorded events instead of submitting again (after a restart too); the
//! key with other parameters is refused.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::device::{
    DeviceKind, ISOLATE, RESTRICT, SCAN, STOP_AND_QUARANTINE, UNISOLATE, sha1_param,
};
use super::waiting::{self, ActionStatus, WaitSpec, Waited};
use crate::actions::alerts::id_list;
use crate::actions::choices::{IsolationType, ScanType};
use crate::actions::engine::{self, End, Followed, is_device_id, required_text};
use crate::actions::live_response::idempotency;
use crate::actions::{Action, ActionContext, truncate};
use crate::envelope::{ActionError, Outcome};

/// Devices looked up at the same time.
const LOOKUPS: usize = 16;
/// Devices submitted and followed at the same time (the request budget paces the calls; the
/// shared poller follows each event).
const IN_FLIGHT: usize = 64;

/// A device as the bulk actions accept it in a list: a device id, an IP address or a host name
/// (dot-separated labels of letters, digits, '-' and '_'); lower-cased so that one device named
/// twice is one entry.
fn device_item(param: &str, raw: &str) -> Result<String, ActionError> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    if is_device_id(raw) || raw.parse::<std::net::IpAddr>().is_ok() || raw.split('.').all(label) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is neither a device id (40 hex characters), a computer \
             DNS name nor an IP address",
            truncate(raw, 64)
        )))
    }
}

/// The devices of `device_ids`: up to 500, duplicates dropped.
pub fn device_list(raw: &str) -> Result<Vec<String>, ActionError> {
    id_list("device_ids", raw, "device", "a bulk action takes", |item| {
        device_item("device_ids", item)
    })
}

/// How one device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Succeeded,
    Failed,
    Pending,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Failed => "failed",
            Ending::Pending => "pending",
        }
    }
}

/// One device's row.
#[derive(Debug, Clone)]
struct Row {
    given: String,
    device_id: Option<String>,
    event_id: Option<String>,
    status: Option<String>,
    ending: Ending,
    existing: bool,
    duplicate_of: Option<String>,
    message: String,
}

impl Row {
    fn failed(given: &str, device_id: Option<&str>, message: String) -> Row {
        Row {
            given: given.to_string(),
            device_id: device_id.map(str::to_string),
            event_id: None,
            status: None,
            ending: Ending::Failed,
            existing: false,
            duplicate_of: None,
            message,
        }
    }

    fn followed(
        given: &str,
        device_id: &str,
        kind: &DeviceKind,
        timeout: u64,
        f: &Followed,
    ) -> Row {
        let outcome = super::device::outcome(kind, device_id, timeout, f);
        let ending = match (&f.end, &f.action.status) {
            (End::Final, ActionStatus::Succeeded) => Ending::Succeeded,
            (End::Final, _) => Ending::Failed,
            _ => Ending::Pending,
        };
        Row {
            given: given.to_string(),
            device_id: Some(device_id.to_string()),
            event_id: Some(f.action.id.clone()),
            status: Some(f.action.status.as_str().to_string()),
            ending,
            existing: f.existing,
            duplicate_of: None,
            message: outcome.message,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "device": self.given,
            "device_id": self.device_id,
            "event_id": self.event_id,
            "status": self.status,
            "outcome": self.ending.as_str(),
            "existing_action": self.existing,
            "duplicate_of": self.duplicate_of,
            "message": self.message,
        })
    }
}

/// A bulk call: the kind of action, its body without the device, the devices as given.
struct Bulk<'a> {
    action: &'static str,
    kind: &'static DeviceKind,
    body: Value,
    devices: Vec<String>,
    timeout: u64,
    ctx: &'a ActionContext,
    /// The call's Idempotency-Key record is written (once, with the first accepted device).
    call_recorded: tokio::sync::OnceCell<()>,
}

/// The SHA256 (hex) of a bulk call's parameters (the timeout left out).
fn call_hash(action: &str, body: &Value, devices: &[String]) -> String {
    let canonical = json!({"action": action, "body": body, "devices": devices}).to_string();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Bulk<'_> {
    /// Resolves, submits and follows every device; answers the envelope.
    async fn run(self) -> Result<Outcome, ActionError> {
        let ctx = self.ctx;
        let deadline = Instant::now() + Duration::from_secs(self.timeout);
        let key = ctx.idempotency_key.clone();
        let hash = call_hash(self.action, &self.body, &self.devices);
        let _key_lock = match &key {
            Some(k) => {
                let lock = idempotency::key_lock(ctx, k);
                let guard = lock.lock_owned().await;
                let claim = idempotency::claim(ctx, k).await?;
                // The key with other parameters (or of another action) is refused. The call is
                // recorded once a first device's action was accepted: a call that sent nothing
                // leaves no record.
                idempotency::lookup(ctx, k, self.action, &hash).await?;
                Some((guard, claim))
            }
            None => None,
        };
        ctx.progress(&format!(
            "{} on {} devices",
            self.kind.defender_type,
            self.devices.len()
        ));

        // Resolve every name; one device named twice gets one action.
        let resolved: Vec<(String, Result<String, ActionError>)> =
            futures::stream::iter(self.devices.iter().cloned())
                .map(|given| async move {
                    let lookup = engine::resolve_device(ctx, "device_ids", &given);
                    let r = match tokio::time::timeout_at(deadline, lookup).await {
                        Ok(r) => r.map(|d| d.id),
                        Err(_) => Err(ActionError::Failed(format!(
                            "{given} was not looked up before the timeout; nothing was sent \
                             for it"
                        ))),
                    };
                    (given, r)
                })
                .buffered(LOOKUPS)
                .collect()
                .await;
        let mut first_of: HashMap<String, String> = HashMap::new();
        let mut rows: Vec<Option<Row>> = Vec::with_capacity(resolved.len());
        let mut work: Vec<(usize, String, String)> = Vec::new();
        for (i, (given, r)) in resolved.into_iter().enumerate() {
            match r {
                Err(e) => rows.push(Some(Row::failed(&given, None, e.to_string()))),
                Ok(id) => match first_of.get(&id) {
                    Some(first) => {
                        let mut row = Row::failed(
                            &given,
                            Some(&id),
                            format!("the same device as {first}: one action for both"),
                        );
                        row.duplicate_of = Some(first.clone());
                        rows.push(Some(row));
                    }
                    None => {
                        first_of.insert(id.clone(), given.clone());
                        rows.push(None);
                        work.push((i, given, id));
                    }
                },
            }
        }

        // Submit and follow the rest.
        let done: Vec<(usize, Row)> = futures::stream::iter(work)
            .map(|(i, given, id)| {
                let bulk = &self;
                let key = key.clone();
                let hash = hash.clone();
                async move {
                    let row = bulk.one(&given, &id, deadline, key.as_deref(), &hash).await;
                    ctx.progress(&format!(
                        "{given}: {}{}",
                        row.ending.as_str(),
                        row.status
                            .as_deref()
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default()
                    ));
                    (i, row)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for (i, row) in done {
            if let Some(slot) = rows.get_mut(i) {
                *slot = Some(row);
            }
        }
        // A duplicate ends as its first naming did.
        let by_given: HashMap<String, Row> = rows
            .iter()
            .flatten()
            .filter(|r| r.duplicate_of.is_none())
            .map(|r| (r.given.clone(), r.clone()))
            .collect();
        let rows: Vec<Row> = rows
            .into_iter()
            .flatten()
            .map(|mut r| {
                if let Some(first) = r.duplicate_of.clone()
                    && let Some(f) = by_given.get(&first)
                {
                    r.event_id = f.event_id.clone();
                    r.status = f.status.clone();
                    r.ending = f.ending;
                }
                r
            })
            .collect();
        Ok(self.envelope(rows))
    }

    /// Submits and follows the action on one device (or follows the event an earlier call
    /// with the same Idempotency-Key started there).
    async fn one(
        &self,
        given: &str,
        device: &str,
        deadline: Instant,
        key: Option<&str>,
        hash: &str,
    ) -> Row {
        let ctx = self.ctx;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        if Instant::now() >= deadline {
            return Row::failed(
                given,
                Some(device),
                "not submitted before the timeout; nothing was sent for this device (repeat \
                 the call with the same Idempotency-Key to go on)"
                    .into(),
            );
        }
        let device_key = key.map(|k| format!("{k}#{device}"));
        if let Some(dk) = &device_key {
            match idempotency::lookup(ctx, dk, self.action, hash).await {
                Ok(Some(event_id)) => return self.resume(given, device, &event_id, deadline).await,
                Ok(None) => {}
                Err(e) => return Row::failed(given, Some(device), e.to_string()),
            }
        }
        let submitted = engine::submit(ctx, self.kind, device, &self.body, deadline).await;
        match submitted {
            Ok(engine::Submitted::Action { action, existing }) => {
                if let (Some(k), Some(dk)) = (key, &device_key) {
                    let recorded = self
                        .call_recorded
                        .get_or_try_init(|| {
                            idempotency::remember(ctx, k, self.action, hash, "bulk")
                        })
                        .await
                        .map(|_| ());
                    let device_recorded = match recorded {
                        Ok(()) => {
                            idempotency::remember(ctx, dk, self.action, hash, &action.id).await
                        }
                        Err(e) => Err(e),
                    };
                    if let Err(e) = device_recorded {
                        tracing::warn!(device, "the Idempotency-Key record was not written: {e}");
                    }
                }
                let followed = engine::follow(ctx, *action, deadline).await;
                let f = Followed {
                    existing,
                    ..followed
                };
                Row::followed(given, device, self.kind, remaining, &f)
            }
            Ok(engine::Submitted::Refused(o)) => Row::failed(given, Some(device), o.message),
            Err(e) => Row::failed(given, Some(device), format!("not submitted: {e}")),
        }
    }

    /// Follows an event recorded under the call's Idempotency-Key.
    async fn resume(&self, given: &str, device: &str, event_id: &str, deadline: Instant) -> Row {
        let spec = WaitSpec {
            event_id: event_id.to_string(),
            known: None,
            hold_until: deadline,
            answer_by: deadline.max(Instant::now() + engine::ANSWER_GRACE),
            fresh_since: None,
            eager: false,
        };
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        let (action, end) = match waiting::wait(self.ctx, spec).await {
            Ok(Waited::Final(a)) => (a, End::Final),
            Ok(Waited::Running { last, problem }) => (
                last,
                End::Running {
                    problem: problem.map(|p| p.to_string()),
                },
            ),
            Err(e) => {
                let mut row = Row::failed(
                    given,
                    Some(device),
                    format!(
                        "the event {event_id} this Idempotency-Key started cannot be read: {e}"
                    ),
                );
                row.event_id = Some(event_id.to_string());
                return row;
            }
        };
        let mut row = Row::followed(
            given,
            device,
            self.kind,
            timeout,
            &Followed {
                action,
                existing: true,
                end,
            },
        );
        row.message = format!("(Idempotency-Key replay) {}", row.message);
        row
    }

    /// The answer: one row per device, the counts in the summary; failed only when no device
    /// succeeded or is still running.
    fn envelope(&self, rows: Vec<Row>) -> Outcome {
        // Counted once per device: a device named twice is one action.
        let count = |e: Ending| {
            rows.iter()
                .filter(|r| r.ending == e && r.duplicate_of.is_none())
                .count()
        };
        let (succeeded, failed, pending) = (
            count(Ending::Succeeded),
            count(Ending::Failed),
            count(Ending::Pending),
        );
        let already = rows
            .iter()
            .filter(|r| r.existing && r.duplicate_of.is_none())
            .count();
        let duplicates = rows.iter().filter(|r| r.duplicate_of.is_some()).count();
        let devices = rows.len() - duplicates;
        let message = format!(
            "{} on {devices} devices: {succeeded} succeeded, {pending} still running (follow them with \
             get_status and their event_id), {failed} failed{}",
            self.kind.defender_type,
            if already > 0 {
                format!("; {already} were already pending and were followed instead")
            } else {
                String::new()
            }
        );
        let mut outcome = if succeeded + pending == 0 {
            Outcome::failed(message)
        } else {
            Outcome::success(message)
        };
        outcome = outcome
            .with_summary("total_devices", devices)
            .with_summary("succeeded", succeeded)
            .with_summary("failed", failed)
            .with_summary("pending", pending)
            .with_summary("already_pending", already)
            .with_summary("duplicates", duplicates);
        outcome.data = rows.iter().map(Row::to_json).collect();
        outcome
    }
}

/// Parameters shared by the bulk actions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkParams {
    /// Devices: a JSON list or comma-separated.
    pub device_ids: String,
    /// Comment recorded with each action.
    pub comment: Option<String>,
    /// Seconds to wait for final statuses.
    pub timeout: u64,
}

/// Checks the common parameters and runs `kind` with `extra` body fields.
async fn run_bulk(
    ctx: ActionContext,
    action: &'static str,
    kind: &'static DeviceKind,
    p: BulkParams,
    extra: &[(&str, &str)],
) -> Result<Outcome, ActionError> {
    let devices = device_list(&p.device_ids)?;
    let comment = required_text("comment", p.comment.as_deref())?;
    let mut body = json!({ "Comment": comment });
    for (k, v) in extra {
        body[*k] = json!(v);
    }
    Bulk {
        action,
        kind,
        body,
        devices,
        timeout: p.timeout,
        ctx: &ctx,
        call_recorded: tokio::sync::OnceCell::new(),
    }
    .run()
    .await
}

/// `quarantine_devices`.
pub struct QuarantineDevices;

/// Parameters of `quarantine_devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineDevicesParams {
    /// Devices.
    pub device_ids: String,
    /// Full, Selective or UnManagedDevice.
    #[serde(rename = "type")]
    pub isolation_type: IsolationType,
    /// Comment.
    pub comment: Option<String>,
    /// Seconds to wait.
    pub timeout: u64,
}

impl Action for QuarantineDevices {
    const ID: &'static str = "quarantine_devices";
    type Params = QuarantineDevicesParams;

    async fn run(ctx: ActionContext, p: QuarantineDevicesParams) -> Result<Outcome, ActionError> {
        let common = BulkParams {
            device_ids: p.device_ids,
            comment: p.comment,
            timeout: p.timeout,
        };
        let isolation = p.isolation_type.as_str();
        run_bulk(
            ctx,
            Self::ID,
            &ISOLATE,
            common,
            &[("IsolationType", isolation)],
        )
        .await
    }
}

/// `unquarantine_devices`.
pub struct UnquarantineDevices;

impl Action for UnquarantineDevices {
    const ID: &'static str = "unquarantine_devices";
    type Params = BulkParams;

    async fn run(ctx: ActionContext, p: BulkParams) -> Result<Outcome, ActionError> {
        run_bulk(ctx, Self::ID, &UNISOLATE, p, &[]).await
    }
}

/// `restrict_app_executions`.
pub struct RestrictAppExecutions;

impl Action for RestrictAppExecutions {
    const ID: &'static str = "restrict_app_executions";
    type Params = BulkParams;

    async fn run(ctx: ActionContext, p: BulkParams) -> Result<Outcome, ActionError> {
        run_bulk(ctx, Self::ID, &RESTRICT, p, &[]).await
    }
}

/// `scan_devices`.
pub struct ScanDevices;

/// Parameters of `scan_devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanDevicesParams {
    /// Devices.
    pub device_ids: String,
    /// Quick or Full.
    pub scan_type: ScanType,
    /// Comment.
    pub comment: Option<String>,
    /// Seconds to wait.
    pub timeout: u64,
}

impl Action for ScanDevices {
    const ID: &'static str = "scan_devices";
    type Params = ScanDevicesParams;

    async fn run(ctx: ActionContext, p: ScanDevicesParams) -> Result<Outcome, ActionError> {
        let common = BulkParams {
            device_ids: p.device_ids,
            comment: p.comment,
            timeout: p.timeout,
        };
        let scan = p.scan_type.as_str();
        run_bulk(ctx, Self::ID, &SCAN, common, &[("ScanType", scan)]).await
    }
}

/// `quarantine_files`.
pub struct QuarantineFiles;

/// Parameters of `quarantine_files`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineFilesParams {
    /// Devices.
    pub device_ids: String,
    /// The file's SHA1.
    pub file_hash: String,
    /// Comment.
    pub comment: Option<String>,
    /// Seconds to wait.
    pub timeout: u64,
}

impl Action for QuarantineFiles {
    const ID: &'static str = "quarantine_files";
    type Params = QuarantineFilesParams;

    async fn run(ctx: ActionContext, p: QuarantineFilesParams) -> Result<Outcome, ActionError> {
        let sha1 = sha1_param(&p.file_hash)?;
        let common = BulkParams {
            device_ids: p.device_ids,
            comment: p.comment,
            timeout: p.timeout,
        };
        run_bulk(
            ctx,
            Self::ID,
            &STOP_AND_QUARANTINE,
            common,
            &[("Sha1", sha1.as_str())],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::waiting::MachineAction;

    #[test]
    fn device_lists_take_ids_names_and_addresses_once() {
        let id = "F1EB97A430CA4C315E219960CD146874419FBEFC";
        assert_eq!(
            device_list(&format!(
                "{id}, pc01.contoso.com ,10.0.0.5,{}",
                id.to_lowercase()
            ))
            .unwrap(),
            [&id.to_lowercase(), "pc01.contoso.com", "10.0.0.5"]
        );
        assert_eq!(
            device_list(r#"["PC01", "pc01", "::1"]"#).unwrap(),
            ["pc01", "::1"]
        );
        for bad in ["", " , ", "pc 01", "a..b", "[1]", "x/y"] {
            let e = device_list(bad).unwrap_err().to_string();
            assert!(e.contains("device_ids"), "{bad}: {e}");
        }
        let many: Vec<String> = (0..501).map(|i| format!("pc{i}")).collect();
        assert!(device_list(&many.join(",")).is_err());
        assert_eq!(device_list(&many[..500].join(",")).unwrap().len(), 500);
    }

    #[test]
    fn the_call_hash_leaves_out_nothing_but_the_timeout() {
        let body = json!({"Comment": "c"});
        let a = call_hash("scan_devices", &body, &["a".into(), "b".into()]);
        assert_eq!(
            a,
            call_hash("scan_devices", &body, &["a".into(), "b".into()])
        );
        assert_ne!(a, call_hash("scan_devices", &body, &["a".into()]));
        assert_ne!(
            a,
            call_hash("quarantine_devices", &body, &["a".into(), "b".into()])
        );
        assert_ne!(
            a,
            call_hash(
                "scan_devices",
                &json!({"Comment": "d"}),
                &["a".into(), "b".into()]
            )
        );
    }

    #[test]
    fn a_machine_action_row_reads_its_ending() {
        let a = MachineAction::parse(&json!({"id": "e1", "type": "Isolate", "status": "Pending"}))
            .unwrap();
        let f = Followed {
            action: a,
            existing: true,
            end: End::Running { problem: None },
        };
        let row = Row::followed("pc01", "dev", &ISOLATE, 5, &f);
        assert_eq!(row.ending, Ending::Pending);
        assert!(row.existing);
        assert_eq!(row.to_json()["event_id"], "e1");
    }
}
