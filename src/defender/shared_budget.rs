//! The request budget of one app registration in one tenant kept in Redis, so every host
//! (and every asset) using the registration draws on the same windows, as Microsoft counts.
//!
//! Each endpoint family is one sorted set of send moments (microseconds of the Redis clock,
//! so the hosts' own clocks do not matter). A permit is one atomic Lua script: it drops the
//! moments older than the longest window, counts the rolling minute and hour, and either adds
//! the call (a permit now) or answers how long until the entry that fills the window leaves
//! it. The priority rule is the local budget's: a state-changing call may fill each window, a
//! read leaves a tenth of it, a background call only fills `100 − actions_floor_percent` per
//! cent. Nothing is reserved ahead: a caller told to wait sleeps and asks again.
//!
//! When a script call fails (Redis refused the connection, timed out) the host falls back to
//! a local [`Budget`] holding `fallback_share_percent` of every limit, since other hosts may
//! still be spending. It starts out counting the calls the shared windows held at the last
//! answer, logs the outage once, and asks Redis again at most once a second; the first answer
//! ends the outage, and the calls made meanwhile are written into the shared windows.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::budget::{
    Budget, FAMILIES, FamilyUse, HEADROOM_DIVISOR, HOUR, MINUTE, Spent, WINDOW_MARGIN,
    background_share,
};
use super::{Family, Priority};
use crate::config::{BudgetConfig, RateLimit};
use crate::redis_link::{COMMAND_TIMEOUT, RedisError, RedisLink};

/// How often a host on its fallback budget asks Redis again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The permit script. KEYS[1]: the family's sorted set. ARGV: minute window (µs), hour window
/// (µs, 0 without an hourly limit), most calls in a minute window for this caller's priority,
/// most in an hour window, this call's member, then pairs (age in µs, member) of calls made
/// while Redis could not be reached. Answers {granted, wait µs, calls in the minute window,
/// calls in the hour window, binding window (0 none, 1 minute, 2 hour)}.
const PERMIT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local minute = tonumber(ARGV[1])
local hour = tonumber(ARGV[2])
local max_minute = tonumber(ARGV[3])
local max_hour = tonumber(ARGV[4])
local horizon = minute
if hour > horizon then horizon = hour end
for i = 6, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], string.format('%d', now - tonumber(ARGV[i])), ARGV[i + 1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - horizon))
local minute_from = string.format('(%d', now - minute)
local in_minute = redis.call('ZCOUNT', KEYS[1], minute_from, '+inf')
local in_hour = in_minute
local hour_from = nil
if hour > 0 then
  hour_from = string.format('(%d', now - hour)
  in_hour = redis.call('ZCOUNT', KEYS[1], hour_from, '+inf')
end
local wait = 0
local binding = 0
if in_minute >= max_minute then
  local e = redis.call('ZRANGEBYSCORE', KEYS[1], minute_from, '+inf', 'WITHSCORES', 'LIMIT', in_minute - max_minute, 1)
  wait = tonumber(e[2]) + minute - now
  binding = 1
end
if hour > 0 and in_hour >= max_hour then
  local e = redis.call('ZRANGEBYSCORE', KEYS[1], hour_from, '+inf', 'WITHSCORES', 'LIMIT', in_hour - max_hour, 1)
  local w = tonumber(e[2]) + hour - now
  if binding == 0 or w > wait then
    wait = w
    binding = 2
  end
end
local granted = 0
if binding == 0 then
  redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[5])
  in_minute = in_minute + 1
  in_hour = in_hour + 1
  granted = 1
end
redis.call('PEXPIRE', KEYS[1], math.floor(horizon / 1000) + 1000)
if wait < 1 and granted == 0 then wait = 1 end
return {granted, wait, in_minute, in_hour, binding}
"#;

/// What the script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The call may go now.
    pub granted: bool,
    /// Otherwise, how long until the entry filling the binding window leaves it.
    pub wait: Duration,
    /// Calls in the rolling minute (this one included when granted).
    pub in_minute: u64,
    /// Calls in the rolling hour (the minute's count without an hourly limit).
    pub in_hour: u64,
    /// Which window is full: 1 the minute, 2 the hour, 0 none.
    pub binding: u8,
}

/// One call this host was granted, for the console and for writing fallback calls back.
#[derive(Debug, Clone, Copy)]
struct Grant {
    at: Instant,
    /// The member number of a call granted by the fallback budget and not yet written to
    /// Redis.
    unsynced: Option<u64>,
}

/// The host's fallback while Redis cannot be reached.
struct Fallback {
    budget: Arc<Budget>,
    next_probe: Instant,
}

struct State {
    fallback: Option<Fallback>,
    /// Per family: calls the shared windows held at Redis's last answer (minute, hour) and
    /// when.
    seen: [Option<(u64, u64, Instant)>; 5],
    /// Per family: calls this host was granted over the last hour, oldest first.
    grants: [VecDeque<Grant>; 5],
}

/// The request budget of one (tenant, client id) kept in Redis and shared by every host.
pub struct SharedBudget {
    link: Arc<RedisLink>,
    /// `<prefix>:budget:<tenant>:<client>`; each family's set is under it.
    key_base: String,
    /// Which registration, for logs and `/readyz`: `tenant <t>, client <c>`.
    registration: String,
    config: BudgetConfig,
    actions_floor_percent: u8,
    share_percent: u8,
    minute: Duration,
    hour: Duration,
    script: redis::Script,
    host_id: String,
    seq: AtomicU64,
    probing: AtomicBool,
    state: Mutex<State>,
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBudget")
            .field("registration", &self.registration)
            .field("config", &self.config)
            .field("actions_floor_percent", &self.actions_floor_percent)
            .field("share_percent", &self.share_percent)
            .finish_non_exhaustive()
    }
}

impl SharedBudget {
    /// The budget of `tenant_id` and `client_id` (compared without case) with these limits,
    /// keeping `actions_floor_percent` (10..=90) of every window free of background calls, and
    /// using `share_percent` (1..=100) of every limit on its own while Redis is lost.
    pub fn new(
        link: Arc<RedisLink>,
        tenant_id: &str,
        client_id: &str,
        config: &BudgetConfig,
        actions_floor_percent: u8,
        share_percent: u8,
    ) -> SharedBudget {
        Self::with_windows(
            link,
            tenant_id,
            client_id,
            config,
            actions_floor_percent,
            share_percent,
            MINUTE + WINDOW_MARGIN,
            HOUR + WINDOW_MARGIN,
        )
    }

    /// The same with a "minute" and "hour" of `minute` and `hour` (tests use short ones).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_windows(
        link: Arc<RedisLink>,
        tenant_id: &str,
        client_id: &str,
        config: &BudgetConfig,
        actions_floor_percent: u8,
        share_percent: u8,
        minute: Duration,
        hour: Duration,
    ) -> SharedBudget {
        let tenant = tenant_id.trim().to_ascii_lowercase();
        let client = client_id.trim().to_ascii_lowercase();
        let key_base = link.key(&["budget", &tenant, &client]);
        metrics::gauge!("defender_budget_shared", "state" => "shared").increment(1.0);
        SharedBudget {
            link,
            key_base,
            registration: format!("tenant {tenant}, client {client}"),
            config: *config,
            actions_floor_percent: actions_floor_percent.clamp(10, 90),
            share_percent: share_percent.clamp(1, 100),
            minute,
            hour,
            script: redis::Script::new(PERMIT_SCRIPT),
            host_id: uuid::Uuid::new_v4().simple().to_string(),
            seq: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            state: Mutex::new(State {
                fallback: None,
                seen: [None; 5],
                grants: Default::default(),
            }),
        }
    }

    /// The limits (of the whole registration, across hosts).
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The share of each window, in per cent, kept free of background calls.
    pub fn actions_floor_percent(&self) -> u8 {
        self.actions_floor_percent
    }

    /// The share of each limit this host uses on its own while Redis cannot be reached.
    pub fn fallback_share_percent(&self) -> u8 {
        self.share_percent
    }

    /// `tenant <tenant id>, client <client id>`.
    pub fn registration(&self) -> &str {
        &self.registration
    }

    /// Whether the last permit found Redis unreachable (the host is on its fallback share).
    pub fn is_degraded(&self) -> bool {
        self.lock().fallback.is_some()
    }

    /// How long a call without a deadline may wait (the configured `max_wait_secs`).
    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.config.max_wait_secs).min(Duration::from_secs(24 * 3600))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limit(&self, family: Family) -> RateLimit {
        match family {
            Family::Default => self.config.default,
            Family::LiveResponse => self.config.live_response,
            Family::PackageUri => self.config.package_uri,
            Family::Hunting => self.config.hunting,
            Family::Graph => self.config.graph,
        }
    }

    /// The most calls of any kind a minute and an hour window (0: none) may hold for a call
    /// of `priority` to go: the local budget's rules.
    fn caps(&self, family: Family, priority: Priority) -> (u64, u64) {
        let limit = self.limit(family);
        let minute = usize::try_from(limit.per_minute.max(1)).unwrap_or(usize::MAX);
        let hour = limit
            .per_hour
            .map(|h| usize::try_from(h.max(1)).unwrap_or(usize::MAX));
        let (m, h) = match priority {
            Priority::Respond => (minute, hour),
            Priority::Read => (
                minute.saturating_sub(minute / HEADROOM_DIVISOR).max(1),
                hour.map(|h| h.saturating_sub(h / HEADROOM_DIVISOR).max(1)),
            ),
            Priority::Background => (
                background_share(minute, self.actions_floor_percent),
                hour.map(|h| background_share(h, self.actions_floor_percent)),
            ),
        };
        (m as u64, h.map_or(0, |h| h as u64))
    }

    fn member(&self, seq: u64) -> String {
        format!("{}:{seq}", self.host_id)
    }

    /// Runs the permit script once for `family` at `priority`, writing `backfill` (age in
    /// µs, member) first.
    pub(crate) async fn run_script(
        &self,
        family: Family,
        priority: Priority,
        backfill: &[(i64, String)],
    ) -> Result<Answer, RedisError> {
        let (max_minute, max_hour) = self.caps(family, priority);
        let hour_us = if self.limit(family).per_hour.is_some() {
            micros(self.hour)
        } else {
            0
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut invocation = self
            .script
            .key(format!("{}:{}", self.key_base, family.name()));
        invocation
            .arg(micros(self.minute))
            .arg(hour_us)
            .arg(max_minute)
            .arg(max_hour)
            .arg(self.member(seq));
        for (age, member) in backfill {
            invocation.arg(*age).arg(member);
        }
        let call = async {
            let mut conn = self.link.conn().await?;
            let answer: (i64, i64, i64, i64, i64) = invocation.invoke_async(&mut conn).await?;
            Ok::<_, RedisError>(answer)
        };
        let (granted, wait, in_minute, in_hour, binding) =
            tokio::time::timeout(COMMAND_TIMEOUT + COMMAND_TIMEOUT, call)
                .await
                .map_err(|_| RedisError("the budget script timed out".into()))??;
        Ok(Answer {
            granted: granted == 1,
            wait: Duration::from_micros(u64::try_from(wait).unwrap_or(0)),
            in_minute: u64::try_from(in_minute).unwrap_or(0),
            in_hour: u64::try_from(in_hour).unwrap_or(0),
            binding: u8::try_from(binding).unwrap_or(0),
        })
    }

    /// A permit for a call of `family` at `priority`: `Ok(now)` when it may go now, or when to
    /// ask again. On the fallback budget a call may also get a moment ahead (the local
    /// budget's reservation) or be refused past `latest`.
    pub(crate) async fn reserve(
        &self,
        family: Family,
        priority: Priority,
        now: Instant,
        latest: Instant,
    ) -> Result<Instant, Spent> {
        let (mut fallback, try_redis) = {
            let state = self.lock();
            match &state.fallback {
                None => (None, true),
                Some(f) => {
                    let probe = now >= f.next_probe && !self.probing.swap(true, Ordering::AcqRel);
                    (Some(f.budget.clone()), probe)
                }
            }
        };
        if try_redis {
            let backfill = self.unsynced(family, now);
            let result = self.run_script(family, priority, &backfill).await;
            if fallback.is_some() {
                self.probing.store(false, Ordering::Release);
            }
            match result {
                Ok(answer) => return self.answered(family, answer, &backfill, now),
                Err(e) => fallback = Some(self.lost(&e, now)),
            }
        }
        let Some(budget) = fallback else {
            // Not reached: without a fallback Redis was asked.
            return Err(Spent {
                at: now + PROBE_INTERVAL,
                limit: format!("{}/min", self.limit(family).per_minute),
            });
        };
        let got = budget.reserve(family, priority, now, latest);
        if let Ok(at) = got {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            self.record(
                family,
                Grant {
                    at,
                    unsynced: Some(seq),
                },
            );
            metrics::counter!("defender_budget_fallback_total", "family" => family.name())
                .increment(1);
        }
        got
    }

    /// The calls of `family` granted on the fallback and not yet written to Redis, as (age
    /// in µs, member); negative ages are reservations ahead.
    fn unsynced(&self, family: Family, now: Instant) -> Vec<(i64, String)> {
        let state = self.lock();
        state.grants[family.index()]
            .iter()
            .filter_map(|g| {
                let seq = g.unsynced?;
                let age = if g.at <= now {
                    i64::try_from(micros(now - g.at)).unwrap_or(i64::MAX)
                } else {
                    -i64::try_from(micros(g.at - now)).unwrap_or(i64::MAX)
                };
                Some((age, self.member(seq)))
            })
            .collect()
    }

    /// Redis answered: the outage (if any) is over; a permit now or when to ask again.
    fn answered(
        &self,
        family: Family,
        answer: Answer,
        backfill: &[(i64, String)],
        now: Instant,
    ) -> Result<Instant, Spent> {
        let mut state = self.lock();
        if state.fallback.take().is_some() {
            metrics::gauge!("defender_budget_shared", "state" => "fallback").decrement(1.0);
            metrics::gauge!("defender_budget_shared", "state" => "shared").increment(1.0);
            tracing::info!(
                registration = %self.registration,
                "Redis answers again: the request budget is shared by every host again"
            );
        }
        if !backfill.is_empty() {
            for g in state.grants[family.index()].iter_mut() {
                g.unsynced = None;
            }
        }
        // Answers to concurrent calls arrive in any order: keep the fuller count of those
        // close together (the fallback budget starts from it).
        let seen = &mut state.seen[family.index()];
        *seen = Some(match *seen {
            Some((m, h, at)) if now.saturating_duration_since(at) < PROBE_INTERVAL => {
                (m.max(answer.in_minute), h.max(answer.in_hour), at.max(now))
            }
            _ => (answer.in_minute, answer.in_hour, now),
        });
        if answer.granted {
            drop(state);
            self.record(
                family,
                Grant {
                    at: now,
                    unsynced: None,
                },
            );
            return Ok(now);
        }
        let limit = self.limit(family);
        let limit = match (answer.binding, limit.per_hour) {
            (2, Some(h)) => format!("{h}/h"),
            _ => format!("{}/min", limit.per_minute),
        };
        // A little jitter, so callers told the same moment do not all ask at once.
        let spread = (answer.wait / 20).min(Duration::from_millis(50));
        let jitter = if spread.is_zero() {
            Duration::ZERO
        } else {
            rand::Rng::gen_range(&mut rand::thread_rng(), Duration::ZERO..spread)
        };
        Err(Spent {
            at: now + answer.wait + jitter,
            limit,
        })
    }

    /// A script call failed: the fallback budget (made now when this starts an outage).
    fn lost(&self, error: &RedisError, now: Instant) -> Arc<Budget> {
        let mut state = self.lock();
        if let Some(f) = &mut state.fallback {
            f.next_probe = now + PROBE_INTERVAL;
            return f.budget.clone();
        }
        let budget = Budget::with_windows(&self.fallback_config(), self.minute, self.hour)
            .with_actions_floor(self.actions_floor_percent);
        // Count what the shared windows held at the last answer as sent then (calls that
        // were only in the hour window, a minute earlier).
        for family in FAMILIES {
            if let Some((in_minute, in_hour, at)) = state.seen[family.index()] {
                if let Some(earlier) = at.checked_sub(self.minute) {
                    budget.seed(
                        family,
                        earlier,
                        usize::try_from(in_hour.saturating_sub(in_minute)).unwrap_or(0),
                    );
                }
                budget.seed(family, at, usize::try_from(in_minute).unwrap_or(0));
            }
        }
        let budget = Arc::new(budget);
        state.fallback = Some(Fallback {
            budget: budget.clone(),
            next_probe: now + PROBE_INTERVAL,
        });
        metrics::gauge!("defender_budget_shared", "state" => "shared").decrement(1.0);
        metrics::gauge!("defender_budget_shared", "state" => "fallback").increment(1.0);
        tracing::warn!(
            registration = %self.registration,
            error = %error,
            share_percent = self.share_percent,
            "Redis cannot be reached: this host keeps to its share of the request budget on its own until Redis answers again"
        );
        budget
    }

    /// The limits of the fallback budget: the share of each, rounded down, at least one.
    fn fallback_config(&self) -> BudgetConfig {
        let share = |n: u32| {
            u32::try_from(u64::from(n) * u64::from(self.share_percent) / 100)
                .unwrap_or(n)
                .max(1)
        };
        let scale = |l: RateLimit| RateLimit::new(share(l.per_minute), l.per_hour.map(share));
        BudgetConfig {
            default: scale(self.config.default),
            live_response: scale(self.config.live_response),
            package_uri: scale(self.config.package_uri),
            hunting: scale(self.config.hunting),
            graph: scale(self.config.graph),
            max_wait_secs: self.config.max_wait_secs,
        }
    }

    fn record(&self, family: Family, grant: Grant) {
        let mut state = self.lock();
        let log = &mut state.grants[family.index()];
        if let Some(expired) = grant.at.checked_sub(self.hour.max(self.minute)) {
            while log.front().is_some_and(|g| g.at <= expired) {
                log.pop_front();
            }
        }
        let at = log.partition_point(|g| g.at <= grant.at);
        log.insert(at, grant);
    }

    /// The calls this host was granted per family in the rolling minute and hour.
    pub fn usage(&self) -> Vec<FamilyUse> {
        let now = Instant::now();
        let state = self.lock();
        FAMILIES
            .iter()
            .map(|&family| {
                let log = &state.grants[family.index()];
                let since = |d: Duration| {
                    let from = now.checked_sub(d);
                    log.iter()
                        .filter(|g| g.at <= now && from.is_none_or(|f| g.at > f))
                        .count() as u64
                };
                FamilyUse {
                    family,
                    limit: self.limit(family),
                    last_minute: since(MINUTE),
                    last_hour: since(HOUR),
                }
            })
            .collect()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "../../tests/support/redis_server.rs"]
mod redis_server;

#[cfg(test)]
mod tests {
    use super::redis_server::RedisServer;
    use super::*;
    use crate::config::StateBackendConfig;

    fn link(server: &RedisServer, prefix: &str) -> Arc<RedisLink> {
        let config = StateBackendConfig {
            backend: crate::config::StateBackend::Redis,
            redis_url: Some(secrecy::SecretString::from(server.url())),
            key_prefix: prefix.to_string(),
            ..StateBackendConfig::default()
        };
        Arc::new(RedisLink::of(&config).unwrap().unwrap())
    }

    fn config(per_minute: u32, per_hour: Option<u32>) -> BudgetConfig {
        BudgetConfig {
            default: RateLimit::new(per_minute, per_hour),
            ..BudgetConfig::STANDARD
        }
    }

    fn budget(link: &Arc<RedisLink>, limits: &BudgetConfig, minute: Duration) -> SharedBudget {
        SharedBudget::with_windows(
            link.clone(),
            "Tenant-A",
            "Client-B",
            limits,
            50,
            50,
            minute,
            Duration::from_secs(3600),
        )
    }

    async fn granted(b: &SharedBudget, priority: Priority) -> bool {
        b.run_script(Family::Default, priority, &[])
            .await
            .unwrap()
            .granted
    }

    #[tokio::test]
    async fn the_script_keeps_the_priorities_of_the_local_budget() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let link = link(&server, "prio");
        let b = budget(&link, &config(20, None), Duration::from_secs(3600));
        // Background calls fill half of the window (floor 50 %) ...
        let mut background = 0;
        for _ in 0..30 {
            if granted(&b, Priority::Background).await {
                background += 1;
            }
        }
        assert_eq!(background, 10);
        // ... reads all but a tenth of it ...
        let mut reads = 0;
        for _ in 0..30 {
            if granted(&b, Priority::Read).await {
                reads += 1;
            }
        }
        assert_eq!(reads, 8);
        // ... and state-changing calls the rest.
        let mut responds = 0;
        for _ in 0..30 {
            if granted(&b, Priority::Respond).await {
                responds += 1;
            }
        }
        assert_eq!(responds, 2);
        let refused = b
            .run_script(Family::Default, Priority::Respond, &[])
            .await
            .unwrap();
        assert!(!refused.granted);
        assert_eq!((refused.binding, refused.in_minute), (1, 20));
        assert!(refused.wait > Duration::from_secs(3500), "{refused:?}");
        // Another family, and another registration, have windows of their own.
        assert!(
            b.run_script(Family::Hunting, Priority::Read, &[])
                .await
                .unwrap()
                .granted
        );
        let other = SharedBudget::new(link.clone(), "tenant-a", "other", &config(20, None), 50, 50);
        assert!(
            other
                .run_script(Family::Default, Priority::Read, &[])
                .await
                .unwrap()
                .granted
        );
        // The registration is compared without case: the same windows.
        let same = SharedBudget::new(link, "TENANT-a", "client-b", &config(20, None), 50, 50);
        assert!(
            !same
                .run_script(Family::Default, Priority::Respond, &[])
                .await
                .unwrap()
                .granted
        );
    }

    #[tokio::test]
    async fn the_hour_window_binds_after_the_minute_one() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let link = link(&server, "hour");
        let minute = Duration::from_millis(300);
        let b = budget(&link, &config(2, Some(3)), minute);
        assert!(granted(&b, Priority::Respond).await);
        assert!(granted(&b, Priority::Respond).await);
        let full = b
            .run_script(Family::Default, Priority::Respond, &[])
            .await
            .unwrap();
        assert!(!full.granted);
        assert_eq!(full.binding, 1);
        assert!(full.wait <= minute, "{full:?}");
        // Once the minute has passed, the third call of the hour goes ...
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !granted(&b, Priority::Respond).await {
            assert!(
                std::time::Instant::now() < deadline,
                "the minute never passed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ... and the fourth waits for the hour, whatever the minute says.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let spent = loop {
            let answer = b
                .run_script(Family::Default, Priority::Respond, &[])
                .await
                .unwrap();
            assert!(!answer.granted, "{answer:?}");
            if answer.binding == 2 {
                break answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the minute never passed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(spent.in_hour, 3);
        assert!(spent.wait > Duration::from_secs(3000), "{spent:?}");
        let refused = b
            .reserve(
                Family::Default,
                Priority::Respond,
                Instant::now(),
                Instant::now(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.limit, "3/h");
    }

    #[tokio::test]
    async fn two_hosts_share_the_windows() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let link_a = link(&server, "two");
        let link_b = link(&server, "two");
        let a = budget(&link_a, &config(10, None), Duration::from_secs(3600));
        let b = budget(&link_b, &config(10, None), Duration::from_secs(3600));
        let calls = (0..40).map(|i| {
            let host = if i % 2 == 0 { &a } else { &b };
            async move {
                let now = Instant::now();
                host.reserve(Family::Default, Priority::Respond, now, now)
                    .await
                    .is_ok()
            }
        });
        let granted = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|g| *g)
            .count();
        assert_eq!(granted, 10);
        let used: u64 = [&a, &b].iter().map(|h| h.usage()[0].last_hour).sum();
        assert_eq!(used, 10);
    }

    #[tokio::test]
    async fn a_lost_redis_means_the_fallback_share_then_the_shared_budget_again() {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        let link = link(&server, "lost");
        let b = budget(&link, &config(20, None), Duration::from_secs(3600));
        let now = Instant::now;
        for _ in 0..4 {
            let t = now();
            assert_eq!(
                b.reserve(Family::Default, Priority::Respond, t, t).await,
                Ok(t)
            );
        }
        assert!(!b.is_degraded());
        server.kill();
        // Half of 20, with the 4 the shared window held already counted: 6 more.
        let mut fallback = 0;
        for _ in 0..20 {
            let t = now();
            if b.reserve(Family::Default, Priority::Respond, t, t)
                .await
                .is_ok()
            {
                fallback += 1;
            }
        }
        assert_eq!(fallback, 6);
        assert!(b.is_degraded());
        server.restart();
        // Redis is asked again (at most once a second): the budget is shared again, and the
        // calls made meanwhile are in the shared window.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let t = now();
            let _ = b.reserve(Family::Default, Priority::Respond, t, t).await;
            if !b.is_degraded() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never shared again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut conn = link.conn().await.unwrap();
        let held: u64 = redis::cmd("ZCARD")
            .arg(link.key(&["budget", "tenant-a", "client-b", "default"]))
            .query_async(&mut conn)
            .await
            .unwrap();
        // 4 before, 6 on the fallback, and the one granted by the answer that ended the
        // outage (if the window had room: it had, 10 < 20).
        assert_eq!(held, 11);
    }
}
