//! Fixtures for integration tests (feature `test-support`): a real Prometheus (Debian's
//! `prometheus`) started on a loopback port it binds itself, and an exporter serving mesh-named metrics
//! (serin-proxy, Linkerd and Istio names) over real HTTP/1.1. Shared by this crate's tests and
//! the controller runtime's, so there is one way to start a Prometheus in Serin's tests.
//!
//! Not for production use: the helpers panic with a clear message when the environment lacks
//! what they need (the `prometheus` binary, a free port).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

mod cloud;
pub mod graphite;
pub use cloud::{AwsError, check_sigv4, fake_cloudwatch};

/// The `prometheus` binary on `PATH` (or `/usr/bin/prometheus`); panics naming the package.
pub fn find_prometheus() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("prometheus"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/prometheus")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is not installed: this test needs a real Prometheus \
                 (`apt-get install -y prometheus`, as .ci/run does)"
            )
        })
}

/// How to start a test Prometheus.
#[derive(Debug, Clone, Default)]
pub struct PrometheusOptions {
    /// `host:port` targets scraped every second at `/metrics`.
    pub scrape_targets: Vec<String>,
    /// Contents of `--web.config.file` (TLS and basic auth), when set. Files it names by
    /// relative path are looked up in the Prometheus directory; put them in `files`.
    pub web_config: Option<String>,
    /// Extra files (name, contents) written to the Prometheus directory, e.g. a certificate.
    pub files: Vec<(String, Vec<u8>)>,
    /// Extra command-line flags, e.g. `--web.route-prefix=/prometheus` (Prometheus behind a
    /// proxy's path).
    pub args: Vec<String>,
}

/// A running Prometheus; killed and its directory removed on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:<port>` (`https://` with a TLS web config).
    pub address: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts Prometheus scraping `127.0.0.1:<exporter_port>` every second.
pub async fn start_prometheus(exporter_port: u16) -> Prometheus {
    start_prometheus_with(PrometheusOptions {
        scrape_targets: vec![format!("127.0.0.1:{exporter_port}")],
        ..PrometheusOptions::default()
    })
    .await
}

/// Starts Prometheus as `options` say, on a loopback port it picks itself; returns once it
/// listens (its address is read from its log). It may not answer queries yet: poll it (e.g.
/// with [`eventually`] and the provider's availability probe).
pub async fn start_prometheus_with(options: PrometheusOptions) -> Prometheus {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let binary = find_prometheus();
    let dir = std::env::temp_dir().join(format!(
        "serin-prom-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    let targets = options
        .scrape_targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: serin-proxy\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: [{targets}]\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
    for (name, contents) in &options.files {
        std::fs::write(dir.join(name), contents).expect("write a Prometheus file");
    }
    // Port 0: Prometheus binds a free port itself and logs it (`msg="Listening on"
    // address=127.0.0.1:PORT` at level info), so no port is handed over that someone else could
    // take in between.
    let mut cmd = Command::new(binary);
    cmd.current_dir(&dir)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--log.level=info")
        .args(&options.args);
    let scheme = match &options.web_config {
        Some(web) => {
            std::fs::write(dir.join("web.yml"), web).expect("write web config");
            cmd.arg(format!(
                "--web.config.file={}",
                dir.join("web.yml").display()
            ));
            if web.contains("tls_server_config") {
                "https"
            } else {
                "http"
            }
        }
        None => "http",
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let stderr = child.stderr.take().expect("stderr is piped");
    let listening = logged_address(stderr, r#"msg="Listening on""#, "address");
    let addr = tokio::time::timeout(Duration::from_secs(30), listening)
        .await
        .unwrap_or_else(|_| panic!("Prometheus logged no listening address within 30s"))
        .unwrap_or_else(|log| panic!("Prometheus exited without listening:\n{log}"));
    Prometheus {
        child,
        dir,
        address: format!("{scheme}://{addr}"),
    }
}

/// Reads a server's log (`stderr`, in logfmt) until the line containing `marker`, and returns
/// the socket address in that line's field `field` (`address=127.0.0.1:PORT`), or the log so far
/// if the stream ends first. The rest of the log is drained (so the server never blocks on a
/// full pipe) and dropped. For servers told to listen on port 0 that log what they bound, so no
/// test hands a server a port that was merely free a moment before.
pub async fn logged_address(
    stderr: tokio::process::ChildStderr,
    marker: &str,
    field: &str,
) -> Result<std::net::SocketAddr, String> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = String::new();
    let key = format!("{field}=");
    while let Ok(Some(line)) = lines.next_line().await {
        let addr = line
            .contains(marker)
            .then(|| line.split(key.as_str()).nth(1))
            .flatten()
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        if let Some(addr) = addr {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(addr);
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    Err(seen)
}

/// Polls `f` every 250 ms until it yields `Some`; panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Per "tick" of the exporter, each arm serves 100 requests: the canary fails 2, the primary 1.
/// Latency per tick and arm: 90 requests <= 10 ms, 9 in (10, 20], 1 in (20, 50] — so the p99
/// is exactly 20 ms by Prometheus' interpolation.
pub const PER_TICK: u64 = 100;
/// Canary failures per tick.
pub const CANARY_FAILURES_PER_TICK: u64 = 2;
/// Primary failures per tick.
pub const PRIMARY_FAILURES_PER_TICK: u64 = 1;

/// An exporter of the metrics the built-in checks query, for the canary `podinfo` in namespace
/// `test` (services `podinfo-canary` and `podinfo-primary`).
pub struct Exporter {
    /// Its port on 127.0.0.1.
    pub port: u16,
    ticks: Arc<AtomicU64>,
}

impl Exporter {
    /// `http://127.0.0.1:<port>/metrics`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    /// Advances every counter by `n` ticks.
    pub fn tick(&self, n: u64) {
        self.ticks.fetch_add(n, Ordering::SeqCst);
    }
}

fn page(n: u64) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP response_total Total count of HTTP responses.\n# TYPE response_total counter\n",
    );
    let arms = [
        ("podinfo-canary", "podinfo", CANARY_FAILURES_PER_TICK),
        (
            "podinfo-primary",
            "podinfo-primary",
            PRIMARY_FAILURES_PER_TICK,
        ),
    ];
    for (backend, workload, fail) in arms {
        let ok = (PER_TICK - fail) * n;
        let bad = fail * n;
        // serin-proxy (outbound, per backend)
        out.push_str(&format!(
            "response_total{{direction=\"outbound\",authority=\"podinfo.test:9898\",dst_service=\"{backend}\",classification=\"success\",status_code=\"200\"}} {ok}\n\
             response_total{{direction=\"outbound\",authority=\"podinfo.test:9898\",dst_service=\"{backend}\",classification=\"failure\",status_code=\"503\"}} {bad}\n"
        ));
        // linkerd (inbound, per deployment)
        out.push_str(&format!(
            "response_total{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",classification=\"success\",status_code=\"200\"}} {ok}\n\
             response_total{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",classification=\"failure\",status_code=\"503\"}} {bad}\n"
        ));
        // istio (destination reporter)
        out.push_str(&format!(
            "istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",response_code=\"200\"}} {ok}\n\
             istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",response_code=\"503\"}} {bad}\n"
        ));
        let cumulative = [(1.0, 0), (10.0, 90), (20.0, 99), (50.0, 100), (100.0, 100)];
        for (le, c) in cumulative {
            let v = c * n;
            out.push_str(&format!(
                "response_latency_ms_bucket{{direction=\"outbound\",dst_service=\"{backend}\",le=\"{le}\"}} {v}\n\
                 response_latency_ms_bucket{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",le=\"{le}\"}} {v}\n\
                 istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",le=\"{le}\"}} {v}\n"
            ));
        }
        let total = PER_TICK * n;
        out.push_str(&format!(
            "response_latency_ms_bucket{{direction=\"outbound\",dst_service=\"{backend}\",le=\"+Inf\"}} {total}\n\
             response_latency_ms_bucket{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",le=\"+Inf\"}} {total}\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",le=\"+Inf\"}} {total}\n"
        ));
    }
    out
}

/// Starts the exporter on 127.0.0.1:0. Counters only move when [`Exporter::tick`] is called.
pub async fn start_exporter() -> Exporter {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind exporter");
    let port = listener.local_addr().expect("exporter address").port();
    let ticks = Arc::new(AtomicU64::new(0));
    let shared = ticks.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let ticks = shared.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.len() > 64 * 1024 {
                        return;
                    }
                }
                let request = String::from_utf8_lossy(&buf);
                let (status, body) = if request.starts_with("GET /metrics") {
                    ("200 OK", page(ticks.load(Ordering::SeqCst)))
                } else {
                    ("404 Not Found", String::from("not found\n"))
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Exporter { port, ticks }
}

/// A request as a [`FakeApi`] saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, percent-encoded as sent (empty without one).
    pub query: String,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl SeenRequest {
    /// The decoded value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        reqwest::Url::parse(&format!("http://x/?{}", self.query))
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One scripted answer: status, `content-type` and body, sent whole or as a stream.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `content-type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
    /// When set, the body is sent as these chunks, one after another (chunked encoding),
    /// ending as [`StreamEnd`] says; `body` is then unused.
    pub stream: Option<(Vec<String>, StreamEnd)>,
    /// Extra response headers, e.g. a redirect's `location`.
    pub headers: Vec<(&'static str, String)>,
}

/// How a streamed answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ends normally (the last chunk is sent).
    Close,
    /// The connection is cut mid-body (no last chunk): the client sees a broken body.
    Cut,
    /// The server stops sending but keeps the connection open (for 60 s).
    Hang,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::with_type(status, "application/json", body)
    }

    /// An answer of another content type.
    pub fn with_type(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Answer {
            status,
            content_type,
            body: body.into(),
            stream: None,
            headers: Vec::new(),
        }
    }

    /// A `200 text/event-stream` answer of server-sent events `(event, data)`, each sent as
    /// its own chunk, ending as `end` says.
    pub fn event_stream(events: &[(&str, &str)], end: StreamEnd) -> Self {
        let chunks = events
            .iter()
            .map(|(event, data)| format!("event: {event}\ndata: {data}\n\n"))
            .collect();
        Answer {
            status: 200,
            content_type: "text/event-stream",
            body: String::new(),
            stream: Some((chunks, end)),
            headers: Vec::new(),
        }
    }
}

type FakeBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

fn fake_body(a: Answer) -> FakeBody {
    use http_body_util::BodyExt;
    let Some((chunks, end)) = a.stream else {
        return http_body_util::Full::new(bytes::Bytes::from(a.body))
            .map_err(|never| match never {})
            .boxed();
    };
    let (mut tx, body) = http_body_util::channel::Channel::<bytes::Bytes, std::io::Error>::new(1);
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send_data(bytes::Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        match end {
            StreamEnd::Close => drop(tx),
            StreamEnd::Cut => tx.abort(std::io::Error::other("cut by the test")),
            StreamEnd::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(tx);
            }
        }
    });
    body.boxed()
}

/// Scripted answers handed out in order, then 500 `script exhausted`.
struct Script(std::sync::Mutex<std::vec::IntoIter<Answer>>);

impl Script {
    fn new(answers: Vec<Answer>) -> Self {
        Script(std::sync::Mutex::new(answers.into_iter()))
    }

    fn next(&self) -> Answer {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next()
            .unwrap_or_else(|| Answer::with_type(500, "text/plain", "script exhausted"))
    }
}

/// A metrics API stand-in on `127.0.0.1:0` speaking real HTTP/1.1 (hyper): it answers each
/// request with the next scripted [`Answer`] (then 500 `script exhausted`) and reports every
/// request, so a test asserts what the provider sent and what it made of the documented answer.
pub struct FakeApi {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    seen: tokio::sync::mpsc::UnboundedReceiver<SeenRequest>,
}

impl FakeApi {
    /// Starts the fake with its script.
    pub async fn start(script: Vec<Answer>) -> FakeApi {
        let script = Script::new(script);
        Self::serve(move |_| script.next()).await
    }

    /// Starts the fake answering each request with `handler`'s answer to it (for fakes that
    /// check what they receive, as AWS checks a signature).
    pub async fn serve(
        handler: impl Fn(&SeenRequest) -> Answer + Send + Sync + 'static,
    ) -> FakeApi {
        use http_body_util::BodyExt;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = format!("http://{}", listener.local_addr().expect("local address"));
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, handler) = (tx.clone(), handler.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (tx, handler) = (tx.clone(), handler.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let request = SeenRequest {
                                    method: parts.method.to_string(),
                                    path: parts.uri.path().to_string(),
                                    query: parts.uri.query().unwrap_or("").to_string(),
                                    headers: parts.headers,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                let a = handler(&request);
                                let _ = tx.send(request);
                                let mut response = hyper::Response::builder()
                                    .status(a.status)
                                    .header("content-type", a.content_type);
                                for (name, value) in &a.headers {
                                    response = response.header(*name, value.as_str());
                                }
                                Ok::<_, std::convert::Infallible>(
                                    response
                                        .body(fake_body(a))
                                        .expect("a scripted response is valid"),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeApi { address, seen }
    }

    /// The next request the fake received, waiting at most 5 s.
    pub async fn next(&mut self) -> SeenRequest {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
            .await
            .expect("the fake API got no request within 5s")
            .expect("the fake API stopped")
    }
}
