//! Fleet-wide send rate limiting (docs/api.md, "Rate limits and Retry-After"): one token bucket per
//! user in Redis, shared by every api-service replica.
//!
//! The bucket lives at `<REDIS_KEY_PREFIX>:{u:<user_id>}:ratelimit:send` (the user's slot of a
//! Redis Cluster, [`shared_redis::layout`]) as a hash `{tokens, ts}` and is read, refilled and
//! debited by one Lua script ([`shared_redis::rate_limit`]), so concurrent requests on any
//! replica see each other's debits. Time comes from Redis `TIME`, not from the replicas, whose
//! clocks need not agree. A bucket holds at most `RATE_LIMIT_MESSAGES_BURST` tokens and refills
//! at `RATE_LIMIT_MESSAGES_PER_SEC`; an idle bucket expires once it would be full again.
//!
//! Redis is not essential (docs/delivery.md, "During a Redis outage"): when it is down, slow or
//! answers with an error the request is allowed ("fails open") and
//! `api_service_rate_limiter_errors_total` counts it.
//!
//! Requests are decided in batches (see `ingest`): one script call for the whole batch on a
//! single Redis, one per hash slot (in practice per distinct user) on a Redis Cluster, all sent
//! at once, takes a token for each send in order; a user may repeat (two sends of one user in
//! one batch). `shared_redis::rate_limit` has the scripts.

use std::sync::Arc;

use shared_redis::{
    Keys, RedisConn,
    rate_limit::{self as buckets, Verdict},
};
use uuid::Uuid;

use crate::{config::Settings, metrics::Metrics};

/// A send refused for want of a token: answered 429 `RATE_LIMITED` with `Retry-After`
/// (docs/api.md, "Rate limits and Retry-After").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited for {retry_after_secs} s")]
pub struct RateLimited {
    /// Whole seconds until a token is available (at least 1).
    pub retry_after_secs: u64,
}

/// One entry's answer from [`RateLimiter::take_tokens`].
#[derive(Debug)]
pub enum Token {
    /// A token was taken from the bucket.
    Taken,
    /// Redis could not answer: allowed, nothing taken ("fails open").
    Open,
    /// No token, with the whole seconds until one is available.
    Refused(RateLimited),
}

impl Token {
    pub fn allowed(&self) -> bool {
        !matches!(self, Token::Refused(_))
    }
}

/// The Redis key of `user`'s send bucket.
pub fn send_bucket_key(settings: &Settings, user: Uuid) -> String {
    Keys::new(settings.redis_key_prefix.as_str()).send_bucket(&user)
}

/// The send limiter of one process. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Arc<RedisConn>,
    settings: Arc<Settings>,
    keys: Keys,
    metrics: Metrics,
}

impl RateLimiter {
    pub fn new(redis: Arc<RedisConn>, settings: Arc<Settings>, metrics: Metrics) -> Self {
        Self {
            redis,
            keys: Keys::new(settings.redis_key_prefix.as_str()),
            settings,
            metrics,
        }
    }

    /// Takes one send token per entry of `users`, in order (a user may appear more than once):
    /// `Ok` when allowed (or when Redis cannot answer), else [`RateLimited`] with the whole
    /// seconds until a token is available (at least 1).
    pub async fn take(&self, users: &[Uuid]) -> Vec<Result<(), RateLimited>> {
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
        let (rate, burst) = (
            self.settings.rate_limit_per_sec,
            self.settings.rate_limit_burst,
        );
        // `run` fails open: `None` when the circuit is open, the script failed or timed out
        // (logged there once, and the circuit told).
        let verdicts = shared_redis::run(&self.redis, "ratelimit.take", |c| async move {
            buckets::take(&c, &self.keys, users, rate, burst).await
        })
        .await;
        match verdicts {
            Some(verdicts) => verdicts
                .into_iter()
                .map(|verdict| match verdict {
                    Verdict::Taken => Token::Taken,
                    Verdict::Refused { wait_ms } => {
                        let secs = (wait_ms.max(0) as u64).div_ceil(1000).max(1);
                        Token::Refused(RateLimited {
                            retry_after_secs: secs,
                        })
                    }
                })
                .collect(),
            None => allow_all(&self.metrics),
        }
    }

    /// Gives back one token per entry of `users` (taken for sends that were then refused by a
    /// later check or turned out to be replays). Best effort: a failure is only logged.
    pub async fn refund(&self, users: &[Uuid]) {
        if users.is_empty() {
            return;
        }
        let burst = self.settings.rate_limit_burst;
        shared_redis::run(&self.redis, "ratelimit.refund", |c| async move {
            buckets::refund(&c, &self.keys, users, burst).await
        })
        .await;
    }
}
