//! Prometheus metrics of api-service, served on `/metrics` (docs/deployment.md, "Monitoring").
//!
//! Every name starts with `api_service_`, except the `process_*` metrics of the process itself
//! (resident memory, CPU seconds, open file descriptors, threads, …), read from `/proc` by
//! `metrics-process` on each scrape.
//!
//! One registry ([`shared_ops::metrics::Registry`]) per [`Metrics`] value, never the `metrics`
//! crate's global recorder: tests run several services in one process and each keeps its own
//! counters; the handles registered on it are kept here. Route labels are the matched route
//! *pattern* (`/conversations/:id`), never the requested path, and unknown methods fold into
//! `other`, so clients cannot mint label values. The service runs [`Metrics::run_upkeep`] in the
//! background so that histogram samples are folded into buckets even when nothing scrapes.

use std::time::{Duration, Instant};

use poem::{Endpoint, IntoResponse, Middleware, PathPattern, Request, Response, Result};
use shared_ops::metrics::{Build, Registry};
pub use shared_ops::metrics::{
    Counter, CounterVec, Gauge, Histogram, HistogramVec, PROCESS_METRICS, UPKEEP_EVERY,
};
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

/// The counters and histograms of one api-service instance. Clones share them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
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
        let registry = Registry::new(
            "api_service",
            Build {
                version: env!("CARGO_PKG_VERSION"),
                revision: option_env!("GIT_REVISION"),
            },
            &[
                (
                    "api_service_http_request_duration_seconds",
                    &HTTP_DURATION_BUCKETS,
                ),
                ("api_service_message_send_batch_size", &BATCH_BUCKETS),
                (
                    "api_service_message_send_stage_seconds",
                    &SEND_STAGE_BUCKETS,
                ),
            ],
        );
        let r = &registry;
        let events_dropped = r.counter_vec(
            "api_service_events_dropped_total",
            "Events never published, by reason (overflow: buffer full; too_large: over the \
             server's max_payload; shutdown: still buffered at exit)",
            &["reason"],
        );
        // Every reason shows from the start (at 0), so a rate over it is defined before any drop.
        for reason in ["overflow", "too_large", "shutdown"] {
            events_dropped.with_label_values(&[reason]);
        }
        Self {
            http_requests: r.counter_vec(
                "api_service_http_requests_total",
                "HTTP requests answered, by method, route pattern and status",
                &["method", "route", "status"],
            ),
            http_duration: r.histogram_vec(
                "api_service_http_request_duration_seconds",
                "Time to the response head, by method and route pattern",
                &["method", "route"],
            ),
            messages_persisted: r.counter(
                "api_service_messages_persisted_total",
                "Messages inserted into PostgreSQL",
            ),
            events_published: r.counter_vec(
                "api_service_events_published_total",
                "Events published on NATS, by event type",
                &["type"],
            ),
            event_publish_failures: r.counter_vec(
                "api_service_event_publish_failures_total",
                "Events that could not be published on NATS when they were made (not connected, \
                 publish failed or timed out, or dropped), by event type; each was then buffered \
                 or dropped",
                &["type"],
            ),
            event_buffer: r.gauge(
                "api_service_event_buffer_events",
                "Events buffered while NATS is unreachable, waiting to be published",
            ),
            events_buffered: r.counter(
                "api_service_events_buffered_total",
                "Events that went through the buffer instead of straight to NATS",
            ),
            events_dropped,
            resync_notices_published: r.counter(
                "api_service_resync_notices_published_total",
                "Resync notices published for events that may not have reached NATS",
            ),
            rate_limited: r.counter(
                "api_service_rate_limited_total",
                "Message sends refused with 429",
            ),
            rate_limiter_errors: r.counter(
                "api_service_rate_limiter_errors_total",
                "Rate-limit checks that failed open because Redis did not answer",
            ),
            send_batch_size: r.histogram(
                "api_service_message_send_batch_size",
                "Sends checked and written together by one ingest batch",
            ),
            send_stage: r.histogram_vec(
                "api_service_message_send_stage_seconds",
                "Time one ingest batch spent in each stage: rate_limit, write (checks and insert), announce",
                &["stage"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric, process metrics read just now.
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// Folds waiting histogram samples into their buckets every `every` until `stop`.
    pub async fn run_upkeep(self, every: Duration, stop: CancellationToken) {
        self.registry.run_upkeep(every, stop).await;
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
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
