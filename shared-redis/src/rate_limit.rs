//! Send rate limiting in Redis (api-service's `rate_limit` tells the rules): one token bucket
//! per user, `<p>:{u:<user>}:ratelimit:send` ([`crate::layout`]).
//!
//! A batch of sends is decided by one script per group of buckets that may be scripted
//! together: the whole batch on one Redis (one round trip, as the batch writer wants), one group
//! per hash slot on a Redis Cluster, where a script's keys must share a slot (each user's bucket
//! has its own tag, so in practice one script per distinct user there, sent concurrently). A
//! script takes a token per key in `KEYS`, in order, and a key may repeat (two sends of one user
//! in one batch), so the answers are those of one script over the whole batch.

use std::{collections::HashMap, sync::LazyLock};

use fred::{
    clients::Client,
    error::Error,
    interfaces::ClientLike,
    types::{Value, scripts::Script},
};
use futures_util::future::try_join_all;
use uuid::Uuid;

use crate::layout::Keys;

/// KEYS = buckets (repeats allowed); ARGV = rate (tokens/s), burst. Returns, per key in order,
/// `1, 0` when a token was taken, else `0, ms until one is available`.
const TAKE: &str = r"
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
  if tokens >= 1 then
    tokens = tokens - 1
    out[2 * i - 1] = 1
    out[2 * i] = 0
  else
    out[2 * i - 1] = 0
    out[2 * i] = math.ceil((1 - tokens) / rate * 1000)
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  -- idle buckets go away once they would be full again (capped at 30 days)
  local ttl_ms = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, 2592000000)
  redis.call('PEXPIRE', key, string.format('%d', ttl_ms))
end
return out
";

/// KEYS = buckets (repeats allowed); ARGV = burst. Gives one token back per key to each bucket
/// that still exists, never above the burst.
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

/// The batch's positions grouped so that each group may be one script: all of them on one Redis,
/// by hash slot on a Redis Cluster. Positions keep their order within a group.
fn groups(client: &Client, keys: &Keys, users: &[Uuid]) -> Vec<(Vec<usize>, Vec<String>)> {
    let buckets: Vec<String> = users.iter().map(|user| keys.send_bucket(user)).collect();
    if !client.is_clustered() {
        return vec![((0..users.len()).collect(), buckets)];
    }
    let mut by_slot: HashMap<u16, (Vec<usize>, Vec<String>)> = HashMap::new();
    for (i, bucket) in buckets.into_iter().enumerate() {
        let group = by_slot
            .entry(fred::util::redis_keyslot(bucket.as_bytes()))
            .or_default();
        group.0.push(i);
        group.1.push(bucket);
    }
    by_slot.into_values().collect()
}

/// Takes one token per entry of `users` (repeats allowed), in order per user.
pub async fn take(
    client: &Client,
    keys: &Keys,
    users: &[Uuid],
    rate_per_sec: f64,
    burst: u32,
) -> Result<Vec<Verdict>, Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let runs = groups(client, keys, users)
        .into_iter()
        .map(|(at, buckets)| async move {
            let out: Vec<i64> = TAKE_SCRIPT
                .evalsha_with_reload(
                    client,
                    buckets,
                    vec![Value::from(rate_per_sec), Value::from(burst as i64)],
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
    if users.is_empty() {
        return Ok(());
    }
    try_join_all(
        groups(client, keys, users)
            .into_iter()
            .map(|(_, buckets)| async move {
                REFUND_SCRIPT
                    .evalsha_with_reload::<i64, _, _>(
                        client,
                        buckets,
                        vec![Value::from(burst as i64)],
                    )
                    .await
            }),
    )
    .await?;
    Ok(())
}
