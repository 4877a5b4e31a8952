//! A control plane that misbehaves: garbage on the stream, or a stream that goes silent. The
//! proxy keeps the last good table, says so on `/metrics`, and reconnects with backoff.

use crate::support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serin_mesh_api::client::ClientConfig;
use serin_mesh_api::protocol::{ServerMessage, encode_line};
use support::*;
use tokio::net::TcpListener;

/// What the fake control plane sends on a stream after its first one.
#[derive(Clone, Copy)]
enum Then {
    /// A line that is not a message.
    Garbage,
    /// Nothing, and the stream stays open.
    Silence,
}

/// A response body that sends its lines and then stays open without another byte.
struct ThenSilent(VecDeque<Bytes>);

impl Body for ThenSilent {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.pop_front() {
            Some(line) => Poll::Ready(Some(Ok(Frame::data(line)))),
            None => Poll::Pending,
        }
    }
}

/// A control plane that answers its first subscription with a good snapshot (authority `svc`
/// to `app`) followed by `then`, and every later one with `then` alone. Counts subscriptions.
async fn fake_control_plane(app: SocketAddr, then: Then) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let subscriptions = Arc::new(AtomicUsize::new(0));
    let subs = subscriptions.clone();
    let snapshot = encode_line(&ServerMessage::Snapshot {
        version: 1,
        table: table(&format!(
            "version: 1\nroutes:\n  - authority: svc\n    rules:\n      - backends: [{{ name: app, endpoints: [\"{app}\"] }}]\n"
        )),
    });
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (subs, snapshot) = (subs.clone(), snapshot.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let first = subs.fetch_add(1, SeqCst) == 0;
                    let mut lines = VecDeque::new();
                    if first {
                        lines.push_back(Bytes::from(snapshot.clone()));
                    }
                    if let Then::Garbage = then {
                        lines.push_back(Bytes::from_static(b"{{{ not a message\n"));
                    }
                    let body = ThenSilent(lines);
                    async move {
                        let mut r = Response::new(body);
                        *r.status_mut() = StatusCode::OK;
                        Ok::<_, Infallible>(r)
                    }
                });
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new());
                let _ = b.serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    (addr, subscriptions)
}

async fn proxy_fed_by(
    cp: SocketAddr,
    idle: Duration,
) -> (serin_proxy::Proxy, tokio::task::JoinHandle<()>) {
    let p = proxy().await;
    let mut cfg = ClientConfig::new(
        format!("http://{cp}").parse().expect("url"),
        "test/client".parse().expect("workload"),
        "client-0".into(),
    );
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_secs(1);
    cfg.idle_timeout = idle;
    let task = serin_proxy::control_client::spawn_with(cfg, p.table());
    (p, task)
}

/// Waits until `metric` (a sample line's value) satisfies `ok`.
async fn metric_until(p: &serin_proxy::Proxy, metric: &str, ok: impl Fn(f64) -> bool) -> f64 {
    loop {
        let v = sample(&metrics(p).await, &[metric]);
        if ok(v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After the first, good, stream broke: the table it brought stays in force and the proxy says
/// it is disconnected; then, over `window`, it subscribes again at most `most` times.
async fn keeps_the_table_and_backs_off(then: Then, idle: Duration, window: Duration, most: usize) {
    let app = upstream("app").await;
    let (cp, subscriptions) = fake_control_plane(app.addr, then).await;
    let (p, task) = proxy_fed_by(cp, idle).await;
    within(
        10,
        metric_until(&p, "serin_proxy_route_table_version", |v| v == 1.0),
    )
    .await;
    within(
        10,
        metric_until(&p, "serin_proxy_control_plane_disconnects_total", |v| {
            v >= 1.0
        }),
    )
    .await;
    assert_eq!(
        sample(&metrics(&p).await, &["serin_proxy_control_plane_connected"]),
        0.0
    );
    let got = get(&h1_client(), p.outbound_addr(), "svc", "/", &[]).await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "app"));
    let start = subscriptions.load(SeqCst);
    let since = Instant::now();
    tokio::time::sleep(window).await;
    let again = subscriptions.load(SeqCst) - start;
    assert!(
        (1..=most).contains(&again),
        "{again} subscriptions in {:?} (backoff 100 ms doubling to 1 s)",
        since.elapsed()
    );
    assert_eq!(p.table().current().version, 1, "the last good table left");
    task.abort();
}

#[tokio::test]
async fn garbage_on_the_stream_keeps_the_last_table_and_reconnects_with_backoff() {
    // 100 ms after the good stream, then 200, 400, 800, 1000, 1000 ms (+ up to 20 % jitter):
    // about five in 3 s; a reconnect loop without backoff would make hundreds.
    keeps_the_table_and_backs_off(
        Then::Garbage,
        Duration::from_secs(30),
        Duration::from_secs(3),
        8,
    )
    .await;
}

#[tokio::test]
async fn a_silent_stream_is_dropped_after_the_idle_timeout_and_the_table_stays() {
    // Each stream is given up after 300 ms of silence, then the backoff: a few in 3 s.
    keeps_the_table_and_backs_off(
        Then::Silence,
        Duration::from_millis(300),
        Duration::from_secs(3),
        6,
    )
    .await;
}
