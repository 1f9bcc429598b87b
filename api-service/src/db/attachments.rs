//! `attachments`: files uploaded to messages (docs/api.md, "Uploads and downloads"). Reading a
//! message's attachments is in [`super::messages::attachments_of`], next to the other parts of a
//! Message.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db::messages::{AttachmentRow, MessageRow},
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
    let row = sqlx::query_as!(
        AttachmentRow,
        r#"insert into attachments as a
               (message_id, message_created_at, file_name, file_type, file_size, file_url,
                thumbnail_url, width, height, duration)
           select m.id, m.created_at, $3, $4, $5, $6, $10, $7, $8, round($11::float8::numeric, 3)
           from messages m
           where m.id = $1 and m.created_at = $2 and m.is_deleted is not true
             and exists (
                   select 1 from conversation_participants p
                   where p.conversation_id = m.conversation_id and p.user_id = $9
                     and p.left_at is null)
           returning a.id, a.message_id, a.file_name, a.file_type, a.file_size, a.file_url,
                     a.thumbnail_url, a.width, a.height, a.duration::float8 as "duration?",
                     coalesce(a.created_at, now()) as "created_at!""#,
        message.id,
        message.created_at,
        new.file_name,
        new.file_type,
        new.file_size,
        new.file_url,
        new.width,
        new.height,
        uploader,
        new.thumbnail_url,
        new.duration,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// The media gallery of a conversation (`GET /conversations/{id}/media`): attachments of its
/// non-deleted messages, newest first (ties by id), one page of them, with the size of the whole
/// set.
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
    let total = sqlx::query_scalar!(
        r#"select count(*) as "total!"
           from attachments a
           join messages m on m.id = a.message_id and m.created_at = a.message_created_at
           where m.conversation_id = $1 and not coalesce(m.is_deleted, false)"#,
        conversation,
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as!(
        AttachmentRow,
        r#"select a.id, a.message_id, a.file_name, a.file_type, a.file_size, a.file_url,
                  a.thumbnail_url, a.width, a.height, a.duration::float8 as "duration?",
                  coalesce(a.created_at, now()) as "created_at!"
           from attachments a
           join messages m on m.id = a.message_id and m.created_at = a.message_created_at
           where m.conversation_id = $1 and not coalesce(m.is_deleted, false)
           order by a.created_at desc nulls last, a.id
           limit $2 offset $3"#,
        conversation,
        limit,
        offset,
    )
    .fetch_all(conn)
    .await?;
    Ok((total, rows.into_iter().map(Into::into).collect()))
}
