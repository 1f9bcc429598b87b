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
//! request is allowed ("fails open") and `api_service_rate_limiter_errors_total` counts it.

//!
//! Requests are decided in batches (see `ingest`): one script call takes a token for each
//! bucket in `KEYS`, in order, and a key may repeat (two sends of one user in one batch). A
//! multi-key script needs all its keys on one node, like the gateway's presence scripts: one
//! Redis (or a replicated primary), not Redis Cluster.

use std::sync::{Arc, LazyLock};

use redis::Script;
use uuid::Uuid;

use shared_redis::RedisConn;

use crate::{config::Settings, error::ApiError, metrics::Metrics};

/// KEYS = buckets (repeats allowed); ARGV = rate (tokens/s), burst. Returns, per key in order,
/// `1, 0` when a token was taken, else `0, ms until one is available`.
const TOKEN_BUCKETS: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local state = redis.call('HMGET', key, 'tokens', 'ts')
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
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  -- idle buckets go away once they would be full again (capped at 30 days)
  local ttl_ms = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, 2592000000)
  redis.call('PEXPIRE', key, string.format('%d', ttl_ms))
  out[2 * i - 1] = allowed
  out[2 * i] = wait_ms
end
return out
";

/// KEYS = buckets (repeats allowed); ARGV = burst. Gives one token back to each bucket that
/// still exists, never above the burst.
const REFUND: &str = r"
local burst = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local tokens = tonumber(redis.call('HGET', key, 'tokens'))
  if tokens ~= nil then
    redis.call('HSET', key, 'tokens', tostring(math.min(burst, tokens + 1)))
  end
end
return 0
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TOKEN_BUCKETS));
static REFUND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REFUND));

/// One entry's answer from [`RateLimiter::take_tokens`].
#[derive(Debug)]
pub enum Token {
    /// A token was taken from the bucket.
    Taken,
    /// Redis could not answer: allowed, nothing taken ("fails open").
    Open,
    /// No token: 429 `RATE_LIMITED` with the whole seconds until one is available.
    Refused(ApiError),
}

impl Token {
    pub fn allowed(&self) -> bool {
        !matches!(self, Token::Refused(_))
    }
}

/// The Redis key of `user`'s send bucket.
pub fn send_bucket_key(settings: &Settings, user: Uuid) -> String {
    format!("{}:ratelimit:send:{user}", settings.redis_key_prefix)
}

/// The send limiter of one process. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Arc<RedisConn>,
    settings: Arc<Settings>,
    metrics: Metrics,
}

impl RateLimiter {
    pub fn new(redis: Arc<RedisConn>, settings: Arc<Settings>, metrics: Metrics) -> Self {
        Self {
            redis,
            settings,
            metrics,
        }
    }

    /// Takes one send token per entry of `users`, in order (a user may appear more than once):
    /// `Ok` when allowed (or when Redis cannot answer), else 429 `RATE_LIMITED` with the whole
    /// seconds until a token is available (at least 1).
    pub async fn take(&self, users: &[Uuid]) -> Vec<Result<(), ApiError>> {
        self.take_tokens(users)
            .await
            .into_iter()
            .map(|token| match token {
                Token::Refused(e) => Err(e),
                Token::Taken | Token::Open => Ok(()),
            })
            .collect()
    }

    /// [`take`](Self::take), telling a token taken from one allowed because Redis failed.
    pub async fn take_tokens(&self, users: &[Uuid]) -> Vec<Token> {
        if users.is_empty() {
            return Vec::new();
        }
        let allow_all = |metrics: &Metrics| {
            metrics.rate_limiter_errors.inc_by(users.len() as u64);
            users.iter().map(|_| Token::Open).collect()
        };
        let Some(mut conn) = self.redis.get().await else {
            return allow_all(&self.metrics);
        };
        let mut invocation = SCRIPT.prepare_invoke();
        for user in users {
            invocation.key(send_bucket_key(&self.settings, *user));
        }
        invocation
            .arg(self.settings.rate_limit_per_sec)
            .arg(self.settings.rate_limit_burst);
        let verdicts = tokio::time::timeout(
            self.redis.command_timeout(),
            invocation.invoke_async::<Vec<i64>>(&mut conn),
        )
        .await;
        match verdicts {
            Ok(Ok(v)) if v.len() == 2 * users.len() => v
                .chunks_exact(2)
                .map(|pair| match *pair {
                    [1, _] => Token::Taken,
                    [_, wait_ms] => {
                        let secs = (wait_ms.max(0) as u64).div_ceil(1000).max(1);
                        Token::Refused(ApiError::RateLimited {
                            retry_after_secs: secs,
                        })
                    }
                    _ => unreachable!("chunks of two"),
                })
                .collect(),
            Ok(Ok(v)) => {
                tracing::warn!(
                    answers = v.len(),
                    "rate limiter answered oddly; failed open"
                );
                allow_all(&self.metrics)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rate limiter failed open");
                allow_all(&self.metrics)
            }
            Err(_) => {
                tracing::warn!("rate limiter timed out; failed open");
                allow_all(&self.metrics)
            }
        }
    }

    /// Gives back one token per entry of `users` (taken for sends that were then refused by a
    /// later check or turned out to be replays). Best effort: a failure is only logged.
    pub async fn refund(&self, users: &[Uuid]) {
        if users.is_empty() {
            return;
        }
        let Some(mut conn) = self.redis.get().await else {
            return;
        };
        let mut invocation = REFUND_SCRIPT.prepare_invoke();
        for user in users {
            invocation.key(send_bucket_key(&self.settings, *user));
        }
        invocation.arg(self.settings.rate_limit_burst);
        match tokio::time::timeout(
            self.redis.command_timeout(),
            invocation.invoke_async::<i64>(&mut conn),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "rate limiter refund failed"),
            Err(_) => tracing::warn!("rate limiter refund timed out"),
        }
    }
}
