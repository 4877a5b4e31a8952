//! End to end, in process: the control plane (local source) streams to two real `serin-proxy`
//! instances in front of two stub upstreams, under continuous load.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serin_mesh_api::client::ClientConfig;
use serin_mesh_control::{Config, Running, SourceConfig};
use serin_proxy::{Proxy, ProxyConfig};

pub(super) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(super) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A stub upstream answering every request with `name`.
async fn upstream(name: &'static str) -> anyhow::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

pub(super) fn temp_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "serin-cp-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn routes_yaml(primary: SocketAddr, canary: SocketAddr) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: podinfo, namespace: test}}
spec: {{}}
---
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {{name: podinfo-primary, namespace: test}}
spec: {{endpoints: ["{primary}"]}}
---
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {{name: podinfo-canary, namespace: test}}
spec: {{endpoints: ["{canary}"]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: podinfo, namespace: test}}
spec:
  parentRefs: [{{group: "", kind: Service, name: podinfo}}]
  rules:
    - backendRefs:
        - {{name: podinfo-primary, weight: 100}}
        - {{name: podinfo-canary, weight: 0}}
"#
    )
}

pub(super) async fn control_plane(
    dir: &std::path::Path,
    listen: SocketAddr,
) -> anyhow::Result<Running> {
    Ok(serin_mesh_control::start(Config {
        listen,
        source: SourceConfig::Local {
            dir: dir.to_path_buf(),
            poll: Duration::from_millis(50),
        },
        options: Default::default(),
    })
    .await?)
}

pub(super) struct TestProxy {
    pub(super) proxy: Proxy,
    _client: tokio::task::JoinHandle<()>,
}

pub(super) async fn proxy(cp: SocketAddr, n: usize) -> anyhow::Result<TestProxy> {
    let proxy = Proxy::start(ProxyConfig {
        outbound: "127.0.0.1:0".parse()?,
        admin: None,
        ..ProxyConfig::default()
    })
    .await?;
    let mut cfg = ClientConfig::new(
        format!("http://{cp}").parse()?,
        "test/frontend".parse()?,
        format!("frontend-{n}"),
    );
    // Reconnect quickly so the restart test does not wait out the production backoff.
    cfg.backoff_max = Duration::from_millis(200);
    let client = serin_proxy::control_client::spawn_with(cfg, proxy.table());
    Ok(TestProxy {
        proxy,
        _client: client,
    })
}

/// Waits until the proxy applied a table of at least `version`.
pub(super) async fn applied(p: &TestProxy, version: u64) -> anyhow::Result<()> {
    let mut ev = p.proxy.table().events();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if ev.borrow_and_update().version >= version {
                return;
            }
            if ev.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .with_context(|| format!("proxy never applied version {version}"))
}

#[derive(Default)]
struct Tally {
    primary: AtomicU64,
    canary: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn reset(&self) -> (u64, u64) {
        (
            self.primary.swap(0, Ordering::SeqCst),
            self.canary.swap(0, Ordering::SeqCst),
        )
    }
    fn total(&self) -> u64 {
        self.primary.load(Ordering::SeqCst) + self.canary.load(Ordering::SeqCst)
    }
}

/// Continuous load through one proxy until `stop`; every outcome is tallied.
fn load(addr: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = client();
        while !stop.load(Ordering::SeqCst) {
            let req = Request::get(format!("http://{addr}/"))
                .header("host", "podinfo")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let outcome = async {
                let resp = c.request(req).await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                Some(resp.into_body().collect().await.ok()?.to_bytes())
            }
            .await;
            match outcome.as_deref() {
                Some(b"primary") => tally.primary.fetch_add(1, Ordering::SeqCst),
                Some(b"canary") => tally.canary.fetch_add(1, Ordering::SeqCst),
                _ => tally.failed.fetch_add(1, Ordering::SeqCst),
            };
        }
    })
}

/// Waits until `tally` counted at least `n` requests sent after this call (bounded). Each load
/// loop has one request in flight at a time; the first one to finish after the call may have been
/// routed before the caller's change took effect, so it is dropped rather than counted.
async fn collect(tally: &Tally, n: u64) -> anyhow::Result<(u64, u64)> {
    async fn counted(tally: &Tally, n: u64) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(20), async {
            while tally.total() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .context("load stalled")
    }
    tally.reset();
    counted(tally, 1).await?;
    tally.reset();
    counted(tally, n).await?;
    Ok(tally.reset())
}

async fn put_weights(
    cp: SocketAddr,
    primary: u32,
    canary: u32,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({"backends":[
        {"name":"podinfo-primary","weight":primary},
        {"name":"podinfo-canary","weight":canary}]});
    let req = Request::put(format!(
        "http://{cp}/v1/routes/httproutes/test/podinfo/weights"
    ))
    .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = client().request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("weights: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

async fn wait_converged(cp: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let req = Request::get(format!(
        "http://{cp}/v1/routes/httproutes/test/podinfo?wait=10s"
    ))
    .body(Full::new(Bytes::new()))?;
    let resp = client().request(req).await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&bytes)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_move_100_0_to_50_50_to_0_100_under_load_with_no_failed_request()
-> anyhow::Result<()> {
    let primary = upstream("primary").await?;
    let canary = upstream("canary").await?;
    let dir = temp_dir();
    std::fs::write(dir.join("podinfo.yaml"), routes_yaml(primary, canary))?;
    let cp = control_plane(&dir, "127.0.0.1:0".parse()?).await?;
    let cp_addr = cp.addr;
    let proxies = [proxy(cp_addr, 0).await?, proxy(cp_addr, 1).await?];
    for p in &proxies {
        applied(p, 1).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Tally>> = (0..2).map(|_| Arc::new(Tally::default())).collect();
    let loads: Vec<_> = proxies
        .iter()
        .zip(&tallies)
        .map(|(p, t)| load(p.proxy.outbound_addr(), t.clone(), stop.clone()))
        .collect();

    // 100/0: everything to the primary.
    for t in &tallies {
        let (p, c) = collect(t, 200).await?;
        assert_eq!(c, 0, "canary got traffic at weight 0 ({p} primary)");
    }

    // 50/50: both see the change (acked) and both backends get traffic.
    let set = put_weights(cp_addr, 50, 50).await?;
    let version = set["version"]
        .as_u64()
        .context("version in weights answer")?;
    let status = wait_converged(cp_addr).await?;
    assert_eq!(status["converged"], true, "{status}");
    assert_eq!(status["proxiesUpToDate"], 2, "{status}");
    for p in &proxies {
        applied(p, version).await?;
    }
    for t in &tallies {
        let (p, c) = collect(t, 600).await?;
        let share = c as f64 / (p + c) as f64;
        assert!(
            (0.35..=0.65).contains(&share),
            "canary share {share} at 50/50 ({p}/{c})"
        );
    }

    // 0/100: everything to the canary.
    let set = put_weights(cp_addr, 0, 100).await?;
    let version = set["version"].as_u64().context("version")?;
    assert_eq!(wait_converged(cp_addr).await?["converged"], true);
    for p in &proxies {
        applied(p, version).await?;
    }
    for t in &tallies {
        let (p, _) = collect(t, 200).await?;
        assert_eq!(p, 0, "primary got traffic at weight 0");
    }

    stop.store(true, Ordering::SeqCst);
    for l in loads {
        l.await?;
    }
    for t in &tallies {
        assert_eq!(t.failed.load(Ordering::SeqCst), 0, "failed requests");
    }
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_routing_while_the_control_plane_is_down_and_resync_when_it_is_back()
-> anyhow::Result<()> {
    let primary = upstream("primary").await?;
    let canary = upstream("canary").await?;
    let dir = temp_dir();
    std::fs::write(dir.join("podinfo.yaml"), routes_yaml(primary, canary))?;
    let cp = control_plane(&dir, "127.0.0.1:0".parse()?).await?;
    let cp_addr = cp.addr;
    let proxies = [proxy(cp_addr, 0).await?, proxy(cp_addr, 1).await?];
    for p in &proxies {
        applied(p, 1).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Tally>> = (0..2).map(|_| Arc::new(Tally::default())).collect();
    let loads: Vec<_> = proxies
        .iter()
        .zip(&tallies)
        .map(|(p, t)| load(p.proxy.outbound_addr(), t.clone(), stop.clone()))
        .collect();

    // Kill the control plane: listener and every stream close.
    cp.stop().await;
    for t in &tallies {
        let (p, c) = collect(t, 300).await?;
        assert_eq!(c, 0, "proxies kept the last table (100/0; {p} primary)");
    }

    // Back on the same address (a fresh process would start from version 1 too), with a
    // different state: the proxies must reconnect and pick it up.
    let cp = control_plane(&dir, cp_addr).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        while cp.hub.status().proxies.len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .context("proxies did not reconnect")?;
    assert_eq!(wait_converged(cp_addr).await?["converged"], true);
    let set = put_weights(cp_addr, 0, 100).await?;
    assert_eq!(
        wait_converged(cp_addr).await?["proxiesUpToDate"],
        2,
        "{set}"
    );
    for t in &tallies {
        let (p, _) = collect(t, 200).await?;
        assert_eq!(p, 0, "proxies resynced to 0/100");
    }

    stop.store(true, Ordering::SeqCst);
    for l in loads {
        l.await?;
    }
    for t in &tallies {
        assert_eq!(t.failed.load(Ordering::SeqCst), 0, "failed requests");
    }
    cp.stop().await;
    Ok(())
}

/// The value of the proxy's sample `name` (no labels: the test proxy has no identity labels).
fn proxy_sample(p: &TestProxy, name: &str) -> Option<f64> {
    let text = p.proxy.registry().render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the proxy's sample `name` satisfies `ok`.
async fn proxy_sample_until(
    p: &TestProxy,
    name: &str,
    ok: impl Fn(f64) -> bool,
) -> anyhow::Result<f64> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(v) = proxy_sample(p, name).filter(|v| ok(*v)) {
                return v;
            }
            // /metrics has no change notification; a short poll bounds the wait.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("{name} is {:?}", proxy_sample(p, name)))
}

#[tokio::test]
async fn a_proxy_says_on_its_metrics_whether_its_control_plane_stream_is_up() -> anyhow::Result<()>
{
    let primary = upstream("primary").await?;
    let canary = upstream("canary").await?;
    let dir = temp_dir();
    std::fs::write(dir.join("podinfo.yaml"), routes_yaml(primary, canary))?;
    let cp = control_plane(&dir, "127.0.0.1:0".parse()?).await?;
    let cp_addr = cp.addr;
    let p = proxy(cp_addr, 0).await?;
    applied(&p, 1).await?;
    assert_eq!(
        proxy_sample(&p, "serin_proxy_control_plane_connected"),
        Some(1.0)
    );
    assert_eq!(
        proxy_sample(&p, "serin_proxy_control_plane_disconnects_total"),
        Some(0.0)
    );

    cp.stop().await;
    proxy_sample_until(&p, "serin_proxy_control_plane_connected", |v| v == 0.0).await?;
    proxy_sample_until(&p, "serin_proxy_control_plane_disconnects_total", |v| {
        v >= 1.0
    })
    .await?;

    let cp = control_plane(&dir, cp_addr).await?;
    proxy_sample_until(&p, "serin_proxy_control_plane_connected", |v| v == 1.0).await?;
    cp.stop().await;
    Ok(())
}
