//! A Redis connection that may not exist yet. Redis holds only ephemeral data (rate-limit
//! buckets, typing), so api-service starts and serves without it and degrades as http-api.md §4
//! says: rate limiting fails open, typing lists are empty, `/ready` reports `redis: fail`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// How long one command may take before it counts as Redis being down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Lazily connected, self-reconnecting Redis handle. Cheap to clone? No: share it in an `Arc`.
pub struct RedisConn {
    client: redis::Client,
    /// `None` until the first successful connection; the manager then reconnects by itself.
    manager: Mutex<Option<ConnectionManager>>,
}

impl RedisConn {
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: Mutex::new(None),
        })
    }

    /// A connection, connecting first if needed (bounded by [`COMMAND_TIMEOUT`]).
    pub async fn get(&self) -> Option<ConnectionManager> {
        let mut guard = self.manager.lock().await;
        if let Some(m) = guard.as_ref() {
            return Some(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            COMMAND_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        {
            Ok(Ok(m)) => {
                *guard = Some(m.clone());
                Some(m)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis unavailable");
                None
            }
            Err(_) => {
                tracing::warn!("redis connection timed out");
                None
            }
        }
    }

    /// `PING` answered within the timeout.
    pub async fn ping(&self) -> bool {
        let Some(mut conn) = self.get().await else {
            return false;
        };
        let pong: Result<Result<String, _>, _> =
            tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("PING").query_async(&mut conn)).await;
        matches!(pong, Ok(Ok(_)))
    }
}
