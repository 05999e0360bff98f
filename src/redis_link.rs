//! The host's connection to Redis when `[server.state] backend = "redis"`: one multiplexed,
//! self-reconnecting connection (redis-rs's connection manager) opened on first use, and the
//! key names under the configured prefix. The URL (which may carry a password) is never
//! logged or shown; errors name only the operation.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::config::StateBackendConfig;

/// How long one Redis command may take before it counts as a failure.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes a lease when free, renews it when ours; 1 when held afterwards.
const TAKE_OR_RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// A lazily opened connection to the configured Redis and its key prefix.
pub struct RedisLink {
    client: redis::Client,
    manager: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Why Redis could not be used (no URL or password in it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis: {0}")]
pub struct RedisError(pub String);

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> RedisError {
        // The error's text can repeat the URL (with its password) for connection errors:
        // keep only its kind and category.
        RedisError(format!("{:?} ({})", e.kind(), e.category()))
    }
}

impl RedisLink {
    /// The link for `[server.state]` when it names Redis; `Ok(None)` for the files backend.
    pub fn of(config: &StateBackendConfig) -> Result<Option<RedisLink>, String> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let client = redis::Client::open(url.expose_secret()).map_err(|e| {
            format!(
                "server.state: the Redis URL cannot be used: {}",
                RedisError::from(e)
            )
        })?;
        Ok(Some(RedisLink {
            client,
            manager: tokio::sync::OnceCell::new(),
            prefix: config.key_prefix.clone(),
        }))
    }

    /// A handle on the shared connection (opened on first use; it reconnects by itself).
    pub async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(2);
                tokio::time::timeout(
                    CONNECT_TIMEOUT * 2,
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await
                .map_err(|_| RedisError("connecting timed out".into()))?
                .map_err(RedisError::from)
            })
            .await?;
        Ok(manager.clone())
    }

    /// `<prefix>:<part>:<part>…`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// Takes the lease `key` for `holder` when it is free, or renews it when `holder` has it;
    /// answers whether `holder` holds it afterwards (for `ttl`). One script, so two hosts
    /// never both take it.
    pub async fn take_or_renew(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut conn = self.conn().await?;
        let held: i64 = redis::Script::new(TAKE_OR_RENEW)
            .key(key)
            .arg(holder)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Whether Redis answers a PING now.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn().await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisError(format!("unexpected answer to PING: {pong}")))
        }
    }
}

/// How often a host renews its presence in Redis.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a host stays listed without renewing.
const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// A host sharing the Redis, as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostPresence {
    /// Random id of the process.
    pub id: String,
    /// Its public URL.
    pub public_url: String,
    /// Its version.
    pub version: String,
    /// When it started (unix seconds).
    pub started_at: i64,
}

impl RedisLink {
    /// Announces `me` for [`PRESENCE_TTL`].
    pub async fn announce(&self, me: &HostPresence) -> Result<(), RedisError> {
        let mut conn = self.conn().await?;
        let value = serde_json::to_string(me).map_err(|e| RedisError(e.to_string()))?;
        let _: () = redis::cmd("SET")
            .arg(self.key(&["hosts", &me.id]))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(30_000))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The hosts announced within the last [`PRESENCE_TTL`], by public URL.
    pub async fn hosts(&self) -> Result<Vec<HostPresence>, RedisError> {
        let mut conn = self.conn().await?;
        let pattern = self.key(&["hosts", "*"]);
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(200)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out = Vec::new();
        for key in keys {
            let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            if let Some(h) = value.and_then(|v| serde_json::from_str::<HostPresence>(&v).ok()) {
                out.push(h);
            }
        }
        out.sort_by(|a, b| a.public_url.cmp(&b.public_url).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

/// Keeps announcing `me` every [`HEARTBEAT`] until aborted; a failure is logged once per
/// outage.
pub fn keep_announcing(
    link: std::sync::Arc<RedisLink>,
    me: HostPresence,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            match link.announce(&me).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("Redis reachable again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "Redis cannot be reached; state operations fail until it is back");
                }
                Err(_) => {}
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    })
}
