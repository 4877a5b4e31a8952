//! N Canaries through serin-kube's real controller (`run_controller`: the kube-runtime
//! Controller, its watches and reflectors, the reconcile, the driver and the engine) against the
//! mocked API server of `serin_kube::testing`, playing a cluster: lists answer with N Canaries
//! and their target Deployments, applies and status writes are stored and streamed back on the
//! watches, an applied primary is ready at once.
//!
//! ```sh
//! cargo run --release -p serin-kube --example scale -- 100 1000
//! ```
//!
//! Prints, per N, `platform=kubernetes-mock canaries=N bootstrap_s=… api_requests_per_min=…
//! rss_mib=… 5xx=0`: the time until every Canary is Initialized, the requests the controller
//! made per minute in steady state (over two analysis intervals of 30 s, after bootstrap), its
//! resident memory, and the API server errors it met. Watch requests are not counted as requests
//! per minute (a real API server keeps one watch open per resource; this mock ends a watch's body
//! after the events it has, so the watcher re-opens it) and are printed apart. The goals of
//! issue #20 are for 1,000 Canaries on a real kube-apiserver: ≤ 100 requests/min in steady
//! state, bootstrap ≤ 60 s without 5xx. The mock answers at once and never fails, so bootstrap
//! here is the controller's own work, not the API server's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_controller::metrics::{Health, Metrics};
use serin_kube::testing::{Call, mock_client, respond};
use serin_kube::{KubeConfig, NoBackendAnalyzer, run_controller, system_clock};
use tower_test::mock::SendResponse;

const NS: &str = "default";

type Responder = SendResponse<http::Response<kube::client::Body>>;

/// The cluster the mock API server plays.
#[derive(Default)]
struct Cluster {
    canaries: HashMap<String, Value>,
    deployments: HashMap<String, Value>,
    services: HashMap<String, Value>,
    routes: HashMap<String, Value>,
    rv: u64,
    /// Events not yet delivered, per watched collection path.
    queued: HashMap<String, Vec<Value>>,
    /// Open watches, per collection path.
    watches: HashMap<String, Vec<Responder>>,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    watches: AtomicU64,
    errors_5xx: AtomicU64,
}

const CANARIES: &str = "/apis/serin.dev/v1beta1/canaries";
const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
const SERVICES: &str = "/api/v1/services";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const EMPTY: &[&str] = &[
    "/apis/apps/v1/daemonsets",
    "/api/v1/configmaps",
    "/api/v1/secrets",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/apis/split.smi-spec.io/v1alpha2/trafficsplits",
];

fn canary(i: usize) -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": format!("app-{i}"), "namespace": NS, "uid": format!("uid-{i}"), "resourceVersion": "1", "generation": 1},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{i}")},
            "service": {"port": 8080},
            "analysis": {"interval": "30s", "threshold": 2, "maxWeight": 30, "stepWeight": 10}
        }
    })
}

fn ready(mut d: Value) -> Value {
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    d["metadata"]["generation"] = json!(1);
    d["status"] = json!({"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                         "availableReplicas": replicas, "readyReplicas": replicas});
    d
}

fn target(i: usize) -> Value {
    ready(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("app-{i}"), "namespace": NS, "labels": {"app": format!("app-{i}")}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": format!("app-{i}")}},
            "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                         "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}]}}
        }
    }))
}

impl Cluster {
    fn new(n: usize) -> Self {
        let mut c = Cluster::default();
        for i in 0..n {
            c.canaries.insert(format!("app-{i}"), canary(i));
            c.deployments.insert(format!("app-{i}"), target(i));
        }
        c.rv = 10;
        c
    }

    fn list(&self, path: &str) -> Value {
        let items: Vec<Value> = match path {
            CANARIES => self.canaries.values().cloned().collect(),
            DEPLOYMENTS => self.deployments.values().cloned().collect(),
            SERVICES => self.services.values().cloned().collect(),
            ROUTES => self.routes.values().cloned().collect(),
            _ => vec![],
        };
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.rv.to_string()}, "items": items})
    }

    /// Stores `object` under a new resourceVersion and queues its event for `collection`.
    fn stored(&mut self, collection: &str, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.queued
            .entry(collection.to_string())
            .or_default()
            .push(json!({"type": "MODIFIED", "object": object.clone()}));
        object
    }

    /// Delivers queued events on open watches (one body per watch, events as JSON lines).
    fn flush(&mut self) {
        for (path, events) in self.queued.iter_mut() {
            if events.is_empty() {
                continue;
            }
            let Some(open) = self.watches.get_mut(path) else {
                continue;
            };
            let Some(send) = open.pop() else { continue };
            let body: String = events
                .drain(..)
                .map(|e| e.to_string() + "\n")
                .collect::<String>();
            send.send_response(
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.into_bytes()))
                    .expect("a valid response"),
            );
        }
    }

    /// Answers one call that is not a list or a watch.
    fn write(&mut self, call: &Call) -> (u16, Value) {
        let segs: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
        let name = segs.last().copied().unwrap_or_default().to_string();
        let body = call.body.clone();
        match (call.method.as_str(), segs.as_slice()) {
            ("PATCH", [.., "canaries", n, "status"]) => {
                let n = n.to_string();
                let Some(mut c) = self.canaries.get(&n).cloned() else {
                    return (404, json!({}));
                };
                c["status"] = body["status"].clone();
                let c = self.stored(CANARIES, c);
                self.canaries.insert(n, c.clone());
                (200, c)
            }
            ("PATCH", [.., "deployments", _]) => {
                let mut d = self.deployments.get(&name).cloned().unwrap_or(json!({}));
                if call.apply {
                    d = body;
                } else if let Some(r) = body["spec"]["replicas"].as_i64() {
                    d["spec"]["replicas"] = json!(r);
                }
                let d = self.stored(DEPLOYMENTS, ready(d));
                self.deployments.insert(name, d.clone());
                (200, d)
            }
            ("PATCH", [.., "services", _]) => {
                let s = self.stored(SERVICES, body);
                self.services.insert(name, s.clone());
                (200, s)
            }
            ("PATCH", [.., "httproutes", _]) => {
                let mut r = body;
                r["metadata"]["generation"] = json!(1);
                let r = self.stored(ROUTES, r);
                self.routes.insert(name, r.clone());
                (200, r)
            }
            ("POST", [.., "events"]) => (201, body),
            ("PATCH", [.., "events", _]) => (200, body),
            _ => (
                404,
                serin_kube::testing::status_err(404, "NotFound", "not in the scale mock"),
            ),
        }
    }

    fn initialized(&self) -> usize {
        self.canaries
            .values()
            .filter(|c| c["status"]["phase"] == "Initialized")
            .count()
    }
}

async fn serve(
    mut handle: serin_kube::testing::Handle,
    cluster: Arc<Mutex<Cluster>>,
    counts: Arc<Counts>,
) {
    let mut flush = tokio::time::interval(Duration::from_millis(20));
    loop {
        let next = tokio::select! {
            r = handle.next_request() => r,
            _ = flush.tick() => {
                cluster.lock().unwrap().flush();
                continue;
            }
        };
        let Some((req, send)) = next else { return };
        let call = Call::read(req).await;
        let mut c = cluster.lock().unwrap();
        if call.is_watch() {
            counts.watches.fetch_add(1, Ordering::Relaxed);
            c.watches.entry(call.path.clone()).or_default().push(send);
            continue;
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let (code, answer) = if call.method == "GET"
            && (EMPTY.contains(&call.path.as_str())
                || [CANARIES, DEPLOYMENTS, SERVICES, ROUTES].contains(&call.path.as_str()))
        {
            (200, c.list(&call.path))
        } else {
            c.write(&call)
        };
        if code >= 500 {
            counts.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
        respond(send, code, &answer);
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn measure(n: usize, steady: Duration) {
    let cluster = Arc::new(Mutex::new(Cluster::new(n)));
    let counts = Arc::new(Counts::default());
    let (client, handle) = mock_client(NS);
    let server = tokio::spawn(serve(handle, cluster.clone(), counts.clone()));
    let config = KubeConfig {
        default_provider: "serin".into(),
        analyzer: Arc::new(NoBackendAnalyzer),
        probe: None,
        namespace: None,
        reporter: "serin-controller".into(),
        instance: None,
        clock: system_clock(),
        webhook_backoff: Duration::from_millis(500),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let controller = tokio::spawn(run_controller(
        client,
        config,
        Arc::new(Metrics::new()),
        Arc::new(Health::default()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    // Bootstrap: every Canary Initialized (bounded).
    let deadline = started + Duration::from_secs(600);
    while cluster.lock().unwrap().initialized() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bootstrap = started.elapsed();
    let done = cluster.lock().unwrap().initialized();
    let bootstrap_requests = counts.requests.swap(0, Ordering::Relaxed);
    counts.watches.swap(0, Ordering::Relaxed);
    // Steady state: nothing changes in the cluster.
    tokio::time::sleep(steady).await;
    let per_min = counts.requests.load(Ordering::Relaxed) as f64 * 60.0 / steady.as_secs_f64();
    let watches_per_min =
        counts.watches.load(Ordering::Relaxed) as f64 * 60.0 / steady.as_secs_f64();
    println!(
        "platform=kubernetes-mock canaries={n} bootstrap_s={:.1} api_requests_per_min={per_min:.1} rss_mib={:.1} 5xx={}",
        bootstrap.as_secs_f64(),
        rss_mib(),
        counts.errors_5xx.load(Ordering::Relaxed),
    );
    println!(
        "#   initialized={done}/{n} bootstrap_requests={bootstrap_requests} steady_window_s={} watch_reopens_per_min={watches_per_min:.1} (mock artifact)",
        steady.as_secs()
    );
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    server.abort();
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    let steady = Duration::from_secs(
        std::env::var("SERIN_SCALE_STEADY_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    println!(
        "# goals (issue #20, 1,000 Canaries on a real kube-apiserver): api_requests_per_min <= 100, bootstrap_s <= 60 with 5xx=0"
    );
    for n in sizes {
        measure(n, steady).await;
    }
}
