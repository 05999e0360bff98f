//! Waiting for machine actions to reach a final status, with one shared poller per event.
//!
//! Machine actions (isolate, scan, live response, ...) answer with a MachineAction whose status
//! moves Pending → InProgress → Succeeded | Failed | TimeOut | Cancelled. [`wait`] follows one
//! until it is final or the caller's time is up.
//!
//! Every caller interested in the same event of the same asset (an action waiting after its
//! POST, any number of `get_status` calls) subscribes to one poller for that event, kept in the
//! asset's [`Tracker`] (no process-wide state). The poller alone calls `GET /api/machineactions/{id}` and broadcasts each
//! answer through a `tokio::sync::watch` channel, so concurrent callers share one upstream call
//! per polling window. Its interval adapts: the first check comes 250 ms after a submission
//! (at once for a status request), then the interval grows ×1.5 up to 5 s, or up to 1 s while
//! someone holds a `get_status` wait. A caller needing a fresher answer than the last one pulls
//! the next check forward. The poller stops when the action is final, when the API gives a
//! permanent error, or when nobody listens any more.
//!
//! With the Redis backend the checks are also shared across hosts: the host holding an
//! action's poll lease asks Defender and publishes each answer; the others read it (see
//! [`POLL_LEASE`]).
//!
//! A final MachineAction never changes: the tracker remembers the last
//! [`FINAL_CACHE_ENTRIES`] seen final, and [`wait`] answers them without any upstream call.
//!
//! [`MachineAction`] (in `crate::defender`) reads the answers tolerantly.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::actions::ActionContext;
use crate::app::Asset;
pub use crate::defender::{ActionStatus, CommandError, MachineAction};
use crate::defender::{Call, DefenderError, endpoints};

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
// Shared pollers

/// Final machine actions kept per asset (oldest forgotten first).
pub const FINAL_CACHE_ENTRIES: usize = 10_000;

/// What one asset knows about the machine actions it follows: the shared poller of each event
/// being followed, and the recent actions seen in a final status. A final MachineAction never
/// changes, so a status request for one is answered from here without an upstream call.
pub struct Tracker {
    pollers: Mutex<HashMap<String, Weak<Poller>>>,
    finals: Mutex<FinalCache>,
    /// With the Redis backend: the checks of an action are taken in turn across hosts.
    shared: std::sync::OnceLock<SharedChecks>,
}

/// Status checks shared by the hosts on one Redis: of the hosts following an in-flight action,
/// the one holding its poll lease (`<prefix>:poll:<asset>:<event>`, renewed at each check) asks
/// Defender and publishes each answer (`<prefix>:status:<asset>:<event>`); the others read the
/// published answer instead of asking. A lease left by a host that stopped following runs out
/// after [`POLL_LEASE`], and another host takes the checks over.
struct SharedChecks {
    link: Arc<crate::redis_link::RedisLink>,
    holder: String,
    asset: String,
}

/// How long a host keeps the checks of an action after its last one.
pub const POLL_LEASE: Duration = Duration::from_secs(10);
/// How long a published answer is kept.
const PUBLISHED_TTL_SECS: u64 = 600;

/// Whose turn a check is.
enum Turn {
    /// This host asks Defender.
    Mine,
    /// Another host asks; its last published answer, if any.
    Other(Option<serde_json::Value>),
}

impl SharedChecks {
    async fn turn(&self, event: &str) -> Result<Turn, crate::redis_link::RedisError> {
        let key = self.link.key(&["poll", &self.asset, event]);
        let held = self
            .link
            .take_or_renew(&key, &self.holder, POLL_LEASE)
            .await?;
        if held {
            return Ok(Turn::Mine);
        }
        let mut conn = self.link.conn().await?;
        let published: Option<String> = redis::cmd("GET")
            .arg(self.link.key(&["status", &self.asset, event]))
            .query_async(&mut conn)
            .await?;
        Ok(Turn::Other(
            published.and_then(|p| serde_json::from_str(&p).ok()),
        ))
    }

    async fn publish(&self, event: &str, answer: &serde_json::Value) {
        let Ok(mut conn) = self.link.conn().await else {
            return;
        };
        let _: Result<(), _> = redis::cmd("SET")
            .arg(self.link.key(&["status", &self.asset, event]))
            .arg(answer.to_string())
            .arg("EX")
            .arg(PUBLISHED_TTL_SECS)
            .query_async(&mut conn)
            .await;
    }
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::with_capacity(FINAL_CACHE_ENTRIES)
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("pollers", &lock(&self.pollers).len())
            .field("finals", &lock(&self.finals).map.len())
            .finish()
    }
}

/// A bounded map of final actions by lower-case id, forgetting the oldest first.
struct FinalCache {
    map: HashMap<String, Arc<MachineAction>>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Tracker {
    /// A tracker keeping at most `capacity` final actions.
    pub fn with_capacity(capacity: usize) -> Tracker {
        Tracker {
            pollers: Mutex::new(HashMap::new()),
            finals: Mutex::new(FinalCache {
                map: HashMap::new(),
                order: VecDeque::new(),
                capacity: capacity.max(1),
            }),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Shares the status checks of `asset` with the other hosts on `link`, as `holder` (once;
    /// the Redis backend).
    pub fn share(&self, link: Arc<crate::redis_link::RedisLink>, holder: String, asset: &str) {
        let _ = self.shared.set(SharedChecks {
            link,
            holder,
            asset: asset.to_string(),
        });
    }

    /// The action, when it was seen in a final status.
    pub fn final_action(&self, event_id: &str) -> Option<Arc<MachineAction>> {
        lock(&self.finals).map.get(&key_of(event_id)).cloned()
    }

    /// Remembers `action` when it is final.
    pub fn remember(&self, action: &MachineAction) {
        if !action.is_final() {
            return;
        }
        let key = key_of(&action.id);
        let mut cache = lock(&self.finals);
        if cache.map.contains_key(&key) {
            return;
        }
        while cache.map.len() >= cache.capacity {
            match cache.order.pop_front() {
                Some(old) => {
                    cache.map.remove(&old);
                }
                None => break,
            }
        }
        cache.order.push_back(key.clone());
        cache.map.insert(key, Arc::new(action.clone()));
    }

    /// How many callers currently follow `event_id`; for diagnostics and tests.
    pub fn watchers(&self, event_id: &str) -> usize {
        lock(&self.pollers)
            .get(&key_of(event_id))
            .and_then(Weak::upgrade)
            .map_or(0, |p| p.tx.receiver_count())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key of an event: its id trimmed, lower case.
fn key_of(event_id: &str) -> String {
    event_id.trim().to_ascii_lowercase()
}

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
    key: String,
    asset: Arc<Asset>,
    call: Call,
    tx: watch::Sender<Snapshot>,
    control: Mutex<Control>,
    wake: Notify,
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
    /// One status check: Defender's answer, or with shared checks another host's published
    /// one (Redis unreachable: Defender's).
    async fn check(
        &self,
        client: &crate::defender::DefenderClient,
    ) -> Result<serde_json::Value, DefenderError> {
        let Some(shared) = self.asset.tracker.shared.get() else {
            return client.get(&self.call).await;
        };
        match shared.turn(&self.key).await {
            Ok(Turn::Other(Some(answer))) => Ok(answer),
            Ok(Turn::Other(None)) => Err(DefenderError::Transport(
                "another host checks this action and has not published an answer yet".into(),
            )),
            Ok(Turn::Mine) | Err(_) => {
                let answer = client.get(&self.call).await;
                if let Ok(v) = &answer {
                    shared.publish(&self.key, v).await;
                }
                answer
            }
        }
    }

    /// Removes this poller from the registry when nobody listens (or always with `force`);
    /// answers whether it must stop. Runs under the registry lock, as subscribing does, so a
    /// subscriber never joins a poller that is about to stop.
    fn retire(&self, force: bool) -> bool {
        let mut reg = lock(&self.asset.tracker.pollers);
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
            let answer = self.check(&client).await;
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
                            self.asset.tracker.remember(&action);
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
    let key = key_of(event_id);
    let now = Instant::now();
    // `created`: a new poller must be started. A poller that just stopped on a final status
    // remembered it before leaving the registry, so the cache is read under the same lock: a
    // final action found there needs no poller (and no upstream call).
    let (poller, rx, created) = {
        let mut reg = lock(&asset.tracker.pollers);
        match reg.get(&key).and_then(Weak::upgrade) {
            Some(p) => {
                let rx = p.tx.subscribe();
                (p, rx, false)
            }
            None => {
                let done = asset.tracker.final_action(event_id);
                let mut snap = Snapshot::default();
                if let Some(a) = done.as_deref().or(known) {
                    snap.absorb(a.clone(), now);
                }
                let (tx, rx) = watch::channel(snap);
                let p = Arc::new(Poller {
                    key: key.clone(),
                    asset: asset.clone(),
                    call: endpoints::MACHINE_ACTION.at(&[event_id]),
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
                // A poller standing for a cached final action never runs: it is not listed.
                if done.is_none() {
                    reg.insert(key, Arc::downgrade(&p));
                }
                (p, rx, done.is_none())
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
    asset.tracker.remember(action);
    let key = key_of(&action.id);
    let poller = lock(&asset.tracker.pollers)
        .get(&key)
        .and_then(Weak::upgrade);
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

// ---------------------------------------------------------------------------------------------
// Final actions shared through Redis

/// How long a final action stays in Redis for the other hosts.
pub const SHARED_FINAL_TTL_SECS: u64 = 24 * 3600;

/// The key of a final action in Redis.
fn final_key(link: &crate::redis_link::RedisLink, asset: &str, event_id: &str) -> String {
    link.key(&["final", asset, &key_of(event_id)])
}

/// The action another host saw final (Redis backend); `None` without Redis, when unknown, or
/// when Redis cannot answer (the poller then asks Defender).
async fn shared_final(ctx: &ActionContext, event_id: &str) -> Option<MachineAction> {
    let link = ctx.app.redis.as_ref()?;
    let mut conn = link.conn().await.ok()?;
    let raw: Option<String> = redis::cmd("GET")
        .arg(final_key(link, &ctx.asset.config.id, event_id))
        .query_async(&mut conn)
        .await
        .ok()?;
    let value: serde_json::Value = serde_json::from_str(&raw?).ok()?;
    MachineAction::parse(&value)
        .ok()
        .filter(|a| a.is_final() && key_of(&a.id) == key_of(event_id))
}

/// Tells the other hosts (Redis backend) that `action` is final, in the background.
pub fn share_final(ctx: &ActionContext, action: &MachineAction) {
    let Some(link) = ctx.app.redis.clone() else {
        return;
    };
    let key = final_key(&link, &ctx.asset.config.id, &action.id);
    let Ok(raw) = serde_json::to_string(&action.raw) else {
        return;
    };
    tokio::spawn(async move {
        if let Ok(mut conn) = link.conn().await {
            let _: Result<(), _> = redis::cmd("SET")
                .arg(key)
                .arg(raw)
                .arg("EX")
                .arg(SHARED_FINAL_TTL_SECS)
                .query_async(&mut conn)
                .await;
        }
    });
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
    if let Some(done) = ctx.asset.tracker.final_action(&spec.event_id) {
        return Ok(Waited::Final(done.as_ref().clone()));
    }
    if let Some(done) = shared_final(ctx, &spec.event_id).await {
        ctx.asset.tracker.remember(&done);
        return Ok(Waited::Final(done));
    }
    if let Some(known) = &spec.known {
        ctx.asset.tracker.remember(known);
    }
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
            share_final(ctx, a);
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
