//! The proxy-scrape provider: no Prometheus, just `serin-proxy`'s `/metrics`.
//!
//! Each scrape is kept as a snapshot of the counters per backend (`dst_service`). A window's
//! traffic is the difference between the newest snapshot and the newest one taken at least a
//! window earlier (or the oldest kept, when the provider is younger than the window). Counter
//! resets (a restarted proxy) are handled per endpoint as Prometheus' `increase()` does: a
//! counter that went down is taken to have restarted from zero. This is the embedded default
//! for one machine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tracing::debug;

use super::{ArmTraffic, BoxFuture, MetricsProvider};
use crate::AnalysisError;
use crate::check::{BuiltinMetric, Observed};
use crate::histogram::Histogram;
use crate::promtext::{Sample, parse, parse_float};
use crate::target::{ArmRole, Target};

const KIND: &str = "proxy-scrape";

/// Settings of the proxy-scrape provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyScrapeConfig {
    /// Full URLs of the proxies' metrics pages, e.g. `http://127.0.0.1:4191/metrics`.
    pub endpoints: Vec<String>,
    /// Only count series with this `direction` label (e.g. `outbound`); `None` counts all.
    pub direction: Option<String>,
    /// Per-scrape timeout (default 5s).
    pub timeout: Duration,
    /// How long snapshots are kept (default 6h): the longest window that can be asked for.
    pub retention: Duration,
    /// A snapshot younger than this is reused instead of scraping again (default 1s), so the
    /// several questions of one tick see the same numbers.
    pub reuse_within: Duration,
    /// Kept snapshots are at least this far apart (default 5s; the newest is always kept), so
    /// memory stays bounded by `retention / min_spacing` snapshots however often it is asked.
    pub min_spacing: Duration,
}

impl ProxyScrapeConfig {
    /// Defaults for everything but the endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        ProxyScrapeConfig {
            endpoints,
            direction: None,
            timeout: Duration::from_secs(5),
            retention: Duration::from_secs(6 * 3600),
            reuse_within: Duration::from_secs(1),
            min_spacing: Duration::from_secs(5),
        }
    }
}

/// Counters of one backend on one endpoint.
#[derive(Debug, Clone, PartialEq)]
struct Counters {
    responses: f64,
    failures: f64,
    latency: Option<Histogram>,
}

type EndpointCounters = BTreeMap<String, Counters>;

#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    endpoints: Vec<EndpointCounters>,
}

/// Reads the backends' counters from one metrics page.
fn counters_from(samples: &[Sample], direction: Option<&str>) -> EndpointCounters {
    let mut out: EndpointCounters = BTreeMap::new();
    let mut buckets: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for s in samples {
        let Some(backend) = s.label("dst_service") else {
            continue;
        };
        if let Some(d) = direction
            && s.label("direction") != Some(d)
        {
            continue;
        }
        if !s.value.is_finite() {
            continue;
        }
        match s.name.as_str() {
            "response_total" => {
                let c = out.entry(backend.to_string()).or_insert(Counters {
                    responses: 0.0,
                    failures: 0.0,
                    latency: None,
                });
                c.responses += s.value;
                if s.label("classification") == Some("failure") {
                    c.failures += s.value;
                }
            }
            "response_latency_ms_bucket" => {
                if let Some(le) = s.label("le").and_then(parse_float) {
                    // Sum series that differ only in other labels (status code, authority...).
                    let e = buckets
                        .entry(backend.to_string())
                        .or_default()
                        .entry(le.to_bits())
                        .or_insert((le, 0.0));
                    e.1 += s.value;
                }
            }
            _ => {}
        }
    }
    for (backend, by_le) in buckets {
        let pairs: Vec<(f64, f64)> = by_le.into_values().collect();
        let c = out.entry(backend).or_insert(Counters {
            responses: 0.0,
            failures: 0.0,
            latency: None,
        });
        c.latency = Histogram::from_cumulative(&pairs);
    }
    out
}

/// `now - then` for one backend on one endpoint, treating a decrease as a restart.
fn delta(now: &Counters, then: Option<&Counters>) -> Counters {
    let Some(then) = then else {
        return now.clone();
    };
    if now.responses < then.responses || now.failures < then.failures {
        return now.clone();
    }
    let latency = match (&now.latency, &then.latency) {
        (Some(n), Some(t)) if n.total() >= t.total() => n.delta_since(t).or(Some(n.clone())),
        (Some(n), _) => Some(n.clone()),
        (None, _) => None,
    };
    Counters {
        responses: now.responses - then.responses,
        failures: now.failures - then.failures,
        latency,
    }
}

/// Snapshots kept by the provider, and the window arithmetic. Pure: time comes in.
#[derive(Debug, Default)]
struct History {
    snapshots: VecDeque<Snapshot>,
}

impl History {
    fn push(&mut self, snapshot: Snapshot, retention: Duration, min_spacing: Duration) {
        let now = snapshot.at;
        // The newest snapshot is provisional: replace it when it is too close to the one
        // before, so kept snapshots stay `min_spacing` apart.
        let n = self.snapshots.len();
        if n >= 2
            && self.snapshots[n - 1]
                .at
                .duration_since(self.snapshots[n - 2].at)
                < min_spacing
        {
            self.snapshots.pop_back();
        }
        self.snapshots.push_back(snapshot);
        // Keep the newest snapshot older than the retention cut-off as the base of the longest
        // window; drop the ones before it.
        if let Some(cutoff) = now.checked_sub(retention) {
            while self.snapshots.len() > 2 && self.snapshots[1].at <= cutoff {
                self.snapshots.pop_front();
            }
        }
    }

    fn latest(&self) -> Option<&Snapshot> {
        self.snapshots.back()
    }

    /// Traffic to `backend` over the `window` ending at the newest snapshot: from the newest
    /// snapshot taken at least a window earlier (the oldest, when there is none).
    fn traffic(&self, backend: &str, window: Duration) -> Option<ArmTraffic> {
        let newest = self.snapshots.back()?;
        let base = match newest.at.checked_sub(window) {
            Some(start) => self
                .snapshots
                .iter()
                .rev()
                .find(|s| s.at <= start)
                .or_else(|| self.snapshots.front()),
            None => self.snapshots.front(),
        }?;
        Some(self.between(backend, base, newest))
    }

    /// Traffic to `backend` since `since`: from the snapshot nearest to `since`, so neither an
    /// old snapshot (traffic from before the analysis) nor a missing one (a gap) distorts it;
    /// at worst the readings start a little late.
    fn traffic_since(&self, backend: &str, since: Instant) -> Option<ArmTraffic> {
        let newest = self.snapshots.back()?;
        let distance = |s: &Snapshot| {
            if s.at >= since {
                s.at - since
            } else {
                since - s.at
            }
        };
        let base = self.snapshots.iter().min_by_key(|s| distance(s))?;
        Some(self.between(backend, base, newest))
    }

    fn between(&self, backend: &str, base: &Snapshot, newest: &Snapshot) -> ArmTraffic {
        let mut total = ArmTraffic::default();
        for (i, counters) in newest.endpoints.iter().enumerate() {
            let Some(now) = counters.get(backend) else {
                continue;
            };
            let then = base.endpoints.get(i).and_then(|e| e.get(backend));
            let d = if std::ptr::eq(base, newest) {
                Counters {
                    responses: 0.0,
                    failures: 0.0,
                    latency: now.latency.as_ref().map(|h| Histogram::new(h.bounds())),
                }
            } else {
                delta(now, then)
            };
            total.requests += d.responses;
            total.failures += d.failures;
            if let Some(h) = d.latency {
                match &mut total.latency {
                    Some(acc) => {
                        if !acc.add(&h) {
                            debug!(
                                backend,
                                "endpoints disagree on latency buckets; keeping the first"
                            );
                        }
                    }
                    None => total.latency = Some(h),
                }
            }
        }
        total
    }
}

/// A [`MetricsProvider`] reading `serin-proxy` `/metrics` pages directly.
#[derive(Debug)]
pub struct ProxyScrapeProvider {
    client: reqwest::Client,
    config: ProxyScrapeConfig,
    history: Mutex<History>,
}

impl ProxyScrapeProvider {
    /// Validates the configuration (plain `http://` URLs only: the proxies' admin ports are
    /// local) and builds the client, without scraping.
    pub fn new(config: ProxyScrapeConfig) -> Result<Self, AnalysisError> {
        if config.endpoints.is_empty() {
            return Err(AnalysisError::invalid(
                "provider.endpoints",
                "is empty",
                "one or more proxy metrics URLs such as http://127.0.0.1:4191/metrics",
            ));
        }
        for (i, e) in config.endpoints.iter().enumerate() {
            let ok = e
                .strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
            if !ok {
                return Err(AnalysisError::invalid(
                    format!("provider.endpoints[{i}]"),
                    format!("`{e}` is not a plain http URL"),
                    "a URL such as http://127.0.0.1:4191/metrics",
                ));
            }
        }
        if config.timeout.is_zero() {
            return Err(AnalysisError::invalid(
                "provider.timeout",
                "is zero",
                "a positive duration such as 5s",
            ));
        }
        let client = super::http_client_builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| AnalysisError::Unavailable {
                provider: KIND,
                address: config.endpoints.join(","),
                message: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(ProxyScrapeProvider {
            client,
            config,
            history: Mutex::new(History::default()),
        })
    }

    /// Builds the provider and scrapes once: the availability probe, and the baseline the
    /// first window is measured from.
    pub async fn connect(config: ProxyScrapeConfig) -> Result<Self, AnalysisError> {
        let provider = Self::new(config)?;
        provider.scrape().await?;
        Ok(provider)
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        // A poisoned lock only means another task panicked mid-push; the data is still valid.
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(&self, url: &str) -> Result<String, AnalysisError> {
        let unavailable =
            |message: String, source: Option<reqwest::Error>| AnalysisError::Unavailable {
                provider: KIND,
                address: url.to_string(),
                message,
                source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            };
        let response = self.client.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                AnalysisError::Timeout {
                    provider: KIND,
                    address: url.to_string(),
                    timeout: self.config.timeout,
                }
            } else {
                unavailable("request failed".into(), Some(e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!("HTTP {status}"), None));
        }
        response
            .text()
            .await
            .map_err(|e| unavailable("reading the body failed".into(), Some(e)))
    }

    /// Scrapes every endpoint now and records a snapshot.
    pub async fn scrape(&self) -> Result<(), AnalysisError> {
        let mut endpoints = Vec::with_capacity(self.config.endpoints.len());
        for url in &self.config.endpoints {
            let body = self.fetch(url).await?;
            let samples = parse(&body)?;
            endpoints.push(counters_from(&samples, self.config.direction.as_deref()));
        }
        let snapshot = Snapshot {
            at: Instant::now(),
            endpoints,
        };
        self.history()
            .push(snapshot, self.config.retention, self.config.min_spacing);
        Ok(())
    }

    async fn fresh(&self) -> Result<(), AnalysisError> {
        let recent = self
            .history()
            .latest()
            .is_some_and(|s| s.at.elapsed() < self.config.reuse_within);
        if recent { Ok(()) } else { self.scrape().await }
    }

    /// Traffic to a backend (`dst_service`) since `since`, scraping first when needed.
    pub async fn backend_traffic_since(
        &self,
        backend: &str,
        since: SystemTime,
    ) -> Result<ArmTraffic, AnalysisError> {
        self.fresh().await?;
        let ago = SystemTime::now().duration_since(since).unwrap_or_default();
        let since = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        Ok(self
            .history()
            .traffic_since(backend, since)
            .unwrap_or_default())
    }

    /// Traffic to a backend (`dst_service`) over `window`, scraping first when needed.
    pub async fn backend_traffic(
        &self,
        backend: &str,
        window: Duration,
    ) -> Result<ArmTraffic, AnalysisError> {
        self.fresh().await?;
        Ok(self.history().traffic(backend, window).unwrap_or_default())
    }
}

impl MetricsProvider for ProxyScrapeProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), AnalysisError>> {
        Box::pin(self.scrape())
    }

    fn builtin<'a>(
        &'a self,
        metric: BuiltinMetric,
        target: &'a Target,
        window: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        Box::pin(async move {
            let t = self.backend_traffic(&target.canary.backend, window).await?;
            Ok(Observed {
                value: t.builtin(metric),
                sample_size: Some(t.requests.max(0.0).round() as u64),
                query: Some(format!(
                    "{} of dst_service=\"{}\" over {}",
                    metric.name(),
                    target.canary.backend,
                    crate::duration::format_duration(window)
                )),
                count_unmatched: None,
            })
        })
    }

    fn query<'a>(&'a self, _query: &'a str) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        Box::pin(async move {
            Err(AnalysisError::Unsupported {
                provider: KIND,
                what: "MetricTemplate queries (configure a Prometheus provider for them)".into(),
            })
        })
    }

    fn arm_traffic<'a>(
        &'a self,
        target: &'a Target,
        arm: ArmRole,
        window: Duration,
    ) -> BoxFuture<'a, Result<ArmTraffic, AnalysisError>> {
        Box::pin(async move { self.backend_traffic(&target.arm(arm).backend, window).await })
    }

    fn arm_traffic_since<'a>(
        &'a self,
        target: &'a Target,
        arm: ArmRole,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<ArmTraffic, AnalysisError>> {
        Box::pin(async move {
            self.backend_traffic_since(&target.arm(arm).backend, since)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(canary_ok: u64, canary_fail: u64, fast: u64, slow: u64) -> EndpointCounters {
        let text = format!(
            r#"# TYPE response_total counter
response_total{{direction="outbound",dst_service="web-canary",classification="success",status_code="200"}} {canary_ok}
response_total{{direction="outbound",dst_service="web-canary",classification="failure",status_code="503"}} {canary_fail}
response_total{{direction="inbound",classification="success",status_code="200"}} 999
response_latency_ms_bucket{{direction="outbound",dst_service="web-canary",status_code="200",le="10"}} {fast}
response_latency_ms_bucket{{direction="outbound",dst_service="web-canary",status_code="200",le="100"}} {fs}
response_latency_ms_bucket{{direction="outbound",dst_service="web-canary",status_code="200",le="+Inf"}} {fs}
"#,
            fs = fast + slow
        );
        counters_from(&parse(&text).unwrap(), Some("outbound"))
    }

    fn snap(at: Instant, pages: Vec<EndpointCounters>) -> Snapshot {
        Snapshot {
            at,
            endpoints: pages,
        }
    }

    #[test]
    fn reads_backend_counters_from_a_page() {
        let c = page(90, 10, 50, 50);
        let web = &c["web-canary"];
        assert_eq!(web.responses, 100.0);
        assert_eq!(web.failures, 10.0);
        assert_eq!(web.latency.as_ref().unwrap().total(), 100.0);
        assert_eq!(c.len(), 1, "series without dst_service are ignored");
    }

    #[test]
    fn window_is_the_delta_from_the_snapshot_a_window_ago() {
        let t0 = Instant::now();
        let mut h = History::default();
        let ret = Duration::from_secs(3600);
        h.push(
            snap(t0, vec![page(100, 0, 100, 0)]),
            ret,
            Duration::from_secs(1),
        );
        // Only one snapshot: nothing happened yet.
        assert_eq!(
            h.traffic("web-canary", Duration::from_secs(60))
                .unwrap()
                .requests,
            0.0
        );
        h.push(
            snap(t0 + Duration::from_secs(30), vec![page(190, 10, 150, 50)]),
            ret,
            Duration::from_secs(1),
        );
        h.push(
            snap(t0 + Duration::from_secs(60), vec![page(280, 20, 200, 100)]),
            ret,
            Duration::from_secs(1),
        );
        let w = h.traffic("web-canary", Duration::from_secs(30)).unwrap();
        assert_eq!((w.requests, w.failures), (100.0, 10.0));
        assert_eq!(w.latency.as_ref().unwrap().total(), 100.0);
        assert_eq!(w.success_rate_pct(), Some(90.0));
        let w = h.traffic("web-canary", Duration::from_secs(60)).unwrap();
        assert_eq!((w.requests, w.failures), (200.0, 20.0));
        // Longer than the history: from the oldest snapshot.
        let w = h.traffic("web-canary", Duration::from_secs(600)).unwrap();
        assert_eq!(w.requests, 200.0);
        // An unknown backend has no traffic.
        assert_eq!(
            h.traffic("nope", Duration::from_secs(60)).unwrap().requests,
            0.0
        );
    }

    #[test]
    fn since_measures_from_the_snapshot_nearest_to_the_start() {
        let t0 = Instant::now();
        let mut h = History::default();
        let ret = Duration::from_secs(3 * 3600);
        // An old snapshot from an earlier analysis, then the new analysis starts at t0 + 2h.
        h.push(
            snap(t0, vec![page(0, 0, 0, 0)]),
            ret,
            Duration::from_secs(1),
        );
        h.push(
            snap(
                t0 + Duration::from_secs(7200) + Duration::from_millis(300),
                vec![page(5000, 0, 5000, 0)],
            ),
            ret,
            Duration::from_secs(1),
        );
        h.push(
            snap(
                t0 + Duration::from_secs(7260),
                vec![page(5090, 10, 5100, 0)],
            ),
            ret,
            Duration::from_secs(1),
        );
        let start = t0 + Duration::from_secs(7200);
        let w = h.traffic_since("web-canary", start).unwrap();
        assert_eq!((w.requests, w.failures), (100.0, 10.0));
        // With no snapshot near the start, the readings start late rather than early.
        let mut h = History::default();
        h.push(
            snap(t0, vec![page(0, 0, 0, 0)]),
            ret,
            Duration::from_secs(1),
        );
        h.push(
            snap(
                t0 + Duration::from_secs(7260),
                vec![page(5090, 10, 5100, 0)],
            ),
            ret,
            Duration::from_secs(1),
        );
        let w = h.traffic_since("web-canary", start).unwrap();
        assert_eq!(w.requests, 0.0);
    }

    #[test]
    fn counter_reset_counts_from_zero_and_endpoints_add_up() {
        let t0 = Instant::now();
        let mut h = History::default();
        let ret = Duration::from_secs(3600);
        h.push(
            snap(t0, vec![page(1000, 0, 1000, 0), page(10, 0, 10, 0)]),
            ret,
            Duration::from_secs(1),
        );
        // Endpoint 0 restarted and has served 40 since; endpoint 1 served 60 more.
        h.push(
            snap(
                t0 + Duration::from_secs(60),
                vec![page(38, 2, 40, 0), page(70, 0, 70, 0)],
            ),
            ret,
            Duration::from_secs(1),
        );
        let w = h.traffic("web-canary", Duration::from_secs(60)).unwrap();
        assert_eq!((w.requests, w.failures), (100.0, 2.0));
        assert_eq!(w.latency.unwrap().total(), 100.0);
    }

    #[test]
    fn retention_keeps_a_base_for_the_longest_window() {
        let t0 = Instant::now();
        let mut h = History::default();
        let ret = Duration::from_secs(100);
        for i in 0..20u64 {
            h.push(
                snap(
                    t0 + Duration::from_secs(i * 10),
                    vec![page(i * 10, 0, i * 10, 0)],
                ),
                ret,
                Duration::from_secs(1),
            );
        }
        assert!(h.snapshots.len() <= 12, "{}", h.snapshots.len());
        let w = h.traffic("web-canary", Duration::from_secs(100)).unwrap();
        assert_eq!(w.requests, 100.0);
    }

    #[test]
    fn snapshots_closer_than_the_spacing_replace_the_newest() {
        let t0 = Instant::now();
        let mut h = History::default();
        let ret = Duration::from_secs(3600);
        let spacing = Duration::from_secs(5);
        for i in 0..100u64 {
            h.push(
                snap(t0 + Duration::from_millis(i * 100), vec![page(i, 0, i, 0)]),
                ret,
                spacing,
            );
        }
        // 10 s of scrapes every 100 ms: kept snapshots are >= 5 s apart, plus the newest.
        assert!(h.snapshots.len() <= 4, "{}", h.snapshots.len());
        assert_eq!(
            h.latest().unwrap().endpoints[0]["web-canary"].responses,
            99.0
        );
        assert_eq!(
            h.traffic("web-canary", Duration::from_secs(600))
                .unwrap()
                .requests,
            99.0
        );
    }

    #[test]
    fn bad_endpoints_name_the_field() {
        let err = ProxyScrapeProvider::new(ProxyScrapeConfig::new(vec![])).unwrap_err();
        assert!(err.to_string().contains("provider.endpoints"));
        let err = ProxyScrapeProvider::new(ProxyScrapeConfig::new(vec![
            "http://127.0.0.1:1/metrics".into(),
            "127.0.0.1:4191".into(),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("provider.endpoints[1]"), "{err}");
    }
}
