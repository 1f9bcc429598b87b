//! `read_receipts`: one row per (conversation, user) — `unique_read_receipt` — whose read
//! position only moves forward.
//!
//! Statements return the columns of [`ReceiptRow`] for alias `r`: `r.id, r.conversation_id,
//! r.user_id, r.last_read_message_id, coalesce(r.last_read_at, now()) as "last_read_at!"`
//! (`last_read_at` is nullable in the version-1 schema, migration 000001).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::resources::ReadReceipt;

/// A `read_receipts` row.
#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub last_read_message_id: Uuid,
    pub last_read_at: DateTime<Utc>,
}

impl From<ReceiptRow> for ReadReceipt {
    fn from(r: ReceiptRow) -> Self {
        ReadReceipt {
            id: r.id,
            conversation_id: r.conversation_id,
            user_id: r.user_id,
            last_read_message_id: r.last_read_message_id,
            last_read_at: r.last_read_at.into(),
        }
    }
}

/// Moves the user's receipt to `message` (whose `seq` is `seq`) when that is further than where
/// it is, creating it if there is none. Returns the receipt when it was created or moved, `None`
/// when it already pointed at this message or a later one.
///
/// One statement, so concurrent marks never fail: `on conflict` locks the existing row and the
/// forward-only condition is re-checked against its latest version. A receipt whose message is not
/// found in the conversation counts as position 0 (as for unread counts, see
/// [`super::conversations`]).
pub async fn advance(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
    message: Uuid,
    seq: i64,
) -> sqlx::Result<Option<ReceiptRow>> {
    sqlx::query_as!(
        ReceiptRow,
        r#"insert into read_receipts as r
               (conversation_id, user_id, last_read_message_id, last_read_at)
           values ($1, $2, $3, now())
           on conflict on constraint unique_read_receipt do update
               set last_read_message_id = excluded.last_read_message_id,
                   last_read_at = excluded.last_read_at
               where $4 > coalesce(
                   (select m.seq from messages m
                    where m.conversation_id = r.conversation_id and m.id = r.last_read_message_id),
                   0)
           returning r.id, r.conversation_id, r.user_id, r.last_read_message_id,
                     coalesce(r.last_read_at, now()) as "last_read_at!""#,
        conversation,
        user,
        message,
        seq,
    )
    .fetch_optional(conn)
    .await
}

/// The user's receipt in the conversation, if any.
pub async fn find(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> sqlx::Result<Option<ReceiptRow>> {
    sqlx::query_as!(
        ReceiptRow,
        r#"select r.id, r.conversation_id, r.user_id, r.last_read_message_id,
                  coalesce(r.last_read_at, now()) as "last_read_at!"
           from read_receipts r
           where r.conversation_id = $1 and r.user_id = $2"#,
        conversation,
        user,
    )
    .fetch_optional(conn)
    .await
}

/// Every receipt of the conversation (former participants included), most recent read first.
pub async fn list(conn: &mut PgConnection, conversation: Uuid) -> sqlx::Result<Vec<ReadReceipt>> {
    let rows = sqlx::query_as!(
        ReceiptRow,
        r#"select r.id, r.conversation_id, r.user_id, r.last_read_message_id,
                  coalesce(r.last_read_at, now()) as "last_read_at!"
           from read_receipts r
           where r.conversation_id = $1
           order by r.last_read_at desc nulls last, r.id"#,
        conversation,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
