//! Presence in Redis: the scripts and commands behind ws-gateway's presence store (its module
//! documentation tells the transitions and the expiry; [`crate::layout`] the keys).
//!
//! On a Redis Cluster a user's hash and the fleet registry live in different slots, so every
//! script touches one of them and the registry is updated by separate commands, in an order
//! that makes a failure in between harmless:
//! - a connect adds the user to this gateway's registry set *before* its script counts the
//!   socket, so a socket is never counted without the reaper being able to find it;
//! - a disconnect removes the user from the set *after* its script found no socket left on this
//!   gateway; a stale member only costs the reaper one `HDEL` that removes nothing;
//! - reaping pops a chunk of a dead gateway's users (one script on the registry, which checks
//!   that the gateway is still dead), then deletes the gateway's field in each user's hash (one
//!   script per user, offline ⇔ it removed the field and the hash is gone, so each user gets
//!   exactly one `presence.offline`); users whose script failed go back into the set for the
//!   next round, and the gateway leaves the registry only once its set is empty.
//!
//! The caller runs one [`apply`] at a time per gateway, so the registry updates of two batches
//! of one gateway never interleave. One case the split leaves open: a gateway presumed dead that
//! re-registers a user while a peer is reaping that same user may lose that user's count (it
//! shows offline until the user's next connect); on one Redis, one script made both atomic.

use std::collections::HashMap;

use fred::types::{Value, scripts::Script};
use fred::{clients::Client, error::Error, interfaces::KeysInterface, prelude::SetsInterface};
use futures_util::future::try_join_all;
use std::sync::LazyLock;
use uuid::Uuid;

use crate::layout::Keys;

/// Applies one user's connects (`c`) and disconnects (`d`) on this gateway, in order. KEYS: the
/// user's hash; ARGV: gateway, then the changes. Returns, per change, 1 for a fleet-wide
/// transition (0→1 on connect, 1→0 on disconnect), else 0; then the user's sockets left on this
/// gateway.
const APPLY: &str = r"
local key = KEYS[1]
local out = {}
for i = 2, #ARGV do
  local transition = 0
  if ARGV[i] == 'c' then
    if redis.call('EXISTS', key) == 0 then transition = 1 end
    redis.call('HINCRBY', key, ARGV[1], 1)
  elseif redis.call('HEXISTS', key, ARGV[1]) == 1 then
    -- (no field: already reaped while this gateway was presumed dead; the reaper emitted the offline)
    local n = redis.call('HINCRBY', key, ARGV[1], -1)
    if n <= 0 then redis.call('HDEL', key, ARGV[1]) end
    if redis.call('EXISTS', key) == 0 then transition = 1 end
  end
  out[#out + 1] = transition
end
out[#out + 1] = tonumber(redis.call('HGET', key, ARGV[1]) or 0)
return out
";

/// KEYS: the gateways ZSET. Returns 1 when this gateway must re-register its users (first beat,
/// or it was presumed dead).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
if not old then return 1 end
if now - tonumber(old) > tonumber(ARGV[2]) then return 1 end
return 0
";

/// KEYS: the gateways ZSET. Gateways whose last heartbeat is older than the expiry.
const DEAD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])), 'LIMIT', 0, 100)
";

/// Pops a chunk of a dead gateway's users, if it is still dead. KEYS: the gateways ZSET, the
/// gateway's users set; ARGV: gateway, expiry (ms), chunk. Returns `{more, {users}}`.
const REAP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or now - tonumber(score) <= tonumber(ARGV[2]) then return {0, {}} end
local users = redis.call('SPOP', KEYS[2], tonumber(ARGV[3]))
if redis.call('SCARD', KEYS[2]) == 0 then return {0, users} end
return {1, users}
";

/// Deletes a dead gateway's field in one user's hash. KEYS: the user's hash; ARGV: gateway.
/// Returns 1 when that made the user offline.
const REAP_USER: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
return 0
";

/// Removes a reaped gateway from the registry once its set is empty and it is still dead.
/// KEYS: the gateways ZSET, the gateway's users set; ARGV: gateway, expiry (ms).
const FORGET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and now - tonumber(score) > tonumber(ARGV[2]) and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
";

/// Sets this gateway's socket count in one user's hash. KEYS: the user's hash; ARGV: gateway,
/// count. Returns 1 when the user was offline (reaped) and is online again.
const REREGISTER: &str = r"
local back = 0
if redis.call('EXISTS', KEYS[1]) == 0 then back = 1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return back
";

/// Marks a gateway dead at once (clean shutdown): its leftovers are then reaped like a crash's.
const LEAVE: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('ZADD', KEYS[1], 0, ARGV[1]) end
return 0
";

static SCRIPTS: LazyLock<[Script; 7]> = LazyLock::new(|| {
    [APPLY, HEARTBEAT, DEAD, REAP, REAP_USER, FORGET, REREGISTER].map(Script::from_lua)
});
static LEAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(LEAVE));

fn script(i: usize) -> &'static Script {
    &SCRIPTS[i]
}

/// A socket opened (connect) or closed (disconnect) on a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Connect,
    Disconnect,
}

/// Applies a batch of changes of `gateway` in order; answers, per change, whether it was a
/// fleet-wide transition (first socket of the user anywhere, or last one gone). Each user's
/// changes run in one script on the user's slot; users run concurrently.
pub async fn apply(
    client: &Client,
    keys: &Keys,
    gateway: &str,
    changes: &[(Change, Uuid)],
) -> Result<Vec<bool>, Error> {
    let registry = keys.presence_gateway_users(gateway);
    let mut per_user: HashMap<Uuid, Vec<usize>> = HashMap::new();
    for (i, (_, user)) in changes.iter().enumerate() {
        per_user.entry(*user).or_default().push(i);
    }
    let connecting: Vec<String> = per_user
        .iter()
        .filter(|(_, at)| at.iter().any(|&i| changes[i].0 == Change::Connect))
        .map(|(user, _)| user.to_string())
        .collect();
    if !connecting.is_empty() {
        client.sadd::<i64, _, _>(&registry, connecting).await?;
    }
    let runs = per_user.iter().map(|(user, at)| {
        let mut args: Vec<Value> = vec![gateway.into()];
        args.extend(at.iter().map(|&i| {
            Value::from(if changes[i].0 == Change::Connect {
                "c"
            } else {
                "d"
            })
        }));
        async move {
            let out: Vec<i64> = script(0)
                .evalsha_with_reload(client, keys.presence_user(user), args)
                .await?;
            Ok::<_, Error>((user, at, out))
        }
    });
    let answers = try_join_all(runs).await?;
    let mut transitions = vec![false; changes.len()];
    let mut gone = Vec::new();
    for (user, at, out) in answers {
        for (&i, &t) in at.iter().zip(&out) {
            transitions[i] = t == 1;
        }
        if out.last().is_none_or(|&left| left <= 0) {
            gone.push(user.to_string());
        }
    }
    if !gone.is_empty() {
        client.srem::<i64, _, _>(&registry, gone).await?;
    }
    Ok(transitions)
}

/// Which of `users` are online (one `EXISTS` each, on each user's slot).
pub async fn online(client: &Client, keys: &Keys, users: &[Uuid]) -> Result<Vec<bool>, Error> {
    try_join_all(
        users
            .iter()
            .map(|user| client.exists::<bool, _>(keys.presence_user(user))),
    )
    .await
}

/// Sets `gateway`'s heartbeat to Redis' clock; `true` when the gateway must re-register its
/// users (no earlier beat, or one older than `expiry_ms`).
pub async fn heartbeat(
    client: &Client,
    keys: &Keys,
    gateway: &str,
    expiry_ms: u64,
) -> Result<bool, Error> {
    let answer: i64 = script(1)
        .evalsha_with_reload(
            client,
            keys.presence_gateways(),
            vec![Value::from(gateway), Value::from(expiry_ms as i64)],
        )
        .await?;
    Ok(answer == 1)
}

/// Gateways whose heartbeat is older than `expiry_ms` (at most 100).
pub async fn dead(client: &Client, keys: &Keys, expiry_ms: u64) -> Result<Vec<String>, Error> {
    script(2)
        .evalsha_with_reload(
            client,
            keys.presence_gateways(),
            vec![Value::from(expiry_ms as i64)],
        )
        .await
}

/// What one [`reap_chunk`] did.
#[derive(Debug, Default)]
pub struct Reaped {
    /// The gateway still has users to reap.
    pub more: bool,
    /// Users this round made offline (each exactly once fleet-wide): publish their offline.
    pub offline: Vec<Uuid>,
    /// Some users' scripts failed; they went back into the gateway's set for a later round.
    pub incomplete: bool,
}

/// One round of reaping a dead `gateway`: up to `chunk` of its users lose its field.
pub async fn reap_chunk(
    client: &Client,
    keys: &Keys,
    gateway: &str,
    expiry_ms: u64,
    chunk: usize,
) -> Result<Reaped, Error> {
    let registry = keys.presence_gateway_users(gateway);
    let (more, popped): (i64, Vec<String>) = script(3)
        .evalsha_with_reload(
            client,
            vec![keys.presence_gateways(), registry.clone()],
            vec![
                Value::from(gateway),
                Value::from(expiry_ms as i64),
                Value::from(chunk as i64),
            ],
        )
        .await?;
    let runs = popped.iter().map(|member| async move {
        let Ok(user) = Uuid::parse_str(member) else {
            return (member, Ok(false));
        };
        let offline: Result<i64, Error> = script(4)
            .evalsha_with_reload(
                client,
                keys.presence_user(&user),
                vec![Value::from(gateway)],
            )
            .await;
        (member, offline.map(|o| o == 1))
    });
    let mut reaped = Reaped {
        more: more == 1,
        ..Reaped::default()
    };
    let mut retry = Vec::new();
    for (member, answer) in futures_util::future::join_all(runs).await {
        match answer {
            Ok(true) => reaped.offline.extend(Uuid::parse_str(member).ok()),
            Ok(false) => {}
            Err(_) => retry.push(member.clone()),
        }
    }
    if !retry.is_empty() {
        // Back into the set: a later round (of any gateway) reaps them.
        reaped.incomplete = true;
        reaped.more = false;
        if let Err(error) = client.sadd::<i64, _, _>(&registry, retry).await {
            tracing::warn!(error = %error, gateway.id = gateway, "presence: could not requeue users to reap");
        }
        return Ok(reaped);
    }
    if more == 0 {
        let _: i64 = script(5)
            .evalsha_with_reload(
                client,
                vec![keys.presence_gateways(), registry],
                vec![Value::from(gateway), Value::from(expiry_ms as i64)],
            )
            .await?;
    }
    Ok(reaped)
}

/// Writes `gateway`'s socket counts again (after it was presumed dead); returns the users that
/// were offline and are online again.
pub async fn reregister(
    client: &Client,
    keys: &Keys,
    gateway: &str,
    counts: &[(Uuid, usize)],
) -> Result<Vec<Uuid>, Error> {
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<String> = counts.iter().map(|(u, _)| u.to_string()).collect();
    client
        .sadd::<i64, _, _>(keys.presence_gateway_users(gateway), users)
        .await?;
    let back = try_join_all(counts.iter().map(|(user, count)| async move {
        let back: i64 = script(6)
            .evalsha_with_reload(
                client,
                keys.presence_user(user),
                vec![Value::from(gateway), Value::from(*count as i64)],
            )
            .await?;
        Ok::<_, Error>((back == 1).then_some(*user))
    }))
    .await?;
    Ok(back.into_iter().flatten().collect())
}

/// Marks `gateway` dead at once (its leftovers are then reaped like a crash's).
pub async fn leave(client: &Client, keys: &Keys, gateway: &str) -> Result<(), Error> {
    let _: i64 = LEAVE_SCRIPT
        .evalsha_with_reload(client, keys.presence_gateways(), vec![Value::from(gateway)])
        .await?;
    Ok(())
}
