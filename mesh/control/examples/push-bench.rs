//! Push latency with many proxies: N lightweight clients in this process (the real stream client
//! from `serin_mesh_api::client`, each with its own HTTP/2 connection, applying and acking every
//! snapshot) subscribe to a control plane (local source). Each weight change goes through the
//! HTTP weights API; its latency is the time from sending the change until the LAST of the N
//! clients has received the snapshot carrying it. p50/p99 are over the changes of one run.
//!
//! `cargo run --release -p serin-mesh-control --example push-bench` prints one line per N:
//! `proxies=<N> p50_ms=<x> p99_ms=<y> rss_mib=<z>` (rss: this whole process, control plane and
//! clients together). Target: p99 ≤ 100 ms at 1,000 proxies.

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

const CHANGES: usize = 40;

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

async fn run(n: usize) -> anyhow::Result<()> {
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
    for i in 0..n {
        let cfg = ClientConfig::new(url.clone(), "bench/frontend".parse()?, format!("p{i}"));
        clients.push(tokio::spawn(serin_mesh_api::client::run(
            cfg,
            Recorder { tx: tx.clone() },
        )));
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
    let mut lat = Vec::with_capacity(CHANGES);
    for k in 0..CHANGES {
        let canary = if k % 2 == 0 { 10 + k as u32 } else { 0 };
        let t0 = Instant::now();
        let version = put_weights(cp.addr, 100 - canary, canary).await?;
        let mut got = 0;
        let mut last = t0;
        while got < n {
            let (v, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .context("a snapshot never arrived")?
                .context("channel")?;
            if v >= version {
                got += 1;
                last = last.max(at);
            }
        }
        lat.push(last.duration_since(t0).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = rss_mib();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "proxies={n} p50_ms={:.2} p99_ms={:.2} rss_mib={:.1}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        rss
    );
    eprintln!(
        "  (N={n}: {CHANGES} changes, max {:.2} ms; target p99 <= 100 ms at 1000 proxies)",
        lat.last().copied().unwrap_or(0.0)
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
        for n in [100, 1000] {
            run(n).await?;
        }
        Ok(())
    })
}
