//! Stub upstreams, a client and fixtures for the proxy's integration tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serin_mesh_api::RouteTable;
use serin_proxy::{Proxy, ProxyConfig};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// What a stub upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub upstream: &'static str,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

/// A stub upstream. Paths:
/// - `/hang`: never answers; `/hang-shadow`: never answers if the stub is named `shadow`.
/// - `/wait`: answers once `release` is notified.
/// - `/status/N`: answers with status N.
/// - `/grpc/N`: gRPC response with trailers `grpc-status: N`.
/// - anything else: 200 with the upstream's name as body and `x-upstream` header.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub release: Arc<Notify>,
}

pub async fn upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
    let addr = listener.local_addr().expect("stub addr");
    let (tx, seen) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let rel = release.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let rel = rel.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    let rel = rel.clone();
                    async move { Ok::<_, Infallible>(stub(name, req, tx, rel).await) }
                });
                let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                b.http1().timer(TokioTimer::new());
                let _ = b.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Upstream {
        name,
        addr,
        seen,
        release,
    }
}

async fn stub(
    name: &'static str,
    req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Seen>,
    release: Arc<Notify>,
) -> Response<Frames> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let _ = tx.send(Seen {
        upstream: name,
        path: path.clone(),
        headers: parts.headers.clone(),
        body,
        version: parts.version,
    });
    if path == "/hang" || (path == "/hang-shadow" && name == "shadow") {
        std::future::pending::<()>().await;
    }
    if path == "/wait" {
        release.notified().await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(Frames::data(name));
        *r.status_mut() = code.parse().unwrap_or(StatusCode::IM_A_TEAPOT);
        return r;
    }
    if let Some(code) = path.strip_prefix("/grpc/") {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.parse().expect("grpc status"));
        trailers.insert("grpc-message", "from-stub".parse().expect("value"));
        let mut r = Response::new(Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")),
            Frame::trailers(trailers),
        ])));
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().expect("value"));
        return r;
    }
    let mut r = Response::new(Frames::data(name));
    r.headers_mut()
        .insert("x-upstream", name.parse().expect("value"));
    r
}

/// A body made of given frames (data and trailers).
pub struct Frames(pub VecDeque<Frame<Bytes>>);

impl Frames {
    pub fn data(s: &'static str) -> Self {
        Frames(VecDeque::from([Frame::data(Bytes::from_static(
            s.as_bytes(),
        ))]))
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A client. HTTP/1.1 clients talk to the proxy address and set `Host`; HTTP/2 clients put
/// the authority in the URI (so it becomes `:authority`, like a real gRPC client) and connect
/// to the proxy through [`Via`].
#[derive(Clone)]
pub enum TestClient {
    H1(Client<HttpConnector, Full<Bytes>>),
    H2(Client<Via, Full<Bytes>>),
}

pub fn h1_client() -> TestClient {
    TestClient::H1(
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build_http(),
    )
}

/// An h2c (prior knowledge) client that connects to `proxy` whatever the URI says.
pub fn h2_client(proxy: SocketAddr) -> TestClient {
    TestClient::H2(
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(Via(proxy)),
    )
}

/// Connects to a fixed address, ignoring the URI.
#[derive(Clone)]
pub struct Via(pub SocketAddr);

impl tower_service::Service<http::Uri> for Via {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Uri) -> Self::Future {
        let a = self.0;
        Box::pin(async move { Ok(TokioIo::new(tokio::net::TcpStream::connect(a).await?)) })
    }
}

/// A finished response.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub trailers: Option<HeaderMap>,
}

/// Sends a request through the proxy to `authority` with extra headers.
pub async fn get(
    client: &TestClient,
    proxy: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    send(client, proxy, authority, "GET", path, headers, Bytes::new()).await
}

pub async fn send(
    client: &TestClient,
    proxy: SocketAddr,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Got {
    try_send(client, proxy, authority, method, path, headers, body)
        .await
        .expect("request through the proxy")
}

pub async fn try_send(
    client: &TestClient,
    proxy: SocketAddr,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Got> {
    let mut b = Request::builder().method(method);
    b = match client {
        TestClient::H1(_) => b
            .uri(format!("http://{proxy}{path}"))
            .header("host", authority),
        TestClient::H2(_) => b.uri(format!("http://{authority}{path}")),
    };
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body))?;
    let resp = match client {
        TestClient::H1(c) => c.request(req).await?,
        TestClient::H2(c) => c.request(req).await?,
    };
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    })
}

/// A proxy on ephemeral ports with the given identity labels.
pub async fn proxy_with(labels: &[(&str, &str)]) -> Proxy {
    let cfg = ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        shutdown_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    };
    Proxy::start(cfg).await.expect("proxy starts")
}

pub async fn proxy() -> Proxy {
    proxy_with(&[]).await
}

/// Routes authority `svc` on `p` to the one endpoint `app` (backend `app`).
pub fn route_svc_to(p: &Proxy, app: SocketAddr) {
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: svc\n    rules:\n      - backends: [{{ name: app, endpoints: [\"{app}\"] }}]\n"
        )))
        .expect("table");
}

pub fn table(yaml: &str) -> RouteTable {
    serde_norway::from_str(yaml).expect("test table yaml")
}

/// Scrapes `/metrics` from the proxy's admin listener.
pub async fn metrics(p: &Proxy) -> String {
    let admin = p.admin_addr().expect("admin on");
    let got = get(&h1_client(), admin, "admin", "/metrics", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    got.body
}

/// The value of the first sample line containing every fragment, or 0.
pub fn sample(metrics: &str, fragments: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| fragments.iter().all(|f| l.contains(f)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// Bounds every test so a hang fails instead of blocking CI.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test step timed out")
}

/// Runs `cmd` (a serin-proxy, directly or under `ip netns exec`) with its stderr piped; it must
/// exit by itself within 10 s, as a refused start does: one that keeps running is SIGKILLed and
/// the test fails, naming `what`. Returns its exit status and stderr.
pub fn exits_by_itself(
    mut cmd: std::process::Command,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let pid = child.id();
    // Waited for on a thread that also drains stderr, so a chatty child never blocks on a
    // full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(out) => {
            let out = out.unwrap_or_else(|e| panic!("wait for {what}: {e}"));
            (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} started instead of refusing to");
        }
    }
}
