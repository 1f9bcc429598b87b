//! Send rate limiting in Redis (api-service's `rate_limit` tells the rules): one token bucket
//! per user, `<p>:{u:<user>}:ratelimit:send` ([`crate::layout`]).
//!
//! A batch of sends may hold several users, whose buckets live in different slots of a Redis
//! Cluster: one script runs per distinct user (concurrently), taking that user's tokens in the
//! batch's order, so the answers are those of one script over the whole batch.

use std::{collections::HashMap, sync::LazyLock};

use fred::{
    clients::Client,
    error::Error,
    types::{Value, scripts::Script},
};
use futures_util::future::try_join_all;
use uuid::Uuid;

use crate::layout::Keys;

/// KEYS[1] = a bucket; ARGV = rate (tokens/s), burst, tokens wanted. Returns, per token in
/// order, `1, 0` when it was taken, else `0, ms until one is available`.
const TAKE: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local out = {}
for i = 1, wanted do
  if tokens >= 1 then
    tokens = tokens - 1
    out[2 * i - 1] = 1
    out[2 * i] = 0
  else
    out[2 * i - 1] = 0
    out[2 * i] = math.ceil((1 - tokens) / rate * 1000)
  end
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
-- idle buckets go away once they would be full again (capped at 30 days)
local ttl_ms = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, 2592000000)
redis.call('PEXPIRE', key, string.format('%d', ttl_ms))
return out
";

/// KEYS[1] = a bucket; ARGV = burst, tokens. Gives the tokens back if the bucket still exists,
/// never above the burst.
const REFUND: &str = r"
local burst = tonumber(ARGV[1])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens ~= nil then
  redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(burst, tokens + tonumber(ARGV[2]))))
end
return 0
";

static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(TAKE));
static REFUND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(REFUND));

/// One token's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Taken,
    /// No token; one is available in this many milliseconds.
    Refused {
        wait_ms: i64,
    },
}

/// Positions of each distinct user in `users`, in order.
fn positions(users: &[Uuid]) -> HashMap<Uuid, Vec<usize>> {
    let mut at: HashMap<Uuid, Vec<usize>> = HashMap::new();
    for (i, user) in users.iter().enumerate() {
        at.entry(*user).or_default().push(i);
    }
    at
}

/// Takes one token per entry of `users` (repeats allowed), in order per user.
pub async fn take(
    client: &Client,
    keys: &Keys,
    users: &[Uuid],
    rate_per_sec: f64,
    burst: u32,
) -> Result<Vec<Verdict>, Error> {
    let at = positions(users);
    let runs = at.iter().map(|(user, at)| async move {
        let out: Vec<i64> = TAKE_SCRIPT
            .evalsha_with_reload(
                client,
                keys.send_bucket(user),
                vec![
                    Value::from(rate_per_sec),
                    Value::from(burst as i64),
                    Value::from(at.len() as i64),
                ],
            )
            .await?;
        Ok::<_, Error>((at, out))
    });
    let mut verdicts = vec![Verdict::Refused { wait_ms: 0 }; users.len()];
    for (at, out) in try_join_all(runs).await? {
        if out.len() != 2 * at.len() {
            return Err(Error::new(
                fred::error::ErrorKind::Protocol,
                "rate limiter answered oddly",
            ));
        }
        for (&i, pair) in at.iter().zip(out.chunks_exact(2)) {
            verdicts[i] = match *pair {
                [1, _] => Verdict::Taken,
                [_, wait_ms] => Verdict::Refused { wait_ms },
                _ => unreachable!("chunks of two"),
            };
        }
    }
    Ok(verdicts)
}

/// Gives back one token per entry of `users` (repeats allowed).
pub async fn refund(client: &Client, keys: &Keys, users: &[Uuid], burst: u32) -> Result<(), Error> {
    try_join_all(positions(users).into_iter().map(|(user, at)| async move {
        REFUND_SCRIPT
            .evalsha_with_reload::<i64, _, _>(
                client,
                keys.send_bucket(&user),
                vec![Value::from(burst as i64), Value::from(at.len() as i64)],
            )
            .await
    }))
    .await?;
    Ok(())
}
