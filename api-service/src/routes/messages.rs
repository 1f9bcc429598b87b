//! Messages (docs/api.md, "Sending messages", "Paging"): send (idempotent with `client_msg_id`,
//! rate limited), history by offset or by `seq`, French full-text search, get, edit, soft delete,
//! and who is typing.

use poem::{IntoResponse, Response, web::Data as State};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    registry::{MetaResponses, Registry},
};
use serde_json::Value;
use shared_proto::events::{self as pb, EventKind, event::Body};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db::{
        self,
        messages::{HistoryRange, MessageRow},
    },
    error::{self, ApiError, Details, E400, E401, E403, E404, E413, E429, E500, Fail},
    events::Audience,
    http::{
        Caller, Data, JsonBody, JsonObject, NoContent, Page, has_nul,
        params::{ConversationId, Limit, MessageId, Offset, Paging, SearchQuery, SeqBound},
    },
    ingest::{Outcome, SendRequest},
    resources::{Message, TypingState},
    routes::{ApiTags, require_member},
    state::AppState,
};

/// Longest `content`, in UTF-8 bytes.
const MAX_CONTENT: usize = 10_000;
/// Longest `metadata`, as compact JSON, in bytes.
const MAX_METADATA: usize = 16_384;
/// Longest `client_msg_id`, in UTF-8 bytes.
const MAX_CLIENT_MSG_ID: usize = 64;
/// The `message_type` values.
const MESSAGE_TYPES: [&str; 6] = ["text", "image", "file", "audio", "video", "system"];

/// Body of `POST /conversations/{id}/messages` (every field optional).
#[derive(Object)]
pub struct SendMessage {
    /// `text` (default), `image`, `file`, `audio` or `video`; `system` is refused.
    #[oai(rename = "type")]
    pub kind: Option<String>,
    /// Required for text messages; at most 10000 bytes.
    pub content: Option<String>,
    /// Any JSON value, stored as `jsonb`; at most 16384 bytes as compact JSON.
    pub metadata: Option<Value>,
    /// A non-deleted message of the same conversation.
    pub reply_to_id: Option<Uuid>,
    /// The client's idempotency key (1–64 bytes): a retry answers 200 with the stored message.
    pub client_msg_id: Option<String>,
}

/// Body of `PUT /messages/{id}`.
#[derive(Object)]
pub struct EditMessage {
    /// The new content (1–10000 bytes).
    pub content: String,
}

/// The answer of a send: 201 for a new message, 200 for an idempotent replay.
pub enum Sent {
    Created(Message),
    Replayed(Message),
}

impl IntoResponse for Sent {
    fn into_response(self) -> Response {
        match self {
            Sent::Created(m) => Data::<_, 201>(m).into_response(),
            Sent::Replayed(m) => Data::<_, 200>(m).into_response(),
        }
    }
}

impl ApiResponse for Sent {
    fn meta() -> MetaResponses {
        let mut created = Data::<Message, 201>::meta();
        let mut replayed = Data::<Message>::meta();
        for r in &mut replayed.responses {
            r.description = "Replay of an earlier send with the same client_msg_id";
        }
        created.responses.append(&mut replayed.responses);
        created
    }

    fn register(registry: &mut Registry) {
        Data::<Message>::register(registry);
    }
}

/// The fields of a send body, typed (the `BODY` step) but not yet validated.
struct SendFields {
    kind: Option<String>,
    content: Option<String>,
    /// Compact JSON text, exactly as sent.
    metadata: Option<String>,
    reply_to_id: Option<String>,
    client_msg_id: Option<String>,
}

impl SendFields {
    fn read(body: &JsonObject) -> Result<Self, ApiError> {
        Ok(Self {
            kind: body.opt_str("type")?,
            content: body.opt_str("content")?,
            metadata: body.opt_raw("metadata")?,
            reply_to_id: body.opt_str("reply_to_id")?,
            client_msg_id: body.opt_str("client_msg_id")?,
        })
    }

    /// The field rules (docs/api.md, "Sending messages"), every key evaluated, reported in one
    /// `VALIDATION_ERROR`; what passes is the send of `sender` to `conversation`.
    fn validate(self, conversation: Uuid, sender: Uuid) -> Result<SendRequest, ApiError> {
        let mut d = Details::new();
        let kind = self.kind.unwrap_or_else(|| "text".to_owned());
        if !MESSAGE_TYPES.contains(&kind.as_str()) {
            d.set(
                "type",
                "type must be one of: text, image, file, audio, video, system",
            );
        }
        if kind == "text" && self.content.as_deref().is_none_or(str::is_empty) {
            d.set("content", "content is required for text messages");
        }
        if self.content.as_ref().is_some_and(|c| c.len() > MAX_CONTENT) {
            d.set("content", "content must not exceed 10000 characters");
        }
        if self
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > MAX_METADATA)
        {
            d.set("metadata", "metadata must not exceed 16384 bytes");
        }
        let reply_to_id = match self.reply_to_id.as_deref().filter(|s| !str::is_empty(s)) {
            None => None,
            Some(raw) => {
                let parsed = shared_auth::parse_uuid(raw);
                if parsed.is_none() {
                    d.set("reply_to_id", "invalid UUID format");
                }
                parsed
            }
        };
        match self.client_msg_id.as_deref() {
            Some("") => d.set("client_msg_id", "client_msg_id must not be empty"),
            Some(c) if c.len() > MAX_CLIENT_MSG_ID => {
                d.set(
                    "client_msg_id",
                    "client_msg_id must not exceed 64 characters",
                );
            }
            _ => {}
        }
        d.into_result()?;
        Ok(SendRequest {
            conversation,
            sender,
            kind,
            content: self.content,
            metadata: self.metadata,
            reply_to_id,
            client_msg_id: self.client_msg_id,
        })
    }
}

/// The step-6 answer for a `client_msg_id` already used: the stored message as it is now, or
/// 404 when it has been deleted since.
async fn replay(conn: &mut PgConnection, stored: MessageRow) -> Result<Sent, ApiError> {
    if stored.is_deleted {
        return Err(ApiError::NotFound(error::MESSAGE_NOT_FOUND));
    }
    Ok(Sent::Replayed(db::messages::embed_one(conn, stored).await?))
}

/// The `MSG` step: the message, unless it is missing or deleted.
pub(crate) async fn live_message(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<MessageRow, ApiError> {
    db::messages::find(conn, id)
        .await?
        .filter(|m| !m.is_deleted)
        .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))
}

/// The `CONV` step.
async fn require_conversation(conn: &mut PgConnection, id: Uuid) -> Result<(), ApiError> {
    db::conversations::find(conn, id)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))
}

/// Who is typing in `conversation` (docs/websocket.md, "Sending typing frames"), from the gateway's
/// typing ZSET ([`shared_redis::typing::live`]); empty when Redis cannot answer.
async fn typists(state: &AppState, conversation: Uuid) -> Vec<Uuid> {
    let keys = shared_redis::Keys::new(state.settings.redis_key_prefix.as_str());
    shared_redis::run(&state.redis, "typing.live", |c| async move {
        shared_redis::typing::live(&c, &keys, &conversation).await
    })
    .await
    .unwrap_or_default()
    .iter()
    .filter_map(|m| shared_auth::parse_uuid(m))
    .collect()
}

pub struct MessagesApi;

#[OpenApi(tag = "ApiTags::Messages")]
impl MessagesApi {
    /// Send a message. Any active participant may post (not `system` messages). A retry with
    /// the same `client_msg_id` answers 200 with the stored message instead of posting again.
    /// Rate limited per user across the fleet (429 with `Retry-After`).
    #[oai(
        path = "/conversations/:id/messages",
        method = "post",
        operation_id = "sendMessage"
    )]
    async fn send(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        body: JsonBody<SendMessage>,
    ) -> Result<Sent, Fail<{ E400 | E401 | E403 | E404 | E413 | E429 | E500 }>> {
        let conversation = id.get()?;
        let fields = SendFields::read(&body.parse()?)?;
        let user = caller.user()?;
        let request = fields.validate(conversation, user)?;
        let client_msg_id = request.client_msg_id.clone();
        let outcome = state.ingest.send(request).await;
        match outcome {
            Outcome::Created(message) => Ok(Sent::Created(*message)),
            Outcome::Rejected(e) => Err(e.into()),
            Outcome::Recheck => {
                let mut conn = state.pool.acquire().await?;
                if let Some(client_msg_id) = client_msg_id.as_deref() {
                    let stored = db::messages::find_by_client_id(
                        &mut conn,
                        conversation,
                        user,
                        client_msg_id,
                    )
                    .await?;
                    if let Some(stored) = stored {
                        return Ok(replay(&mut conn, stored).await?);
                    }
                }
                // The conversation or the membership went away since the checks: answer as
                // those checks would now.
                require_conversation(&mut conn, conversation).await?;
                Err(ApiError::Forbidden(error::NOT_A_PARTICIPANT).into())
            }
        }
    }

    /// History, newest first; or by `seq`: `after_seq` (oldest first, for catching up),
    /// `before_seq` (newest first, keyset paging), or both (a range, oldest first).
    #[oai(
        path = "/conversations/:id/messages",
        method = "get",
        operation_id = "listMessages"
    )]
    #[allow(clippy::too_many_arguments)] // one extractor per query key, each documented
    async fn history(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        limit: Query<Limit>,
        /// Not combinable with `after_seq` or `before_seq`.
        offset: Query<Offset>,
        /// Messages with a greater `seq`, oldest first.
        after_seq: Query<SeqBound>,
        /// Messages with a smaller `seq`, newest first (oldest first together with `after_seq`).
        before_seq: Query<SeqBound>,
    ) -> Result<Page<Message>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let conversation = id.get()?;
        let user = caller.user()?;
        let mut d = Details::new();
        let Paging {
            limit,
            offset: offset_value,
        } = Paging::read(&limit, &offset, &mut d);
        let after = after_seq.read("after_seq", &mut d);
        let before = before_seq.read("before_seq", &mut d);
        let by_seq = after_seq.is_given() || before_seq.is_given();
        if by_seq && offset.is_given() {
            d.set(
                "offset",
                "offset cannot be combined with after_seq or before_seq",
            );
        }
        d.into_result()?;
        let range = if after.is_none() && before.is_none() {
            HistoryRange::Latest {
                offset: offset_value,
            }
        } else {
            HistoryRange::Seq { after, before }
        };

        let mut conn = state.pool.acquire().await?;
        require_conversation(&mut conn, conversation).await?;
        require_member(&mut conn, conversation, user).await?;
        let (total, rows) = db::messages::history(&mut conn, conversation, range, limit).await?;
        let data = db::messages::embed(&mut conn, rows).await?;
        Ok(Page {
            data,
            total,
            limit,
            offset: match range {
                HistoryRange::Latest { offset } => offset,
                HistoryRange::Seq { .. } => 0,
            },
        })
    }

    /// French full-text search in a conversation, newest first.
    #[oai(
        path = "/conversations/:id/messages/search",
        method = "get",
        operation_id = "searchMessages"
    )]
    async fn search(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        /// The words to find (French full-text search), at most 200 bytes.
        q: Query<SearchQuery>,
        limit: Query<Limit>,
        offset: Query<Offset>,
    ) -> Result<Page<Message>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let conversation = id.get()?;
        let user = caller.user()?;
        let q = q.get()?;
        let Paging { limit, offset } = Paging::check(&limit, &offset)?;

        let mut conn = state.pool.acquire().await?;
        require_conversation(&mut conn, conversation).await?;
        require_member(&mut conn, conversation, user).await?;
        if has_nul(q) {
            // No stored content holds U+0000 (nor can it be sent to PostgreSQL).
            return Ok(Page::empty(limit, offset));
        }
        let (total, rows) = db::messages::search(&mut conn, conversation, q, limit, offset).await?;
        let data = db::messages::embed(&mut conn, rows).await?;
        Ok(Page {
            data,
            total,
            limit,
            offset,
        })
    }

    /// Who is typing in the conversation now (the caller included; order unspecified).
    #[oai(
        path = "/conversations/:id/typing",
        method = "get",
        operation_id = "getTyping"
    )]
    async fn typing(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
    ) -> Result<Data<TypingState>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let conversation = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        require_conversation(&mut conn, conversation).await?;
        require_member(&mut conn, conversation, user).await?;
        drop(conn);
        Ok(Data(TypingState {
            user_ids: typists(&state, conversation).await,
        }))
    }

    /// One message with its reactions and attachments.
    #[oai(path = "/messages/:id", method = "get", operation_id = "getMessage")]
    async fn get(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
    ) -> Result<Data<Message>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let row = live_message(&mut conn, id).await?;
        require_member(&mut conn, row.conversation_id, user).await?;
        Ok(Data(db::messages::embed_one(&mut conn, row).await?))
    }

    /// Edit a message's content (its sender only; membership is not required).
    #[oai(path = "/messages/:id", method = "put", operation_id = "editMessage")]
    async fn edit(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
        body: JsonBody<EditMessage>,
    ) -> Result<Data<Message>, Fail<{ E400 | E401 | E403 | E404 | E413 | E500 }>> {
        let id = id.get()?;
        let content = body.parse()?.req_str("content")?;
        let user = caller.user()?;
        if content.is_empty() {
            return Err(Details::one("content", "content is required").into());
        }
        if content.len() > MAX_CONTENT {
            return Err(Details::one("content", "content must not exceed 10000 characters").into());
        }
        let mut conn = state.pool.acquire().await?;
        let row = live_message(&mut conn, id).await?;
        if row.sender_id != user {
            return Err(
                ApiError::Forbidden("Only the message author can edit this message").into(),
            );
        }
        let row = db::messages::edit(&mut conn, &row, &content)
            .await?
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;
        let message = db::messages::embed_one(&mut conn, row).await?;
        drop(conn);
        state
            .events
            .publish(
                EventKind::MessageUpdated,
                Audience::Room,
                message.conversation_id,
                user,
                Body::Message(pb::Message::from(&message)),
            )
            .await;
        Ok(Data(message))
    }

    /// Soft-delete a message (its sender, or an owner or admin of the conversation).
    #[oai(
        path = "/messages/:id",
        method = "delete",
        operation_id = "deleteMessage"
    )]
    async fn delete(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
    ) -> Result<NoContent, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let row = live_message(&mut conn, id).await?;
        let me = require_member(&mut conn, row.conversation_id, user).await?;
        if row.sender_id != user && !matches!(me.role.as_str(), "owner" | "admin") {
            return Err(
                ApiError::Forbidden("Insufficient permissions to delete this message").into(),
            );
        }
        let row = db::messages::soft_delete(&mut conn, &row)
            .await?
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;
        drop(conn);
        state
            .events
            .publish(
                EventKind::MessageDeleted,
                Audience::Room,
                row.conversation_id,
                user,
                Body::MessageDeleted(pb::MessageDeleted {
                    conversation_id: row.conversation_id.to_string(),
                    id: row.id.to_string(),
                }),
            )
            .await;
        Ok(NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_message_ids_are_v7_of_their_creation_instant() {
        let (id, created_at) = db::messages::new_identity();
        assert_eq!(id.get_version_num(), 7);
        let (from, to) = db::messages::v7_window(id).unwrap();
        assert!(from <= created_at && created_at < to);
        assert_eq!(created_at.timestamp_subsec_nanos() % 1000, 0);
    }
}
