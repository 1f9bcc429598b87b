//! Reading a Prometheus histogram off a service's `/metrics`, to split a latency the load tool
//! measures into the part a service measured itself. The fan-out uses the gateway's
//! `ws_gateway_event_lag_seconds` (an event's `occurred_at` to its receipt from NATS): taken
//! before publishing and after the grace period, the difference is the NATS leg of this run's
//! deliveries, and the end-to-end latency minus that leg is the API before the publish plus the
//! gateway's queueing and the socket.

use anyhow::{Context, Result, anyhow};

/// The gateway's NATS-leg histogram.
pub const EVENT_LAG: &str = "ws_gateway_event_lag_seconds";

/// Cumulative bucket counts of one histogram: `(upper bound in seconds, count ≤ bound)`, sorted
/// by bound, `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// The buckets of histogram `name` in a text exposition (label sets other than `le` summed).
    pub fn parse(text: &str, name: &str) -> Self {
        let prefix = format!("{name}_bucket{{");
        let mut buckets = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Some(le) = labels
                .trim_end_matches('}')
                .split(',')
                .find_map(|label| label.strip_prefix("le=\""))
                .map(|v| v.trim_end_matches('"'))
            else {
                continue;
            };
            let bound = match le {
                "+Inf" => f64::INFINITY,
                other => match other.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                },
            };
            let Ok(count) = value.parse::<f64>() else {
                continue;
            };
            buckets.add_count(bound, count);
        }
        buckets.sort();
        buckets
    }

    /// Observations in total (the `+Inf` bucket).
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |&(_, c)| c)
    }

    /// What was observed since `before` (same buckets, counts subtracted).
    pub fn since(&self, before: &Buckets) -> Self {
        Self(
            self.0
                .iter()
                .map(|&(bound, count)| {
                    let earlier = before
                        .0
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0.0, |&(_, c)| c);
                    (bound, (count - earlier).max(0.0))
                })
                .collect(),
        )
    }

    /// Adds another process's buckets (same bounds expected; others are added as they come).
    pub fn add(&mut self, other: &Buckets) {
        for &(bound, count) in &other.0 {
            self.add_count(bound, count);
        }
        self.sort();
    }

    /// Adds `count` to the bucket bounded by `bound` (a new one if there is none; unsorted).
    fn add_count(&mut self, bound: f64, count: f64) {
        match self.0.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, c)) => *c += count,
            None => self.0.push((bound, count)),
        }
    }

    fn sort(&mut self) {
        self.0.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The upper bound (seconds) of the bucket holding quantile `q`: the value is at most this,
    /// and above the previous bound. `None` without observations; infinite past the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = (q * total).ceil().max(1.0);
        self.0
            .iter()
            .find(|&&(_, count)| count >= rank)
            .map(|&(bound, _)| bound)
    }
}

/// The `/metrics` URL of the service behind a `ws://host:port/...` or `http://host:port/...`
/// URL.
pub fn metrics_url(service_url: &str) -> Result<String> {
    let (scheme, rest) = service_url
        .split_once("://")
        .ok_or_else(|| anyhow!("not a URL: {service_url}"))?;
    let scheme = match scheme {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => return Err(anyhow!("unknown scheme {other} in {service_url}")),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    Ok(format!("{scheme}://{authority}/metrics"))
}

/// Fetches histogram `name` from the `/metrics` of the service behind `service_url`.
pub async fn fetch(http: &reqwest::Client, service_url: &str, name: &str) -> Result<Buckets> {
    let url = metrics_url(service_url)?;
    let text = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("GET {url}"))?;
    Ok(Buckets::parse(&text, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP ws_gateway_event_lag_seconds From an event's occurred_at to its receipt from NATS
# TYPE ws_gateway_event_lag_seconds histogram
ws_gateway_event_lag_seconds_bucket{le="0.001"} 50
ws_gateway_event_lag_seconds_bucket{le="0.01"} 90
ws_gateway_event_lag_seconds_bucket{le="0.1"} 99
ws_gateway_event_lag_seconds_bucket{le="+Inf"} 100
ws_gateway_event_lag_seconds_sum 1.5
ws_gateway_event_lag_seconds_count 100
ws_gateway_events_out_total 7
"#;

    #[test]
    fn buckets_are_read_in_bound_order_with_inf_last() {
        let b = Buckets::parse(TEXT, EVENT_LAG);
        assert_eq!(
            b.0,
            vec![
                (0.001, 50.0),
                (0.01, 90.0),
                (0.1, 99.0),
                (f64::INFINITY, 100.0)
            ]
        );
        assert_eq!(b.count(), 100.0);
        assert_eq!(Buckets::parse(TEXT, "other_seconds"), Buckets::default());
    }

    #[test]
    fn label_sets_other_than_le_are_summed() {
        let text = "h_bucket{kind=\"a\",le=\"1\"} 2\nh_bucket{kind=\"b\",le=\"1\"} 3\n\
                    h_bucket{kind=\"a\",le=\"+Inf\"} 4\nh_bucket{kind=\"b\",le=\"+Inf\"} 3\n";
        assert_eq!(
            Buckets::parse(text, "h").0,
            vec![(1.0, 5.0), (f64::INFINITY, 7.0)]
        );
    }

    #[test]
    fn a_quantile_is_the_bound_of_the_bucket_that_reaches_its_rank() {
        let b = Buckets::parse(TEXT, EVENT_LAG);
        assert_eq!(b.quantile_bound(0.5), Some(0.001));
        assert_eq!(b.quantile_bound(0.51), Some(0.01));
        assert_eq!(b.quantile_bound(0.9), Some(0.01));
        assert_eq!(b.quantile_bound(0.99), Some(0.1));
        assert_eq!(b.quantile_bound(1.0), Some(f64::INFINITY));
        assert_eq!(Buckets::default().quantile_bound(0.5), None);
    }

    #[test]
    fn a_run_is_what_was_added_since_the_first_reading_summed_over_gateways() {
        let before = Buckets(vec![(0.001, 10.0), (f64::INFINITY, 20.0)]);
        let after = Buckets(vec![(0.001, 15.0), (f64::INFINITY, 40.0)]);
        let mut run = after.since(&before);
        assert_eq!(run.0, vec![(0.001, 5.0), (f64::INFINITY, 20.0)]);
        run.add(&Buckets(vec![(0.001, 1.0), (f64::INFINITY, 1.0)]));
        assert_eq!(run.0, vec![(0.001, 6.0), (f64::INFINITY, 21.0)]);
        // A gateway restarted in between (counters went down) adds nothing negative.
        assert_eq!(before.since(&after).count(), 0.0);
    }

    #[test]
    fn the_metrics_url_is_on_the_same_host_and_port() {
        assert_eq!(
            metrics_url("ws://127.0.0.1:8085/ws").unwrap(),
            "http://127.0.0.1:8085/metrics"
        );
        assert_eq!(
            metrics_url("wss://gw.example:443/ws").unwrap(),
            "https://gw.example:443/metrics"
        );
        assert_eq!(
            metrics_url("http://127.0.0.1:8082").unwrap(),
            "http://127.0.0.1:8082/metrics"
        );
        assert!(metrics_url("127.0.0.1:8085").is_err());
        assert!(metrics_url("ftp://x/ws").is_err());
    }
}
