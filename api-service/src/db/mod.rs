//! All SQL, one module per table family, as small named functions next to the rows they return.
//! Functions take `&mut PgConnection` so a route can run them on a pooled connection or inside
//! its transaction alike.

pub mod attachments;
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
