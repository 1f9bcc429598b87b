//! Publishing the events this gateway emits itself (`presence.*`, `typing.*`) on NATS, and the
//! clock their `occurred_at_us` and the event-lag metric read.

use bytes::Bytes;
use shared_proto::{events::Event, prost::Message as _};

use shared_ops::Chain;

/// Publishes `event` on `subject` (logged and dropped on failure: NATS is best-effort and
/// clients recover through `seq`, `docs/websocket.md` ("Staying consistent: seq and catch-up")).
pub async fn publish(nats: &async_nats::Client, subject: String, event: &Event) {
    let payload = Bytes::from(event.encode_to_vec());
    if let Err(error) = nats.publish(subject, payload).await {
        tracing::warn!(error = %Chain(&error), "NATS publish failed");
    }
}

/// Now, in unix microseconds.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
