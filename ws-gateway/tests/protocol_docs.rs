//! `docs/websocket.md` and `docs/asyncapi.yaml` document every event type the gateway can send.
//!
//! The types come from the code, not from a list kept here: every `EventKind` with a client type
//! (what the api-service and the gateway publish), plus the frames the gateway renders itself
//! (`presence.snapshot`, `resync`), whose `type` is read from the rendered JSON.
//!
//! - `docs/websocket.md`: each type must appear in backticks in a level-2 or level-3 heading,
//!   and its section must show an example frame of that type.
//! - `docs/asyncapi.yaml` (AsyncAPI 3, written from the client's side): the messages of the
//!   `receive` operations must be exactly those types, one message per type, and the messages of
//!   the `send` operations exactly the client frames the gateway's parser accepts. A message's
//!   type is the `const` (or single-value `enum`) of the `type` property of its payload schema.
//!   The AsyncAPI parser itself, and the examples against the schemas, are checked by
//!   `scripts/validate-asyncapi.sh`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shared_proto::{
    events::EventKind,
    json::{RESYNC_STREAM_INTERRUPTED, presence_snapshot_frame, resync_frame},
};
use uuid::Uuid;
use ws_gateway::protocol::parse_typing_frame;

/// Enum values tried when listing the `EventKind`s; the highest variant must stay well below.
const LARGEST_KIND_TRIED: i32 = 64;

fn websocket_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/websocket.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The `type` of a rendered client frame.
fn frame_type(frame: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(frame).expect("a frame is JSON");
    value["type"]
        .as_str()
        .expect("a frame has a string `type`")
        .to_owned()
}

/// Every event type a client can receive from the gateway.
fn sendable_event_types() -> BTreeSet<String> {
    let kinds: Vec<(i32, EventKind)> = (0..=LARGEST_KIND_TRIED)
        .filter_map(|value| EventKind::try_from(value).ok().map(|kind| (value, kind)))
        .collect();
    let highest = kinds.iter().map(|(value, _)| *value).max().unwrap_or(0);
    assert!(
        highest < LARGEST_KIND_TRIED / 2,
        "EventKind has grown to {highest}: raise LARGEST_KIND_TRIED so no kind is skipped"
    );
    let mut types: BTreeSet<String> = kinds
        .iter()
        .filter_map(|(_, kind)| kind.client_type())
        .map(str::to_owned)
        .collect();
    assert!(!types.is_empty(), "no EventKind has a client type");
    // Rendered by the gateway itself, never published as an EventKind.
    types.insert(frame_type(&presence_snapshot_frame(&[])));
    types.insert(frame_type(&resync_frame(RESYNC_STREAM_INTERRUPTED)));
    types
}

/// One part of the document: a level-2 or level-3 heading, the code spans of its text, and the
/// lines of the `json` code blocks up to the next such heading.
struct Section {
    heading: String,
    names: Vec<String>,
    json_lines: Vec<String>,
}

/// The document split at its `##` / `###` headings (lines inside code blocks are not headings).
fn sections(doc: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut fence: Option<String> = None;
    for line in doc.lines() {
        if let Some(info) = line.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(info.trim().to_owned()),
            };
            continue;
        }
        if let Some(language) = &fence {
            if language == "json"
                && !line.trim().is_empty()
                && let Some(section) = sections.last_mut()
            {
                section.json_lines.push(line.to_owned());
            }
            continue;
        }
        if line.starts_with("## ") || line.starts_with("### ") {
            let names = line
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            sections.push(Section {
                heading: line.to_owned(),
                names,
                json_lines: Vec::new(),
            });
        }
    }
    sections
}

#[test]
fn every_event_type_the_gateway_can_send_has_a_heading_in_the_websocket_doc() {
    let doc = websocket_doc();
    let documented: BTreeSet<String> = sections(&doc)
        .into_iter()
        .flat_map(|section| section.names)
        .collect();
    let missing: Vec<String> = sendable_event_types()
        .into_iter()
        .filter(|event_type| !documented.contains(event_type))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/websocket.md has no heading (`### \\`<type>\\``) for {missing:?}"
    );
}

#[test]
fn each_event_section_shows_example_frames_of_its_own_type() {
    let doc = websocket_doc();
    let sendable = sendable_event_types();
    let event_sections: Vec<Section> = sections(&doc)
        .into_iter()
        .filter(|section| section.names.len() == 1 && sendable.contains(&section.names[0]))
        .collect();
    for event_type in &sendable {
        // A type may also name other headings ("On `resync`"): one of its sections must show an
        // example, and every example in them must be a frame of that type.
        let own: Vec<&Section> = event_sections
            .iter()
            .filter(|section| &section.names[0] == event_type)
            .collect();
        if own.is_empty() {
            // Reported by the heading test.
            continue;
        }
        assert!(
            own.iter().any(|section| !section.json_lines.is_empty()),
            "{}: no ```json example frame",
            own[0].heading
        );
        for (section, line) in own
            .iter()
            .flat_map(|section| section.json_lines.iter().map(move |line| (section, line)))
        {
            let frame: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}: example is not JSON ({e}): {line}", section.heading)
            });
            let keys: BTreeSet<&str> = frame
                .as_object()
                .unwrap_or_else(|| panic!("{}: example is not an object: {line}", section.heading))
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["type", "conversation_id", "payload"]),
                "{}: {line}",
                section.heading
            );
            assert_eq!(
                frame["type"].as_str(),
                Some(event_type.as_str()),
                "{}: {line}",
                section.heading
            );
            assert!(
                frame["conversation_id"].is_string() && frame["payload"].is_object(),
                "{}: {line}",
                section.heading
            );
        }
    }
}

fn asyncapi_doc() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/asyncapi.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let doc: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    // The walk below follows the AsyncAPI 3 layout (operations with an `action`).
    assert!(
        doc["asyncapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{path}: `asyncapi` is not a 3.x version: {}",
        doc["asyncapi"]
    );
    doc
}

/// `value`, or what its local reference (`$ref: '#/…'`) points to, followed until a value
/// without `$ref`.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = value.get("$ref") else {
            return value;
        };
        let reference = reference.as_str().expect("a `$ref` is a string");
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are followed: {reference}"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} points nowhere"));
    }
    panic!("a `$ref` chain is longer than 16 links (a cycle?)")
}

/// The single value a schema allows: its `const`, or its `enum` of one value.
fn single_value(schema: &Value) -> Option<&str> {
    if let Some(value) = schema.get("const") {
        return value.as_str();
    }
    match schema.get("enum")?.as_array()?.as_slice() {
        [value] => value.as_str(),
        _ => None,
    }
}

/// A message of an AsyncAPI operation.
struct AsyncMessage {
    /// The last part of its reference in the operation (its key in the channel).
    name: String,
    /// The `type` its payload schema allows.
    event_type: String,
    /// The message object, references resolved.
    message: Value,
}

/// The messages of every operation whose `action` is `action` (`receive`: what the gateway
/// sends to clients; `send`: what clients send), each once.
fn asyncapi_messages(doc: &Value, action: &str) -> Vec<AsyncMessage> {
    let operations = doc["operations"]
        .as_object()
        .expect("docs/asyncapi.yaml has no `operations`");
    let mut messages: BTreeMap<String, AsyncMessage> = BTreeMap::new();
    for (operation_name, operation) in operations {
        let operation = resolve(doc, operation);
        if operation["action"] != action {
            continue;
        }
        // AsyncAPI lets an operation omit `messages` (then it means all of its channel's);
        // the document lists them so that each operation says what it carries.
        let references = operation["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("operation {operation_name} lists no `messages`"));
        for reference in references {
            let name = reference["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or_else(|| {
                    panic!("operation {operation_name}: a message is not a `$ref`: {reference}")
                })
                .to_owned();
            let message = resolve(doc, reference);
            let payload = resolve(doc, &message["payload"]);
            let event_type = single_value(resolve(doc, &payload["properties"]["type"]))
                .unwrap_or_else(|| {
                    panic!(
                        "message {name}: its payload's `type` property has no `const` or \
                         single-value `enum`"
                    )
                })
                .to_owned();
            messages.entry(name.clone()).or_insert(AsyncMessage {
                name,
                event_type,
                message: message.clone(),
            });
        }
    }
    messages.into_values().collect()
}

/// The event types of `messages`, each of which must be the type of exactly one message.
fn one_message_per_type(messages: &[AsyncMessage], action: &str) -> BTreeSet<String> {
    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for message in messages {
        by_type
            .entry(message.event_type.as_str())
            .or_default()
            .push(&message.name);
    }
    let shared: Vec<(&str, Vec<&str>)> = by_type
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(event_type, names)| (*event_type, names.clone()))
        .collect();
    assert!(
        shared.is_empty(),
        "docs/asyncapi.yaml: several `{action}` messages have the same type: {shared:?}"
    );
    by_type.into_keys().map(str::to_owned).collect()
}

/// The frame types among `candidates` that the gateway accepts from a client, as its parser
/// of client frames decides.
fn accepted_client_frame_types(candidates: &BTreeSet<String>) -> BTreeSet<String> {
    let conversation = Uuid::from_u128(0xc000_0000_0000_4000_8000_0000_0000_0001);
    candidates
        .iter()
        .filter(|candidate| {
            let frame = serde_json::json!({"type": candidate, "conversation_id": conversation});
            match parse_typing_frame(frame.to_string().as_bytes(), Uuid::nil()) {
                Ok(parsed) => {
                    assert_eq!(
                        parsed.kind.client_type(),
                        Some(candidate.as_str()),
                        "a `{candidate}` frame is parsed as another kind"
                    );
                    true
                }
                Err(_) => false,
            }
        })
        .cloned()
        .collect()
}

#[test]
fn asyncapi_receive_messages_are_exactly_the_event_types_the_gateway_can_send() {
    let doc = asyncapi_doc();
    let described = one_message_per_type(&asyncapi_messages(&doc, "receive"), "receive");
    let sendable = sendable_event_types();
    let missing: Vec<&String> = sendable.difference(&described).collect();
    let phantoms: Vec<&String> = described.difference(&sendable).collect();
    assert!(
        missing.is_empty() && phantoms.is_empty(),
        "docs/asyncapi.yaml: no `receive` message for {missing:?} (a message listed by a `receive` \
         operation whose payload's `type` property is that `const`); `receive` messages for \
         {phantoms:?}, which the gateway never sends"
    );
}

#[test]
fn asyncapi_send_messages_are_exactly_the_frames_the_gateway_accepts_from_clients() {
    let doc = asyncapi_doc();
    let described = one_message_per_type(&asyncapi_messages(&doc, "send"), "send");
    // Every type the gateway knows, and every type the document claims, is tried.
    let candidates: BTreeSet<String> = sendable_event_types()
        .into_iter()
        .chain(described.iter().cloned())
        .collect();
    let accepted = accepted_client_frame_types(&candidates);
    assert!(
        accepted.contains("typing.start") && accepted.contains("typing.stop"),
        "the gateway's client-frame parser no longer accepts both typing frames: {accepted:?}"
    );
    let missing: Vec<&String> = accepted.difference(&described).collect();
    let phantoms: Vec<&String> = described.difference(&accepted).collect();
    assert!(
        missing.is_empty() && phantoms.is_empty(),
        "docs/asyncapi.yaml: no `send` message for the client frames {missing:?}; `send` messages \
         for {phantoms:?}, which the gateway ignores"
    );
}

#[test]
fn asyncapi_message_examples_are_frames_of_their_own_type() {
    let doc = asyncapi_doc();
    for action in ["receive", "send"] {
        for AsyncMessage {
            name,
            event_type,
            message,
        } in asyncapi_messages(&doc, action)
        {
            let Some(examples) = message.get("examples") else {
                continue;
            };
            for example in examples.as_array().expect("`examples` is a list") {
                assert_eq!(
                    example["payload"]["type"].as_str(),
                    Some(event_type.as_str()),
                    "message {name}: example {}",
                    example["name"]
                );
            }
        }
    }
}
