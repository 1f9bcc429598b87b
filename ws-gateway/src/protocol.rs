//! The WebSocket wire rules that are not about routing (`docs/websocket.md`: "Messages and the
//! envelope", "Sending typing frames", "Keep-alive, limits and close codes"): socket buffer sizes,
//! close codes, and the validation of client typing frames.
//!
//! Server → client events are rendered by `shared_proto::json` (once per event); this module
//! writes the events queued for one socket as one text frame each, back to back in one buffer
//! ([`text_frames`]), and reads what
//! clients send. A client can send nothing but `typing.start` / `typing.stop`:
//! every other frame is ignored, so a client can never inject an event.

use serde_json::{Map, Value};
use shared_proto::events::EventKind;
use tokio_tungstenite::tungstenite::{
    Utf8Bytes,
    protocol::{WebSocketConfig, frame::coding::CloseCode},
};
use uuid::Uuid;

/// Largest client message (`docs/websocket.md`, "Sending typing frames", rule 1); larger ones
/// close the socket with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4096;

/// Per-socket read buffer (see [`websocket_config`]).
pub const READ_BUFFER: usize = 512;

/// Socket buffers sized for ~100K sockets per process (`docs/capacity.md`, "100,000 sockets on one
/// gateway").
///
/// - `read_buffer_size` 512 bytes instead of tungstenite's eager 128 KiB: it is allocated and
///   zero-filled for every socket at the upgrade and kept for the socket's life, so it is a
///   large share of an idle socket's memory (an idle socket costs a few KiB in all,
///   `docs/capacity.md`). Clients send little — pongs and typing frames of a few hundred bytes, which fit; a
///   larger frame (up to 4096 bytes) still works: tungstenite reserves the frame's length from
///   its header and reads it in 512-byte steps.
/// - `write_buffer_size` 0: what tungstenite itself writes (pings, pongs, close frames) goes to
///   the kernel at once. Events do not go through it: the connection writes them as
///   [`text_frames`], so tungstenite's output buffer never grows to the size of an event batch.
/// - `max_message_size` / `max_frame_size` 4096: tungstenite rejects a larger frame from its
///   header alone (before buffering the payload) with `CapacityError::MessageTooLong`, and a
///   fragmented message as soon as its fragments exceed the limit; the connection answers that
///   error with close 1009 itself (tungstenite does not send a close frame on its own).
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

/// The events queued for one socket, written back to back as unmasked server text frames (RFC 6455
/// §5.2), **one event per frame** (`docs/websocket.md`, "Messages and the envelope"): clients call
/// `JSON.parse` once per WebSocket message, so a frame holding two events would lose both. They
/// still leave in one buffer and one `write`, which is where batching pays (one `sendto` and one
/// wake-up of the reader per batch instead of per event); a frame header costs 2 to 10 bytes.
pub fn text_frames(events: &[Utf8Bytes]) -> Vec<u8> {
    let payload = events.iter().map(|e| e.len()).sum::<usize>();
    let mut out = Vec::with_capacity(payload + 10 * events.len());
    for event in events {
        push_text_frame(&mut out, event.as_bytes());
    }
    out
}

/// Appends one unmasked, final text frame carrying `payload`.
fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    // FIN + opcode 1 (text); the server never masks.
    out.push(0x81);
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// The close codes the gateway sends (`docs/websocket.md`, "Keep-alive, limits and close codes").
pub mod close {
    use super::CloseCode;

    /// The client closed, or the gateway completes a close handshake.
    pub const NORMAL: CloseCode = CloseCode::Normal;
    /// Nothing received for the idle timeout (keep-alive).
    pub const GOING_AWAY: CloseCode = CloseCode::Away;
    /// A client message over 4096 bytes.
    pub const TOO_BIG: CloseCode = CloseCode::Size;
    /// Drain on SIGTERM.
    pub const RESTART: CloseCode = CloseCode::Restart;
    /// Send queue full, or a write blocked for the write timeout.
    pub const TRY_AGAIN: CloseCode = CloseCode::Again;
    /// The gateway could not set the socket up (database unreachable, …).
    pub const INTERNAL: CloseCode = CloseCode::Error;
    /// Invalid UTF-8 in a text frame.
    pub const INVALID_DATA: CloseCode = CloseCode::Invalid;
    /// A protocol violation by the client.
    pub const PROTOCOL: CloseCode = CloseCode::Protocol;
}

/// A valid typing frame, ready to relay (`docs/websocket.md`, "Sending typing frames").
#[derive(Debug, Clone, PartialEq)]
pub struct TypingFrame {
    /// [`EventKind::TypingStart`] or [`EventKind::TypingStop`].
    pub kind: EventKind,
    pub conversation_id: Uuid,
    /// The client's payload object with `user_id` set to the sender, compact JSON.
    pub payload_json: String,
}

/// Why a client frame was ignored (a metric label; the client is never told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not a JSON object (rule 2).
    Malformed,
    /// `type` is not `typing.start` / `typing.stop` (rule 3).
    Type,
    /// `conversation_id` is not a UUID (rule 4).
    ConversationId,
    /// The sender is not an active participant (rule 6).
    NotMember,
    /// `payload` is neither an object, absent nor null (rule 5).
    Payload,
    /// Over the per-(user, conversation) rate (rule 7).
    RateLimited,
}

impl Ignored {
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Type => "type",
            Self::ConversationId => "conversation_id",
            Self::NotMember => "not_member",
            Self::Payload => "payload",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Applies rules 2–5 of `docs/websocket.md`, "Sending typing frames", to one client message (rule 1
/// — size — is the socket's `max_message_size`; rule 6 — membership — and rule 7 — rate — need the
/// gateway's state and are checked by the caller between these steps' outcome and the relay).
///
/// `user` is stamped into the payload as `user_id`, overwriting any client value; other payload
/// keys are kept as sent, other top-level keys dropped.
pub fn parse_typing_frame(message: &[u8], user: Uuid) -> Result<TypingFrame, Ignored> {
    let Ok(Value::Object(mut frame)) = serde_json::from_slice::<Value>(message) else {
        return Err(Ignored::Malformed);
    };
    let kind = match frame.get("type").and_then(Value::as_str) {
        Some("typing.start") => EventKind::TypingStart,
        Some("typing.stop") => EventKind::TypingStop,
        _ => return Err(Ignored::Type),
    };
    let conversation_id = frame
        .get("conversation_id")
        .and_then(Value::as_str)
        .and_then(shared_auth::parse_uuid)
        .ok_or(Ignored::ConversationId)?;
    let mut payload = match frame.remove("payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(payload)) => payload,
        Some(_) => return Err(Ignored::Payload),
    };
    payload.insert("user_id".to_owned(), Value::String(user.to_string()));
    let payload_json = serde_json::to_string(&payload).map_err(|_| Ignored::Payload)?;
    Ok(TypingFrame {
        kind,
        conversation_id,
        payload_json,
    })
}

/// A token bucket: `rate` tokens per second up to `burst`; one token per relayed typing frame.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    updated: tokio::time::Instant,
}

impl TokenBucket {
    pub fn full(burst: u32) -> Self {
        Self {
            tokens: burst as f32,
            updated: tokio::time::Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate_per_sec: f64, burst: u32) -> bool {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens as f64 + elapsed * rate_per_sec).min(burst as f64) as f32;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (and can be forgotten).
    pub fn is_full(&self, rate_per_sec: f64, burst: u32) -> bool {
        let elapsed = self.updated.elapsed().as_secs_f64();
        self.tokens as f64 + elapsed * rate_per_sec >= burst as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Uuid {
        Uuid::parse_str("11111111-2222-4333-8444-555555555555").unwrap()
    }

    #[test]
    fn a_typing_start_gets_the_sender_stamped_over_any_client_user_id() {
        let conv = Uuid::new_v4();
        let raw = format!(
            r#"{{"type":"typing.start","conversation_id":"{}","payload":{{"user_id":"evil","draft":true}},"extra":1}}"#,
            conv.simple().to_string().to_uppercase()
        );
        let frame = parse_typing_frame(raw.as_bytes(), user()).unwrap();
        assert_eq!(frame.kind, EventKind::TypingStart);
        assert_eq!(frame.conversation_id, conv);
        assert_eq!(
            frame.payload_json,
            format!(r#"{{"user_id":"{}","draft":true}}"#, user())
        );
    }

    #[test]
    fn an_absent_or_null_payload_becomes_just_the_user_id() {
        let conv = Uuid::new_v4();
        for payload in ["", r#","payload":null"#] {
            let raw = format!(r#"{{"type":"typing.stop","conversation_id":"{conv}"{payload}}}"#);
            let frame = parse_typing_frame(raw.as_bytes(), user()).unwrap();
            assert_eq!(frame.kind, EventKind::TypingStop);
            assert_eq!(frame.payload_json, format!(r#"{{"user_id":"{}"}}"#, user()));
        }
    }

    #[test]
    fn anything_else_is_ignored_with_its_reason() {
        let conv = Uuid::new_v4();
        let cases = [
            ("not json".to_owned(), Ignored::Malformed),
            ("[1,2]".to_owned(), Ignored::Malformed),
            (
                format!(r#"{{"type":"message.new","conversation_id":"{conv}"}}"#),
                Ignored::Type,
            ),
            (
                format!(r#"{{"type":"Typing.Start","conversation_id":"{conv}"}}"#),
                Ignored::Type,
            ),
            (
                r#"{"type":"typing.start","conversation_id":"nope"}"#.to_owned(),
                Ignored::ConversationId,
            ),
            (
                format!(r#"{{"type":"typing.start","conversation_id":"{conv}","payload":[1]}}"#),
                Ignored::Payload,
            ),
            (
                format!(r#"{{"type":"typing.start","conversation_id":"{conv}","payload":"x"}}"#),
                Ignored::Payload,
            ),
        ];
        for (raw, reason) in cases {
            assert_eq!(
                parse_typing_frame(raw.as_bytes(), user()),
                Err(reason),
                "{raw}"
            );
        }
    }

    /// What a client reads from `bytes`: every message until the bytes run out.
    fn client_reads(bytes: Vec<u8>) -> Vec<String> {
        use tokio_tungstenite::tungstenite::{Message, protocol::Role, protocol::WebSocket};
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let mut ws =
            WebSocket::from_raw_socket(std::io::Cursor::new(bytes), Role::Client, Some(config));
        let mut messages = Vec::new();
        while let Ok(message) = ws.read() {
            match message {
                Message::Text(text) => messages.push(text.as_str().to_owned()),
                other => panic!("unexpected {other:?}"),
            }
        }
        messages
    }

    #[test]
    fn queued_events_go_out_as_one_text_frame_each_at_every_length_encoding() {
        // 7-bit, 16-bit and 64-bit payload lengths, mixed in one buffer.
        for size in [3usize, 200, 70_000] {
            let events: Vec<Utf8Bytes> = (0..3)
                .map(|i| {
                    let pad = "x".repeat(size * (i + 1) / 2);
                    Utf8Bytes::from(format!("{{\"n\":{i},\"pad\":\"{pad}\"}}"))
                })
                .collect();
            let mut bytes = text_frames(&events);
            // More frames right behind: every length must be exact.
            bytes.extend(text_frames(&events[..1]));
            let messages = client_reads(bytes);
            assert_eq!(messages.len(), 4, "size {size}");
            for (message, event) in messages.iter().zip(events.iter().chain(&events[..1])) {
                // What a web client does: one JSON.parse per message.
                let parsed: serde_json::Value = serde_json::from_str(message).unwrap();
                assert!(parsed.is_object());
                assert_eq!(message, event.as_str());
            }
        }
        assert!(text_frames(&[]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_the_burst_then_the_rate() {
        let mut bucket = TokenBucket::full(4);
        assert!((0..4).all(|_| bucket.try_take(2.0, 4)));
        assert!(!bucket.try_take(2.0, 4));
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert!(bucket.try_take(2.0, 4));
        assert!(!bucket.try_take(2.0, 4));
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        assert!(bucket.is_full(2.0, 4));
    }
}
