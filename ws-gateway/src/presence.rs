//! Fleet-wide presence in Redis (`docs/websocket.md`, "Presence"): who is online, the 0→1 / 1→0
//! transitions that emit `presence.online` / `presence.offline`, and the expiry of a dead gateway's
//! users.
//!
//! # Redis keys (`<p>` = `REDIS_KEY_PREFIX`; all listed in [`shared_redis::layout`])
//!
//! | key | type | content |
//! |---|---|---|
//! | `<p>:{u:<user_id>}:presence` | HASH | field = gateway id, value = that user's open sockets on that gateway. The key exists ⇔ the user is online somewhere. |
//! | `<p>:{presence}:gateway:<gateway_id>:users` | SET | users with at least one socket on that gateway (what to reap if it dies) |
//! | `<p>:{presence}:gateways` | ZSET | member = gateway id, score = its last heartbeat, unix ms of the Redis clock |
//!
//! A user's hash is in the user's slot of a Redis Cluster; the two registry keys share one slot.
//! The scripts and the order of the commands between slots are in [`shared_redis::presence`].
//!
//! # Transitions, exactly once
//!
//! Every change of a user's hash runs inside a Lua script, so Redis serialises them fleet-wide:
//! - connect: `HINCRBY` this gateway's field; the user's key did not exist before ⇔ 0→1 ⇒ this
//!   gateway publishes `presence.online`;
//! - disconnect: decrement, delete the field at 0; the key is gone afterwards ⇔ 1→0 ⇒ this
//!   gateway publishes `presence.offline`;
//! - concurrent connects and disconnects are coalesced: one script run applies a batch of them
//!   in arrival order (up to [`MAX_CHANGES`] per batch, one batch at a time so that the registry
//!   updates of two batches never interleave): one script per user of the batch, all sent at
//!   once, rather than one round trip per socket in a reconnect storm;
//! - heartbeat: every `PRESENCE_HEARTBEAT_SECONDS` each gateway sets its score to Redis' `TIME`;
//! - reap: every gateway also looks for gateways whose score is older than
//!   `PRESENCE_EXPIRY_SECONDS` and reaps them in chunks: one script `SPOP`s a chunk of the dead
//!   gateway's users, then one script per popped user deletes its field in the user's hash and
//!   tells whether that emptied it. A popped user belongs to exactly one reaper, so each of them
//!   gets exactly one `presence.offline`, published by whichever surviving gateway popped it.
//!   The dead gateway leaves the ZSET when its set is empty.
//!
//! A gateway that was merely slow (its heartbeat found its own score stale or gone) re-registers
//! all its local users, emitting `presence.online` for those a peer had already reaped. A clean
//! shutdown marks itself dead (score 0) and reaps its own leftovers, so a disconnect lost to a
//! Redis hiccup cannot leave a user online forever; start-up does the same before accepting, for
//! a previous process that ran with the same `GATEWAY_ID` (e.g. a pod name) and was killed.
//!
//! Worst case after a SIGKILL: expiry + one heartbeat period (30 s + 10 s with the defaults), below
//! the 60 s `docs/websocket.md` promises ("Presence"). Every script gets all its keys in `KEYS`, in
//! one slot, so the same code runs on one Redis and on a Redis Cluster.
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

use shared_proto::events::{Event, EventKind, Presence, event::Body};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use shared_redis::{self as redis_conn, Keys, RedisConn, presence::Change};

use crate::{fanout::Fanout, metrics::Metrics};

/// Users reaped per script run (bounds how long one run blocks Redis).
const REAP_CHUNK: usize = 500;

/// Most connects and disconnects applied by one batch.
const MAX_CHANGES: usize = 500;

/// The batching task of connects and disconnects: takes whatever waits (up to
/// [`MAX_CHANGES`]), applies it as one batch, answers each request, then takes the next.
async fn apply_changes(
    redis: Arc<RedisConn>,
    keys: Keys,
    gateway_id: String,
    mut requests: mpsc::UnboundedReceiver<ChangeRequest>,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_CHANGES {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let changes: Vec<(Change, Uuid)> = batch.iter().map(|(c, u, _)| (*c, *u)).collect();
        let transitions = redis_conn::run(&redis, "presence.apply", |c| {
            let (keys, gateway_id, changes) = (&keys, &gateway_id, &changes);
            async move { shared_redis::presence::apply(&c, keys, gateway_id, changes).await }
        })
        .await;
        match transitions {
            Some(transitions) => {
                for ((_, _, reply), transition) in batch.into_iter().zip(transitions) {
                    let _ = reply.send(Some(transition));
                }
            }
            None => {
                for (_, _, reply) in batch {
                    let _ = reply.send(None);
                }
            }
        }
    }
}

/// The presence store and the events it emits.
pub struct PresenceStore {
    redis: Arc<RedisConn>,
    nats: async_nats::Client,
    subject_prefix: String,
    keys: Keys,
    gateway_id: String,
    expiry: Duration,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
    /// Connects and disconnects for the batching task ([`apply_changes`]), which holds the
    /// receiver and ends when this (the only sender) is dropped.
    changes: mpsc::UnboundedSender<ChangeRequest>,
}

/// A change, its user, and where to answer: `Some(transition)`, or `None` when Redis failed.
type ChangeRequest = (Change, Uuid, oneshot::Sender<Option<bool>>);

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
        let keys = Keys::new(key_prefix);
        let (changes, requests) = mpsc::unbounded_channel();
        tokio::spawn(apply_changes(
            Arc::clone(&redis),
            keys.clone(),
            gateway_id.clone(),
            requests,
        ));
        Self {
            redis,
            nats,
            subject_prefix,
            keys,
            gateway_id,
            expiry,
            heartbeat,
            metrics,
            changes,
        }
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
        let online: Option<Vec<bool>> =
            redis_conn::run(&self.redis, "presence.snapshot", |c| async move {
                shared_redis::presence::online(&c, &self.keys, users).await
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
            occurred_at_us: crate::publish::now_us(),
            target_user_id: None,
            target_user_ids: vec![],
            body: Some(Body::Presence(Presence {
                user_id: user.to_string(),
            })),
        };
        let subject = shared_proto::subjects::presence(&self.subject_prefix, &user);
        crate::publish::publish(&self.nats, subject, &event).await;
    }

    /// One heartbeat, then the reaping of any dead gateway. Returns when both are done.
    pub async fn tick(&self, fanout: &Fanout) {
        let expiry_ms = self.expiry.as_millis() as u64;
        let beat = redis_conn::run(&self.redis, "presence.heartbeat", |c| async move {
            shared_redis::presence::heartbeat(&c, &self.keys, &self.gateway_id, expiry_ms).await
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
                if reregister {
                    self.reregister(fanout.local_socket_counts()).await;
                }
            }
        }
        let dead = redis_conn::run(&self.redis, "presence.dead", |c| async move {
            shared_redis::presence::dead(&c, &self.keys, expiry_ms).await
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
        let expiry_ms = self.expiry.as_millis() as u64;
        loop {
            let result = redis_conn::run(&self.redis, "presence.reap", |c| async move {
                shared_redis::presence::reap_chunk(&c, &self.keys, gateway, expiry_ms, REAP_CHUNK)
                    .await
            })
            .await;
            let Some(reaped) = result else {
                self.metrics
                    .presence_ops
                    .with_label_values(&["error"])
                    .inc();
                return;
            };
            if !reaped.offline.is_empty() {
                tracing::info!(
                    gateway.id = gateway,
                    users = reaped.offline.len(),
                    "reaped users of a dead gateway"
                );
            }
            for user in reaped.offline {
                self.metrics
                    .presence_ops
                    .with_label_values(&["reaped"])
                    .inc();
                self.publish(user, EventKind::PresenceOffline).await;
            }
            if reaped.incomplete {
                self.metrics
                    .presence_ops
                    .with_label_values(&["error"])
                    .inc();
            }
            if !reaped.more {
                return;
            }
        }
    }

    /// Writes this gateway's socket counts again after it was presumed dead.
    async fn reregister(&self, counts: Vec<(Uuid, usize)>) {
        for chunk in counts.chunks(REAP_CHUNK) {
            let back = redis_conn::run(&self.redis, "presence.reregister", |c| async move {
                shared_redis::presence::reregister(&c, &self.keys, &self.gateway_id, chunk).await
            })
            .await;
            for user in back.unwrap_or_default() {
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
        let marked = redis_conn::run(&self.redis, "presence.leave", |c| async move {
            shared_redis::presence::leave(&c, &self.keys, &self.gateway_id).await
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
