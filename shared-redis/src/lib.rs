//! A Redis connection that may not exist yet, shared by api-service and ws-gateway. Both keep
//! only ephemeral data in Redis (rate-limit buckets, presence, typing), so both start and serve
//! without it and degrade instead: [`RedisConn::get`] answers `None` rather than blocking, and
//! [`run`] bounds every command by the handle's command timeout.
//!
//! After a failed connection attempt every caller gets `None` at once for [`RETRY_AFTER`]
//! instead of each waiting for its own attempt, so a burst of requests while Redis is down (or
//! accepts connections but never answers) cannot queue up behind the connection lock.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// After a failed connection attempt, callers get `None` at once for this long instead of each
/// waiting for its own attempt (a reconnect storm while Redis is down must not queue up here).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Lazily connected, self-reconnecting Redis handle; share it in an `Arc`.
pub struct RedisConn {
    client: redis::Client,
    /// `None` until the first successful connection; the manager then reconnects by itself.
    manager: Mutex<Option<ConnectionManager>>,
    /// When the last connection attempt failed.
    failed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// How long one command (or a connection attempt) may take before it counts as Redis down.
    command_timeout: Duration,
}

impl RedisConn {
    /// A handle for `url` (parsed now, connected on first use) whose commands may take at most
    /// `command_timeout`.
    pub fn new(url: &str, command_timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: Mutex::new(None),
            failed_at: std::sync::Mutex::new(None),
            command_timeout,
        })
    }

    /// The bound on one command.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// A connection, connecting first if needed (bounded by the command timeout).
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
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            self.command_timeout * 2,
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
        let pong: Result<Result<String, _>, _> = tokio::time::timeout(
            self.command_timeout,
            redis::cmd("PING").query_async(&mut conn),
        )
        .await;
        matches!(pong, Ok(Ok(_)))
    }
}

/// Runs `f` on a connection, bounded by the handle's command timeout; `None` when Redis is down or the command
/// failed (logged here, once).
pub async fn run<T, F, Fut>(redis: &RedisConn, what: &'static str, f: F) -> Option<T>
where
    F: FnOnce(ConnectionManager) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let conn = redis.get().await?;
    match tokio::time::timeout(redis.command_timeout, f(conn)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_answers_none_and_later_callers_fail_fast() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let redis = RedisConn::new(
            &format!("redis://127.0.0.1:{port}"),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(redis.get().await.is_none());
        assert!(redis.recently_failed(), "the failure is remembered");
        assert!(!redis.ping().await);
        assert_eq!(
            run(&redis, "test", |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await,
            None
        );
    }

    #[tokio::test]
    async fn the_local_redis_answers_through_run() {
        let redis = RedisConn::new("redis://127.0.0.1:6379", Duration::from_secs(1)).unwrap();
        assert!(redis.ping().await);
        let pong = run(&redis, "test", |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await;
        assert_eq!(pong.as_deref(), Some("PONG"));
    }
}
