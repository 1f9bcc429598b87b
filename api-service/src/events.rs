//! Publishing protobuf events on NATS after a write commits, and keeping them
//! while NATS is briefly unreachable (docs/delivery.md, "During a NATS outage").
//!
//! # Subjects
//!
//! One [`Event`](pb::Event) per change, on the conversation's subject (room events) or the user's
//! subject (personal events: `conversation.joined`, `conversation.left`). A personal event that
//! concerns several users at once (the `conversation.joined` of a create or an add) is published
//! once on `<prefix>.user.many.<conversation_id>` with their ids in `target_user_ids` rather than
//! once per user: each copy would carry the whole conversation, so a group of N would cost N²
//! bytes on NATS (a 1,000-member group: 1,000 messages, 134 MB), and the publishes of a large group's
//! creation timed out. When the targets do not fit in one message of the server's `max_payload`
//! they are split over as few messages as fit.
//!
//! # The buffer
//!
//! Events are published after the write commits and before the HTTP response, but NATS never
//! stalls or fails a request: [`Publisher::publish`] either hands the event to the NATS client at
//! once or keeps it in a bounded in-memory buffer (`EVENT_BUFFER_SIZE` events) and returns. An
//! event is buffered when
//!
//! - NATS is not connected;
//! - the buffer is not empty, so the event goes out behind the ones already waiting: events
//!   leave in the order `publish` was called, and since one conversation's events are published
//!   one after the other (ingest publishes a batch's messages in `seq` order), each
//!   conversation's events keep their order;
//! - handing it to the client failed or took longer than [`PUBLISH_TIMEOUT`]. It then goes behind
//!   whatever was buffered meanwhile, which can only be other callers' events: a caller publishes
//!   one event at a time, so its own order holds.
//!
//! A background task ([`Publisher::run`]) publishes the buffer, oldest first, once the client is
//! connected again: the client's `Connected` event wakes it ([`Backlog::on_nats_event`]), and it
//! also looks every [`DRAIN_POLL`] in case a wake-up is missed. After a connection it holds the
//! buffer back for [`RECONNECT_SETTLE`], so that gateways that lost the same server are
//! subscribed again when it goes out (otherwise it would be announced by their `resync` but not
//! delivered live). The event it is publishing still
//! counts as buffered until the client has taken it, so a new event cannot overtake it. When the
//! buffer is empty again, events go straight to the client.
//!
//! # What is dropped, and the resync notice
//!
//! NATS is fan-out, not storage: clients recover anything from PostgreSQL through `seq`, but only
//! if they know to look. So an event that cannot be kept is dropped, counted
//! (`api_service_events_dropped_total{reason}`) and its targets are remembered — the conversation of a room
//! event, the users of a personal one:
//!
//! - `overflow`: the buffer is full. The new event is dropped rather than the oldest, so that
//!   what is buffered stays an unbroken run of the stream and what reaches NATS is still in order;
//! - `too_large`: the event (or one target id beside it) does not fit in the server's
//!   `max_payload`;
//! - `shutdown`: still buffered when the process stops (nobody is left to tell).
//!
//! Once the buffer has been emptied, one [`ResyncNotice`](pb::ResyncNotice) listing those targets
//! (reason [`RESYNC_NOT_PUBLISHED`]) is published on `<prefix>.resync` and flushed; each gateway
//! turns it into `resync` frames for the sockets concerned, whose clients then catch up. It goes
//! out after the buffered events so that the catch-up it triggers finds them. The lists are
//! bounded ([`NOTICE_MAX_CONVERSATIONS`], [`NOTICE_MAX_USERS`]); beyond that the notice says
//! `everyone`, which costs every client one catch-up but stays small.
//!
//! # In flight at a disconnect
//!
//! The client writes an accepted publish to its connection soon after; if the connection drops
//! before the server has routed it (the server is killed, or in a cluster this process's node
//! dies while the gateways stay connected to others), the event is gone and nothing says so.
//! Publishes still queued inside the client are not lost: it writes them after reconnecting. The
//! publisher cannot tell which publishes the server had received, so it remembers the target of
//! every publish of the last [`IN_FLIGHT_WINDOW`] in a ring of at most [`IN_FLIGHT_CAPACITY`]
//! entries, and on the client's `Disconnected` event adds them to the notice. Most of those events
//! did arrive: naming them costs their clients a catch-up request, where a missed event would
//! cost them silence until the next message of the conversation. If the ring wrapped within the
//! window (more publishes than it holds), the notice says `everyone`. Recording costs the hot path
//! nothing beyond the one short mutex section every publish takes anyway: the entry is an instant
//! and a conversation or user id (a reference count for a many-user event), in a ring allocated
//! once.
//!
//! The window covers a connection the client sees drop (closed or reset, as when a server or its
//! node dies). A connection that goes silent is found dead only by the client's pings, long
//! after the window; what was published into it meanwhile is lost without a notice.
//!
//! # Metrics
//!
//! `api_service_events_published_total{type}` counts NATS messages published. `api_service_event_publish_failures_total
//! {type}` counts events that could not be published when their request made them (NATS not
//! connected, the hand-over failed or timed out, or they were dropped); each is then either
//! buffered and published later or dropped. `api_service_event_buffer_events` is the buffer's size,
//! `api_service_events_buffered_total` counts events that went through it, `api_service_events_dropped_total{reason}`
//! what was lost, and `api_service_resync_notices_published_total` the notices.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use async_nats::{client::PublishErrorKind, connection::State as Connection};
use prost::Message as _;
use shared_proto::{events as pb, json::RESYNC_NOT_PUBLISHED, subjects};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Longest a publish (or a flush) may take before the event counts as failed.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the drain task looks at the connection when nothing wakes it.
pub const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How far back a disconnect looks for publishes that may have been lost with the connection:
/// well above the time the client takes to write a publish and the server to route it.
pub const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(2);
/// Most publishes remembered for [`IN_FLIGHT_WINDOW`].
pub const IN_FLIGHT_CAPACITY: usize = 8192;
/// Most conversations a resync notice lists before it says `everyone`.
pub const NOTICE_MAX_CONVERSATIONS: usize = 1000;
/// Most users a resync notice lists before it says `everyone`.
pub const NOTICE_MAX_USERS: usize = 1000;
/// How long the drain holds the buffer back after the client connects, so that the gateways,
/// which lost the same NATS server and retry as often, have subscribed again before it is
/// published (they are back within about 300 ms of NATS accepting connections). Published
/// earlier, the buffer would reach NATS while nobody listens: recovered by the gateways'
/// `resync`, but not delivered live.
pub const RECONNECT_SETTLE: Duration = Duration::from_millis(500);
/// Longest the drain may go on once the service is stopping.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Publishes events for one api-service process. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    nats: async_nats::Client,
    prefix: String,
    metrics: Metrics,
    backlog: Backlog,
}

/// Where an event goes.
pub enum Audience {
    /// Everyone in the conversation (`<prefix>.conv.<id>`).
    Room,
    /// One user's sockets (`<prefix>.user.<id>`); the event carries `target_user_id`.
    User(Uuid),
    /// The sockets of several users, each getting the same frame (module docs):
    /// `<prefix>.user.many.<conversation_id>` with `target_user_ids`, or the one user's subject
    /// when there is only one.
    Users(Vec<Uuid>),
}

/// Bytes one entry of `target_user_ids` adds to an encoded event: the field's tag, its length
/// and a hyphenated UUID.
const TARGET_ENTRY_BYTES: usize = 1 + 1 + 36;
/// Room left in each message for what NATS adds besides the payload and for rounding.
const PAYLOAD_SLACK: usize = 1024;

/// How many `target_user_ids` fit in one message next to an event of `base` encoded bytes under a
/// server `max_payload`; `None` when not even one does.
pub fn targets_per_message(base: usize, max_payload: usize) -> Option<usize> {
    let room = max_payload.checked_sub(base + PAYLOAD_SLACK)?;
    let fit = room / TARGET_ENTRY_BYTES;
    (fit > 0).then_some(fit)
}

/// Who an event is for, as a resync notice names them.
#[derive(Clone)]
enum Target {
    /// A room event: the conversation's members.
    Conversation(Uuid),
    /// A personal event for one user.
    User(Uuid),
    /// A personal event for several users (shared with the event, not copied).
    Users(Arc<[Uuid]>),
}

/// One event on its way to NATS.
struct Pending {
    /// Its `api_service_events_published_total` / `api_service_event_publish_failures_total` label.
    label: &'static str,
    subject: String,
    /// The event; for [`Target::Users`], without `target_user_ids` (filled in per message).
    event: pb::Event,
    target: Target,
    /// For [`Target::Users`]: how many targets were already published (a split event whose
    /// later messages failed resumes there, so nobody gets it twice).
    sent: usize,
    /// Already counted in `api_service_event_publish_failures_total`.
    failed: bool,
}

impl Pending {
    /// The targets not yet published, for the notice when the event is dropped.
    fn remaining(&self) -> Target {
        match &self.target {
            Target::Users(users) if self.sent > 0 => Target::Users(users[self.sent..].into()),
            other => other.clone(),
        }
    }
}

/// Why an event did not reach the client.
enum Failure {
    /// It cannot be published to this server at all.
    TooLarge,
    /// It may be published later (not connected, timed out, refused).
    Later(String),
}

/// The publisher's shared state: the buffer, the targets of the next resync notice and the
/// recent publishes. Held by every [`Publisher`] clone, the drain task and the NATS client's
/// event callback ([`Backlog::on_nats_event`]). Cheap to clone.
#[derive(Clone)]
pub struct Backlog(Arc<BacklogInner>);

struct BacklogInner {
    /// Taken once per publish, for a few instructions; never held across an await.
    state: Mutex<BacklogState>,
    /// Wakes the drain task ([`Publisher::run`]): notified when an event is buffered, when a
    /// target is added to the notice, and when the client connects. `notify_one` keeps a permit,
    /// so a wake-up while the task is busy is not lost.
    wake: Notify,
    /// `EVENT_BUFFER_SIZE`.
    capacity: usize,
    metrics: Metrics,
}

struct BacklogState {
    /// Events waiting for NATS, oldest first.
    queue: VecDeque<Pending>,
    /// The drain task has taken the front event and is publishing it: the buffer is not empty.
    in_transit: bool,
    /// Targets of the next resync notice.
    notice: NoticeTargets,
    /// Events dropped since the last notice (for its log line).
    dropped: u64,
    /// Recent publishes, for a disconnect.
    recent: Recent,
    /// When the client last connected (the drain holds back for [`RECONNECT_SETTLE`] after it).
    connected_at: Option<Instant>,
}

impl BacklogState {
    fn buffered(&self) -> usize {
        self.queue.len() + usize::from(self.in_transit)
    }
}

/// The targets of the next resync notice, bounded.
#[derive(Default)]
struct NoticeTargets {
    conversations: HashSet<Uuid>,
    users: HashSet<Uuid>,
    everyone: bool,
}

impl NoticeTargets {
    fn is_empty(&self) -> bool {
        !self.everyone && self.conversations.is_empty() && self.users.is_empty()
    }

    fn everyone(&mut self) {
        self.everyone = true;
        self.conversations = HashSet::new();
        self.users = HashSet::new();
    }

    fn add(&mut self, target: &Target) {
        match target {
            Target::Conversation(id) => self.add_conversation(*id),
            Target::User(id) => self.add_users(std::slice::from_ref(id)),
            Target::Users(ids) => self.add_users(ids),
        }
    }

    fn add_conversation(&mut self, id: Uuid) {
        if self.everyone {
            return;
        }
        self.conversations.insert(id);
        if self.conversations.len() > NOTICE_MAX_CONVERSATIONS {
            self.everyone();
        }
    }

    fn add_users(&mut self, ids: &[Uuid]) {
        if self.everyone {
            return;
        }
        if self.users.len() + ids.len() > NOTICE_MAX_USERS {
            let new = ids.iter().filter(|id| !self.users.contains(id)).count();
            if self.users.len() + new > NOTICE_MAX_USERS {
                self.everyone();
                return;
            }
        }
        self.users.extend(ids);
    }

    fn merge(&mut self, other: NoticeTargets) {
        if other.everyone {
            self.everyone();
        }
        for id in other.conversations {
            self.add_conversation(id);
        }
        self.add_users(&other.users.into_iter().collect::<Vec<_>>());
    }
}

/// The targets of recent publishes: a ring allocated once.
struct Recent {
    entries: VecDeque<(Instant, Target)>,
    /// When the newest entry pushed out of the ring was published: if that is within the window
    /// of a disconnect, the ring does not hold every publish the disconnect may have lost.
    evicted: Option<Instant>,
}

impl Recent {
    fn new() -> Self {
        Self {
            entries: VecDeque::with_capacity(IN_FLIGHT_CAPACITY),
            evicted: None,
        }
    }

    fn record(&mut self, at: Instant, target: Target) {
        if self.entries.len() == IN_FLIGHT_CAPACITY
            && let Some((old, _)) = self.entries.pop_front()
        {
            self.evicted = Some(old);
        }
        self.entries.push_back((at, target));
    }

    /// Moves the targets published within the window before `now` into `notice`.
    fn lost_at(&mut self, now: Instant, notice: &mut NoticeTargets) {
        let since = now.checked_sub(IN_FLIGHT_WINDOW);
        let within = |at: Instant| since.is_none_or(|since| at >= since);
        if self.evicted.is_some_and(within) {
            notice.everyone();
        } else {
            for (_, target) in self.entries.iter().filter(|(at, _)| within(*at)) {
                notice.add(target);
            }
        }
        self.entries.clear();
        self.evicted = None;
    }
}

impl Backlog {
    /// An empty buffer of `capacity` events (`EVENT_BUFFER_SIZE`; 0 keeps nothing: an event that
    /// cannot be published at once is dropped).
    pub fn new(capacity: usize, metrics: Metrics) -> Self {
        Self(Arc::new(BacklogInner {
            state: Mutex::new(BacklogState {
                queue: VecDeque::new(),
                in_transit: false,
                notice: NoticeTargets::default(),
                dropped: 0,
                recent: Recent::new(),
                connected_at: None,
            }),
            wake: Notify::new(),
            capacity,
            metrics,
        }))
    }

    /// The NATS client's event callback (`ConnectOptions::event_callback`): a disconnect adds
    /// the recent publishes to the notice, a connection wakes the drain task.
    pub fn on_nats_event(
        &self,
    ) -> impl Fn(async_nats::Event) -> std::future::Ready<()> + Send + Sync + 'static {
        let backlog = self.clone();
        move |event| {
            match event {
                async_nats::Event::Disconnected => backlog.disconnected(Instant::now()),
                async_nats::Event::Connected => {
                    backlog.lock().connected_at = Some(Instant::now());
                    backlog.0.wake.notify_one();
                }
                _ => {}
            }
            std::future::ready(())
        }
    }

    fn disconnected(&self, now: Instant) {
        let mut state = self.lock();
        let BacklogState { recent, notice, .. } = &mut *state;
        recent.lost_at(now, notice);
        let pending = !notice.is_empty();
        drop(state);
        if pending {
            tracing::warn!(
                "NATS connection lost: events published just before may be lost; a resync notice follows the reconnection"
            );
            self.0.wake.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, BacklogState> {
        // Nothing panics while holding the lock; a poisoned lock still holds a usable state.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events buffered now.
    pub fn len(&self) -> usize {
        self.lock().buffered()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The one critical section of a publish: gives the event back when it may go to the client
    /// now (and records its target as in flight), or buffers or drops it.
    fn admit(&self, mut event: Pending, connected: bool) -> Option<Pending> {
        let metrics = &self.0.metrics;
        if !connected && !event.failed {
            event.failed = true;
            metrics
                .event_publish_failures
                .with_label_values(&[event.label])
                .inc();
        }
        let mut state = self.lock();
        if connected && state.buffered() == 0 {
            state.recent.record(Instant::now(), event.target.clone());
            return Some(event);
        }
        self.enqueue(state, event);
        None
    }

    /// Buffers `event` behind the others, or drops it when the buffer is full.
    fn enqueue(&self, mut state: MutexGuard<'_, BacklogState>, mut event: Pending) {
        let metrics = &self.0.metrics;
        if state.buffered() >= self.0.capacity {
            let first = state.dropped == 0;
            state.dropped += 1;
            state.notice.add(&event.remaining());
            drop(state);
            self.count_drop(&mut event, "overflow");
            if first {
                tracing::warn!(
                    capacity = self.0.capacity,
                    "event buffer full: dropping events; a resync notice follows"
                );
            }
            self.0.wake.notify_one();
            return;
        }
        let first = state.buffered() == 0;
        state.queue.push_back(event);
        metrics.event_buffer.set(state.buffered() as i64);
        drop(state);
        metrics.events_buffered.inc();
        if first {
            tracing::warn!("NATS unavailable: buffering events until it is back");
        }
        self.0.wake.notify_one();
    }

    /// Counts a dropped event (and its failure, once).
    fn count_drop(&self, event: &mut Pending, reason: &str) {
        let metrics = &self.0.metrics;
        metrics.events_dropped.with_label_values(&[reason]).inc();
        if !event.failed {
            event.failed = true;
            metrics
                .event_publish_failures
                .with_label_values(&[event.label])
                .inc();
        }
        tracing::debug!(
            event.r#type = event.label,
            reason,
            "event dropped; its clients get a resync"
        );
    }

    /// Drops `event`, too large for the server, and remembers its targets.
    fn drop_too_large(&self, mut event: Pending) {
        tracing::warn!(
            event.r#type = event.label,
            conversation.id = event.event.conversation_id,
            "event larger than the NATS server's max_payload"
        );
        self.count_drop(&mut event, "too_large");
        let mut state = self.lock();
        state.dropped += 1;
        state.notice.add(&event.remaining());
        drop(state);
        self.0.wake.notify_one();
    }
}

impl Publisher {
    pub fn new(
        nats: async_nats::Client,
        prefix: String,
        metrics: Metrics,
        backlog: Backlog,
    ) -> Self {
        Self {
            nats,
            prefix,
            metrics,
            backlog,
        }
    }

    /// The buffer (tests and `/metrics` read its size).
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    fn connected(&self) -> bool {
        self.nats.connection_state() == Connection::Connected
    }

    /// Builds and publishes one event, or buffers it (module docs). Never fails and never waits
    /// for NATS longer than [`PUBLISH_TIMEOUT`].
    pub async fn publish(
        &self,
        kind: pb::EventKind,
        audience: Audience,
        conversation: Uuid,
        actor: Uuid,
        body: pb::event::Body,
    ) {
        let audience = match audience {
            Audience::Users(users) if users.len() == 1 => Audience::User(users[0]),
            other => other,
        };
        let (subject, target_user_id, target) = match audience {
            Audience::Room => (
                subjects::conversation(&self.prefix, &conversation),
                None,
                Target::Conversation(conversation),
            ),
            Audience::User(user) => (
                subjects::user(&self.prefix, &user),
                Some(user.to_string()),
                Target::User(user),
            ),
            Audience::Users(users) if users.is_empty() => return,
            Audience::Users(users) => (
                subjects::users(&self.prefix, &conversation),
                None,
                Target::Users(users.into()),
            ),
        };
        let event = Pending {
            label: kind.client_type().unwrap_or("unknown"),
            subject,
            event: pb::Event {
                event_id: Uuid::now_v7().to_string(),
                kind: kind as i32,
                conversation_id: conversation.to_string(),
                actor_id: actor.to_string(),
                occurred_at_us: chrono::Utc::now().timestamp_micros(),
                target_user_id,
                target_user_ids: vec![],
                body: Some(body),
            },
            target,
            sent: 0,
            failed: false,
        };
        let Some(mut event) = self.backlog.admit(event, self.connected()) else {
            return;
        };
        match self.transmit(&mut event).await {
            Ok(()) => {}
            Err(Failure::TooLarge) => self.backlog.drop_too_large(event),
            Err(Failure::Later(reason)) => {
                tracing::debug!(
                    event.r#type = event.label,
                    reason,
                    "publish failed; buffering"
                );
                if !event.failed {
                    event.failed = true;
                    self.metrics
                        .event_publish_failures
                        .with_label_values(&[event.label])
                        .inc();
                }
                self.backlog.enqueue(self.backlog.lock(), event);
            }
        }
    }

    /// Hands `event` to the client: one message, or for several users as many as the server's
    /// `max_payload` requires, from the first target not yet published.
    async fn transmit(&self, event: &mut Pending) -> Result<(), Failure> {
        let max_payload = self.nats.max_payload();
        let Target::Users(users) = &event.target else {
            let payload = event.event.encode_to_vec();
            if payload.len() > max_payload {
                return Err(Failure::TooLarge);
            }
            return self.send(event.label, &event.subject, payload).await;
        };
        let users = users.clone();
        let per_message =
            targets_per_message(event.event.encoded_len(), max_payload).ok_or(Failure::TooLarge)?;
        while event.sent < users.len() {
            let end = users.len().min(event.sent + per_message);
            event.event.target_user_ids =
                users[event.sent..end].iter().map(Uuid::to_string).collect();
            let payload = event.event.encode_to_vec();
            event.event.target_user_ids = Vec::new();
            self.send(event.label, &event.subject, payload).await?;
            event.sent = end;
        }
        Ok(())
    }

    /// Publishes one encoded message on `subject`.
    async fn send(&self, label: &str, subject: &str, payload: Vec<u8>) -> Result<(), Failure> {
        let publish = self.nats.publish(subject.to_owned(), payload.into());
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(())) => {
                self.metrics
                    .events_published
                    .with_label_values(&[label])
                    .inc();
                Ok(())
            }
            Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Err(Failure::TooLarge)
            }
            Ok(Err(e)) => Err(Failure::Later(e.to_string())),
            Err(_) => Err(Failure::Later("publish timed out".into())),
        }
    }

    /// Waits until everything published so far has been written to the NATS server (used where
    /// an event must be out before the response, e.g. `participant.removed`: docs/websocket.md,
    /// "Live membership").
    /// Returns at once when events are buffered or NATS is not connected: they go out when it is
    /// back, and waiting for it would stall the request.
    pub async fn flush(&self) {
        if !self.connected() || !self.backlog.is_empty() {
            return;
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %shared_ops::Chain(&e), "nats flush failed"),
            Err(_) => tracing::warn!("nats flush timed out"),
        }
    }

    /// The drain task: publishes the buffer and the resync notice whenever NATS is connected,
    /// until `stop` is cancelled; then tries one last drain (at most [`SHUTDOWN_DRAIN`]) and
    /// counts what is left as dropped.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.backlog.0.wake.notified() => {}
                () = tokio::time::sleep(DRAIN_POLL) => {}
            }
            let settled_at = {
                let state = self.backlog.lock();
                let waiting = state.buffered() > 0;
                state
                    .connected_at
                    .map(|at| at + RECONNECT_SETTLE)
                    .filter(|settled| waiting && *settled > Instant::now())
            };
            if let Some(settled_at) = settled_at {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(settled_at.into()) => {}
                }
            }
            self.drain().await;
        }
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, self.drain()).await;
        let mut state = self.backlog.lock();
        let left: Vec<Pending> = state.queue.drain(..).collect();
        // The event the drain was publishing when its time ran out went with it.
        let stranded = std::mem::take(&mut state.in_transit);
        self.metrics.event_buffer.set(0);
        drop(state);
        if stranded {
            self.metrics
                .events_dropped
                .with_label_values(&["shutdown"])
                .inc();
        }
        if !left.is_empty() || stranded {
            tracing::warn!(
                events = left.len() + usize::from(stranded),
                "stopping with events NATS never received"
            );
        }
        for mut event in left {
            self.backlog.count_drop(&mut event, "shutdown");
        }
    }

    /// Publishes the buffer, oldest first, while the client is connected; once it is empty,
    /// publishes the resync notice if one is due.
    async fn drain(&self) {
        let mut published = 0u64;
        loop {
            if !self.connected() {
                return;
            }
            let mut event = {
                let mut state = self.backlog.lock();
                let Some(event) = state.queue.pop_front() else {
                    break;
                };
                state.in_transit = true;
                event
            };
            match self.transmit(&mut event).await {
                Ok(()) => {
                    published += 1;
                    let mut state = self.backlog.lock();
                    state.in_transit = false;
                    state.recent.record(Instant::now(), event.target);
                    self.metrics.event_buffer.set(state.buffered() as i64);
                }
                Err(Failure::TooLarge) => {
                    self.backlog.lock().in_transit = false;
                    self.backlog.drop_too_large(event);
                    let state = self.backlog.lock();
                    self.metrics.event_buffer.set(state.buffered() as i64);
                }
                Err(Failure::Later(reason)) => {
                    let mut state = self.backlog.lock();
                    state.queue.push_front(event);
                    state.in_transit = false;
                    drop(state);
                    tracing::debug!(reason, "publishing the buffer failed; trying again later");
                    return;
                }
            }
        }
        if published > 0 {
            tracing::info!(events = published, "published the buffered events");
        }
        self.publish_notice().await;
    }

    /// Publishes and flushes the resync notice when one is due and the buffer is empty; on
    /// failure its targets go back for the next attempt.
    async fn publish_notice(&self) {
        let (targets, dropped) = {
            let mut state = self.backlog.lock();
            if state.buffered() > 0 || state.notice.is_empty() {
                return;
            }
            (
                std::mem::take(&mut state.notice),
                std::mem::take(&mut state.dropped),
            )
        };
        let mut notice = pb::ResyncNotice {
            conversation_ids: targets.conversations.iter().map(Uuid::to_string).collect(),
            user_ids: targets.users.iter().map(Uuid::to_string).collect(),
            everyone: targets.everyone,
            reason: RESYNC_NOT_PUBLISHED.to_owned(),
        };
        if notice.encoded_len() + PAYLOAD_SLACK > self.nats.max_payload() {
            notice.conversation_ids.clear();
            notice.user_ids.clear();
            notice.everyone = true;
        }
        let subject = subjects::resync(&self.prefix);
        let sent = async {
            self.nats
                .publish(subject, notice.encode_to_vec().into())
                .await
                .map_err(|e| e.to_string())?;
            self.nats.flush().await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, sent).await {
            Ok(Ok(())) => {
                self.metrics.resync_notices_published.inc();
                tracing::warn!(
                    events.dropped = dropped,
                    conversations = notice.conversation_ids.len(),
                    users = notice.user_ids.len(),
                    everyone = notice.everyone,
                    "published a resync notice for events that may not have reached NATS"
                );
            }
            result => {
                let reason = match result {
                    Ok(Err(e)) => e,
                    _ => "timed out".to_owned(),
                };
                tracing::debug!(reason, "resync notice not published; trying again later");
                let mut state = self.backlog.lock();
                state.notice.merge(targets);
                state.dropped += dropped;
            }
        }
    }
}
