//! `conversation_participants`: active participants (`left_at` null), inserts, membership.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::resources::Participant;

/// A participant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParticipantRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub nickname: Option<String>,
    pub joined_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as role, p.nickname, \
     coalesce(p.joined_at, now()) as joined_at";

impl From<ParticipantRow> for Participant {
    fn from(r: ParticipantRow) -> Self {
        Participant {
            id: r.id,
            conversation_id: r.conversation_id,
            user_id: r.user_id,
            role: r.role,
            nickname: r.nickname,
            joined_at: r.joined_at.into(),
        }
    }
}

/// Active participants, `joined_at` ascending, ties in the order they were (re)added.
pub async fn active(conn: &mut PgConnection, conversation: Uuid) -> sqlx::Result<Vec<Participant>> {
    let rows: Vec<ParticipantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from conversation_participants p
         where p.conversation_id = $1 and p.left_at is null
         order by p.joined_at, p.join_seq"
    )))
    .bind(conversation)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The user's active participation, if any (the `MEMBER` check).
pub async fn membership(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> sqlx::Result<Option<ParticipantRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from conversation_participants p
         where p.conversation_id = $1 and p.user_id = $2 and p.left_at is null"
    )))
    .bind(conversation)
    .bind(user)
    .fetch_optional(conn)
    .await
}

/// Inserts new participants in the given order (join order follows it).
pub async fn insert_many(
    conn: &mut PgConnection,
    conversation: Uuid,
    members: &[(Uuid, &str)],
) -> sqlx::Result<Vec<ParticipantRow>> {
    let users: Vec<Uuid> = members.iter().map(|m| m.0).collect();
    let roles: Vec<&str> = members.iter().map(|m| m.1).collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into conversation_participants as p (conversation_id, user_id, role)
         select $1, u.user_id, u.role from unnest($2::uuid[], $3::text[]) with ordinality as u(user_id, role, n)
         order by u.n
         returning {COLUMNS}"
    )))
    .bind(conversation)
    .bind(&users)
    .bind(&roles)
    .fetch_all(conn)
    .await
}
