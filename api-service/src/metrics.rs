//! Prometheus metrics of api-service, served on `/metrics` (docs/deployment.md, "Monitoring").
//!
//! Every name starts with `api_service_`, except the `process_*` metrics of the process itself
//! (resident memory, CPU seconds, open file descriptors, threads, …), read from `/proc` by
//! `metrics-process` on each scrape.
//!
//! One [`PrometheusRecorder`] per [`Metrics`] value, never the `metrics` crate's global recorder:
//! tests run several services in one process and each keeps its own counters. Handles are
//! registered on that recorder directly and kept here; label families register one handle per
//! label-value combination on first use and cache it. Route labels are the matched route
//! *pattern* (`/conversations/:id`), never the requested path, and unknown methods fold into
//! `other`, so clients cannot mint label values.
//!
//! Histogram samples wait in the recorder until a scrape or [`Metrics::run_upkeep`] folds them
//! into their buckets; the service runs the latter in the background so that memory stays bounded
//! when nothing scrapes.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use ::metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use poem::{Endpoint, IntoResponse, Middleware, PathPattern, Request, Response, Result};
use tokio_util::sync::CancellationToken;

/// Buckets of `api_service_http_request_duration_seconds`: 500 µs to 5 s.
const HTTP_DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0,
];

/// Buckets of `api_service_message_send_stage_seconds`: 100 µs to 1 s.
const SEND_STAGE_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0,
];

/// Buckets of `api_service_message_send_batch_size`: powers of two up to the largest batch the
/// send pipeline takes (`ingest::MAX_BATCH`).
pub const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often [`Metrics::run_upkeep`] folds histogram samples into buckets.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

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

/// The counters and histograms of one api-service instance. Clones share them.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    pub http_requests: CounterVec,
    pub http_duration: HistogramVec,
    pub messages_persisted: Counter,
    pub events_published: CounterVec,
    pub event_publish_failures: CounterVec,
    /// Events waiting in the publisher's buffer for NATS (events.rs).
    pub event_buffer: Gauge,
    pub events_buffered: Counter,
    pub events_dropped: CounterVec,
    pub resync_notices_published: Counter,
    pub rate_limited: Counter,
    pub rate_limiter_errors: Counter,
    pub send_batch_size: Histogram,
    pub send_stage: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = Arc::new(
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("api_service_http_request_duration_seconds".into()),
                    &HTTP_DURATION_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("api_service_message_send_batch_size".into()),
                        &BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("api_service_message_send_stage_seconds".into()),
                        &SEND_STAGE_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder(),
        );
        let r = &recorder;
        build_info(r, "api_service_build_info").set(1);
        let events_dropped = CounterVec::new(
            r,
            "api_service_events_dropped_total",
            "Events never published, by reason (overflow: buffer full; too_large: over the \
             server's max_payload; shutdown: still buffered at exit)",
            &["reason"],
        );
        // Every reason shows from the start (at 0), so a rate over it is defined before any drop.
        for reason in ["overflow", "too_large", "shutdown"] {
            events_dropped.with_label_values(&[reason]);
        }
        let process = metrics_process::Collector::default();
        ::metrics::with_local_recorder(&**r, || process.describe());
        Self {
            http_requests: CounterVec::new(
                r,
                "api_service_http_requests_total",
                "HTTP requests answered, by method, route pattern and status",
                &["method", "route", "status"],
            ),
            http_duration: HistogramVec::new(
                r,
                "api_service_http_request_duration_seconds",
                "Time to the response head, by method and route pattern",
                &["method", "route"],
            ),
            messages_persisted: counter(
                r,
                "api_service_messages_persisted_total",
                "Messages inserted into PostgreSQL",
            ),
            events_published: CounterVec::new(
                r,
                "api_service_events_published_total",
                "Events published on NATS, by event type",
                &["type"],
            ),
            event_publish_failures: CounterVec::new(
                r,
                "api_service_event_publish_failures_total",
                "Events that could not be published on NATS when they were made (not connected, \
                 publish failed or timed out, or dropped), by event type; each was then buffered \
                 or dropped",
                &["type"],
            ),
            event_buffer: gauge(
                r,
                "api_service_event_buffer_events",
                "Events buffered while NATS is unreachable, waiting to be published",
            ),
            events_buffered: counter(
                r,
                "api_service_events_buffered_total",
                "Events that went through the buffer instead of straight to NATS",
            ),
            events_dropped,
            resync_notices_published: counter(
                r,
                "api_service_resync_notices_published_total",
                "Resync notices published for events that may not have reached NATS",
            ),
            rate_limited: counter(
                r,
                "api_service_rate_limited_total",
                "Message sends refused with 429",
            ),
            rate_limiter_errors: counter(
                r,
                "api_service_rate_limiter_errors_total",
                "Rate-limit checks that failed open because Redis did not answer",
            ),
            send_batch_size: histogram(
                r,
                "api_service_message_send_batch_size",
                "Sends checked and written together by one ingest batch",
            ),
            send_stage: HistogramVec::new(
                r,
                "api_service_message_send_stage_seconds",
                "Time one ingest batch spent in each stage: rate_limit, write (checks and insert), announce",
                &["stage"],
            ),
            handle: recorder.handle(),
            process,
            recorder,
        }
    }

    /// The Prometheus text exposition of every metric, process metrics read just now.
    pub fn render(&self) -> String {
        ::metrics::with_local_recorder(&*self.recorder, || self.process.collect());
        self.handle.render()
    }

    /// Folds waiting histogram samples into their buckets every `every` until `stop`.
    pub async fn run_upkeep(self, every: Duration, stop: CancellationToken) {
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
#[derive(Clone)]
pub struct Family<H> {
    inner: Arc<FamilyInner<H>>,
}

/// The label values of one series and its handle.
type Series<H> = (Box<[Box<str>]>, H);

/// Counters by label values.
pub type CounterVec = Family<Counter>;
/// Histograms by label values.
pub type HistogramVec = Family<Histogram>;

struct FamilyInner<H> {
    recorder: Arc<PrometheusRecorder>,
    name: &'static str,
    labels: &'static [&'static str],
    register: fn(&PrometheusRecorder, &Key) -> H,
    hasher: RandomState,
    /// Handles by the hash of their label values; a collision shares a bucket.
    handles: RwLock<HashMap<u64, Vec<Series<H>>>>,
}

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

impl HistogramVec {
    fn new(
        recorder: &Arc<PrometheusRecorder>,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        recorder.describe_histogram(name.into(), None, help.into());
        Family::with(recorder, name, labels, |r, key| {
            Histogram(r.register_histogram(key, &METADATA))
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
            inner: Arc::new(FamilyInner {
                recorder: Arc::clone(recorder),
                name,
                labels,
                register,
                hasher: RandomState::new(),
                handles: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The series with these label values, in the order of the family's label names.
    pub fn with_label_values(&self, values: &[&str]) -> H {
        let inner = &*self.inner;
        assert_eq!(
            values.len(),
            inner.labels.len(),
            "{}: label count",
            inner.name
        );
        let hash = inner.hasher.hash_one(values);
        let same = |(known, _): &&Series<H>| known.iter().map(|v| &**v).eq(values.iter().copied());
        if let Some(handle) = inner
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(same))
        {
            return handle.1.clone();
        }
        let mut handles = inner.handles.write().unwrap_or_else(|e| e.into_inner());
        let bucket = handles.entry(hash).or_default();
        if let Some(found) = bucket.iter().find(same) {
            return found.1.clone();
        }
        let key = Key::from_parts(
            inner.name,
            inner
                .labels
                .iter()
                .zip(values)
                .map(|(&k, &v)| Label::new(k, v.to_owned()))
                .collect::<Vec<_>>(),
        );
        let handle = (inner.register)(&inner.recorder, &key);
        bucket.push((values.iter().map(|&v| v.into()).collect(), handle.clone()));
        handle
    }
}

// ----- HTTP middleware ----------------------------------------------------------------------------

/// Labels a method without letting clients invent new label values.
fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Middleware recording request counts and latency by route pattern.
pub struct HttpMetrics(pub Metrics);

impl<E: Endpoint> Middleware<E> for HttpMetrics {
    type Output = HttpMetricsEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        HttpMetricsEndpoint {
            inner: ep,
            metrics: self.0.clone(),
        }
    }
}

/// See [`HttpMetrics`].
pub struct HttpMetricsEndpoint<E> {
    inner: E,
    metrics: Metrics,
}

impl<E: Endpoint> Endpoint for HttpMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let method = method_label(req.method());
        let start = Instant::now();
        let resp = match self.inner.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        let route = resp
            .data::<PathPattern>()
            .map(|p| p.0.to_string())
            .unwrap_or_else(|| "unmatched".into());
        let status = resp.status().as_u16().to_string();
        self.metrics
            .http_requests
            .with_label_values(&[method, &route, &status])
            .inc();
        self.metrics
            .http_duration
            .with_label_values(&[method, &route])
            .observe(start.elapsed().as_secs_f64());
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_instances_keep_their_own_counts() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.rate_limited.inc();
        a.http_requests
            .with_label_values(&["GET", "/health", "200"])
            .inc();
        assert!(a.render().contains("api_service_rate_limited_total 1\n"));
        assert!(b.render().contains("api_service_rate_limited_total 0\n"));
        assert!(!b.render().contains("route=\"/health\""));
    }

    #[test]
    fn a_family_returns_the_same_series_for_the_same_labels() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.http_requests
                .with_label_values(&["GET", "/a", "200"])
                .inc();
        }
        m.http_requests
            .with_label_values(&["GET", "/b", "200"])
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"api_service_http_requests_total{method="GET",route="/a",status="200"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"api_service_http_requests_total{method="GET",route="/b",status="200"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn histograms_keep_their_bucket_boundaries() {
        let m = Metrics::new();
        m.http_duration
            .with_label_values(&["GET", "/health"])
            .observe(0.003);
        m.send_batch_size.observe(3.0);
        m.send_stage.with_label_values(&["write"]).observe(0.0002);
        let text = m.render();
        for line in [
            "# TYPE api_service_http_request_duration_seconds histogram",
            r#"api_service_http_request_duration_seconds_bucket{method="GET",route="/health",le="0.002"} 0"#,
            r#"api_service_http_request_duration_seconds_bucket{method="GET",route="/health",le="0.004"} 1"#,
            r#"api_service_http_request_duration_seconds_bucket{method="GET",route="/health",le="5"} 1"#,
            r#"api_service_message_send_batch_size_bucket{le="4"} 1"#,
            r#"api_service_message_send_batch_size_bucket{le="256"} 1"#,
            r#"api_service_message_send_stage_seconds_bucket{stage="write",le="0.0001"} 0"#,
            r#"api_service_message_send_stage_seconds_bucket{stage="write",le="0.00025"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn the_exposition_names_the_process_metrics_it_lists() {
        let text = Metrics::new().render();
        for name in PROCESS_METRICS {
            assert!(
                text.contains(&format!("\n{name} ")) || text.starts_with(&format!("{name} ")),
                "{name} missing from\n{text}"
            );
        }
    }
}
