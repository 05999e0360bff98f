//! The client-side request budget of one asset: how many calls each endpoint family may make
//! in any rolling minute and hour, enforced before a request is sent so the host slows down
//! before Defender answers 429.
//!
//! Each family keeps a log of the moments its calls were (or will be) sent. A call gets the
//! earliest moment at which sending it keeps every rolling window within its limit; that
//! moment is reserved under a short lock (no await while holding it) and the caller then
//! sleeps outside the lock, so thousands of concurrent callers each cost one timer. A sliding
//! log, rather than a token bucket, is what matches "N calls per minute": a bucket holding N
//! permits that refills at N per minute lets through up to 2N − 1 calls in one rolling minute,
//! exactly the burst that makes Defender answer 429. Windows are one second longer than their
//! nominal length, for the time a request takes to reach Defender.
//!
//! Background calls (alert ingestion) never reserve a moment ahead: one gets a permit only when
//! sending it now keeps every window of its family at most `100 − actions_floor_percent` per
//! cent full, counting every call, so at least the floor share of each window is left to
//! playbook actions. A background caller that gets no permit holds nothing in the log and
//! asks again later, so it never stands in front of a read or a state-changing call.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

#[cfg(test)]
use http::Method;
use tokio::time::Instant;

use crate::config::{BudgetConfig, RateLimit};

/// Added to each window: a request reaches Defender a little after it is reserved.
pub(crate) const WINDOW_MARGIN: Duration = Duration::from_secs(1);
/// One minute.
pub(crate) const MINUTE: Duration = Duration::from_secs(60);
/// One hour.
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
/// Reads may use all but a tenth of each window (integer division, so families of fewer than
/// ten calls keep no headroom): the rest is kept for state-changing calls.
pub(crate) const HEADROOM_DIVISOR: usize = 10;
/// Upper bound of the longest wait without a deadline (config allows at most an hour).
const MAX_WAIT_CAP: Duration = Duration::from_secs(24 * 3600);
/// The share of each window kept for playbook actions unless configured otherwise.
pub const DEFAULT_ACTIONS_FLOOR_PERCENT: u8 = 50;

/// Who goes first when the request budget is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Changes something on a device or in the tenant (isolate, live response, cancel, tags,
    /// uploads): takes the next permit before any read, and may use the headroom reads leave.
    Respond,
    /// Reads (status polls, lists, enrichment, downloads of links).
    Read,
    /// Work nobody waits for (alert ingestion's polls): a permit only while the family's
    /// windows keep the actions floor free, never a reservation ahead of time.
    Background,
}

/// Endpoint families with limits of their own, picked from the method and the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Every endpoint without a limit of its own (100/min, 1500/h).
    Default,
    /// `POST .../runliveresponse` (10/min).
    LiveResponse,
    /// `GET .../getPackageUri` (2/min, 120/h).
    PackageUri,
    /// `POST /api/advancedqueries/run` and Graph's `POST /security/runHuntingQuery` (45/min,
    /// 1500/h).
    Hunting,
    /// The Microsoft Graph security API under `/v1.0/security` (150/min, 9000/h).
    Graph,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 5] = [
        Family::Default,
        Family::LiveResponse,
        Family::PackageUri,
        Family::Hunting,
        Family::Graph,
    ];

    /// The family of a call worked out from its path (`path` without the query; case does not
    /// matter); the client takes it from the endpoint catalogue, tests check the two agree.
    #[cfg(test)]
    pub(crate) fn of(method: &Method, path: &str) -> Family {
        let path = path.trim_end_matches('/');
        let last = path.rsplit('/').next().unwrap_or_default();
        if path
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("/v1.0"))
        {
            return if last.eq_ignore_ascii_case("runHuntingQuery") {
                Family::Hunting
            } else {
                Family::Graph
            };
        }
        if *method == Method::POST && last.eq_ignore_ascii_case("runliveresponse") {
            Family::LiveResponse
        } else if *method == Method::GET && last.eq_ignore_ascii_case("getpackageuri") {
            Family::PackageUri
        } else if *method == Method::POST
            && last.eq_ignore_ascii_case("run")
            && path
                .rsplit('/')
                .nth(1)
                .is_some_and(|s| s.eq_ignore_ascii_case("advancedqueries"))
        {
            Family::Hunting
        } else {
            Family::Default
        }
    }

    /// Metric label: `default`, `live_response`, `package_uri`, `hunting`, `graph`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Default => "default",
            Family::LiveResponse => "live_response",
            Family::PackageUri => "package_uri",
            Family::Hunting => "hunting",
            Family::Graph => "graph",
        }
    }

    /// The calls of this family in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Default => "Defender API",
            Family::LiveResponse => "live response",
            Family::PackageUri => "investigation package link",
            Family::Hunting => "advanced hunting",
            Family::Graph => "Microsoft Graph security API",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Family::Default => 0,
            Family::LiveResponse => 1,
            Family::PackageUri => 2,
            Family::Hunting => 3,
            Family::Graph => 4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// No permit before the caller's limit: when the next one frees up and which limit is spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spent {
    /// The earliest moment a call could be sent.
    pub at: Instant,
    /// The spent limit, e.g. `100/min` or `1500/h`.
    pub limit: String,
}

/// The request budget of one asset, shared by every clone of its client.
pub struct Budget {
    config: BudgetConfig,
    max_wait: Duration,
    actions_floor_percent: u8,
    families: [Window; 5],
    /// Calls granted per family and minute over the last hour (for the admin console).
    history: Mutex<History>,
}

/// Every family, in display order.
pub const FAMILIES: [Family; 5] = [
    Family::Default,
    Family::LiveResponse,
    Family::PackageUri,
    Family::Hunting,
    Family::Graph,
];

/// Calls granted per family in each of the last [`HISTORY_MINUTES`] minutes.
struct History {
    /// When minute 0 began.
    base: Instant,
    /// Per family: (minute number, calls granted in it), indexed by minute modulo the length.
    minutes: [[(u64, u32); HISTORY_MINUTES]; 5],
}

/// Minutes of history kept.
const HISTORY_MINUTES: usize = 60;

impl History {
    fn minute(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_secs() / 60
    }

    fn record(&mut self, family: Family, at: Instant) {
        let minute = self.minute(at);
        let slot = &mut self.minutes[family.index()][(minute % HISTORY_MINUTES as u64) as usize];
        if slot.0 == minute {
            slot.1 = slot.1.saturating_add(1);
        } else {
            *slot = (minute, 1);
        }
    }

    /// Calls of `family` in the [`HISTORY_MINUTES`] minutes up to the one containing `now`.
    fn last_hour(&self, family: Family, now: Instant) -> u64 {
        let current = self.minute(now);
        self.minutes[family.index()]
            .iter()
            .filter(|(m, _)| *m <= current && current - m < HISTORY_MINUTES as u64)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }
}

/// How much of one family's budget was used, for the admin console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyUse {
    /// The family.
    pub family: Family,
    /// Its limits.
    pub limit: RateLimit,
    /// Calls sent (or reserved) in the rolling minute up to now.
    pub last_minute: u64,
    /// Calls granted in the last 60 minutes.
    pub last_hour: u64,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::standard()
    }
}

impl Budget {
    /// A budget with these limits.
    pub fn new(config: &BudgetConfig) -> Budget {
        Budget::with_windows(config, MINUTE + WINDOW_MARGIN, HOUR + WINDOW_MARGIN)
    }

    /// Microsoft's documented limits ([`BudgetConfig::STANDARD`]).
    pub fn standard() -> Budget {
        Budget::new(&BudgetConfig::STANDARD)
    }

    /// The configured limits.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// How long a call without a deadline may wait for a permit or a `Retry-After`.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The same budget keeping `percent` (clamped to 10..=90) of every window free of
    /// [`Priority::Background`] calls, for playbook actions (default
    /// [`DEFAULT_ACTIONS_FLOOR_PERCENT`]). Background calls get the rest, rounded down but at
    /// least one call a window.
    pub fn with_actions_floor(mut self, percent: u8) -> Budget {
        let percent = percent.clamp(10, 90);
        self.actions_floor_percent = percent;
        for window in &mut self.families {
            window.set_background_share(percent);
        }
        self
    }

    /// The share of each window, in per cent, kept free of background calls.
    pub fn actions_floor_percent(&self) -> u8 {
        self.actions_floor_percent
    }

    /// The limits of one family.
    pub fn limit(&self, family: Family) -> RateLimit {
        match family {
            Family::Default => self.config.default,
            Family::LiveResponse => self.config.live_response,
            Family::PackageUri => self.config.package_uri,
            Family::Hunting => self.config.hunting,
            Family::Graph => self.config.graph,
        }
    }

    /// A budget whose "minute" and "hour" last `minute` and `hour` (tests use short ones).
    pub(crate) fn with_windows(config: &BudgetConfig, minute: Duration, hour: Duration) -> Budget {
        let window = |limit: RateLimit| Window::new(limit, minute, hour);
        let budget = Budget {
            config: *config,
            max_wait: Duration::from_secs(config.max_wait_secs).min(MAX_WAIT_CAP),
            actions_floor_percent: DEFAULT_ACTIONS_FLOOR_PERCENT,
            families: [
                window(config.default),
                window(config.live_response),
                window(config.package_uri),
                window(config.hunting),
                window(config.graph),
            ],
            history: Mutex::new(History {
                base: Instant::now(),
                minutes: [[(u64::MAX, 0); HISTORY_MINUTES]; 5],
            }),
        };
        budget.with_actions_floor(DEFAULT_ACTIONS_FLOOR_PERCENT)
    }

    /// Reserves the earliest moment, not before `now`, at which a call of `family` keeps
    /// every window within its limit, provided it is not after `latest`; otherwise reserves
    /// nothing and says when a permit frees up. The caller sleeps until the returned moment.
    /// A [`Priority::Background`] call is only ever given `now`; otherwise `Spent::at` is when
    /// to ask again (nothing is reserved for it, whatever `latest` says).
    pub(crate) fn reserve(
        &self,
        family: Family,
        priority: Priority,
        now: Instant,
        latest: Instant,
    ) -> Result<Instant, Spent> {
        let granted = self.families[family.index()].reserve(priority, now, latest);
        if let Ok(at) = granted {
            self.history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(family, at);
        }
        granted
    }

    /// Counts `count` calls of `family` as sent at `at` (a moment in the past): a fallback
    /// budget starts out knowing what the shared one had already granted.
    pub(crate) fn seed(&self, family: Family, at: Instant, count: usize) {
        let mut log = self.families[family.index()]
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let at_index = log.partition_point(|t| *t <= at);
        for _ in 0..count {
            log.insert(at_index, at);
        }
    }

    /// What each family used: calls in the rolling minute up to now and in the last hour.
    pub fn usage(&self) -> Vec<FamilyUse> {
        let now = Instant::now();
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        FAMILIES
            .iter()
            .map(|&family| FamilyUse {
                family,
                limit: self.limit(family),
                last_minute: self.families[family.index()].in_minute_before(now),
                last_hour: history.last_hour(family, now),
            })
            .collect()
    }
}

/// The sliding log of one family.
struct Window {
    per_minute: usize,
    per_hour: Option<usize>,
    /// Permits of each minute that reads leave for state-changing calls.
    minute_headroom: usize,
    /// Permits of each hour that reads leave for state-changing calls.
    hour_headroom: usize,
    /// Most calls of any kind in a minute window for a background call to go.
    background_per_minute: usize,
    /// Most calls of any kind in an hour window for a background call to go.
    background_per_hour: Option<usize>,
    minute: Duration,
    hour: Duration,
    /// Send moments, oldest first; the last ones may lie in the future (reserved).
    log: Mutex<VecDeque<Instant>>,
}

impl Window {
    fn new(limit: RateLimit, minute: Duration, hour: Duration) -> Window {
        let per_minute = usize::try_from(limit.per_minute.max(1)).unwrap_or(usize::MAX);
        let per_hour = limit
            .per_hour
            .map(|h| usize::try_from(h.max(1)).unwrap_or(usize::MAX));
        Window {
            per_minute,
            per_hour,
            minute_headroom: per_minute / HEADROOM_DIVISOR,
            hour_headroom: per_hour.map_or(0, |h| h / HEADROOM_DIVISOR),
            background_per_minute: background_share(per_minute, DEFAULT_ACTIONS_FLOOR_PERCENT),
            background_per_hour: per_hour
                .map(|h| background_share(h, DEFAULT_ACTIONS_FLOOR_PERCENT)),
            minute,
            hour,
            log: Mutex::new(VecDeque::new()),
        }
    }

    fn set_background_share(&mut self, floor_percent: u8) {
        self.background_per_minute = background_share(self.per_minute, floor_percent);
        self.background_per_hour = self.per_hour.map(|h| background_share(h, floor_percent));
    }

    /// How long entries matter.
    fn horizon(&self) -> Duration {
        if self.per_hour.is_some() {
            self.hour.max(self.minute)
        } else {
            self.minute
        }
    }

    /// Calls sent or reserved in the minute window ending at `now`.
    fn in_minute_before(&self, now: Instant) -> u64 {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let from = now.checked_sub(self.minute);
        log.iter()
            .filter(|t| **t <= now && from.is_none_or(|f| **t > f))
            .count() as u64
    }

    fn reserve(&self, priority: Priority, now: Instant, latest: Instant) -> Result<Instant, Spent> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(expired) = now.checked_sub(self.horizon()) {
            while log.front().is_some_and(|t| *t <= expired) {
                log.pop_front();
            }
        }
        if priority == Priority::Background {
            return self.reserve_background(&mut log, now);
        }
        // A state-changing call goes now when every window containing `now` has room,
        // counting the reads already reserved for later: it overtakes queued reads.
        if priority == Priority::Respond && self.fits_now(&log, now) {
            let at = log.partition_point(|t| *t <= now);
            log.insert(at, now);
            return Ok(now);
        }
        // Otherwise the call queues after every reservation. Reads leave the headroom of
        // each window free, so state-changing calls find room even under a flood of reads.
        let (minute_limit, hour_limit) = match priority {
            Priority::Respond => (self.per_minute, self.per_hour),
            Priority::Read | Priority::Background => (
                self.per_minute.saturating_sub(self.minute_headroom).max(1),
                self.per_hour
                    .map(|h| h.saturating_sub(self.hour_headroom).max(1)),
            ),
        };
        // The log is sorted: a queued reservation is at or after the last entry.
        let mut slot = log.back().map_or(now, |last| (*last).max(now));
        let mut binding: Option<String> = None;
        if let Some(earliest) = Self::frees_at(&log, minute_limit, self.minute)
            && earliest > slot
        {
            slot = earliest;
            binding = Some(format!("{}/min", self.per_minute));
        }
        if let Some(per_hour) = hour_limit
            && let Some(earliest) = Self::frees_at(&log, per_hour, self.hour)
            && earliest > slot
        {
            slot = earliest;
            binding = Some(format!("{}/h", self.per_hour.unwrap_or(per_hour)));
        }
        if slot > latest {
            return Err(Spent {
                at: slot,
                limit: binding.unwrap_or_else(|| format!("{}/min", self.per_minute)),
            });
        }
        log.push_back(slot);
        Ok(slot)
    }

    /// A background call: now, when every window containing `now` holds fewer calls than the
    /// background share (reservations in the future included), else when to ask again.
    fn reserve_background(
        &self,
        log: &mut VecDeque<Instant>,
        now: Instant,
    ) -> Result<Instant, Spent> {
        let minute_full =
            Self::max_in_windows_around(log, now, self.minute) >= self.background_per_minute;
        let hour_full = self
            .background_per_hour
            .is_some_and(|h| Self::max_in_windows_around(log, now, self.hour) >= h);
        if !minute_full && !hour_full {
            let at = log.partition_point(|t| *t <= now);
            log.insert(at, now);
            return Ok(now);
        }
        // Ask again once the entry that fills the fullest window has left it (a guess when
        // reservations lie ahead; the next ask checks again), and not in a busy loop.
        let mut again = now + self.minute / 120;
        let mut limit = format!("{}/min", self.per_minute);
        if minute_full
            && let Some(at) = Self::frees_at(log, self.background_per_minute, self.minute)
        {
            again = again.max(at);
        }
        if hour_full && let Some(per_hour) = self.background_per_hour {
            limit = format!("{}/h", self.per_hour.unwrap_or(per_hour));
            if let Some(at) = Self::frees_at(log, per_hour, self.hour) {
                again = again.max(at);
            }
        }
        Err(Spent { at: again, limit })
    }

    /// Whether one more call at `now` keeps every minute and hour window that contains `now`
    /// within its limit, reservations in the future included.
    fn fits_now(&self, log: &VecDeque<Instant>, now: Instant) -> bool {
        let minute_ok = Self::max_in_windows_around(log, now, self.minute) < self.per_minute;
        let hour_ok = self
            .per_hour
            .is_none_or(|h| Self::max_in_windows_around(log, now, self.hour) < h);
        minute_ok && hour_ok
    }

    /// The largest number of entries in any window `[s, s + length)` that contains `at` (the
    /// log is sorted, so each count is two binary searches).
    fn max_in_windows_around(log: &VecDeque<Instant>, at: Instant, length: Duration) -> usize {
        let first_start = at
            .checked_sub(length)
            .map_or(at, |t| t + Duration::from_nanos(1))
            .min(at);
        let count_from = |s: Instant| {
            let stop = s.checked_add(length).unwrap_or(s);
            log.partition_point(|t| *t < stop)
                .saturating_sub(log.partition_point(|t| *t < s))
        };
        // The fullest window containing `at` starts at the earliest possible moment, at an
        // entry no later than `at`, or at `at` itself (taking in the most reservations ahead).
        let lo = log.partition_point(|t| *t < first_start);
        let hi = log.partition_point(|t| *t <= at);
        log.range(lo..hi)
            .copied()
            .map(count_from)
            .fold(count_from(first_start).max(count_from(at)), usize::max)
    }

    /// When the `limit`-th latest entry leaves a window of `length` (`None`: fewer entries).
    fn frees_at(log: &VecDeque<Instant>, limit: usize, length: Duration) -> Option<Instant> {
        let index = log.len().checked_sub(limit)?;
        let entry = log.get(index)?;
        // An instant a window past an existing one always fits; saturate just in case.
        Some(entry.checked_add(length).unwrap_or(*entry))
    }
}

/// The calls of a window of `limit` that background calls may fill: the share above the
/// actions floor, rounded down, at least one.
pub(crate) fn background_share(limit: usize, floor_percent: u8) -> usize {
    let share = 100usize.saturating_sub(usize::from(floor_percent));
    (limit.saturating_mul(share) / 100).max(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn config(per_minute: u32, per_hour: Option<u32>) -> BudgetConfig {
        BudgetConfig {
            default: RateLimit::new(per_minute, per_hour),
            ..BudgetConfig::STANDARD
        }
    }

    fn far(now: Instant) -> Instant {
        now + Duration::from_secs(365 * 24 * 3600)
    }

    #[test]
    fn usage_counts_granted_calls_per_family() {
        let b = Budget::new(&config(5, None));
        let now = Instant::now();
        for _ in 0..3 {
            b.reserve(Family::Default, Priority::Respond, now, now)
                .unwrap();
        }
        b.reserve(Family::Hunting, Priority::Read, now, now)
            .unwrap();
        // Spent: nothing granted, nothing counted.
        for _ in 0..5 {
            let _ = b.reserve(Family::Default, Priority::Read, now, now);
        }
        let usage = b.usage();
        assert_eq!(usage.len(), FAMILIES.len());
        let default = usage.iter().find(|u| u.family == Family::Default).unwrap();
        assert_eq!(default.limit.per_minute, 5);
        assert!(default.last_minute >= 4 && default.last_minute <= 5);
        assert_eq!(default.last_minute, default.last_hour);
        let hunting = usage.iter().find(|u| u.family == Family::Hunting).unwrap();
        assert_eq!((hunting.last_minute, hunting.last_hour), (1, 1));
        let graph = usage.iter().find(|u| u.family == Family::Graph).unwrap();
        assert_eq!((graph.last_minute, graph.last_hour), (0, 0));
    }

    #[test]
    fn families_from_method_and_path() {
        let id = "1234567890abcdef1234567890abcdef12345678";
        let cases = [
            (
                Method::POST,
                format!("/api/machines/{id}/runliveresponse"),
                Family::LiveResponse,
            ),
            (
                Method::POST,
                format!("/API/Machines/{id}/RunLiveResponse/"),
                Family::LiveResponse,
            ),
            (
                Method::GET,
                format!("/api/machines/{id}/runliveresponse"),
                Family::Default,
            ),
            (
                Method::GET,
                "/api/machineactions/abc/getPackageUri".to_string(),
                Family::PackageUri,
            ),
            (
                Method::GET,
                "/mde/api/machineactions/abc/GetPackageUri".to_string(),
                Family::PackageUri,
            ),
            (
                Method::POST,
                "/api/machineactions/abc/getPackageUri".to_string(),
                Family::Default,
            ),
            (
                Method::POST,
                "/api/advancedqueries/run".to_string(),
                Family::Hunting,
            ),
            (
                Method::POST,
                "/api/AdvancedQueries/Run".to_string(),
                Family::Hunting,
            ),
            (
                Method::GET,
                "/api/advancedqueries/run".to_string(),
                Family::Default,
            ),
            (
                Method::POST,
                "/api/machines/x/run".to_string(),
                Family::Default,
            ),
            (Method::GET, "/api/machines".to_string(), Family::Default),
            (
                Method::POST,
                format!("/api/machines/{id}/isolate"),
                Family::Default,
            ),
            (Method::GET, "/".to_string(), Family::Default),
            (Method::GET, String::new(), Family::Default),
            (
                Method::GET,
                "/v1.0/security/alerts_v2".to_string(),
                Family::Graph,
            ),
            (Method::GET, "/V1.0".to_string(), Family::Graph),
            (Method::GET, "/v1".to_string(), Family::Default),
        ];
        for (method, path, want) in cases {
            assert_eq!(Family::of(&method, &path), want, "{method} {path}");
        }
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "default",
                "live_response",
                "package_uri",
                "hunting",
                "graph"
            ]
        );
    }

    #[test]
    fn standard_limits() {
        let b = Budget::standard();
        assert_eq!(b.limit(Family::Default), RateLimit::new(100, Some(1500)));
        assert_eq!(b.limit(Family::LiveResponse), RateLimit::new(10, None));
        assert_eq!(b.limit(Family::PackageUri), RateLimit::new(2, Some(120)));
        assert_eq!(b.limit(Family::Hunting), RateLimit::new(45, Some(1500)));
        assert_eq!(b.max_wait(), Duration::from_secs(30));
    }

    #[test]
    fn the_limit_is_a_burst_then_the_oldest_call_leaves_the_window() {
        let b = Budget::new(&config(3, None));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                b.reserve(Family::Default, Priority::Respond, t0, t0),
                Ok(t0)
            );
        }
        // The fourth call cannot go now; nothing is reserved when it does not fit.
        let spent = b
            .reserve(Family::Default, Priority::Respond, t0, t0)
            .unwrap_err();
        assert_eq!(spent.at, t0 + MINUTE + WINDOW_MARGIN);
        assert_eq!(spent.limit, "3/min");
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t0, t0)
                .unwrap_err(),
            spent
        );
        // With room to wait, it gets the moment the first call leaves the window.
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t0, far(t0)),
            Ok(spent.at)
        );
        // The next one queues behind the second call.
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t0, far(t0)),
            Ok(t0 + MINUTE + WINDOW_MARGIN)
        );
        // Families are independent.
        assert_eq!(
            b.reserve(Family::Hunting, Priority::Respond, t0, t0),
            Ok(t0)
        );
    }

    #[test]
    fn the_hourly_limit_binds_after_the_minute_one() {
        let b = Budget::new(&config(2, Some(3)));
        let t0 = Instant::now();
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t0, t0),
            Ok(t0)
        );
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t0, t0),
            Ok(t0)
        );
        let t1 = t0 + Duration::from_secs(70);
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t1, t1),
            Ok(t1)
        );
        let spent = b
            .reserve(Family::Default, Priority::Respond, t1, t1)
            .unwrap_err();
        assert_eq!(spent.limit, "3/h");
        assert_eq!(spent.at, t0 + HOUR + WINDOW_MARGIN);
    }

    #[test]
    fn spent_windows_free_up_as_time_passes() {
        let b = Budget::new(&config(1, None));
        let t0 = Instant::now();
        assert_eq!(
            b.reserve(Family::PackageUri, Priority::Respond, t0, t0),
            Ok(t0)
        );
        assert_eq!(
            b.reserve(Family::PackageUri, Priority::Respond, t0, t0),
            Ok(t0)
        );
        assert!(
            b.reserve(Family::PackageUri, Priority::Respond, t0, t0)
                .is_err()
        );
        let later = t0 + MINUTE + WINDOW_MARGIN;
        assert_eq!(
            b.reserve(Family::PackageUri, Priority::Respond, later, later),
            Ok(later)
        );
    }

    proptest::proptest! {
        /// Whatever the arrival pattern and however long callers may wait, no rolling
        /// window ever holds more calls than its limit.
        #[test]
        fn no_window_ever_exceeds_its_limit(
            per_minute in 1u32..6,
            per_hour in proptest::option::of(1u32..12),
            arrivals in proptest::collection::vec((0u64..400, 0u64..200), 1..80),
        ) {
            let minute = Duration::from_millis(100);
            let hour = Duration::from_millis(1000);
            let b = Budget::with_windows(&config(per_minute, per_hour), minute, hour);
            let t0 = Instant::now();
            let mut offset = 0u64;
            let mut sent = Vec::new();
            for (gap, patience) in arrivals {
                offset += gap;
                let now = t0 + Duration::from_millis(offset);
                if let Ok(at) = b.reserve(Family::Default, Priority::Respond, now, now + Duration::from_millis(patience)) {
                    proptest::prop_assert!(at >= now);
                    sent.push(at);
                }
            }
            let mut sorted = sent.clone();
            sorted.sort();
            proptest::prop_assert_eq!(&sorted, &sent);
            for (i, start) in sent.iter().enumerate() {
                let in_minute = sent[i..].iter().filter(|t| **t < *start + minute).count();
                proptest::prop_assert!(in_minute <= per_minute as usize);
                if let Some(h) = per_hour {
                    let in_hour = sent[i..].iter().filter(|t| **t < *start + hour).count();
                    proptest::prop_assert!(in_hour <= h as usize);
                }
            }
        }
    }

    #[test]
    fn reads_leave_headroom_that_state_changing_calls_use_at_once() {
        let b = Budget::with_windows(&config(20, None), MINUTE, HOUR);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        // A flood of reads: 18 go now (20 less the headroom of 2), the rest queue a minute on.
        let reads: Vec<Instant> = (0..40)
            .map(|_| b.reserve(Family::Default, Priority::Read, t0, far).unwrap())
            .collect();
        assert_eq!(reads.iter().filter(|t| **t == t0).count(), 18);
        assert!(reads[18] >= t0 + MINUTE);
        // A state-changing call overtakes the queued reads and goes now, twice.
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t0, t0),
            Ok(t0)
        );
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t0, t0),
            Ok(t0)
        );
        // The minute is now full: the third waits, like any call.
        assert!(
            b.reserve(Family::Default, Priority::Respond, t0, t0)
                .is_err()
        );
    }

    #[test]
    fn a_state_changing_call_overtakes_only_where_every_window_has_room() {
        let b = Budget::with_windows(&config(10, None), MINUTE, HOUR);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        // Nine reads now, nine queued a minute on (headroom 1).
        for _ in 0..18 {
            b.reserve(Family::Default, Priority::Read, t0, far).unwrap();
        }
        let t1 = t0 + Duration::from_secs(30);
        // Every 60 s window around t1 holds 9 calls (those at t0, or those at t0 + 60 s, never
        // both): one more fits; a second would make one of them hold 11.
        assert_eq!(
            b.reserve(Family::Default, Priority::Respond, t1, t1),
            Ok(t1)
        );
        assert!(
            b.reserve(Family::Default, Priority::Respond, t1, t1)
                .is_err()
        );
    }

    #[test]
    fn background_calls_leave_the_actions_floor_to_reads_and_responds() {
        // 20 a minute, floor 50 %: background calls may fill 10 of each window.
        let b = Budget::with_windows(&config(20, None), MINUTE, HOUR).with_actions_floor(50);
        assert_eq!(b.actions_floor_percent(), 50);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        let granted = (0..100)
            .filter(|_| {
                b.reserve(Family::Default, Priority::Background, t0, far)
                    .is_ok()
            })
            .count();
        assert_eq!(granted, 10);
        // A refused background call is told when to ask again and holds no reservation.
        let spent = b
            .reserve(Family::Default, Priority::Background, t0, far)
            .unwrap_err();
        assert_eq!(spent.at, t0 + MINUTE);
        // Reads still go now, up to the read limit (18) less what background took ...
        for _ in 0..8 {
            assert_eq!(b.reserve(Family::Default, Priority::Read, t0, far), Ok(t0));
        }
        // ... and state-changing calls get the last two of the window.
        for _ in 0..2 {
            assert_eq!(
                b.reserve(Family::Default, Priority::Respond, t0, t0),
                Ok(t0)
            );
        }
        // Background keeps being refused while the window is full of playbook calls.
        assert!(
            b.reserve(Family::Default, Priority::Background, t0, far)
                .is_err()
        );
        // Once the window has passed, background calls go again.
        let later = t0 + MINUTE;
        assert_eq!(
            b.reserve(Family::Default, Priority::Background, later, later),
            Ok(later)
        );
    }

    #[test]
    fn queued_reads_are_not_pushed_back_by_waiting_background_callers() {
        let b = Budget::with_windows(&config(10, None), MINUTE, HOUR).with_actions_floor(10);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        // Reads fill the minute (9, headroom 1) and queue one a minute on.
        for _ in 0..10 {
            b.reserve(Family::Default, Priority::Read, t0, far).unwrap();
        }
        // Hammering background callers get nothing and reserve nothing ...
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i * 100);
            assert!(
                b.reserve(Family::Default, Priority::Background, now, far)
                    .is_err()
            );
        }
        // ... so the next read queues right behind the last one.
        assert_eq!(
            b.reserve(Family::Default, Priority::Read, t0, far),
            Ok(t0 + MINUTE)
        );
    }

    #[test]
    fn the_background_share_rounds_down_but_is_at_least_one_call() {
        assert_eq!(background_share(100, 50), 50);
        assert_eq!(background_share(100, 10), 90);
        assert_eq!(background_share(100, 90), 10);
        assert_eq!(background_share(3, 50), 1);
        assert_eq!(background_share(1, 90), 1);
        assert_eq!(background_share(1500, 25), 1125);
        // Out-of-range floors are clamped to 10..=90.
        let b = Budget::standard().with_actions_floor(0);
        assert_eq!(b.actions_floor_percent(), 10);
        let b = Budget::standard().with_actions_floor(100);
        assert_eq!(b.actions_floor_percent(), 90);
    }

    /// Calls in `[start, start + length)` of a log of millisecond offsets.
    fn in_window(log: &[u64], start: u64, length: u64) -> usize {
        log.iter()
            .filter(|t| **t >= start && **t < start + length)
            .count()
    }

    /// The most playbook calls (`all` less `background`) in any window of `length` ms that
    /// contains `now` (the fullest starts at the earliest start or at a call).
    fn playbook_around(all: &[u64], background: &[u64], now: u64, length: u64) -> usize {
        let first = now.saturating_sub(length - 1);
        std::iter::once(first)
            .chain(all.iter().copied().filter(|t| *t >= first && *t <= now))
            .map(|s| in_window(all, s, length) - in_window(background, s, length))
            .max()
            .unwrap_or(0)
    }

    proptest::proptest! {
        /// Background callers hammering never hold more than their share of any window, every
        /// window stays within its limit, and a state-changing call that arrives while
        /// playbook calls hold less than the floor share of every window around it goes at
        /// once, however many background calls came first.
        #[test]
        fn background_callers_never_take_the_floor(
            per_minute in 2u32..30,
            per_hour in proptest::option::of(2u32..60),
            floor in 10u8..=90,
            arrivals in proptest::collection::vec((0u64..30, 0u8..5, 0u64..300), 1..120),
        ) {
            let (minute, hour) = (100u64, 1000u64);
            let b = Budget::with_windows(
                &config(per_minute, per_hour),
                Duration::from_millis(minute),
                Duration::from_millis(hour),
            )
            .with_actions_floor(floor);
            let bg_minute = background_share(per_minute as usize, floor);
            let bg_hour = per_hour.map(|h| background_share(h as usize, floor));
            let t0 = Instant::now();
            let ms = |at: Instant| u64::try_from((at - t0).as_millis()).unwrap();
            let (mut offset, mut all, mut background) = (0u64, Vec::new(), Vec::new());
            for (gap, kind, patience) in arrivals {
                offset += gap;
                let now = t0 + Duration::from_millis(offset);
                let priority = match kind {
                    0 => Priority::Respond,
                    1 => Priority::Read,
                    _ => Priority::Background,
                };
                let floor_free = playbook_around(&all, &background, offset, minute)
                    < per_minute as usize - bg_minute
                    && per_hour.zip(bg_hour).is_none_or(|(h, bg)| {
                        playbook_around(&all, &background, offset, hour) < h as usize - bg
                    });
                let latest = now + Duration::from_millis(patience);
                let got = b.reserve(Family::Default, priority, now, latest);
                if priority == Priority::Respond && floor_free {
                    proptest::prop_assert_eq!(got.clone(), Ok(now));
                }
                if let Ok(at) = got {
                    proptest::prop_assert!(at >= now);
                    all.push(ms(at));
                    if priority == Priority::Background {
                        proptest::prop_assert_eq!(at, now);
                        background.push(ms(at));
                    }
                }
            }
            for start in all.iter().copied() {
                proptest::prop_assert!(in_window(&all, start, minute) <= per_minute as usize);
                proptest::prop_assert!(in_window(&background, start, minute) <= bg_minute);
                if let (Some(h), Some(bg)) = (per_hour, bg_hour) {
                    proptest::prop_assert!(in_window(&all, start, hour) <= h as usize);
                    proptest::prop_assert!(in_window(&background, start, hour) <= bg);
                }
            }
        }
    }

    #[tokio::test]
    async fn thousands_of_concurrent_callers_wait_without_holding_the_lock() {
        let b = Arc::new(Budget::with_windows(
            &config(50, None),
            Duration::from_millis(20),
            Duration::from_millis(20),
        ));
        let started = Instant::now();
        let tasks: Vec<_> = (0..2000)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    let now = Instant::now();
                    let at = b
                        .reserve(
                            Family::Default,
                            Priority::Respond,
                            now,
                            now + Duration::from_secs(60),
                        )
                        .unwrap();
                    tokio::time::sleep_until(at).await;
                    at
                })
            })
            .collect();
        let mut sent = Vec::new();
        for t in tasks {
            sent.push(t.await.unwrap());
        }
        sent.sort();
        assert_eq!(sent.len(), 2000);
        assert!(sent.iter().all(|t| *t >= started));
        for (i, start) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .filter(|t| **t < *start + Duration::from_millis(20))
                .count();
            assert!(in_window <= 50, "{in_window} calls in one window");
        }
    }
}
