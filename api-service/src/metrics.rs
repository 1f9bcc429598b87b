//! Prometheus metrics of api-service, served on `/metrics` (architecture.md, "Operations").
//!
//! One registry per [`Metrics`] value, so tests running several services in one process do not
//! share counters. Route labels are the matched route *pattern* (`/conversations/:id`), never the
//! requested path, and unknown methods fold into `other`, so clients cannot mint label values.

use std::time::Instant;

use poem::{Endpoint, IntoResponse, Middleware, PathPattern, Request, Response, Result};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The counters and histograms of one api-service process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub messages_persisted: IntCounter,
    pub events_published: IntCounterVec,
    pub event_publish_failures: IntCounterVec,
    /// Events waiting in the publisher's buffer for NATS (events.rs).
    pub event_buffer: IntGauge,
    pub events_buffered: IntCounter,
    pub events_dropped: IntCounterVec,
    pub resync_notices_published: IntCounter,
    pub rate_limited: IntCounter,
    pub rate_limiter_errors: IntCounter,
    pub send_batch_size: Histogram,
    pub send_stage: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by method, route pattern and status",
            ),
            &["method", "route", "status"],
        )
        .expect("metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to the response head, by method and route pattern",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0,
                2.0, 5.0,
            ]),
            &["method", "route"],
        )
        .expect("metric");
        let messages_persisted = IntCounter::new(
            "messages_persisted_total",
            "Messages inserted into PostgreSQL",
        )
        .expect("metric");
        let events_published = IntCounterVec::new(
            Opts::new(
                "events_published_total",
                "Events published on NATS, by event type",
            ),
            &["type"],
        )
        .expect("metric");
        let event_publish_failures = IntCounterVec::new(
            Opts::new(
                "event_publish_failures_total",
                "Events that could not be published on NATS when they were made (not connected, \
                 publish failed or timed out, or dropped), by event type; each was then buffered \
                 or dropped",
            ),
            &["type"],
        )
        .expect("metric");
        let event_buffer = IntGauge::new(
            "event_buffer_events",
            "Events buffered while NATS is unreachable, waiting to be published",
        )
        .expect("metric");
        let events_buffered = IntCounter::new(
            "events_buffered_total",
            "Events that went through the buffer instead of straight to NATS",
        )
        .expect("metric");
        let events_dropped = IntCounterVec::new(
            Opts::new(
                "events_dropped_total",
                "Events never published, by reason (overflow: buffer full; too_large: over the \
                 server's max_payload; shutdown: still buffered at exit)",
            ),
            &["reason"],
        )
        .expect("metric");
        // Every reason shows from the start (at 0), so a rate over it is defined before any drop.
        for reason in ["overflow", "too_large", "shutdown"] {
            events_dropped.with_label_values(&[reason]);
        }
        let resync_notices_published = IntCounter::new(
            "resync_notices_published_total",
            "Resync notices published for events that may not have reached NATS",
        )
        .expect("metric");
        let rate_limited = IntCounter::new("rate_limited_total", "Message sends refused with 429")
            .expect("metric");
        let rate_limiter_errors = IntCounter::new(
            "rate_limiter_errors_total",
            "Rate-limit checks that failed open because Redis did not answer",
        )
        .expect("metric");
        let send_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "message_send_batch_size",
                "Sends checked and written together by one ingest batch",
            )
            .buckets(crate::ingest::BATCH_BUCKETS.to_vec()),
        )
        .expect("metric");
        let send_stage = HistogramVec::new(
            HistogramOpts::new(
                "message_send_stage_seconds",
                "Time one ingest batch spent in each stage: rate_limit, write (checks and insert), announce",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
                0.256, 1.0,
            ]),
            &["stage"],
        )
        .expect("metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(messages_persisted.clone()),
            Box::new(events_published.clone()),
            Box::new(event_publish_failures.clone()),
            Box::new(event_buffer.clone()),
            Box::new(events_buffered.clone()),
            Box::new(events_dropped.clone()),
            Box::new(resync_notices_published.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limiter_errors.clone()),
            Box::new(send_batch_size.clone()),
            Box::new(send_stage.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            messages_persisted,
            events_published,
            event_publish_failures,
            event_buffer,
            events_buffered,
            events_dropped,
            resync_notices_published,
            rate_limited,
            rate_limiter_errors,
            send_batch_size,
            send_stage,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("utf-8 exposition")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

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
