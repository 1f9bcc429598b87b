//! The one query of the gateway: a user's conversations at connect (websocket.md §3 step 1).
//!
//! It runs on every new socket, so a reconnect storm of thousands of sockets per second must
//! stay cheap: one round trip, driven by `idx_participants_user_conversations (user_id,
//! conversation_id) where left_at is null`; the per-conversation member lists come from
//! `idx_participants_conversation_active (conversation_id) where left_at is null`. The member
//! count that decides whether a conversation propagates presence stops counting at
//! `PRESENCE_MAX_MEMBERS + 1`, so a 100K-member channel costs 101 index entries, not 100K.
//! Every active conversation is returned, archived ones included, without an upper bound.

use sqlx::PgPool;
use uuid::Uuid;

use crate::fanout::LoadedConversation;

/// Every conversation in which `user` is an active participant; for those that propagate
/// presence (direct, or at most `presence_max_members` active participants), all their active
/// participants.
pub async fn load(
    db: &PgPool,
    user: Uuid,
    presence_max_members: usize,
) -> Result<Vec<LoadedConversation>, sqlx::Error> {
    let rows: Vec<(Uuid, bool, Option<Vec<Uuid>>)> = sqlx::query_as(
        "select p.conversation_id,
                c.type = 'direct' as direct,
                case when c.type = 'direct'
                       or (select count(*)
                             from (select 1 from conversation_participants m
                                    where m.conversation_id = p.conversation_id
                                      and m.left_at is null
                                    limit $2 + 1) as bounded) <= $2
                     then array(select m.user_id from conversation_participants m
                                 where m.conversation_id = p.conversation_id
                                   and m.left_at is null)
                end as presence_members
           from conversation_participants p
           join conversations c on c.id = p.conversation_id
          where p.user_id = $1
            and p.left_at is null",
    )
    .bind(user)
    .bind(presence_max_members as i64)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, direct, presence_members)| LoadedConversation {
            id,
            direct,
            presence_members,
        })
        .collect())
}

/// The presence peers of `user` among `conversations`: every other member of those that
/// propagate presence, each once.
pub fn presence_peers(user: Uuid, conversations: &[LoadedConversation]) -> Vec<Uuid> {
    let mut peers: Vec<Uuid> = conversations
        .iter()
        .filter_map(|c| c.presence_members.as_deref())
        .flatten()
        .copied()
        .filter(|member| *member != user)
        .collect();
    peers.sort_unstable();
    peers.dedup();
    peers
}
