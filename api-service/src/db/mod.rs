//! All SQL, one module per table family, as small named functions next to the rows they return.
//! Functions take `&mut PgConnection` so a route can run them on a pooled connection or inside
//! its transaction alike.
//!
//! Statements are `sqlx::query!` / `query_as!` / `query_scalar!`: checked at compile time
//! against the schema of `migrations/`, through the offline data in the workspace's `.sqlx/`
//! (docs/development.md, "SQL and the offline query data"). Column lists are written out in each
//! statement; `query_as!` checks them against the row struct, so a missing or mistyped column
//! does not compile.
//!
//! - [`conversations`]: conversations, unread counts, listing and discovery.
//! - [`conversation_row`]: the conversation row shared by `conversations` and `participants`.
//! - [`participants`]: participants, the roster lock, membership writes.
//! - [`messages`]: sending, history, search, edit and delete, what a Message embeds.
//! - [`attachments`]: files attached to messages and the media gallery.
//! - [`reactions`], [`pins`], [`receipts`]: reactions, pinned messages, read receipts.

pub mod attachments;
pub mod conversation_row;
pub mod conversations;
pub mod messages;
pub mod participants;
pub mod pins;
pub mod reactions;
pub mod receipts;

/// Whether `e` is a unique violation of the named constraint or index.
pub fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}
