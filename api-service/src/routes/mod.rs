//! HTTP routes: `ops` (health, readiness, metrics) and the poem-openapi REST surface, one module
//! per resource. [`api_service`] assembles the OpenAPI service from them, liveness and readiness
//! included.

pub mod attachments;
pub mod conversations;
pub mod messages;
pub mod ops;
pub mod participants;
pub mod pins;
pub mod reactions;
pub mod receipts;

use poem_openapi::{OpenApiService, Tags};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db::{self, participants::ParticipantRow},
    error::{self, ApiError},
};

#[derive(Tags)]
pub enum ApiTags {
    /// Conversations: create, list, discover, update, archive.
    Conversations,
    /// Participants: add, change role, remove, leave, join a channel.
    Participants,
    /// Messages: send, history, search, edit, delete, typing.
    Messages,
    /// Reactions on messages.
    Reactions,
    /// Read receipts.
    Receipts,
    /// Pinned messages.
    Pins,
    /// Attachments and the media gallery.
    Attachments,
    /// Liveness and readiness (public, not enveloped).
    Operations,
}

/// The `MEMBER` step: the caller's active participation, or 403.
pub async fn require_member(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> Result<ParticipantRow, ApiError> {
    db::participants::membership(conn, conversation, user)
        .await?
        .ok_or(ApiError::Forbidden(error::NOT_A_PARTICIPANT))
}

/// All REST operation groups.
pub type Apis = (
    conversations::ConversationsApi,
    participants::ParticipantsApi,
    messages::MessagesApi,
    reactions::ReactionsApi,
    receipts::ReceiptsApi,
    pins::PinsApi,
    attachments::AttachmentsApi,
    ops::OpsApi,
);

/// Every REST operation, as one OpenAPI service.
pub fn api_service() -> OpenApiService<Apis, ()> {
    let apis = (
        conversations::ConversationsApi,
        participants::ParticipantsApi,
        messages::MessagesApi,
        reactions::ReactionsApi,
        receipts::ReceiptsApi,
        pins::PinsApi,
        attachments::AttachmentsApi,
        ops::OpsApi,
    );
    OpenApiService::new(apis, "ReTiCh Messaging API", env!("CARGO_PKG_VERSION"))
        .description("The REST contract of api-service (docs/api.md). Errors use the envelope {\"error\": {code, message, details?}}. Each operation lists the error statuses it can answer. UUIDs (`format: uuid`) are also accepted as 32 hex digits, `{...}`-braced or `urn:uuid:`-prefixed, in any case; they are always sent in lowercase canonical form.")
}
