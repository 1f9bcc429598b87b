//! Fleet-wide presence in Redis (websocket.md §9): who is online, the 0→1 / 1→0 transitions
//! that emit `presence.online` / `presence.offline`, and the expiry of a dead gateway's users.
//!
//! # Redis keys (`<p>` = `REDIS_KEY_PREFIX`)
//!
//! | key | type | content |
//! |---|---|---|
//! | `<p>:presence:user:<user_id>` | HASH | field = gateway id, value = that user's open sockets on that gateway. The key exists ⇔ the user is online somewhere. |
//! | `<p>:presence:gateway:<gateway_id>:users` | SET | users with at least one socket on that gateway (what to reap if it dies) |
//! | `<p>:presence:gateways` | ZSET | member = gateway id, score = its last heartbeat, unix ms of the Redis clock |
//!
//! # Transitions, exactly once
//!
//! Every change runs inside a Lua script, so Redis serialises them fleet-wide:
//! - connect: `HINCRBY` this gateway's field; the user's key did not exist before ⇔ 0→1 ⇒ this
//!   gateway publishes `presence.online`;
//! - disconnect: decrement, delete the field at 0; the key is gone afterwards ⇔ 1→0 ⇒ this
//!   gateway publishes `presence.offline`;
//! - concurrent connects and disconnects are coalesced: one script run applies a batch of them
//!   in arrival order (up to [`MAX_CHANGES`], [`CHANGE_RUNS`] runs at a time). One script per
//!   socket meant 30,000 scripts queued on the Redis connection in a 15,000-socket reconnect
//!   storm, many of them past the 1 s command timeout;
//! - heartbeat: every `PRESENCE_HEARTBEAT_SECONDS` each gateway sets its score to Redis' `TIME`;
//! - reap: every gateway also looks for gateways whose score is older than
//!   `PRESENCE_EXPIRY_SECONDS` and reaps them in chunks: one script `SPOP`s a chunk of the dead
//!   gateway's users and deletes its field in each user's hash, returning the users whose hash
//!   became empty. A popped user belongs to exactly one script run, so each of them gets exactly
//!   one `presence.offline`, published by whichever surviving gateway ran it. The dead gateway
//!   leaves the ZSET when its set is empty.
//!
//! A gateway that was merely slow (its heartbeat found its own score stale or gone) re-registers
//! all its local users, emitting `presence.online` for those a peer had already reaped. A clean
//! shutdown marks itself dead (score 0) and reaps its own leftovers, so a disconnect lost to a
//! Redis hiccup cannot leave a user online forever; start-up does the same before accepting, for
//! a previous process that ran with the same `GATEWAY_ID` (e.g. a pod name) and was killed.
//!
//! Worst case after a SIGKILL: expiry + one heartbeat period (30 s + 10 s with the defaults),
//! below the 60 s of websocket.md §9. Scripts touch keys they build from their arguments, which
//! is fine for a single Redis (not Redis Cluster).
//!
//! # Who receives presence events
//!
//! Events are published on `<prefix>.presence.<user_id>` ([`shared_proto::subjects::presence`]).
//! Each gateway subscribes once to `<prefix>.presence.*` and filters locally (see
//! [`crate::fanout`]): a lookup in the index of small conversations it knows. Subscribing per
//! peer instead would cost one subscription per (local user × peer) pair and interest churn on
//! every connect, which dwarfs the transitions themselves; transitions are rare (first and last
//! socket of a user) and the local filter is one hash lookup.

use std::{sync::Arc, time::Duration};

use redis::Script;
use shared_proto::events::{Event, EventKind, Presence, event::Body};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use shared_redis::{self as redis_conn, RedisConn};

use crate::{fanout::Fanout, metrics::Metrics};

/// Users reaped per script run (bounds how long one run blocks Redis).
const REAP_CHUNK: usize = 500;

/// Most connects and disconnects applied by one script run.
const MAX_CHANGES: usize = 500;
/// Script runs applying changes at a time.
const CHANGE_RUNS: usize = 4;

/// Applies connects (`c`) and disconnects (`d`) in order. KEYS: user key prefix, this gateway's
/// users set; ARGV: gateway, then (change, user) pairs. Returns, per change, 1 for a fleet-wide
/// transition (0→1 on connect, 1→0 on disconnect), else 0.
const APPLY: &str = r"
local out = {}
for i = 2, #ARGV, 2 do
  local user = ARGV[i + 1]
  local key = KEYS[1] .. user
  local transition = 0
  if ARGV[i] == 'c' then
    if redis.call('EXISTS', key) == 0 then transition = 1 end
    redis.call('HINCRBY', key, ARGV[1], 1)
    redis.call('SADD', KEYS[2], user)
  elseif redis.call('HEXISTS', key, ARGV[1]) == 0 then
    -- already reaped (this gateway was presumed dead): the reaper emitted the offline
    redis.call('SREM', KEYS[2], user)
  else
    local n = redis.call('HINCRBY', key, ARGV[1], -1)
    if n <= 0 then
      redis.call('HDEL', key, ARGV[1])
      redis.call('SREM', KEYS[2], user)
    end
    if redis.call('EXISTS', key) == 0 then transition = 1 end
  end
  out[#out + 1] = transition
end
return out
";

/// Returns 1 when this gateway must re-register its users (first beat, or it was presumed dead).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
if not old then return 1 end
if now - tonumber(old) > tonumber(ARGV[2]) then return 1 end
return 0
";

/// Gateways whose last heartbeat is older than the expiry.
const DEAD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])), 'LIMIT', 0, 100)
";

/// Reaps one chunk of a dead gateway. Returns `{more, {offline users}}`.
const REAP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or now - tonumber(score) <= tonumber(ARGV[2]) then return {0, {}} end
local users = redis.call('SPOP', KEYS[2], tonumber(ARGV[3]))
local offline = {}
for _, user in ipairs(users) do
  local key = ARGV[4] .. user
  redis.call('HDEL', key, ARGV[1])
  if redis.call('EXISTS', key) == 0 then offline[#offline + 1] = user end
end
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {0, offline}
end
return {1, offline}
";

/// Sets this gateway's counts for a batch of users (ARGV: gateway, then user, count pairs);
/// returns the users that were offline (reaped) and are online again.
const REREGISTER: &str = r"
local back = {}
for i = 2, #ARGV, 2 do
  local key = KEYS[1] .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then back[#back + 1] = ARGV[i] end
  redis.call('HSET', key, ARGV[1], ARGV[i + 1])
  redis.call('SADD', KEYS[2], ARGV[i])
end
return back
";

/// Marks a gateway dead at once (clean shutdown): its leftovers are then reaped like a crash's.
const LEAVE: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('ZADD', KEYS[1], 0, ARGV[1]) end
return 0
";

/// The batching task of connects and disconnects: takes whatever waits when a run can start (up
/// to [`MAX_CHANGES`]), applies it with one [`APPLY`] run, answers each request.
async fn apply_changes(
    redis: Arc<RedisConn>,
    user_prefix: String,
    set_key: String,
    gateway_id: String,
    mut requests: mpsc::UnboundedReceiver<ChangeRequest>,
) {
    let script = Arc::new(Script::new(APPLY));
    let runs = Arc::new(Semaphore::new(CHANGE_RUNS));
    let keys = Arc::new((user_prefix, set_key, gateway_id));
    while let Some(first) = requests.recv().await {
        let Ok(run) = Arc::clone(&runs).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_CHANGES {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (redis, script, keys) = (Arc::clone(&redis), Arc::clone(&script), Arc::clone(&keys));
        tokio::spawn(async move {
            let transitions: Option<Vec<i64>> =
                redis_conn::run(&redis, "presence.apply", |mut c| {
                    let mut invocation = script.key(&keys.0);
                    invocation.key(&keys.1).arg(&keys.2);
                    for (change, user, _) in &batch {
                        let code = if *change == Change::Connect { "c" } else { "d" };
                        invocation.arg(code).arg(user.to_string());
                    }
                    async move { invocation.invoke_async(&mut c).await }
                })
                .await;
            match transitions {
                Some(transitions) if transitions.len() == batch.len() => {
                    for ((_, _, reply), transition) in batch.into_iter().zip(transitions) {
                        let _ = reply.send(Some(transition == 1));
                    }
                }
                _ => {
                    for (_, _, reply) in batch {
                        let _ = reply.send(None);
                    }
                }
            }
            drop(run);
        });
    }
}

/// The presence store and the events it emits.
pub struct PresenceStore {
    redis: Arc<RedisConn>,
    nats: async_nats::Client,
    subject_prefix: String,
    key_prefix: String,
    gateway_id: String,
    expiry: Duration,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
    scripts: Scripts,
    /// Connects and disconnects for the batching task ([`apply_changes`]), which holds the
    /// receiver and ends when this (the only sender) is dropped.
    changes: mpsc::UnboundedSender<ChangeRequest>,
}

/// A socket opened (connect) or closed (disconnect) on this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Connect,
    Disconnect,
}

/// A change, its user, and where to answer: `Some(transition)`, or `None` when Redis failed.
type ChangeRequest = (Change, Uuid, oneshot::Sender<Option<bool>>);

struct Scripts {
    heartbeat: Script,
    dead: Script,
    reap: Script,
    reregister: Script,
    leave: Script,
}

impl PresenceStore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        redis: Arc<RedisConn>,
        nats: async_nats::Client,
        subject_prefix: String,
        key_prefix: &str,
        gateway_id: String,
        heartbeat: Duration,
        expiry: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let key_prefix = format!("{key_prefix}:presence:");
        let (changes, requests) = mpsc::unbounded_channel();
        tokio::spawn(apply_changes(
            Arc::clone(&redis),
            format!("{key_prefix}user:"),
            format!("{key_prefix}gateway:{gateway_id}:users"),
            gateway_id.clone(),
            requests,
        ));
        Self {
            redis,
            nats,
            subject_prefix,
            key_prefix,
            gateway_id,
            expiry,
            heartbeat,
            metrics,
            changes,
            scripts: Scripts {
                heartbeat: Script::new(HEARTBEAT),
                dead: Script::new(DEAD),
                reap: Script::new(REAP),
                reregister: Script::new(REREGISTER),
                leave: Script::new(LEAVE),
            },
        }
    }

    fn user_key(&self, user: &Uuid) -> String {
        format!("{}user:{user}", self.key_prefix)
    }

    fn gateway_users_key(&self, gateway: &str) -> String {
        format!("{}gateway:{gateway}:users", self.key_prefix)
    }

    fn gateways_key(&self) -> String {
        format!("{}gateways", self.key_prefix)
    }

    /// Records a new socket of `user` on this gateway; publishes `presence.online` when it is the
    /// user's first socket in the fleet. Redis down: nothing is recorded or published.
    pub async fn connect(&self, user: Uuid) {
        self.change(Change::Connect, user).await;
    }

    /// Records that a socket of `user` on this gateway closed; publishes `presence.offline` when
    /// it was the user's last socket in the fleet.
    pub async fn disconnect(&self, user: Uuid) {
        self.change(Change::Disconnect, user).await;
    }

    async fn change(&self, change: Change, user: Uuid) {
        let (reply, answer) = oneshot::channel();
        let transition = match self.changes.send((change, user, reply)) {
            Ok(()) => answer.await.ok().flatten(),
            Err(_) => None,
        };
        match (transition, change) {
            (Some(true), Change::Connect) => self.publish(user, EventKind::PresenceOnline).await,
            (Some(true), Change::Disconnect) => {
                self.publish(user, EventKind::PresenceOffline).await
            }
            (Some(false), _) => {}
            (None, _) => self
                .metrics
                .presence_ops
                .with_label_values(&["error"])
                .inc(),
        }
    }

    /// Which of `users` are online right now (for `presence.snapshot`); empty when Redis is down.
    pub async fn online_among(&self, users: &[Uuid]) -> Vec<Uuid> {
        if users.is_empty() {
            return Vec::new();
        }
        self.metrics
            .presence_ops
            .with_label_values(&["snapshot"])
            .inc();
        let keys: Vec<String> = users.iter().map(|u| self.user_key(u)).collect();
        let online: Option<Vec<bool>> =
            redis_conn::run(&self.redis, "presence.snapshot", |mut c| async move {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.exists(key);
                }
                pipe.query_async(&mut c).await
            })
            .await;
        match online {
            Some(flags) => users
                .iter()
                .zip(flags)
                .filter_map(|(user, online)| online.then_some(*user))
                .collect(),
            None => {
                self.metrics
                    .presence_ops
                    .with_label_values(&["error"])
                    .inc();
                Vec::new()
            }
        }
    }

    async fn publish(&self, user: Uuid, kind: EventKind) {
        let label = if kind == EventKind::PresenceOnline {
            "online"
        } else {
            "offline"
        };
        self.metrics.presence_ops.with_label_values(&[label]).inc();
        let event = Event {
            event_id: Uuid::new_v4().to_string(),
            kind: kind as i32,
            conversation_id: String::new(),
            actor_id: user.to_string(),
            occurred_at_us: crate::fanout::now_us(),
            target_user_id: None,
            target_user_ids: vec![],
            body: Some(Body::Presence(Presence {
                user_id: user.to_string(),
            })),
        };
        let subject = shared_proto::subjects::presence(&self.subject_prefix, &user);
        crate::fanout::publish(&self.nats, subject, &event).await;
    }

    /// One heartbeat, then the reaping of any dead gateway. Returns when both are done.
    pub async fn tick(&self, fanout: &Fanout) {
        let gateways = self.gateways_key();
        let expiry_ms = self.expiry.as_millis() as u64;
        let beat: Option<i64> = redis_conn::run(&self.redis, "presence.heartbeat", |mut c| {
            let gateways = gateways.clone();
            async move {
                self.scripts
                    .heartbeat
                    .key(gateways)
                    .arg(&self.gateway_id)
                    .arg(expiry_ms)
                    .invoke_async(&mut c)
                    .await
            }
        })
        .await;
        match beat {
            None => {
                self.metrics
                    .presence_ops
                    .with_label_values(&["error"])
                    .inc();
                return;
            }
            Some(reregister) => {
                self.metrics
                    .presence_ops
                    .with_label_values(&["heartbeat"])
                    .inc();
                if reregister == 1 {
                    self.reregister(fanout.local_socket_counts()).await;
                }
            }
        }
        let dead: Option<Vec<String>> = redis_conn::run(&self.redis, "presence.dead", |mut c| {
            let gateways = gateways.clone();
            async move {
                self.scripts
                    .dead
                    .key(gateways)
                    .arg(expiry_ms)
                    .invoke_async(&mut c)
                    .await
            }
        })
        .await;
        for gateway in dead.unwrap_or_default() {
            if gateway != self.gateway_id {
                self.reap(&gateway).await;
            }
        }
    }

    /// Reaps a dead gateway chunk by chunk, publishing `presence.offline` for each user left with
    /// no socket.
    async fn reap(&self, gateway: &str) {
        let (gateways, set_key) = (self.gateways_key(), self.gateway_users_key(gateway));
        let user_prefix = format!("{}user:", self.key_prefix);
        let expiry_ms = self.expiry.as_millis() as u64;
        loop {
            let result: Option<(i64, Vec<String>)> =
                redis_conn::run(&self.redis, "presence.reap", |mut c| {
                    let (gateways, set_key, user_prefix) =
                        (gateways.clone(), set_key.clone(), user_prefix.clone());
                    async move {
                        self.scripts
                            .reap
                            .key(gateways)
                            .key(set_key)
                            .arg(gateway)
                            .arg(expiry_ms)
                            .arg(REAP_CHUNK)
                            .arg(user_prefix)
                            .invoke_async(&mut c)
                            .await
                    }
                })
                .await;
            let Some((more, offline)) = result else {
                self.metrics
                    .presence_ops
                    .with_label_values(&["error"])
                    .inc();
                return;
            };
            if !offline.is_empty() {
                tracing::info!(
                    gateway.id = gateway,
                    users = offline.len(),
                    "reaped users of a dead gateway"
                );
            }
            for user in offline.iter().filter_map(|u| Uuid::parse_str(u).ok()) {
                self.metrics
                    .presence_ops
                    .with_label_values(&["reaped"])
                    .inc();
                self.publish(user, EventKind::PresenceOffline).await;
            }
            if more == 0 {
                return;
            }
        }
    }

    /// Writes this gateway's socket counts again after it was presumed dead.
    async fn reregister(&self, counts: Vec<(Uuid, usize)>) {
        let user_prefix = format!("{}user:", self.key_prefix);
        let set_key = self.gateway_users_key(&self.gateway_id);
        for chunk in counts.chunks(REAP_CHUNK) {
            let back: Option<Vec<String>> =
                redis_conn::run(&self.redis, "presence.reregister", |mut c| {
                    let (user_prefix, set_key) = (user_prefix.clone(), set_key.clone());
                    async move {
                        let mut invocation = self.scripts.reregister.key(user_prefix);
                        invocation.key(set_key).arg(&self.gateway_id);
                        for (user, count) in chunk {
                            invocation.arg(user.to_string()).arg(*count);
                        }
                        invocation.invoke_async(&mut c).await
                    }
                })
                .await;
            for user in back
                .unwrap_or_default()
                .iter()
                .filter_map(|u| Uuid::parse_str(u).ok())
            {
                self.metrics
                    .presence_ops
                    .with_label_values(&["reregistered"])
                    .inc();
                self.publish(user, EventKind::PresenceOnline).await;
            }
        }
    }

    /// Clean shutdown: marks this gateway dead and reaps what its sockets left behind. Also run
    /// at start, before accepting, for a previous process that had the same `GATEWAY_ID`.
    pub async fn leave(&self) {
        let gateways = self.gateways_key();
        let marked: Option<i64> = redis_conn::run(&self.redis, "presence.leave", |mut c| {
            let gateways = gateways.clone();
            async move {
                self.scripts
                    .leave
                    .key(gateways)
                    .arg(&self.gateway_id)
                    .invoke_async(&mut c)
                    .await
            }
        })
        .await;
        if marked.is_some() {
            self.reap(&self.gateway_id).await;
        }
    }

    /// Heartbeat and reaping until `stop` fires.
    pub async fn run(
        self: Arc<Self>,
        fanout: Arc<Fanout>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut interval = tokio::time::interval(self.heartbeat);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => self.tick(&fanout).await,
            }
        }
    }
}
