//! The ingestion lease (`[server.state] backend = "redis"`): of the hosts sharing a Redis, only
//! the holder of an asset's lease `<prefix>:lease:ingest:<asset>` polls its alerts and delivers
//! its webhooks. The holder renews the lease every third of its length; when it dies, the lease
//! runs out and another host, trying as often, takes over within twice the lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::redis_link::{RedisError, RedisLink};

/// One asset's ingestion lease, as seen by this host.
pub struct Lease {
    link: Arc<RedisLink>,
    key: String,
    holder: String,
    ttl: Duration,
    leading: tokio::sync::watch::Sender<bool>,
    keeper: AtomicBool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The lease of `asset`, held under the name `holder` (this host), lasting `ttl`.
    pub fn new(link: Arc<RedisLink>, asset: &str, holder: String, ttl: Duration) -> Arc<Lease> {
        Arc::new(Lease {
            key: link.key(&["lease", "ingest", asset]),
            link,
            holder,
            ttl,
            leading: tokio::sync::watch::Sender::new(false),
            keeper: AtomicBool::new(false),
        })
    }

    /// One attempt to take or renew the lease.
    async fn take_or_renew(&self) -> Result<bool, RedisError> {
        self.link
            .take_or_renew(&self.key, &self.holder, self.ttl)
            .await
    }

    /// Starts the task that takes and renews the lease (once; it ends when the lease is
    /// dropped).
    fn keep(self: &Arc<Self>) {
        if self.keeper.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.keeper.store(false, Ordering::SeqCst);
            return;
        };
        let weak: Weak<Lease> = Arc::downgrade(self);
        let every = self.ttl / 3;
        handle.spawn(async move {
            loop {
                let Some(lease) = weak.upgrade() else { break };
                let held = match lease.take_or_renew().await {
                    Ok(h) => h,
                    Err(e) => {
                        if *lease.leading.borrow() {
                            tracing::warn!(lease = %lease.key, error = %e, "ingestion lease cannot be renewed: pausing ingestion on this host");
                        }
                        false
                    }
                };
                lease.leading.send_if_modified(|was| {
                    let changed = *was != held;
                    if changed {
                        if held {
                            tracing::info!(lease = %lease.key, holder = %lease.holder, "ingestion lease taken: this host polls and delivers");
                        } else {
                            tracing::info!(lease = %lease.key, "ingestion lease lost: another host polls and delivers");
                        }
                    }
                    *was = held;
                    changed
                });
                drop(lease);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Waits until this host holds the lease; answers whether it had to wait (then whatever
    /// was read from shared state before may be stale).
    pub async fn wait(self: &Arc<Self>) -> bool {
        self.keep();
        let mut rx = self.leading.subscribe();
        if *rx.borrow_and_update() {
            return false;
        }
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        true
    }

    /// The name this host holds the lease under.
    pub fn name(&self) -> &str {
        &self.holder
    }

    /// Whether this host holds the lease now (as of its last renewal).
    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Who holds the lease, as Redis says.
    pub async fn holder(&self) -> Result<Option<String>, RedisError> {
        let mut conn = self.link.conn().await?;
        Ok(redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut conn)
            .await?)
    }
}
