//! Live membership (`docs/websocket.md`, "Live membership"): which local users are members of
//! which conversation right now, and the conversation subscriptions that follow from it.
//!
//! - `conversation.joined` on the user's subject, or a `participant.added` listing a local user,
//!   makes the user a member (subscribing if needed; the subscription is confirmed with a round
//!   trip to the NATS server before the `conversation.joined` frame is queued, so a client that
//!   has seen it receives what is published afterwards);
//! - `participant.removed` for a local user (after it is delivered to the room) or
//!   `conversation.left` ends the membership: since a conversation's events are handled in order
//!   by one task, nothing published after the removal reaches the user, and their typing frames
//!   for it are ignored from then on;
//! - a user's last socket closing ends all their local memberships.
//!
//! The conversation's subscription lives while it has a local member.

use std::sync::Arc;

use shared_proto::subjects;
use uuid::Uuid;

use super::{
    Fanout, LoadedConversation, LocalConversation, State,
    presence_index::set_presence_members,
    subscriptions::{Readiness, Target},
};

impl Fanout {
    /// Joins `user` to a conversation under the lock; returns the readiness of its
    /// subscription while that is not confirmed (new, or still settling for someone else).
    pub(super) fn join_locked(
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

    /// `participant.added`: local users listed become members; the presence list grows (and is
    /// dropped once the conversation exceeds `PRESENCE_MAX_MEMBERS`).
    pub(super) fn participants_added(&self, state: &mut State, conversation: Uuid, added: &[Uuid]) {
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

    /// `user` left `conversation` (participant.removed / conversation.left).
    pub(super) fn leave_locked(&self, state: &mut State, user: Uuid, conversation: Uuid) {
        if let Some(local) = state.users.get_mut(&user) {
            local.conversations.remove(&conversation);
            local.typing.remove(&conversation);
            if local.loading() {
                local.left_while_loading.insert(conversation);
            }
        }
        self.remove_local_member(state, conversation, user);
    }

    /// Ends `user`'s local membership of `conversation`, dropping the conversation (and its
    /// subscription) when no local member is left.
    pub(super) fn remove_local_member(&self, state: &mut State, conversation: Uuid, user: Uuid) {
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
}
