//! Presence for users who become presence peers while connected (`docs/websocket.md`, "Presence"):
//! a DM or a small group is created, participants are added, someone joins a channel, or a
//! conversation shrinks to `PRESENCE_MAX_MEMBERS`. Each side's sockets get `presence.online` for
//! the other if the other is online, right after the `conversation.joined` that made them peers;
//! nothing for a pair that already shared a small conversation.
//!
//! Every gateway handles its own local users only, from events it receives anyway, so the pair
//! is covered fleet-wide without a message of its own:
//! - the `conversation.joined` of a create, an add or a channel join reaches the gateways of
//!   every user it concerns: each of them meets every member of the conversation;
//! - the `participant.added` of an add or a channel join reaches the gateways of the members who
//!   were there before: each of them meets the added users;
//! - a `participant.removed` in a conversation too large to propagate presence makes the
//!   gateways of its remaining local members count it again in PostgreSQL (bounded at
//!   `PRESENCE_MAX_MEMBERS + 1` rows); once it is small, its members meet.
//!
//! [`crate::fanout`] works out, under its lock, which pairs are new (it knows every conversation
//! of its local users) and hands them here with [`PeerWork`]; this task asks Redis which of the
//! new peers are online (one pipelined `EXISTS` per batch, as for `presence.snapshot`) and queues
//! `presence.online` for them. It runs after the `conversation.joined` frame has been queued, so
//! that frame comes first. With Redis down nothing is sent, as for the snapshot. The fan-out also
//! starts routing the peers' later `presence.*` events to the user at once.
//!
//! A peer going offline between the Redis answer and the queueing may leave a stale
//! `presence.online` after its `presence.offline`; the window is one Redis round trip.

use std::sync::Arc;

use shared_ops::Chain;
use shared_proto::events::{Event, EventKind, Presence, event::Body};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    fanout::{Fanout, NewPeers, PeerWork},
    membership,
    presence::PresenceStore,
};

/// The peers task: runs until `stop` fires or the fan-out (holding the sender) is gone.
pub async fn run(
    fanout: Arc<Fanout>,
    presence: Arc<PresenceStore>,
    db: PgPool,
    presence_max_members: usize,
    mut work: mpsc::UnboundedReceiver<PeerWork>,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            item = work.recv() => item,
        };
        let met = match item {
            None => return,
            Some(PeerWork::Met(met)) => met,
            Some(PeerWork::Recount(conversation)) => {
                match membership::members_if_small(&db, conversation, presence_max_members).await {
                    Ok(Some(members)) => fanout.conversation_recounted(conversation, members),
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(
                            error = %Chain(&error),
                            conversation.id = %conversation,
                            "counting a conversation's members failed"
                        );
                        continue;
                    }
                }
            }
        };
        announce(&fanout, &presence, met).await;
    }
}

/// Queues `presence.online` of each online new peer for its user.
async fn announce(fanout: &Fanout, presence: &PresenceStore, met: Vec<NewPeers>) {
    let mut candidates: Vec<Uuid> = met.iter().flat_map(|m| m.peers.iter().copied()).collect();
    candidates.sort_unstable();
    candidates.dedup();
    let online = presence.online_among(&candidates).await;
    if online.is_empty() {
        return;
    }
    // Each online peer's frame is rendered once, however many users meet it.
    let frames: Vec<Utf8Bytes> = online.iter().map(|peer| online_frame(*peer)).collect();
    for NewPeers { user, peers } in met {
        for peer in &peers {
            if let Ok(index) = online.binary_search(peer) {
                fanout.send_presence_online(user, *peer, &frames[index]);
            }
        }
    }
}

/// The `presence.online` frame of `user`, as every gateway renders it.
fn online_frame(user: Uuid) -> Utf8Bytes {
    let event = Event {
        event_id: Uuid::new_v4().to_string(),
        kind: EventKind::PresenceOnline as i32,
        conversation_id: String::new(),
        actor_id: user.to_string(),
        occurred_at_us: 0,
        target_user_id: None,
        target_user_ids: vec![],
        body: Some(Body::Presence(Presence {
            user_id: user.to_string(),
        })),
    };
    let json = shared_proto::json::client_frame(&event).expect("a presence event renders");
    Utf8Bytes::try_from(json).expect("a presence frame is UTF-8")
}
