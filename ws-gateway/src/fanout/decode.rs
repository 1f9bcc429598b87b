//! Decoding an event from NATS and rendering its client frame ([`Decoded`]), once for all its
//! recipients; the event's NATS leg (`occurred_at_us` to now) is recorded on the way.

use bytes::Bytes;
use shared_proto::{
    events::{Event, EventKind},
    prost::Message as _,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Fanout;
use shared_ops::Chain;

/// An event decoded and rendered once for all its recipients.
pub(super) struct Decoded {
    pub(super) event: Event,
    pub(super) kind: EventKind,
    pub(super) frame: Utf8Bytes,
}

impl Fanout {
    /// Decodes an event, records its NATS leg and renders its client frame, once for all its
    /// recipients; `None` (counted and logged) when it is not a valid event.
    pub(super) fn decode(&self, subject: &str, payload: Bytes) -> Option<Decoded> {
        let event = match Event::decode(payload) {
            Ok(event) => event,
            Err(error) => {
                self.metrics.events_invalid.inc();
                tracing::warn!(error = %Chain(&error), nats.subject = subject, "undecodable event dropped");
                return None;
            }
        };
        if event.occurred_at_us > 0 {
            let lag_us = crate::publish::now_us()
                .saturating_sub(event.occurred_at_us)
                .max(0);
            self.metrics.event_lag.observe(lag_us as f64 / 1e6);
        }
        let frame = match shared_proto::json::client_frame(&event)
            .map_err(|e| Chain(&e).to_string())
            .and_then(|json| Utf8Bytes::try_from(json).map_err(|e| Chain(&e).to_string()))
        {
            Ok(frame) => frame,
            Err(error) => {
                self.metrics.events_invalid.inc();
                tracing::warn!(
                    error = %error,
                    event.id = %event.event_id,
                    event.kind = event.kind,
                    "unrenderable event dropped"
                );
                return None;
            }
        };
        let kind = EventKind::try_from(event.kind).unwrap_or(EventKind::Unspecified);
        Some(Decoded { event, kind, frame })
    }
}
