//! Pinned messages: owners and admins pin and unpin messages of their
//! conversation; every participant lists the pins. A message is pinned at most once per
//! conversation (`unique_pin`).

use poem::web::Data as State;
use poem_openapi::{Object, OpenApi, param::Path};
use shared_proto::events::{self as pb, EventKind, event::Body};
use uuid::Uuid;

use crate::{
    db::{self, pins::PinError},
    error::{self, ApiError, Details, E400, E401, E403, E404, E409, E413, E500, Fail},
    events::Audience,
    http::{
        Caller, Data, JsonBody, NoContent,
        params::{ConversationId, MessageId},
    },
    resources::PinnedMessage,
    routes::{ApiTags, require_member},
    state::AppState,
};

/// Body of `POST /conversations/{id}/pins`.
#[derive(Object)]
pub struct PinMessage {
    /// A non-deleted message of this conversation.
    pub message_id: Uuid,
}

pub struct PinsApi;

fn is_admin(role: &str) -> bool {
    matches!(role, "owner" | "admin")
}

#[OpenApi(tag = "ApiTags::Pins")]
impl PinsApi {
    /// Pin a message (owners and admins; so never in a direct conversation).
    #[oai(
        path = "/conversations/:id/pins",
        method = "post",
        operation_id = "pinMessage"
    )]
    async fn pin(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        body: JsonBody<PinMessage>,
    ) -> Result<Data<PinnedMessage, 201>, Fail<{ E400 | E401 | E403 | E404 | E409 | E413 | E500 }>>
    {
        let id = id.get()?;
        let raw = body.parse()?.req_str("message_id")?;
        let user = caller.user()?;
        if raw.is_empty() {
            return Err(Details::one("message_id", "message_id is required").into());
        }
        let message_id = shared_auth::parse_uuid(&raw)
            .ok_or_else(|| Details::one("message_id", "invalid UUID format"))?;
        let mut conn = state.pool.acquire().await?;
        let message = db::messages::find(&mut conn, message_id)
            .await?
            .filter(|m| m.conversation_id == id && !m.is_deleted)
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;
        let me = require_member(&mut conn, id, user).await?;
        if !is_admin(&me.role) {
            return Err(ApiError::Forbidden("Only owners and admins can pin messages").into());
        }
        let pin = match db::pins::insert(&mut conn, &message, user).await {
            Ok(Some(row)) => PinnedMessage::from(row),
            // Deleted since the message check: the answer that check would give now.
            Ok(None) => return Err(ApiError::NotFound(error::MESSAGE_NOT_FOUND).into()),
            Err(PinError::AlreadyPinned) => {
                return Err(ApiError::Conflict("Message is already pinned").into());
            }
            Err(PinError::Database(e)) => return Err(e.into()),
        };
        state
            .events
            .publish(
                EventKind::MessagePinned,
                Audience::Room,
                id,
                user,
                Body::PinnedMessage((&pin).into()),
            )
            .await;
        Ok(Data(pin))
    }

    /// Unpin a message (owners and admins). Succeeds also when the message was not pinned.
    #[oai(
        path = "/conversations/:id/pins/:messageId",
        method = "delete",
        operation_id = "unpinMessage"
    )]
    async fn unpin(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        #[oai(name = "messageId")] message_id: Path<MessageId>,
    ) -> Result<NoContent, Fail<{ E400 | E401 | E403 | E500 }>> {
        let id = id.get()?;
        let message_id = message_id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let me = require_member(&mut conn, id, user).await?;
        if !is_admin(&me.role) {
            return Err(ApiError::Forbidden("Only owners and admins can unpin messages").into());
        }
        db::pins::delete(&mut conn, id, message_id).await?;
        // On every 204, whether or not a pin was removed.
        let event = Body::MessageUnpinned(pb::MessageUnpinned {
            conversation_id: id.to_string(),
            message_id: message_id.to_string(),
        });
        state
            .events
            .publish(EventKind::MessageUnpinned, Audience::Room, id, user, event)
            .await;
        Ok(NoContent)
    }

    /// Pinned messages of the conversation (pins of deleted messages included), most recent
    /// first.
    #[oai(
        path = "/conversations/:id/pins",
        method = "get",
        operation_id = "listPins"
    )]
    async fn list(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
    ) -> Result<Data<Vec<PinnedMessage>>, Fail<{ E400 | E401 | E403 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        require_member(&mut conn, id, user).await?;
        Ok(Data(db::pins::list(&mut conn, id).await?))
    }
}
