//! The resource shapes of the API (the OpenAPI document's schemas), exactly as they go on the wire,
//! and their protobuf counterparts for events (so a REST `data` and the matching WebSocket payload
//! are built from the same value). Keys are exact; "omitted when null" keys are skipped; timestamps
//! are formatted by [`Timestamp`] (RFC 3339 UTC, microseconds, trailing zeros removed).

use chrono::{DateTime, Utc};
use std::borrow::Cow;

use poem_openapi::{
    Object,
    registry::{MetaSchema, MetaSchemaRef},
    types::{Any, Example, ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::Serialize;
use serde_json::value::RawValue;
use shared_proto::events as pb;
use uuid::{Uuid, uuid};

/// An RFC 3339 UTC timestamp with microsecond precision and trailing fractional zeros removed
/// (docs/api.md, "Formats"), e.g. `2026-11-24T15:00:44.1166Z`. Held as unix microseconds and
/// formatted only when written, so the protobuf events (which carry microseconds) take the value as
/// is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

const TIMESTAMP_DOC: &str = "An RFC 3339 UTC timestamp with microsecond precision and trailing fractional zeros removed\n(docs/api.md, \"Formats\"), e.g. `2026-11-24T15:00:44.1166Z`.";

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shared_proto::json::format_timestamp_us(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Type for Timestamp {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("date-time"),
            title: Some(TIMESTAMP_DOC.to_owned()),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.to_string()))
    }
}

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        let text = value
            .as_ref()
            .and_then(|v| v.as_str())
            .ok_or_else(|| ParseError::expected_type(value.clone().unwrap_or_default()))?;
        DateTime::parse_from_rfc3339(text)
            .map(|d| Self(d.timestamp_micros()))
            .map_err(ParseError::custom)
    }
}

/// Metadata as PostgreSQL's jsonb text made compact: white space outside strings removed,
/// nothing else changed. `None` for JSON `null` (or text that is not JSON, which jsonb never
/// produces).
pub fn raw_json(text: &str) -> Option<Any<Box<RawValue>>> {
    let raw = RawValue::from_string(shared_proto::json::compact_json(text)).ok()?;
    (raw.get() != "null").then_some(Any(raw))
}

/// Microseconds since the Unix epoch (what PostgreSQL stores).
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self(micros(t))
    }
}

/// A conversation without its participants.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct Conversation {
    pub id: Uuid,
    /// `direct`, `group` or `channel`.
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub avatar_url: Option<String>,
    /// Null for direct conversations.
    pub creator_id: Option<Uuid>,
    pub is_archived: bool,
    /// `created_at` of the newest message ever sent.
    pub last_message_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Unread messages for the caller; 0 in WebSocket payloads.
    pub unread_count: i64,
}

/// A conversation with its active participants.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct ConversationDetail {
    #[serde(flatten)]
    #[oai(flatten)]
    pub conversation: Conversation,
    pub participants: Vec<Participant>,
}

/// A public channel in discovery.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct ChannelSummary {
    #[serde(flatten)]
    #[oai(flatten)]
    pub conversation: Conversation,
    pub member_count: i64,
}

/// An active participant.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct Participant {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub nickname: Option<String>,
    pub joined_at: Timestamp,
}

/// One reaction as embedded in a message.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct ReactionRef {
    pub emoji: String,
    pub user_id: Uuid,
}

/// A message (deleted messages are never returned).
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender_id: Uuid,
    /// Per-conversation sequence number: 1, 2, 3 … without gaps.
    pub seq: i64,
    /// `text`, `image`, `file`, `audio`, `video` or `system`.
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: String,
    pub content: Option<String>,
    /// Any JSON value in PostgreSQL jsonb normal form (numbers as stored); omitted when null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub metadata: Option<Any<Box<RawValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub reply_to_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub client_msg_id: Option<String>,
    pub is_edited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub edited_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub reactions: Vec<ReactionRef>,
    pub attachments: Vec<Attachment>,
}

/// A reaction.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct Reaction {
    pub id: Uuid,
    pub message_id: Uuid,
    pub user_id: Uuid,
    pub emoji: String,
    pub created_at: Timestamp,
}

/// A read receipt.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct ReadReceipt {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub last_read_message_id: Uuid,
    pub last_read_at: Timestamp,
}

/// A pin (without the message body).
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct PinnedMessage {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub pinned_by: Uuid,
    pub pinned_at: Timestamp,
}

/// An attachment. Optional keys are omitted when unknown.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct Attachment {
    pub id: Uuid,
    pub message_id: Uuid,
    pub file_name: String,
    /// The verified MIME type.
    pub file_type: String,
    pub file_size: i64,
    pub file_url: String,
    /// A JPEG of at most 320 × 320 pixels, for images the service could decode.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub thumbnail_url: Option<String>,
    /// Pixels, as displayed (EXIF orientation applied), of images and videos whose header gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub width: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub height: Option<i32>,
    /// Seconds, to the millisecond, of audio and video whose container gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub duration: Option<f64>,
    pub created_at: Timestamp,
}

/// Who is typing in a conversation.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(example)]
pub struct TypingState {
    pub user_ids: Vec<Uuid>,
}

// ----- examples (OpenAPI document) --------------------------------------------------------------
//
// One small conversation seen by Alice, its owner: the ids agree across the examples.

const ALICE: Uuid = uuid!("3f1c2a9e-4b7d-4e21-9a55-0c8e1d2f6b13");
const BOB: Uuid = uuid!("8b2e5d71-0f3a-4c69-b8d4-2a7e9c1f5e40");
const GROUP: Uuid = uuid!("6d0f4b8a-93c2-4e7a-a1d5-5b2c8e7f9a04");
const CHANNEL: Uuid = uuid!("a47c1e90-2b5d-4f83-9e6a-7d1c3b8f0e25");
const MESSAGE: Uuid = uuid!("019bc1a4-2f6e-7d3a-8b1c-4e5f6a7b8c9d");
const EARLIER_MESSAGE: Uuid = uuid!("019bc19f-8a21-7c04-9d3e-1f2a3b4c5d6e");

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_from_json(Some(rfc3339.into())).expect("an example timestamp")
}

fn member(id: Uuid, user_id: Uuid, role: &str) -> Participant {
    Participant {
        id,
        conversation_id: GROUP,
        user_id,
        role: role.to_owned(),
        nickname: None,
        joined_at: at("2026-01-12T14:02:55.1093Z"),
    }
}

impl Example for Conversation {
    fn example() -> Self {
        Self {
            id: GROUP,
            kind: "group".to_owned(),
            name: Some("Design team".to_owned()),
            description: Some("Weekly design review".to_owned()),
            avatar_url: None,
            creator_id: Some(ALICE),
            is_archived: false,
            last_message_at: Some(at("2026-01-15T09:30:12.4817Z")),
            created_at: at("2026-01-12T14:02:55.1093Z"),
            updated_at: at("2026-01-15T09:30:12.4817Z"),
            unread_count: 2,
        }
    }
}

impl Example for ConversationDetail {
    fn example() -> Self {
        Self {
            conversation: Conversation::example(),
            participants: vec![
                member(
                    uuid!("c2d9e4f1-7a3b-4c5d-8e6f-0a1b2c3d4e5f"),
                    ALICE,
                    "owner",
                ),
                Participant::example(),
            ],
        }
    }
}

impl Example for ChannelSummary {
    fn example() -> Self {
        Self {
            conversation: Conversation {
                id: CHANNEL,
                kind: "channel".to_owned(),
                name: Some("announcements".to_owned()),
                description: Some("Company-wide news".to_owned()),
                avatar_url: Some("https://cdn.example.com/avatars/announcements.png".to_owned()),
                creator_id: Some(ALICE),
                is_archived: false,
                last_message_at: Some(at("2026-01-14T17:45:03.208Z")),
                created_at: at("2025-09-01T08:00:00Z"),
                updated_at: at("2026-01-14T17:45:03.208Z"),
                unread_count: 0,
            },
            member_count: 42,
        }
    }
}

impl Example for Participant {
    fn example() -> Self {
        member(uuid!("5e8a1b3c-6d7f-4a2e-9b0c-d4e5f6a7b8c9"), BOB, "member")
    }
}

impl Example for ReactionRef {
    fn example() -> Self {
        Self {
            emoji: "👍".to_owned(),
            user_id: ALICE,
        }
    }
}

impl Example for Message {
    fn example() -> Self {
        Self {
            id: MESSAGE,
            conversation_id: GROUP,
            sender_id: BOB,
            seq: 57,
            kind: "text".to_owned(),
            content: Some("Can we move the review to 10:30?".to_owned()),
            metadata: None,
            reply_to_id: Some(EARLIER_MESSAGE),
            client_msg_id: Some("web-7f3c9a21".to_owned()),
            is_edited: false,
            edited_at: None,
            created_at: at("2026-01-15T09:30:12.4817Z"),
            reactions: vec![ReactionRef::example()],
            attachments: vec![Attachment::example()],
        }
    }
}

impl Example for Reaction {
    fn example() -> Self {
        Self {
            id: uuid!("e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b"),
            message_id: MESSAGE,
            user_id: ALICE,
            emoji: "👍".to_owned(),
            created_at: at("2026-01-15T09:31:40.0552Z"),
        }
    }
}

impl Example for ReadReceipt {
    fn example() -> Self {
        Self {
            id: uuid!("7b6a5c4d-3e2f-4a1b-8c9d-e0f1a2b3c4d5"),
            conversation_id: GROUP,
            user_id: ALICE,
            last_read_message_id: MESSAGE,
            last_read_at: at("2026-01-15T09:31:38.9127Z"),
        }
    }
}

impl Example for PinnedMessage {
    fn example() -> Self {
        Self {
            id: uuid!("0d1e2f3a-4b5c-4d6e-9f7a-8b9c0d1e2f3a"),
            conversation_id: GROUP,
            message_id: MESSAGE,
            pinned_by: ALICE,
            pinned_at: at("2026-01-15T09:33:07.61Z"),
        }
    }
}

impl Example for Attachment {
    fn example() -> Self {
        Self {
            id: uuid!("f4e3d2c1-b0a9-4876-9543-210fedcba987"),
            message_id: MESSAGE,
            file_name: "floor-plan.png".to_owned(),
            file_type: "image/png".to_owned(),
            file_size: 482_133,
            file_url: "http://localhost:8082/uploads/5b0e7a0c-2d4f-4b8e-9c61-7a3f2e1d0c9b.png"
                .to_owned(),
            thumbnail_url: Some(
                "http://localhost:8082/uploads/9c2d4e6f-1a3b-4c5d-8e7f-0a1b2c3d4e5f.jpg".to_owned(),
            ),
            width: Some(1600),
            height: Some(1200),
            duration: None,
            created_at: at("2026-01-15T09:30:13.0071Z"),
        }
    }
}

impl Example for TypingState {
    fn example() -> Self {
        Self {
            user_ids: vec![BOB],
        }
    }
}

/// A value shown in the OpenAPI document as the example of a success body's `data`: what the
/// route would send, serialised exactly as on the wire. The envelopes of [`crate::http`] put it
/// in their response descriptions.
pub trait BodyExample {
    /// The example `data`.
    fn body_example() -> serde_json::Value;
}

impl<T: BodyExample> BodyExample for Vec<T> {
    fn body_example() -> serde_json::Value {
        serde_json::Value::Array(vec![T::body_example()])
    }
}

/// The body examples are the resource examples, serialised as the routes serialise them.
macro_rules! body_examples {
    ($($resource:ty),* $(,)?) => {$(
        impl BodyExample for $resource {
            fn body_example() -> serde_json::Value {
                serde_json::to_value(<$resource as Example>::example())
                    .expect("the example serialises")
            }
        }
    )*};
}

body_examples!(
    Conversation,
    ConversationDetail,
    ChannelSummary,
    Participant,
    Message,
    Reaction,
    ReadReceipt,
    PinnedMessage,
    Attachment,
    TypingState,
);

// ----- protobuf bodies (event payloads) ---------------------------------------------------------
//
// The proto types carry raw microseconds; the gateway formats them with the same function as
// `Timestamp`, so both sides render identical text.

impl From<&Conversation> for pb::Conversation {
    fn from(c: &Conversation) -> Self {
        Self {
            id: c.id.to_string(),
            r#type: c.kind.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            avatar_url: c.avatar_url.clone(),
            creator_id: c.creator_id.map(|u| u.to_string()),
            is_archived: c.is_archived,
            last_message_at_us: c.last_message_at.map(|t| t.0),
            created_at_us: c.created_at.0,
            updated_at_us: c.updated_at.0,
        }
    }
}

impl From<&Participant> for pb::Participant {
    fn from(p: &Participant) -> Self {
        Self {
            id: p.id.to_string(),
            conversation_id: p.conversation_id.to_string(),
            user_id: p.user_id.to_string(),
            role: p.role.clone(),
            nickname: p.nickname.clone(),
            joined_at_us: p.joined_at.0,
        }
    }
}

impl From<&ConversationDetail> for pb::ConversationDetail {
    fn from(d: &ConversationDetail) -> Self {
        Self {
            conversation: Some((&d.conversation).into()),
            participants: d.participants.iter().map(Into::into).collect(),
        }
    }
}

impl From<&Attachment> for pb::Attachment {
    fn from(a: &Attachment) -> Self {
        Self {
            id: a.id.to_string(),
            message_id: a.message_id.to_string(),
            file_name: a.file_name.clone(),
            file_type: a.file_type.clone(),
            file_size: a.file_size,
            file_url: a.file_url.clone(),
            thumbnail_url: a.thumbnail_url.clone(),
            width: a.width,
            height: a.height,
            duration: a.duration,
            created_at_us: a.created_at.0,
        }
    }
}

impl From<&Message> for pb::Message {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id.to_string(),
            conversation_id: m.conversation_id.to_string(),
            sender_id: m.sender_id.to_string(),
            seq: m.seq,
            r#type: m.kind.clone(),
            content: m.content.clone(),
            metadata_json: m.metadata.as_ref().map(|v| v.0.get().to_owned()),
            reply_to_id: m.reply_to_id.map(|u| u.to_string()),
            client_msg_id: m.client_msg_id.clone(),
            is_edited: m.is_edited,
            edited_at_us: m.edited_at.map(|t| t.0),
            created_at_us: m.created_at.0,
            reactions: m
                .reactions
                .iter()
                .map(|r| pb::ReactionRef {
                    emoji: r.emoji.clone(),
                    user_id: r.user_id.to_string(),
                })
                .collect(),
            attachments: m.attachments.iter().map(Into::into).collect(),
        }
    }
}

impl From<&Reaction> for pb::Reaction {
    fn from(r: &Reaction) -> Self {
        Self {
            id: r.id.to_string(),
            message_id: r.message_id.to_string(),
            user_id: r.user_id.to_string(),
            emoji: r.emoji.clone(),
            created_at_us: r.created_at.0,
        }
    }
}

impl From<&ReadReceipt> for pb::ReadReceipt {
    fn from(r: &ReadReceipt) -> Self {
        Self {
            id: r.id.to_string(),
            conversation_id: r.conversation_id.to_string(),
            user_id: r.user_id.to_string(),
            last_read_message_id: r.last_read_message_id.to_string(),
            last_read_at_us: r.last_read_at.0,
        }
    }
}

impl From<&PinnedMessage> for pb::PinnedMessage {
    fn from(p: &PinnedMessage) -> Self {
        Self {
            id: p.id.to_string(),
            conversation_id: p.conversation_id.to_string(),
            message_id: p.message_id.to_string(),
            pinned_by: p.pinned_by.to_string(),
            pinned_at_us: p.pinned_at.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_drop_trailing_fractional_zeros() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T15:00:44.116600Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Timestamp::from(t).to_string(), "2026-11-24T15:00:44.1166Z");
        let whole = DateTime::parse_from_rfc3339("2026-11-24T15:00:44Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Timestamp::from(whole).to_string(), "2026-11-24T15:00:44Z");
        assert_eq!(Timestamp::from(t).0, t.timestamp_micros());
    }
}
