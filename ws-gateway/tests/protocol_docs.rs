//! `docs/websocket.md` documents every event type the gateway can send.
//!
//! The types come from the code, not from a list kept here: every `EventKind` with a client type
//! (what the api-service and the gateway publish), plus the frames the gateway renders itself
//! (`presence.snapshot`, `resync`), whose `type` is read from the rendered JSON. Each must appear
//! in backticks in a level-2 or level-3 heading of the document, and its section must show an
//! example frame of that type.

use std::collections::BTreeSet;

use shared_proto::{
    events::EventKind,
    json::{RESYNC_STREAM_INTERRUPTED, presence_snapshot_frame, resync_frame},
};

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
