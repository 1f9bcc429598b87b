//! The fan-out: the registry of local sockets, the NATS subscriptions feeding them, and the
//! delivery of each event to exactly the local sockets that should get it (`docs/websocket.md`,
//! "Server events", "Live membership", "Presence").
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
//! # Modules
//!
//! This one is the facade: [`Fanout`], the registration of sockets and the questions asked about
//! them (typing membership and local bucket, presence counts, the drain's outboxes). The rest of
//! `Fanout`'s methods live with their concern:
//! - `outbox`: [`Outbox`], one socket's send queue and close requests;
//! - `subscriptions`: the NATS subscriptions and their tasks, [`Readiness`] and
//!   [`Fanout::settle`], the personal workers;
//! - `decode`: an event decoded and rendered once for all its recipients;
//! - `delivery`: handling a subscription's message — delivering it to the local sockets, with the
//!   membership changes it carries;
//! - `live_membership`: joining and leaving conversations, and the subscriptions that follow;
//! - `presence_index`: the audience of `presence.*`, and the new presence peers ([`PeerWork`]);
//! - [`resync`]: rounds of `resync` frames, and the watcher of the NATS connection that starts
//!   one after an interruption ([`resync::watch_connection`]).
//!
//! The fan-out imports no module above it: the peers task ([`crate::peers`]) takes its work from
//! the channel of [`Fanout::take_peer_work`], which the server wires. Inside, the modules import
//! each other one way only (`delivery` → `presence_index`, `subscriptions`, `decode`, `outbox`;
//! `live_membership` → `presence_index`, `subscriptions`; `resync` → `outbox`, `subscriptions`;
//! `subscriptions` → `decode`). At run time the calls go round — a subscription's task hands its
//! messages to `delivery`, whose `conversation.joined` joins through `live_membership`, which may
//! create a subscription — through the methods of [`Fanout`], one per concern.

mod decode;
mod delivery;
mod live_membership;
mod outbox;
mod presence_index;
pub mod resync;
mod subscriptions;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use uuid::Uuid;

pub use outbox::{Outbox, QueueFull};
pub use presence_index::{NewPeers, PeerWork};
pub use subscriptions::Readiness;

use self::resync::Spreader;
use crate::{
    metrics::Metrics,
    protocol::{Ignored, TokenBucket},
};

/// Identifies one socket of this gateway.
pub type SocketId = u64;

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
    /// Typing rate limit per conversation (`docs/websocket.md`, "Sending typing frames", rule
    /// 7); full buckets are forgotten.
    typing: HashMap<Uuid, TokenBucket>,
    /// Conversations the user left while one of their sockets was loading its list
    /// (`docs/websocket.md`, "Live membership"): that list may still name them, and must not
    /// re-subscribe the user. Cleared once no socket of the user is loading.
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
    /// The task reading `<prefix>.resync` (the api-service's notices, [`resync`]).
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
    /// Spreads `resync` rounds over the window ([`resync`]).
    resync: Spreader,
    /// Pairs of users who became presence peers, and conversations that may have become small
    /// enough to propagate presence, for the peers task ([`crate::peers::run`]), which holds the
    /// receiver (taken once with [`Fanout::take_peer_work`]); once that task has ended they are
    /// dropped.
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

    /// Rule 6 of `docs/websocket.md`, "Sending typing frames": `user` is a live member of
    /// `conversation` here.
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
}
