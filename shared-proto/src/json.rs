//! Client JSON frames (`docs/websocket.md`, "Messages and the envelope" and "Server events"):
//! an [`Event`] becomes `{"type":"<event type>","conversation_id":"<uuid>","payload":{…}}`,
//! compact, with the payload in the exact resource shapes of the REST API (the schemas of the
//! OpenAPI document, committed as `api-service/tests/api/snapshots/openapi.json`).
//!
//! The gateway renders each event once and writes the same bytes to every recipient, so this is
//! on the fan-out path: payloads are private `Serialize` views borrowing from the protobuf types,
//! written straight into one buffer. Key order follows those schemas (not part of the
//! contract, but stable, which keeps the golden tests readable).
//!
//! Rules applied here rather than by each producer:
//! - "omitted when null" keys are absent (Message `metadata`, `reply_to_id`, `client_msg_id`,
//!   `edited_at`; Attachment `thumbnail_url`, `width`, `height`, `duration`);
//! - nullable keys that are always present are written as `null` (Message `content`,
//!   Conversation `name`, `description`, `avatar_url`, `creator_id`, `last_message_at`,
//!   Participant `nickname`);
//! - conversation objects carry `"unread_count":0` (the count is per user);
//! - Message `metadata` is parsed and written back compact with its key order kept, so
//!   PostgreSQL's `{"a": 1}` becomes `{"a":1}`; typing payloads are embedded verbatim after a
//!   syntax check;
//! - presence frames carry `"conversation_id":""`;
//! - times are [`format_timestamp_us`].

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::events::{
    Attachment, Conversation, ConversationDetail, Event, EventKind, Message, MessageDeleted,
    MessageUnpinned, Participant, PinnedMessage, ReactionRef, ReadReceipt, event::Body,
};

/// Why an [`Event`] could not be rendered as a client frame. Every variant is a producer bug
/// (or a peer speaking a newer schema): the event is dropped, not sent half-formed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("event kind {0} has no client event type")]
    UnknownKind(i32),
    #[error("{event_type} event has no body")]
    MissingBody { event_type: &'static str },
    #[error("{event_type} event carries a {body} body")]
    BodyMismatch {
        event_type: &'static str,
        body: &'static str,
    },
    #[error("{0} is missing from the event body")]
    MissingField(&'static str),
    #[error("message metadata is not valid JSON")]
    InvalidMetadata(#[source] serde_json::Error),
    #[error("typing payload is not valid JSON")]
    InvalidTypingPayload(#[source] serde_json::Error),
    #[error("typing payload is not a JSON object")]
    TypingPayloadNotObject,
    #[error("writing the frame failed")]
    Write(#[source] serde_json::Error),
}

/// The client frame of `event`: one compact JSON object, no raw newline, sent by the gateway as
/// a WebSocket message of its own (`docs/websocket.md`, "Messages and the envelope").
pub fn client_frame(event: &Event) -> Result<Vec<u8>, RenderError> {
    let kind = EventKind::try_from(event.kind).map_err(|_| RenderError::UnknownKind(event.kind))?;
    let event_type = kind
        .client_type()
        .ok_or(RenderError::UnknownKind(event.kind))?;
    let body = event
        .body
        .as_ref()
        .ok_or(RenderError::MissingBody { event_type })?;
    let conversation_id = if kind.is_presence() {
        ""
    } else {
        event.conversation_id.as_str()
    };
    let head = Head {
        event_type,
        conversation_id,
    };
    use EventKind as K;
    match (kind, body) {
        (K::MessageNew | K::MessageUpdated, Body::Message(message)) => {
            write(head, &MessageView::new(message)?)
        }
        (K::MessageDeleted, Body::MessageDeleted(deleted)) => {
            write(head, &MessageDeletedView::from(deleted))
        }
        (K::ReactionAdded, Body::Reaction(reaction)) => write(
            head,
            &ReactionView {
                id: &reaction.id,
                message_id: &reaction.message_id,
                user_id: &reaction.user_id,
                emoji: &reaction.emoji,
                created_at: Timestamp(reaction.created_at_us),
            },
        ),
        (K::ReactionRemoved, Body::ReactionRemoved(removed)) => write(
            head,
            &ReactionRemovedView {
                emoji: &removed.emoji,
                message_id: &removed.message_id,
                user_id: &removed.user_id,
            },
        ),
        (K::ReadUpdated, Body::ReadReceipt(receipt)) => {
            write(head, &ReadReceiptView::from(receipt))
        }
        (K::MessagePinned, Body::PinnedMessage(pin)) => write(head, &PinnedMessageView::from(pin)),
        (K::MessageUnpinned, Body::MessageUnpinned(unpinned)) => {
            write(head, &MessageUnpinnedView::from(unpinned))
        }
        (K::ConversationJoined, Body::ConversationJoined(joined)) => {
            let detail = joined
                .detail
                .as_ref()
                .ok_or(RenderError::MissingField("ConversationJoined.detail"))?;
            write(head, &ConversationDetailView::new(detail)?)
        }
        (K::ConversationLeft, Body::ConversationLeft(left)) => write(
            head,
            &ConversationUserView {
                conversation_id: &left.conversation_id,
                user_id: &left.user_id,
            },
        ),
        (K::ParticipantAdded, Body::ParticipantsAdded(added)) => write(
            head,
            &ParticipantsAddedView {
                conversation_id: &added.conversation_id,
                participants: List(&added.participants),
            },
        ),
        (K::ParticipantRemoved, Body::ParticipantRemoved(removed)) => write(
            head,
            &ConversationUserView {
                conversation_id: &removed.conversation_id,
                user_id: &removed.user_id,
            },
        ),
        (K::ParticipantUpdated, Body::ParticipantUpdated(updated)) => {
            let participant = updated
                .participant
                .as_ref()
                .ok_or(RenderError::MissingField("ParticipantUpdated.participant"))?;
            write(head, &ParticipantView::from(participant))
        }
        (K::ConversationUpdated, Body::ConversationUpdated(updated)) => {
            let detail = updated
                .detail
                .as_ref()
                .ok_or(RenderError::MissingField("ConversationUpdated.detail"))?;
            write(head, &ConversationDetailView::new(detail)?)
        }
        (K::ConversationArchived, Body::ConversationArchived(archived)) => {
            let conversation = archived
                .conversation
                .as_ref()
                .ok_or(RenderError::MissingField(
                    "ConversationArchived.conversation",
                ))?;
            write(head, &ConversationView::from(conversation))
        }
        (K::PresenceOnline | K::PresenceOffline, Body::Presence(presence)) => write(
            head,
            &UserView {
                user_id: &presence.user_id,
            },
        ),
        (K::TypingStart | K::TypingStop, Body::Typing(typing)) => {
            let payload: &RawValue = serde_json::from_str(&typing.payload_json)
                .map_err(RenderError::InvalidTypingPayload)?;
            if !payload.get().starts_with('{') {
                return Err(RenderError::TypingPayloadNotObject);
            }
            write(head, payload)
        }
        (_, body) => Err(RenderError::BodyMismatch {
            event_type,
            body: body_name(body),
        }),
    }
}

/// The `presence.snapshot` frame sent first on every new socket (`docs/websocket.md`,
/// "After the upgrade" and `presence.snapshot`):
/// `{"type":"presence.snapshot","conversation_id":"","payload":{"online_user_ids":[…]}}`, with
/// `[]` when nobody is online.
pub fn presence_snapshot_frame(online_user_ids: &[Uuid]) -> Vec<u8> {
    const HEAD: &[u8] =
        br#"{"type":"presence.snapshot","conversation_id":"","payload":{"online_user_ids":["#;
    const TAIL: &[u8] = b"]}}";
    // Written by hand: a fixed shape of UUIDs, which never need escaping.
    let mut out = Vec::with_capacity(HEAD.len() + TAIL.len() + online_user_ids.len() * 39);
    out.extend_from_slice(HEAD);
    let mut buffer = Uuid::encode_buffer();
    for (index, id) in online_user_ids.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(id.hyphenated().encode_lower(&mut buffer).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(TAIL);
    out
}

/// The `resync` frame (`docs/websocket.md`, `resync`): events addressed to the socket may have
/// been lost, and the client should catch up as after a reconnect. `reason` is one of the fixed
/// ASCII tokens [`RESYNC_STREAM_INTERRUPTED`] or [`RESYNC_NOT_PUBLISHED`]; anything else is
/// escaped as JSON.
pub fn resync_frame(reason: &str) -> Vec<u8> {
    let reason = serde_json::to_string(reason).expect("a string serialises");
    format!(r#"{{"type":"resync","conversation_id":"","payload":{{"reason":{reason}}}}}"#)
        .into_bytes()
}

/// `resync` reason: the gateway's NATS connection dropped and came back.
pub const RESYNC_STREAM_INTERRUPTED: &str = "event_stream_interrupted";
/// `resync` reason: the api-service could not publish some events (its notice on
/// `<prefix>.resync`).
pub const RESYNC_NOT_PUBLISHED: &str = "events_not_published";

/// Removes the white space outside strings from JSON text, changing nothing else: key order,
/// duplicate keys and numbers are kept exactly as written (`{"a": 1.50}` → `{"a":1.50}`).
/// Invalid JSON stays invalid (callers validate).
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            out.push(ch);
        }
    }
    out
}

/// A time in unix microseconds as the API writes it (`docs/api.md`, "Formats"): RFC 3339 in UTC
/// with `Z`, microsecond precision, trailing fractional zeros removed
/// (`2026-11-24T15:00:44.1166Z`, `2026-11-24T15:00:44Z`).
pub fn format_timestamp_us(unix_us: i64) -> String {
    Timestamp(unix_us).to_string()
}

/// A unix-microsecond time that serialises as [`format_timestamp_us`] without an intermediate
/// `String`.
#[derive(Clone, Copy)]
struct Timestamp(i64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let second_of_day = seconds.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
        )?;
        if micros != 0 {
            let (mut fraction, mut digits) = (micros, 6);
            while fraction % 10 == 0 {
                fraction /= 10;
                digits -= 1;
            }
            write!(f, ".{fraction:0digits$}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 — Howard Hinnant's
/// `civil_from_days`, exact for every `i64` day count this crate can produce.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Message(_) => "Message",
        Body::MessageDeleted(_) => "MessageDeleted",
        Body::Reaction(_) => "Reaction",
        Body::ReactionRemoved(_) => "ReactionRemoved",
        Body::ReadReceipt(_) => "ReadReceipt",
        Body::PinnedMessage(_) => "PinnedMessage",
        Body::MessageUnpinned(_) => "MessageUnpinned",
        Body::ConversationJoined(_) => "ConversationJoined",
        Body::ConversationLeft(_) => "ConversationLeft",
        Body::ParticipantsAdded(_) => "ParticipantsAdded",
        Body::ParticipantRemoved(_) => "ParticipantRemoved",
        Body::ParticipantUpdated(_) => "ParticipantUpdated",
        Body::ConversationUpdated(_) => "ConversationUpdated",
        Body::ConversationArchived(_) => "ConversationArchived",
        Body::Presence(_) => "Presence",
        Body::Typing(_) => "Typing",
    }
}

/// The envelope keys of a frame, shared by every payload.
#[derive(Clone, Copy)]
struct Head<'a> {
    event_type: &'static str,
    conversation_id: &'a str,
}

#[derive(Serialize)]
struct Frame<'a, P: ?Sized> {
    #[serde(rename = "type")]
    event_type: &'static str,
    conversation_id: &'a str,
    payload: &'a P,
}

fn write<P: Serialize + ?Sized>(head: Head<'_>, payload: &P) -> Result<Vec<u8>, RenderError> {
    serde_json::to_vec(&Frame {
        event_type: head.event_type,
        conversation_id: head.conversation_id,
        payload,
    })
    .map_err(RenderError::Write)
}

/// A repeated protobuf field written as a JSON array of its views, without collecting them.
struct List<'a, T>(&'a [T]);

/// A protobuf type with an infallible JSON view.
trait View {
    type View<'a>: Serialize
    where
        Self: 'a;
    fn view(&self) -> Self::View<'_>;
}

impl<T: View> Serialize for List<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(View::view))
    }
}

/// Message (the `Message` schema of the OpenAPI document).
#[derive(Serialize)]
struct MessageView<'a> {
    id: &'a str,
    conversation_id: &'a str,
    sender_id: &'a str,
    seq: i64,
    #[serde(rename = "type")]
    message_type: &'a str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<&'a str>,
    is_edited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    edited_at: Option<Timestamp>,
    created_at: Timestamp,
    reactions: List<'a, ReactionRef>,
    attachments: List<'a, Attachment>,
}

impl<'a> MessageView<'a> {
    fn new(message: &'a Message) -> Result<Self, RenderError> {
        // Embedded as written, only its insignificant white space removed: PostgreSQL's jsonb
        // text (`{"a": 1.50}`) comes out compact with every number exactly as stored (no trip
        // through f64). A JSON `null` is the same as no metadata.
        let metadata = match message.metadata_json.as_deref() {
            None => None,
            Some(text) => {
                let raw = serde_json::value::RawValue::from_string(compact_json(text))
                    .map_err(RenderError::InvalidMetadata)?;
                (raw.get() != "null").then_some(raw)
            }
        };
        Ok(Self {
            id: &message.id,
            conversation_id: &message.conversation_id,
            sender_id: &message.sender_id,
            seq: message.seq,
            message_type: &message.r#type,
            content: message.content.as_deref(),
            metadata,
            reply_to_id: message.reply_to_id.as_deref(),
            client_msg_id: message.client_msg_id.as_deref(),
            is_edited: message.is_edited,
            edited_at: message.edited_at_us.map(Timestamp),
            created_at: Timestamp(message.created_at_us),
            reactions: List(&message.reactions),
            attachments: List(&message.attachments),
        })
    }
}

/// An entry of Message `reactions`.
#[derive(Serialize)]
struct ReactionRefView<'a> {
    emoji: &'a str,
    user_id: &'a str,
}

impl View for ReactionRef {
    type View<'a> = ReactionRefView<'a>;
    fn view(&self) -> ReactionRefView<'_> {
        ReactionRefView {
            emoji: &self.emoji,
            user_id: &self.user_id,
        }
    }
}

/// Attachment (the `Attachment` schema of the OpenAPI document).
#[derive(Serialize)]
struct AttachmentView<'a> {
    id: &'a str,
    message_id: &'a str,
    file_name: &'a str,
    file_type: &'a str,
    file_size: i64,
    file_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thumbnail_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    created_at: Timestamp,
}

impl View for Attachment {
    type View<'a> = AttachmentView<'a>;
    fn view(&self) -> AttachmentView<'_> {
        AttachmentView {
            id: &self.id,
            message_id: &self.message_id,
            file_name: &self.file_name,
            file_type: &self.file_type,
            file_size: self.file_size,
            file_url: &self.file_url,
            thumbnail_url: self.thumbnail_url.as_deref(),
            width: self.width,
            height: self.height,
            duration: self.duration,
            created_at: Timestamp(self.created_at_us),
        }
    }
}

/// Payload of `message.deleted`.
#[derive(Serialize)]
struct MessageDeletedView<'a> {
    conversation_id: &'a str,
    id: &'a str,
}

impl<'a> From<&'a MessageDeleted> for MessageDeletedView<'a> {
    fn from(deleted: &'a MessageDeleted) -> Self {
        Self {
            conversation_id: &deleted.conversation_id,
            id: &deleted.id,
        }
    }
}

/// Reaction (the `Reaction` schema of the OpenAPI document).
#[derive(Serialize)]
struct ReactionView<'a> {
    id: &'a str,
    message_id: &'a str,
    user_id: &'a str,
    emoji: &'a str,
    created_at: Timestamp,
}

/// Payload of `reaction.removed`.
#[derive(Serialize)]
struct ReactionRemovedView<'a> {
    emoji: &'a str,
    message_id: &'a str,
    user_id: &'a str,
}

/// ReadReceipt (the `ReadReceipt` schema of the OpenAPI document).
#[derive(Serialize)]
struct ReadReceiptView<'a> {
    id: &'a str,
    conversation_id: &'a str,
    user_id: &'a str,
    last_read_message_id: &'a str,
    last_read_at: Timestamp,
}

impl<'a> From<&'a ReadReceipt> for ReadReceiptView<'a> {
    fn from(receipt: &'a ReadReceipt) -> Self {
        Self {
            id: &receipt.id,
            conversation_id: &receipt.conversation_id,
            user_id: &receipt.user_id,
            last_read_message_id: &receipt.last_read_message_id,
            last_read_at: Timestamp(receipt.last_read_at_us),
        }
    }
}

/// PinnedMessage (the `PinnedMessage` schema of the OpenAPI document).
#[derive(Serialize)]
struct PinnedMessageView<'a> {
    id: &'a str,
    conversation_id: &'a str,
    message_id: &'a str,
    pinned_by: &'a str,
    pinned_at: Timestamp,
}

impl<'a> From<&'a PinnedMessage> for PinnedMessageView<'a> {
    fn from(pin: &'a PinnedMessage) -> Self {
        Self {
            id: &pin.id,
            conversation_id: &pin.conversation_id,
            message_id: &pin.message_id,
            pinned_by: &pin.pinned_by,
            pinned_at: Timestamp(pin.pinned_at_us),
        }
    }
}

/// Payload of `message.unpinned`.
#[derive(Serialize)]
struct MessageUnpinnedView<'a> {
    conversation_id: &'a str,
    message_id: &'a str,
}

impl<'a> From<&'a MessageUnpinned> for MessageUnpinnedView<'a> {
    fn from(unpinned: &'a MessageUnpinned) -> Self {
        Self {
            conversation_id: &unpinned.conversation_id,
            message_id: &unpinned.message_id,
        }
    }
}

/// Conversation (the `Conversation` schema of the OpenAPI document), as in event payloads:
/// `unread_count` is always 0.
#[derive(Serialize)]
struct ConversationView<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    conversation_type: &'a str,
    name: Option<&'a str>,
    description: Option<&'a str>,
    avatar_url: Option<&'a str>,
    creator_id: Option<&'a str>,
    is_archived: bool,
    last_message_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
    unread_count: u8,
}

impl<'a> From<&'a Conversation> for ConversationView<'a> {
    fn from(conversation: &'a Conversation) -> Self {
        Self {
            id: &conversation.id,
            conversation_type: &conversation.r#type,
            name: conversation.name.as_deref(),
            description: conversation.description.as_deref(),
            avatar_url: conversation.avatar_url.as_deref(),
            creator_id: conversation.creator_id.as_deref(),
            is_archived: conversation.is_archived,
            last_message_at: conversation.last_message_at_us.map(Timestamp),
            created_at: Timestamp(conversation.created_at_us),
            updated_at: Timestamp(conversation.updated_at_us),
            // The count is per user, so payloads carry 0 (`docs/websocket.md`, "Messages and the
            // envelope").
            unread_count: 0,
        }
    }
}

/// ConversationDetail (the `ConversationDetail` schema of the OpenAPI document): the
/// Conversation keys, then `participants`.
#[derive(Serialize)]
struct ConversationDetailView<'a> {
    #[serde(flatten)]
    conversation: ConversationView<'a>,
    participants: List<'a, Participant>,
}

impl<'a> ConversationDetailView<'a> {
    fn new(detail: &'a ConversationDetail) -> Result<Self, RenderError> {
        let conversation = detail
            .conversation
            .as_ref()
            .ok_or(RenderError::MissingField("ConversationDetail.conversation"))?;
        Ok(Self {
            conversation: conversation.into(),
            participants: List(&detail.participants),
        })
    }
}

/// Participant (the `Participant` schema of the OpenAPI document).
#[derive(Serialize)]
struct ParticipantView<'a> {
    id: &'a str,
    conversation_id: &'a str,
    user_id: &'a str,
    role: &'a str,
    nickname: Option<&'a str>,
    joined_at: Timestamp,
}

impl<'a> From<&'a Participant> for ParticipantView<'a> {
    fn from(participant: &'a Participant) -> Self {
        Self {
            id: &participant.id,
            conversation_id: &participant.conversation_id,
            user_id: &participant.user_id,
            role: &participant.role,
            nickname: participant.nickname.as_deref(),
            joined_at: Timestamp(participant.joined_at_us),
        }
    }
}

impl View for Participant {
    type View<'a> = ParticipantView<'a>;
    fn view(&self) -> ParticipantView<'_> {
        self.into()
    }
}

/// Payload of `participant.added`.
#[derive(Serialize)]
struct ParticipantsAddedView<'a> {
    conversation_id: &'a str,
    participants: List<'a, Participant>,
}

/// Payload of `conversation.left` and `participant.removed`.
#[derive(Serialize)]
struct ConversationUserView<'a> {
    conversation_id: &'a str,
    user_id: &'a str,
}

/// Payload of `presence.online` and `presence.offline`.
#[derive(Serialize)]
struct UserView<'a> {
    user_id: &'a str,
}
