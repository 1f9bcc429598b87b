//! `conversations`: reading a conversation with the caller's unread count, creating one.
//!
//! Every statement selects the columns of [`ConversationRow`] (its doc lists them). The caller's
//! unread count is written out in each statement that returns it, always the same way: messages
//! not deleted, not sent by the caller, created after the caller joined, with a `seq` above the
//! read receipt's message (0 without a receipt, or when that message is not found in the
//! conversation), capped at 1000.

use sqlx::PgConnection;
use uuid::Uuid;

pub use super::conversation_row::ConversationRow;
use crate::resources::{ChannelSummary, Conversation, ConversationDetail};

/// Builds a [`ConversationRow`] from a `query!` record that carries its columns.
macro_rules! conversation_row {
    ($r:ident) => {
        ConversationRow {
            id: $r.id,
            kind: $r.kind,
            name: $r.name,
            description: $r.description,
            avatar_url: $r.avatar_url,
            creator_id: $r.creator_id,
            is_archived: $r.is_archived,
            last_message_at: $r.last_message_at,
            created_at: $r.created_at,
            updated_at: $r.updated_at,
        }
    };
}

/// The conversation, if it exists.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as!(
        ConversationRow,
        r#"select c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url, c.creator_id,
                  coalesce(c.is_archived, false) as "is_archived!", c.last_message_at,
                  coalesce(c.created_at, now()) as "created_at!",
                  coalesce(c.updated_at, c.created_at, now()) as "updated_at!"
           from conversations c
           where c.id = $1"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// The caller's unread count in one conversation (0 when not an active participant).
pub async fn unread_count(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> sqlx::Result<i64> {
    let n = sqlx::query_scalar!(
        r#"select (select count(*) from (
                       select 1 from messages m
                       where m.conversation_id = c.id
                         and m.is_deleted is not true
                         and m.sender_id <> p.user_id
                         and m.created_at > p.joined_at
                         and m.seq > coalesce((
                               select rm.seq from read_receipts r
                               join messages rm on rm.id = r.last_read_message_id
                                               and rm.conversation_id = r.conversation_id
                               where r.conversation_id = c.id and r.user_id = p.user_id), 0)
                       limit 1000) unread) as "unread_count!"
           from conversations c
           join conversation_participants p
             on p.conversation_id = c.id and p.user_id = $2 and p.left_at is null
           where c.id = $1"#,
        conversation,
        user,
    )
    .fetch_optional(conn)
    .await?;
    Ok(n.unwrap_or(0))
}

/// The conversation with its active participants and the caller's unread count.
pub async fn detail(
    conn: &mut PgConnection,
    row: ConversationRow,
    caller: Uuid,
) -> sqlx::Result<ConversationDetail> {
    let participants = super::participants::active(&mut *conn, row.id).await?;
    let unread = unread_count(&mut *conn, row.id, caller).await?;
    Ok(ConversationDetail {
        conversation: row.into_resource(unread),
        participants,
    })
}

/// Loads the detail of an existing conversation by id.
pub async fn find_detail(
    conn: &mut PgConnection,
    id: Uuid,
    caller: Uuid,
) -> sqlx::Result<Option<ConversationDetail>> {
    match find(&mut *conn, id).await? {
        Some(row) => Ok(Some(detail(conn, row, caller).await?)),
        None => Ok(None),
    }
}

/// What a new conversation is made of.
pub struct NewConversation<'a> {
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub avatar_url: Option<&'a str>,
    pub creator_id: Option<Uuid>,
    /// For a direct conversation: the two users, ordered low < high (the unique active pair).
    pub direct_pair: Option<(Uuid, Uuid)>,
}

/// Inserts the conversation row. A second active DM for the same pair fails with a unique
/// violation of `unique_active_direct_pair`.
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewConversation<'_>,
) -> sqlx::Result<ConversationRow> {
    sqlx::query_as!(
        ConversationRow,
        r#"insert into conversations as c
               (type, name, description, avatar_url, creator_id, direct_user_low, direct_user_high)
           values ($1::text::conversation_type, $2, $3, $4, $5, $6, $7)
           returning c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url,
                     c.creator_id, coalesce(c.is_archived, false) as "is_archived!",
                     c.last_message_at, coalesce(c.created_at, now()) as "created_at!",
                     coalesce(c.updated_at, c.created_at, now()) as "updated_at!""#,
        new.kind,
        new.name,
        new.description,
        new.avatar_url,
        new.creator_id,
        new.direct_pair.map(|p| p.0),
        new.direct_pair.map(|p| p.1),
    )
    .fetch_one(conn)
    .await
}

/// The active direct conversation between two users, if any.
pub async fn find_active_direct(
    conn: &mut PgConnection,
    pair: (Uuid, Uuid),
) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as!(
        ConversationRow,
        r#"select c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url, c.creator_id,
                  coalesce(c.is_archived, false) as "is_archived!", c.last_message_at,
                  coalesce(c.created_at, now()) as "created_at!",
                  coalesce(c.updated_at, c.created_at, now()) as "updated_at!"
           from conversations c
           where c.direct_user_low = $1 and c.direct_user_high = $2"#,
        pair.0,
        pair.1,
    )
    .fetch_optional(conn)
    .await
}

/// The caller's conversations (archived included), newest activity first, and their total.
///
/// Both statements share one filter, that of `GET /conversations?search=`: group and channel
/// names, or the other participant's nickname in a direct conversation (`$2` is an escaped
/// `ilike` pattern, or null for no search).
pub async fn list_for_user(
    conn: &mut PgConnection,
    user: Uuid,
    pattern: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(i64, Vec<Conversation>)> {
    let total = sqlx::query_scalar!(
        r#"select count(*) as "total!"
           from conversations c
           join conversation_participants p
             on p.conversation_id = c.id and p.user_id = $1 and p.left_at is null
           where $2::text is null
              or (c.type <> 'direct' and c.name ilike $2)
              or (c.type = 'direct' and exists (
                    select 1 from conversation_participants o
                    where o.conversation_id = c.id and o.user_id <> $1 and o.left_at is null
                      and o.nickname ilike $2))"#,
        user,
        pattern,
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"select c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url, c.creator_id,
                  coalesce(c.is_archived, false) as "is_archived!", c.last_message_at,
                  coalesce(c.created_at, now()) as "created_at!",
                  coalesce(c.updated_at, c.created_at, now()) as "updated_at!",
                  (select count(*) from (
                       select 1 from messages m
                       where m.conversation_id = c.id
                         and m.is_deleted is not true
                         and m.sender_id <> p.user_id
                         and m.created_at > p.joined_at
                         and m.seq > coalesce((
                               select rm.seq from read_receipts r
                               join messages rm on rm.id = r.last_read_message_id
                                               and rm.conversation_id = r.conversation_id
                               where r.conversation_id = c.id and r.user_id = p.user_id), 0)
                       limit 1000) unread) as "unread_count!"
           from conversations c
           join conversation_participants p
             on p.conversation_id = c.id and p.user_id = $1 and p.left_at is null
           where $2::text is null
              or (c.type <> 'direct' and c.name ilike $2)
              or (c.type = 'direct' and exists (
                    select 1 from conversation_participants o
                    where o.conversation_id = c.id and o.user_id <> $1 and o.left_at is null
                      and o.nickname ilike $2))
           order by c.last_message_at desc nulls last, c.created_at desc, c.id
           limit $3 offset $4"#,
        user,
        pattern,
        limit,
        offset,
    )
    .fetch_all(conn)
    .await?;
    Ok((
        total,
        rows.into_iter()
            .map(|r| {
                let unread = r.unread_count;
                conversation_row!(r).into_resource(unread)
            })
            .collect(),
    ))
}

/// Channels that are not archived, largest first, with the caller's unread count where the
/// caller is a member (0 elsewhere), and their total. `$2` is an escaped `ilike` pattern on the
/// name, or null.
pub async fn discover(
    conn: &mut PgConnection,
    user: Uuid,
    pattern: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(i64, Vec<ChannelSummary>)> {
    let total = sqlx::query_scalar!(
        r#"select count(*) as "total!"
           from conversations c
           left join conversation_participants p
             on p.conversation_id = c.id and p.user_id = $1 and p.left_at is null
           where c.type = 'channel' and c.is_archived is not true
             and ($2::text is null or c.name ilike $2)"#,
        user,
        pattern,
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"select c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url, c.creator_id,
                  coalesce(c.is_archived, false) as "is_archived!", c.last_message_at,
                  coalesce(c.created_at, now()) as "created_at!",
                  coalesce(c.updated_at, c.created_at, now()) as "updated_at!",
                  case when p.id is null then 0 else (select count(*) from (
                       select 1 from messages m
                       where m.conversation_id = c.id
                         and m.is_deleted is not true
                         and m.sender_id <> p.user_id
                         and m.created_at > p.joined_at
                         and m.seq > coalesce((
                               select rm.seq from read_receipts r
                               join messages rm on rm.id = r.last_read_message_id
                                               and rm.conversation_id = r.conversation_id
                               where r.conversation_id = c.id and r.user_id = p.user_id), 0)
                       limit 1000) unread) end as "unread_count!",
                  (select count(*) from conversation_participants m
                    where m.conversation_id = c.id and m.left_at is null) as "member_count!"
           from conversations c
           left join conversation_participants p
             on p.conversation_id = c.id and p.user_id = $1 and p.left_at is null
           where c.type = 'channel' and c.is_archived is not true
             and ($2::text is null or c.name ilike $2)
           order by "member_count!" desc, c.name, c.id
           limit $3 offset $4"#,
        user,
        pattern,
        limit,
        offset,
    )
    .fetch_all(conn)
    .await?;
    Ok((
        total,
        rows.into_iter()
            .map(|r| {
                let (unread, member_count) = (r.unread_count, r.member_count);
                ChannelSummary {
                    conversation: conversation_row!(r).into_resource(unread),
                    member_count,
                }
            })
            .collect(),
    ))
}

/// One atomic partial update: null keeps the current value. `None` when the row is gone.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    name: Option<&str>,
    description: Option<&str>,
    avatar_url: Option<&str>,
) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as!(
        ConversationRow,
        r#"update conversations c set
               name = coalesce($2, c.name),
               description = coalesce($3, c.description),
               avatar_url = coalesce($4, c.avatar_url)
           where c.id = $1
           returning c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url,
                     c.creator_id, coalesce(c.is_archived, false) as "is_archived!",
                     c.last_message_at, coalesce(c.created_at, now()) as "created_at!",
                     coalesce(c.updated_at, c.created_at, now()) as "updated_at!""#,
        id,
        name,
        description,
        avatar_url,
    )
    .fetch_optional(conn)
    .await
}

/// Marks the conversation archived (idempotent). `None` when the row is gone.
pub async fn archive(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as!(
        ConversationRow,
        r#"update conversations c set is_archived = true
           where c.id = $1
           returning c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url,
                     c.creator_id, coalesce(c.is_archived, false) as "is_archived!",
                     c.last_message_at, coalesce(c.created_at, now()) as "created_at!",
                     coalesce(c.updated_at, c.created_at, now()) as "updated_at!""#,
        id,
    )
    .fetch_optional(conn)
    .await
}
