//! Prometheus metrics of one gateway (issue 4 point 8), served as text on `GET /metrics`.
//!
//! Each [`crate::Application`] owns its own [`Registry`] (no process-global default registry), so
//! several gateways can run inside one test process. Names start with `ws_gateway_`; labels have a
//! small fixed set of values (never a user or conversation id).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Buckets of `ws_gateway_event_lag_seconds`: 250 µs to 2.5 s.
pub const LAG_BUCKETS: [f64; 13] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every metric of the gateway. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Open WebSockets (after the 101).
    pub sockets_open: IntGauge,
    /// Upgrade requests on `/ws` by outcome: `upgraded`, `draining`, `origin`, `unauthorized`,
    /// `bad_user_id`, `method`, `bad_request`, `error`.
    pub handshakes: IntCounterVec,
    /// Identity failures by reason: `missing`, `invalid` (jwt), `missing_header`, `bad_user_id`.
    pub auth_failures: IntCounterVec,
    /// Events received from NATS by subject kind: `conversation`, `user`, `presence`.
    pub events_in: IntCounterVec,
    /// Events that could not be decoded or rendered (dropped, logged).
    pub events_invalid: IntCounter,
    /// Times the NATS connection came back after dropping (each starts a `resync` round).
    pub nats_reconnects: IntCounter,
    /// `resync` frames queued for sockets, by reason: `event_stream_interrupted`,
    /// `events_not_published`.
    pub resyncs: IntCounterVec,
    /// Seconds from an event's `occurred_at` (its publisher's clock, just before publishing) to
    /// the moment this gateway decodes it: NATS, then the wait for the task that handles it (the
    /// subscription's on the intake thread; for personal events, also the hand-over to a worker
    /// on the main runtime), plus any clock difference between the two hosts. What follows
    /// (queueing per socket, the write) is not included.
    pub event_lag: Histogram,
    /// Writes of events to sockets: each carries every event queued for the socket, one
    /// WebSocket text frame per event.
    pub socket_writes: IntCounter,
    /// Events written to sockets (deliveries), one text frame each: `events_out /
    /// socket_writes` is the mean batch.
    pub events_out: IntCounter,
    /// Connections that ended before a complete request head, by reason: `timeout` (none within
    /// the head timeout after the accept), `closed` (the client closed or reset first).
    pub request_head_failures: IntCounterVec,
    /// Bytes of those frames, headers included.
    pub bytes_out: IntCounter,
    /// Sockets closed because their send queue was full.
    pub queue_overflows: IntCounter,
    /// Times freed heap memory was given back to the system after a burst ([`crate::memory`]).
    pub memory_trims: IntCounter,
    /// Sockets closed, by close code (`1000`, `1001`, `1009`, `1012`, `1013`, …, `none` when the
    /// transport failed before a close frame).
    pub closes: IntCounterVec,
    /// Live NATS subscriptions by kind: `conversation`, `user`, `presence`.
    pub nats_subscriptions: IntGaugeVec,
    /// Presence operations: `online`, `offline`, `snapshot`, `heartbeat`, `reaped`, `reregistered`,
    /// `error`.
    pub presence_ops: IntCounterVec,
    /// Typing operations: `relayed`, `rate_limited`, `not_member`, `auto_stop`, `redis_error`.
    pub typing_ops: IntCounterVec,
    /// Client frames ignored by reason: `malformed`, `type`, `conversation_id`, `payload`.
    pub client_frames_ignored: IntCounterVec,
    /// HTTP requests on the front by path (`/health`, `/ready`, `/metrics`, `/ws`, `other`) and
    /// status.
    pub http_requests: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            sockets_open: reg(
                &registry,
                IntGauge::new("ws_gateway_sockets_open", "Open WebSockets").expect("valid metric"),
            ),
            handshakes: counter_vec(
                &registry,
                "ws_gateway_handshakes_total",
                "WebSocket upgrade requests by outcome",
                &["outcome"],
            ),
            auth_failures: counter_vec(
                &registry,
                "ws_gateway_auth_failures_total",
                "Handshake identity failures by reason",
                &["reason"],
            ),
            events_in: counter_vec(
                &registry,
                "ws_gateway_events_in_total",
                "Events received from NATS by subject kind",
                &["kind"],
            ),
            events_invalid: counter(
                &registry,
                "ws_gateway_events_invalid_total",
                "Events from NATS that could not be decoded or rendered",
            ),
            event_lag: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ws_gateway_event_lag_seconds",
                        "From an event's occurred_at to its receipt from NATS",
                    )
                    .buckets(LAG_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            socket_writes: counter(
                &registry,
                "ws_gateway_socket_writes_total",
                "Writes of events to sockets (each carries one text frame per queued event)",
            ),
            events_out: counter(
                &registry,
                "ws_gateway_events_out_total",
                "Events written to sockets, one text frame each",
            ),
            nats_reconnects: counter(
                &registry,
                "ws_gateway_nats_reconnects_total",
                "Times the NATS connection came back after dropping",
            ),
            resyncs: counter_vec(
                &registry,
                "ws_gateway_resyncs_total",
                "resync frames queued for sockets, by reason",
                &["reason"],
            ),
            request_head_failures: counter_vec(
                &registry,
                "ws_gateway_request_head_failures_total",
                "Connections that ended before a complete request head, by reason",
                &["reason"],
            ),
            bytes_out: counter(
                &registry,
                "ws_gateway_bytes_out_total",
                "Bytes of WebSocket data frames written, frame headers included",
            ),
            queue_overflows: counter(
                &registry,
                "ws_gateway_send_queue_overflows_total",
                "Sockets closed with 1013 because their send queue was full",
            ),
            memory_trims: counter(
                &registry,
                "ws_gateway_memory_trims_total",
                "Times freed heap memory held by the allocator was returned to the system",
            ),
            closes: counter_vec(
                &registry,
                "ws_gateway_closes_total",
                "Sockets closed, by close code",
                &["code"],
            ),
            nats_subscriptions: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("ws_gateway_nats_subscriptions", "Live NATS subscriptions"),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            presence_ops: counter_vec(
                &registry,
                "ws_gateway_presence_operations_total",
                "Presence operations",
                &["op"],
            ),
            typing_ops: counter_vec(
                &registry,
                "ws_gateway_typing_operations_total",
                "Typing operations",
                &["op"],
            ),
            client_frames_ignored: counter_vec(
                &registry,
                "ws_gateway_client_frames_ignored_total",
                "Client frames ignored, by reason",
                &["reason"],
            ),
            http_requests: counter_vec(
                &registry,
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    reg(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}
