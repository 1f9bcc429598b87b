//! `messages` and what a Message embeds (reactions, attachments).
//!
//! Message ids are UUIDv7 for every message this service writes, with `created_at` in the same
//! millisecond, so a lookup by id can be narrowed to one partition; older (v4) ids fall back to
//! probing every partition's primary-key index.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::resources::{Attachment, Message, ReactionRef, Timestamp};

/// A `messages` row (deleted or not).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub content: Option<String>,
    pub metadata: Option<sqlx::types::Json<serde_json::Value>>,
    pub reply_to_id: Option<Uuid>,
    pub client_msg_id: Option<String>,
    pub is_edited: bool,
    pub edited_at: Option<DateTime<Utc>>,
    pub is_deleted: bool,
    pub created_at: DateTime<Utc>,
}

/// Columns of [`MessageRow`] for a `messages` alias `m`.
pub const COLUMNS: &str = "m.id, m.conversation_id, m.sender_id, m.seq, m.type::text as kind, m.content, m.metadata, \
     m.reply_to_id, m.client_msg_id, coalesce(m.is_edited, false) as is_edited, m.edited_at, \
     coalesce(m.is_deleted, false) as is_deleted, m.created_at";

/// The `created_at` range a UUIDv7 id pins its row to (`None` for other versions).
pub fn v7_window(id: Uuid) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let start = DateTime::from_timestamp(secs as i64, nanos)?;
    Some((start, start + chrono::Duration::milliseconds(1)))
}

/// The message by id, deleted or not.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<MessageRow>> {
    if let Some((from, to)) = v7_window(id) {
        let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from messages m where m.id = $1 and m.created_at >= $2 and m.created_at < $3"
        )))
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_optional(&mut *conn)
        .await?;
        if row.is_some() {
            return Ok(row);
        }
    }
    sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from messages m where m.id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Reactions of the given messages, in creation order, grouped by message id.
pub async fn reactions_of(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, ReactionRef)>> {
    let rows: Vec<(Uuid, String, Uuid)> = sqlx::query_as(
        "select message_id, emoji, user_id from message_reactions
         where message_id = any($1) order by created_at, id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(m, emoji, user_id)| (m, ReactionRef { emoji, user_id })).collect())
}

/// An `attachments` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttachmentRow {
    pub id: Uuid,
    pub message_id: Uuid,
    pub file_name: String,
    pub file_type: String,
    pub file_size: i64,
    pub file_url: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub created_at: DateTime<Utc>,
}

pub const ATTACHMENT_COLUMNS: &str = "a.id, a.message_id, a.file_name, a.file_type, a.file_size, a.file_url, \
     a.width, a.height, coalesce(a.created_at, now()) as created_at";

impl From<AttachmentRow> for Attachment {
    fn from(a: AttachmentRow) -> Self {
        Attachment {
            id: a.id,
            message_id: a.message_id,
            file_name: a.file_name,
            file_type: a.file_type,
            file_size: a.file_size,
            file_url: a.file_url,
            width: a.width,
            height: a.height,
            created_at: a.created_at.into(),
        }
    }
}

/// Attachments of the given messages, `created_at` ascending.
pub async fn attachments_of(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Attachment>> {
    let rows: Vec<AttachmentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {ATTACHMENT_COLUMNS} from attachments a where a.message_id = any($1) order by a.created_at, a.id"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

impl MessageRow {
    /// The wire shape, with the given reactions and attachments.
    pub fn into_resource(self, reactions: Vec<ReactionRef>, attachments: Vec<Attachment>) -> Message {
        Message {
            id: self.id,
            conversation_id: self.conversation_id,
            sender_id: self.sender_id,
            seq: self.seq,
            kind: self.kind,
            content: self.content,
            metadata: self.metadata.map(|j| j.0).filter(|v| !v.is_null()),
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
    let mut reactions = reactions_of(&mut *conn, &ids).await?;
    let mut attachments = attachments_of(&mut *conn, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine: Vec<ReactionRef> =
                reactions.extract_if(.., |(m, _)| *m == row.id).map(|(_, r)| r).collect();
            let files: Vec<Attachment> = attachments.extract_if(.., |a| a.message_id == row.id).collect();
            row.into_resource(mine, files)
        })
        .collect())
}

/// One full Message by row.
pub async fn embed_one(conn: &mut PgConnection, row: MessageRow) -> sqlx::Result<Message> {
    Ok(embed(conn, vec![row]).await?.pop().expect("one row in, one message out"))
}
