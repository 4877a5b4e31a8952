//! Push latency with many proxies: N lightweight clients in this process, each with its own
//! HTTP/2 connection, subscribe to a control plane (local source) the way serin-proxy does
//! (duplex `POST /v1/watch`, compact tables) and ack every snapshot on the stream. Each weight
//! change goes through the HTTP weights API; its latency is the time from sending the change
//! until the snapshot carrying it has ARRIVED at the LAST of the N clients (its whole line
//! received). p50/p99 are over the changes of one run.
//!
//! A lightweight client reads the version from the line and acks it without building the route
//! table: in a real mesh each proxy decodes on its own CPU, while here a thousand decodes would
//! queue on this machine's two cores and be counted as push latency. `PUSH_BENCH_CLIENT=full`
//! runs the real client of `serin_mesh_api::client` instead (decode, expand, apply, ack), for
//! comparison.
//!
//! `cargo run --release -p serin-mesh-control --example push-bench` prints one line per N:
//! `proxies=<N> p50_ms=<x> p99_ms=<y> rss_mib=<z>` (rss: this whole process, control plane and
//! clients together). Target: p99 ≤ 100 ms at 1,000 proxies.
//!
//! Under each line, on stderr, where the time went (p50/p99 over the changes, ms from sending
//! the change): `put` the weights API answered (state updated, version published), `first` /
//! `median` / `last` client received the snapshot, `in_force` every proxy's ack was recorded
//! (what the canary controller waits for), plus the process CPU time per change (control plane
//! and clients) and the 1-minute load average. `PUSH_BENCH_N=1000` and `PUSH_BENCH_CHANGES=5`
//! narrow a run (for profilers).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serin_mesh_api::RouteTable;
use serin_mesh_api::client::{ClientConfig, Sink};
use tokio::sync::mpsc;

/// Weight changes per N. With 40 the "p99" was simply the slowest change; 200 gives a real
/// 99th percentile (the 198th of 200) and still runs in well under a minute.
const CHANGES: usize = 200;

struct Recorder {
    tx: mpsc::UnboundedSender<(u64, Instant)>,
}

impl Sink for Recorder {
    fn apply(&mut self, table: RouteTable) -> Result<(), String> {
        let _ = self.tx.send((table.version, Instant::now()));
        Ok(())
    }
    fn connection(&mut self, _up: bool, _detail: &str) {}
}

/// One lightweight proxy: subscribes like serin-proxy (duplex, compact tables), reports each
/// snapshot's version when its line is complete and acks it on the stream. A subscription that
/// fails is tried again (a thousand connects at once can overflow the listen backlog, and the
/// real client retries too); a stream that breaks later ends the client, so the run fails.
async fn light_client(
    addr: SocketAddr,
    id: usize,
    tx: mpsc::UnboundedSender<(u64, Instant)>,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(20);
    for _ in 0..10 {
        let mut subscribed = false;
        let result = light_stream(addr, id, &tx, &mut subscribed).await;
        if subscribed || tx.is_closed() {
            return result;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    bail!("proxy p{id}: could not subscribe")
}

async fn light_stream(
    addr: SocketAddr,
    id: usize,
    tx: &mpsc::UnboundedSender<(u64, Instant)>,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    use hyper::body::Frame;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    // The connection task ends with this client (the bench aborts clients when it is done).
    struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _conn = AbortOnDrop(tokio::spawn(conn));
    let (acks, rx) = mpsc::unbounded_channel::<Bytes>();
    let body =
        http_body_util::StreamBody::new(Box::pin(futures::stream::unfold(rx, |mut rx| async {
            let line = rx.recv().await?;
            Some((Ok::<_, std::convert::Infallible>(Frame::data(line)), rx))
        })));
    let req = hyper::Request::post(format!(
        "http://{addr}/v1/watch?workload=bench/frontend&proxy=p{id}&aliases=1"
    ))
    .body(body)?;
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("subscription answered {}", resp.status());
    }
    *subscribed = true;
    let mut stream = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    const PREFIX: &[u8] = b"{\"type\":\"snapshot\",\"version\":";
    while let Some(frame) = stream.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            // Heartbeats are skipped; a snapshot line starts with its type and version.
            if let Some(rest) = line.strip_prefix(PREFIX) {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                let version: u64 = std::str::from_utf8(&rest[..digits])?.parse()?;
                let _ = tx.send((version, Instant::now()));
                let _ = acks.send(Bytes::from(format!("{{\"version\":{version}}}\n")));
            }
        }
    }
    bail!("proxy p{id}: the stream ended")
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn put_weights(addr: SocketAddr, primary: u32, canary: u32) -> anyhow::Result<u64> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = format!(
        r#"{{"backends":[{{"name":"podinfo-primary","weight":{primary}}},{{"name":"podinfo-canary","weight":{canary}}}]}}"#
    );
    let req = hyper::Request::put(format!(
        "http://{addr}/v1/routes/httproutes/bench/podinfo/weights"
    ))
    .body(Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("weights API: {status} {}", String::from_utf8_lossy(&bytes));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    v["version"].as_u64().context("version in answer")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second on Linux); the command
    // name (field 2) is in parentheses and may contain spaces, so count from its end.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn run(n: usize, changes: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("serin-push-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("routes.yaml"),
        r#"
apiVersion: v1
kind: Service
metadata: {name: podinfo, namespace: bench}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 9898}]}
---
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {name: podinfo-primary, namespace: bench}
spec: {endpoints: ["127.0.0.1:19001", "127.0.0.1:19011"]}
---
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {name: podinfo-canary, namespace: bench}
spec: {endpoints: ["127.0.0.1:19002"]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: podinfo, namespace: bench}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo}]
  rules:
    - matches: [{headers: [{name: x-canary, value: insider}]}]
      backendRefs: [{name: podinfo-canary}]
    - backendRefs:
        - {name: podinfo-primary, weight: 100}
        - {name: podinfo-canary, weight: 0}
"#,
    )?;
    let cp = serin_mesh_control::start(serin_mesh_control::Config {
        listen: "127.0.0.1:0".parse()?,
        source: serin_mesh_control::SourceConfig::Local {
            dir: dir.clone(),
            poll: Duration::from_secs(3600),
        },
        options: Default::default(),
    })
    .await?;
    let url: http::Uri = format!("http://{}", cp.addr).parse()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut clients = Vec::with_capacity(n);
    let full = std::env::var("PUSH_BENCH_CLIENT").is_ok_and(|v| v == "full");
    for i in 0..n {
        if full {
            let cfg = ClientConfig::new(url.clone(), "bench/frontend".parse()?, format!("p{i}"));
            clients.push(tokio::spawn(serin_mesh_api::client::run(
                cfg,
                Recorder { tx: tx.clone() },
            )));
        } else {
            let tx = tx.clone();
            let addr = cp.addr;
            clients.push(tokio::spawn(async move {
                if let Err(e) = light_client(addr, i, tx).await {
                    eprintln!("push-bench: {e:#}");
                }
            }));
        }
    }
    // Everyone has the initial snapshot.
    let mut have = 0;
    while have < n {
        let (v, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("clients did not all subscribe")?
            .context("channel")?;
        if v >= 1 {
            have += 1;
        }
    }
    let mut lat = Vec::with_capacity(changes);
    let mut put = Vec::with_capacity(changes);
    let mut first = Vec::with_capacity(changes);
    let mut median = Vec::with_capacity(changes);
    let mut in_force = Vec::with_capacity(changes);
    let cpu0 = cpu_seconds();
    for k in 0..changes {
        // A different canary weight (10..=99) on every even change, 0 on every odd one.
        let canary = if k % 2 == 0 { 10 + (k as u32 % 90) } else { 0 };
        let t0 = Instant::now();
        // The weights call publishes exactly the next version; acks arrive while snapshots are
        // still going out, so wait for every proxy's ack concurrently.
        let target = cp.hub.current().version + 1;
        let hub = cp.hub.clone();
        let converged = tokio::spawn(async move {
            let all = hub.wait_applied(target, Duration::from_secs(30)).await;
            (all, Instant::now())
        });
        let version = put_weights(cp.addr, 100 - canary, canary).await?;
        put.push(ms(t0.elapsed()));
        if version != target {
            bail!("the weights call published version {version}, expected {target}");
        }
        let mut arrivals = Vec::with_capacity(n);
        while arrivals.len() < n {
            let (v, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .context("a snapshot never arrived")?
                .context("channel")?;
            if v >= version {
                arrivals.push(ms(at.duration_since(t0)));
            }
        }
        arrivals.sort_by(|a, b| a.total_cmp(b));
        first.push(arrivals[0]);
        median.push(percentile(&arrivals, 0.5));
        lat.push(arrivals[n - 1]);
        let (all, at) = converged.await?;
        if !all {
            bail!("version {version} was not acknowledged by every proxy within 30 s");
        }
        in_force.push(ms(at.duration_since(t0)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_seconds() - cpu0;
    let rss = rss_mib();
    for v in [&mut lat, &mut put, &mut first, &mut median, &mut in_force] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    println!(
        "proxies={n} p50_ms={:.2} p99_ms={:.2} rss_mib={:.1}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        rss
    );
    let pair = |v: &[f64]| format!("{:.1}/{:.1}", percentile(v, 0.5), percentile(v, 0.99));
    eprintln!(
        "  N={n} client={} changes={changes} (ms p50/p99) put={} first={} median={} last={} in_force={} cpu_ms_per_change={:.1} snapshot_bytes={} load1={}",
        if full { "full" } else { "light" },
        pair(&put),
        pair(&first),
        pair(&median),
        pair(&lat),
        pair(&in_force),
        cpu * 1000.0 / changes as f64,
        cp.hub.current().line("bench", true).len(),
        load1(),
    );
    for c in clients {
        c.abort();
    }
    cp.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sizes = match std::env::var("PUSH_BENCH_N") {
            Ok(v) => v
                .split(',')
                .map(|n| n.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .context("PUSH_BENCH_N: expected proxy counts like 100,1000")?,
            Err(_) => vec![100, 1000],
        };
        if let Ok(v) = std::env::var("PUSH_BENCH_CLIENT")
            && v != "full"
            && v != "light"
        {
            bail!("PUSH_BENCH_CLIENT: {v:?} is not `light` (the default) or `full`");
        }
        let changes = match std::env::var("PUSH_BENCH_CHANGES") {
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|c| *c > 0)
                .context("PUSH_BENCH_CHANGES: expected a positive number of weight changes")?,
            Err(_) => CHANGES,
        };
        for n in sizes {
            if n == 0 {
                bail!("PUSH_BENCH_N: a proxy count must be at least 1");
            }
            run(n, changes).await?;
        }
        Ok(())
    })
}
