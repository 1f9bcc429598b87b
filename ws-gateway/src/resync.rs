//! Telling sockets that events addressed to them may have been lost (websocket.md §10): the
//! `resync` frame, after which the client catches up through `after_seq` as after a reconnect.
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

use std::{sync::Arc, time::Duration};

use shared_proto::events::ResyncNotice;
use tokio::{runtime::Handle, sync::mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fanout::{Fanout, Outbox};

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
