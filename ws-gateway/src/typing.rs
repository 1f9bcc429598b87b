//! Typing state in Redis and the automatic `typing.stop` (websocket.md §6).
//!
//! # Redis keys (`<p>` = `REDIS_KEY_PREFIX`) — read by api-service
//!
//! | key | type | content |
//! |---|---|---|
//! | `<p>:typing:<conversation_id>` | ZSET | member = user id (lowercase canonical UUID), score = when the entry expires, unix **milliseconds** of the Redis clock (`typing.start` time + 6000). The key itself has a 6 s `PEXPIRE`, refreshed by every start. |
//! | `<p>:typing:rate:<conversation_id>:<user_id>` | HASH | the fleet-wide relay limit of §6 rule 7: `tokens` (float) and `ts` (ms, Redis clock); expires once it would be full again |
//! | `<p>:typing:deadlines` | ZSET | member = `<conversation_id>:<user_id>`, score = when the automatic `typing.stop` is due (start + 5000 ms) |
//!
//! `GET /conversations/{id}/typing` lists the live typists with one command:
//! `ZRANGEBYSCORE <p>:typing:<id> <now_ms> +inf` (expired members may linger until the next start
//! in that conversation or the key's expiry; the score filter hides them).
//!
//! - `typing.start`: the entry is created or refreshed (score = now + 6 s) and the deadline set to
//!   now + 5 s;
//! - `typing.stop` from the client: both are removed (no automatic stop follows);
//! - every gateway runs [`TypingStore::run_sweeper`]: one script takes the due deadlines out of
//!   the ZSET and returns them, so each due deadline is claimed by exactly one gateway, which
//!   removes the typist's entry and publishes `typing.stop` `{"user_id"}`: exactly once across
//!   the fleet, 5–5.25 s after the last start. Closing the last socket changes nothing: the
//!   entry expires the same way.
//!
//! Redis down: frames are still relayed, limited by each gateway's own bucket instead of the
//! fleet-wide one; the entries and the automatic stop are lost (counted as
//! `typing_operations_total{op="redis_error"}`).

use std::{sync::Arc, time::Duration};

use redis::Script;
use shared_proto::events::{Event, EventKind, Typing, event::Body};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use shared_redis::{self as redis_conn, RedisConn};

use crate::{metrics::Metrics, protocol::TypingFrame};

/// Lifetime of a typing entry (websocket.md §6: "about 6 s").
pub const ENTRY_TTL: Duration = Duration::from_secs(6);
/// Silence after which the gateway emits `typing.stop` itself ("5–6 s").
pub const STOP_AFTER: Duration = Duration::from_secs(5);
/// How often each gateway looks for due deadlines.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Deadlines claimed per sweep run.
const SWEEP_BATCH: usize = 500;

/// The fleet-wide token bucket of websocket.md §6 rule 7, shared by START and STOP: one bucket
/// per (user, conversation) in the hash KEYS[3] {tokens, ts}, refilled at ARGV[5] tokens per
/// millisecond up to ARGV[6], timed by the Redis clock so every gateway agrees. Returns 0 from
/// the script (nothing recorded) when no token is left.
const BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
local b = redis.call('HMGET', KEYS[3], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = tokens >= 1
if allowed then tokens = tokens - 1 end
redis.call('HSET', KEYS[3], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[3], math.ceil(burst / rate) + 1000)
if not allowed then return 0 end
";

const START: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
return 1
";

const STOP: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[4])
return 1
";

/// Claims due deadlines: removes them and the typists' entries, returns the claimed members.
const SWEEP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local conversation, user = string.match(member, '^(.-):(.*)$')
  if conversation then redis.call('ZREM', ARGV[2] .. conversation, user) end
end
return due
";

/// Typing entries and deadlines, and the events they produce.
pub struct TypingStore {
    redis: Arc<RedisConn>,
    nats: async_nats::Client,
    subject_prefix: String,
    /// `<p>:typing:`
    key_prefix: String,
    metrics: Arc<Metrics>,
    /// Typing relay limit: tokens per millisecond and burst (`TYPING_RATE_PER_SEC`, `TYPING_BURST`).
    rate_per_ms: f64,
    burst: u32,
    start: Script,
    stop: Script,
    sweep: Script,
}

impl TypingStore {
    pub fn new(
        redis: Arc<RedisConn>,
        nats: async_nats::Client,
        subject_prefix: String,
        key_prefix: &str,
        metrics: Arc<Metrics>,
        rate_per_sec: f64,
        burst: u32,
    ) -> Self {
        Self {
            redis,
            nats,
            subject_prefix,
            key_prefix: format!("{key_prefix}:typing:"),
            metrics,
            rate_per_ms: rate_per_sec / 1000.0,
            burst,
            start: Script::new(&format!("{BUCKET}{START}")),
            stop: Script::new(&format!("{BUCKET}{STOP}")),
            sweep: Script::new(SWEEP),
        }
    }

    /// `<p>:typing:<conversation_id>` — the key api-service reads.
    pub fn conversation_key(&self, conversation: &Uuid) -> String {
        format!("{}{conversation}", self.key_prefix)
    }

    fn deadlines_key(&self) -> String {
        format!("{}deadlines", self.key_prefix)
    }

    /// Takes a token of the fleet-wide (user, conversation) bucket and records a validated typing
    /// frame in Redis, in one script. `Some(true)`: recorded, relay it; `Some(false)`: over the
    /// limit, drop it; `None`: Redis did not answer (the caller falls back to its local bucket).
    pub async fn record(&self, user: Uuid, frame: &TypingFrame) -> Option<bool> {
        let (key, deadlines) = (
            self.conversation_key(&frame.conversation_id),
            self.deadlines_key(),
        );
        let rate_key = format!("{}rate:{}:{user}", self.key_prefix, frame.conversation_id);
        let member = format!("{}:{user}", frame.conversation_id);
        let script = if frame.kind == EventKind::TypingStart {
            &self.start
        } else {
            &self.stop
        };
        let recorded: Option<i64> = redis_conn::run(&self.redis, "typing", |mut c| async move {
            script
                .key(&key)
                .key(&deadlines)
                .key(&rate_key)
                .arg(user.to_string())
                .arg(ENTRY_TTL.as_millis() as u64)
                .arg(STOP_AFTER.as_millis() as u64)
                .arg(&member)
                .arg(self.rate_per_ms)
                .arg(self.burst)
                .invoke_async(&mut c)
                .await
        })
        .await;
        if recorded.is_none() {
            self.metrics
                .typing_ops
                .with_label_values(&["redis_error"])
                .inc();
        }
        recorded.map(|r| r == 1)
    }

    /// Relays a typing frame to the conversation's subject (every gateway delivers it to the room
    /// minus the typist's sockets).
    pub async fn relay(&self, user: Uuid, frame: TypingFrame) {
        self.metrics
            .typing_ops
            .with_label_values(&["relayed"])
            .inc();
        self.publish(
            frame.conversation_id,
            user,
            frame.kind,
            frame.payload_json,
            Some(user),
        )
        .await;
    }

    async fn publish(
        &self,
        conversation: Uuid,
        user: Uuid,
        kind: EventKind,
        payload_json: String,
        actor: Option<Uuid>,
    ) {
        let event = Event {
            event_id: Uuid::new_v4().to_string(),
            kind: kind as i32,
            conversation_id: conversation.to_string(),
            // Empty for the automatic stop: the system emits it (event.proto).
            actor_id: actor.map(|a| a.to_string()).unwrap_or_default(),
            occurred_at_us: crate::fanout::now_us(),
            target_user_id: None,
            target_user_ids: vec![],
            body: Some(Body::Typing(Typing {
                user_id: user.to_string(),
                payload_json,
            })),
        };
        let subject = shared_proto::subjects::conversation(&self.subject_prefix, &conversation);
        crate::fanout::publish(&self.nats, subject, &event).await;
    }

    /// Claims the due deadlines once and emits their `typing.stop`. Returns how many.
    pub async fn sweep_once(&self) -> usize {
        let deadlines = self.deadlines_key();
        let due: Option<Vec<String>> = redis_conn::run(&self.redis, "typing.sweep", |mut c| {
            let deadlines = deadlines.clone();
            async move {
                self.sweep
                    .key(deadlines)
                    .arg(SWEEP_BATCH)
                    .arg(&self.key_prefix)
                    .invoke_async(&mut c)
                    .await
            }
        })
        .await;
        let due = due.unwrap_or_default();
        for member in &due {
            let Some((conversation, user)) = member.split_once(':') else {
                continue;
            };
            let (Ok(conversation), Ok(user)) =
                (Uuid::parse_str(conversation), Uuid::parse_str(user))
            else {
                continue;
            };
            self.metrics
                .typing_ops
                .with_label_values(&["auto_stop"])
                .inc();
            let payload = format!(r#"{{"user_id":"{user}"}}"#);
            self.publish(conversation, user, EventKind::TypingStop, payload, None)
                .await;
        }
        due.len()
    }

    /// Sweeps every [`SWEEP_INTERVAL`] until `stop` fires.
    pub async fn run_sweeper(self: Arc<Self>, stop: CancellationToken) {
        let mut interval = tokio::time::interval(SWEEP_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {
                    // A full batch means more may be due: go again at once.
                    while self.sweep_once().await == SWEEP_BATCH {}
                }
            }
        }
    }
}
