//! `conversation_participants`: active participants (`left_at` null), inserts, membership, and
//! the membership writes of the participants routes (add or re-activate, role changes, leaving,
//! ownership succession).
//!
//! Every statement returns the columns of [`ParticipantRow`] for alias `p`:
//! `p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!", p.nickname,
//! coalesce(p.joined_at, now()) as "joined_at!"` (`role` and `joined_at` are nullable in the
//! version-1 schema, migration 000001; a null reads as the column's default).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::conversation_row::ConversationRow;
use crate::resources::Participant;

/// A participant row.
#[derive(Debug, Clone)]
pub struct ParticipantRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub nickname: Option<String>,
    pub joined_at: DateTime<Utc>,
}

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
    let rows = sqlx::query_as!(
        ParticipantRow,
        r#"select p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!",
                  p.nickname, coalesce(p.joined_at, now()) as "joined_at!"
           from conversation_participants p
           where p.conversation_id = $1 and p.left_at is null
           order by p.joined_at, p.join_seq"#,
        conversation,
    )
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
    sqlx::query_as!(
        ParticipantRow,
        r#"select p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!",
                  p.nickname, coalesce(p.joined_at, now()) as "joined_at!"
           from conversation_participants p
           where p.conversation_id = $1 and p.user_id = $2 and p.left_at is null"#,
        conversation,
        user,
    )
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
    sqlx::query_as!(
        ParticipantRow,
        r#"insert into conversation_participants as p (conversation_id, user_id, role)
           select $1, u.user_id, u.role
           from unnest($2::uuid[], $3::text[]) with ordinality as u(user_id, role, n)
           order by u.n
           returning p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!",
                     p.nickname, coalesce(p.joined_at, now()) as "joined_at!""#,
        conversation,
        &users,
        &roles as &[&str],
    )
    .fetch_all(conn)
    .await
}

/// Locks the conversation row until the transaction ends and returns it (`None`: the
/// conversation does not exist, the `CONV` step).
///
/// Every transaction that changes who is in a conversation, or with which role, takes this lock
/// first (and only then reads or writes participant rows), so such changes of one conversation
/// run one at a time: the checks that decide a request see the state it writes against, there is
/// never more than one owner, and ownership succession never picks someone who is leaving at the
/// same moment. `for no key update` does not block the foreign-key checks of inserts that
/// reference the conversation; it queues behind (and ahead of) the short seq-allocating update
/// of a message send, which takes the same row lock.
pub async fn lock_roster(
    conn: &mut PgConnection,
    conversation: Uuid,
) -> sqlx::Result<Option<ConversationRow>> {
    sqlx::query_as!(
        ConversationRow,
        r#"select c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url, c.creator_id,
                  coalesce(c.is_archived, false) as "is_archived!", c.last_message_at,
                  coalesce(c.created_at, now()) as "created_at!",
                  coalesce(c.updated_at, c.created_at, now()) as "updated_at!"
           from conversations c
           where c.id = $1
           for no key update"#,
        conversation,
    )
    .fetch_optional(conn)
    .await
}

/// Adds `users` as members: a new row for someone who never was a participant, the same row
/// re-activated (`left_at` cleared, role `member`, `joined_at` now, a new `join_seq`) for a
/// former one. Users who are already active are left as they are and not returned.
///
/// One statement, so a concurrent add or join of the same user cannot fail on
/// `unique_participant`: the later one finds the row active and skips it. `users` must not
/// contain duplicates (one statement may not touch a row twice). Rows come back in `users`
/// order; their `join_seq` follows that order too, so ties of `joined_at` list them that way.
pub async fn add_or_reactivate(
    conn: &mut PgConnection,
    conversation: Uuid,
    users: &[Uuid],
) -> sqlx::Result<Vec<ParticipantRow>> {
    let mut rows = sqlx::query_as!(
        ParticipantRow,
        r#"insert into conversation_participants as p (conversation_id, user_id, role)
           select $1, u.user_id, 'member' from unnest($2::uuid[]) with ordinality as u(user_id, n)
           order by u.n
           on conflict on constraint unique_participant do update
              set left_at = null,
                  role = 'member',
                  joined_at = now(),
                  join_seq = nextval(
                      pg_get_serial_sequence('conversation_participants', 'join_seq'))
              where p.left_at is not null
           returning p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!",
                     p.nickname, coalesce(p.joined_at, now()) as "joined_at!""#,
        conversation,
        users,
    )
    .fetch_all(conn)
    .await?;
    // `returning` promises no order; the response lists rows in request order.
    rows.sort_by_key(|r| users.iter().position(|u| *u == r.user_id));
    Ok(rows)
}

/// Sets an active participant's role; `None` when the user is not an active participant.
pub async fn set_role(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
    role: &str,
) -> sqlx::Result<Option<ParticipantRow>> {
    sqlx::query_as!(
        ParticipantRow,
        r#"update conversation_participants p set role = $3
           where p.conversation_id = $1 and p.user_id = $2 and p.left_at is null
           returning p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!",
                     p.nickname, coalesce(p.joined_at, now()) as "joined_at!""#,
        conversation,
        user,
        role,
    )
    .fetch_optional(conn)
    .await
}

/// Soft-deletes an active participation (`left_at` = now; the row stays for re-activation) and
/// returns it as it was, role included; `None` when the user was not an active participant.
pub async fn leave(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> sqlx::Result<Option<ParticipantRow>> {
    sqlx::query_as!(
        ParticipantRow,
        r#"update conversation_participants p set left_at = now()
           where p.conversation_id = $1 and p.user_id = $2 and p.left_at is null
           returning p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!",
                     p.nickname, coalesce(p.joined_at, now()) as "joined_at!""#,
        conversation,
        user,
    )
    .fetch_optional(conn)
    .await
}

/// Hands ownership to the successor of an owner who left: the active admin who joined first,
/// else the active member who joined first (ties in join order). Returns the new owner, or
/// `None` when nobody is left.
pub async fn promote_successor(
    conn: &mut PgConnection,
    conversation: Uuid,
) -> sqlx::Result<Option<ParticipantRow>> {
    sqlx::query_as!(
        ParticipantRow,
        r#"update conversation_participants p set role = 'owner'
           where p.id = (
              select s.id from conversation_participants s
              where s.conversation_id = $1 and s.left_at is null
              order by coalesce(s.role, 'member') = 'admin' desc, s.joined_at, s.join_seq
              limit 1)
           returning p.id, p.conversation_id, p.user_id, coalesce(p.role, 'member') as "role!",
                     p.nickname, coalesce(p.joined_at, now()) as "joined_at!""#,
        conversation,
    )
    .fetch_optional(conn)
    .await
}

/// Frees a direct conversation's user pair (`unique_active_direct_pair`) once one of its two
/// users has left, so the pair may start a new direct conversation (migration 000007).
pub async fn release_direct_pair(conn: &mut PgConnection, conversation: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "update conversations set direct_user_low = null, direct_user_high = null
         where id = $1 and direct_user_low is not null",
        conversation,
    )
    .execute(conn)
    .await?;
    Ok(())
}
