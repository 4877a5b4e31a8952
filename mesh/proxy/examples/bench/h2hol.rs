//! The h2 head-of-line line: the latency of a normal h2c client while a stalled one holds the
//! same endpoint. The stalled client asks for [`STALLED_STREAMS`] × 10 MB over one connection
//! and never reads (it never opens its flow-control windows); the normal client, on its own
//! connection, then sends one small request after the other for [`MEASURE`]. A proxy that lets
//! the stalled streams take the shared upstream connection's window makes every normal request
//! wait (each counts as an error after [`REQUEST_TIMEOUT`]).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

pub const STALLED_STREAMS: usize = 3;
const STALLED_BYTES: usize = 10_000_000;
const MEASURE: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// What the normal client saw.
pub struct Hol {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub requests: usize,
    pub errors: usize,
}

fn big() -> &'static Bytes {
    static BIG: OnceLock<Bytes> = OnceLock::new();
    BIG.get_or_init(|| Bytes::from(vec![b'x'; STALLED_BYTES]))
}

/// An h2c (prior knowledge) upstream on its own thread: `/big/<n>` answers `n` bytes (up to
/// 10 MB), anything else `ok\n`.
pub fn spawn_upstream() -> anyhow::Result<SocketAddr> {
    super::spawn_server("upstream-h2", |stream| async move {
        let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
            let n = req
                .uri()
                .path()
                .strip_prefix("/big/")
                .and_then(|n| n.parse::<usize>().ok());
            let body = match n {
                Some(n) => big().slice(..n.min(STALLED_BYTES)),
                None => Bytes::from_static(b"ok\n"),
            };
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(body)))
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await;
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One GET of `path` read to its end, releasing flow control as it goes.
async fn get(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
) -> anyhow::Result<()> {
    let req = http::Request::get(format!("http://{authority}{path}")).body(())?;
    let mut ready = send.clone().ready().await?;
    let (resp, _) = ready.send_request(req, true)?;
    let resp = resp.await?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    let mut body = resp.into_body();
    while let Some(data) = body.data().await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    Ok(())
}

/// The scenario against `addr` (a proxy routing `authority` to [`spawn_upstream`]'s server, or
/// that server itself), with `stalled_streams` stalled streams (0: the control, nothing
/// stalled).
pub fn measure(addr: SocketAddr, authority: &str, stalled_streams: usize) -> anyhow::Result<Hol> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // The stalled client: its responses start, and are never read.
        let mut stalled = connect(addr).await.context("stalled client")?;
        let mut held = Vec::new();
        for _ in 0..stalled_streams {
            let req =
                http::Request::get(format!("http://{authority}/big/{STALLED_BYTES}")).body(())?;
            stalled = stalled.ready().await?;
            let (resp, _) = stalled.send_request(req, true)?;
            held.push(resp);
        }
        let mut bodies = Vec::new();
        for r in held {
            let resp = tokio::time::timeout(Duration::from_secs(5), r)
                .await
                .context("stalled client: no response head in 5 s")??;
            bodies.push(resp.into_body());
        }
        // Time for every window the stalled streams can fill to fill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut normal = connect(addr).await.context("normal client")?;
        let mut samples = Vec::new();
        let mut errors = 0;
        let until = Instant::now() + MEASURE;
        while Instant::now() < until {
            let t = Instant::now();
            match tokio::time::timeout(REQUEST_TIMEOUT, get(&mut normal, authority, "/")).await {
                Ok(Ok(())) => samples.push(t.elapsed().as_micros() as u64),
                _ => errors += 1,
            }
        }
        drop(bodies);
        samples.sort_unstable();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Ok(Hol {
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: samples.last().copied().unwrap_or(0),
            requests: samples.len(),
            errors,
        })
    })
}
