//! Prometheus metrics of one gateway, served as text on `GET /metrics`.
//!
//! Names start with `ws_gateway_`, except the `process_*` metrics of the process itself (resident
//! memory, CPU seconds, open file descriptors, threads, …), read from `/proc` by
//! `metrics-process` on each scrape. Labels have a small fixed set of values (never a user or
//! conversation id).
//!
//! Each [`crate::Application`] owns its own [`PrometheusRecorder`], never the `metrics` crate's
//! global recorder, so several gateways can run inside one test process. Handles are registered
//! on that recorder directly and kept here; label families register one handle per label-value
//! combination on first use and cache it.
//!
//! Histogram samples wait in the recorder until a scrape or [`Metrics::run_upkeep`] folds them
//! into their buckets; the gateway runs the latter in the background so that memory stays bounded
//! when nothing scrapes.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, RwLock},
    time::Duration,
};

use ::metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio_util::sync::CancellationToken;

/// How often [`Metrics::run_upkeep`] folds histogram samples into buckets.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// `Content-Type` of the text exposition.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `process_*` series `metrics-process` writes on Linux at every scrape. CPU seconds are a
/// counter of whole seconds (the `metrics` counter type is an integer).
pub const PROCESS_METRICS: [&str; 8] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// The git revision given to the build (`GIT_REVISION` set when compiling), if any.
const GIT_REVISION: Option<&str> = option_env!("GIT_REVISION");

/// Buckets of `ws_gateway_event_lag_seconds`: 250 µs to 2.5 s.
pub const LAG_BUCKETS: [f64; 13] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every metric of the gateway. Cheap to share behind an `Arc`.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
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
        let recorder = Arc::new(
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("ws_gateway_event_lag_seconds".into()),
                    &LAG_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .build_recorder(),
        );
        let r = &recorder;
        build_info(r, "ws_gateway_build_info").set(1);
        let process = metrics_process::Collector::default();
        ::metrics::with_local_recorder(&**r, || process.describe());
        let metrics = Self {
            sockets_open: gauge(r, "ws_gateway_sockets_open", "Open WebSockets"),
            handshakes: CounterVec::new(
                r,
                "ws_gateway_handshakes_total",
                "WebSocket upgrade requests by outcome",
                &["outcome"],
            ),
            auth_failures: CounterVec::new(
                r,
                "ws_gateway_auth_failures_total",
                "Handshake identity failures by reason",
                &["reason"],
            ),
            events_in: CounterVec::new(
                r,
                "ws_gateway_events_in_total",
                "Events received from NATS by subject kind",
                &["kind"],
            ),
            events_invalid: counter(
                r,
                "ws_gateway_events_invalid_total",
                "Events from NATS that could not be decoded or rendered",
            ),
            event_lag: histogram(
                r,
                "ws_gateway_event_lag_seconds",
                "From an event's occurred_at to its receipt from NATS",
            ),
            socket_writes: counter(
                r,
                "ws_gateway_socket_writes_total",
                "Writes of events to sockets (each carries one text frame per queued event)",
            ),
            events_out: counter(
                r,
                "ws_gateway_events_out_total",
                "Events written to sockets, one text frame each",
            ),
            nats_reconnects: counter(
                r,
                "ws_gateway_nats_reconnects_total",
                "Times the NATS connection came back after dropping",
            ),
            resyncs: CounterVec::new(
                r,
                "ws_gateway_resyncs_total",
                "resync frames queued for sockets, by reason",
                &["reason"],
            ),
            request_head_failures: CounterVec::new(
                r,
                "ws_gateway_request_head_failures_total",
                "Connections that ended before a complete request head, by reason",
                &["reason"],
            ),
            bytes_out: counter(
                r,
                "ws_gateway_bytes_out_total",
                "Bytes of WebSocket data frames written, frame headers included",
            ),
            queue_overflows: counter(
                r,
                "ws_gateway_send_queue_overflows_total",
                "Sockets closed with 1013 because their send queue was full",
            ),
            memory_trims: counter(
                r,
                "ws_gateway_memory_trims_total",
                "Times freed heap memory held by the allocator was returned to the system",
            ),
            closes: CounterVec::new(
                r,
                "ws_gateway_closes_total",
                "Sockets closed, by close code",
                &["code"],
            ),
            nats_subscriptions: GaugeVec::new(
                r,
                "ws_gateway_nats_subscriptions",
                "Live NATS subscriptions",
                &["kind"],
            ),
            presence_ops: CounterVec::new(
                r,
                "ws_gateway_presence_operations_total",
                "Presence operations",
                &["op"],
            ),
            typing_ops: CounterVec::new(
                r,
                "ws_gateway_typing_operations_total",
                "Typing operations",
                &["op"],
            ),
            client_frames_ignored: CounterVec::new(
                r,
                "ws_gateway_client_frames_ignored_total",
                "Client frames ignored, by reason",
                &["reason"],
            ),
            http_requests: CounterVec::new(
                r,
                "ws_gateway_http_requests_total",
                "HTTP requests by path and status",
                &["path", "status"],
            ),
            handle: recorder.handle(),
            process,
            recorder,
        };
        // Present from the start so dashboards and tests see zeros rather than nothing.
        for kind in ["conversation", "user", "presence"] {
            metrics.nats_subscriptions.with_label_values(&[kind]).set(0);
        }
        metrics
    }

    /// The Prometheus text exposition of every metric, process metrics read just now.
    pub fn render(&self) -> Vec<u8> {
        ::metrics::with_local_recorder(&*self.recorder, || self.process.collect());
        self.handle.render().into_bytes()
    }

    /// The value of one series of the exposition, named as it is written there
    /// (`ws_gateway_closes_total{code="1000"}`), if present.
    pub fn value(&self, series: &str) -> Option<f64> {
        let text = String::from_utf8(self.render()).ok()?;
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    /// Folds waiting histogram samples into their buckets every `every` until `stop`.
    pub async fn run_upkeep(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.handle.run_upkeep(),
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// ----- handles on one recorder --------------------------------------------------------------------

/// Registration metadata; the Prometheus recorder ignores it.
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// A counter series.
#[derive(Clone)]
pub struct Counter(::metrics::Counter);

impl Counter {
    pub fn inc(&self) {
        self.0.increment(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.increment(n);
    }
}

/// A gauge series holding an integer.
#[derive(Clone)]
pub struct Gauge(::metrics::Gauge);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.set(value as f64);
    }

    pub fn inc(&self) {
        self.0.increment(1.0);
    }

    pub fn dec(&self) {
        self.0.decrement(1.0);
    }
}

/// A histogram series (buckets set on the recorder, by metric name).
#[derive(Clone)]
pub struct Histogram(::metrics::Histogram);

impl Histogram {
    pub fn observe(&self, value: f64) {
        self.0.record(value);
    }
}

fn counter(recorder: &PrometheusRecorder, name: &'static str, help: &'static str) -> Counter {
    recorder.describe_counter(name.into(), None, help.into());
    Counter(recorder.register_counter(&Key::from_static_name(name), &METADATA))
}

fn gauge(recorder: &PrometheusRecorder, name: &'static str, help: &'static str) -> Gauge {
    recorder.describe_gauge(name.into(), None, help.into());
    Gauge(recorder.register_gauge(&Key::from_static_name(name), &METADATA))
}

/// `name` = 1 labelled with this build's version (`CARGO_PKG_VERSION`) and, when `GIT_REVISION`
/// was set at compile time, its revision.
fn build_info(recorder: &PrometheusRecorder, name: &'static str) -> Gauge {
    recorder.describe_gauge(
        name.into(),
        None,
        "Always 1; the labels name the running build (version, and revision when known)".into(),
    );
    let mut labels = vec![Label::from_static_parts(
        "version",
        env!("CARGO_PKG_VERSION"),
    )];
    if let Some(revision) = GIT_REVISION.filter(|r| !r.is_empty()) {
        labels.push(Label::from_static_parts("revision", revision));
    }
    Gauge(recorder.register_gauge(&Key::from_parts(name, labels), &METADATA))
}

fn histogram(recorder: &PrometheusRecorder, name: &'static str, help: &'static str) -> Histogram {
    recorder.describe_histogram(name.into(), None, help.into());
    Histogram(recorder.register_histogram(&Key::from_static_name(name), &METADATA))
}

/// One metric name with labels: a handle per combination of label values, registered on first
/// use and then found again without allocating.
pub struct Family<H> {
    recorder: Arc<PrometheusRecorder>,
    name: &'static str,
    labels: &'static [&'static str],
    register: fn(&PrometheusRecorder, &Key) -> H,
    hasher: RandomState,
    /// Handles by the hash of their label values; a collision shares a bucket.
    handles: RwLock<HashMap<u64, Vec<Series<H>>>>,
}

/// The label values of one series and its handle.
type Series<H> = (Box<[Box<str>]>, H);

/// Counters by label values.
pub type CounterVec = Family<Counter>;
/// Gauges by label values.
pub type GaugeVec = Family<Gauge>;

impl CounterVec {
    fn new(
        recorder: &Arc<PrometheusRecorder>,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        recorder.describe_counter(name.into(), None, help.into());
        Family::with(recorder, name, labels, |r, key| {
            Counter(r.register_counter(key, &METADATA))
        })
    }
}

impl GaugeVec {
    fn new(
        recorder: &Arc<PrometheusRecorder>,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        recorder.describe_gauge(name.into(), None, help.into());
        Family::with(recorder, name, labels, |r, key| {
            Gauge(r.register_gauge(key, &METADATA))
        })
    }
}

impl<H: Clone> Family<H> {
    fn with(
        recorder: &Arc<PrometheusRecorder>,
        name: &'static str,
        labels: &'static [&'static str],
        register: fn(&PrometheusRecorder, &Key) -> H,
    ) -> Self {
        Self {
            recorder: Arc::clone(recorder),
            name,
            labels,
            register,
            hasher: RandomState::new(),
            handles: RwLock::new(HashMap::new()),
        }
    }

    /// The series with these label values, in the order of the family's label names.
    pub fn with_label_values(&self, values: &[&str]) -> H {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: label count",
            self.name
        );
        let hash = self.hasher.hash_one(values);
        let same = |(known, _): &&Series<H>| known.iter().map(|v| &**v).eq(values.iter().copied());
        if let Some(handle) = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(same))
        {
            return handle.1.clone();
        }
        let mut handles = self.handles.write().unwrap_or_else(|e| e.into_inner());
        let bucket = handles.entry(hash).or_default();
        if let Some(found) = bucket.iter().find(same) {
            return found.1.clone();
        }
        let key = Key::from_parts(
            self.name,
            self.labels
                .iter()
                .zip(values)
                .map(|(&k, &v)| Label::new(k, v.to_owned()))
                .collect::<Vec<_>>(),
        );
        let handle = (self.register)(&self.recorder, &key);
        bucket.push((values.iter().map(|&v| v.into()).collect(), handle.clone()));
        handle
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
