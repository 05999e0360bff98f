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
