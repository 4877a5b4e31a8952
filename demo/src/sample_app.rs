//! `serin sample-app`: a small podinfo-like HTTP service for demos and tests, with knobs that make
//! a bad release easy to produce (an error rate and added latency).
//!
//! Endpoints: `/` (version info), `/version`, `/status/{code}`, `/delay/{seconds}`, `/healthz`,
//! `/readyz` (plus `POST /readyz/enable` and `/readyz/disable`, as podinfo has). Faults apply to
//! the application endpoints only, never to the probes, so a faulty release still becomes ready
//! and gets judged on its traffic, as a real bad release would. Every response carries
//! `x-serin-version` so a test behind the proxy can tell which revision answered.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

use crate::DemoError;
use crate::server::{self, Body};

/// The response header naming the version that answered.
pub const VERSION_HEADER: &str = "x-serin-version";

/// How the sample app behaves.
#[derive(Debug, Clone)]
pub struct SampleAppConfig {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The version it reports (and puts in `x-serin-version`).
    pub version: String,
    /// The greeting in `/`.
    pub message: String,
    /// Share of application requests answered with a 500, in `0.0..=1.0`.
    pub error_rate: f64,
    /// Latency added to every application request.
    pub latency: Duration,
    /// How long in-flight requests may take to finish after a stop signal.
    pub drain: Duration,
}

impl Default for SampleAppConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            version: "v1".to_string(),
            message: "greetings from serin's sample app".to_string(),
            error_rate: 0.0,
            latency: Duration::ZERO,
            drain: Duration::from_secs(10),
        }
    }
}

/// Parses an error rate written as a fraction (`0.2`) or a percentage (`20%`).
pub fn parse_error_rate(field: &str, text: &str) -> Result<f64, DemoError> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match value {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(DemoError::invalid(
            field,
            format!(
                "`{text}` is not an error rate; write a fraction from 0 to 1 (e.g. 0.2) or a percentage from 0% to 100% (e.g. 20%)"
            ),
        )),
    }
}

impl SampleAppConfig {
    fn validate(&self) -> Result<(), DemoError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(DemoError::invalid(
                "--error-rate",
                format!("{} is outside 0..=1", self.error_rate),
            ));
        }
        if self.version.trim().is_empty() {
            return Err(DemoError::invalid("--version", "must not be empty"));
        }
        Ok(())
    }
}

/// A bound, not yet serving, sample app.
pub struct SampleApp {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
    drain: Duration,
}

struct State {
    version: String,
    message: String,
    error_rate: f64,
    latency: Duration,
    ready: AtomicBool,
    rng: AtomicU64,
    started: SystemTime,
}

impl State {
    /// A splitmix64 step on shared state: cheap, lock-free, and good enough to decide which
    /// requests fail; determinism is not wanted here.
    fn next_unit(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl SampleApp {
    /// Validates the config and binds the listener.
    pub async fn bind(config: SampleAppConfig) -> Result<Self, DemoError> {
        config.validate()?;
        let listener = server::bind(config.addr).await?;
        let addr = server::local_addr(&listener)?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Ok(Self {
            listener,
            addr,
            drain: config.drain,
            state: Arc::new(State {
                version: config.version,
                message: config.message,
                error_rate: config.error_rate,
                latency: config.latency,
                ready: AtomicBool::new(true),
                rng: AtomicU64::new(seed),
                started: SystemTime::now(),
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let state = self.state;
        let handler = move |req: Request<Incoming>| {
            let state = state.clone();
            async move { handle(&state, req).await }
        };
        server::serve(self.listener, handler, shutdown, self.drain).await;
    }
}

/// A sample app serving in the background; dropping it does not stop it, call [`stop`](Self::stop).
pub struct RunningSampleApp {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSampleApp {
    /// Stops accepting and waits for in-flight requests to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Binds and serves in a background task (for tests and in-process use).
pub async fn spawn(config: SampleAppConfig) -> Result<RunningSampleApp, DemoError> {
    let app = SampleApp::bind(config).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Ok(RunningSampleApp { addr, stop, task })
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let mut resp = match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/healthz") => {
            server::json(StatusCode::OK, &json!({"status": "OK"}))
        }
        (Method::GET | Method::HEAD, "/readyz") => {
            if state.ready.load(Ordering::Relaxed) {
                server::json(StatusCode::OK, &json!({"status": "OK"}))
            } else {
                server::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "not ready"}),
                )
            }
        }
        (Method::POST, "/readyz/enable") => {
            state.ready.store(true, Ordering::Relaxed);
            server::json(StatusCode::ACCEPTED, &json!({"ready": true}))
        }
        (Method::POST, "/readyz/disable") => {
            state.ready.store(false, Ordering::Relaxed);
            server::json(StatusCode::ACCEPTED, &json!({"ready": false}))
        }
        (_, p) => application(state, p).await,
    };
    if let Ok(v) = http::HeaderValue::from_str(&state.version) {
        resp.headers_mut().insert(VERSION_HEADER, v);
    }
    resp
}

/// The endpoints a user's traffic hits: these get the configured latency and error rate.
async fn application(state: &State, path: &str) -> Response<Body> {
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let known = path.is_empty()
        || path == "/version"
        || path.starts_with("/status/")
        || path.starts_with("/delay/");
    if known && state.error_rate > 0.0 && state.next_unit() < state.error_rate {
        return server::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "injected failure", "version": state.version}),
        );
    }
    if path.is_empty() {
        let uptime = state.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        return server::json(
            StatusCode::OK,
            &json!({
                "name": "serin-sample-app",
                "version": state.version,
                "message": state.message,
                "pid": std::process::id(),
                "uptime_seconds": uptime,
            }),
        );
    }
    if path == "/version" {
        return server::json(StatusCode::OK, &json!({"version": state.version}));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) if status.as_u16() >= 200 => {
                server::json(status, &json!({"status": status.as_u16()}))
            }
            _ => server::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("`{code}` is not a status code; use 200 to 599")}),
            ),
        };
    }
    if let Some(secs) = path.strip_prefix("/delay/") {
        return match secs.parse::<f64>() {
            Ok(s) if (0.0..=300.0).contains(&s) => {
                tokio::time::sleep(Duration::from_secs_f64(s)).await;
                server::json(StatusCode::OK, &json!({"delay": s}))
            }
            _ => server::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("`{secs}` is not a delay; use seconds from 0 to 300")}),
            ),
        };
    }
    server::json(
        StatusCode::NOT_FOUND,
        &json!({"error": format!("no such path `{path}`; try /, /version, /status/{{code}}, /delay/{{seconds}}, /healthz, /readyz")}),
    )
}
