//! A Redis connection that may not exist yet. Redis holds only presence and typing, which are
//! best-effort: the gateway starts and serves sockets without it (presence snapshots are empty,
//! no online/offline events, typing is relayed but not listed) and `/ready` reports
//! `redis: fail` without failing (websocket.md §1: 503 only for NATS or draining).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// How long one command may take before it counts as Redis being down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// After a failed connection attempt, callers get `None` at once for this long instead of each
/// waiting for its own attempt (a reconnect storm while Redis is down must not queue up here).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Lazily connected, self-reconnecting Redis handle; share it in an `Arc`.
pub struct RedisConn {
    client: redis::Client,
    /// `None` until the first successful connection; the manager then reconnects by itself.
    manager: Mutex<Option<ConnectionManager>>,
    /// When the last connection attempt failed.
    failed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RedisConn {
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: Mutex::new(None),
            failed_at: std::sync::Mutex::new(None),
        })
    }

    /// A connection, connecting first if needed (bounded by [`COMMAND_TIMEOUT`]).
    pub async fn get(&self) -> Option<ConnectionManager> {
        if self.recently_failed() {
            return None;
        }
        let mut guard = self.manager.lock().await;
        if let Some(manager) = guard.as_ref() {
            return Some(manager.clone());
        }
        // Someone else's attempt may have failed while this caller waited for the lock.
        if self.recently_failed() {
            return None;
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
            Ok(Ok(manager)) => {
                *guard = Some(manager.clone());
                Some(manager)
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "redis unavailable");
                self.mark_failed();
                None
            }
            Err(_) => {
                tracing::warn!("redis connection timed out");
                self.mark_failed();
                None
            }
        }
    }

    fn recently_failed(&self) -> bool {
        let failed_at = self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }

    fn mark_failed(&self) {
        *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now());
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

/// Runs `f` on a connection with [`COMMAND_TIMEOUT`]; `None` when Redis is down or the command
/// failed (logged here, once).
pub async fn run<T, F, Fut>(redis: &RedisConn, what: &'static str, f: F) -> Option<T>
where
    F: FnOnce(ConnectionManager) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let conn = redis.get().await?;
    match tokio::time::timeout(COMMAND_TIMEOUT, f(conn)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, redis.operation = what, "redis command failed");
            None
        }
        Err(_) => {
            tracing::warn!(redis.operation = what, "redis command timed out");
            None
        }
    }
}
