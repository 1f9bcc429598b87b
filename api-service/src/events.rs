//! Publishing protobuf events on NATS after a write commits (http-api.md §2.8).
//!
//! One [`Event`](pb::Event) per change, on the conversation's subject (room events) or the user's
//! subject (personal events: `conversation.joined`, `conversation.left`). A personal event that
//! concerns several users at once (the `conversation.joined` of a create or an add) is published
//! once on `<prefix>.user.many.<conversation_id>` with their ids in `target_user_ids` rather than
//! once per user: each copy would carry the whole conversation, so a group of N would cost N²
//! bytes on NATS (a 1,000-member group: 1,000 messages, 134 MB), and the publishes of a large group's
//! creation timed out. When the targets do not fit in one message of the server's `max_payload`
//! they are split over as few messages as fit.
//!
//! Publishing happens before the HTTP response is written. NATS is fan-out, not storage: when it
//! is unreachable the event is dropped, logged and counted (`event_publish_failures_total`) and
//! the request still succeeds — clients recover from PostgreSQL through `seq`. A publish never
//! waits longer than [`PUBLISH_TIMEOUT`], so a NATS outage cannot stall the API.

use std::time::Duration;

use prost::Message as _;
use shared_proto::{events as pb, subjects};
use uuid::Uuid;

use crate::metrics::Metrics;

/// Longest a publish (or a flush) may take before the event counts as failed.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// Publishes events for one api-service process. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    nats: async_nats::Client,
    prefix: String,
    metrics: Metrics,
}

/// Where an event goes.
pub enum Audience {
    /// Everyone in the conversation (`<prefix>.conv.<id>`).
    Room,
    /// One user's sockets (`<prefix>.user.<id>`); the event carries `target_user_id`.
    User(Uuid),
    /// The sockets of several users, each getting the same frame (module docs):
    /// `<prefix>.user.many.<conversation_id>` with `target_user_ids`, or the one user's subject
    /// when there is only one.
    Users(Vec<Uuid>),
}

/// Bytes one entry of `target_user_ids` adds to an encoded event: the field's tag, its length
/// and a hyphenated UUID.
const TARGET_ENTRY_BYTES: usize = 1 + 1 + 36;
/// Room left in each message for what NATS adds besides the payload and for rounding.
const PAYLOAD_SLACK: usize = 1024;

/// How many `target_user_ids` fit in one message next to an event of `base` encoded bytes under a
/// server `max_payload`; `None` when not even one does.
pub fn targets_per_message(base: usize, max_payload: usize) -> Option<usize> {
    let room = max_payload.checked_sub(base + PAYLOAD_SLACK)?;
    let fit = room / TARGET_ENTRY_BYTES;
    (fit > 0).then_some(fit)
}

impl Publisher {
    pub fn new(nats: async_nats::Client, prefix: String, metrics: Metrics) -> Self {
        Self {
            nats,
            prefix,
            metrics,
        }
    }

    /// Builds and publishes one event. Never fails: failures are logged and counted.
    pub async fn publish(
        &self,
        kind: pb::EventKind,
        audience: Audience,
        conversation: Uuid,
        actor: Uuid,
        body: pb::event::Body,
    ) {
        let audience = match audience {
            Audience::Users(users) if users.len() == 1 => Audience::User(users[0]),
            other => other,
        };
        let (subject, target, targets) = match audience {
            Audience::Room => (
                subjects::conversation(&self.prefix, &conversation),
                None,
                vec![],
            ),
            Audience::User(user) => (
                subjects::user(&self.prefix, &user),
                Some(user.to_string()),
                vec![],
            ),
            Audience::Users(users) if users.is_empty() => return,
            Audience::Users(users) => (subjects::users(&self.prefix, &conversation), None, users),
        };
        let mut event = pb::Event {
            event_id: Uuid::now_v7().to_string(),
            kind: kind as i32,
            conversation_id: conversation.to_string(),
            actor_id: actor.to_string(),
            occurred_at_us: chrono::Utc::now().timestamp_micros(),
            target_user_id: target,
            target_user_ids: vec![],
            body: Some(body),
        };
        let label = kind.client_type().unwrap_or("unknown");
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            self.fail(label, "nats disconnected");
            return;
        }
        if targets.is_empty() {
            self.send(label, subject, event.encode_to_vec()).await;
            return;
        }
        let max_payload = self.nats.server_info().max_payload;
        let Some(per_message) = targets_per_message(event.encoded_len(), max_payload) else {
            tracing::warn!(
                conversation.id = %conversation,
                max_payload,
                "event larger than the NATS server's max_payload"
            );
            self.fail(label, "event too large");
            return;
        };
        for chunk in targets.chunks(per_message) {
            event.target_user_ids = chunk.iter().map(Uuid::to_string).collect();
            self.send(label, subject.clone(), event.encode_to_vec())
                .await;
        }
    }

    /// Publishes one encoded event on `subject`; a failure is logged and counted.
    async fn send(&self, label: &str, subject: String, payload: Vec<u8>) {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.nats.publish(subject, payload.into()))
            .await
        {
            Ok(Ok(())) => self
                .metrics
                .events_published
                .with_label_values(&[label])
                .inc(),
            Ok(Err(e)) => self.fail(label, &e.to_string()),
            Err(_) => self.fail(label, "publish timed out"),
        }
    }

    /// Waits until everything published so far has been written to the NATS server (used where
    /// the spec requires an event to be out before the response, e.g. `participant.removed`).
    pub async fn flush(&self) {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "nats flush failed"),
            Err(_) => tracing::warn!("nats flush timed out"),
        }
    }

    fn fail(&self, label: &str, reason: &str) {
        self.metrics
            .event_publish_failures
            .with_label_values(&[label])
            .inc();
        tracing::warn!(
            event.r#type = label,
            reason,
            "event not published; clients recover via seq"
        );
    }
}
