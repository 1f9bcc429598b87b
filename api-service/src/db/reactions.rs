//! `message_reactions`: one row per (message, user, emoji), unique in the database
//! (`unique_reaction`), so "at most one" holds under concurrent adds.
//!
//! Statements return the columns of [`ReactionRow`] for alias `r`: `r.id, r.message_id,
//! r.user_id, r.emoji, coalesce(r.created_at, now()) as "created_at!"` (`created_at` is nullable
//! in the version-1 schema, migration 000001).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::messages::MessageRow;
use crate::resources::Reaction;

/// A `message_reactions` row.
#[derive(Debug, Clone)]
pub struct ReactionRow {
    pub id: Uuid,
    pub message_id: Uuid,
    pub user_id: Uuid,
    pub emoji: String,
    pub created_at: DateTime<Utc>,
}

impl From<ReactionRow> for Reaction {
    fn from(r: ReactionRow) -> Self {
        Reaction {
            id: r.id,
            message_id: r.message_id,
            user_id: r.user_id,
            emoji: r.emoji,
            created_at: r.created_at.into(),
        }
    }
}

/// What adding a reaction did.
#[derive(Debug)]
pub enum Added {
    Created(Reaction),
    /// The user already holds this emoji on the message (`unique_reaction`).
    Duplicate,
    /// The message was deleted since it was read.
    MessageGone,
}

/// Adds `user`'s `emoji` to a message that is still not deleted.
pub async fn add(
    conn: &mut PgConnection,
    message: &MessageRow,
    user: Uuid,
    emoji: &str,
) -> sqlx::Result<Added> {
    let row = sqlx::query_as!(
        ReactionRow,
        r#"insert into message_reactions as r (message_id, message_created_at, user_id, emoji)
           select m.id, m.created_at, $3, $4
           from messages m
           where m.id = $1 and m.created_at = $2 and m.is_deleted is not true
           returning r.id, r.message_id, r.user_id, r.emoji,
                     coalesce(r.created_at, now()) as "created_at!""#,
        message.id,
        message.created_at,
        user,
        emoji,
    )
    .fetch_optional(conn)
    .await;
    match row {
        Ok(Some(row)) => Ok(Added::Created(row.into())),
        Ok(None) => Ok(Added::MessageGone),
        Err(e) if super::is_unique_violation(&e, "unique_reaction") => Ok(Added::Duplicate),
        Err(e) => Err(e),
    }
}

/// Removes `user`'s `emoji` from a message; `true` when a row was deleted.
pub async fn remove(
    conn: &mut PgConnection,
    message: Uuid,
    user: Uuid,
    emoji: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "delete from message_reactions where message_id = $1 and user_id = $2 and emoji = $3",
        message,
        user,
        emoji,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Every reaction on a message, oldest first.
pub async fn list(conn: &mut PgConnection, message: Uuid) -> sqlx::Result<Vec<Reaction>> {
    let rows = sqlx::query_as!(
        ReactionRow,
        r#"select r.id, r.message_id, r.user_id, r.emoji,
                  coalesce(r.created_at, now()) as "created_at!"
           from message_reactions r
           where r.message_id = $1
           order by r.created_at, r.id"#,
        message,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
