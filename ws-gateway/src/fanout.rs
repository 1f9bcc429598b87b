//! NATS subscriptions, reference-counted, and the delivery of each event to the local sockets
//! that should get it (websocket.md §5, §8, §9; architecture.md "Events and subjects").
//!
//! # What this gateway holds ([`State`], one mutex, never held across an `.await`)
//!
//! - per local **user** (at least one socket here): their sockets, their **live** conversations
//!   (one set per user, shared by all their sockets) and their typing token buckets;
//! - per **conversation** with at least one local member: the local members, the subscription to
//!   `<prefix>.conv.<id>` — one per conversation however many local users — and, when the
//!   conversation propagates presence (≤ `PRESENCE_MAX_MEMBERS` active participants, or direct),
//!   all its active participants;
//! - the presence index: user → small conversations known here that contain them; the audience
//!   of `presence.*` events.
//!
//! A conversation subscription is a task that owns its `async_nats::Subscriber` and handles its
//! messages in order, so the events of one conversation are delivered in the order NATS hands
//! them over. It is created when the first local user needs the subject and aborted (dropping
//! the subscriber sends `UNSUB`) when the last one goes.
//!
//! # Personal events: one wildcard subscription
//!
//! `<prefix>.user.<id>` is read through one subscription to `<prefix>.user.>` for the gateway's
//! whole life, filtered locally (events of users without a socket here are dropped before being
//! decoded), as presence is. The same subscription carries `<prefix>.user.many.<conversation_id>`:
//! one `conversation.joined` addressed to all the users a create or an add concerns
//! (`target_user_ids`), instead of one per user each carrying the whole conversation (quadratic
//! in the group size on NATS). It is decoded and rendered once, and every worker handles its own
//! local users among the targets; since one subscription reads both subject forms, a user's joins
//! and departures keep their order. A subscription per user cost ~9 KiB per socket (the
//! subscriber's channel block alone is 32 × `async_nats::Message`, ~6 KiB, plus its task) — more
//! than the whole per-socket budget — and a `SUB`, a flush and an `UNSUB` per connect and
//! disconnect, which dominated a reconnect storm. The price is that every gateway receives every
//! personal event of the fleet; those are membership changes (`conversation.joined` / `left`),
//! rare next to conversation traffic. Events are handed to [`PERSONAL_WORKERS`] tasks by user, so each user's
//! events stay in order while a worker waiting for a new conversation's subscription (on
//! `conversation.joined`) holds up only its share of the users.
//!
//! # Delivery
//!
//! Each event is decoded and rendered to its client JSON **once**
//! ([`shared_proto::json::client_frame`]); the same [`Utf8Bytes`] (a reference-counted buffer)
//! is then queued for every recipient socket ([`Outbox`]). A full queue never drops silently:
//! the socket is asked to close with 1013 (websocket.md §7).
//!
//! # Live membership (§8)
//!
//! - `conversation.joined` on the user's subject, or a `participant.added` listing a local user,
//!   makes the user a member (subscribing if needed; the subscription is confirmed with a round
//!   trip to the NATS server before the `conversation.joined` frame is queued, so a client that
//!   has seen it receives what is published afterwards);
//! - `participant.removed` for a local user (after it is delivered to the room) or
//!   `conversation.left` ends the membership: since a conversation's events are handled in order
//!   by one task, nothing published after the removal reaches the user, and their typing frames
//!   for it are ignored from then on.
//!
//! Membership changes also make presence peers (§9): the pairs that are new are worked out here,
//! under the lock, and handed to [`crate::peers`], which asks Redis who of them is online.
//!
//! # Resync (§10)
//!
//! `<prefix>.resync` is read like presence, once per gateway: the api-service's notices of
//! events it could not publish. They, and this gateway's own NATS reconnections, become rounds
//! of `resync` frames for the sockets concerned ([`crate::resync`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use shared_proto::{
    events::{Event, EventKind, ResyncNotice, event::Body},
    prost::Message as _,
    subjects,
};
use tokio::sync::{Notify, OnceCell, mpsc, watch};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::{Utf8Bytes, protocol::frame::coding::CloseCode};
use uuid::Uuid;

use crate::{
    metrics::Metrics,
    peers::{NewPeers, PeerWork},
    protocol::{Ignored, TokenBucket, close},
    resync::{Audience, Spreader},
};

/// How long a new socket or membership waits for its subscriptions to be confirmed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Tasks handling personal events (module docs); a user's events always go to the same one.
const PERSONAL_WORKERS: usize = 8;
/// Personal events waiting for one worker before the wildcard subscription waits for it.
const PERSONAL_BACKLOG: usize = 1024;
/// A send queue drained after a burst gives its buffer back when it holds more slots than this.
const KEPT_QUEUE_SLOTS: usize = 16;

/// Identifies one socket of this gateway.
pub type SocketId = u64;

/// What the registry and one connection task share: the socket's send queue and the gateway's
/// close requests (send-queue overflow, drain).
///
/// One `Arc` is held by the registry (inside the socket's handle; the drain reaches it through
/// [`Fanout::outboxes`]), the other by the connection task, which waits on [`Outbox::next`].
/// The queue is a plain deque rather than a channel: it allocates nothing until the first event
/// and gives its buffer back once drained after a burst, so an idle socket holds no queue memory
/// (a bounded tokio channel allocates a 32-slot block and a 512-byte header up front).
pub struct Outbox {
    /// Events not written yet, oldest first; at most `capacity` (`WS_SEND_QUEUE`).
    events: Mutex<VecDeque<Utf8Bytes>>,
    capacity: usize,
    /// The close code requested first; 0 while none is.
    close_code: AtomicU16,
    /// Wakes the connection task after an event was queued or a close requested.
    wake: Notify,
}

/// The send queue is full: the socket is asked to close with 1013.
#[derive(Debug)]
pub struct QueueFull;

impl Outbox {
    /// An empty outbox for at most `capacity` queued events.
    pub fn new(capacity: usize) -> Self {
        Self {
            events: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            close_code: AtomicU16::new(0),
            wake: Notify::new(),
        }
    }

    fn events(&self) -> MutexGuard<'_, VecDeque<Utf8Bytes>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame` for the socket, unless the queue is full.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), QueueFull> {
        {
            let mut events = self.events();
            if events.len() >= self.capacity {
                return Err(QueueFull);
            }
            events.push_back(frame);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The oldest queued event, if any.
    pub fn pop(&self) -> Option<Utf8Bytes> {
        let mut events = self.events();
        let frame = events.pop_front();
        if events.is_empty() && events.capacity() > KEPT_QUEUE_SLOTS {
            *events = VecDeque::new();
        }
        frame
    }

    /// Moves queued events, oldest first, into `into` until it holds `max_events` or the events
    /// moved reach `max_bytes` (at least one is moved when any is queued): what one frame carries.
    pub fn pop_batch(&self, into: &mut Vec<Utf8Bytes>, max_events: usize, max_bytes: usize) {
        let mut events = self.events();
        let mut bytes = 0;
        while into.len() < max_events && bytes < max_bytes {
            let Some(frame) = events.pop_front() else {
                break;
            };
            bytes += frame.len();
            into.push(frame);
        }
        if events.is_empty() && events.capacity() > KEPT_QUEUE_SLOTS {
            *events = VecDeque::new();
        }
    }

    /// The next queued event, waiting for one; `None` once a close has been requested.
    pub async fn next(&self) -> Option<Utf8Bytes> {
        loop {
            if self.requested().is_some() {
                return None;
            }
            if let Some(frame) = self.pop() {
                return Some(frame);
            }
            // `notify_one` keeps a permit when nobody waits, so a push between `pop` and here
            // is not missed.
            self.wake.notified().await;
        }
    }

    /// Asks the connection to close with `code`; returns whether this was the first request.
    pub fn request_close(&self, code: CloseCode) -> bool {
        let first = self
            .close_code
            .compare_exchange(0, code.into(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.wake.notify_one();
        }
        first
    }

    /// The close code requested so far, if any.
    pub fn requested(&self) -> Option<CloseCode> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(CloseCode::from(code)),
        }
    }
}

/// Where a subscription stands: readiness is shared by everyone who needs the subject, so a
/// socket or join that finds a subscription another one created still waits until the NATS
/// server has it (websocket.md §3: subscribed before the snapshot; §8: before
/// `conversation.joined` is delivered).
#[derive(Clone)]
pub struct Readiness(Arc<watch::Sender<u8>>);

impl Readiness {
    /// The subscribe call has not returned yet.
    const PENDING: u8 = 0;
    /// `SUB` is on its way to the server; a round trip confirms it.
    const SUBSCRIBED: u8 = 1;
    /// A round trip after `SUB` completed: the server delivers everything published from then
    /// on.
    const CONFIRMED: u8 = 2;
    /// The subscribe call failed: nothing to wait for.
    const FAILED: u8 = 3;

    fn new() -> Self {
        Self(Arc::new(watch::channel(Self::PENDING).0))
    }

    fn set(&self, state: u8) {
        self.0.send_replace(state);
    }

    fn is_confirmed(&self) -> bool {
        matches!(*self.0.borrow(), Self::CONFIRMED | Self::FAILED)
    }

    fn is_subscribed(&self) -> bool {
        *self.0.borrow() == Self::SUBSCRIBED
    }

    /// This, unless nobody needs to wait for it any more.
    fn if_unconfirmed(&self) -> Option<Self> {
        (!self.is_confirmed()).then(|| self.clone())
    }

    /// Resolves once the subscribe call has returned (or failed).
    async fn subscribed(&self) {
        let mut state = self.0.subscribe();
        let _ = state.wait_for(|s| *s != Self::PENDING).await;
    }

    /// Marks a subscribed subscription confirmed (after a round trip that followed its `SUB`).
    fn confirm(&self) {
        self.0.send_if_modified(|s| {
            let subscribed = *s == Self::SUBSCRIBED;
            if subscribed {
                *s = Self::CONFIRMED;
            }
            subscribed
        });
    }
}

/// What the registry keeps of one socket.
struct SocketHandle {
    id: SocketId,
    /// The socket's send queue and close requests, shared with the connection task; see
    /// [`Outbox`].
    outbox: Arc<Outbox>,
    /// Counted in the Redis presence store (after setup's presence step).
    present: bool,
    /// Still between registration and [`Fanout::add_conversations`]: its conversation list is
    /// being loaded from PostgreSQL and may predate removals processed meanwhile.
    loading: bool,
}

/// A user with at least one socket on this gateway.
struct LocalUser {
    sockets: Vec<SocketHandle>,
    /// Conversations the user is currently an active participant of (live membership).
    conversations: HashSet<Uuid>,
    /// Typing rate limit per conversation (websocket.md §6 rule 7); full buckets are forgotten.
    typing: HashMap<Uuid, TokenBucket>,
    /// Conversations the user left while one of their sockets was loading its list (websocket.md
    /// §8): that list may still name them, and must not re-subscribe the user. Cleared once no
    /// socket of the user is loading.
    left_while_loading: HashSet<Uuid>,
}

impl LocalUser {
    fn loading(&self) -> bool {
        self.sockets.iter().any(|s| s.loading)
    }
}

/// A conversation with at least one local member.
struct LocalConversation {
    /// Local users who are active participants.
    local_members: Vec<Uuid>,
    /// Every active participant, when the conversation propagates presence; `None` when larger
    /// than `PRESENCE_MAX_MEMBERS` (direct conversations always propagate).
    presence_members: Option<Vec<Uuid>>,
    direct: bool,
    /// The task reading `<prefix>.conv.<id>`; aborting it unsubscribes.
    subscription: AbortHandle,
    /// Whether that subscription is confirmed; the task holds a clone to report it.
    ready: Readiness,
}

#[derive(Default)]
struct State {
    users: HashMap<Uuid, LocalUser>,
    conversations: HashMap<Uuid, LocalConversation>,
    /// user → small conversations known here that contain them.
    presence_index: HashMap<Uuid, Vec<Uuid>>,
    /// The task reading `<prefix>.presence.*`.
    presence_subscription: Option<AbortHandle>,
    /// The task reading `<prefix>.user.>` and handing events to the personal workers; aborting
    /// it drops the workers' senders, which ends them.
    personal_subscription: Option<AbortHandle>,
    /// The task reading `<prefix>.resync` (the api-service's notices, [`crate::resync`]).
    resync_subscription: Option<AbortHandle>,
}

/// A conversation of a user as loaded at connect (or learnt from `conversation.joined`).
#[derive(Debug, Clone)]
pub struct LoadedConversation {
    pub id: Uuid,
    pub direct: bool,
    /// All active participants when the conversation propagates presence.
    pub presence_members: Option<Vec<Uuid>>,
}

/// A new socket's place in the registry.
pub struct Registration {
    pub socket: SocketId,
    /// The socket's send queue and close requests; the registry holds the other `Arc`.
    pub outbox: Arc<Outbox>,
}

/// Which subject a subscription task reads.
#[derive(Debug, Clone, Copy)]
enum Target {
    Conversation(Uuid),
    User(Uuid),
    Presence,
    Resync,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::Conversation(_) => "conversation",
            Self::User(_) => "user",
            Self::Presence => "presence",
            Self::Resync => "resync",
        }
    }
}

/// The registry of local sockets and the NATS subscriptions feeding them.
pub struct Fanout {
    state: Mutex<State>,
    nats: async_nats::Client,
    /// Where the subscription tasks run ([`crate::intake`]).
    intake: crate::intake::Intake,
    prefix: String,
    metrics: Arc<Metrics>,
    presence_max_members: usize,
    typing_rate_per_sec: f64,
    typing_burst: u32,
    next_socket: AtomicU64,
    /// Spreads `resync` rounds over the window ([`crate::resync`]).
    resync: Spreader,
    /// Pairs of users who became presence peers, and conversations that may have become small
    /// enough to propagate presence, for the peers task ([`crate::peers::run`]), which holds the
    /// receiver (taken once with [`Fanout::take_peer_work`]); without it they are dropped.
    peer_work: mpsc::UnboundedSender<PeerWork>,
    peer_work_receiver: Mutex<Option<mpsc::UnboundedReceiver<PeerWork>>>,
}

impl Fanout {
    /// A fan-out with nothing subscribed yet ([`Fanout::start`] subscribes). Must be called on
    /// the main runtime, where `resync` rounds run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        nats: async_nats::Client,
        intake: crate::intake::Intake,
        prefix: String,
        metrics: Arc<Metrics>,
        presence_max_members: usize,
        typing_rate_per_sec: f64,
        typing_burst: u32,
        resync_window: Duration,
    ) -> Arc<Self> {
        let (peer_work, peer_work_receiver) = mpsc::unbounded_channel();
        Arc::new(Self {
            resync: Spreader::new(resync_window),
            peer_work,
            peer_work_receiver: Mutex::new(Some(peer_work_receiver)),
            state: Mutex::new(State::default()),
            nats,
            intake,
            prefix,
            metrics,
            presence_max_members,
            typing_rate_per_sec,
            typing_burst,
            next_socket: AtomicU64::new(1),
        })
    }

    /// Ends the NATS intake ([`crate::intake`]): the subscriptions and the NATS connection's
    /// task stop, and with them the references they hold to this fan-out. For the end of a
    /// gateway's life, after its drain.
    pub fn stop_intake(&self) {
        self.intake.stop();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping delivery for everyone would.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to `<prefix>.presence.*` and `<prefix>.user.>` (once per gateway, for its
    /// whole life) and waits until the NATS server has both subscriptions. Before this, no
    /// personal or presence event reaches a socket.
    pub async fn start(self: &Arc<Self>) {
        let (presence, presence_ready) =
            self.spawn_subscription(subjects::all_presence(&self.prefix), Target::Presence);
        let (personal, personal_ready) = self.spawn_personal();
        let (resync, resync_ready) =
            self.spawn_subscription(subjects::resync(&self.prefix), Target::Resync);
        {
            let mut state = self.lock();
            state.presence_subscription = Some(presence);
            state.personal_subscription = Some(personal);
            state.resync_subscription = Some(resync);
        }
        self.settle(vec![presence_ready, personal_ready, resync_ready])
            .await;
    }

    /// The receiving end of the work for the peers task; `None` after the first call.
    pub fn take_peer_work(&self) -> Option<mpsc::UnboundedReceiver<PeerWork>> {
        self.peer_work_receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// After the NATS connection came back: once a round trip has confirmed that the server has
    /// the client's subscriptions again, every socket open now gets `resync`, spread over the
    /// window ([`crate::resync`]).
    pub async fn resync_after_reconnect(self: &Arc<Self>) {
        if !matches!(
            tokio::time::timeout(SETTLE_TIMEOUT, self.round_trip()).await,
            Ok(true)
        ) {
            tracing::warn!("NATS round trip after reconnecting failed; sending resync anyway");
        }
        let outboxes = self.outboxes_of(&Audience::Everyone);
        self.resync.start_round(
            self,
            outboxes,
            shared_proto::json::RESYNC_STREAM_INTERRUPTED,
        );
    }

    /// The outboxes of the sockets `audience` names, each once.
    fn outboxes_of(&self, audience: &Audience) -> Vec<Arc<Outbox>> {
        let state = self.lock();
        let mut users: HashSet<Uuid> = HashSet::new();
        match audience {
            Audience::Everyone => users.extend(state.users.keys().copied()),
            Audience::Some {
                conversations,
                users: listed,
            } => {
                for conversation in conversations {
                    if let Some(entry) = state.conversations.get(conversation) {
                        users.extend(entry.local_members.iter().copied());
                    }
                }
                users.extend(listed.iter().filter(|u| state.users.contains_key(u)));
            }
        }
        users
            .iter()
            .filter_map(|user| state.users.get(user))
            .flat_map(|local| local.sockets.iter().map(|s| Arc::clone(&s.outbox)))
            .collect()
    }

    /// Queues one `resync` frame for a socket (a full queue closes it with 1013, as for any
    /// event).
    pub(crate) fn push_resync(&self, outbox: &Outbox, frame: &Utf8Bytes, reason: &str) {
        self.metrics.resyncs.with_label_values(&[reason]).inc();
        self.push_or_close(outbox, frame);
    }

    /// Queues `frame` for one socket; a full queue asks it to close with 1013 (websocket.md §7:
    /// events are never silently dropped for an open socket).
    fn push_or_close(&self, outbox: &Outbox, frame: &Utf8Bytes) {
        if outbox.push(frame.clone()).is_err() && outbox.request_close(close::TRY_AGAIN) {
            self.metrics.queue_overflows.inc();
            tracing::warn!("send queue full; closing with 1013");
        }
    }

    /// A notice of the api-service on `<prefix>.resync`: a round for the sockets it concerns.
    fn on_resync_notice(self: &Arc<Self>, payload: Bytes) {
        let notice = match ResyncNotice::decode(payload) {
            Ok(notice) => notice,
            Err(error) => {
                self.metrics.events_invalid.inc();
                tracing::warn!(error = %error, "undecodable resync notice dropped");
                return;
            }
        };
        let reason = if notice.reason.is_empty() {
            shared_proto::json::RESYNC_NOT_PUBLISHED
        } else {
            notice.reason.as_str()
        };
        let outboxes = self.outboxes_of(&Audience::of_notice(&notice));
        self.resync.start_round(self, outboxes, reason);
    }

    /// Registers a new socket of `user` with a send queue of `queue_size` events.
    pub fn register(self: &Arc<Self>, user: Uuid, queue_size: usize) -> Registration {
        let socket = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(queue_size));
        let mut state = self.lock();
        let local = state.users.entry(user).or_insert_with(|| LocalUser {
            sockets: Vec::with_capacity(1),
            conversations: HashSet::new(),
            typing: HashMap::new(),
            left_while_loading: HashSet::new(),
        });
        local.sockets.push(SocketHandle {
            id: socket,
            outbox: Arc::clone(&outbox),
            present: false,
            loading: true,
        });
        Registration { socket, outbox }
    }

    /// Makes `user` a member of `conversations` (subscribing where needed). Returns the
    /// subscriptions not confirmed yet — new or created by another socket — to wait for with
    /// [`settle`](Self::settle).
    ///
    /// `conversations` was loaded for `socket`; conversations the user left while it was being
    /// loaded are skipped, so a removal is never undone by a stale list.
    pub fn add_conversations(
        self: &Arc<Self>,
        user: Uuid,
        socket: SocketId,
        conversations: Vec<LoadedConversation>,
    ) -> Vec<Readiness> {
        let mut state = self.lock();
        let Some(local) = state.users.get_mut(&user) else {
            return Vec::new();
        };
        let left = std::mem::take(&mut local.left_while_loading);
        if let Some(handle) = local.sockets.iter_mut().find(|s| s.id == socket) {
            handle.loading = false;
        }
        if local.loading() {
            // Another socket's list may be as stale: keep the record for it.
            local.left_while_loading.clone_from(&left);
        }
        conversations
            .into_iter()
            .filter(|conversation| !left.contains(&conversation.id))
            .filter_map(|conversation| self.join_locked(&mut state, user, conversation))
            .collect()
    }

    /// Waits (bounded) until the given subscriptions exist, then makes a round trip to the NATS
    /// server so it has processed them: what is published afterwards reaches this gateway.
    pub async fn settle(&self, readies: Vec<Readiness>) {
        if readies.is_empty() {
            return;
        }
        let subscribed = futures_util::future::join_all(readies.iter().map(Readiness::subscribed));
        let _ = tokio::time::timeout(SETTLE_TIMEOUT, subscribed).await;
        // Only a `SUB` sent before the round trip is confirmed by it.
        let sent: Vec<_> = readies.iter().filter(|r| r.is_subscribed()).collect();
        if !matches!(
            tokio::time::timeout(SETTLE_TIMEOUT, self.round_trip()).await,
            Ok(true)
        ) {
            tracing::warn!("NATS round trip failed; new subscriptions may miss early events");
            return;
        }
        for ready in sent {
            ready.confirm();
        }
    }

    /// A round trip to the NATS server; `true` once the server has answered, so it has processed
    /// everything this client sent before.
    ///
    /// `async_nats::Client::flush` is not one: it only writes the client's buffer to the socket.
    /// Confirming with it let a publish from another connection, processed by the server before
    /// it read the `SUB`, miss the new subscription (a test publishing right after `settle` lost
    /// its event about one run in six). A request to a fresh inbox, where nobody listens, comes
    /// back from the server at once as "no responders".
    async fn round_trip(&self) -> bool {
        match self.nats.request(self.nats.new_inbox(), Bytes::new()).await {
            Ok(_) => true,
            Err(error) => error.kind() == async_nats::client::RequestErrorKind::NoResponders,
        }
    }

    /// Removes a closed socket; the user's last socket here takes their subscriptions with it.
    pub fn unregister(&self, user: Uuid, socket: SocketId) {
        let mut state = self.lock();
        let Some(local) = state.users.get_mut(&user) else {
            return;
        };
        local.sockets.retain(|s| s.id != socket);
        if !local.loading() {
            local.left_while_loading.clear();
        }
        if !local.sockets.is_empty() {
            return;
        }
        let Some(local) = state.users.remove(&user) else {
            return;
        };
        for conversation in local.conversations {
            self.remove_local_member(&mut state, conversation, user);
        }
    }

    /// Rule 5 of websocket.md §6: `user` is a live member of `conversation` here.
    pub fn typing_member(&self, user: Uuid, conversation: Uuid) -> Result<(), Ignored> {
        let state = self.lock();
        match state.users.get(&user) {
            Some(local) if local.conversations.contains(&conversation) => Ok(()),
            _ => Err(Ignored::NotMember),
        }
    }

    /// Rule 7 on this gateway alone: the fallback used while Redis (which holds the fleet-wide
    /// bucket) does not answer. Takes a token of the local (user, conversation) bucket.
    pub fn typing_local_bucket(&self, user: Uuid, conversation: Uuid) -> Result<(), Ignored> {
        let mut state = self.lock();
        let local = state.users.get_mut(&user).ok_or(Ignored::NotMember)?;
        let (rate, burst) = (self.typing_rate_per_sec, self.typing_burst);
        if local.typing.len() >= 16 {
            local
                .typing
                .retain(|_, bucket| !bucket.is_full(rate, burst));
        }
        let bucket = local
            .typing
            .entry(conversation)
            .or_insert_with(|| TokenBucket::full(burst));
        if bucket.try_take(rate, burst) {
            Ok(())
        } else {
            Err(Ignored::RateLimited)
        }
    }

    /// The outbox of every socket (for the drain's close requests).
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        let state = self.lock();
        state
            .users
            .values()
            .flat_map(|u| u.sockets.iter().map(|s| Arc::clone(&s.outbox)))
            .collect()
    }

    /// Whether `user` has a socket here.
    fn is_local(&self, user: &Uuid) -> bool {
        self.lock().users.contains_key(user)
    }

    /// Records that `socket` is now counted in the presence store.
    pub fn mark_present(&self, user: Uuid, socket: SocketId) {
        let mut state = self.lock();
        if let Some(handle) = state
            .users
            .get_mut(&user)
            .and_then(|local| local.sockets.iter_mut().find(|s| s.id == socket))
        {
            handle.present = true;
        }
    }

    /// How many sockets counted in the presence store each local user has here (presence
    /// re-registration).
    pub fn local_socket_counts(&self) -> Vec<(Uuid, usize)> {
        let state = self.lock();
        state
            .users
            .iter()
            .map(|(user, local)| (*user, local.sockets.iter().filter(|s| s.present).count()))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Spawns the task that subscribes to `subject` and handles its messages in order.
    fn spawn_subscription(
        self: &Arc<Self>,
        subject: String,
        target: Target,
    ) -> (AbortHandle, Readiness) {
        let ready = Readiness::new();
        let task_ready = ready.clone();
        let fanout = Arc::clone(self);
        self.metrics
            .nats_subscriptions
            .with_label_values(&[target.label()])
            .inc();
        let task = self.intake.handle().spawn(async move {
            let Some(mut subscriber) = subscribe(&fanout.nats, subject, &task_ready).await else {
                return;
            };
            while let Some(message) = subscriber.next().await {
                fanout
                    .handle(target, &message.subject, message.payload)
                    .await;
            }
        });
        (task.abort_handle(), ready)
    }

    /// Spawns the `<prefix>.user.>` subscription and the [`PERSONAL_WORKERS`] tasks it feeds
    /// (module docs): events of users without a socket here are dropped undecoded, the others go
    /// to the worker of their user, which handles them in order. An event addressed to several
    /// users goes to every worker ([`Fanout::handle_many`]).
    ///
    /// The subscription reads on the intake thread ([`crate::intake`]); the workers run on the
    /// caller's runtime (the main one). A `conversation.joined` carries its whole participant
    /// list, so creating a group of 1,000 puts 1,000 events of ~130 KB each on this subject.
    /// Decoded and rendered on the intake thread, they held up the NATS connection's own task
    /// there, and the round trips that confirm new subscriptions timed out (sixteen in one
    /// 10 × 1,000 setup), after which a group's first messages may be missed.
    fn spawn_personal(self: &Arc<Self>) -> (AbortHandle, Readiness) {
        let ready = Readiness::new();
        let task_ready = ready.clone();
        let fanout = Arc::clone(self);
        self.metrics
            .nats_subscriptions
            .with_label_values(&["user"])
            .inc();
        // Each worker ends when the subscription task (holding every sender) ends or is aborted.
        let workers: Vec<mpsc::Sender<Personal>> = (0..PERSONAL_WORKERS)
            .map(|worker| {
                let (tx, mut rx) = mpsc::channel::<Personal>(PERSONAL_BACKLOG);
                let fanout = Arc::clone(&fanout);
                tokio::spawn(async move {
                    while let Some(personal) = rx.recv().await {
                        match personal {
                            Personal::One(user, message) => {
                                fanout
                                    .handle(Target::User(user), &message.subject, message.payload)
                                    .await
                            }
                            Personal::Many(many) => fanout.handle_many(worker, &many).await,
                        }
                    }
                });
                tx
            })
            .collect();
        let task = self.intake.handle().spawn(async move {
            let subject = subjects::all_users(&fanout.prefix);
            let Some(mut subscriber) = subscribe(&fanout.nats, subject, &task_ready).await else {
                return;
            };
            while let Some(message) = subscriber.next().await {
                match subjects::parse(&fanout.prefix, &message.subject) {
                    Some(subjects::Subject::User(user)) => {
                        if !fanout.is_local(&user) {
                            continue;
                        }
                        let worker = &workers[personal_worker(&user)];
                        if worker.send(Personal::One(user, message)).await.is_err() {
                            return;
                        }
                    }
                    Some(subjects::Subject::Users(_)) => {
                        let many = Arc::new(ManyEvent {
                            message,
                            decoded: OnceCell::new(),
                        });
                        for worker in &workers {
                            if worker
                                .send(Personal::Many(Arc::clone(&many)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        (task.abort_handle(), ready)
    }

    /// Joins `user` to a conversation under the lock; returns the readiness of its
    /// subscription while that is not confirmed (new, or still settling for someone else).
    fn join_locked(
        self: &Arc<Self>,
        state: &mut State,
        user: Uuid,
        conversation: LoadedConversation,
    ) -> Option<Readiness> {
        let State {
            users,
            conversations,
            presence_index,
            ..
        } = state;
        let local = users.get_mut(&user)?;
        // Joined again: an earlier departure no longer says anything about this conversation.
        local.left_while_loading.remove(&conversation.id);
        let newly_member = local.conversations.insert(conversation.id);
        let entry = conversations.entry(conversation.id).or_insert_with(|| {
            let (subscription, ready) = self.spawn_subscription(
                subjects::conversation(&self.prefix, &conversation.id),
                Target::Conversation(conversation.id),
            );
            LocalConversation {
                local_members: Vec::with_capacity(1),
                presence_members: None,
                direct: conversation.direct,
                subscription,
                ready,
            }
        });
        let ready = entry.ready.if_unconfirmed();
        if newly_member && !entry.local_members.contains(&user) {
            entry.local_members.push(user);
        }
        entry.direct = conversation.direct;
        // The loaded list is fresher than what events taught us: replace it.
        set_presence_members(
            presence_index,
            conversation.id,
            entry,
            conversation.presence_members,
        );
        ready
    }

    /// Ends `user`'s local membership of `conversation`, dropping the conversation (and its
    /// subscription) when no local member is left.
    fn remove_local_member(&self, state: &mut State, conversation: Uuid, user: Uuid) {
        let Some(entry) = state.conversations.get_mut(&conversation) else {
            return;
        };
        entry.local_members.retain(|m| *m != user);
        if !entry.local_members.is_empty() {
            return;
        }
        if let Some(mut entry) = state.conversations.remove(&conversation) {
            entry.subscription.abort();
            self.metrics
                .nats_subscriptions
                .with_label_values(&["conversation"])
                .dec();
            set_presence_members(&mut state.presence_index, conversation, &mut entry, None);
        }
    }

    /// `user` left `conversation` (participant.removed / conversation.left).
    fn leave_locked(&self, state: &mut State, user: Uuid, conversation: Uuid) {
        if let Some(local) = state.users.get_mut(&user) {
            local.conversations.remove(&conversation);
            local.typing.remove(&conversation);
            if local.loading() {
                local.left_while_loading.insert(conversation);
            }
        }
        self.remove_local_member(state, conversation, user);
    }

    /// Handles one NATS message of a subscription.
    async fn handle(self: &Arc<Self>, target: Target, subject: &str, payload: Bytes) {
        self.metrics
            .events_in
            .with_label_values(&[target.label()])
            .inc();
        // Not an event: a notice for this gateway itself.
        if let Target::Resync = target {
            self.on_resync_notice(payload);
            return;
        }
        // Every gateway receives every presence change of the fleet; most concern users no local
        // socket shares a small conversation with. Those are dropped before being decoded and
        // rendered (in a reconnect storm of 15,000 users, 30,000 of them).
        if let Target::Presence = target {
            let audience = match subjects::parse(&self.prefix, subject) {
                Some(subjects::Subject::Presence(user)) => {
                    self.lock().presence_index.contains_key(&user)
                }
                _ => false,
            };
            if !audience {
                return;
            }
        }
        let Some(Decoded { event, kind, frame }) = self.decode(subject, payload) else {
            return;
        };
        match target {
            Target::Conversation(conversation) => {
                self.deliver_to_room(conversation, kind, &event, &frame)
            }
            Target::User(user) => self.deliver_personal(&[user], kind, &event, &frame).await,
            Target::Resync => {}
            Target::Presence => {
                if let Some(subjects::Subject::Presence(user)) =
                    subjects::parse(&self.prefix, subject)
                {
                    self.deliver_presence(user, &frame);
                }
            }
        }
    }

    /// Decodes an event, records its NATS leg and renders its client frame, once for all its
    /// recipients; `None` (counted and logged) when it is not a valid event.
    fn decode(&self, subject: &str, payload: Bytes) -> Option<Decoded> {
        let event = match Event::decode(payload) {
            Ok(event) => event,
            Err(error) => {
                self.metrics.events_invalid.inc();
                tracing::warn!(error = %error, nats.subject = subject, "undecodable event dropped");
                return None;
            }
        };
        if event.occurred_at_us > 0 {
            let lag_us = crate::publish::now_us().saturating_sub(event.occurred_at_us).max(0);
            self.metrics.event_lag.observe(lag_us as f64 / 1e6);
        }
        let frame = match shared_proto::json::client_frame(&event)
            .map_err(|e| e.to_string())
            .and_then(|json| Utf8Bytes::try_from(json).map_err(|e| e.to_string()))
        {
            Ok(frame) => frame,
            Err(error) => {
                self.metrics.events_invalid.inc();
                tracing::warn!(
                    error = %error,
                    event.id = %event.event_id,
                    event.kind = event.kind,
                    "unrenderable event dropped"
                );
                return None;
            }
        };
        let kind = EventKind::try_from(event.kind).unwrap_or(EventKind::Unspecified);
        Some(Decoded { event, kind, frame })
    }

    /// A personal event addressed to several users, in the queue of personal worker `worker`:
    /// the first worker to reach it decodes and renders it and sorts its targets by worker, for
    /// all of them (it has a place in every worker's queue, so that every user's events stay in
    /// order); then each worker handles the local users among its own targets.
    async fn handle_many(self: &Arc<Self>, worker: usize, many: &ManyEvent) {
        let decoded = many
            .decoded
            .get_or_init(|| async {
                self.metrics.events_in.with_label_values(&["user"]).inc();
                let decoded = self.decode(&many.message.subject, many.message.payload.clone())?;
                let mut by_worker = vec![Vec::new(); PERSONAL_WORKERS];
                for user in decoded
                    .event
                    .target_user_ids
                    .iter()
                    .filter_map(|id| Uuid::parse_str(id).ok())
                {
                    by_worker[personal_worker(&user)].push(user);
                }
                Some((decoded, by_worker))
            })
            .await;
        let Some((Decoded { event, kind, frame }, by_worker)) = decoded else {
            return;
        };
        let users: Vec<Uuid> = {
            let state = self.lock();
            by_worker[worker]
                .iter()
                .copied()
                .filter(|user| state.users.contains_key(user))
                .collect()
        };
        if !users.is_empty() {
            self.deliver_personal(&users, *kind, event, frame).await;
        }
    }

    /// A conversation event: membership changes it carries, then the room (minus the typist for
    /// typing events).
    fn deliver_to_room(
        self: &Arc<Self>,
        conversation: Uuid,
        kind: EventKind,
        event: &Event,
        frame: &Utf8Bytes,
    ) {
        let mut state = self.lock();
        let mut met = Vec::new();
        if let Some(Body::ParticipantsAdded(added)) = &event.body {
            let added: Vec<Uuid> = added
                .participants
                .iter()
                .filter_map(|p| Uuid::parse_str(&p.user_id).ok())
                .collect();
            self.participants_added(&mut state, conversation, &added);
            // The members who were there before meet the added users; each added user meets
            // everyone on their own `conversation.joined`, which must reach them first.
            let existing: Vec<Uuid> = state
                .conversations
                .get(&conversation)
                .map(|entry| {
                    entry
                        .local_members
                        .iter()
                        .copied()
                        .filter(|member| !added.contains(member))
                        .collect()
                })
                .unwrap_or_default();
            met = new_peers_locked(&state, conversation, &existing, Some(&added));
        }
        let typist = match &event.body {
            Some(Body::Typing(typing)) => Uuid::parse_str(&typing.user_id).ok(),
            _ => None,
        };
        if let Some(entry) = state.conversations.get(&conversation) {
            for member in &entry.local_members {
                if Some(*member) == typist {
                    continue;
                }
                if let Some(local) = state.users.get(member) {
                    self.send_to_user(local, frame);
                }
            }
        }
        let removed = match &event.body {
            Some(Body::ParticipantRemoved(removed)) if kind == EventKind::ParticipantRemoved => {
                Uuid::parse_str(&removed.user_id).ok()
            }
            _ => None,
        };
        if let Some(user) = removed {
            if let Some(members) = state
                .conversations
                .get_mut(&conversation)
                .and_then(|entry| entry.presence_members.as_mut())
            {
                members.retain(|m| *m != user);
            }
            remove_from_index(&mut state.presence_index, user, conversation);
            self.leave_locked(&mut state, user, conversation);
            // A large conversation may have shrunk to `PRESENCE_MAX_MEMBERS`: only the database
            // knows its size now.
            if let Some(entry) = state.conversations.get(&conversation)
                && entry.presence_members.is_none()
                && !entry.direct
            {
                let _ = self.peer_work.send(PeerWork::Recount(conversation));
            }
        }
        if !met.is_empty() {
            let _ = self.peer_work.send(PeerWork::Met(met));
        }
    }

    /// A conversation that did not propagate presence has `members` now (all of them, at most
    /// `PRESENCE_MAX_MEMBERS`): it propagates presence from now on, and its local members meet
    /// those of them they did not share a small conversation with.
    pub fn conversation_recounted(&self, conversation: Uuid, members: Vec<Uuid>) -> Vec<NewPeers> {
        let mut state = self.lock();
        let State {
            conversations,
            presence_index,
            ..
        } = &mut *state;
        let Some(entry) = conversations.get_mut(&conversation) else {
            return Vec::new();
        };
        if entry.presence_members.is_some() || members.len() > self.presence_max_members {
            return Vec::new();
        }
        set_presence_members(presence_index, conversation, entry, Some(members));
        let locals = entry.local_members.clone();
        new_peers_locked(&state, conversation, &locals, None)
    }

    /// `presence.online` of `peer` to every socket of local `user` (a new peer who is online).
    pub fn send_presence_online(&self, user: Uuid, peer: Uuid, frame: &Utf8Bytes) {
        let state = self.lock();
        if let Some(local) = state.users.get(&user) {
            self.metrics
                .presence_ops
                .with_label_values(&["new_peer"])
                .inc();
            tracing::trace!(user.id = %user, peer.id = %peer, "new presence peer online");
            self.send_to_user(local, frame);
        }
    }

    /// `participant.added`: local users listed become members; the presence list grows (and is
    /// dropped once the conversation exceeds `PRESENCE_MAX_MEMBERS`).
    fn participants_added(&self, state: &mut State, conversation: Uuid, added: &[Uuid]) {
        let State {
            users,
            conversations,
            presence_index,
            ..
        } = state;
        let Some(entry) = conversations.get_mut(&conversation) else {
            return;
        };
        for user in added {
            let Some(local) = users.get_mut(user) else {
                continue;
            };
            if local.conversations.insert(conversation) && !entry.local_members.contains(user) {
                entry.local_members.push(*user);
            }
        }
        if let Some(members) = entry.presence_members.as_ref() {
            let mut grown = members.clone();
            for user in added {
                if !grown.contains(user) {
                    grown.push(*user);
                }
            }
            let small = entry.direct || grown.len() <= self.presence_max_members;
            set_presence_members(presence_index, conversation, entry, small.then_some(grown));
        }
    }

    /// A personal event for `users` (local, all of one worker): membership changes, then their
    /// sockets.
    async fn deliver_personal(
        self: &Arc<Self>,
        users: &[Uuid],
        kind: EventKind,
        event: &Event,
        frame: &Utf8Bytes,
    ) {
        let mut met = Vec::new();
        match &event.body {
            Some(Body::ConversationJoined(joined)) if kind == EventKind::ConversationJoined => {
                if let Some(conversation) = self.joined_conversation(joined) {
                    // Every user joins the one subscription of the conversation: one wait.
                    let mut ready = None;
                    {
                        let mut state = self.lock();
                        let id = conversation.id;
                        for user in users {
                            let settling =
                                self.join_locked(&mut state, *user, conversation.clone());
                            ready = ready.or(settling);
                        }
                        met = new_peers_locked(&state, id, users, None);
                    }
                    self.settle(ready.into_iter().collect()).await;
                }
            }
            Some(Body::ConversationLeft(left)) if kind == EventKind::ConversationLeft => {
                if let Ok(conversation) = Uuid::parse_str(&left.conversation_id) {
                    let mut state = self.lock();
                    for user in users {
                        self.leave_locked(&mut state, *user, conversation);
                    }
                }
            }
            _ => {}
        }
        let state = self.lock();
        for user in users {
            if let Some(local) = state.users.get(user) {
                self.send_to_user(local, frame);
            }
        }
        // After the `conversation.joined` frame: the peers task answers with `presence.online`.
        if !met.is_empty() {
            let _ = self.peer_work.send(PeerWork::Met(met));
        }
    }

    /// The conversation a `conversation.joined` describes, with its presence audience.
    fn joined_conversation(
        &self,
        joined: &shared_proto::events::ConversationJoined,
    ) -> Option<LoadedConversation> {
        let detail = joined.detail.as_ref()?;
        let conversation = detail.conversation.as_ref()?;
        let id = Uuid::parse_str(&conversation.id).ok()?;
        let direct = conversation.r#type == "direct";
        let mut members: Vec<Uuid> = detail
            .participants
            .iter()
            .filter_map(|p| Uuid::parse_str(&p.user_id).ok())
            .collect();
        members.sort_unstable();
        members.dedup();
        let small = direct || members.len() <= self.presence_max_members;
        Some(LoadedConversation {
            id,
            direct,
            presence_members: small.then_some(members),
        })
    }

    /// `presence.online` / `presence.offline` of `user`: once to every socket of every local
    /// peer (sharing a small conversation), never to the user's own sockets.
    fn deliver_presence(&self, user: Uuid, frame: &Utf8Bytes) {
        let state = self.lock();
        let Some(conversations) = state.presence_index.get(&user) else {
            return;
        };
        let mut peers: Vec<Uuid> = conversations
            .iter()
            .filter_map(|c| state.conversations.get(c))
            .flat_map(|entry| entry.local_members.iter().copied())
            .filter(|member| *member != user)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        for peer in peers {
            if let Some(local) = state.users.get(&peer) {
                self.send_to_user(local, frame);
            }
        }
    }

    fn send_to_user(&self, local: &LocalUser, frame: &Utf8Bytes) {
        for socket in &local.sockets {
            self.push_or_close(&socket.outbox, frame);
        }
    }
}

/// An event decoded and rendered once for all its recipients.
struct Decoded {
    event: Event,
    kind: EventKind,
    frame: Utf8Bytes,
}

/// What the personal subscription hands a personal worker.
enum Personal {
    /// An event on one user's subject, for that (local) user.
    One(Uuid, async_nats::Message),
    /// An event addressed to several users, handed to every worker in turn.
    Many(Arc<ManyEvent>),
}

/// An event addressed to several users, shared by the personal workers: decoded, rendered and
/// its targets sorted by worker (index = worker) by the first one that reaches it (`None` inside
/// when it is invalid).
struct ManyEvent {
    message: async_nats::Message,
    decoded: OnceCell<Option<(Decoded, Vec<Vec<Uuid>>)>>,
}

/// The personal worker that handles `user`'s events (module docs).
fn personal_worker(user: &Uuid) -> usize {
    (user.as_u64_pair().1 % PERSONAL_WORKERS as u64) as usize
}

/// Of `users` (local members of `conversation`), those for whom some of the conversation's
/// presence members are new peers (websocket.md §9, "peers made while connected"): members not
/// sharing another small conversation with them; only members in `among` when given. Nothing
/// when the conversation does not propagate presence.
fn new_peers_locked(
    state: &State,
    conversation: Uuid,
    users: &[Uuid],
    among: Option<&[Uuid]>,
) -> Vec<NewPeers> {
    let Some(members) = state
        .conversations
        .get(&conversation)
        .and_then(|entry| entry.presence_members.as_deref())
    else {
        return Vec::new();
    };
    let mut met = Vec::new();
    for user in users {
        let Some(local) = state.users.get(user) else {
            continue;
        };
        let already = |peer: &Uuid| {
            state.presence_index.get(peer).is_some_and(|shared| {
                shared
                    .iter()
                    .any(|c| *c != conversation && local.conversations.contains(c))
            })
        };
        let peers: Vec<Uuid> = members
            .iter()
            .filter(|peer| *peer != user)
            .filter(|peer| among.is_none_or(|among| among.contains(peer)))
            .filter(|peer| !already(peer))
            .copied()
            .collect();
        if !peers.is_empty() {
            met.push(NewPeers { user: *user, peers });
        }
    }
    met
}

/// Replaces the presence members of `entry` (and the index entries that point at it).
fn set_presence_members(
    index: &mut HashMap<Uuid, Vec<Uuid>>,
    conversation: Uuid,
    entry: &mut LocalConversation,
    members: Option<Vec<Uuid>>,
) {
    if let Some(old) = entry.presence_members.take() {
        for member in old {
            remove_from_index(index, member, conversation);
        }
    }
    if let Some(mut members) = members {
        members.sort_unstable();
        members.dedup();
        for member in &members {
            index.entry(*member).or_default().push(conversation);
        }
        entry.presence_members = Some(members);
    }
}

fn remove_from_index(index: &mut HashMap<Uuid, Vec<Uuid>>, member: Uuid, conversation: Uuid) {
    if let Some(conversations) = index.get_mut(&member) {
        conversations.retain(|c| *c != conversation);
        if conversations.is_empty() {
            index.remove(&member);
        }
    }
}

/// Subscribes to `subject` and records the result in `ready` (`None` when NATS refused).
async fn subscribe(
    nats: &async_nats::Client,
    subject: String,
    ready: &Readiness,
) -> Option<async_nats::Subscriber> {
    match nats.subscribe(subject).await {
        Ok(subscriber) => {
            ready.set(Readiness::SUBSCRIBED);
            Some(subscriber)
        }
        Err(error) => {
            tracing::error!(error = %error, "NATS subscribe failed");
            ready.set(Readiness::FAILED);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize, len: usize) -> Utf8Bytes {
        Utf8Bytes::from(format!("{n:0len$}"))
    }

    #[test]
    fn a_batch_takes_the_oldest_events_up_to_its_count_or_byte_limit() {
        let outbox = Outbox::new(256);
        for n in 0..10 {
            outbox.push(event(n, 100)).unwrap();
        }
        // Count limit.
        let mut batch = vec![outbox.pop().unwrap()];
        outbox.pop_batch(&mut batch, 4, usize::MAX);
        let numbers: Vec<usize> = batch.iter().map(|e| e.as_str().parse().unwrap()).collect();
        assert_eq!(numbers, [0, 1, 2, 3]);
        // Byte limit: stops once 250 bytes are reached (the event crossing it is included).
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 64, 250);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].as_str().parse::<usize>().unwrap(), 4);
        // The rest, then nothing.
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 64, usize::MAX);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[2].as_str().parse::<usize>().unwrap(), 9);
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 64, usize::MAX);
        assert!(batch.is_empty());
        assert!(outbox.pop().is_none());
    }

    #[test]
    fn a_drained_burst_gives_its_queue_buffer_back() {
        let outbox = Outbox::new(256);
        for n in 0..100 {
            outbox.push(event(n, 8)).unwrap();
        }
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 200, usize::MAX);
        assert_eq!(batch.len(), 100);
        assert_eq!(outbox.events().capacity(), 0);
    }
}
