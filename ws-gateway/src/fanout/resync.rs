//! Telling sockets that events addressed to them may have been lost (`docs/websocket.md`,
//! "Staying consistent: seq and catch-up"; `docs/delivery.md`): the `resync` frame, after which
//! the client catches up through `after_seq` as after a reconnect.
//!
//! Two causes:
//! - **this gateway's NATS connection dropped and came back** ([`watch_connection`]): whatever
//!   was published while it was away never reached it, so every socket it holds gets `resync`
//!   with reason `event_stream_interrupted`. The round starts once a round trip to the server
//!   has confirmed that the client's subscriptions are back (async-nats re-subscribes on
//!   reconnect), so a client catching up on its `resync` cannot miss what is published after
//!   its catch-up request;
//! - **the api-service could not publish some events** (its buffer overflowed during an outage,
//!   a publish was refused, or events were in flight on a connection that dropped): it says so
//!   with a [`ResyncNotice`] on `<prefix>.resync`, which every gateway reads; the local sockets of
//!   the listed conversations' members and of the listed users (or every socket) get `resync`
//!   with reason `events_not_published`.
//!
//! A round is spread evenly over `WS_RESYNC_WINDOW_MS` (2 s by default), as the drain spreads
//! its closes: a fleet-wide NATS hiccup would otherwise send every client of every gateway to the
//! API at the same instant. Each round covers the sockets open when it starts, once each; sockets
//! opened later have not missed anything their own connect-time catch-up does not recover.
//!
//! The notices arrive on one of the fan-out's own subscriptions, and a round's frames go through
//! the same queues as events, so this lives in the fan-out; the server wires
//! [`watch_connection`] to the NATS client's connection events.

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::Bytes;
use shared_proto::{events::ResyncNotice, prost::Message as _};
use tokio::{runtime::Handle, sync::mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Fanout, outbox::Outbox, subscriptions::SETTLE_TIMEOUT};
use shared_ops::Chain;

/// Who a round of `resync` frames is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every socket of this gateway.
    Everyone,
    /// The sockets of the local members of these conversations and of these users.
    Some {
        conversations: Vec<Uuid>,
        users: Vec<Uuid>,
    },
}

impl Audience {
    /// The audience a notice of the api-service names.
    pub fn of_notice(notice: &ResyncNotice) -> Self {
        if notice.everyone {
            return Self::Everyone;
        }
        let ids = |ids: &[String]| -> Vec<Uuid> {
            ids.iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect()
        };
        Self::Some {
            conversations: ids(&notice.conversation_ids),
            users: ids(&notice.user_ids),
        }
    }
}

/// Spreads rounds of `resync` frames over the window. Cheap to share; rounds run as tasks of
/// the main runtime, whatever thread asks for them.
pub struct Spreader {
    window: Duration,
    /// The main runtime: notices arrive on the intake thread, which must not sleep through a
    /// round.
    runtime: Handle,
}

impl Spreader {
    /// A spreader over `window`, running its rounds on the current runtime.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            runtime: Handle::current(),
        }
    }

    /// Sends `resync` with `reason` to each of `outboxes`, spread evenly over the window; each
    /// push goes through `fanout` (a full queue closes its socket with 1013, as for any event).
    pub fn start_round(&self, fanout: &Arc<Fanout>, outboxes: Vec<Arc<Outbox>>, reason: &str) {
        if outboxes.is_empty() {
            return;
        }
        let frame = Utf8Bytes::try_from(shared_proto::json::resync_frame(reason))
            .expect("the resync frame is UTF-8");
        let (fanout, window, reason) = (Arc::clone(fanout), self.window, reason.to_owned());
        tracing::info!(
            sockets = outboxes.len(),
            reason = reason.as_str(),
            "sending resync"
        );
        self.runtime.spawn(async move {
            let start = tokio::time::Instant::now();
            let count = outboxes.len() as u32;
            for (index, outbox) in outboxes.iter().enumerate() {
                tokio::time::sleep_until(start + window * index as u32 / count).await;
                fanout.push_resync(outbox, &frame, &reason);
            }
        });
    }
}

impl Fanout {
    /// After the NATS connection came back: once a round trip has confirmed that the server has
    /// the client's subscriptions again, every socket open now gets `resync`, spread over the
    /// window.
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
    fn push_resync(&self, outbox: &Outbox, frame: &Utf8Bytes, reason: &str) {
        self.metrics.resyncs.with_label_values(&[reason]).inc();
        self.push_or_close(outbox, frame);
    }

    /// A notice of the api-service on `<prefix>.resync`: a round for the sockets it concerns.
    pub(super) fn on_resync_notice(self: &Arc<Self>, payload: Bytes) {
        let notice = match ResyncNotice::decode(payload) {
            Ok(notice) => notice,
            Err(error) => {
                self.metrics.events_invalid.inc();
                tracing::warn!(error = %Chain(&error), "undecodable resync notice dropped");
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
}

/// Follows the NATS client's connection events (sent by its event callback) until `stop` fires:
/// after a disconnection, the next connection starts a round for every socket.
pub async fn watch_connection(
    fanout: Arc<Fanout>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
    stop: CancellationToken,
) {
    let mut interrupted = false;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        let Some(event) = event else { return };
        match event {
            async_nats::Event::Disconnected => {
                if !interrupted {
                    tracing::warn!("NATS connection lost; events are missed until it is back");
                }
                interrupted = true;
            }
            async_nats::Event::Connected if interrupted => {
                interrupted = false;
                fanout.metrics().nats_reconnects.inc();
                fanout.resync_after_reconnect().await;
            }
            _ => {}
        }
    }
}
