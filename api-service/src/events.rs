//! Publishing protobuf events on NATS after a write commits (http-api.md §2.8).
//!
//! One [`Event`](pb::Event) per change, on the conversation's subject (room events) or the user's
//! subject (personal events: `conversation.joined`, `conversation.left`). Publishing happens
//! before the HTTP response is written. NATS is fan-out, not storage: when it is unreachable the
//! event is dropped, logged and counted (`event_publish_failures_total`) and the request still
//! succeeds — clients recover from PostgreSQL through `seq`. A publish never waits longer than
//! [`PUBLISH_TIMEOUT`], so a NATS outage cannot stall the API.

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
        let (subject, target) = match audience {
            Audience::Room => (subjects::conversation(&self.prefix, &conversation), None),
            Audience::User(user) => (subjects::user(&self.prefix, &user), Some(user.to_string())),
        };
        let event = pb::Event {
            event_id: Uuid::now_v7().to_string(),
            kind: kind as i32,
            conversation_id: conversation.to_string(),
            actor_id: actor.to_string(),
            occurred_at_us: chrono::Utc::now().timestamp_micros(),
            target_user_id: target,
            body: Some(body),
        };
        let label = kind.client_type().unwrap_or("unknown");
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            self.fail(label, "nats disconnected");
            return;
        }
        let payload = event.encode_to_vec();
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
