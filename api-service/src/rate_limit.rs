//! Fleet-wide send rate limiting (http-api.md §7.1 step 7): one token bucket per user in Redis,
//! shared by every api-service replica.
//!
//! The bucket lives at `<REDIS_KEY_PREFIX>:ratelimit:send:<user_id>` as a hash `{tokens, ts}`
//! and is read, refilled and debited by one Lua script, so concurrent requests on any replica
//! see each other's debits. Time comes from Redis `TIME`, not from the replicas, whose clocks
//! need not agree. A bucket holds at most `RATE_LIMIT_MESSAGES_BURST` tokens and refills at
//! `RATE_LIMIT_MESSAGES_PER_SEC`; an idle bucket expires once it would be full again.
//!
//! Redis is not essential (http-api.md §4): when it is down, slow or answers with an error the
//! request is allowed ("fails open") and `rate_limiter_errors_total` counts it.

use std::sync::LazyLock;

use redis::Script;
use uuid::Uuid;

use shared_redis::RedisConn;

use crate::{config::Settings, error::ApiError, metrics::Metrics};

/// KEYS[1] = bucket; ARGV = rate (tokens/s), burst. Returns `{1, 0}` when a token was taken,
/// else `{0, ms until one is available}`.
const TOKEN_BUCKET: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
-- idle buckets go away once they would be full again (capped at 30 days)
local ttl_ms = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, 2592000000)
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl_ms))
return {allowed, wait_ms}
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TOKEN_BUCKET));

/// The Redis key of `user`'s send bucket.
pub fn send_bucket_key(settings: &Settings, user: Uuid) -> String {
    format!("{}:ratelimit:send:{user}", settings.redis_key_prefix)
}

/// Takes one send token for `user`: `Ok` when allowed (or when Redis cannot answer), else 429
/// `RATE_LIMITED` with the whole seconds until a token is available (at least 1).
pub async fn check_send(
    redis: &RedisConn,
    settings: &Settings,
    metrics: &Metrics,
    user: Uuid,
) -> Result<(), ApiError> {
    let Some(mut conn) = redis.get().await else {
        metrics.rate_limiter_errors.inc();
        return Ok(());
    };
    let key = send_bucket_key(settings, user);
    let mut invocation = SCRIPT.key(&key);
    invocation
        .arg(settings.rate_limit_per_sec)
        .arg(settings.rate_limit_burst);
    let verdict = tokio::time::timeout(
        redis.command_timeout(),
        invocation.invoke_async::<(i64, i64)>(&mut conn),
    )
    .await;
    match verdict {
        Ok(Ok((1, _))) => Ok(()),
        Ok(Ok((_, wait_ms))) => {
            metrics.rate_limited.inc();
            let secs = (wait_ms.max(0) as u64).div_ceil(1000).max(1);
            Err(ApiError::RateLimited {
                retry_after_secs: secs,
            })
        }
        Ok(Err(e)) => {
            metrics.rate_limiter_errors.inc();
            tracing::warn!(error = %e, "rate limiter failed open");
            Ok(())
        }
        Err(_) => {
            metrics.rate_limiter_errors.inc();
            tracing::warn!("rate limiter timed out; failed open");
            Ok(())
        }
    }
}
