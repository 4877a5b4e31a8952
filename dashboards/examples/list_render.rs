//! The overview at 1,000 Canaries, rendered server-side through the real router: the time from
//! request to the last byte of the answer, median of N, with no network (the router is called
//! in-process).
//!
//! `cargo run --release -p serin-dashboard --example list_render [-- N_CANARIES [ROUNDS]]`
//!
//! Two backends over the same in-memory store, whose Canaries are kept as the JSON a runtime
//! persists (engine status and history, as the Kubernetes status holds them):
//! - `indexed`: [`EngineBackend`], as served now — summaries kept in memory, each render filters
//!   and pages them;
//! - `reference`: the path before: every render decodes and converts every Canary (what the
//!   Kubernetes source did after its list call; the API round trips it also made, one list and
//!   one GET per target Deployment, are not in this figure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use serin_dashboard::engine::{EngineBackend, EngineCanary, EngineStore};
use serin_dashboard::model::{
    CanaryKey, CanaryState, CanarySummary, Command, CommandReceipt, HistoryEntry, TargetRef, Update,
};
use serin_dashboard::{Backend, BackendError, DashboardConfig, HistoryQuery};
use tokio::sync::broadcast;
use tower::ServiceExt;

const PHASES: [&str; 5] = [
    "Initialized",
    "Progressing",
    "Succeeded",
    "Failed",
    "WaitingPromotion",
];

/// One Canary as persisted: (key, engine status JSON, history JSON).
struct Stored {
    key: CanaryKey,
    status: Value,
    history: Value,
}

struct JsonStore {
    canaries: Vec<Stored>,
    changes: broadcast::Sender<CanaryKey>,
}

fn decode(s: &Stored) -> EngineCanary {
    EngineCanary {
        key: s.key.clone(),
        target: TargetRef {
            kind: "Deployment".into(),
            name: s.key.name.clone(),
        },
        status: serde_json::from_value(s.status.clone()).expect("a stored status"),
        history: serde_json::from_value(s.history.clone()).expect("a stored history"),
        pending: Vec::new(),
        target_revision: Some("rev-2".into()),
        analysis: None,
    }
}

impl EngineStore for JsonStore {
    async fn canaries(&self) -> Result<Vec<EngineCanary>, BackendError> {
        Ok(self.canaries.iter().map(decode).collect())
    }
    async fn canary(&self, key: &CanaryKey) -> Result<Option<EngineCanary>, BackendError> {
        Ok(self.canaries.iter().find(|s| &s.key == key).map(decode))
    }
    async fn enqueue(&self, _: &CanaryKey, _: serin_core::Command) -> Result<(), BackendError> {
        Err(BackendError::Invalid("read-only benchmark store".into()))
    }
    fn changes(&self) -> broadcast::Receiver<CanaryKey> {
        self.changes.subscribe()
    }
}

/// The reference: every list decodes and converts every Canary.
struct Reference(Arc<JsonStore>, Arc<EngineBackend<JsonStore>>);

impl Backend for Reference {
    async fn list(&self) -> Result<Vec<CanarySummary>, BackendError> {
        let mut items: Vec<CanarySummary> = self
            .0
            .canaries()
            .await?
            .iter()
            .map(|c| {
                serin_dashboard::convert::summary(
                    &c.key,
                    c.target.clone(),
                    &c.status,
                    c.target_revision.clone(),
                )
            })
            .collect();
        items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(items)
    }
    async fn get(&self, key: &CanaryKey) -> Result<Option<CanaryState>, BackendError> {
        self.1.get(key).await
    }
    async fn history(
        &self,
        key: &CanaryKey,
        q: &HistoryQuery,
    ) -> Result<Vec<HistoryEntry>, BackendError> {
        self.1.history(key, q).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.1.subscribe()
    }
    async fn apply(&self, key: &CanaryKey, c: Command) -> Result<CommandReceipt, BackendError> {
        self.1.apply(key, c).await
    }
}

/// A Canary mid-way through its second run with `checks` analysed ticks in its history.
fn stored(i: usize, checks: usize) -> Stored {
    let phase = PHASES[i % PHASES.len()];
    let mut history = vec![
        json!({"at": "2026-11-21T10:00:00Z", "run": 2, "revision": "rev-2",
        "kind": "runStarted", "phase": "Progressing", "step": 0, "canaryWeight": 0,
        "iterations": 0, "failedChecks": 0, "threshold": 5, "message": "new revision rev-2"}),
    ];
    for t in 0..checks {
        history.push(
            json!({"at": format!("2026-11-21T10:{:02}:00Z", (t + 1) % 60), "run": 2,
            "revision": "rev-2", "kind": "advanced", "phase": "Progressing", "step": t,
            "canaryWeight": 10, "iterations": 0, "failedChecks": 0, "threshold": 5,
            "message": "checks passed",
            "checks": [{"name": "request-success-rate", "verdict": "pass", "value": 99.9,
                        "bound": {"min": 99.0}, "samples": 1200}]}),
        );
    }
    Stored {
        key: CanaryKey::new(format!("team-{}", i % 20), format!("app-{i:04}")),
        status: json!({"phase": phase, "canaryWeight": 20, "failedChecks": 0, "iterations": 0,
            "runs": 2, "lastAppliedSpec": "rev-2", "lastPromotedSpec": "rev-1",
            "run": {"id": 2, "revision": "rev-2", "startedAt": "2026-11-21T10:00:00Z", "step": 2}}),
        history: Value::Array(history),
    }
}

/// Median and p90 of `rounds` renders of `uri`, and the answer's size.
async fn time(app: &axum::Router, uri: &str, rounds: usize) -> (Duration, Duration, usize) {
    let mut took = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let resp = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("a request"))
            .await
            .expect("the router answers");
        assert!(resp.status().is_success(), "{uri}: {}", resp.status());
        bytes = resp
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes()
            .len();
        took.push(start.elapsed());
    }
    took.sort();
    (took[rounds / 2], took[rounds * 9 / 10], bytes)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(31);
    let store = Arc::new(JsonStore {
        canaries: (0..n).map(|i| stored(i, 20)).collect(),
        changes: broadcast::channel(16).0,
    });
    let indexed = EngineBackend::new(store.clone());
    // The index is primed by a task: wait until listing is served from it.
    while indexed.list().await.map(|l| l.len()).unwrap_or(0) < n {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reference = Arc::new(Reference(store.clone(), indexed.clone()));
    let new_app = serin_dashboard::router(indexed, DashboardConfig::default());
    let old_app = serin_dashboard::router(reference, DashboardConfig::default());
    println!(
        "canaries={n} rounds={rounds} (median, p90 of server-side renders; goal: list <= 200 ms)"
    );
    for uri in [
        "/",
        "/?phase=Failed&q=app-09",
        "/?page=3",
        "/api/v1/canaries?limit=200",
        "/api/v1/canaries",
    ] {
        let (new_median, new_p90, new_bytes) = time(&new_app, uri, rounds).await;
        let (old_median, old_p90, old_bytes) = time(&old_app, uri, rounds).await;
        assert_eq!(new_bytes, old_bytes, "{uri}: both paths answer the same");
        println!(
            "render {uri:<28} indexed_ms={} p90_ms={}  reference_decode_all_ms={} p90_ms={}  bytes={new_bytes}",
            ms(new_median),
            ms(new_p90),
            ms(old_median),
            ms(old_p90),
        );
    }
}
