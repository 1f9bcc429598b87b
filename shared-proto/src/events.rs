//! The protobuf event types (package `retich.events.v1`), generated at build time from
//! `proto/retich/events/v1/*.proto` by `build.rs`.
//!
//! Which body goes with which [`EventKind`] is documented on the enum in `event.proto`;
//! [`crate::json::client_frame`] enforces it.

include!(concat!(env!("OUT_DIR"), "/retich.events.v1.rs"));

impl EventKind {
    /// The client event type (`type` of the JSON frame; `docs/websocket.md`, "Server events") of
    /// this kind; `None` for [`EventKind::Unspecified`].
    pub fn client_type(&self) -> Option<&'static str> {
        Some(match self {
            Self::Unspecified => return None,
            Self::MessageNew => "message.new",
            Self::MessageUpdated => "message.updated",
            Self::MessageDeleted => "message.deleted",
            Self::ReactionAdded => "reaction.added",
            Self::ReactionRemoved => "reaction.removed",
            Self::ReadUpdated => "read.updated",
            Self::MessagePinned => "message.pinned",
            Self::MessageUnpinned => "message.unpinned",
            Self::ConversationJoined => "conversation.joined",
            Self::ConversationLeft => "conversation.left",
            Self::ParticipantAdded => "participant.added",
            Self::ParticipantRemoved => "participant.removed",
            Self::ParticipantUpdated => "participant.updated",
            Self::ConversationUpdated => "conversation.updated",
            Self::ConversationArchived => "conversation.archived",
            Self::PresenceOnline => "presence.online",
            Self::PresenceOffline => "presence.offline",
            Self::TypingStart => "typing.start",
            Self::TypingStop => "typing.stop",
        })
    }

    /// The kind whose [`client_type`](Self::client_type) is `client_type`, if any
    /// (`"presence.snapshot"` has none: it is never published).
    pub fn from_client_type(client_type: &str) -> Option<Self> {
        Some(match client_type {
            "message.new" => Self::MessageNew,
            "message.updated" => Self::MessageUpdated,
            "message.deleted" => Self::MessageDeleted,
            "reaction.added" => Self::ReactionAdded,
            "reaction.removed" => Self::ReactionRemoved,
            "read.updated" => Self::ReadUpdated,
            "message.pinned" => Self::MessagePinned,
            "message.unpinned" => Self::MessageUnpinned,
            "conversation.joined" => Self::ConversationJoined,
            "conversation.left" => Self::ConversationLeft,
            "participant.added" => Self::ParticipantAdded,
            "participant.removed" => Self::ParticipantRemoved,
            "participant.updated" => Self::ParticipantUpdated,
            "conversation.updated" => Self::ConversationUpdated,
            "conversation.archived" => Self::ConversationArchived,
            "presence.online" => Self::PresenceOnline,
            "presence.offline" => Self::PresenceOffline,
            "typing.start" => Self::TypingStart,
            "typing.stop" => Self::TypingStop,
            _ => return None,
        })
    }

    /// Whether this is `presence.online` or `presence.offline`, whose frames carry
    /// `"conversation_id":""` (`docs/websocket.md`, "Messages and the envelope").
    pub fn is_presence(&self) -> bool {
        matches!(self, Self::PresenceOnline | Self::PresenceOffline)
    }
}
