//! Delivering an event to exactly the local sockets that should get it, and the membership
//! changes it carries.
//!
//! Each event is decoded and rendered to its client JSON **once** ([`super::decode`]); the same
//! [`Utf8Bytes`] (a reference-counted buffer) is then queued for every recipient socket
//! ([`Outbox`]). A full queue never drops silently: the socket is asked to close with 1013
//! (`docs/websocket.md`, "Keep-alive, limits and close codes").
//!
//! - a conversation event goes to the conversation's local members (minus the typist for typing
//!   events), after the membership change it carries (`participant.added`) or before it
//!   (`participant.removed`: the removed user gets their own removal, then nothing more);
//! - a personal event goes to its local users, after the membership change it carries
//!   (`conversation.joined` waits until the conversation's subscription is confirmed);
//! - `presence.*` goes once to every socket of every local peer of the user.
//!
//! Membership changes also make presence peers (`docs/websocket.md`, "Presence"): the pairs that
//! are new are worked out here, under the lock ([`super::presence_index`]), and handed to the
//! peers task through [`PeerWork`] after the frame that made them peers is queued.

use std::sync::Arc;

use bytes::Bytes;
use shared_proto::{
    events::{Event, EventKind, event::Body},
    subjects,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::{
    Fanout, LoadedConversation, LocalUser,
    decode::Decoded,
    outbox::Outbox,
    presence_index::{PeerWork, new_peers_locked, remove_from_index},
    subscriptions::{ManyEvent, PERSONAL_WORKERS, Target, personal_worker},
};
use crate::protocol::close;

impl Fanout {
    /// Handles one NATS message of a subscription.
    pub(super) async fn handle(self: &Arc<Self>, target: Target, subject: &str, payload: Bytes) {
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

    /// A personal event addressed to several users, in the queue of personal worker `worker`:
    /// the first worker to reach it decodes and renders it and sorts its targets by worker, for
    /// all of them (it has a place in every worker's queue, so that every user's events stay in
    /// order); then each worker handles the local users among its own targets.
    pub(super) async fn handle_many(self: &Arc<Self>, worker: usize, many: &ManyEvent) {
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

    fn send_to_user(&self, local: &LocalUser, frame: &Utf8Bytes) {
        for socket in &local.sockets {
            self.push_or_close(&socket.outbox, frame);
        }
    }

    /// Queues `frame` for one socket; a full queue asks it to close with 1013 (`docs/websocket.md`,
    /// "Keep-alive, limits and close codes": events are never silently dropped for an open socket).
    pub(super) fn push_or_close(&self, outbox: &Outbox, frame: &Utf8Bytes) {
        if outbox.push(frame.clone()).is_err() && outbox.request_close(close::TRY_AGAIN) {
            self.metrics.queue_overflows.inc();
            tracing::warn!("send queue full; closing with 1013");
        }
    }
}
