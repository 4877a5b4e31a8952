//! `serin load`: an open-loop load generator. Requests are sent at a fixed rate whatever the
//! server does, and each latency is measured from the request's *intended* send time, so a stalled
//! server shows up as latency instead of quietly lowering the rate (no coordinated omission).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::DemoError;
use crate::sample_app::VERSION_HEADER;

/// What to send and how fast.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Target URL (`http://` only; loopback in this project).
    pub url: Uri,
    /// Requests per second, fixed.
    pub rate: f64,
    /// How long to send for.
    pub duration: Duration,
    /// Overrides the `Host` header (to address an authority through a proxy).
    pub host: Option<String>,
    /// Per-request deadline; a request past it counts as an error.
    pub timeout: Duration,
    /// Requests allowed in flight at once; a request due while the limit is reached is counted
    /// as an error (`overloaded`) rather than delayed, to keep the loop open.
    pub max_in_flight: usize,
}

impl LoadConfig {
    /// A config with the defaults for timeout and in-flight limit.
    pub fn new(url: Uri, rate: f64, duration: Duration) -> Self {
        Self {
            url,
            rate,
            duration,
            host: None,
            timeout: Duration::from_secs(10),
            max_in_flight: 4096,
        }
    }

    /// Checks the flags a user can get wrong.
    pub fn validate(&self) -> Result<(), DemoError> {
        if self.url.scheme_str() != Some("http") || self.url.host().is_none() {
            return Err(DemoError::invalid(
                "URL",
                format!("`{}` is not an http:// URL with a host", self.url),
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 100_000.0) {
            return Err(DemoError::invalid(
                "--rate",
                format!(
                    "{} is not a rate; use requests per second above 0 and at most 100000",
                    self.rate
                ),
            ));
        }
        if self.duration.is_zero() {
            return Err(DemoError::invalid("--duration", "must be longer than 0s"));
        }
        if self.timeout.is_zero() {
            return Err(DemoError::invalid("--timeout", "must be longer than 0s"));
        }
        if self.max_in_flight == 0 {
            return Err(DemoError::invalid("--max-in-flight", "must be at least 1"));
        }
        if let Some(host) = &self.host {
            http::HeaderValue::from_str(host).map_err(|_| {
                DemoError::invalid(
                    "--host",
                    format!("`{host}` is not a valid Host header value"),
                )
            })?;
        }
        Ok(())
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status.
    Status(u16),
    /// No response: `connect`, `timeout`, `closed`, `overloaded` or `other`.
    Error(&'static str),
}

impl Outcome {
    /// Failed as the proxy classifies it: no response, or a 5xx.
    pub fn is_failure(&self) -> bool {
        match self {
            Outcome::Status(s) => *s >= 500,
            Outcome::Error(_) => true,
        }
    }
}

/// One request's record.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was due, from the start of the run.
    pub due: Duration,
    /// From its due time to the end of its response body (or its error).
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// The `x-serin-version` response header, when the server sent one.
    pub version: Option<String>,
}

/// The summary of a run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests sent (due), including those that failed.
    pub requests: u64,
    /// Requests that failed (5xx or no response).
    pub errors: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a response, by kind.
    pub transport_errors: BTreeMap<&'static str, u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies in microseconds, sorted.
    latencies_us: Vec<u64>,
}

impl LoadReport {
    /// The latency at quantile `q` (0..=1) by nearest rank, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize)
            .clamp(1, self.latencies_us.len());
        self.latencies_us[rank - 1] as f64 / 1000.0
    }

    /// Error share in percent.
    pub fn error_percent(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }

    /// The one-line summary `serin load` prints.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        format!(
            "requests={} errors={} error_rate={:.2}% rps={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.requests,
            self.errors,
            self.error_percent(),
            self.requests as f64 / secs,
            self.quantile_ms(0.50),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0),
        )
    }

    /// Status and error counts, e.g. `200=590 500=10 timeout=1`.
    pub fn breakdown(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        parts.extend(
            self.transport_errors
                .iter()
                .map(|(k, n)| format!("{k}={n}")),
        );
        parts.join(" ")
    }

    fn record(&mut self, sample: &Sample) {
        self.requests += 1;
        if sample.outcome.is_failure() {
            self.errors += 1;
        }
        match sample.outcome {
            Outcome::Status(s) => *self.statuses.entry(s).or_default() += 1,
            Outcome::Error(kind) => *self.transport_errors.entry(kind).or_default() += 1,
        }
        self.latencies_us.push(sample.latency.as_micros() as u64);
    }
}

/// Runs the load until its duration is over or `stop` resolves, calling `on_sample` for each
/// finished request (in completion order), and returns the summary.
pub async fn run(
    config: LoadConfig,
    stop: impl Future<Output = ()>,
    mut on_sample: impl FnMut(&Sample),
) -> Result<LoadReport, DemoError> {
    config.validate()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.timeout));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let total = (config.duration.as_secs_f64() * config.rate).floor() as u64;
    let start = Instant::now();

    let scheduler = {
        let config = config.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let due = period.mul_f64(i as f64);
                tokio::time::sleep_until(start + due).await;
                if in_flight.load(Ordering::Relaxed) >= config.max_in_flight {
                    let _ = tx.send(Sample {
                        due,
                        latency: Duration::ZERO,
                        outcome: Outcome::Error("overloaded"),
                        version: None,
                    });
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (client, tx, in_flight, config) = (
                    client.clone(),
                    tx.clone(),
                    in_flight.clone(),
                    config.clone(),
                );
                tokio::spawn(async move {
                    let (outcome, version) = send_one(&client, &config).await;
                    let latency = Instant::now().saturating_duration_since(start + due);
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = tx.send(Sample {
                        due,
                        latency,
                        outcome,
                        version,
                    });
                });
            }
        })
    };

    let mut report = LoadReport::default();
    tokio::pin!(stop);
    let mut stopped = false;
    loop {
        tokio::select! {
            () = &mut stop, if !stopped => {
                // Aborting the scheduler stops new requests; in-flight ones still report back
                // because each holds its own sender, and the channel closes after the last.
                stopped = true;
                scheduler.abort();
            }
            sample = rx.recv() => match sample {
                Some(sample) => {
                    on_sample(&sample);
                    report.record(&sample);
                }
                None => break,
            },
        }
    }
    report.elapsed = start.elapsed();
    report.latencies_us.sort_unstable();
    Ok(report)
}

async fn send_one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    config: &LoadConfig,
) -> (Outcome, Option<String>) {
    let mut builder = Request::get(config.url.clone());
    if let Some(host) = &config.host {
        builder = builder.header(http::header::HOST, host.as_str());
    }
    let req = match builder.body(Empty::new()) {
        Ok(req) => req,
        Err(_) => return (Outcome::Error("other"), None),
    };
    let attempt = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| if e.is_connect() { "connect" } else { "closed" })?;
        let status = resp.status().as_u16();
        let version = resp
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read the whole body: a response cut short is a failure the user would see.
        resp.into_body().collect().await.map_err(|_| "closed")?;
        Ok::<_, &'static str>((status, version))
    };
    match tokio::time::timeout(config.timeout, attempt).await {
        Ok(Ok((status, version))) => (Outcome::Status(status), version),
        Ok(Err(kind)) => (Outcome::Error(kind), None),
        Err(_) => (Outcome::Error("timeout"), None),
    }
}
