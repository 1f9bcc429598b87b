//! `attachments`: files uploaded to messages (http-api.md §11). Reading a message's attachments
//! is in [`super::messages::attachments_of`], next to the other parts of a Message.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db::messages::{ATTACHMENT_COLUMNS, AttachmentRow, MessageRow},
    resources::Attachment,
};

/// An attachment about to be written.
pub struct NewAttachment<'a> {
    pub file_name: &'a str,
    pub file_type: &'a str,
    pub file_size: i64,
    pub file_url: &'a str,
    pub thumbnail_url: Option<&'a str>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    /// Seconds; stored to the millisecond.
    pub duration: Option<f64>,
}

/// Attaches a file to `message`, provided the message is still not deleted and `uploader` still
/// an active participant of its conversation (both were checked before the body was read, which
/// may have taken a while). `None` when either no longer holds.
pub async fn insert(
    conn: &mut PgConnection,
    message: &MessageRow,
    uploader: Uuid,
    new: &NewAttachment<'_>,
) -> sqlx::Result<Option<Attachment>> {
    let row: Option<AttachmentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into attachments as a
             (message_id, message_created_at, file_name, file_type, file_size, file_url,
              thumbnail_url, width, height, duration)
         select m.id, m.created_at, $3, $4, $5, $6, $10, $7, $8, round($11::numeric, 3)
         from messages m
         where m.id = $1 and m.created_at = $2 and m.is_deleted is not true
           and exists (
                 select 1 from conversation_participants p
                 where p.conversation_id = m.conversation_id and p.user_id = $9
                   and p.left_at is null)
         returning {ATTACHMENT_COLUMNS}"
    )))
    .bind(message.id)
    .bind(message.created_at)
    .bind(new.file_name)
    .bind(new.file_type)
    .bind(new.file_size)
    .bind(new.file_url)
    .bind(new.width)
    .bind(new.height)
    .bind(uploader)
    .bind(new.thumbnail_url)
    .bind(new.duration)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// The media gallery of a conversation (§11.3): attachments of its non-deleted messages, newest
/// first (ties by id), one page of them, with the size of the whole set.
///
/// Attachments carry no conversation id, so the query walks the conversation's messages
/// (`idx_messages_conversation_seq`, by its `conversation_id` prefix) and joins their
/// attachments (`idx_attachments_message`); the join on `message_created_at` too keeps each
/// lookup to one partition.
pub async fn gallery(
    conn: &mut PgConnection,
    conversation: Uuid,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(i64, Vec<Attachment>)> {
    const FROM: &str = "from attachments a
         join messages m on m.id = a.message_id and m.created_at = a.message_created_at
         where m.conversation_id = $1 and not coalesce(m.is_deleted, false)";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) {FROM}")))
        .bind(conversation)
        .fetch_one(&mut *conn)
        .await?;
    let rows: Vec<AttachmentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {ATTACHMENT_COLUMNS} {FROM}
         order by a.created_at desc nulls last, a.id
         limit $2 offset $3"
    )))
    .bind(conversation)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?;
    Ok((total, rows.into_iter().map(Into::into).collect()))
}
