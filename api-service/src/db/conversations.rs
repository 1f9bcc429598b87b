//! `conversations`: reading a conversation with the caller's unread count, creating one.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::resources::{Conversation, ConversationDetail, Timestamp};

/// A `conversations` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationRow {
    pub id: Uuid,
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub avatar_url: Option<String>,
    pub creator_id: Option<Uuid>,
    pub is_archived: bool,
    pub last_message_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Columns of [`ConversationRow`] for a `conversations` alias `c`.
pub const COLUMNS: &str = "c.id, c.type::text as kind, c.name, c.description, c.avatar_url, c.creator_id, \
     coalesce(c.is_archived, false) as is_archived, c.last_message_at, \
     coalesce(c.created_at, now()) as created_at, coalesce(c.updated_at, c.created_at, now()) as updated_at";

/// The caller's unread count (http-api.md §9.3) for conversation alias `c` and participant alias
/// `p`: messages not deleted, not sent by the caller, created after the caller joined, with a
/// `seq` above the receipt's message (0 without one), capped at 1000.
pub const UNREAD_COUNT: &str = "(select count(*) from (
        select 1 from messages m
        where m.conversation_id = c.id
          and m.is_deleted is not true
          and m.sender_id <> p.user_id
          and m.created_at > p.joined_at
          and m.seq > coalesce((
                select rm.seq from read_receipts r
                join messages rm on rm.id = r.last_read_message_id and rm.conversation_id = r.conversation_id
                where r.conversation_id = c.id and r.user_id = p.user_id), 0)
        limit 1000) unread)";

impl ConversationRow {
    pub fn into_resource(self, unread_count: i64) -> Conversation {
        Conversation {
            id: self.id,
            kind: self.kind,
            name: self.name,
            description: self.description,
            avatar_url: self.avatar_url,
            creator_id: self.creator_id,
            is_archived: self.is_archived,
            last_message_at: self.last_message_at.map(Timestamp::from),
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
            unread_count,
        }
    }
}

/// The conversation, if it exists.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from conversations c where c.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The caller's unread count in one conversation (0 when not an active participant).
pub async fn unread_count(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> sqlx::Result<i64> {
    let n: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select {UNREAD_COUNT} from conversations c
         join conversation_participants p on p.conversation_id = c.id and p.user_id = $2 and p.left_at is null
         where c.id = $1"
    )))
    .bind(conversation)
    .bind(user)
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into conversations as c (type, name, description, avatar_url, creator_id, direct_user_low, direct_user_high)
         values ($1::conversation_type, $2, $3, $4, $5, $6, $7)
         returning {COLUMNS}"
    )))
    .bind(new.kind)
    .bind(new.name)
    .bind(new.description)
    .bind(new.avatar_url)
    .bind(new.creator_id)
    .bind(new.direct_pair.map(|p| p.0))
    .bind(new.direct_pair.map(|p| p.1))
    .fetch_one(conn)
    .await
}

/// The active direct conversation between two users, if any.
pub async fn find_active_direct(
    conn: &mut PgConnection,
    pair: (Uuid, Uuid),
) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from conversations c where c.direct_user_low = $1 and c.direct_user_high = $2"
    )))
    .bind(pair.0)
    .bind(pair.1)
    .fetch_optional(conn)
    .await
}

/// A conversation row with the caller's unread count.
#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    row: ConversationRow,
    unread_count: i64,
}

/// Filter of `GET /conversations?search=`: group/channel names, or the other participant's
/// nickname of a DM (`$2` is an escaped `ILIKE` pattern or null).
const MINE_FILTER: &str = "from conversations c
     join conversation_participants p on p.conversation_id = c.id and p.user_id = $1 and p.left_at is null
     where $2::text is null
        or (c.type <> 'direct' and c.name ilike $2)
        or (c.type = 'direct' and exists (
              select 1 from conversation_participants o
              where o.conversation_id = c.id and o.user_id <> $1 and o.left_at is null and o.nickname ilike $2))";

/// The caller's conversations (archived included), newest activity first, and their total.
pub async fn list_for_user(
    conn: &mut PgConnection,
    user: Uuid,
    pattern: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(i64, Vec<Conversation>)> {
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) {MINE_FILTER}"
    )))
    .bind(user)
    .bind(pattern)
    .fetch_one(&mut *conn)
    .await?;
    let rows: Vec<ListedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS}, {UNREAD_COUNT} as unread_count {MINE_FILTER}
         order by c.last_message_at desc nulls last, c.created_at desc, c.id
         limit $3 offset $4"
    )))
    .bind(user)
    .bind(pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    Ok((
        total,
        rows.into_iter()
            .map(|r| r.row.into_resource(r.unread_count))
            .collect(),
    ))
}

#[derive(sqlx::FromRow)]
struct ChannelRow {
    #[sqlx(flatten)]
    row: ConversationRow,
    unread_count: i64,
    member_count: i64,
}

const CHANNEL_FILTER: &str = "from conversations c
     left join conversation_participants p on p.conversation_id = c.id and p.user_id = $1 and p.left_at is null
     where c.type = 'channel' and c.is_archived is not true and ($2::text is null or c.name ilike $2)";

/// Channels that are not archived, largest first, with the caller's unread count where the
/// caller is a member.
pub async fn discover(
    conn: &mut PgConnection,
    user: Uuid,
    pattern: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(i64, Vec<crate::resources::ChannelSummary>)> {
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) {CHANNEL_FILTER}"
    )))
    .bind(user)
    .bind(pattern)
    .fetch_one(&mut *conn)
    .await?;
    let rows: Vec<ChannelRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS},
                case when p.id is null then 0 else {UNREAD_COUNT} end as unread_count,
                (select count(*) from conversation_participants m
                  where m.conversation_id = c.id and m.left_at is null) as member_count
         {CHANNEL_FILTER}
         order by member_count desc, c.name, c.id
         limit $3 offset $4"
    )))
    .bind(user)
    .bind(pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    Ok((
        total,
        rows.into_iter()
            .map(|r| crate::resources::ChannelSummary {
                conversation: r.row.into_resource(r.unread_count),
                member_count: r.member_count,
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update conversations c set
            name = coalesce($2, c.name),
            description = coalesce($3, c.description),
            avatar_url = coalesce($4, c.avatar_url)
         where c.id = $1
         returning {COLUMNS}"
    )))
    .bind(id)
    .bind(name)
    .bind(description)
    .bind(avatar_url)
    .fetch_optional(conn)
    .await
}

/// Marks the conversation archived (idempotent). `None` when the row is gone.
pub async fn archive(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update conversations c set is_archived = true where c.id = $1 returning {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}
