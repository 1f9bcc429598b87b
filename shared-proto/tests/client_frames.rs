//! Golden tests: an `Event` renders to the exact client frame bytes of `docs/websocket.md`
//! ("Messages and the envelope", "Server events"), with payloads in the shapes of the schemas of
//! the OpenAPI document.

use shared_proto::events::{
    Attachment, Conversation, ConversationArchived, ConversationDetail, ConversationJoined,
    ConversationLeft, Event, EventKind, Message, MessageDeleted, MessageUnpinned, Participant,
    ParticipantUpdated, ParticipantsAdded, PinnedMessage, Presence, Reaction, ReactionRef,
    ReactionRemoved, ReadReceipt, Typing, event::Body,
};
use shared_proto::json::{
    RESYNC_NOT_PUBLISHED, RESYNC_STREAM_INTERRUPTED, RenderError, client_frame,
    presence_snapshot_frame, resync_frame,
};
use uuid::Uuid;

const CONV: &str = "c0000000-0000-4000-8000-000000000001";
const MSG: &str = "d0000000-0000-7000-8000-000000000001";
const ALICE: &str = "a0000000-0000-4000-8000-000000000001";
const BOB: &str = "b0000000-0000-4000-8000-000000000002";
/// 2026-11-24T15:00:44.1166Z
const T1166: i64 = 1_795_532_444_116_600;
/// 2026-11-24T15:00:44Z
const T_WHOLE: i64 = 1_795_532_444_000_000;
/// 2026-11-24T15:05:00.000001Z
const T_MICRO: i64 = 1_795_532_700_000_001;

fn event(kind: EventKind, conversation_id: &str, body: Body) -> Event {
    Event {
        event_id: "e0000000-0000-4000-8000-000000000001".into(),
        kind: kind.into(),
        conversation_id: conversation_id.into(),
        actor_id: ALICE.into(),
        occurred_at_us: T1166,
        target_user_id: None,
        target_user_ids: vec![],
        body: Some(body),
    }
}

fn render(event: &Event) -> String {
    String::from_utf8(client_frame(event).expect("renders")).expect("utf-8")
}

fn bare_message() -> Message {
    Message {
        id: MSG.into(),
        conversation_id: CONV.into(),
        sender_id: ALICE.into(),
        seq: 1,
        r#type: "system".into(),
        content: None,
        metadata_json: None,
        reply_to_id: None,
        client_msg_id: None,
        is_edited: false,
        edited_at_us: None,
        created_at_us: T1166,
        reactions: vec![],
        attachments: vec![],
    }
}

fn participant(id_digit: char, user_id: &str, role: &str, nickname: Option<&str>) -> Participant {
    Participant {
        id: format!("f0000000-0000-4000-8000-00000000000{id_digit}"),
        conversation_id: CONV.into(),
        user_id: user_id.into(),
        role: role.into(),
        nickname: nickname.map(Into::into),
        joined_at_us: T_WHOLE,
    }
}

fn direct_conversation() -> Conversation {
    Conversation {
        id: CONV.into(),
        r#type: "direct".into(),
        name: None,
        description: None,
        avatar_url: None,
        creator_id: None,
        is_archived: false,
        last_message_at_us: None,
        created_at_us: T_WHOLE,
        updated_at_us: T1166,
    }
}

#[test]
fn a_new_message_writes_null_content_and_omits_null_optional_keys() {
    let frame = render(&event(
        EventKind::MessageNew,
        CONV,
        Body::Message(bare_message()),
    ));
    assert_eq!(
        frame,
        r#"{"type":"message.new","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"d0000000-0000-7000-8000-000000000001","conversation_id":"c0000000-0000-4000-8000-000000000001","sender_id":"a0000000-0000-4000-8000-000000000001","seq":1,"type":"system","content":null,"is_edited":false,"created_at":"2026-11-24T15:00:44.1166Z","reactions":[],"attachments":[]}}"#
    );
}

#[test]
fn an_empty_content_string_stays_an_empty_string() {
    let message = Message {
        content: Some(String::new()),
        ..bare_message()
    };
    let frame = render(&event(EventKind::MessageNew, CONV, Body::Message(message)));
    assert!(frame.contains(r#""content":"","#), "{frame}");
}

#[test]
fn an_edited_message_carries_compact_ordered_metadata_reactions_and_attachments() {
    let message = Message {
        seq: 42,
        r#type: "image".into(),
        content: Some("look \"here\"".into()),
        // PostgreSQL's jsonb text: spaced, keys already in its normal order, which is kept.
        metadata_json: Some(r#"{"b": 1, "aa": {"z": [1, 2.5, "x"], "y": null, "x": {}}}"#.into()),
        reply_to_id: Some(BOB.into()),
        client_msg_id: Some("client-7".into()),
        is_edited: true,
        edited_at_us: Some(T_MICRO),
        created_at_us: T_WHOLE,
        reactions: vec![
            ReactionRef {
                emoji: "👍".into(),
                user_id: BOB.into(),
            },
            ReactionRef {
                emoji: "🎉".into(),
                user_id: ALICE.into(),
            },
        ],
        attachments: vec![
            Attachment {
                id: "a1000000-0000-4000-8000-000000000001".into(),
                message_id: MSG.into(),
                file_name: "cat.png".into(),
                file_type: "image/png".into(),
                file_size: 123_456,
                file_url: "/uploads/cat.png".into(),
                thumbnail_url: Some("/uploads/cat.jpg".into()),
                width: Some(640),
                height: Some(480),
                duration: None,
                created_at_us: T1166,
            },
            Attachment {
                id: "a1000000-0000-4000-8000-000000000002".into(),
                message_id: MSG.into(),
                file_name: "notes.pdf".into(),
                file_type: "application/pdf".into(),
                file_size: 9,
                file_url: "/uploads/notes.pdf".into(),
                thumbnail_url: None,
                width: None,
                height: None,
                duration: Some(2.507),
                created_at_us: T_MICRO,
            },
        ],
        ..bare_message()
    };
    let frame = render(&event(
        EventKind::MessageUpdated,
        CONV,
        Body::Message(message),
    ));
    assert_eq!(
        frame,
        r#"{"type":"message.updated","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"d0000000-0000-7000-8000-000000000001","conversation_id":"c0000000-0000-4000-8000-000000000001","sender_id":"a0000000-0000-4000-8000-000000000001","seq":42,"type":"image","content":"look \"here\"","metadata":{"b":1,"aa":{"z":[1,2.5,"x"],"y":null,"x":{}}},"reply_to_id":"b0000000-0000-4000-8000-000000000002","client_msg_id":"client-7","is_edited":true,"edited_at":"2026-11-24T15:05:00.000001Z","created_at":"2026-11-24T15:00:44Z","reactions":[{"emoji":"👍","user_id":"b0000000-0000-4000-8000-000000000002"},{"emoji":"🎉","user_id":"a0000000-0000-4000-8000-000000000001"}],"attachments":[{"id":"a1000000-0000-4000-8000-000000000001","message_id":"d0000000-0000-7000-8000-000000000001","file_name":"cat.png","file_type":"image/png","file_size":123456,"file_url":"/uploads/cat.png","thumbnail_url":"/uploads/cat.jpg","width":640,"height":480,"created_at":"2026-11-24T15:00:44.1166Z"},{"id":"a1000000-0000-4000-8000-000000000002","message_id":"d0000000-0000-7000-8000-000000000001","file_name":"notes.pdf","file_type":"application/pdf","file_size":9,"file_url":"/uploads/notes.pdf","duration":2.507,"created_at":"2026-11-24T15:05:00.000001Z"}]}}"#
    );
}

#[test]
fn metadata_that_is_json_null_is_omitted_like_absent_metadata() {
    let message = Message {
        metadata_json: Some("null".into()),
        ..bare_message()
    };
    let frame = render(&event(EventKind::MessageNew, CONV, Body::Message(message)));
    assert!(!frame.contains("metadata"), "{frame}");
}

#[test]
fn scalar_metadata_is_embedded_as_json() {
    let message = Message {
        metadata_json: Some(r#" "note" "#.into()),
        ..bare_message()
    };
    let frame = render(&event(EventKind::MessageNew, CONV, Body::Message(message)));
    assert!(
        frame.contains(r#""content":null,"metadata":"note","#),
        "{frame}"
    );
}

#[test]
fn metadata_that_is_not_json_is_a_render_error() {
    let message = Message {
        metadata_json: Some("{not json".into()),
        ..bare_message()
    };
    let result = client_frame(&event(EventKind::MessageNew, CONV, Body::Message(message)));
    assert!(matches!(result, Err(RenderError::InvalidMetadata(_))));
}

#[test]
fn a_deleted_message_payload_is_conversation_id_and_id() {
    let frame = render(&event(
        EventKind::MessageDeleted,
        CONV,
        Body::MessageDeleted(MessageDeleted {
            conversation_id: CONV.into(),
            id: MSG.into(),
        }),
    ));
    assert_eq!(
        frame,
        r#"{"type":"message.deleted","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"conversation_id":"c0000000-0000-4000-8000-000000000001","id":"d0000000-0000-7000-8000-000000000001"}}"#
    );
}

#[test]
fn conversation_joined_renders_the_detail_with_nulls_participants_and_zero_unread() {
    let detail = ConversationDetail {
        conversation: Some(direct_conversation()),
        participants: vec![
            participant('1', ALICE, "member", None),
            participant('2', BOB, "member", Some("Bobby")),
        ],
    };
    let mut joined = event(
        EventKind::ConversationJoined,
        CONV,
        Body::ConversationJoined(ConversationJoined {
            detail: Some(detail),
        }),
    );
    joined.target_user_id = Some(BOB.into());
    assert_eq!(
        render(&joined),
        r#"{"type":"conversation.joined","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"c0000000-0000-4000-8000-000000000001","type":"direct","name":null,"description":null,"avatar_url":null,"creator_id":null,"is_archived":false,"last_message_at":null,"created_at":"2026-11-24T15:00:44Z","updated_at":"2026-11-24T15:00:44.1166Z","unread_count":0,"participants":[{"id":"f0000000-0000-4000-8000-000000000001","conversation_id":"c0000000-0000-4000-8000-000000000001","user_id":"a0000000-0000-4000-8000-000000000001","role":"member","nickname":null,"joined_at":"2026-11-24T15:00:44Z"},{"id":"f0000000-0000-4000-8000-000000000002","conversation_id":"c0000000-0000-4000-8000-000000000001","user_id":"b0000000-0000-4000-8000-000000000002","role":"member","nickname":"Bobby","joined_at":"2026-11-24T15:00:44Z"}]}}"#
    );
}

#[test]
fn an_archived_conversation_has_no_participants_key() {
    let conversation = Conversation {
        r#type: "group".into(),
        name: Some("Team".into()),
        description: Some(String::new()),
        avatar_url: Some("https://x/a.png".into()),
        creator_id: Some(ALICE.into()),
        is_archived: true,
        last_message_at_us: Some(T_MICRO),
        ..direct_conversation()
    };
    let frame = render(&event(
        EventKind::ConversationArchived,
        CONV,
        Body::ConversationArchived(ConversationArchived {
            conversation: Some(conversation),
        }),
    ));
    assert_eq!(
        frame,
        r#"{"type":"conversation.archived","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"c0000000-0000-4000-8000-000000000001","type":"group","name":"Team","description":"","avatar_url":"https://x/a.png","creator_id":"a0000000-0000-4000-8000-000000000001","is_archived":true,"last_message_at":"2026-11-24T15:05:00.000001Z","created_at":"2026-11-24T15:00:44Z","updated_at":"2026-11-24T15:00:44.1166Z","unread_count":0}}"#
    );
}

#[test]
fn membership_payloads_have_their_documented_keys() {
    let added = render(&event(
        EventKind::ParticipantAdded,
        CONV,
        Body::ParticipantsAdded(ParticipantsAdded {
            conversation_id: CONV.into(),
            participants: vec![participant('2', BOB, "member", None)],
        }),
    ));
    assert_eq!(
        added,
        r#"{"type":"participant.added","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"conversation_id":"c0000000-0000-4000-8000-000000000001","participants":[{"id":"f0000000-0000-4000-8000-000000000002","conversation_id":"c0000000-0000-4000-8000-000000000001","user_id":"b0000000-0000-4000-8000-000000000002","role":"member","nickname":null,"joined_at":"2026-11-24T15:00:44Z"}]}}"#
    );

    let updated = render(&event(
        EventKind::ParticipantUpdated,
        CONV,
        Body::ParticipantUpdated(ParticipantUpdated {
            participant: Some(participant('2', BOB, "owner", None)),
        }),
    ));
    assert_eq!(
        updated,
        r#"{"type":"participant.updated","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"f0000000-0000-4000-8000-000000000002","conversation_id":"c0000000-0000-4000-8000-000000000001","user_id":"b0000000-0000-4000-8000-000000000002","role":"owner","nickname":null,"joined_at":"2026-11-24T15:00:44Z"}}"#
    );

    let left = render(&event(
        EventKind::ConversationLeft,
        CONV,
        Body::ConversationLeft(ConversationLeft {
            conversation_id: CONV.into(),
            user_id: BOB.into(),
        }),
    ));
    assert_eq!(
        left,
        r#"{"type":"conversation.left","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"conversation_id":"c0000000-0000-4000-8000-000000000001","user_id":"b0000000-0000-4000-8000-000000000002"}}"#
    );
}

#[test]
fn reaction_receipt_and_pin_payloads_have_their_documented_keys() {
    let cases = [
        (
            event(
                EventKind::ReactionAdded,
                CONV,
                Body::Reaction(Reaction {
                    id: "a2000000-0000-4000-8000-000000000001".into(),
                    message_id: MSG.into(),
                    user_id: BOB.into(),
                    emoji: "👍".into(),
                    created_at_us: T1166,
                }),
            ),
            r#"{"type":"reaction.added","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"a2000000-0000-4000-8000-000000000001","message_id":"d0000000-0000-7000-8000-000000000001","user_id":"b0000000-0000-4000-8000-000000000002","emoji":"👍","created_at":"2026-11-24T15:00:44.1166Z"}}"#,
        ),
        (
            event(
                EventKind::ReactionRemoved,
                CONV,
                Body::ReactionRemoved(ReactionRemoved {
                    emoji: "👍".into(),
                    message_id: MSG.into(),
                    user_id: BOB.into(),
                }),
            ),
            r#"{"type":"reaction.removed","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"emoji":"👍","message_id":"d0000000-0000-7000-8000-000000000001","user_id":"b0000000-0000-4000-8000-000000000002"}}"#,
        ),
        (
            event(
                EventKind::ReadUpdated,
                CONV,
                Body::ReadReceipt(ReadReceipt {
                    id: "a3000000-0000-4000-8000-000000000001".into(),
                    conversation_id: CONV.into(),
                    user_id: BOB.into(),
                    last_read_message_id: MSG.into(),
                    last_read_at_us: T_WHOLE,
                }),
            ),
            r#"{"type":"read.updated","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"a3000000-0000-4000-8000-000000000001","conversation_id":"c0000000-0000-4000-8000-000000000001","user_id":"b0000000-0000-4000-8000-000000000002","last_read_message_id":"d0000000-0000-7000-8000-000000000001","last_read_at":"2026-11-24T15:00:44Z"}}"#,
        ),
        (
            event(
                EventKind::MessagePinned,
                CONV,
                Body::PinnedMessage(PinnedMessage {
                    id: "a4000000-0000-4000-8000-000000000001".into(),
                    conversation_id: CONV.into(),
                    message_id: MSG.into(),
                    pinned_by: ALICE.into(),
                    pinned_at_us: T1166,
                }),
            ),
            r#"{"type":"message.pinned","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"id":"a4000000-0000-4000-8000-000000000001","conversation_id":"c0000000-0000-4000-8000-000000000001","message_id":"d0000000-0000-7000-8000-000000000001","pinned_by":"a0000000-0000-4000-8000-000000000001","pinned_at":"2026-11-24T15:00:44.1166Z"}}"#,
        ),
        (
            event(
                EventKind::MessageUnpinned,
                CONV,
                Body::MessageUnpinned(MessageUnpinned {
                    conversation_id: CONV.into(),
                    message_id: MSG.into(),
                }),
            ),
            r#"{"type":"message.unpinned","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"conversation_id":"c0000000-0000-4000-8000-000000000001","message_id":"d0000000-0000-7000-8000-000000000001"}}"#,
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(render(&event), expected);
    }
}

#[test]
fn presence_online_has_an_empty_conversation_id_and_the_user_id() {
    let frame = render(&event(
        EventKind::PresenceOnline,
        "",
        Body::Presence(Presence {
            user_id: ALICE.into(),
        }),
    ));
    assert_eq!(
        frame,
        r#"{"type":"presence.online","conversation_id":"","payload":{"user_id":"a0000000-0000-4000-8000-000000000001"}}"#
    );
}

#[test]
fn presence_frames_have_an_empty_conversation_id_even_if_the_event_names_one() {
    let frame = render(&event(
        EventKind::PresenceOffline,
        CONV,
        Body::Presence(Presence {
            user_id: ALICE.into(),
        }),
    ));
    assert_eq!(
        frame,
        r#"{"type":"presence.offline","conversation_id":"","payload":{"user_id":"a0000000-0000-4000-8000-000000000001"}}"#
    );
}

#[test]
fn typing_start_embeds_the_stamped_client_payload_verbatim() {
    let frame = render(&event(
        EventKind::TypingStart,
        CONV,
        Body::Typing(Typing {
            user_id: ALICE.into(),
            payload_json: r#"{"draft":"hé","user_id":"a0000000-0000-4000-8000-000000000001","n":[1,{"x":null}]}"#.into(),
        }),
    ));
    assert_eq!(
        frame,
        r#"{"type":"typing.start","conversation_id":"c0000000-0000-4000-8000-000000000001","payload":{"draft":"hé","user_id":"a0000000-0000-4000-8000-000000000001","n":[1,{"x":null}]}}"#
    );
}

#[test]
fn a_typing_payload_that_is_not_a_json_object_is_a_render_error() {
    for (payload_json, not_json) in [("[1]", false), ("\"x\"", false), ("{", true), ("", true)] {
        let result = client_frame(&event(
            EventKind::TypingStop,
            CONV,
            Body::Typing(Typing {
                user_id: ALICE.into(),
                payload_json: payload_json.into(),
            }),
        ));
        if not_json {
            assert!(
                matches!(result, Err(RenderError::InvalidTypingPayload(_))),
                "{payload_json}"
            );
        } else {
            assert!(
                matches!(result, Err(RenderError::TypingPayloadNotObject)),
                "{payload_json}"
            );
        }
    }
}

#[test]
fn a_body_that_does_not_belong_to_the_kind_is_a_render_error() {
    let result = client_frame(&event(
        EventKind::MessageNew,
        CONV,
        Body::Presence(Presence {
            user_id: ALICE.into(),
        }),
    ));
    assert!(matches!(
        result,
        Err(RenderError::BodyMismatch {
            event_type: "message.new",
            body: "Presence"
        })
    ));
}

#[test]
fn unspecified_or_unknown_kinds_and_missing_bodies_are_render_errors() {
    let mut unspecified = event(EventKind::MessageNew, CONV, Body::Message(bare_message()));
    unspecified.kind = 0;
    assert!(matches!(
        client_frame(&unspecified),
        Err(RenderError::UnknownKind(0))
    ));
    unspecified.kind = 99;
    assert!(matches!(
        client_frame(&unspecified),
        Err(RenderError::UnknownKind(99))
    ));

    let mut bodiless = event(EventKind::MessageNew, CONV, Body::Message(bare_message()));
    bodiless.body = None;
    assert!(matches!(
        client_frame(&bodiless),
        Err(RenderError::MissingBody { .. })
    ));

    let no_detail = event(
        EventKind::ConversationJoined,
        CONV,
        Body::ConversationJoined(ConversationJoined { detail: None }),
    );
    assert!(matches!(
        client_frame(&no_detail),
        Err(RenderError::MissingField(_))
    ));
}

#[test]
fn an_empty_presence_snapshot_lists_an_empty_array() {
    assert_eq!(
        presence_snapshot_frame(&[]),
        br#"{"type":"presence.snapshot","conversation_id":"","payload":{"online_user_ids":[]}}"#
    );
}

#[test]
fn a_presence_snapshot_lists_lowercase_hyphenated_ids() {
    let ids = [
        Uuid::from_u128(0xA0000000_0000_4000_8000_00000000000F),
        Uuid::from_u128(0xB0000000_0000_4000_8000_000000000002),
    ];
    assert_eq!(
        presence_snapshot_frame(&ids),
        br#"{"type":"presence.snapshot","conversation_id":"","payload":{"online_user_ids":["a0000000-0000-4000-8000-00000000000f","b0000000-0000-4000-8000-000000000002"]}}"#
    );
}

#[test]
fn every_frame_is_valid_json_with_the_three_envelope_keys() {
    let frame = client_frame(&event(
        EventKind::MessageNew,
        CONV,
        Body::Message(bare_message()),
    ))
    .expect("renders");
    let value: serde_json::Value = serde_json::from_slice(&frame).expect("valid JSON");
    let keys: Vec<&str> = value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["type", "conversation_id", "payload"]);
    let snapshot: serde_json::Value =
        serde_json::from_slice(&presence_snapshot_frame(&[Uuid::nil()])).expect("valid JSON");
    assert_eq!(
        snapshot["payload"]["online_user_ids"][0],
        Uuid::nil().to_string()
    );
}

#[test]
fn metadata_numbers_and_strings_are_kept_exactly_as_postgresql_wrote_them() {
    let message = Message {
        metadata_json: Some(
            r#"{"n": 1.50, "big": 123456789012345678901234567890, "e": 1e400, "s": "a \"b\"  c\n", "arr": [ -0 , 2 ]}"#.into(),
        ),
        ..bare_message()
    };
    let frame = render(&event(EventKind::MessageNew, CONV, Body::Message(message)));
    assert!(
        frame.contains(r#""metadata":{"n":1.50,"big":123456789012345678901234567890,"e":1e400,"s":"a \"b\"  c\n","arr":[-0,2]}"#),
        "{frame}"
    );
}

#[test]
fn compact_json_only_removes_white_space_outside_strings() {
    use shared_proto::json::compact_json;
    assert_eq!(
        compact_json("{ \"a b\" : [ 1 , 2.50 ] ,\n\t\"c\": \"x \\\" y\" }"),
        r#"{"a b":[1,2.50],"c":"x \" y"}"#
    );
    assert_eq!(compact_json(r#""\\" "#), r#""\\""#);
}

#[test]
fn resync_renders_the_exact_frame_of_the_protocol() {
    assert_eq!(
        String::from_utf8(resync_frame(RESYNC_STREAM_INTERRUPTED)).unwrap(),
        r#"{"type":"resync","conversation_id":"","payload":{"reason":"event_stream_interrupted"}}"#
    );
    assert_eq!(
        String::from_utf8(resync_frame(RESYNC_NOT_PUBLISHED)).unwrap(),
        r#"{"type":"resync","conversation_id":"","payload":{"reason":"events_not_published"}}"#
    );
    // Not a fixed token: still one valid JSON object.
    let odd: serde_json::Value =
        serde_json::from_slice(&resync_frame("a \"quoted\"\nreason")).unwrap();
    assert_eq!(odd["payload"]["reason"], "a \"quoted\"\nreason");
}
