//! The fan-out's NATS subscriptions and the tasks that read them.
//!
//! - `<prefix>.conv.<id>`: one per conversation with at least one local member, however many
//!   local users, reference-counted by the conversation's local members
//!   ([`super::live_membership`]). A task owns its `async_nats::Subscriber` and handles its
//!   messages in order, so the events of one conversation are delivered in the order NATS hands
//!   them over. It is created when the first local user needs the subject and aborted (dropping
//!   the subscriber sends `UNSUB`) when the last one goes.
//! - `<prefix>.presence.*` and `<prefix>.resync`: once per gateway, for its whole life, read like
//!   a conversation.
//! - `<prefix>.user.>`: once per gateway, handed to the personal workers (below).
//!
//! A subscription is ready for a socket once the NATS server has it ([`Readiness`],
//! [`Fanout::settle`]): a round trip after its `SUB` confirms that what is published from then on
//! reaches this gateway.
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
//! and departures keep their order. A subscription per user would cost ~9 KiB per socket (the
//! subscriber's channel block alone is 32 × `async_nats::Message`, ~6 KiB, plus its task) — more
//! than the whole per-socket budget — and a `SUB`, a flush and an `UNSUB` per connect and
//! disconnect, which would dominate a reconnect storm. The price is that every gateway receives
//! every personal event of the fleet; those are membership changes (`conversation.joined` /
//! `left`), rare next to conversation traffic. Events are handed to [`PERSONAL_WORKERS`] tasks by
//! user, so each user's events stay in order while a worker waiting for a new conversation's
//! subscription (on `conversation.joined`) holds up only its share of the users.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use shared_proto::subjects;
use tokio::sync::{OnceCell, mpsc, watch};
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::{Fanout, decode::Decoded};
use shared_ops::Chain;

/// How long a new socket or membership waits for its subscriptions to be confirmed.
pub(super) const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Tasks handling personal events (module docs); a user's events always go to the same one.
pub(super) const PERSONAL_WORKERS: usize = 8;
/// Personal events waiting for one worker before the wildcard subscription waits for it.
const PERSONAL_BACKLOG: usize = 1024;

/// Where a subscription stands: readiness is shared by everyone who needs the subject, so a
/// socket or join that finds a subscription another one created still waits until the NATS
/// server has it (`docs/websocket.md`: subscribed before the snapshot, "After the upgrade";
/// before `conversation.joined` is delivered, "Live membership").
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
    pub(super) fn if_unconfirmed(&self) -> Option<Self> {
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

/// Which subject a subscription task reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    Conversation(Uuid),
    User(Uuid),
    Presence,
    Resync,
}

impl Target {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Conversation(_) => "conversation",
            Self::User(_) => "user",
            Self::Presence => "presence",
            Self::Resync => "resync",
        }
    }
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
pub(super) struct ManyEvent {
    pub(super) message: async_nats::Message,
    pub(super) decoded: OnceCell<Option<(Decoded, Vec<Vec<Uuid>>)>>,
}

/// The personal worker that handles `user`'s events (module docs).
pub(super) fn personal_worker(user: &Uuid) -> usize {
    (user.as_u64_pair().1 % PERSONAL_WORKERS as u64) as usize
}

impl Fanout {
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
    /// Confirming with it lets a publish from another connection, processed by the server before
    /// it reads the `SUB`, miss the new subscription. A request to a fresh inbox, where nobody
    /// listens, comes back from the server at once as "no responders".
    pub(super) async fn round_trip(&self) -> bool {
        match self.nats.request(self.nats.new_inbox(), Bytes::new()).await {
            Ok(_) => true,
            Err(error) => error.kind() == async_nats::client::RequestErrorKind::NoResponders,
        }
    }

    /// Spawns the task that subscribes to `subject` and handles its messages in order.
    pub(super) fn spawn_subscription(
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
    /// list: creating a group of 1,000 puts one event of ~130 KB plus its 1,000 target ids on
    /// `<prefix>.user.many.<conversation_id>` (split over as few messages as the server's
    /// `max_payload` allows), and a setup creating many such groups puts as many on this subject
    /// at once. Decoded and rendered on the intake thread, they would hold up the NATS
    /// connection's own task there, and the round trips that confirm new subscriptions would time
    /// out, after which a group's first messages may be missed.
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
            tracing::error!(error = %Chain(&error), "NATS subscribe failed");
            ready.set(Readiness::FAILED);
            None
        }
    }
}
