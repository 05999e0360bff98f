//! Waiting for machine actions to reach a final status, with one shared poller per event.
//!
//! Machine actions (isolate, scan, live response, ...) answer with a MachineAction whose status
//! moves Pending → InProgress → Succeeded | Failed | TimeOut | Cancelled. [`wait`] follows one
//! until it is final or the caller's time is up.
//!
//! Every caller interested in the same event of the same asset (an action waiting after its
//! POST, any number of `get_status` calls) subscribes to one process-wide poller for that
//! (asset, event id). The poller alone calls `GET /api/machineactions/{id}` and broadcasts each
//! answer through a `tokio::sync::watch` channel, so concurrent callers share one upstream call
//! per polling window. Its interval adapts: the first check comes 250 ms after a submission
//! (at once for a status request), then the interval grows ×1.5 up to 5 s, or up to 1 s while
//! someone holds a `get_status` wait. A caller needing a fresher answer than the last one pulls
//! the next check forward. The poller stops when the action is final, when the API gives a
//! permanent error, or when nobody listens any more.
//!
//! [`MachineAction`] reads the answers tolerantly: missing fields, `lastUpdateTimeUtc` or
//! `lastUpdateDateTimeUtc`, numbers as strings, PascalCase keys, unknown fields, ids that are not
//! GUIDs, and the status spellings seen in the wild.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::actions::ActionContext;
use crate::app::Asset;
use crate::defender::DefenderError;

/// Delay of the first check after a submission.
pub const FIRST_CHECK: Duration = Duration::from_millis(250);
/// Longest interval between two checks.
pub const MAX_INTERVAL: Duration = Duration::from_secs(5);
/// Longest interval while a `get_status` wait is held.
pub const EAGER_INTERVAL: Duration = Duration::from_secs(1);
/// An answer this recent is good enough for a status request.
pub const FRESH: Duration = Duration::from_millis(500);
/// Growth factor of the interval between checks.
const GROWTH: f64 = 1.5;
/// Shortest pause between the end of one check and the start of the next.
const MIN_GAP: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// The MachineAction model

/// The status of a machine action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionStatus {
    /// Waiting for the device.
    Pending,
    /// The device is working on it.
    InProgress,
    /// Done.
    Succeeded,
    /// The device reported an error.
    Failed,
    /// The device did not answer in time.
    TimeOut,
    /// Cancelled by someone.
    Cancelled,
    /// A status this host does not know (kept as sent), or none at all (empty).
    Other(String),
}

impl ActionStatus {
    /// Reads a status, accepting other spellings (`Canceled`, `Timeout`, `In Progress`, any case).
    pub fn parse(text: &str) -> ActionStatus {
        let folded: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match folded.as_str() {
            "pending" | "created" | "queued" => ActionStatus::Pending,
            "inprogress" | "running" => ActionStatus::InProgress,
            "succeeded" | "success" | "completed" => ActionStatus::Succeeded,
            "failed" | "failure" => ActionStatus::Failed,
            "timeout" | "timedout" => ActionStatus::TimeOut,
            "cancelled" | "canceled" => ActionStatus::Cancelled,
            _ => ActionStatus::Other(text.trim().to_string()),
        }
    }

    /// The canonical spelling (`Unknown` when the answer had none).
    pub fn as_str(&self) -> &str {
        match self {
            ActionStatus::Pending => "Pending",
            ActionStatus::InProgress => "InProgress",
            ActionStatus::Succeeded => "Succeeded",
            ActionStatus::Failed => "Failed",
            ActionStatus::TimeOut => "TimeOut",
            ActionStatus::Cancelled => "Cancelled",
            ActionStatus::Other(s) if s.is_empty() => "Unknown",
            ActionStatus::Other(s) => s,
        }
    }

    /// Succeeded, Failed, TimeOut or Cancelled.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded
                | ActionStatus::Failed
                | ActionStatus::TimeOut
                | ActionStatus::Cancelled
        )
    }

    /// How far along: 0 not started (or unknown), 1 in progress, 2 final.
    fn rank(&self) -> u8 {
        match self {
            ActionStatus::InProgress => 1,
            s if s.is_final() => 2,
            _ => 0,
        }
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed live response command of a machine action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// Position of the command.
    pub index: Option<i64>,
    /// Command type (`GetFile`, `RunScript`, ...).
    pub command_type: Option<String>,
    /// `commandStatus`.
    pub status: Option<String>,
    /// The error texts.
    pub errors: Vec<String>,
}

/// A MachineAction as read from the API, tolerant of the variants the API answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineAction {
    /// The action id: the event id playbooks pass around.
    pub id: String,
    /// `Isolate`, `RunAntiVirusScan`, `LiveResponse`, ...
    pub action_type: Option<String>,
    /// Current status.
    pub status: ActionStatus,
    /// Target device id.
    pub machine_id: Option<String>,
    /// Target device name.
    pub computer_dns_name: Option<String>,
    /// Who asked.
    pub requestor: Option<String>,
    /// The request's comment.
    pub requestor_comment: Option<String>,
    /// Full/Selective, Quick/Full, or none.
    pub scope: Option<String>,
    /// Creation time as sent.
    pub creation_time: Option<String>,
    /// Last update time as sent (`lastUpdateDateTimeUtc` or `lastUpdateTimeUtc`).
    pub last_update_time: Option<String>,
    /// Who cancelled it.
    pub cancellation_requestor: Option<String>,
    /// Why it was cancelled.
    pub cancellation_comment: Option<String>,
    /// When it was cancelled.
    pub cancellation_time: Option<String>,
    /// `errorHResult` (0 when all is well).
    pub error_hresult: Option<i64>,
    /// Live response commands that failed or reported errors.
    pub command_errors: Vec<CommandError>,
    /// The object as the API sent it, without `@odata.*` annotations.
    pub raw: Map<String, Value>,
}

impl MachineAction {
    /// Reads a MachineAction object; fails only when it is not an object or has no id.
    pub fn parse(value: &Value) -> Result<MachineAction, String> {
        let Value::Object(obj) = value else {
            return Err("the answer is not a MachineAction object".into());
        };
        let id = text(obj, &["id"])
            .ok_or_else(|| "the MachineAction in the answer carries no id".to_string())?;
        let status = text(obj, &["status"])
            .map(|s| ActionStatus::parse(&s))
            .unwrap_or_else(|| ActionStatus::Other(String::new()));
        let raw: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| !k.starts_with("@odata."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(MachineAction {
            id,
            action_type: text(obj, &["type"]),
            status,
            machine_id: text(obj, &["machineId"]),
            computer_dns_name: text(obj, &["computerDnsName"]),
            requestor: text(obj, &["requestor"]),
            requestor_comment: text(obj, &["requestorComment"]),
            scope: text(obj, &["scope"]),
            creation_time: text(obj, &["creationDateTimeUtc", "creationTimeUtc"]),
            last_update_time: text(obj, &["lastUpdateDateTimeUtc", "lastUpdateTimeUtc"]),
            cancellation_requestor: text(obj, &["cancellationRequestor"]),
            cancellation_comment: text(obj, &["cancellationComment"]),
            cancellation_time: text(obj, &["cancellationDateTimeUtc"]),
            error_hresult: get_ci(obj, "errorHResult").and_then(integer),
            command_errors: command_errors(obj),
            raw,
        })
    }

    /// Whether the status is final.
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// The action type, or `machine` when the answer had none (for messages).
    pub fn type_name(&self) -> &str {
        self.action_type.as_deref().unwrap_or("machine")
    }

    /// What Defender says about a Failed, TimeOut or Cancelled action: the status, the
    /// HRESULT, the cancellation and the command errors, as one sentence.
    pub fn failure_details(&self) -> String {
        let mut parts = vec![format!("status {}", self.status)];
        if let Some(h) = self.error_hresult.filter(|h| *h != 0) {
            // HRESULTs are 32-bit; show the usual hexadecimal form too.
            parts.push(format!("errorHResult {h} (0x{:08X})", h as u32));
        }
        if self.status == ActionStatus::Cancelled
            || self.cancellation_requestor.is_some()
            || self.cancellation_comment.is_some()
        {
            let mut c = String::from("cancelled");
            if let Some(who) = &self.cancellation_requestor {
                c.push_str(&format!(" by {who}"));
            }
            if let Some(when) = &self.cancellation_time {
                c.push_str(&format!(" at {when}"));
            }
            if let Some(why) = &self.cancellation_comment {
                c.push_str(&format!(" ({why})"));
            }
            parts.push(c);
        }
        for e in &self.command_errors {
            let mut c = String::from("command");
            if let Some(i) = e.index {
                c.push_str(&format!(" {i}"));
            }
            if let Some(t) = &e.command_type {
                c.push_str(&format!(" {t}"));
            }
            if let Some(s) = &e.status {
                c.push_str(&format!(" {s}"));
            }
            if !e.errors.is_empty() {
                c.push_str(&format!(": {}", e.errors.join("; ")));
            }
            parts.push(c);
        }
        parts.join(", ")
    }

    /// The object as Defender sent it, for an envelope's `data`.
    pub fn data_row(&self) -> Value {
        Value::Object(self.raw.clone())
    }
}

/// A key looked up as given, then without regard to ASCII case.
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The first of `keys` present as text (numbers and booleans printed); empty is `None`.
fn text(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match get_ci(obj, k)? {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// An integer from a number or a decimal or `0x` hexadecimal string.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                u32::from_str_radix(hex, 16)
                    .ok()
                    .map(|u| i64::from(u as i32))
            } else {
                s.parse::<i64>().ok()
            }
        }
        _ => None,
    }
}

/// Commands whose status is Failed or that carry errors.
fn command_errors(obj: &Map<String, Value>) -> Vec<CommandError> {
    let Some(Value::Array(commands)) = get_ci(obj, "commands") else {
        return Vec::new();
    };
    commands
        .iter()
        .filter_map(|c| {
            let c = c.as_object()?;
            let errors: Vec<String> = match get_ci(c, "errors") {
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(|e| match e {
                        Value::String(s) => Some(s.trim().to_string()),
                        Value::Object(o) => text(o, &["message", "error", "description"]),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .filter(|s| !s.is_empty())
                    .collect(),
                Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
                _ => Vec::new(),
            };
            let status = text(c, &["commandStatus"]);
            let failed = status
                .as_deref()
                .is_some_and(|s| ActionStatus::parse(s) == ActionStatus::Failed);
            if errors.is_empty() && !failed {
                return None;
            }
            let command_type = match get_ci(c, "command") {
                Some(Value::Object(cmd)) => text(cmd, &["type"]),
                _ => None,
            };
            Some(CommandError {
                index: get_ci(c, "index").and_then(integer),
                command_type,
                status,
                errors,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Shared pollers

/// (asset identity, lower-case event id). The asset's address is stable while a poller holds
/// the asset.
type Key = (usize, String);

/// What the poller last learnt.
#[derive(Clone, Default)]
struct Snapshot {
    /// The most advanced MachineAction seen.
    action: Option<Arc<MachineAction>>,
    /// When `action` was last confirmed by a check (or seeded from a submission).
    seen_at: Option<Instant>,
    /// The error of the last check, when it failed.
    error: Option<DefenderError>,
    /// When the last check (success or not) completed.
    checked_at: Option<Instant>,
    /// The poller stopped on a permanent error (`error`).
    ended: bool,
}

impl Snapshot {
    /// Keeps the more advanced of the known action and `action` (statuses only move forward).
    fn absorb(&mut self, action: MachineAction, at: Instant) {
        let newer = self
            .action
            .as_ref()
            .is_none_or(|old| action.status.rank() >= old.status.rank());
        if newer {
            self.action = Some(Arc::new(action));
        }
        self.seen_at = Some(at);
    }
}

/// Scheduling state of a poller, changed by subscribers.
struct Control {
    /// Latest answer-by time of the subscribers: throttling waits may last until then.
    deadline: Instant,
    /// Subscribers holding a `get_status` wait (poll at least every [`EAGER_INTERVAL`]).
    eager: usize,
    /// A subscriber wants a check no later than this.
    check_by: Option<Instant>,
    /// A check is running.
    in_flight: bool,
    /// When the last check completed.
    last_check: Option<Instant>,
}

/// One event's poller: the channel its subscribers listen on and its scheduling state.
struct Poller {
    key: Key,
    asset: Arc<Asset>,
    path: String,
    tx: watch::Sender<Snapshot>,
    control: Mutex<Control>,
    wake: Notify,
}

fn registry() -> &'static Mutex<HashMap<Key, Weak<Poller>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Key, Weak<Poller>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key_of(asset: &Arc<Asset>, event_id: &str) -> Key {
    (
        Arc::as_ptr(asset) as usize,
        event_id.trim().to_ascii_lowercase(),
    )
}

/// `/api/machineactions/{id}` with the id percent-encoded as one path segment.
pub fn action_path(event_id: &str) -> String {
    format!("/api/machineactions/{}", encode_segment(event_id.trim()))
}

/// Percent-encodes everything but unreserved characters.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Errors after which polling again cannot help. A 404 only counts while the action was never
/// seen: right after a submission the API may not know the new action yet.
fn is_permanent(e: &DefenderError, seen: bool) -> bool {
    match e {
        DefenderError::NotFound { .. } => !seen,
        DefenderError::Forbidden { .. }
        | DefenderError::Unauthorized(_)
        | DefenderError::Auth(_) => true,
        DefenderError::Api { status, .. } => (400..500).contains(status) && *status != 408,
        // Throttling, transport and decoding problems pass.
        _ => false,
    }
}

impl Poller {
    /// Removes this poller from the registry when nobody listens (or always with `force`);
    /// answers whether it must stop. Runs under the registry lock, as subscribing does, so a
    /// subscriber never joins a poller that is about to stop.
    fn retire(&self, force: bool) -> bool {
        let mut reg = lock(registry());
        if !force && self.tx.receiver_count() > 0 {
            return false;
        }
        if reg
            .get(&self.key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
        {
            reg.remove(&self.key);
        }
        true
    }

    /// The poller task: the first check at `first_check`, the next `step` after it, each
    /// following interval ×1.5 up to [`MAX_INTERVAL`].
    async fn run(self: Arc<Self>, first_check: Instant, mut step: Duration) {
        let mut scheduled = first_check;
        loop {
            if self.retire(false) {
                return;
            }
            let next = {
                let c = lock(&self.control);
                c.check_by.map_or(scheduled, |by| by.min(scheduled))
            };
            // A check due now goes out at once: the timer would round up to its next tick.
            if next > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = self.wake.notified() => continue,
                }
            }
            if self.retire(false) {
                return;
            }
            // The cadence counts from when a check starts, so check latency does not add up.
            let began = Instant::now();
            let deadline = {
                let mut c = lock(&self.control);
                c.in_flight = true;
                c.deadline
            };
            let client = self.asset.defender.with_deadline(deadline);
            let answer = client.get(&self.path).await;
            let now = Instant::now();
            let mut stop = false;
            let mut at_least = Duration::ZERO;
            {
                let mut c = lock(&self.control);
                c.in_flight = false;
                c.last_check = Some(now);
                c.check_by = None;
                self.tx.send_modify(|snap| {
                    snap.checked_at = Some(now);
                    let parsed = answer
                        .and_then(|v| MachineAction::parse(&v).map_err(DefenderError::Decode));
                    match parsed {
                        Ok(action) => {
                            stop = action.is_final();
                            snap.error = None;
                            snap.absorb(action, now);
                        }
                        Err(e) => {
                            if let Some(retry_after) = e.retry_after() {
                                at_least = retry_after;
                            }
                            if is_permanent(&e, snap.action.is_some()) {
                                snap.ended = true;
                                stop = true;
                            }
                            snap.error = Some(e);
                        }
                    }
                    if snap.action.as_ref().is_some_and(|a| a.is_final()) {
                        stop = true;
                    }
                });
                let cap = if c.eager > 0 {
                    EAGER_INTERVAL
                } else {
                    MAX_INTERVAL
                };
                scheduled = (began + step.min(cap).max(at_least)).max(now + MIN_GAP);
            }
            if stop {
                self.retire(true);
                return;
            }
            step = step.mul_f64(GROWTH).min(MAX_INTERVAL);
        }
    }
}

/// A caller's membership in a poller; leaving tells the poller.
struct Subscription {
    poller: Arc<Poller>,
    rx: watch::Receiver<Snapshot>,
    eager: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.eager {
            let mut c = lock(&self.poller.control);
            c.eager = c.eager.saturating_sub(1);
        }
        // The poller re-checks whether anyone still listens.
        self.poller.wake.notify_one();
    }
}

/// Joins (or starts) the poller of `event_id` on `asset`.
fn subscribe(
    asset: &Arc<Asset>,
    event_id: &str,
    known: Option<&MachineAction>,
    answer_by: Instant,
    eager: bool,
    fresh_since: Option<Instant>,
) -> Subscription {
    let key = key_of(asset, event_id);
    let now = Instant::now();
    let (poller, rx, created) = {
        let mut reg = lock(registry());
        match reg.get(&key).and_then(Weak::upgrade) {
            Some(p) => {
                let rx = p.tx.subscribe();
                (p, rx, false)
            }
            None => {
                let mut snap = Snapshot::default();
                if let Some(a) = known {
                    snap.absorb(a.clone(), now);
                }
                let (tx, rx) = watch::channel(snap);
                let p = Arc::new(Poller {
                    key: key.clone(),
                    asset: asset.clone(),
                    path: action_path(event_id),
                    tx,
                    control: Mutex::new(Control {
                        deadline: answer_by,
                        eager: 0,
                        check_by: None,
                        in_flight: false,
                        last_check: None,
                    }),
                    wake: Notify::new(),
                });
                reg.insert(key, Arc::downgrade(&p));
                (p, rx, true)
            }
        }
    };
    if !created && let Some(a) = known {
        poller.tx.send_if_modified(|snap| {
            let advances = snap
                .action
                .as_ref()
                .is_none_or(|old| a.status.rank() > old.status.rank());
            if advances {
                snap.absorb(a.clone(), now);
            }
            advances
        });
    }
    {
        let mut c = lock(&poller.control);
        c.deadline = c.deadline.max(answer_by);
        if eager {
            c.eager += 1;
        }
        // When this caller needs the next check.
        let want = if known.is_some() {
            Some(now + FIRST_CHECK)
        } else {
            let since = fresh_since.unwrap_or(now);
            let fresh = c.last_check.is_some_and(|t| t >= since);
            if fresh || c.in_flight {
                None
            } else {
                Some(now)
            }
        };
        let want = match (want, eager, c.last_check) {
            (None, true, Some(last)) => Some(last + EAGER_INTERVAL),
            (w, _, _) => w,
        };
        if let Some(w) = want {
            c.check_by = Some(c.check_by.map_or(w, |by| by.min(w)));
        }
    }
    if created {
        // After a submission the first check waits FIRST_CHECK and the next interval is
        // already the grown one; a status request checks at once.
        let (first, step) = if known.is_some() {
            (now + FIRST_CHECK, FIRST_CHECK.mul_f64(GROWTH))
        } else {
            (now, FIRST_CHECK)
        };
        tokio::spawn(poller.clone().run(first, step));
    } else {
        poller.wake.notify_one();
    }
    Subscription { poller, rx, eager }
}

/// Publishes an action learnt another way (the answer of a cancel) to the event's poller, if
/// one runs, so its subscribers see it without another call.
pub fn observe(asset: &Arc<Asset>, action: &MachineAction) {
    let key = key_of(asset, &action.id);
    let poller = lock(registry()).get(&key).and_then(Weak::upgrade);
    if let Some(p) = poller {
        let now = Instant::now();
        p.tx.send_if_modified(|snap| {
            let advances = snap
                .action
                .as_ref()
                .is_none_or(|old| action.status.rank() > old.status.rank());
            if advances {
                snap.absorb(action.clone(), now);
            }
            advances
        });
    }
}

/// How many callers currently follow `event_id` (all assets); for diagnostics and tests.
pub fn watchers(event_id: &str) -> usize {
    let id = event_id.trim().to_ascii_lowercase();
    lock(registry())
        .iter()
        .filter(|((_, e), _)| *e == id)
        .filter_map(|(_, w)| w.upgrade())
        .map(|p| p.tx.receiver_count())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// What a caller waits for.
#[derive(Debug, Clone)]
pub struct WaitSpec {
    /// The event (MachineAction) id.
    pub event_id: String,
    /// What the caller already knows (the answer of its submission).
    pub known: Option<MachineAction>,
    /// Return a non-final status once this time has come.
    pub hold_until: Instant,
    /// Latest time to answer when no status could be read yet (throttling waits end here).
    pub answer_by: Instant,
    /// Only answers of checks completed after this count (status requests); `None` takes any.
    pub fresh_since: Option<Instant>,
    /// Poll at least every second while waiting (`get_status` waits).
    pub eager: bool,
}

/// How a wait ended.
#[derive(Debug, Clone)]
pub enum Waited {
    /// The action reached a final status.
    Final(MachineAction),
    /// Time was up first: the last status seen, and the error of the last check if it failed.
    Running {
        /// Last status seen.
        last: MachineAction,
        /// Why the last check failed, when it did.
        problem: Option<DefenderError>,
    },
}

/// Follows `spec.event_id` until its status is final or the caller's time is up, sharing the
/// upstream checks with every other caller following the same event. Fails when the API gives
/// a permanent error, or when no status could be read by `answer_by`.
pub async fn wait(ctx: &ActionContext, spec: WaitSpec) -> Result<Waited, DefenderError> {
    let started = Instant::now();
    let mut sub = subscribe(
        &ctx.asset,
        &spec.event_id,
        spec.known.as_ref(),
        spec.answer_by,
        spec.eager,
        spec.fresh_since,
    );
    let mut last: Option<MachineAction> = spec.known.clone();
    let mut reported: Option<ActionStatus> = last.as_ref().map(|a| a.status.clone());
    loop {
        let snap = sub.rx.borrow_and_update().clone();
        let counts = |t: Option<Instant>| match (spec.fresh_since, t) {
            (None, _) => true,
            (Some(since), Some(t)) => t >= since,
            (Some(_), None) => false,
        };
        if let Some(a) = &snap.action
            && counts(snap.seen_at)
        {
            let advances = last
                .as_ref()
                .is_none_or(|old| a.status.rank() >= old.status.rank());
            if advances {
                last = Some(a.as_ref().clone());
            }
        }
        if let Some(a) = &last
            && reported.as_ref() != Some(&a.status)
        {
            reported = Some(a.status.clone());
            ctx.progress(&format!(
                "{} action {}: {} after {:.1} s",
                a.type_name(),
                a.id,
                a.status,
                started.elapsed().as_secs_f64()
            ));
        }
        if let Some(a) = &last
            && a.is_final()
        {
            return Ok(Waited::Final(a.clone()));
        }
        if snap.ended {
            return Err(snap.error.unwrap_or_else(|| {
                DefenderError::Transport("status checks stopped without an answer".into())
            }));
        }
        let now = Instant::now();
        if now >= spec.hold_until {
            match &last {
                Some(a) => {
                    return Ok(Waited::Running {
                        last: a.clone(),
                        problem: snap.error,
                    });
                }
                None => {
                    // A failed fresh check ends the wait at once, except throttling, which
                    // may still clear before answer_by.
                    if let Some(e) = &snap.error
                        && counts(snap.checked_at)
                        && !matches!(e, DefenderError::Throttled { .. })
                    {
                        return Err(e.clone());
                    }
                    if now >= spec.answer_by {
                        return Err(snap.error.unwrap_or_else(|| {
                            DefenderError::Transport(
                                "no status could be read from the Defender API in time".into(),
                            )
                        }));
                    }
                }
            }
        }
        let until = if last.is_some() {
            spec.hold_until
        } else {
            spec.answer_by.max(spec.hold_until)
        };
        if let Ok(Err(_)) = tokio::time::timeout_at(until, sub.rx.changed()).await {
            // The poller is gone (it never is while we hold it); do not spin.
            tokio::time::sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_shape() {
        let v = json!({
            "@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions/$entity",
            "id": "7a6f6e8c-1b2d-4c3e-8f90-0123456789ab",
            "type": "Isolate",
            "title": "Isolate device",
            "requestor": "app",
            "requestorComment": "contain",
            "status": "Succeeded",
            "machineId": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
            "computerDnsName": "pc1",
            "creationDateTimeUtc": "2026-01-01T10:00:00.0000000Z",
            "lastUpdateDateTimeUtc": "2026-01-01T10:01:00.0000000Z",
            "cancellationRequestor": null,
            "cancellationComment": null,
            "cancellationDateTimeUtc": null,
            "errorHResult": 0,
            "scope": "Full",
            "externalId": null,
            "requestSource": "PublicApi",
            "relatedFileInfo": null,
            "commands": [],
            "troubleshootInfo": null
        });
        let a = MachineAction::parse(&v).unwrap();
        assert_eq!(a.id, "7a6f6e8c-1b2d-4c3e-8f90-0123456789ab");
        assert_eq!(a.action_type.as_deref(), Some("Isolate"));
        assert_eq!(a.status, ActionStatus::Succeeded);
        assert!(a.is_final());
        assert_eq!(a.scope.as_deref(), Some("Full"));
        assert_eq!(
            a.last_update_time.as_deref(),
            Some("2026-01-01T10:01:00.0000000Z")
        );
        assert_eq!(a.error_hresult, Some(0));
        assert!(a.command_errors.is_empty());
        assert!(!a.raw.contains_key("@odata.context"));
        assert_eq!(a.raw.len(), 20);
        assert_eq!(a.data_row()["requestSource"], "PublicApi");
    }

    #[test]
    fn last_update_time_utc_spelling() {
        let a = MachineAction::parse(&json!({
            "id": "x1", "status": "Pending", "lastUpdateTimeUtc": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(a.last_update_time.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(a.status, ActionStatus::Pending);
    }

    #[test]
    fn missing_fields_are_tolerated() {
        let a = MachineAction::parse(&json!({"id": "abc"})).unwrap();
        assert_eq!(a.status, ActionStatus::Other(String::new()));
        assert_eq!(a.status.as_str(), "Unknown");
        assert!(!a.is_final());
        assert_eq!(a.action_type, None);
        assert_eq!(a.type_name(), "machine");
        assert_eq!(a.error_hresult, None);
        assert!(MachineAction::parse(&json!({"status": "Pending"})).is_err());
        assert!(MachineAction::parse(&json!({"id": ""})).is_err());
        assert!(MachineAction::parse(&json!([1])).is_err());
        assert!(MachineAction::parse(&Value::Null).is_err());
    }

    #[test]
    fn numbers_as_strings_and_numeric_ids() {
        let a = MachineAction::parse(&json!({
            "id": 12345,
            "status": "Failed",
            "errorHResult": "-2147467259"
        }))
        .unwrap();
        assert_eq!(a.id, "12345");
        assert_eq!(a.error_hresult, Some(-2147467259));
        let b = MachineAction::parse(&json!({"id": "n", "errorHResult": "0x80004005"})).unwrap();
        assert_eq!(b.error_hresult, Some(-2147467259));
        let c = MachineAction::parse(&json!({"id": "n", "errorHResult": 2147500037u64})).unwrap();
        assert_eq!(c.error_hresult, Some(2147500037));
        let d = MachineAction::parse(&json!({"id": "n", "errorHResult": 5.0})).unwrap();
        assert_eq!(d.error_hresult, Some(5));
        let e = MachineAction::parse(&json!({"id": "n", "errorHResult": "n/a"})).unwrap();
        assert_eq!(e.error_hresult, None);
    }

    #[test]
    fn pascal_case_keys_and_unknown_fields() {
        let a = MachineAction::parse(&json!({
            "Id": "not-a-guid:42",
            "Type": "RunAntiVirusScan",
            "Status": "InProgress",
            "MachineId": "m",
            "SomethingNew": {"nested": [1, 2]}
        }))
        .unwrap();
        assert_eq!(a.id, "not-a-guid:42");
        assert_eq!(a.action_type.as_deref(), Some("RunAntiVirusScan"));
        assert_eq!(a.status, ActionStatus::InProgress);
        assert_eq!(a.machine_id.as_deref(), Some("m"));
        assert_eq!(a.raw["SomethingNew"]["nested"][1], 2);
    }

    #[test]
    fn status_spellings() {
        for (s, want) in [
            ("Canceled", ActionStatus::Cancelled),
            ("CANCELLED", ActionStatus::Cancelled),
            ("Timeout", ActionStatus::TimeOut),
            ("TimedOut", ActionStatus::TimeOut),
            ("In Progress", ActionStatus::InProgress),
            ("succeeded", ActionStatus::Succeeded),
            ("Pending", ActionStatus::Pending),
        ] {
            assert_eq!(ActionStatus::parse(s), want, "{s}");
        }
        let other = ActionStatus::parse("Scheduled");
        assert_eq!(other, ActionStatus::Other("Scheduled".into()));
        assert_eq!(other.as_str(), "Scheduled");
        assert!(!other.is_final());
        assert_eq!(
            ActionStatus::parse("Canceled").to_string(),
            "Cancelled",
            "canonical spelling"
        );
    }

    #[test]
    fn failure_details_name_everything_defender_said() {
        let a = MachineAction::parse(&json!({
            "id": "e",
            "type": "LiveResponse",
            "status": "Failed",
            "errorHResult": -2147467259,
            "commands": [
                {"index": 0, "commandStatus": "Completed", "errors": [], "command": {"type": "PutFile"}},
                {"index": 1, "commandStatus": "Failed", "errors": ["File not found", {"message": "second"}], "command": {"type": "GetFile", "params": []}}
            ]
        }))
        .unwrap();
        assert_eq!(a.command_errors.len(), 1);
        let d = a.failure_details();
        assert_eq!(
            d,
            "status Failed, errorHResult -2147467259 (0x80004005), command 1 GetFile Failed: File not found; second"
        );
        let c = MachineAction::parse(&json!({
            "id": "e", "status": "Cancelled", "cancellationRequestor": "soc@contoso.com",
            "cancellationComment": "wrong device", "cancellationDateTimeUtc": "2026-01-01T00:00:00Z",
            "errorHResult": 0
        }))
        .unwrap();
        assert_eq!(
            c.failure_details(),
            "status Cancelled, cancelled by soc@contoso.com at 2026-01-01T00:00:00Z (wrong device)"
        );
        let t = MachineAction::parse(&json!({"id": "e", "status": "TimeOut"})).unwrap();
        assert_eq!(t.failure_details(), "status TimeOut");
    }

    #[test]
    fn snapshot_keeps_the_most_advanced_status() {
        let now = Instant::now();
        let mut s = Snapshot::default();
        let p = MachineAction::parse(&json!({"id": "e", "status": "InProgress"})).unwrap();
        let q = MachineAction::parse(&json!({"id": "e", "status": "Pending"})).unwrap();
        s.absorb(p, now);
        s.absorb(q, now);
        assert_eq!(s.action.unwrap().status, ActionStatus::InProgress);
    }

    #[test]
    fn paths_encode_the_event_id() {
        assert_eq!(
            action_path("7a6f6e8c-1b2d-4c3e-8f90-0123456789ab"),
            "/api/machineactions/7a6f6e8c-1b2d-4c3e-8f90-0123456789ab"
        );
        assert_eq!(action_path("a/b c"), "/api/machineactions/a%2Fb%20c");
    }

    #[test]
    fn permanent_errors() {
        let nf = DefenderError::NotFound {
            code: "NotFound".into(),
            message: "x".into(),
            correlation_id: None,
        };
        assert!(is_permanent(&nf, false));
        assert!(!is_permanent(&nf, true));
        let e500 = DefenderError::Api {
            status: 500,
            code: "InternalServerError".into(),
            message: "x".into(),
            correlation_id: None,
        };
        assert!(!is_permanent(&e500, false));
        let e400 = DefenderError::Api {
            status: 400,
            code: "BadRequest".into(),
            message: "x".into(),
            correlation_id: None,
        };
        assert!(is_permanent(&e400, true));
        assert!(!is_permanent(
            &DefenderError::upstream_throttled(Duration::from_secs(1)),
            false
        ));
        assert!(!is_permanent(&DefenderError::Transport("x".into()), false));
    }
}
