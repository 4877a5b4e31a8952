//! `serin load --serve ADDR`: a webhook runner compatible with Flagger's load tester, so a
//! Flagger user's `rollout`/`pre-rollout` webhooks that start load keep working.
//!
//! It answers Flagger's webhook POST body `{"name":…,"namespace":…,"phase":…,"metadata":{"cmd":"…"}}`
//! by starting the load described by `cmd` in the background and answering 200 at once, as
//! Flagger's load tester does for `type: cmd`. The same command already running is not started
//! twice (Flagger calls a `rollout` hook on every tick). For safety it never runs a shell: only
//! `serin load …` (or `load …`) and `hey …` command lines are understood and run in-process;
//! anything else gets a 400 saying what is accepted.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::load::{self, LoadConfig};
use crate::server::{self, Body};
use crate::{DemoError, duration};

/// How many finished runs `GET /reports` keeps.
const KEPT_REPORTS: usize = 50;

/// A bound load-tester webhook server.
pub struct LoadTester {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    running: Mutex<HashSet<String>>,
    reports: Mutex<VecDeque<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct Webhook {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    r#type: Option<String>,
    #[serde(default)]
    cmd: Option<String>,
}

impl LoadTester {
    /// Binds the webhook listener.
    pub async fn bind(addr: SocketAddr) -> Result<Self, DemoError> {
        let listener = server::bind(addr).await?;
        let addr = server::local_addr(&listener)?;
        Ok(Self {
            listener,
            addr,
            state: Arc::default(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves webhooks until `shutdown` resolves.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let state = self.state;
        let handler = move |req: Request<Incoming>| {
            let state = state.clone();
            async move { handle(state, req).await }
        };
        server::serve(self.listener, handler, shutdown, Duration::from_secs(5)).await;
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => server::json(StatusCode::OK, &json!({"status": "OK"})),
        (&Method::GET, "/reports") => {
            let reports: Vec<_> = state
                .reports
                .lock()
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default();
            let running: Vec<_> = state
                .running
                .lock()
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default();
            server::json(
                StatusCode::OK,
                &json!({"running": running, "finished": reports}),
            )
        }
        (&Method::POST, _) => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return bad_request("the body could not be read or is over 64 KiB"),
            };
            let hook: Webhook = match serde_json::from_slice(&body) {
                Ok(hook) => hook,
                Err(e) => {
                    return bad_request(&format!("the body is not a Flagger webhook payload: {e}"));
                }
            };
            let Some(meta) = hook.metadata else {
                return bad_request("metadata.cmd is required");
            };
            if let Some(kind) = meta.r#type.as_deref()
                && kind != "cmd"
            {
                return bad_request(&format!(
                    "metadata.type `{kind}` is not supported; only `cmd` (the default) is run"
                ));
            }
            let Some(cmd) = meta.cmd else {
                return bad_request("metadata.cmd is required");
            };
            let config = match parse_command(&cmd) {
                Ok(config) => config,
                Err(e) => return bad_request(&e.to_string()),
            };
            let inserted = state
                .running
                .lock()
                .map(|mut r| r.insert(cmd.clone()))
                .unwrap_or(false);
            if !inserted {
                return server::json(
                    StatusCode::OK,
                    &json!({"status": "already running", "cmd": cmd}),
                );
            }
            tracing::info!(cmd = %cmd, canary = ?hook.name, namespace = ?hook.namespace, "load started");
            tokio::spawn(run_in_background(state, cmd.clone(), config));
            server::json(StatusCode::OK, &json!({"status": "started", "cmd": cmd}))
        }
        _ => server::json(
            StatusCode::NOT_FOUND,
            &json!({"error": "POST a Flagger webhook body to any path; GET /reports, /healthz"}),
        ),
    }
}

async fn run_in_background(state: Arc<State>, cmd: String, config: LoadConfig) {
    let result = load::run(config, std::future::pending(), |_| {}).await;
    let entry = match result {
        Ok(report) => {
            tracing::info!(cmd = %cmd, summary = %report.summary(), "load finished");
            json!({"cmd": cmd, "summary": report.summary(), "requests": report.requests, "errors": report.errors})
        }
        Err(e) => {
            tracing::warn!(cmd = %cmd, error = %e, "load failed");
            json!({"cmd": cmd, "error": e.to_string()})
        }
    };
    if let Ok(mut running) = state.running.lock() {
        running.remove(&cmd);
    }
    if let Ok(mut reports) = state.reports.lock() {
        if reports.len() == KEPT_REPORTS {
            reports.pop_front();
        }
        reports.push_back(entry);
    }
}

fn bad_request(message: &str) -> Response<Body> {
    server::json(StatusCode::BAD_REQUEST, &json!({"error": message}))
}

/// Splits a command line into words with shell-like quoting ('…', "…", backslash), without
/// expanding anything.
fn split_words(line: &str) -> Result<Vec<String>, DemoError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(DemoError::invalid(
                                "metadata.cmd",
                                "unterminated single quote",
                            ));
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => {
                                return Err(DemoError::invalid(
                                    "metadata.cmd",
                                    "trailing backslash",
                                ));
                            }
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(DemoError::invalid(
                                "metadata.cmd",
                                "unterminated double quote",
                            ));
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(DemoError::invalid("metadata.cmd", "trailing backslash")),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Understands `serin load URL --rate R --duration D [--host H] [--timeout T]` (also without the
/// leading `serin`) and `hey -z D -q Q -c C [-host H] [-t SECONDS] URL` (rate = Q × C, or
/// duration from `-n` when `-z` is absent).
pub fn parse_command(cmd: &str) -> Result<LoadConfig, DemoError> {
    let words = split_words(cmd)?;
    let field = "metadata.cmd";
    let unsupported = || {
        DemoError::invalid(
            field,
            format!(
                "`{cmd}` is not run: only `serin load URL --rate R --duration D` and `hey -z D -q Q -c C URL` command lines are accepted (no shell)"
            ),
        )
    };
    let rest: &[String] = match words.first().map(String::as_str) {
        Some("serin") if words.get(1).map(String::as_str) == Some("load") => &words[2..],
        Some("load") => &words[1..],
        Some("hey") => return parse_hey(&words[1..], cmd),
        _ => return Err(unsupported()),
    };
    let mut url = None;
    let mut rate = None;
    let mut dur = None;
    let mut host = None;
    let mut timeout = None;
    let mut it = rest.iter();
    while let Some(w) = it.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (w.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| DemoError::invalid(field, format!("{name} needs a value")))
        };
        match flag {
            "--rate" | "-r" => {
                let v = value("--rate")?;
                rate = Some(v.parse::<f64>().map_err(|_| {
                    DemoError::invalid(
                        field,
                        format!("--rate `{v}` is not a number of requests per second"),
                    )
                })?);
            }
            "--duration" | "-d" => {
                dur = Some(duration::parse("--duration", &value("--duration")?)?)
            }
            "--host" => host = Some(value("--host")?),
            "--timeout" => timeout = Some(duration::parse("--timeout", &value("--timeout")?)?),
            f if f.starts_with('-') => {
                return Err(DemoError::invalid(
                    field,
                    format!("unknown flag `{f}`; accepted: --rate, --duration, --host, --timeout"),
                ));
            }
            _ if url.is_none() => url = Some(w.clone()),
            _ => {
                return Err(DemoError::invalid(
                    field,
                    format!("unexpected argument `{w}`"),
                ));
            }
        }
    }
    let url = url.ok_or_else(|| DemoError::invalid(field, "the URL is missing"))?;
    let rate = rate.ok_or_else(|| DemoError::invalid(field, "--rate is required"))?;
    let dur = dur.ok_or_else(|| DemoError::invalid(field, "--duration is required"))?;
    finish(&url, rate, dur, host, timeout)
}

fn parse_hey(args: &[String], cmd: &str) -> Result<LoadConfig, DemoError> {
    let field = "metadata.cmd";
    let mut z = None;
    let mut q = None;
    let mut c = 50.0;
    let mut n = None;
    let mut host = None;
    let mut timeout = None;
    let mut url = None;
    let mut it = args.iter();
    let number = |flag: &str, v: Option<&String>| -> Result<f64, DemoError> {
        let v = v.ok_or_else(|| DemoError::invalid(field, format!("hey {flag} needs a value")))?;
        v.parse::<f64>()
            .map_err(|_| DemoError::invalid(field, format!("hey {flag} `{v}` is not a number")))
    };
    while let Some(w) = it.next() {
        match w.as_str() {
            "-z" => {
                let v = it
                    .next()
                    .ok_or_else(|| DemoError::invalid(field, "hey -z needs a value"))?;
                z = Some(duration::parse("hey -z", v)?);
            }
            "-q" => q = Some(number("-q", it.next())?),
            "-c" => c = number("-c", it.next())?,
            "-n" => n = Some(number("-n", it.next())?),
            "-t" => timeout = Some(Duration::from_secs_f64(number("-t", it.next())?.max(0.001))),
            "-host" => host = it.next().cloned(),
            "-m" => match it.next().map(String::as_str) {
                Some("GET") => {}
                other => {
                    return Err(DemoError::invalid(
                        field,
                        format!(
                            "hey -m {} is not supported; only GET load is generated",
                            other.unwrap_or("")
                        ),
                    ));
                }
            },
            f if f.starts_with('-') => {
                return Err(DemoError::invalid(
                    field,
                    format!(
                        "hey flag `{f}` is not supported in `{cmd}`; accepted: -z, -q, -c, -n, -t, -host, -m GET"
                    ),
                ));
            }
            _ => url = Some(w.clone()),
        }
    }
    let url = url.ok_or_else(|| DemoError::invalid(field, "the URL is missing"))?;
    let q = q.ok_or_else(|| {
        DemoError::invalid(
            field,
            "hey without -q has no fixed rate; add -q (requests per second per worker)",
        )
    })?;
    let rate = q * c;
    let dur = match (z, n) {
        (Some(z), _) => z,
        (None, Some(n)) if rate > 0.0 => Duration::from_secs_f64(n / rate),
        _ => {
            return Err(DemoError::invalid(
                field,
                "hey needs -z DURATION or -n COUNT",
            ));
        }
    };
    finish(&url, rate, dur, host, timeout)
}

fn finish(
    url: &str,
    rate: f64,
    dur: Duration,
    host: Option<String>,
    timeout: Option<Duration>,
) -> Result<LoadConfig, DemoError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| DemoError::invalid("metadata.cmd", format!("`{url}` is not a URL")))?;
    let mut config = LoadConfig::new(uri, rate, dur);
    config.host = host;
    if let Some(t) = timeout {
        config.timeout = t;
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_serin_load_and_hey_command_lines() {
        let c = parse_command(
            "serin load http://127.0.0.1:9898/ --rate 20 --duration 1m --host podinfo",
        )
        .unwrap();
        assert_eq!(c.rate, 20.0);
        assert_eq!(c.duration, Duration::from_secs(60));
        assert_eq!(c.host.as_deref(), Some("podinfo"));
        let c = parse_command("hey -z 30s -q 10 -c 2 -host 'podinfo-canary' http://127.0.0.1:1/")
            .unwrap();
        assert_eq!(c.rate, 20.0);
        assert_eq!(c.duration, Duration::from_secs(30));
        assert_eq!(c.host.as_deref(), Some("podinfo-canary"));
    }

    #[test]
    fn refuses_shell_commands_and_bad_flags_with_what_is_accepted() {
        let e = parse_command("curl -s http://x/ | sh")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only `serin load"), "{e}");
        let e = parse_command("hey -z 1m http://127.0.0.1:1/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("add -q"), "{e}");
        let e = parse_command("load http://127.0.0.1:1/ --rate 10 --duration 10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--duration"), "{e}");
        let e = parse_command("load http://127.0.0.1:1/ --rate 10 --duration 1m --bogus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bogus"), "{e}");
        let e = parse_command("load 'unterminated").unwrap_err().to_string();
        assert!(e.contains("quote"), "{e}");
    }
}
