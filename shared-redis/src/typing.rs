//! Typing state in Redis: the scripts and commands behind ws-gateway's typing store (its module
//! documentation tells the rules) and api-service's list of live typists.
//!
//! A typist's entry and relay bucket live in the conversation's slot and change in one script;
//! the automatic-stop deadline lives in the one deadlines ZSET, written by a separate command
//! right after. Claiming a due deadline stays one script on that ZSET, so each automatic stop is
//! still claimed exactly once fleet-wide; the claimed typist's entry is then removed with a
//! separate `ZREM` (if that fails the entry still expires by its score and the key's TTL). A
//! deadline write lost between the two commands only loses that automatic stop, and a stale one
//! only sends a `typing.stop` for someone who already stopped.

use std::{sync::LazyLock, time::Duration};

use fred::{
    clients::Client,
    error::Error,
    interfaces::SortedSetsInterface,
    types::{Value, scripts::Script},
};
use uuid::Uuid;

use crate::layout::{Keys, deadline_member};

/// The fleet-wide token bucket of `docs/websocket.md` ("Sending typing frames", rule 7), shared
/// by START and STOP: one bucket per (user, conversation) in the hash KEYS[2] {tokens, ts},
/// refilled at ARGV[3] tokens per millisecond up to ARGV[4], timed by the Redis clock so every
/// gateway agrees. Returns 0 from the script (nothing recorded) when no token is left.
const BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = tokens >= 1
if allowed then tokens = tokens - 1 end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[2], math.ceil(burst / rate) + 1000)
if not allowed then return 0 end
";

/// Creates or refreshes the entry (KEYS[1], ARGV[1] = user, ARGV[2] = its lifetime in ms);
/// returns the Redis time in ms (the deadline is counted from it).
const START: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return now
";

const STOP: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
";

/// Claims due deadlines (KEYS[1]): removes and returns them (at most ARGV[1]).
const SWEEP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do redis.call('ZREM', KEYS[1], member) end
return due
";

/// Live typists of a conversation: members of its ZSET whose expiry (unix ms of the Redis
/// clock) is still ahead of Redis `TIME`.
const LIVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
";

static START_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(format!("{BUCKET}{START}")));
static STOP_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(format!("{BUCKET}{STOP}")));
static SWEEP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(SWEEP));
static LIVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(LIVE));

/// The timing and the fleet-wide relay limit of typing frames.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Lifetime of an entry ("about 6 s").
    pub entry_ttl: Duration,
    /// Silence after which the automatic `typing.stop` is due.
    pub stop_after: Duration,
    /// Relay bucket refill, tokens per millisecond.
    pub rate_per_ms: f64,
    /// Relay bucket size.
    pub burst: u32,
}

/// Takes a token of the (user, conversation) bucket and records a start (entry and deadline)
/// or a stop (both removed). `false`: over the limit, nothing recorded.
pub async fn record(
    client: &Client,
    keys: &Keys,
    rules: &Rules,
    conversation: &Uuid,
    user: &Uuid,
    start: bool,
) -> Result<bool, Error> {
    let script = if start { &START_SCRIPT } else { &STOP_SCRIPT };
    let answer: i64 = script
        .evalsha_with_reload(
            client,
            vec![
                keys.typing(conversation),
                keys.typing_rate(conversation, user),
            ],
            vec![
                Value::from(user.to_string()),
                Value::from(rules.entry_ttl.as_millis() as i64),
                Value::from(rules.rate_per_ms),
                Value::from(rules.burst as i64),
            ],
        )
        .await?;
    if answer == 0 {
        return Ok(false);
    }
    let member = deadline_member(conversation, user);
    if start {
        let due = answer + rules.stop_after.as_millis() as i64;
        client
            .zadd::<i64, _, _>(
                keys.typing_deadlines(),
                None,
                None,
                false,
                false,
                (due as f64, member),
            )
            .await?;
    } else {
        client
            .zrem::<i64, _, _>(keys.typing_deadlines(), member)
            .await?;
    }
    Ok(true)
}

/// Claims up to `batch` due deadlines (each claimed by exactly one caller fleet-wide), removes
/// the typists' entries, and returns the claimed (conversation, user) pairs.
pub async fn sweep(client: &Client, keys: &Keys, batch: usize) -> Result<Vec<(Uuid, Uuid)>, Error> {
    let due: Vec<String> = SWEEP_SCRIPT
        .evalsha_with_reload(
            client,
            keys.typing_deadlines(),
            vec![Value::from(batch as i64)],
        )
        .await?;
    let claimed: Vec<(Uuid, Uuid)> = due
        .iter()
        .filter_map(|member| {
            let (conversation, user) = member.split_once(':')?;
            Some((
                Uuid::parse_str(conversation).ok()?,
                Uuid::parse_str(user).ok()?,
            ))
        })
        .collect();
    let removals = claimed.iter().map(|(conversation, user)| {
        client.zrem::<i64, _, _>(keys.typing(conversation), user.to_string())
    });
    for removal in futures_util::future::join_all(removals).await {
        if let Err(error) = removal {
            // The entry expires by itself; the stop was claimed and is published regardless.
            tracing::debug!(error = %error, "typing: could not remove a swept entry");
        }
    }
    Ok(claimed)
}

/// Who is typing in `conversation` (user ids as stored).
pub async fn live(client: &Client, keys: &Keys, conversation: &Uuid) -> Result<Vec<String>, Error> {
    LIVE_SCRIPT
        .evalsha_with_reload(client, keys.typing(conversation), Vec::<Value>::new())
        .await
}
