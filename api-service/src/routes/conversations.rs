//! Conversations: create, list mine, discover channels, get, update, archive.

use poem::web::Data as State;
use poem_openapi::{Object, OpenApi, param::Path, param::Query};
use shared_proto::events::{self as pb, EventKind, event::Body};
use uuid::Uuid;

use crate::{
    db::{self, conversations::NewConversation},
    error::{self, ApiError, Details, E400, E401, E403, E404, E409_DM, E413, E500, Fail},
    events::Audience,
    http::{
        Caller, Data, JsonBody, Page, has_nul,
        params::{ConversationId, Limit, Offset, Paging},
    },
    resources::{ChannelSummary, Conversation, ConversationDetail},
    routes::{ApiTags, require_member},
    state::AppState,
};

/// Body of `POST /conversations`.
#[derive(Object)]
pub struct CreateConversation {
    /// `direct`, `group` or `channel`.
    #[oai(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub avatar_url: Option<String>,
    /// The other participants (never the caller).
    pub participant_ids: Vec<Uuid>,
}

/// Body of `PUT /conversations/{id}`: null or absent keeps a field.
#[derive(Object)]
pub struct UpdateConversation {
    pub name: Option<String>,
    pub description: Option<String>,
    pub avatar_url: Option<String>,
}

pub struct ConversationsApi;

/// Validated `POST /conversations` input.
struct CreateInput {
    kind: String,
    name: Option<String>,
    description: Option<String>,
    avatar_url: Option<String>,
    participants: Vec<Uuid>,
}

/// `POST /conversations` fields as decoded at the `BODY` step (a wrong JSON type fails there,
/// before the identity header is looked at).
struct CreateFields {
    kind: String,
    name: Option<String>,
    description: Option<String>,
    avatar_url: Option<String>,
    ids: Vec<String>,
}

impl CreateFields {
    fn read(body: &crate::http::JsonObject) -> Result<Self, ApiError> {
        Ok(Self {
            kind: body.req_str("type")?,
            name: body.opt_str("name")?,
            description: body.opt_str("description")?,
            avatar_url: body.opt_str("avatar_url")?,
            ids: body.opt_str_array("participant_ids")?.unwrap_or_default(),
        })
    }
}

/// The field rules of `POST /conversations` (all keys evaluated; later rows of one key overwrite
/// earlier ones).
fn validate_create(fields: CreateFields, caller: Uuid) -> Result<CreateInput, ApiError> {
    let CreateFields {
        kind,
        name,
        description,
        avatar_url,
        ids,
    } = fields;

    let mut d = Details::new();
    let known = matches!(kind.as_str(), "direct" | "group" | "channel");
    if kind.is_empty() {
        d.set("type", "type is required");
    } else if !known {
        d.set("type", "type must be one of: direct, group, channel");
    }
    let direct = kind == "direct";
    if direct && name.is_some() {
        d.set("name", "direct conversations cannot have a name");
    }
    if matches!(kind.as_str(), "group" | "channel") && name.as_deref().is_none_or(str::is_empty) {
        d.set(
            "name",
            "name is required for group and channel conversations",
        );
    }
    if name.as_ref().is_some_and(|n| n.len() > 100) {
        d.set("name", "name must not exceed 100 characters");
    }
    if direct && description.is_some() {
        d.set(
            "description",
            "direct conversations cannot have a description",
        );
    }
    if avatar_url.as_ref().is_some_and(|a| a.len() > 500) {
        d.set("avatar_url", "avatar_url must not exceed 500 characters");
    }
    let mut participants = Vec::with_capacity(ids.len());
    if ids.is_empty() {
        d.set("participant_ids", "at least one participant is required");
    } else {
        for (i, raw) in ids.iter().enumerate() {
            match shared_auth::parse_uuid(raw) {
                None => {
                    d.set("participant_ids", format!("invalid UUID at index {i}"));
                    break;
                }
                Some(u) if u == caller => {
                    d.set(
                        "participant_ids",
                        "participant_ids must not include the creator",
                    );
                    break;
                }
                Some(u) => participants.push(u),
            }
        }
        if !d.has("participant_ids") && direct && ids.len() != 1 {
            d.set(
                "participant_ids",
                "direct conversation requires exactly one participant",
            );
        }
    }
    d.into_result()?;
    let mut seen = std::collections::HashSet::new();
    participants.retain(|u| seen.insert(*u));
    Ok(CreateInput {
        kind,
        name,
        description,
        avatar_url,
        participants,
    })
}

/// What a `search` parameter asks for.
enum Search {
    /// No search (absent or empty).
    All,
    /// An escaped `ILIKE` pattern.
    Like(String),
    /// A term that no name or nickname can contain (U+0000, which PostgreSQL cannot even
    /// receive): the result is empty.
    Nothing,
}

/// The shared steps of `GET /conversations` and `/conversations/discover` after `HDR`:
/// `PAGE`, then `search` at most 100 bytes.
fn list_params(
    limit: &Limit,
    offset: &Offset,
    search: Option<String>,
) -> Result<(Paging, Search), ApiError> {
    let paging = Paging::check(limit, offset)?;
    let search = match search.filter(|s| !s.is_empty()) {
        None => Search::All,
        Some(s) if s.len() > 100 => {
            return Err(Details::one(
                "search",
                "search must not exceed 100 characters",
            ));
        }
        Some(s) if has_nul(&s) => Search::Nothing,
        Some(s) => Search::Like(like_pattern(&s)),
    };
    Ok((paging, search))
}

/// Search terms match literally inside `ILIKE '%…%'`.
pub fn like_pattern(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for ch in term.chars() {
        if matches!(ch, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

#[OpenApi(tag = "ApiTags::Conversations")]
impl ConversationsApi {
    /// Create a conversation. The caller becomes owner of a group or channel; both users of a
    /// direct conversation are members. A second active DM between the same users is a 409 that
    /// carries the existing conversation.
    #[oai(
        path = "/conversations",
        method = "post",
        operation_id = "createConversation"
    )]
    async fn create(
        &self,
        caller: Caller,
        state: State<&AppState>,
        body: JsonBody<CreateConversation>,
    ) -> Result<Data<ConversationDetail, 201>, Fail<{ E400 | E401 | E409_DM | E413 | E500 }>> {
        let fields = CreateFields::read(&body.parse()?)?;
        let user = caller.user()?;
        let input = validate_create(fields, user)?;
        state
            .users
            .check_exist(&input.participants, caller.token.as_deref())
            .await?;

        let direct = input.kind == "direct";
        let direct_pair = direct.then(|| {
            let other = input.participants[0];
            if user < other {
                (user, other)
            } else {
                (other, user)
            }
        });
        let new = NewConversation {
            kind: &input.kind,
            name: input.name.as_deref(),
            description: input.description.as_deref(),
            avatar_url: input.avatar_url.as_deref(),
            creator_id: (!direct).then_some(user),
            direct_pair,
        };
        let mut members: Vec<(Uuid, &str)> = vec![(user, if direct { "member" } else { "owner" })];
        members.extend(input.participants.iter().map(|u| (*u, "member")));

        // A unique violation of the pair means an active DM exists (or a concurrent create of
        // the same pair committed first): answer with it. If it ended between the violation and
        // the read (one of the two left), the pair is free again and the insert is retried.
        let mut attempts = 0;
        let detail = loop {
            attempts += 1;
            let mut tx = state.pool.begin().await?;
            match db::conversations::insert(&mut tx, &new).await {
                Ok(row) => {
                    db::participants::insert_many(&mut tx, row.id, &members).await?;
                    let detail = db::conversations::detail(&mut tx, row, user).await?;
                    tx.commit().await?;
                    break detail;
                }
                Err(e) if db::is_unique_violation(&e, "unique_active_direct_pair") => {
                    drop(tx);
                    let mut conn = state.pool.acquire().await?;
                    let pair = direct_pair.expect("only direct conversations have a pair");
                    if let Some(existing) =
                        db::conversations::find_active_direct(&mut conn, pair).await?
                    {
                        let detail = db::conversations::detail(&mut conn, existing, user).await?;
                        return Err(ApiError::DmConflict(Box::new(detail)).into());
                    }
                    if attempts == 3 {
                        return Err(ApiError::Internal(anyhow::anyhow!(
                            "direct pair kept conflicting without an active conversation"
                        ))
                        .into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };

        let body = Body::ConversationJoined(pb::ConversationJoined {
            detail: Some((&detail).into()),
        });
        // One event for every participant (events.rs): each copy would carry the whole list.
        let everyone = detail.participants.iter().map(|p| p.user_id).collect();
        state
            .events
            .publish(
                EventKind::ConversationJoined,
                Audience::Users(everyone),
                detail.conversation.id,
                user,
                body,
            )
            .await;
        Ok(Data(detail))
    }

    /// My conversations (archived included), newest activity first.
    #[oai(
        path = "/conversations",
        method = "get",
        operation_id = "listConversations"
    )]
    async fn list(
        &self,
        caller: Caller,
        state: State<&AppState>,
        limit: Query<Limit>,
        offset: Query<Offset>,
        /// Only conversations whose name (or, for a direct one, the other user's nickname)
        /// contains this text, ignoring case; at most 100 bytes. Empty means no filter.
        search: Query<Option<String>>,
    ) -> Result<Page<Conversation>, Fail<{ E400 | E401 | E500 }>> {
        let user = caller.user()?;
        let (Paging { limit, offset }, search) = list_params(&limit, &offset, search.0)?;
        let pattern = match search {
            Search::Nothing => return Ok(Page::empty(limit, offset)),
            Search::All => None,
            Search::Like(p) => Some(p),
        };
        let mut conn = state.pool.acquire().await?;
        let (total, rows) =
            db::conversations::list_for_user(&mut conn, user, pattern.as_deref(), limit, offset)
                .await?;
        Ok(Page {
            data: rows,
            total,
            limit,
            offset,
        })
    }

    /// Public channels, largest first.
    #[oai(
        path = "/conversations/discover",
        method = "get",
        operation_id = "discoverChannels"
    )]
    async fn discover(
        &self,
        caller: Caller,
        state: State<&AppState>,
        /// Only channels whose name contains this text, ignoring case; at most 100 bytes.
        /// Empty means no filter.
        search: Query<Option<String>>,
        limit: Query<Limit>,
        offset: Query<Offset>,
    ) -> Result<Page<ChannelSummary>, Fail<{ E400 | E401 | E500 }>> {
        let user = caller.user()?;
        let (Paging { limit, offset }, search) = list_params(&limit, &offset, search.0)?;
        let pattern = match search {
            Search::Nothing => return Ok(Page::empty(limit, offset)),
            Search::All => None,
            Search::Like(p) => Some(p),
        };
        let mut conn = state.pool.acquire().await?;
        let (total, rows) =
            db::conversations::discover(&mut conn, user, pattern.as_deref(), limit, offset).await?;
        Ok(Page {
            data: rows,
            total,
            limit,
            offset,
        })
    }

    /// One conversation with its participants.
    #[oai(
        path = "/conversations/:id",
        method = "get",
        operation_id = "getConversation"
    )]
    async fn get(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
    ) -> Result<Data<ConversationDetail>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let row = db::conversations::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        require_member(&mut conn, id, user).await?;
        Ok(Data(db::conversations::detail(&mut conn, row, user).await?))
    }

    /// Partial update of name, description, avatar (owners and admins; not direct ones).
    #[oai(
        path = "/conversations/:id",
        method = "put",
        operation_id = "updateConversation"
    )]
    async fn update(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        body: JsonBody<UpdateConversation>,
    ) -> Result<Data<ConversationDetail>, Fail<{ E400 | E401 | E403 | E404 | E413 | E500 }>> {
        let id = id.get()?;
        let body = body.parse()?;
        let name = body.opt_str("name")?;
        let description = body.opt_str("description")?;
        let avatar_url = body.opt_str("avatar_url")?;
        let mut d = Details::new();
        if name.is_none() && description.is_none() && avatar_url.is_none() {
            d.set(
                "body",
                "at least one field (name, description, avatar_url) must be provided",
            );
        }
        if name.as_deref() == Some("") {
            d.set("name", "name cannot be empty");
        } else if name.as_ref().is_some_and(|n| n.len() > 100) {
            d.set("name", "name must not exceed 100 characters");
        }
        if avatar_url.as_ref().is_some_and(|a| a.len() > 500) {
            d.set("avatar_url", "avatar_url must not exceed 500 characters");
        }
        d.into_result()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let row = db::conversations::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        if row.kind == "direct" {
            return Err(ApiError::BadRequest("Cannot modify a direct conversation").into());
        }
        let me = require_member(&mut conn, id, user).await?;
        if !matches!(me.role.as_str(), "owner" | "admin") {
            return Err(
                ApiError::Forbidden("Only owners and admins can modify this conversation").into(),
            );
        }
        let row = db::conversations::update(
            &mut conn,
            id,
            name.as_deref(),
            description.as_deref(),
            avatar_url.as_deref(),
        )
        .await?
        .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        let detail = db::conversations::detail(&mut conn, row, user).await?;
        let event = Body::ConversationUpdated(pb::ConversationUpdated {
            detail: Some((&detail).into()),
        });
        state
            .events
            .publish(
                EventKind::ConversationUpdated,
                Audience::Room,
                id,
                user,
                event,
            )
            .await;
        Ok(Data(detail))
    }

    /// Archive (owner only; idempotent).
    #[oai(
        path = "/conversations/:id",
        method = "delete",
        operation_id = "archiveConversation"
    )]
    async fn archive(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
    ) -> Result<Data<Conversation>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        db::conversations::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        let me = require_member(&mut conn, id, user).await?;
        if me.role != "owner" {
            return Err(ApiError::Forbidden("Only the owner can archive this conversation").into());
        }
        let row = db::conversations::archive(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        let unread = db::conversations::unread_count(&mut conn, id, user).await?;
        let conversation = row.into_resource(unread);
        let event = Body::ConversationArchived(pb::ConversationArchived {
            conversation: Some((&conversation).into()),
        });
        state
            .events
            .publish(
                EventKind::ConversationArchived,
                Audience::Room,
                id,
                user,
                event,
            )
            .await;
        Ok(Data(conversation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }
}
