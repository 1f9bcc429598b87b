//! Read receipts: mark a conversation read up to a message, list who
//! read how far. A receipt only ever moves forward, by `seq`.

use poem::web::Data as State;
use poem_openapi::{Object, OpenApi, param::Path};
use shared_proto::events::{EventKind, event::Body};
use uuid::Uuid;

use crate::{
    db,
    error::{self, ApiError, Details, E400, E401, E403, E404, E413, E500, Fail},
    events::Audience,
    http::{Caller, Data, JsonBody, params::ConversationId},
    resources::ReadReceipt,
    routes::{ApiTags, require_member},
    state::AppState,
};

/// Body of `POST /conversations/{id}/read`.
#[derive(Object)]
pub struct MarkRead {
    /// The newest message the caller has read (a message of this conversation; deleted ones
    /// are accepted).
    pub last_read_message_id: Uuid,
}

pub struct ReceiptsApi;

#[OpenApi(tag = "ApiTags::Receipts")]
impl ReceiptsApi {
    /// Mark the conversation read up to a message. The receipt only moves forward: an older (or
    /// the same) message leaves it as it is and returns it unchanged.
    #[oai(
        path = "/conversations/:id/read",
        method = "post",
        operation_id = "markRead"
    )]
    async fn mark(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        body: JsonBody<MarkRead>,
    ) -> Result<Data<ReadReceipt>, Fail<{ E400 | E401 | E403 | E404 | E413 | E500 }>> {
        let id = id.get()?;
        let raw = body.parse()?.req_str("last_read_message_id")?;
        let user = caller.user()?;
        if raw.is_empty() {
            return Err(
                Details::one("last_read_message_id", "last_read_message_id is required").into(),
            );
        }
        let message_id = shared_auth::parse_uuid(&raw)
            .ok_or_else(|| Details::one("last_read_message_id", "invalid UUID format"))?;
        let mut conn = state.pool.acquire().await?;
        // A conversation that does not exist has no participants: 403, never 404.
        require_member(&mut conn, id, user).await?;
        let message = db::messages::find(&mut conn, message_id)
            .await?
            .filter(|m| m.conversation_id == id)
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;

        match db::receipts::advance(&mut conn, id, user, message.id, message.seq).await? {
            Some(moved) => {
                let receipt = ReadReceipt::from(moved);
                state
                    .events
                    .publish(
                        EventKind::ReadUpdated,
                        Audience::Room,
                        id,
                        user,
                        Body::ReadReceipt((&receipt).into()),
                    )
                    .await;
                Ok(Data(receipt))
            }
            // Already at this message or further: nothing changes, no event. The receipt exists
            // (it is what stopped the update) and receipts are never deleted while their
            // conversation exists.
            None => Ok(db::receipts::find(&mut conn, id, user)
                .await?
                .map(|r| Data(r.into()))
                .ok_or(ApiError::Forbidden(error::NOT_A_PARTICIPANT))?),
        }
    }

    /// Read receipts of the conversation: one per user who ever marked it read (former
    /// participants included), most recent first.
    #[oai(
        path = "/conversations/:id/read",
        method = "get",
        operation_id = "listReadReceipts"
    )]
    async fn list(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
    ) -> Result<Data<Vec<ReadReceipt>>, Fail<{ E400 | E401 | E403 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        require_member(&mut conn, id, user).await?;
        Ok(Data(db::receipts::list(&mut conn, id).await?))
    }
}
