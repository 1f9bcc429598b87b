//! `messages` and what a Message embeds (reactions, attachments): the send statement that
//! allocates `seq`, idempotency keys (`message_client_ids`), history by offset or by `seq`, French
//! full-text search, edit and soft delete.
//!
//! Message ids are UUIDv7 for every message this service writes, with `created_at` in the same
//! millisecond, so a lookup by id can be narrowed to one partition; older (v4) ids fall back to
//! probing every partition's primary-key index.
//!
//! Every statement that returns a [`MessageRow`] selects, for alias `m`:
//! `m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!", m.content,
//! m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
//! coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
//! coalesce(m.is_deleted, false) as "is_deleted!", m.created_at`
//! (`type`, `is_edited` and `is_deleted` are nullable in the version-1 schema, migration 000001).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::resources::{Attachment, Message, ReactionRef, Timestamp};

/// A `messages` row (deleted or not).
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub content: Option<String>,
    /// jsonb as PostgreSQL writes it (`{"a": 1.50}`); numbers are never parsed.
    pub metadata: Option<String>,
    pub reply_to_id: Option<Uuid>,
    pub client_msg_id: Option<String>,
    pub is_edited: bool,
    pub edited_at: Option<DateTime<Utc>>,
    pub is_deleted: bool,
    pub created_at: DateTime<Utc>,
}

/// The `created_at` range a UUIDv7 id pins its row to (`None` for other versions).
pub fn v7_window(id: Uuid) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let start = DateTime::from_timestamp(secs as i64, nanos)?;
    Some((start, start + chrono::Duration::milliseconds(1)))
}

/// The message by id, deleted or not.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<MessageRow>> {
    if let Some((from, to)) = v7_window(id) {
        let row = sqlx::query_as!(
            MessageRow,
            r#"select m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!",
                      m.content, m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
                      coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
                      coalesce(m.is_deleted, false) as "is_deleted!", m.created_at
               from messages m
               where m.id = $1 and m.created_at >= $2 and m.created_at < $3"#,
            id,
            from,
            to,
        )
        .fetch_optional(&mut *conn)
        .await?;
        if row.is_some() {
            return Ok(row);
        }
    }
    sqlx::query_as!(
        MessageRow,
        r#"select m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!",
                  m.content, m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
                  coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
                  coalesce(m.is_deleted, false) as "is_deleted!", m.created_at
           from messages m
           where m.id = $1"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Reactions of the given messages, in creation order, grouped by message id.
pub async fn reactions_of(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, ReactionRef)>> {
    let rows = sqlx::query!(
        "select message_id, emoji, user_id from message_reactions
         where message_id = any($1) order by created_at, id",
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let reaction = ReactionRef {
                emoji: r.emoji,
                user_id: r.user_id,
            };
            (r.message_id, reaction)
        })
        .collect())
}

/// An `attachments` row. Statements select it, for alias `a`, as
/// `a.id, a.message_id, a.file_name, a.file_type, a.file_size, a.file_url, a.thumbnail_url,
/// a.width, a.height, a.duration::float8 as "duration?", coalesce(a.created_at, now()) as
/// "created_at!"` (`duration` is `numeric(12,3)`, migration 000017).
#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub id: Uuid,
    pub message_id: Uuid,
    pub file_name: String,
    pub file_type: String,
    pub file_size: i64,
    pub file_url: String,
    pub thumbnail_url: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub duration: Option<f64>,
    pub created_at: DateTime<Utc>,
}

impl From<AttachmentRow> for Attachment {
    fn from(a: AttachmentRow) -> Self {
        Attachment {
            id: a.id,
            message_id: a.message_id,
            file_name: a.file_name,
            file_type: a.file_type,
            file_size: a.file_size,
            file_url: a.file_url,
            thumbnail_url: a.thumbnail_url,
            width: a.width,
            height: a.height,
            duration: a.duration,
            created_at: a.created_at.into(),
        }
    }
}

/// Attachments of the given messages, `created_at` ascending.
pub async fn attachments_of(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Attachment>> {
    let rows = sqlx::query_as!(
        AttachmentRow,
        r#"select a.id, a.message_id, a.file_name, a.file_type, a.file_size, a.file_url,
                  a.thumbnail_url, a.width, a.height, a.duration::float8 as "duration?",
                  coalesce(a.created_at, now()) as "created_at!"
           from attachments a
           where a.message_id = any($1)
           order by a.created_at, a.id"#,
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

impl MessageRow {
    /// The wire shape, with the given reactions and attachments.
    pub fn into_resource(
        self,
        reactions: Vec<ReactionRef>,
        attachments: Vec<Attachment>,
    ) -> Message {
        Message {
            id: self.id,
            conversation_id: self.conversation_id,
            sender_id: self.sender_id,
            seq: self.seq,
            kind: self.kind,
            content: self.content,
            metadata: self
                .metadata
                .as_deref()
                .and_then(crate::resources::raw_json),
            reply_to_id: self.reply_to_id,
            client_msg_id: self.client_msg_id,
            is_edited: self.is_edited,
            edited_at: self.edited_at.map(Timestamp::from),
            created_at: self.created_at.into(),
            reactions,
            attachments,
        }
    }
}

/// Turns rows into full Messages with their reactions and attachments (two queries in all).
pub async fn embed(conn: &mut PgConnection, rows: Vec<MessageRow>) -> sqlx::Result<Vec<Message>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    // Grouped by message, keeping the query's order (creation order) within each group.
    let mut reactions: HashMap<Uuid, Vec<ReactionRef>> = HashMap::new();
    for (message, reaction) in reactions_of(&mut *conn, &ids).await? {
        reactions.entry(message).or_default().push(reaction);
    }
    let mut attachments: HashMap<Uuid, Vec<Attachment>> = HashMap::new();
    for attachment in attachments_of(&mut *conn, &ids).await? {
        attachments
            .entry(attachment.message_id)
            .or_default()
            .push(attachment);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine = reactions.remove(&row.id).unwrap_or_default();
            let files = attachments.remove(&row.id).unwrap_or_default();
            row.into_resource(mine, files)
        })
        .collect())
}

/// One full Message by row.
pub async fn embed_one(conn: &mut PgConnection, row: MessageRow) -> sqlx::Result<Message> {
    Ok(embed(conn, vec![row])
        .await?
        .pop()
        .expect("one row in, one message out"))
}

// ----- sending ----------------------------------------------------------------------------------

/// A new message's id and creation time: `created_at` is now at microsecond precision (what
/// PostgreSQL stores) and the id is a UUIDv7 of that same instant, so [`v7_window`] pins the row
/// to its partition. No v7 counter context is used: a context may move the id's timestamp past
/// the clock to stay monotonic, and the id's millisecond must contain `created_at`. Ordering
/// within a conversation comes from `seq`, uniqueness from the 74 random bits.
pub fn new_identity() -> (Uuid, DateTime<Utc>) {
    let now = Utc::now();
    let created_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let micros = created_at.timestamp_micros();
    let secs = micros.div_euclid(1_000_000) as u64;
    let nanos = (micros.rem_euclid(1_000_000) * 1_000) as u32;
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos));
    (id, created_at)
}

/// What `POST /conversations/{id}/messages` stores.
pub struct NewMessage<'a> {
    /// From [`new_identity`], with `created_at`.
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub conversation_id: Uuid,
    pub sender_id: Uuid,
    /// One of the `message_type` values.
    pub kind: &'a str,
    pub content: Option<&'a str>,
    /// Compact JSON text, stored as `jsonb`.
    pub metadata: Option<&'a str>,
    pub reply_to_id: Option<Uuid>,
    pub client_msg_id: Option<&'a str>,
}

/// What the send statement found and did for one message of a batch.
#[derive(Debug)]
pub struct Sent {
    /// Step 3: the conversation exists.
    pub conversation_found: bool,
    /// Step 4: the sender is an active participant.
    pub member: bool,
    /// Step 5: no reply target, or one in this conversation and not deleted.
    pub reply_ok: bool,
    /// Step 6: the sender had already used the `client_msg_id` here before this statement.
    pub key_used: bool,
    /// The stored message, if it was stored.
    pub row: Option<MessageRow>,
}

/// The send statement of [`send_batch`] as a `query_as!` into [`SentRow`], with `$reply_lookup`
/// (a string literal) as the lateral join `r` that finds each message's reply target. A macro
/// because `query_as!` needs the whole statement as literals at compile time; each expansion is
/// checked (and has its offline data) on its own.
macro_rules! send_statement {
    ($reply_lookup:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            SentRow,
            r#"with j as (
                   select *
                   from unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[],
                               $6::text[], $7::text[], $8::uuid[], $9::text[], $10::bool[])
                        with ordinality as j(id, created_at, conv, sender, kind, content, metadata,
                                             reply, client_id, admitted, ord)
               ),
               checked as materialized (
                   select j.*,
                          c.found is not null as conversation_found,
                          p.found is not null as member,
                          j.reply is null or coalesce(
                              r.conversation_id = j.conv
                              and not coalesce(r.is_deleted, false), false)
                              as reply_ok,
                          k.found is not null as key_used
                   from j
                   left join lateral (
                       select true as found from conversations c where c.id = j.conv limit 1
                   ) c on true
                   left join lateral (
                       select true as found from conversation_participants p
                       where p.conversation_id = j.conv and p.user_id = j.sender
                         and p.left_at is null
                       limit 1
                   ) p on true
                   left join lateral (
                       select true as found from message_client_ids k
                       where k.conversation_id = j.conv and k.sender_id = j.sender
                         and k.client_msg_id = j.client_id
                       limit 1
                   ) k on true
                   "# + $reply_lookup + r#"
               ),
               eligible as materialized (
                   select * from checked
                   where admitted and conversation_found and member and kind <> 'system'
                     and reply_ok and not key_used
               ),
               locked as materialized (
                   select c.id from conversations c
                   where c.id in (select conv from eligible)
                   order by c.id
                   for no key update
               ),
               claimed as (
                   insert into message_client_ids
                       (conversation_id, sender_id, client_msg_id, message_id, message_created_at)
                   select e.conv, e.sender, e.client_id, e.id, e.created_at
                   from eligible e
                   where e.client_id is not null and e.conv in (select id from locked)
                   order by e.ord
                   on conflict do nothing
                   returning message_id
               ),
               kept as materialized (
                   select e.*,
                          row_number() over (partition by e.conv order by e.ord) as n,
                          count(*) over (partition by e.conv) as total
                   from eligible e
                   where e.conv in (select id from locked)
                     and (e.client_id is null or e.id in (select message_id from claimed))
               ),
               bumped as (
                   update conversations c
                   set last_seq = c.last_seq + t.total,
                       last_message_at = greatest(c.last_message_at, t.latest)
                   from (select k.conv, max(k.total) as total, max(k.created_at) as latest
                         from kept k group by k.conv) t
                   where c.id = t.conv
                   returning c.id, c.last_seq
               ),
               inserted as (
                   insert into messages as m
                       (id, created_at, conversation_id, sender_id, seq, type, content, metadata,
                        reply_to_id, client_msg_id)
                   select k.id, k.created_at, k.conv, k.sender, b.last_seq - k.total + k.n,
                          k.kind::message_type, k.content, k.metadata::jsonb, k.reply, k.client_id
                   from kept k join bumped b on b.id = k.conv
                   order by k.ord
                   returning m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as kind,
                             m.content, m.metadata::text as metadata, m.reply_to_id,
                             m.client_msg_id, coalesce(m.is_edited, false) as is_edited,
                             m.edited_at, coalesce(m.is_deleted, false) as is_deleted,
                             m.created_at
               )
               select ch.conversation_found as "conversation_found!", ch.member as "member!",
                      ch.reply_ok as "reply_ok!", ch.key_used as "key_used!",
                      i.id as "id?", i.conversation_id as "conversation_id?",
                      i.sender_id as "sender_id?", i.seq as "seq?", i.kind as "kind?",
                      i.content as "content?", i.metadata as "metadata?",
                      i.reply_to_id as "reply_to_id?", i.client_msg_id as "client_msg_id?",
                      i.is_edited as "is_edited?", i.edited_at as "edited_at?",
                      i.is_deleted as "is_deleted?", i.created_at as "created_at?"
               from checked ch left join inserted i on i.id = ch.id
               order by ch.ord"#,
            $($arg),+
        )
    };
}

/// The checks of steps 3–6 and the write of step 8 for a batch of sends, in one statement that
/// is its own transaction. Returns one [`Sent`] per message, in slice order.
///
/// A message is stored when its conversation exists, its sender is an active participant, it is
/// not of type `system`, its reply target (if any) is a live message of the same conversation,
/// its `client_msg_id` (if any) was not used yet — also not by an earlier message of the slice
/// nor by a concurrent statement — and its `admitted` entry (the rate limit, step 7) is true.
/// Each stored message gets the next `seq` of its conversation, in slice order, with its
/// `client_msg_id` key, and moves the conversation's `last_message_at`.
///
/// The checks are index probes per message (`limit 1` keeps each a probe with that message's
/// values, whatever the statistics say). The conversation rows are locked in id order before
/// anything is written for them, which serialises concurrent writers of a conversation until
/// the statement commits: numbers are unique and gap-free, a failed statement gives its numbers
/// back, two such statements cannot deadlock on each other, and a conversation deleted
/// meanwhile gets no key written (its delete trigger removes keys only of committed sends).
/// `last_message_at` never moves backwards (a writer that waited for the lock may carry an
/// earlier `created_at`).
pub async fn send_batch(
    conn: &mut PgConnection,
    news: &[NewMessage<'_>],
    admitted: &[bool],
) -> sqlx::Result<Vec<Sent>> {
    assert_eq!(news.len(), admitted.len(), "one admission per message");
    let mut ids = Vec::with_capacity(news.len());
    let mut created = Vec::with_capacity(news.len());
    let mut conversations = Vec::with_capacity(news.len());
    let mut senders = Vec::with_capacity(news.len());
    let mut kinds = Vec::with_capacity(news.len());
    let mut contents = Vec::with_capacity(news.len());
    let mut metadata = Vec::with_capacity(news.len());
    let mut replies = Vec::with_capacity(news.len());
    let mut client_ids = Vec::with_capacity(news.len());
    for n in news {
        ids.push(n.id);
        created.push(n.created_at);
        conversations.push(n.conversation_id);
        senders.push(n.sender_id);
        kinds.push(n.kind);
        contents.push(n.content);
        metadata.push(n.metadata);
        replies.push(n.reply_to_id);
        client_ids.push(n.client_msg_id);
    }
    // The reply lookup plans every partition of `messages`, so it is only in the statement when
    // a message of the batch has a reply target. The two statements differ in that join only.
    let rows = if replies.iter().any(Option::is_some) {
        send_statement!(
            "left join lateral (
                 select r.conversation_id, r.is_deleted from messages r
                 where r.id = j.reply limit 1
             ) r on true",
            &ids,
            &created,
            &conversations,
            &senders,
            &kinds as &[&str],
            &contents as &[Option<&str>],
            &metadata as &[Option<&str>],
            &replies as &[Option<Uuid>],
            &client_ids as &[Option<&str>],
            admitted,
        )
        .fetch_all(conn)
        .await?
    } else {
        send_statement!(
            "left join lateral (select null::uuid as conversation_id, null::bool as is_deleted) r
             on true",
            &ids,
            &created,
            &conversations,
            &senders,
            &kinds as &[&str],
            &contents as &[Option<&str>],
            &metadata as &[Option<&str>],
            &replies as &[Option<Uuid>],
            &client_ids as &[Option<&str>],
            admitted,
        )
        .fetch_all(conn)
        .await?
    };
    rows.into_iter().map(SentRow::into_sent).collect()
}

/// One row of the send statement: the checks of a message and, when it was stored, its
/// [`MessageRow`] columns (all null otherwise, from the outer join).
struct SentRow {
    conversation_found: bool,
    member: bool,
    reply_ok: bool,
    key_used: bool,
    id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    sender_id: Option<Uuid>,
    seq: Option<i64>,
    kind: Option<String>,
    content: Option<String>,
    metadata: Option<String>,
    reply_to_id: Option<Uuid>,
    client_msg_id: Option<String>,
    is_edited: Option<bool>,
    edited_at: Option<DateTime<Utc>>,
    is_deleted: Option<bool>,
    created_at: Option<DateTime<Utc>>,
}

impl SentRow {
    fn into_sent(self) -> sqlx::Result<Sent> {
        /// A column of a stored message that came back null: a decoding error, as it would be
        /// for a [`MessageRow`] read directly.
        fn present<T>(value: Option<T>, column: &str) -> sqlx::Result<T> {
            value.ok_or_else(|| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: "unexpected null in a stored message".into(),
            })
        }
        let row = match self.id {
            None => None,
            Some(id) => Some(MessageRow {
                id,
                conversation_id: present(self.conversation_id, "conversation_id")?,
                sender_id: present(self.sender_id, "sender_id")?,
                seq: present(self.seq, "seq")?,
                kind: present(self.kind, "kind")?,
                content: self.content,
                metadata: self.metadata,
                reply_to_id: self.reply_to_id,
                client_msg_id: self.client_msg_id,
                is_edited: present(self.is_edited, "is_edited")?,
                edited_at: self.edited_at,
                is_deleted: present(self.is_deleted, "is_deleted")?,
                created_at: present(self.created_at, "created_at")?,
            }),
        };
        Ok(Sent {
            conversation_found: self.conversation_found,
            member: self.member,
            reply_ok: self.reply_ok,
            key_used: self.key_used,
            row,
        })
    }
}

/// [`send_batch`] with every message admitted: the rows stored, in slice order.
pub async fn insert_batch(
    conn: &mut PgConnection,
    news: &[NewMessage<'_>],
) -> sqlx::Result<Vec<MessageRow>> {
    let admitted = vec![true; news.len()];
    Ok(send_batch(conn, news, &admitted)
        .await?
        .into_iter()
        .filter_map(|sent| sent.row)
        .collect())
}

/// The message a sender already stored under `client_msg_id` in a conversation, deleted or not.
pub async fn find_by_client_id(
    conn: &mut PgConnection,
    conversation: Uuid,
    sender: Uuid,
    client_msg_id: &str,
) -> sqlx::Result<Option<MessageRow>> {
    sqlx::query_as!(
        MessageRow,
        r#"select m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!",
                  m.content, m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
                  coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
                  coalesce(m.is_deleted, false) as "is_deleted!", m.created_at
           from message_client_ids k
           join messages m on m.id = k.message_id and m.created_at = k.message_created_at
           where k.conversation_id = $1 and k.sender_id = $2 and k.client_msg_id = $3"#,
        conversation,
        sender,
        client_msg_id,
    )
    .fetch_optional(conn)
    .await
}

// ----- reading ----------------------------------------------------------------------------------

/// Which part of a conversation's history to read (docs/api.md, "Message history by `seq`").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// Everything, newest first, from `offset`.
    Latest { offset: i64 },
    /// `after < seq < before` (each bound optional, not both absent): oldest first when `after`
    /// is given (catch-up), newest first otherwise (keyset paging backwards).
    Seq {
        after: Option<i64>,
        before: Option<i64>,
    },
}

/// A page of non-deleted messages of a conversation and the size of the whole range.
///
/// Absent bounds become the widest ones, so the same two range conditions serve every case and
/// stay usable by `idx_messages_conversation_seq`. The page is read by one of two statements
/// that differ only in the direction of `order by m.seq`: a direction computed in SQL would keep
/// the planner from reading the index in order and stopping at `limit`.
pub async fn history(
    conn: &mut PgConnection,
    conversation: Uuid,
    range: HistoryRange,
    limit: i64,
) -> sqlx::Result<(i64, Vec<MessageRow>)> {
    let (after, before, offset, oldest_first) = match range {
        HistoryRange::Latest { offset } => (None, None, offset, false),
        HistoryRange::Seq { after, before } => (after, before, 0, after.is_some()),
    };
    let total = sqlx::query_scalar!(
        r#"select count(*) as "total!"
           from messages m
           where m.conversation_id = $1
             and m.is_deleted is not true
             and m.seq > coalesce($2::bigint, -1)
             and m.seq < coalesce($3::bigint, 9223372036854775807)"#,
        conversation,
        after,
        before,
    )
    .fetch_one(&mut *conn)
    .await?;
    // One checked statement per direction, differing only in `asc` / `desc` (see above).
    macro_rules! page {
        ($direction:literal) => {
            sqlx::query_as!(
                MessageRow,
                r#"select m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!",
                          m.content, m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
                          coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
                          coalesce(m.is_deleted, false) as "is_deleted!", m.created_at
                   from messages m
                   where m.conversation_id = $1
                     and m.is_deleted is not true
                     and m.seq > coalesce($2::bigint, -1)
                     and m.seq < coalesce($3::bigint, 9223372036854775807)
                   order by m.seq "# + $direction + r#"
                   limit $4 offset $5"#,
                conversation,
                after,
                before,
                limit,
                offset,
            )
            .fetch_all(conn)
            .await?
        };
    }
    let rows = if oldest_first {
        page!("asc")
    } else {
        page!("desc")
    };
    Ok((total, rows))
}

/// The full-text condition of search on alias `m`, `$2` being the query. It is written exactly
/// like the expression of the GIN index `idx_messages_content_search` (migration 000005), which
/// is what lets the planner use that index. Both statements of [`search`] contain it word for
/// word (a unit test checks that); an integration test checks that the planner uses the index.
pub const SEARCH_MATCH: &str =
    "to_tsvector('french', coalesce(m.content, '')) @@ plainto_tsquery('french', $2)";

/// Non-deleted messages of a conversation matching a French full-text query, newest first, and
/// how many match in all. A query of stop words only matches nothing.
pub async fn search(
    conn: &mut PgConnection,
    conversation: Uuid,
    query: &str,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(i64, Vec<MessageRow>)> {
    let total = sqlx::query_scalar!(
        r#"select count(*) as "total!"
           from messages m
           where m.conversation_id = $1 and m.is_deleted is not true
             and to_tsvector('french', coalesce(m.content, '')) @@ plainto_tsquery('french', $2)"#,
        conversation,
        query,
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as!(
        MessageRow,
        r#"select m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!",
                  m.content, m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
                  coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
                  coalesce(m.is_deleted, false) as "is_deleted!", m.created_at
           from messages m
           where m.conversation_id = $1 and m.is_deleted is not true
             and to_tsvector('french', coalesce(m.content, '')) @@ plainto_tsquery('french', $2)
           order by m.seq desc
           limit $3 offset $4"#,
        conversation,
        query,
        limit,
        offset,
    )
    .fetch_all(conn)
    .await?;
    Ok((total, rows))
}

// ----- changing ---------------------------------------------------------------------------------

/// Replaces the content of a message that is still not deleted and marks it edited. `None` when
/// it was deleted (or vanished) since it was read. `message` pins the row's partition.
pub async fn edit(
    conn: &mut PgConnection,
    message: &MessageRow,
    content: &str,
) -> sqlx::Result<Option<MessageRow>> {
    sqlx::query_as!(
        MessageRow,
        r#"update messages m
           set content = $3, is_edited = true, edited_at = now()
           where m.id = $1 and m.created_at = $2 and m.is_deleted is not true
           returning m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!",
                     m.content, m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
                     coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
                     coalesce(m.is_deleted, false) as "is_deleted!", m.created_at"#,
        message.id,
        message.created_at,
        content,
    )
    .fetch_optional(conn)
    .await
}

/// Soft-deletes a message that is not deleted yet. Of concurrent deletes exactly one gets the row
/// back: the others wait for its row lock, re-check `is_deleted` and find nothing (`None`).
pub async fn soft_delete(
    conn: &mut PgConnection,
    message: &MessageRow,
) -> sqlx::Result<Option<MessageRow>> {
    sqlx::query_as!(
        MessageRow,
        r#"update messages m
           set is_deleted = true, deleted_at = now()
           where m.id = $1 and m.created_at = $2 and m.is_deleted is not true
           returning m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as "kind!",
                     m.content, m.metadata::text as "metadata?", m.reply_to_id, m.client_msg_id,
                     coalesce(m.is_edited, false) as "is_edited!", m.edited_at,
                     coalesce(m.is_deleted, false) as "is_deleted!", m.created_at"#,
        message.id,
        message.created_at,
    )
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `query_as!` takes its statement as a literal, so [`search`] cannot splice
    /// [`SEARCH_MATCH`] in: this keeps the two from drifting apart.
    #[test]
    fn both_search_statements_use_the_indexed_condition_word_for_word() {
        let source = include_str!("messages.rs");
        let start = source.find("pub async fn search(").expect("search");
        let end = start + source[start..].find("\n}\n").expect("end of search");
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            words(&source[start..end])
                .matches(&words(SEARCH_MATCH))
                .count(),
            2
        );
    }
}
