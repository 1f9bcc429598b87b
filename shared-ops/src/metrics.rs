//! One Prometheus registry per service instance, and the typed handles registered on it.
//!
//! A [`Registry`] owns its own [`PrometheusRecorder`], never the `metrics` crate's global
//! recorder: tests run several services in one process and each keeps its own counts. Handles
//! are registered on that recorder directly and kept by the service's own `Metrics` struct;
//! label families ([`Family`]) register one handle per label-value combination on first use and
//! find it again without allocating.
//!
//! Every registry also exports the `process_*` metrics of the process ([`PROCESS_METRICS`], read
//! from `/proc` by `metrics-process` on each scrape) and a `<prefix>_build_info` gauge.
//! Histogram samples wait in the recorder until a scrape or [`Registry::run_upkeep`] folds them
//! into their buckets; services run the latter in the background so that memory stays bounded
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

/// How often services fold histogram samples into buckets ([`Registry::run_upkeep`]).
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

/// The build a registry describes in its build-info gauge.
#[derive(Debug, Clone, Copy)]
pub struct Build {
    /// `CARGO_PKG_VERSION` of the service.
    pub version: &'static str,
    /// The git revision given to the build (`GIT_REVISION` when compiling), if any.
    pub revision: Option<&'static str>,
}

/// Registration metadata; the Prometheus recorder ignores it.
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// A service instance's recorder, its exposition handle and its process collector. Clones share
/// them.
#[derive(Clone)]
pub struct Registry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
}

impl Registry {
    /// A registry whose histograms named in `buckets` use those bucket bounds (the others use
    /// the exporter's summary default), with the process metrics described and
    /// `<prefix>_build_info` set to 1.
    ///
    /// # Panics
    /// When a bucket list is empty (a programming error caught by any test that builds one).
    pub fn new(prefix: &str, build: Build, buckets: &[(&str, &[f64])]) -> Self {
        let mut builder = PrometheusBuilder::new();
        for (name, bounds) in buckets {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).to_owned()), bounds)
                .expect("bucket lists are not empty");
        }
        let recorder = Arc::new(builder.build_recorder());
        let process = metrics_process::Collector::default();
        ::metrics::with_local_recorder(&*recorder, || process.describe());
        let registry = Self {
            handle: recorder.handle(),
            process: Arc::new(process),
            recorder,
        };
        registry.build_info(format!("{prefix}_build_info"), build);
        registry
    }

    /// The Prometheus text exposition of every metric, process metrics read just now.
    pub fn render(&self) -> String {
        ::metrics::with_local_recorder(&*self.recorder, || self.process.collect());
        self.handle.render()
    }

    /// The value of one series of the exposition, named as it is written there
    /// (`ws_gateway_closes_total{code="1000"}`), if present.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.render().lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
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

    /// A counter without labels.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        self.recorder
            .describe_counter(name.into(), None, help.into());
        Counter(
            self.recorder
                .register_counter(&Key::from_static_name(name), &METADATA),
        )
    }

    /// A gauge without labels.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        self.recorder.describe_gauge(name.into(), None, help.into());
        Gauge(
            self.recorder
                .register_gauge(&Key::from_static_name(name), &METADATA),
        )
    }

    /// A histogram without labels (its buckets are the ones given to [`Registry::new`]).
    pub fn histogram(&self, name: &'static str, help: &'static str) -> Histogram {
        self.recorder
            .describe_histogram(name.into(), None, help.into());
        Histogram(
            self.recorder
                .register_histogram(&Key::from_static_name(name), &METADATA),
        )
    }

    /// Counters by the values of `labels`.
    pub fn counter_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        self.recorder
            .describe_counter(name.into(), None, help.into());
        Family::with(&self.recorder, name, labels, |r, key| {
            Counter(r.register_counter(key, &METADATA))
        })
    }

    /// Gauges by the values of `labels`.
    pub fn gauge_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> GaugeVec {
        self.recorder.describe_gauge(name.into(), None, help.into());
        Family::with(&self.recorder, name, labels, |r, key| {
            Gauge(r.register_gauge(key, &METADATA))
        })
    }

    /// Histograms by the values of `labels`.
    pub fn histogram_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> HistogramVec {
        self.recorder
            .describe_histogram(name.into(), None, help.into());
        Family::with(&self.recorder, name, labels, |r, key| {
            Histogram(r.register_histogram(key, &METADATA))
        })
    }

    /// `name` = 1, labelled with the build's version and, when known, its revision.
    fn build_info(&self, name: String, build: Build) {
        self.recorder.describe_gauge(
            name.clone().into(),
            None,
            "Always 1; the labels name the running build (version, and revision when known)".into(),
        );
        let mut labels = vec![Label::from_static_parts("version", build.version)];
        if let Some(revision) = build.revision.filter(|r| !r.is_empty()) {
            labels.push(Label::from_static_parts("revision", revision));
        }
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
            .set(1.0);
    }
}

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

/// A histogram series (its buckets are set on the registry, by metric name).
#[derive(Clone)]
pub struct Histogram(::metrics::Histogram);

impl Histogram {
    pub fn observe(&self, value: f64) {
        self.0.record(value);
    }
}

/// One metric name with labels: a handle per combination of label values, registered on first
/// use and then found again without allocating. Clones share the handles.
#[derive(Clone)]
pub struct Family<H> {
    inner: Arc<FamilyInner<H>>,
}

struct FamilyInner<H> {
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
/// Histograms by label values.
pub type HistogramVec = Family<Histogram>;

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
    ///
    /// # Panics
    /// When `values` does not have one value per label name (a programming error).
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

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: Build = Build {
        version: "1.2.3",
        revision: Some("abc123"),
    };

    #[test]
    fn two_registries_keep_their_own_counts() {
        let a = Registry::new("svc", BUILD, &[]);
        let b = Registry::new("svc", BUILD, &[]);
        let (a_open, _b_open) = (a.gauge("svc_open", "Open"), b.gauge("svc_open", "Open"));
        let closes = a.counter_vec("svc_closes_total", "Closes", &["code"]);
        b.counter_vec("svc_closes_total", "Closes", &["code"]);
        a_open.inc();
        closes.with_label_values(&["1000"]).inc();
        closes.with_label_values(&["1000"]).inc();
        assert_eq!(a.value("svc_open"), Some(1.0));
        assert_eq!(a.value(r#"svc_closes_total{code="1000"}"#), Some(2.0));
        assert_eq!(b.value("svc_open"), Some(0.0));
        assert_eq!(b.value(r#"svc_closes_total{code="1000"}"#), None);
    }

    #[test]
    fn histograms_use_the_buckets_given_for_their_name() {
        let bounds = [0.001, 0.01, 0.1];
        let registry = Registry::new("svc", BUILD, &[("svc_lag_seconds", &bounds)]);
        let lag = registry.histogram_vec("svc_lag_seconds", "Lag", &["kind"]);
        lag.with_label_values(&["a"]).observe(0.003);
        let text = registry.render();
        assert!(text.contains("# TYPE svc_lag_seconds histogram"), "{text}");
        for bound in bounds {
            let below = if bound < 0.003 { 0 } else { 1 };
            let line = format!("svc_lag_seconds_bucket{{kind=\"a\",le=\"{bound}\"}} {below}\n");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn the_exposition_has_the_process_metrics_and_the_build() {
        let text = Registry::new("svc", BUILD, &[]).render();
        for name in PROCESS_METRICS {
            assert!(
                text.contains(&format!("\n{name} ")) || text.starts_with(&format!("{name} ")),
                "{name} missing from\n{text}"
            );
        }
        assert!(
            text.contains(r#"svc_build_info{version="1.2.3",revision="abc123"} 1"#),
            "{text}"
        );
    }
}
