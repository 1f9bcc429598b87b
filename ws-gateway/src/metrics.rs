//! Prometheus metrics of one gateway, served as text on `GET /metrics`.
//!
//! Names start with `ws_gateway_`, except the `process_*` metrics of the process itself (resident
//! memory, CPU seconds, open file descriptors, threads, …), read from `/proc` by
//! `metrics-process` on each scrape. Labels have a small fixed set of values (never a user or
//! conversation id).
//!
//! Each [`crate::Application`] owns its own registry ([`shared_ops::metrics::Registry`], never
//! the `metrics` crate's global recorder), so several gateways can run inside one test process;
//! the handles registered on it are kept here. The gateway runs [`Metrics::run_upkeep`] in the
//! background so that histogram samples are folded into buckets even when nothing scrapes.

use std::{sync::Arc, time::Duration};

use shared_ops::metrics::{Build, Registry};
pub use shared_ops::metrics::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, PROCESS_METRICS, TEXT_FORMAT, UPKEEP_EVERY,
};
use tokio_util::sync::CancellationToken;

/// Buckets of `ws_gateway_event_lag_seconds`: 250 µs to 2.5 s.
pub const LAG_BUCKETS: [f64; 13] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every metric of the gateway. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Open WebSockets (after the 101).
    pub sockets_open: Gauge,
    /// Upgrade requests on `/ws` by outcome: `upgraded`, `draining`, `origin`, `unauthorized`,
    /// `bad_user_id`, `method`, `bad_request`, `error`.
    pub handshakes: CounterVec,
    /// Identity failures by reason: `missing`, `invalid` (jwt), `missing_header`, `bad_user_id`.
    pub auth_failures: CounterVec,
    /// Events received from NATS by subject kind: `conversation`, `user`, `presence`.
    pub events_in: CounterVec,
    /// Events that could not be decoded or rendered (dropped, logged).
    pub events_invalid: Counter,
    /// Times the NATS connection came back after dropping (each starts a `resync` round).
    pub nats_reconnects: Counter,
    /// `resync` frames queued for sockets, by reason: `event_stream_interrupted`,
    /// `events_not_published`.
    pub resyncs: CounterVec,
    /// Seconds from an event's `occurred_at` (its publisher's clock, just before publishing) to
    /// the moment this gateway decodes it: NATS, then the wait for the task that handles it (the
    /// subscription's on the intake thread; for personal events, also the hand-over to a worker
    /// on the main runtime), plus any clock difference between the two hosts. What follows
    /// (queueing per socket, the write) is not included.
    pub event_lag: Histogram,
    /// Writes of events to sockets: each carries every event queued for the socket, one
    /// WebSocket text frame per event.
    pub socket_writes: Counter,
    /// Events written to sockets (deliveries), one text frame each: `events_out /
    /// socket_writes` is the mean batch.
    pub events_out: Counter,
    /// Connections that ended before a complete request head, by reason: `timeout` (none within
    /// the head timeout after the accept), `closed` (the client closed or reset first).
    pub request_head_failures: CounterVec,
    /// Bytes of those frames, headers included.
    pub bytes_out: Counter,
    /// Sockets closed because their send queue was full.
    pub queue_overflows: Counter,
    /// Times freed heap memory was given back to the system after a burst ([`crate::memory`]).
    pub memory_trims: Counter,
    /// Sockets closed, by close code (`1000`, `1001`, `1009`, `1012`, `1013`, …, `none` when the
    /// transport failed before a close frame).
    pub closes: CounterVec,
    /// Live NATS subscriptions by kind: `conversation`, `user`, `presence`.
    pub nats_subscriptions: GaugeVec,
    /// Presence operations: `online`, `offline`, `snapshot`, `heartbeat`, `reaped`, `reregistered`,
    /// `error`.
    pub presence_ops: CounterVec,
    /// Typing operations: `relayed`, `rate_limited`, `not_member`, `auto_stop`, `redis_error`.
    pub typing_ops: CounterVec,
    /// Client frames ignored by reason: `malformed`, `type`, `conversation_id`, `payload`.
    pub client_frames_ignored: CounterVec,
    /// HTTP requests on the front by path (`/health`, `/ready`, `/metrics`, `/ws`, `other`) and
    /// status.
    pub http_requests: CounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new(
            "ws_gateway",
            Build {
                version: env!("CARGO_PKG_VERSION"),
                revision: option_env!("GIT_REVISION"),
            },
            &[("ws_gateway_event_lag_seconds", &LAG_BUCKETS)],
        );
        let r = &registry;
        let metrics = Self {
            sockets_open: r.gauge("ws_gateway_sockets_open", "Open WebSockets"),
            handshakes: r.counter_vec(
                "ws_gateway_handshakes_total",
                "WebSocket upgrade requests by outcome",
                &["outcome"],
            ),
            auth_failures: r.counter_vec(
                "ws_gateway_auth_failures_total",
                "Handshake identity failures by reason",
                &["reason"],
            ),
            events_in: r.counter_vec(
                "ws_gateway_events_in_total",
                "Events received from NATS by subject kind",
                &["kind"],
            ),
            events_invalid: r.counter(
                "ws_gateway_events_invalid_total",
                "Events from NATS that could not be decoded or rendered",
            ),
            event_lag: r.histogram(
                "ws_gateway_event_lag_seconds",
                "From an event's occurred_at to its receipt from NATS",
            ),
            socket_writes: r.counter(
                "ws_gateway_socket_writes_total",
                "Writes of events to sockets (each carries one text frame per queued event)",
            ),
            events_out: r.counter(
                "ws_gateway_events_out_total",
                "Events written to sockets, one text frame each",
            ),
            nats_reconnects: r.counter(
                "ws_gateway_nats_reconnects_total",
                "Times the NATS connection came back after dropping",
            ),
            resyncs: r.counter_vec(
                "ws_gateway_resyncs_total",
                "resync frames queued for sockets, by reason",
                &["reason"],
            ),
            request_head_failures: r.counter_vec(
                "ws_gateway_request_head_failures_total",
                "Connections that ended before a complete request head, by reason",
                &["reason"],
            ),
            bytes_out: r.counter(
                "ws_gateway_bytes_out_total",
                "Bytes of WebSocket data frames written, frame headers included",
            ),
            queue_overflows: r.counter(
                "ws_gateway_send_queue_overflows_total",
                "Sockets closed with 1013 because their send queue was full",
            ),
            memory_trims: r.counter(
                "ws_gateway_memory_trims_total",
                "Times freed heap memory held by the allocator was returned to the system",
            ),
            closes: r.counter_vec(
                "ws_gateway_closes_total",
                "Sockets closed, by close code",
                &["code"],
            ),
            nats_subscriptions: r.gauge_vec(
                "ws_gateway_nats_subscriptions",
                "Live NATS subscriptions",
                &["kind"],
            ),
            presence_ops: r.counter_vec(
                "ws_gateway_presence_operations_total",
                "Presence operations",
                &["op"],
            ),
            typing_ops: r.counter_vec(
                "ws_gateway_typing_operations_total",
                "Typing operations",
                &["op"],
            ),
            client_frames_ignored: r.counter_vec(
                "ws_gateway_client_frames_ignored_total",
                "Client frames ignored, by reason",
                &["reason"],
            ),
            http_requests: r.counter_vec(
                "ws_gateway_http_requests_total",
                "HTTP requests by path and status",
                &["path", "status"],
            ),
            registry,
        };
        // Present from the start so dashboards and tests see zeros rather than nothing.
        for kind in ["conversation", "user", "presence"] {
            metrics.nats_subscriptions.with_label_values(&[kind]).set(0);
        }
        metrics
    }

    /// The Prometheus text exposition of every metric, process metrics read just now.
    pub fn render(&self) -> Vec<u8> {
        self.registry.render().into_bytes()
    }

    /// The value of one series of the exposition, named as it is written there
    /// (`ws_gateway_closes_total{code="1000"}`), if present.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.registry.value(series)
    }

    /// Folds waiting histogram samples into their buckets every `every` until `stop`.
    pub async fn run_upkeep(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        self.registry.clone().run_upkeep(every, stop).await;
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_gateways_keep_their_own_counts() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.sockets_open.inc();
        a.closes.with_label_values(&["1000"]).inc();
        a.closes.with_label_values(&["1000"]).inc();
        assert_eq!(a.value("ws_gateway_sockets_open"), Some(1.0));
        assert_eq!(
            a.value(r#"ws_gateway_closes_total{code="1000"}"#),
            Some(2.0)
        );
        assert_eq!(b.value("ws_gateway_sockets_open"), Some(0.0));
        assert_eq!(b.value(r#"ws_gateway_closes_total{code="1000"}"#), None);
    }

    #[test]
    fn the_event_lag_histogram_keeps_its_buckets() {
        let m = Metrics::new();
        m.event_lag.observe(0.003);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("# TYPE ws_gateway_event_lag_seconds histogram"),
            "{text}"
        );
        for bound in LAG_BUCKETS {
            let below = if bound < 0.003 { 0 } else { 1 };
            let line = format!("ws_gateway_event_lag_seconds_bucket{{le=\"{bound}\"}} {below}\n");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(
            text.contains("ws_gateway_event_lag_seconds_count 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_exposition_names_the_process_metrics_it_lists() {
        let text = String::from_utf8(Metrics::new().render()).unwrap();
        for name in PROCESS_METRICS {
            assert!(
                text.contains(&format!("\n{name} ")) || text.starts_with(&format!("{name} ")),
                "{name} missing from\n{text}"
            );
        }
    }
}
