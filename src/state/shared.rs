//! The state store on Redis (`[server.state] backend = "redis"`): each asset's state is one
//! value, `<prefix>:state:<asset>`, holding exactly the bytes of the state file (same format,
//! secrets sealed with the same key), so hosts sharing the Redis share tokens, consent
//! sessions and tickets, idempotency records, ingestion checkpoints and callbacks.
//!
//! A read-modify-write holds the asset's lock `<prefix>:lock:state:<asset>` (`SET NX PX`, a
//! random owner token, a lease) and writes with one script that stores the new value only
//! while the lock is still its own: a writer whose lease ran out (a paused process) cannot
//! overwrite a newer state. Token requests take a second lock, `<prefix>:lock:tokens:<asset>`,
//! so hosts redeem each refresh token once and the others read the stored pair.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore as _;

use super::StateError;
use crate::redis_link::{RedisError, RedisLink};

/// Lease of the state lock (a read-modify-write takes milliseconds).
const STATE_LEASE: Duration = Duration::from_secs(15);
/// Lease of the token lock and of claims (a token request may take the HTTP timeout; a claimed
/// submission may wait for the request budget).
pub(crate) const TOKEN_LEASE: Duration = Duration::from_secs(90);
/// How long a lock is waited for before the operation fails.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Stores `ARGV[2]` at `KEYS[2]` when `KEYS[1]` (the lock) still holds `ARGV[1]`.
const PUT_FENCED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0";

/// Deletes the lock `KEYS[1]` when it still holds `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The Redis half of a [`super::StateStore`].
#[derive(Clone, Debug)]
pub(crate) struct SharedState {
    link: Arc<RedisLink>,
}

/// A lock held in Redis; released when dropped (in the background) unless released before.
pub(crate) struct RedisLock {
    link: Arc<RedisLink>,
    key: String,
    token: String,
    released: bool,
}

impl Drop for RedisLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let link = self.link.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = release(&link, &key, &token).await;
            });
        }
    }
}

async fn release(link: &RedisLink, key: &str, token: &str) -> Result<(), RedisError> {
    let mut conn = link.conn().await?;
    let _: i64 = redis::Script::new(RELEASE)
        .key(key)
        .arg(token)
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

fn backend(asset: &str, op: &'static str, e: RedisError) -> StateError {
    StateError::Backend {
        asset: asset.to_string(),
        op,
        message: e.0,
    }
}

impl SharedState {
    pub(crate) fn new(link: Arc<RedisLink>) -> SharedState {
        SharedState { link }
    }

    /// Where an asset's state lives, for messages (`redis:<prefix>:state:<asset>`).
    pub(crate) fn label(&self, asset: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("redis:{}", self.state_key(asset)))
    }

    fn state_key(&self, asset: &str) -> String {
        self.link.key(&["state", asset])
    }

    /// The asset's stored bytes, `None` when it has none.
    pub(crate) async fn get(&self, asset: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut conn = self
            .link
            .conn()
            .await
            .map_err(|e| backend(asset, "read", e))?;
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.state_key(asset))
            .query_async(&mut conn)
            .await
            .map_err(|e| backend(asset, "read", e.into()))?;
        Ok(bytes)
    }

    /// Stores `bytes` while `lock` is still held; fails (nothing written) when it is not.
    pub(crate) async fn put_fenced(
        &self,
        lock: &RedisLock,
        asset: &str,
        bytes: &[u8],
    ) -> Result<(), StateError> {
        let mut conn = self
            .link
            .conn()
            .await
            .map_err(|e| backend(asset, "write", e))?;
        let stored: i64 = redis::Script::new(PUT_FENCED)
            .key(&lock.key)
            .key(self.state_key(asset))
            .arg(&lock.token)
            .arg(bytes)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| backend(asset, "write", e.into()))?;
        if stored == 1 {
            Ok(())
        } else {
            Err(StateError::Backend {
                asset: asset.to_string(),
                op: "write",
                message: "the asset's lock expired before the write (the host stalled); nothing was written".into(),
            })
        }
    }

    /// Waits for the asset's lock of `kind` (`state` or `tokens`).
    pub(crate) async fn lock(&self, kind: &str, asset: &str) -> Result<RedisLock, StateError> {
        let lease = if kind == "tokens" || kind.starts_with("claim-") {
            TOKEN_LEASE
        } else {
            STATE_LEASE
        };
        let key = self.link.key(&["lock", kind, asset]);
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let mut conn = self
                .link
                .conn()
                .await
                .map_err(|e| backend(asset, "lock", e))?;
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
                .query_async(&mut conn)
                .await
                .map_err(|e| backend(asset, "lock", e.into()))?;
            if set.is_some() {
                return Ok(RedisLock {
                    link: self.link.clone(),
                    key,
                    token,
                    released: false,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StateError::Backend {
                    asset: asset.to_string(),
                    op: "lock",
                    message: format!("its {kind} lock stayed taken for {} s", LOCK_WAIT.as_secs()),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Releases `lock` now.
    pub(crate) async fn unlock(&self, mut lock: RedisLock) {
        lock.released = true;
        if let Err(e) = release(&self.link, &lock.key, &lock.token).await {
            tracing::warn!(error = %e, "a Redis lock could not be released (it expires by itself)");
        }
    }

    /// Every asset with a stored state.
    pub(crate) async fn assets(&self) -> Result<Vec<String>, StateError> {
        let mut conn = self
            .link
            .conn()
            .await
            .map_err(|e| backend("*", "list", e))?;
        let prefix = self.state_key("");
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| backend("*", "list", e.into()))?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
                    .filter(|a| super::is_valid_asset_id(a)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
