//! The presence index: user → small conversations known here that contain them, the audience of
//! `presence.*` events (`docs/websocket.md`, "Presence"); and the presence peers a membership
//! change makes, handed to the peers task ([`PeerWork`], [`crate::peers`]).
//!
//! A conversation propagates presence while it is direct or has at most `PRESENCE_MAX_MEMBERS`
//! active participants; then all its active participants are kept
//! (`LocalConversation::presence_members`) and indexed here.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Fanout, LocalConversation, State};

/// A local user and members of one conversation who just became their presence peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeers {
    pub user: Uuid,
    pub peers: Vec<Uuid>,
}

/// What the fan-out hands the peers task ([`crate::peers::run`]), through the channel the server
/// wires with [`Fanout::take_peer_work`].
#[derive(Debug)]
pub enum PeerWork {
    /// Pairs that became presence peers.
    Met(Vec<NewPeers>),
    /// A conversation that did not propagate presence lost a member: count it again.
    Recount(Uuid),
}

impl Fanout {
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
}

/// Of `users` (local members of `conversation`), those for whom some of the conversation's presence
/// members are new peers (`docs/websocket.md`, "Presence": peers gained while connected): members
/// not sharing another small conversation with them; only members in `among` when given. Nothing
/// when the conversation does not propagate presence.
pub(super) fn new_peers_locked(
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
pub(super) fn set_presence_members(
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

pub(super) fn remove_from_index(
    index: &mut HashMap<Uuid, Vec<Uuid>>,
    member: Uuid,
    conversation: Uuid,
) {
    if let Some(conversations) = index.get_mut(&member) {
        conversations.retain(|c| *c != conversation);
        if conversations.is_empty() {
            index.remove(&member);
        }
    }
}
