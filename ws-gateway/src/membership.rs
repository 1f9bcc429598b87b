//! The SQL of the gateway: a user's conversations at connect (`docs/websocket.md`, "After the
//! upgrade", step 1), and a conversation's members once it may have become small enough to
//! propagate presence ([`members_if_small`]).
//!
//! It runs for every new socket, so a reconnect storm of thousands of sockets per second must
//! stay cheap. Concurrent connects are coalesced ([`Loader`]): whoever arrives while earlier
//! batches hold the pool's connections waits for the next batch, and one query serves a whole
//! batch of users. A storm of 15,000 sockets thus costs on the order of a hundred queries instead
//! of 15,000 round trips queued on a pool of 10 connections (where sockets would wait seconds
//! for a connection); a lone connect is still one query, sent at once. Each query is driven by
//! `idx_participants_user_conversations (user_id, conversation_id) where left_at is null`; the
//! per-conversation member lists come from `idx_participants_conversation_active
//! (conversation_id, user_id) where left_at is null`. The member count that decides whether a
//! conversation propagates presence stops counting at `PRESENCE_MAX_MEMBERS + 1`, so a
//! 100K-member channel costs 101 index entries, not 100K.
//! Every active conversation is returned, archived ones included, without an upper bound.

use std::{collections::HashMap, sync::Arc};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::fanout::LoadedConversation;

/// Most users in one query.
const MAX_BATCH: usize = 256;

/// What a load answers: the user's conversations, or the error of the batch's query.
pub type Loaded = Result<Vec<LoadedConversation>, Arc<sqlx::Error>>;

type Request = (Uuid, oneshot::Sender<Loaded>);

/// Loads users' conversations, coalescing concurrent requests into batched queries (module
/// docs).
pub struct Loader {
    /// Requests for the batching task, which holds the receiver and ends when this (the only
    /// sender) is dropped.
    requests: mpsc::UnboundedSender<Request>,
}

impl Loader {
    /// Starts the batching task: at most `concurrency` queries at a time (the pool's size), each
    /// for every request waiting when a connection frees up (up to [`MAX_BATCH`]).
    pub fn start(db: PgPool, presence_max_members: usize, concurrency: usize) -> Self {
        let (requests, mut receiver) = mpsc::unbounded_channel::<Request>();
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                // Taken only once a query can start, so the batch holds everyone who arrived
                // meanwhile.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let db = db.clone();
                tokio::spawn(async move {
                    answer(&db, presence_max_members, batch).await;
                    drop(slot);
                });
            }
        });
        Self { requests }
    }

    /// Every conversation in which `user` is an active participant; for those that propagate
    /// presence (direct, or at most `PRESENCE_MAX_MEMBERS` active participants), all their
    /// active participants.
    pub async fn load(&self, user: Uuid) -> Loaded {
        let (reply, answer) = oneshot::channel();
        let gone = || Arc::new(sqlx::Error::WorkerCrashed);
        self.requests.send((user, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Runs one batch's query and answers each request of it.
async fn answer(db: &PgPool, presence_max_members: usize, batch: Vec<Request>) {
    let users: Vec<Uuid> = batch.iter().map(|(user, _)| *user).collect();
    match load_many(db, &users, presence_max_members).await {
        Ok(mut loaded) => {
            for (user, reply) in batch {
                let _ = reply.send(Ok(loaded.remove(&user).unwrap_or_default()));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for (_, reply) in batch {
                let _ = reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}

/// The conversations of each of `users` (users without any are absent from the map).
async fn load_many(
    db: &PgPool,
    users: &[Uuid],
    presence_max_members: usize,
) -> Result<HashMap<Uuid, Vec<LoadedConversation>>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select p.user_id,
                  p.conversation_id,
                  c.type = 'direct' as "direct!",
                  case when c.type = 'direct'
                         or (select count(*)
                               from (select 1 from conversation_participants m
                                      where m.conversation_id = p.conversation_id
                                        and m.left_at is null
                                      limit $2 + 1) as bounded) <= $2
                       then array(select m.user_id from conversation_participants m
                                   where m.conversation_id = p.conversation_id
                                     and m.left_at is null)
                  end as "presence_members?"
             from conversation_participants p
             join conversations c on c.id = p.conversation_id
            where p.user_id = any($1)
              and p.left_at is null"#,
        users,
        presence_max_members as i64,
    )
    .fetch_all(db)
    .await?;
    let mut loaded: HashMap<Uuid, Vec<LoadedConversation>> = HashMap::new();
    for row in rows {
        loaded
            .entry(row.user_id)
            .or_default()
            .push(LoadedConversation {
                id: row.conversation_id,
                direct: row.direct,
                presence_members: row.presence_members,
            });
    }
    Ok(loaded)
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

/// Every active participant of `conversation` when it propagates presence (direct, or at most
/// `presence_max_members` active participants); `None` when it is larger. Reads at most
/// `presence_max_members + 1` index entries, however large the conversation.
pub async fn members_if_small(
    db: &PgPool,
    conversation: Uuid,
    presence_max_members: usize,
) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select c.type = 'direct' as "direct!",
                  array(select m.user_id from conversation_participants m
                         where m.conversation_id = c.id
                           and m.left_at is null
                         limit $2 + 1) as "members!"
             from conversations c
            where c.id = $1"#,
        conversation,
        presence_max_members as i64,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|row| {
        (row.direct || row.members.len() <= presence_max_members).then_some(row.members)
    }))
}
