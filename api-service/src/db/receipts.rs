//! `read_receipts`: one row per (conversation, user) — `unique_read_receipt` — whose read
//! position only moves forward (http-api.md §9).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::resources::ReadReceipt;

/// A `read_receipts` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceiptRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub last_read_message_id: Uuid,
    pub last_read_at: DateTime<Utc>,
}

/// Columns of [`ReceiptRow`] for a `read_receipts` alias `r`.
const COLUMNS: &str = "r.id, r.conversation_id, r.user_id, r.last_read_message_id, \
     coalesce(r.last_read_at, now()) as last_read_at";

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
/// found in the conversation counts as position 0 (as for unread counts, §9.3).
pub async fn advance(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
    message: Uuid,
    seq: i64,
) -> sqlx::Result<Option<ReceiptRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into read_receipts as r (conversation_id, user_id, last_read_message_id, last_read_at)
         values ($1, $2, $3, now())
         on conflict on constraint unique_read_receipt do update
             set last_read_message_id = excluded.last_read_message_id,
                 last_read_at = excluded.last_read_at
             where $4 > coalesce(
                 (select m.seq from messages m
                  where m.conversation_id = r.conversation_id and m.id = r.last_read_message_id),
                 0)
         returning {COLUMNS}"
    )))
    .bind(conversation)
    .bind(user)
    .bind(message)
    .bind(seq)
    .fetch_optional(conn)
    .await
}

/// The user's receipt in the conversation, if any.
pub async fn find(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> sqlx::Result<Option<ReceiptRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from read_receipts r where r.conversation_id = $1 and r.user_id = $2"
    )))
    .bind(conversation)
    .bind(user)
    .fetch_optional(conn)
    .await
}

/// Every receipt of the conversation (former participants included), most recent read first.
pub async fn list(conn: &mut PgConnection, conversation: Uuid) -> sqlx::Result<Vec<ReadReceipt>> {
    let rows: Vec<ReceiptRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from read_receipts r
         where r.conversation_id = $1
         order by r.last_read_at desc nulls last, r.id"
    )))
    .bind(conversation)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
