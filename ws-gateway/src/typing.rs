//! Typing state in Redis and the automatic `typing.stop` (`docs/websocket.md`, "Sending typing
//! frames").
//!
//! # Redis keys (`<p>` = `REDIS_KEY_PREFIX`; all listed in [`shared_redis::layout`]) — read by api-service
//!
//! | key | type | content |
//! |---|---|---|
//! | `<p>:{c:<conversation_id>}:typing` | ZSET | member = user id (lowercase canonical UUID), score = when the entry expires, unix **milliseconds** of the Redis clock (`typing.start` time + 6000). The key itself has a 6 s `PEXPIRE`, refreshed by every start. |
//! | `<p>:{c:<conversation_id>}:typing:rate:<user_id>` | HASH | the fleet-wide relay limit (rule 7 of "Sending typing frames"): `tokens` (float) and `ts` (ms, Redis clock); expires once it would be full again |
//! | `<p>:{typing}:deadlines` | ZSET | member = `<conversation_id>:<user_id>`, score = when the automatic `typing.stop` is due (start + 5000 ms) |
//!
//! `GET /conversations/{id}/typing` lists the live typists with one command:
//! `ZRANGEBYSCORE <p>:{c:<id>}:typing <now_ms> +inf` (expired members may linger until the next start
//! in that conversation or the key's expiry; the score filter hides them).
//!
//! - `typing.start`: the entry is created or refreshed (score = now + 6 s) and the deadline set to
//!   now + 5 s;
//! - `typing.stop` from the client: both are removed (no automatic stop follows);
//! - every gateway runs [`TypingStore::run_sweeper`]: one script takes the due deadlines out of
//!   the ZSET and returns them, so each due deadline is claimed by exactly one gateway, which
//!   then removes the typist's entry and publishes `typing.stop` `{"user_id"}`: exactly once across
//!   the fleet, 5–5.25 s after the last start. Closing the last socket changes nothing: the
//!   entry expires the same way.
//!
//! Redis down: frames are still relayed, limited by each gateway's own bucket instead of the
//! fleet-wide one; the entries and the automatic stop are lost (counted as
//! `typing_operations_total{op="redis_error"}`).

use std::{sync::Arc, time::Duration};

use shared_proto::events::{Event, EventKind, Typing, event::Body};
use shared_redis::typing::Rules;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use shared_redis::{self as redis_conn, Keys, RedisConn};

use crate::{metrics::Metrics, protocol::TypingFrame};

/// Lifetime of a typing entry (`docs/websocket.md`, "Sending typing frames": "about 6 s").
pub const ENTRY_TTL: Duration = Duration::from_secs(6);
/// Silence after which the gateway emits `typing.stop` itself ("5–6 s").
pub const STOP_AFTER: Duration = Duration::from_secs(5);
/// How often each gateway looks for due deadlines.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Deadlines claimed per sweep run.
const SWEEP_BATCH: usize = 500;

/// Typing entries and deadlines, and the events they produce.
pub struct TypingStore {
    redis: Arc<RedisConn>,
    nats: async_nats::Client,
    subject_prefix: String,
    keys: Keys,
    metrics: Arc<Metrics>,
    /// Entry lifetime, automatic stop, and the relay limit (`TYPING_RATE_PER_SEC`,
    /// `TYPING_BURST`).
    rules: Rules,
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
            keys: Keys::new(key_prefix),
            metrics,
            rules: Rules {
                entry_ttl: ENTRY_TTL,
                stop_after: STOP_AFTER,
                rate_per_ms: rate_per_sec / 1000.0,
                burst,
            },
        }
    }

    /// `<p>:{c:<conversation_id>}:typing` — the key api-service reads.
    pub fn conversation_key(&self, conversation: &Uuid) -> String {
        self.keys.typing(conversation)
    }

    /// Takes a token of the fleet-wide (user, conversation) bucket and records a validated typing
    /// frame in Redis (one script on the conversation's slot, then the deadline). `Some(true)`:
    /// recorded, relay it; `Some(false)`: over the limit, drop it; `None`: Redis did not answer
    /// (the caller falls back to its local bucket).
    pub async fn record(&self, user: Uuid, frame: &TypingFrame) -> Option<bool> {
        let start = frame.kind == EventKind::TypingStart;
        let recorded = redis_conn::run(&self.redis, "typing", |c| async move {
            shared_redis::typing::record(
                &c,
                &self.keys,
                &self.rules,
                &frame.conversation_id,
                &user,
                start,
            )
            .await
        })
        .await;
        if recorded.is_none() {
            self.metrics
                .typing_ops
                .with_label_values(&["redis_error"])
                .inc();
        }
        recorded
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
            occurred_at_us: crate::publish::now_us(),
            target_user_id: None,
            target_user_ids: vec![],
            body: Some(Body::Typing(Typing {
                user_id: user.to_string(),
                payload_json,
            })),
        };
        let subject = shared_proto::subjects::conversation(&self.subject_prefix, &conversation);
        crate::publish::publish(&self.nats, subject, &event).await;
    }

    /// Claims the due deadlines once and emits their `typing.stop`. Returns how many.
    pub async fn sweep_once(&self) -> usize {
        let due = redis_conn::run(&self.redis, "typing.sweep", |c| async move {
            shared_redis::typing::sweep(&c, &self.keys, SWEEP_BATCH).await
        })
        .await
        .unwrap_or_default();
        for &(conversation, user) in &due {
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
