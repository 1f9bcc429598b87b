//! [`ConversationRow`]: a `conversations` row as the statements of [`super::conversations`] and
//! [`super::participants`] (the roster lock) return it, and its wire shape. It sits apart from
//! both so that neither module imports the other's row type.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::resources::{Conversation, Timestamp};

/// A `conversations` row. Statements select it as
///
/// ```sql
/// c.id, c.type::text as "kind!", c.name, c.description, c.avatar_url, c.creator_id,
/// coalesce(c.is_archived, false) as "is_archived!", c.last_message_at,
/// coalesce(c.created_at, now()) as "created_at!",
/// coalesce(c.updated_at, c.created_at, now()) as "updated_at!"
/// ```
///
/// (`conversations` alias `c`): the version-1 columns `is_archived`, `created_at` and
/// `updated_at` are nullable (migration 000001), and a null reads as the column's default.
#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub id: Uuid,
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub avatar_url: Option<String>,
    pub creator_id: Option<Uuid>,
    pub is_archived: bool,
    pub last_message_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ConversationRow {
    /// The wire shape, with the caller's unread count.
    pub fn into_resource(self, unread_count: i64) -> Conversation {
        Conversation {
            id: self.id,
            kind: self.kind,
            name: self.name,
            description: self.description,
            avatar_url: self.avatar_url,
            creator_id: self.creator_id,
            is_archived: self.is_archived,
            last_message_at: self.last_message_at.map(Timestamp::from),
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
            unread_count,
        }
    }
}
