//! Participants: add participants, change a role or transfer ownership, remove
//! someone or leave, join a channel.
//!
//! Every write here runs in a transaction that first takes the conversation's roster lock
//! ([`db::participants::lock_roster`]) and then makes its checks, so concurrent membership changes
//! of one conversation cannot interleave: a transfer cannot produce two owners, an owner leaving
//! never hands ownership to someone leaving at the same moment, and concurrent joins give one 201
//! and 409s. Events go out after the commit; removals are flushed to NATS before the answer so
//! that nothing the conversation emits afterwards reaches the removed user (docs/websocket.md,
//! "Live membership").

use poem::web::Data as State;
use poem_openapi::{Object, OpenApi, param::Path};
use shared_proto::events::{self as pb, EventKind, event::Body};
use uuid::Uuid;

use crate::{
    db::{self, conversations::ConversationRow, participants::ParticipantRow},
    error::{self, ApiError, Details, E400, E401, E403, E404, E409, E413, E500, Fail},
    events::Audience,
    http::{
        Caller, Data, JsonBody, NoContent,
        params::{ConversationId, UserId},
    },
    resources::{ConversationDetail, Participant},
    routes::{ApiTags, require_member},
    state::AppState,
};

/// Most users one `POST /conversations/{id}/participants` may name.
const MAX_ADD: usize = 50;

const NOT_A_PARTICIPANT: &str = "User is not a participant of this conversation";
const CANNOT_REMOVE: &str = "Insufficient permissions to remove this participant";

/// Body of `POST /conversations/{id}/participants`.
#[derive(Object)]
pub struct AddParticipants {
    /// Users to add (at most 50); users who are already participants are skipped.
    pub participant_ids: Vec<Uuid>,
}

/// Body of `PUT /conversations/{id}/participants/{userId}`.
#[derive(Object)]
pub struct ChangeRole {
    /// `owner` (transfers ownership), `admin` or `member`.
    pub role: String,
}

/// The participant operations.
pub struct ParticipantsApi;

/// Owners and admins manage a group or channel.
fn is_admin_plus(role: &str) -> bool {
    matches!(role, "owner" | "admin")
}

/// The `participant_ids` rules of an add, first failure only; the users de-duplicated (first
/// occurrence kept).
fn validate_add(ids: &[String]) -> Result<Vec<Uuid>, ApiError> {
    const KEY: &str = "participant_ids";
    if ids.is_empty() {
        return Err(Details::one(KEY, "at least one participant is required"));
    }
    if ids.len() > MAX_ADD {
        return Err(Details::one(
            KEY,
            "cannot add more than 50 participants at once",
        ));
    }
    let mut users = Vec::with_capacity(ids.len());
    for (i, raw) in ids.iter().enumerate() {
        let user = shared_auth::parse_uuid(raw)
            .ok_or_else(|| Details::one(KEY, format!("invalid UUID at index {i}")))?;
        if !users.contains(&user) {
            users.push(user);
        }
    }
    Ok(users)
}

/// The checks of an add after its body (`CONV`, not direct, `MEMBER`, owner or admin). Run once
/// before the user service is asked and again under the roster lock (`locked`), since the caller
/// may have been removed or demoted while the user service answered.
async fn check_may_add(
    conn: &mut sqlx::PgConnection,
    conversation: Uuid,
    caller: Uuid,
    locked: bool,
) -> Result<ConversationRow, ApiError> {
    let row = if locked {
        db::participants::lock_roster(&mut *conn, conversation).await?
    } else {
        db::conversations::find(&mut *conn, conversation).await?
    }
    .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
    if row.kind == "direct" {
        return Err(ApiError::BadRequest(
            "Cannot add participants to a direct conversation",
        ));
    }
    let me = require_member(conn, conversation, caller).await?;
    if !is_admin_plus(&me.role) {
        return Err(ApiError::Forbidden(
            "Only owners and admins can add participants",
        ));
    }
    Ok(row)
}

fn participant_updated(p: &Participant) -> Body {
    Body::ParticipantUpdated(pb::ParticipantUpdated {
        participant: Some(p.into()),
    })
}

impl ParticipantsApi {
    /// The events of users joining (added, or joining a channel): `conversation.joined` to each of
    /// them (one event addressed to all of them, events.rs), then one `participant.added` listing
    /// them all to the conversation.
    async fn announce_joined(
        state: &AppState,
        actor: Uuid,
        detail: &ConversationDetail,
        added: &[Participant],
    ) {
        let conversation = detail.conversation.id;
        let joined = Body::ConversationJoined(pb::ConversationJoined {
            detail: Some(detail.into()),
        });
        state
            .events
            .publish(
                EventKind::ConversationJoined,
                Audience::Users(added.iter().map(|p| p.user_id).collect()),
                conversation,
                actor,
                joined,
            )
            .await;
        let body = Body::ParticipantsAdded(pb::ParticipantsAdded {
            conversation_id: conversation.to_string(),
            participants: added.iter().map(Into::into).collect(),
        });
        state
            .events
            .publish(
                EventKind::ParticipantAdded,
                Audience::Room,
                conversation,
                actor,
                body,
            )
            .await;
    }
}

#[OpenApi(tag = "ApiTags::Participants")]
impl ParticipantsApi {
    /// Add participants (owners and admins of a group or channel). Former participants are
    /// re-activated; users who are already participants are skipped. Returns exactly the
    /// participants added, in request order.
    #[oai(
        path = "/conversations/:id/participants",
        method = "post",
        operation_id = "addParticipants"
    )]
    async fn add(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        body: JsonBody<AddParticipants>,
    ) -> Result<Data<Vec<Participant>, 201>, Fail<{ E400 | E401 | E403 | E404 | E413 | E500 }>>
    {
        let id = id.get()?;
        let body = body.parse()?;
        let ids = body.opt_str_array("participant_ids")?.unwrap_or_default();
        let users = validate_add(&ids)?;
        let user = caller.user()?;

        let mut conn = state.pool.acquire().await?;
        check_may_add(&mut conn, id, user, false).await?;
        drop(conn);
        let others: Vec<Uuid> = users.iter().copied().filter(|u| *u != user).collect();
        state
            .users
            .check_exist(&others, caller.token.as_deref())
            .await?;

        let mut tx = state.pool.begin().await?;
        let row = check_may_add(&mut tx, id, user, true).await?;
        let added: Vec<Participant> = db::participants::add_or_reactivate(&mut tx, id, &users)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        if added.is_empty() {
            return Ok(Data(added));
        }
        let detail = db::conversations::detail(&mut tx, row, user).await?;
        tx.commit().await?;

        Self::announce_joined(&state, user, &detail, &added).await;
        Ok(Data(added))
    }

    /// Change a participant's role (the owner only). `owner` on someone else transfers
    /// ownership: the target becomes owner and the caller admin.
    #[oai(
        path = "/conversations/:id/participants/:userId",
        method = "put",
        operation_id = "changeParticipantRole"
    )]
    async fn change_role(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        #[oai(name = "userId")] target: Path<UserId>,
        body: JsonBody<ChangeRole>,
    ) -> Result<Data<Participant>, Fail<{ E400 | E401 | E403 | E404 | E413 | E500 }>> {
        let id = id.get()?;
        let target = target.get()?;
        let body = body.parse()?;
        let role = body.req_str("role")?;
        let user = caller.user()?;
        if role.is_empty() {
            return Err(Details::one("role", "role is required").into());
        }
        if !matches!(role.as_str(), "owner" | "admin" | "member") {
            return Err(Details::one("role", "role must be one of: owner, admin, member").into());
        }

        let mut tx = state.pool.begin().await?;
        let row = db::participants::lock_roster(&mut tx, id)
            .await?
            .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        if row.kind == "direct" {
            return Err(
                ApiError::BadRequest("Cannot change roles in a direct conversation").into(),
            );
        }
        let me = require_member(&mut tx, id, user).await?;
        if me.role != "owner" {
            return Err(ApiError::Forbidden("Only the owner can change roles").into());
        }
        let current = db::participants::membership(&mut tx, id, target)
            .await?
            .ok_or(ApiError::NotFound(error::PARTICIPANT_NOT_FOUND))?;
        if target == user && role != "owner" {
            return Err(ApiError::BadRequest(
                "Transfer ownership before changing the owner's role",
            )
            .into());
        }
        if current.role == role {
            return Ok(Data(current.into()));
        }

        // Target first, then the previous owner on a transfer: the order of the events too.
        let changes = if role == "owner" {
            vec![(target, "owner"), (user, "admin")]
        } else {
            vec![(target, role.as_str())]
        };
        let mut changed: Vec<Participant> = Vec::with_capacity(changes.len());
        for (who, role) in changes {
            let row: ParticipantRow = db::participants::set_role(&mut tx, id, who, role)
                .await?
                .ok_or(ApiError::NotFound(error::PARTICIPANT_NOT_FOUND))?;
            changed.push(row.into());
        }
        tx.commit().await?;

        for p in &changed {
            state
                .events
                .publish(
                    EventKind::ParticipantUpdated,
                    Audience::Room,
                    id,
                    user,
                    participant_updated(p),
                )
                .await;
        }
        Ok(Data(changed.swap_remove(0)))
    }

    /// Remove a participant, or leave when `userId` is the caller. The owner may remove admins
    /// and members, an admin members only; nobody removes the owner. When the owner leaves,
    /// ownership passes to the longest-standing admin, else member.
    #[oai(
        path = "/conversations/:id/participants/:userId",
        method = "delete",
        operation_id = "removeParticipant"
    )]
    async fn remove(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        #[oai(name = "userId")] target: Path<UserId>,
    ) -> Result<NoContent, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let target = target.get()?;
        let user = caller.user()?;

        let mut tx = state.pool.begin().await?;
        let row = db::participants::lock_roster(&mut tx, id)
            .await?
            .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        if target != user {
            if row.kind == "direct" {
                return Err(ApiError::BadRequest(
                    "Cannot remove participants from a direct conversation",
                )
                .into());
            }
            let me = db::participants::membership(&mut tx, id, user)
                .await?
                .ok_or(ApiError::Forbidden(NOT_A_PARTICIPANT))?;
            if !is_admin_plus(&me.role) {
                return Err(ApiError::Forbidden(CANNOT_REMOVE).into());
            }
            let them = db::participants::membership(&mut tx, id, target)
                .await?
                .ok_or(ApiError::Forbidden(NOT_A_PARTICIPANT))?;
            if them.role == "owner" || (me.role == "admin" && them.role == "admin") {
                return Err(ApiError::Forbidden(CANNOT_REMOVE).into());
            }
        }
        let gone = db::participants::leave(&mut tx, id, target)
            .await?
            .ok_or(ApiError::Forbidden(NOT_A_PARTICIPANT))?;
        let successor = if row.kind == "direct" {
            db::participants::release_direct_pair(&mut tx, id).await?;
            None
        } else if gone.role == "owner" {
            db::participants::promote_successor(&mut tx, id).await?
        } else {
            None
        };
        tx.commit().await?;

        let removed = Body::ParticipantRemoved(pb::ParticipantRemoved {
            conversation_id: id.to_string(),
            user_id: target.to_string(),
        });
        state
            .events
            .publish(
                EventKind::ParticipantRemoved,
                Audience::Room,
                id,
                user,
                removed,
            )
            .await;
        if let Some(owner) = successor {
            let owner: Participant = owner.into();
            state
                .events
                .publish(
                    EventKind::ParticipantUpdated,
                    Audience::Room,
                    id,
                    user,
                    participant_updated(&owner),
                )
                .await;
        }
        let left = Body::ConversationLeft(pb::ConversationLeft {
            conversation_id: id.to_string(),
            user_id: target.to_string(),
        });
        state
            .events
            .publish(
                EventKind::ConversationLeft,
                Audience::User(target),
                id,
                user,
                left,
            )
            .await;
        // docs/websocket.md, "Live membership": the removal is on the wire before the answer, so
        // nothing the conversation emits after this response reaches the removed user.
        state.events.flush().await;
        Ok(NoContent)
    }

    /// Join a public channel as a member (a former participant is re-activated).
    #[oai(
        path = "/conversations/:id/join",
        method = "post",
        operation_id = "joinChannel"
    )]
    async fn join(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
    ) -> Result<Data<Participant, 201>, Fail<{ E400 | E401 | E404 | E409 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;

        let mut tx = state.pool.begin().await?;
        let row = db::participants::lock_roster(&mut tx, id)
            .await?
            .ok_or(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))?;
        if row.kind != "channel" {
            return Err(ApiError::BadRequest("Only channels can be joined").into());
        }
        let joined: Participant = db::participants::add_or_reactivate(&mut tx, id, &[user])
            .await?
            .into_iter()
            .next()
            .ok_or(ApiError::Conflict("Already a participant"))?
            .into();
        let detail = db::conversations::detail(&mut tx, row, user).await?;
        tx.commit().await?;

        Self::announce_joined(&state, user, &detail, std::slice::from_ref(&joined)).await;
        Ok(Data(joined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(e: ApiError) -> String {
        match e {
            ApiError::Validation(d) => serde_json::to_string(&d).unwrap(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn add_rules_report_the_first_failure_only() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            details(validate_add(&[]).unwrap_err()),
            r#"{"participant_ids":"at least one participant is required"}"#
        );
        let too_many = vec!["x".to_owned(); 51];
        assert_eq!(
            details(validate_add(&too_many).unwrap_err()),
            r#"{"participant_ids":"cannot add more than 50 participants at once"}"#
        );
        let a = Uuid::new_v4().to_string();
        assert_eq!(
            details(validate_add(&ids(&[&a, "nope", "x"])).unwrap_err()),
            r#"{"participant_ids":"invalid UUID at index 1"}"#
        );
    }

    #[test]
    fn added_users_are_deduplicated_keeping_the_first_occurrence() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let upper = a.simple().to_string().to_uppercase();
        let got = validate_add(&[b.to_string(), upper, b.to_string(), a.to_string()]).unwrap();
        assert_eq!(got, vec![b, a]);
    }
}
