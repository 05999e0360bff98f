//! Which request budget a client draws on, and one budget per app registration.
//!
//! Microsoft counts calls per application and tenant, so every asset configured with the same
//! `tenant_id` and `client_id` (compared without case) shares one budget. When their
//! `[assets.<id>.budget]` sections differ, the shared budget takes the strictest value of each
//! limit (the smallest per-minute and per-hour counts; an hourly limit set on any of them
//! applies) and the largest actions floor (the most kept free of background calls); each asset
//! keeps its own `max_wait_secs`, which only says how long its callers wait. With
//! `[server.state] backend = "redis"` the budget lives in Redis ([`SharedBudget`]) and is shared
//! by every host as well; otherwise it is a local [`Budget`] shared by the assets of this host.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::{Budget, DEFAULT_ACTIONS_FLOOR_PERCENT, FamilyUse, Spent};
use super::shared_budget::SharedBudget;
use super::{Family, Priority};
use crate::config::{BudgetConfig, Config, RateLimit, StateBackend};
use crate::redis_link::RedisLink;

/// The request budget a client takes its permits from: local to the host or shared through
/// Redis, with the asset's longest wait. Cheap to clone.
#[derive(Clone)]
pub struct RequestBudget {
    source: Source,
    max_wait: Duration,
}

#[derive(Clone)]
enum Source {
    Local(Arc<Budget>),
    Shared(Arc<SharedBudget>),
}

impl fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Local(b) => f.debug_tuple("Local").field(b).finish(),
            Source::Shared(b) => f.debug_tuple("Shared").field(b).finish(),
        }
    }
}

impl From<Budget> for RequestBudget {
    fn from(budget: Budget) -> RequestBudget {
        RequestBudget::local(Arc::new(budget))
    }
}

impl RequestBudget {
    /// A budget kept in this process (its own longest wait).
    pub fn local(budget: Arc<Budget>) -> RequestBudget {
        RequestBudget {
            max_wait: budget.max_wait(),
            source: Source::Local(budget),
        }
    }

    /// A budget kept in Redis (its own longest wait).
    pub fn shared(budget: Arc<SharedBudget>) -> RequestBudget {
        RequestBudget {
            max_wait: budget.max_wait(),
            source: Source::Shared(budget),
        }
    }

    /// The same budget with another longest wait for calls without a deadline.
    pub fn with_max_wait(mut self, max_wait: Duration) -> RequestBudget {
        self.max_wait = max_wait;
        self
    }

    /// How long a call without a deadline may wait for a permit or a `Retry-After`.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The limits.
    pub fn config(&self) -> &BudgetConfig {
        match &self.source {
            Source::Local(b) => b.config(),
            Source::Shared(b) => b.config(),
        }
    }

    /// The limits of one family.
    pub fn limit(&self, family: Family) -> RateLimit {
        family_limit(self.config(), family)
    }

    /// The share of each window, in per cent, kept free of background calls.
    pub fn actions_floor_percent(&self) -> u8 {
        match &self.source {
            Source::Local(b) => b.actions_floor_percent(),
            Source::Shared(b) => b.actions_floor_percent(),
        }
    }

    /// What each family used (for a shared budget: the calls of this host).
    pub fn usage(&self) -> Vec<FamilyUse> {
        match &self.source {
            Source::Local(b) => b.usage(),
            Source::Shared(b) => b.usage(),
        }
    }

    /// The Redis-kept budget, when it is one.
    pub fn shared_budget(&self) -> Option<&Arc<SharedBudget>> {
        match &self.source {
            Source::Local(_) => None,
            Source::Shared(b) => Some(b),
        }
    }

    /// Whether this budget is the same as `other`'s (assets of one registration).
    pub fn same_as(&self, other: &RequestBudget) -> bool {
        match (&self.source, &other.source) {
            (Source::Local(a), Source::Local(b)) => Arc::ptr_eq(a, b),
            (Source::Shared(a), Source::Shared(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Whether a caller told to wait asks again rather than holding a reservation (a shared
    /// budget reserves nothing ahead).
    pub(crate) fn asks_again(&self) -> bool {
        matches!(self.source, Source::Shared(_))
    }

    /// A permit: see [`Budget::reserve`] and [`SharedBudget::reserve`].
    pub(crate) async fn reserve(
        &self,
        family: Family,
        priority: Priority,
        now: Instant,
        latest: Instant,
    ) -> Result<Instant, Spent> {
        match &self.source {
            Source::Local(b) => b.reserve(family, priority, now, latest),
            Source::Shared(b) => b.reserve(family, priority, now, latest).await,
        }
    }
}

fn family_limit(config: &BudgetConfig, family: Family) -> RateLimit {
    match family {
        Family::Default => config.default,
        Family::LiveResponse => config.live_response,
        Family::PackageUri => config.package_uri,
        Family::Hunting => config.hunting,
        Family::Graph => config.graph,
    }
}

/// The strictest of several budgets: the smallest count of each limit (an hourly limit any of
/// them sets applies) and the shortest longest wait. `None` for no budgets.
pub fn strictest(budgets: &[BudgetConfig]) -> Option<BudgetConfig> {
    let min_limit = |a: RateLimit, b: RateLimit| RateLimit {
        per_minute: a.per_minute.min(b.per_minute),
        per_hour: match (a.per_hour, b.per_hour) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
    };
    budgets.iter().copied().reduce(|a, b| BudgetConfig {
        default: min_limit(a.default, b.default),
        live_response: min_limit(a.live_response, b.live_response),
        package_uri: min_limit(a.package_uri, b.package_uri),
        hunting: min_limit(a.hunting, b.hunting),
        graph: min_limit(a.graph, b.graph),
        max_wait_secs: a.max_wait_secs.min(b.max_wait_secs),
    })
}

/// One app registration in one tenant and the assets using it.
#[derive(Debug, Clone)]
struct Registration {
    tenant_id: String,
    client_id: String,
    assets: Vec<String>,
    budget: RequestBudget,
}

/// A registration whose Redis-kept budget this host currently enforces on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedBudget {
    /// The tenant id (lower case).
    pub tenant_id: String,
    /// The app registration's client id (lower case).
    pub client_id: String,
    /// The assets using it.
    pub assets: Vec<String>,
    /// The share of each limit this host uses meanwhile.
    pub share_percent: u8,
}

/// The request budgets of every configured asset: one per (tenant, client id).
#[derive(Debug, Default)]
pub struct TenantBudgets {
    registrations: Vec<Registration>,
    /// Asset id → (index in `registrations`, its own longest wait).
    by_asset: BTreeMap<String, (usize, Duration)>,
}

impl TenantBudgets {
    /// Groups the assets of `config` by registration and builds one budget per group: in
    /// Redis when `[server.state] backend = "redis"` and `redis` is given, else in process.
    pub fn build(config: &Config, redis: Option<&Arc<RedisLink>>) -> TenantBudgets {
        let mut groups: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
        for (id, asset) in &config.assets {
            let key = (
                asset.tenant_id.trim().to_ascii_lowercase(),
                asset.client_id.trim().to_ascii_lowercase(),
            );
            groups.entry(key).or_default().push(id);
        }
        let redis = redis.filter(|_| config.server.state.backend == StateBackend::Redis);
        let mut budgets = TenantBudgets::default();
        for ((tenant_id, client_id), ids) in groups {
            let limits: Vec<BudgetConfig> = ids.iter().map(|id| config.budget(id)).collect();
            let limits = strictest(&limits).unwrap_or_default();
            let floor = ids
                .iter()
                .map(|id| {
                    config
                        .ingestion(id)
                        .map_or(DEFAULT_ACTIONS_FLOOR_PERCENT, |i| i.actions_floor_percent)
                })
                .max()
                .unwrap_or(DEFAULT_ACTIONS_FLOOR_PERCENT);
            let budget = match redis {
                Some(link) => RequestBudget::shared(Arc::new(SharedBudget::new(
                    link.clone(),
                    &tenant_id,
                    &client_id,
                    &limits,
                    floor,
                    config.server.state.fallback_share_percent,
                ))),
                None => {
                    RequestBudget::local(Arc::new(Budget::new(&limits).with_actions_floor(floor)))
                }
            };
            let index = budgets.registrations.len();
            for id in &ids {
                let own_wait = Duration::from_secs(config.budget(id).max_wait_secs)
                    .min(Duration::from_secs(24 * 3600));
                budgets
                    .by_asset
                    .insert((*id).to_string(), (index, own_wait));
            }
            budgets.registrations.push(Registration {
                tenant_id,
                client_id,
                assets: ids.iter().map(|s| s.to_string()).collect(),
                budget,
            });
        }
        budgets
    }

    /// The budget of the asset `id` (its registration's, with the asset's own longest wait).
    pub fn for_asset(&self, id: &str) -> Option<RequestBudget> {
        let (index, max_wait) = self.by_asset.get(id)?;
        let registration = self.registrations.get(*index)?;
        Some(registration.budget.clone().with_max_wait(*max_wait))
    }

    /// The Redis-kept budgets this host currently enforces on its own (Redis lost at the last
    /// permit). Reads only in-memory flags.
    pub fn degraded(&self) -> Vec<DegradedBudget> {
        self.registrations
            .iter()
            .filter_map(|r| {
                let shared = r.budget.shared_budget()?;
                shared.is_degraded().then(|| DegradedBudget {
                    tenant_id: r.tenant_id.clone(),
                    client_id: r.client_id.clone(),
                    assets: r.assets.clone(),
                    share_percent: shared.fallback_share_percent(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strictest_budget_takes_the_smallest_limits() {
        let a = BudgetConfig {
            default: RateLimit::new(50, None),
            hunting: RateLimit::new(45, Some(700)),
            max_wait_secs: 10,
            ..BudgetConfig::STANDARD
        };
        let b = BudgetConfig {
            default: RateLimit::new(80, Some(1000)),
            hunting: RateLimit::new(20, Some(1500)),
            ..BudgetConfig::STANDARD
        };
        let s = strictest(&[a, b]).unwrap();
        assert_eq!(s.default, RateLimit::new(50, Some(1000)));
        assert_eq!(s.hunting, RateLimit::new(20, Some(700)));
        assert_eq!(s.live_response, BudgetConfig::STANDARD.live_response);
        assert_eq!(s.max_wait_secs, 10);
        assert_eq!(strictest(&[]), None);
        assert_eq!(strictest(&[a]), Some(a));
    }
}
