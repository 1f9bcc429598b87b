//! Reactions: add one of my reactions to a message, remove it, list a
//! message's reactions. Reactions of deleted messages stay listed and removable.

use poem::web::Data as State;
use poem_openapi::{Object, OpenApi, param::Path};
use shared_proto::events::{self as pb, EventKind, event::Body};

use crate::{
    db::{self, reactions::Added},
    error::{self, ApiError, Details, E400, E401, E403, E404, E409, E413, E500, Fail},
    events::Audience,
    http::{Caller, Data, JsonBody, NoContent, has_nul, params::MessageId},
    resources::Reaction,
    routes::{ApiTags, require_member},
    state::AppState,
};

/// Longest emoji, in UTF-8 bytes.
const MAX_EMOJI: usize = 50;

/// Body of `POST /messages/{id}/reactions`.
#[derive(Object)]
pub struct AddReaction {
    /// Any non-empty string of at most 50 bytes.
    pub emoji: String,
}

pub struct ReactionsApi;

#[OpenApi(tag = "ApiTags::Reactions")]
impl ReactionsApi {
    /// React to a message. A user may hold several different emojis on one message, each once.
    #[oai(
        path = "/messages/:id/reactions",
        method = "post",
        operation_id = "addReaction"
    )]
    async fn add(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
        body: JsonBody<AddReaction>,
    ) -> Result<Data<Reaction, 201>, Fail<{ E400 | E401 | E403 | E404 | E409 | E413 | E500 }>> {
        let id = id.get()?;
        let emoji = body.parse()?.req_str("emoji")?;
        let user = caller.user()?;
        if emoji.is_empty() {
            return Err(Details::one("emoji", "emoji is required").into());
        }
        if emoji.len() > MAX_EMOJI {
            return Err(Details::one("emoji", "emoji must not exceed 50 characters").into());
        }
        let mut conn = state.pool.acquire().await?;
        let message = db::messages::find(&mut conn, id)
            .await?
            .filter(|m| !m.is_deleted)
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;
        require_member(&mut conn, message.conversation_id, user).await?;
        let reaction = match db::reactions::add(&mut conn, &message, user, &emoji).await? {
            Added::Created(r) => r,
            Added::Duplicate => return Err(ApiError::Conflict("Reaction already exists").into()),
            Added::MessageGone => {
                return Err(ApiError::NotFound(error::MESSAGE_NOT_FOUND).into());
            }
        };
        drop(conn);
        state
            .events
            .publish(
                EventKind::ReactionAdded,
                Audience::Room,
                message.conversation_id,
                user,
                Body::Reaction(pb::Reaction::from(&reaction)),
            )
            .await;
        Ok(Data(reaction))
    }

    /// Remove my reaction with this emoji (the percent-decoded path segment). Succeeds also
    /// when there was none.
    #[oai(
        path = "/messages/:id/reactions/:emoji",
        method = "delete",
        operation_id = "removeReaction"
    )]
    async fn remove(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
        emoji: Path<String>,
    ) -> Result<NoContent, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let message = db::messages::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;
        require_member(&mut conn, message.conversation_id, user).await?;
        // No stored emoji holds U+0000 (nor can it be sent to PostgreSQL): nothing to remove.
        let removed =
            !has_nul(&emoji) && db::reactions::remove(&mut conn, message.id, user, &emoji).await?;
        drop(conn);
        if removed {
            state
                .events
                .publish(
                    EventKind::ReactionRemoved,
                    Audience::Room,
                    message.conversation_id,
                    user,
                    Body::ReactionRemoved(pb::ReactionRemoved {
                        emoji: emoji.0,
                        message_id: message.id.to_string(),
                        user_id: user.to_string(),
                    }),
                )
                .await;
        }
        Ok(NoContent)
    }

    /// Every reaction on a message, oldest first (deleted messages included).
    #[oai(
        path = "/messages/:id/reactions",
        method = "get",
        operation_id = "listReactions"
    )]
    async fn list(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
    ) -> Result<Data<Vec<Reaction>>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let message = db::messages::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;
        require_member(&mut conn, message.conversation_id, user).await?;
        Ok(Data(db::reactions::list(&mut conn, message.id).await?))
    }
}
