//! Every body variant of the `Event` envelope survives protobuf encoding and decoding.

use shared_proto::events::{
    Attachment, Conversation, ConversationArchived, ConversationDetail, ConversationJoined,
    ConversationLeft, ConversationUpdated, Event, EventKind, Message, MessageDeleted,
    MessageUnpinned, Participant, ParticipantRemoved, ParticipantUpdated, ParticipantsAdded,
    PinnedMessage, Presence, Reaction, ReactionRef, ReactionRemoved, ReadReceipt, Typing,
    event::Body,
};
use shared_proto::prost::Message as _;

const CONV: &str = "6f1c2a4e-8b3d-4c1a-9e2f-0a1b2c3d4e5f";
const MSG: &str = "0190f5a2-7b3c-7d4e-8f90-a1b2c3d4e5f6";
const ALICE: &str = "11111111-1111-4111-8111-111111111111";
const BOB: &str = "22222222-2222-4222-8222-222222222222";
const T: i64 = 1_795_532_444_116_600;

fn participant(user_id: &str) -> Participant {
    Participant {
        id: "33333333-3333-4333-8333-333333333333".into(),
        conversation_id: CONV.into(),
        user_id: user_id.into(),
        role: "member".into(),
        nickname: Some("al".into()),
        joined_at_us: T,
    }
}

fn conversation() -> Conversation {
    Conversation {
        id: CONV.into(),
        r#type: "group".into(),
        name: Some("Team".into()),
        description: None,
        avatar_url: Some(String::new()),
        creator_id: Some(ALICE.into()),
        is_archived: false,
        last_message_at_us: Some(T),
        created_at_us: T - 1,
        updated_at_us: T,
    }
}

fn detail() -> ConversationDetail {
    ConversationDetail {
        conversation: Some(conversation()),
        participants: vec![participant(ALICE), participant(BOB)],
    }
}

fn every_body() -> Vec<(EventKind, Body)> {
    vec![
        (
            EventKind::MessageNew,
            Body::Message(Message {
                id: MSG.into(),
                conversation_id: CONV.into(),
                sender_id: ALICE.into(),
                seq: 42,
                r#type: "image".into(),
                content: Some(String::new()),
                metadata_json: Some(r#"{"a": {"b": [1, 2]}}"#.into()),
                reply_to_id: Some(MSG.into()),
                client_msg_id: Some("c-1".into()),
                is_edited: true,
                edited_at_us: Some(T + 5),
                created_at_us: T,
                reactions: vec![ReactionRef {
                    emoji: "👍".into(),
                    user_id: BOB.into(),
                }],
                attachments: vec![Attachment {
                    id: "44444444-4444-4444-8444-444444444444".into(),
                    message_id: MSG.into(),
                    file_name: "cat.png".into(),
                    file_type: "image/png".into(),
                    file_size: 1234,
                    file_url: "/uploads/cat.png".into(),
                    thumbnail_url: Some("/uploads/cat-thumb.jpg".into()),
                    width: Some(640),
                    height: None,
                    duration: Some(2.507),
                    created_at_us: T,
                }],
            }),
        ),
        (
            EventKind::MessageDeleted,
            Body::MessageDeleted(MessageDeleted {
                conversation_id: CONV.into(),
                id: MSG.into(),
            }),
        ),
        (
            EventKind::ReactionAdded,
            Body::Reaction(Reaction {
                id: "55555555-5555-4555-8555-555555555555".into(),
                message_id: MSG.into(),
                user_id: BOB.into(),
                emoji: "🎉".into(),
                created_at_us: T,
            }),
        ),
        (
            EventKind::ReactionRemoved,
            Body::ReactionRemoved(ReactionRemoved {
                emoji: "🎉".into(),
                message_id: MSG.into(),
                user_id: BOB.into(),
            }),
        ),
        (
            EventKind::ReadUpdated,
            Body::ReadReceipt(ReadReceipt {
                id: "66666666-6666-4666-8666-666666666666".into(),
                conversation_id: CONV.into(),
                user_id: BOB.into(),
                last_read_message_id: MSG.into(),
                last_read_at_us: T,
            }),
        ),
        (
            EventKind::MessagePinned,
            Body::PinnedMessage(PinnedMessage {
                id: "77777777-7777-4777-8777-777777777777".into(),
                conversation_id: CONV.into(),
                message_id: MSG.into(),
                pinned_by: ALICE.into(),
                pinned_at_us: T,
            }),
        ),
        (
            EventKind::MessageUnpinned,
            Body::MessageUnpinned(MessageUnpinned {
                conversation_id: CONV.into(),
                message_id: MSG.into(),
            }),
        ),
        (
            EventKind::ConversationJoined,
            Body::ConversationJoined(ConversationJoined {
                detail: Some(detail()),
            }),
        ),
        (
            EventKind::ConversationLeft,
            Body::ConversationLeft(ConversationLeft {
                conversation_id: CONV.into(),
                user_id: BOB.into(),
            }),
        ),
        (
            EventKind::ParticipantAdded,
            Body::ParticipantsAdded(ParticipantsAdded {
                conversation_id: CONV.into(),
                participants: vec![participant(BOB)],
            }),
        ),
        (
            EventKind::ParticipantRemoved,
            Body::ParticipantRemoved(ParticipantRemoved {
                conversation_id: CONV.into(),
                user_id: BOB.into(),
            }),
        ),
        (
            EventKind::ParticipantUpdated,
            Body::ParticipantUpdated(ParticipantUpdated {
                participant: Some(participant(BOB)),
            }),
        ),
        (
            EventKind::ConversationUpdated,
            Body::ConversationUpdated(ConversationUpdated {
                detail: Some(detail()),
            }),
        ),
        (
            EventKind::ConversationArchived,
            Body::ConversationArchived(ConversationArchived {
                conversation: Some(conversation()),
            }),
        ),
        (
            EventKind::PresenceOnline,
            Body::Presence(Presence {
                user_id: ALICE.into(),
            }),
        ),
        (
            EventKind::TypingStart,
            Body::Typing(Typing {
                user_id: ALICE.into(),
                payload_json: format!(r#"{{"user_id":"{ALICE}","draft":true}}"#),
            }),
        ),
    ]
}

#[test]
fn every_body_variant_survives_an_encode_decode_round_trip() {
    let bodies = every_body();
    assert_eq!(bodies.len(), 16, "one sample per oneof variant");
    for (kind, body) in bodies {
        let event = Event {
            event_id: "88888888-8888-4888-8888-888888888888".into(),
            kind: kind.into(),
            conversation_id: if kind.is_presence() { "" } else { CONV }.into(),
            actor_id: ALICE.into(),
            occurred_at_us: T,
            target_user_id: (kind == EventKind::ConversationJoined).then(|| BOB.into()),
            target_user_ids: vec![],
            body: Some(body),
        };
        let bytes = event.encode_to_vec();
        let decoded = Event::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, event);
        assert_eq!(decoded.kind(), kind);
        // Every sample is also a renderable client event.
        shared_proto::json::client_frame(&decoded).expect("renders");
    }
}

#[test]
fn absent_optional_fields_stay_absent_after_a_round_trip() {
    let message = Message {
        content: None,
        metadata_json: None,
        edited_at_us: None,
        ..Message::default()
    };
    let decoded = Message::decode(message.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded.content, None);
    assert_eq!(decoded.metadata_json, None);
    assert_eq!(decoded.edited_at_us, None);

    let empty = Message {
        content: Some(String::new()),
        ..Message::default()
    };
    let decoded = Message::decode(empty.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(
        decoded.content.as_deref(),
        Some(""),
        "empty content is not null"
    );
}

#[test]
fn every_event_kind_but_unspecified_has_a_client_type_that_maps_back() {
    let mut count = 0;
    for value in 1..=19 {
        let kind = EventKind::try_from(value).expect("kind exists");
        let client_type = kind.client_type().expect("has a client type");
        assert_eq!(EventKind::from_client_type(client_type), Some(kind));
        count += 1;
    }
    assert_eq!(count, 19);
    assert!(EventKind::try_from(20).is_err());
    assert_eq!(EventKind::Unspecified.client_type(), None);
    assert_eq!(EventKind::from_client_type("presence.snapshot"), None);
    assert_eq!(EventKind::from_client_type("message.edit"), None);
}
