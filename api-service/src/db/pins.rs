//! `pinned_messages`: at most one pin per (conversation, message) — `unique_pin`.
//!
//! Statements return the columns of [`PinRow`] for alias `p`: `p.id, p.conversation_id,
//! p.message_id, p.pinned_by, coalesce(p.pinned_at, now()) as "pinned_at!"` (`pinned_at` is
//! nullable in the version-1 schema, migration 000001).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{db::messages::MessageRow, resources::PinnedMessage};

/// A `pinned_messages` row.
#[derive(Debug, Clone)]
pub struct PinRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub pinned_by: Uuid,
    pub pinned_at: DateTime<Utc>,
}

impl From<PinRow> for PinnedMessage {
    fn from(p: PinRow) -> Self {
        PinnedMessage {
            id: p.id,
            conversation_id: p.conversation_id,
            message_id: p.message_id,
            pinned_by: p.pinned_by,
            pinned_at: p.pinned_at.into(),
        }
    }
}

/// Why a pin was not inserted.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// `unique_pin`: the message is already pinned in this conversation.
    #[error("message is already pinned")]
    AlreadyPinned,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Pins `message` in its conversation, provided it is still not deleted (it was checked before,
/// in another statement). `None` when it was deleted since.
pub async fn insert(
    conn: &mut PgConnection,
    message: &MessageRow,
    pinned_by: Uuid,
) -> Result<Option<PinRow>, PinError> {
    sqlx::query_as!(
        PinRow,
        r#"insert into pinned_messages as p
               (conversation_id, message_id, message_created_at, pinned_by)
           select m.conversation_id, m.id, m.created_at, $4
           from messages m
           where m.conversation_id = $1 and m.id = $2 and m.created_at = $3
             and m.is_deleted is not true
           returning p.id, p.conversation_id, p.message_id, p.pinned_by,
                     coalesce(p.pinned_at, now()) as "pinned_at!""#,
        message.conversation_id,
        message.id,
        message.created_at,
        pinned_by,
    )
    .fetch_optional(conn)
    .await
    .map_err(|e| {
        if super::is_unique_violation(&e, "unique_pin") {
            PinError::AlreadyPinned
        } else {
            e.into()
        }
    })
}

/// Unpins `message` in the conversation; whether a pin was removed.
pub async fn delete(
    conn: &mut PgConnection,
    conversation: Uuid,
    message: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "delete from pinned_messages where conversation_id = $1 and message_id = $2",
        conversation,
        message,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The conversation's pins (deleted messages included), most recent first.
pub async fn list(conn: &mut PgConnection, conversation: Uuid) -> sqlx::Result<Vec<PinnedMessage>> {
    let rows = sqlx::query_as!(
        PinRow,
        r#"select p.id, p.conversation_id, p.message_id, p.pinned_by,
                  coalesce(p.pinned_at, now()) as "pinned_at!"
           from pinned_messages p
           where p.conversation_id = $1
           order by p.pinned_at desc nulls last, p.id"#,
        conversation,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
