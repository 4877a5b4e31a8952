//! `EngineBackend` over a store holding the engine's own types: what the runtimes will use.

use crate::support;

use std::sync::{Arc, Mutex};

use serin_dashboard::engine::{EngineBackend, EngineCanary, EngineStore};
use serin_dashboard::model::{CanaryKey, TargetRef};
use serin_dashboard::{BackendError, DashboardConfig, router};
use support::{TOKEN, call, get_json};
use tokio::sync::broadcast;

struct Store {
    canaries: Mutex<Vec<EngineCanary>>,
    changes: broadcast::Sender<CanaryKey>,
}

impl EngineStore for Store {
    async fn canaries(&self) -> Result<Vec<EngineCanary>, BackendError> {
        Ok(self.canaries.lock().unwrap().clone())
    }
    async fn canary(&self, key: &CanaryKey) -> Result<Option<EngineCanary>, BackendError> {
        Ok(self
            .canaries
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.key == *key)
            .cloned())
    }
    async fn enqueue(
        &self,
        key: &CanaryKey,
        command: serin_core::Command,
    ) -> Result<(), BackendError> {
        let mut all = self.canaries.lock().unwrap();
        let c = all
            .iter_mut()
            .find(|c| c.key == *key)
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        c.pending.push(command);
        let _ = self.changes.send(key.clone());
        Ok(())
    }
    fn changes(&self) -> broadcast::Receiver<CanaryKey> {
        self.changes.subscribe()
    }
}

fn ts(s: i64) -> serin_core::Timestamp {
    serin_core::Timestamp::from_secs(1_790_000_000 + s)
}

fn entry(
    run: u64,
    at: i64,
    kind: serin_core::HistoryKind,
    phase: serin_core::Phase,
    weight: u32,
    msg: &str,
) -> serin_core::HistoryEntry {
    serin_core::HistoryEntry {
        at: ts(at),
        run,
        revision: Some(format!("rev{run}")),
        kind,
        phase,
        step: 0,
        canary_weight: weight,
        iterations: 0,
        failed_checks: 0,
        threshold: 2,
        checks: vec![],
        gates: vec![],
        commands: vec![],
        message: msg.into(),
        sample: None,
    }
}

/// `prod/podinfo` (a Process target) in `status`, with `history` and no pending command.
fn podinfo(
    status: serin_core::Status,
    history: Vec<serin_core::HistoryEntry>,
    target_revision: &str,
) -> EngineCanary {
    EngineCanary {
        key: CanaryKey::new("prod", "podinfo"),
        target: TargetRef {
            kind: "Process".into(),
            name: "podinfo".into(),
        },
        status,
        history,
        pending: vec![],
        target_revision: Some(target_revision.into()),
        analysis: None,
    }
}

/// The dashboard's router over an engine store holding `canary`, served on 127.0.0.1:0 with
/// [`TOKEN`]: (the store, the base URL, the server task).
async fn serve_engine(canary: EngineCanary) -> (Arc<Store>, String, tokio::task::JoinHandle<()>) {
    let store = Arc::new(Store {
        canaries: Mutex::new(vec![canary]),
        changes: broadcast::channel(16).0,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(
        EngineBackend::new(store.clone()),
        DashboardConfig {
            token: Some(TOKEN.into()),
        },
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (store, base, server)
}

/// The run in flight in these tests: run 2, of revision rev2, started at 100 s.
fn run2() -> serin_core::Run {
    serin_core::Run {
        id: 2,
        revision: "rev2".into(),
        started_at: ts(100),
        ..Default::default()
    }
}

#[tokio::test]
async fn engine_state_is_served_and_gate_commands_take_effect_at_once() {
    use serin_core::{HistoryKind as K, Phase as P};
    let status = serin_core::Status {
        phase: P::Progressing,
        canary_weight: 20,
        last_promoted_spec: Some("rev1".into()),
        run: Some(run2()),
        runs: 2,
        ..Default::default()
    };
    let history = vec![
        entry(1, 0, K::RunStarted, P::Progressing, 0, "new revision rev1"),
        entry(1, 60, K::Advanced, P::Progressing, 50, "advanced"),
        entry(1, 120, K::Succeeded, P::Succeeded, 0, "analysis complete"),
        entry(
            2,
            200,
            K::RunStarted,
            P::Progressing,
            0,
            "new revision rev2",
        ),
        entry(2, 260, K::Advanced, P::Progressing, 20, "advanced"),
    ];
    let (store, base, server) = serve_engine(podinfo(status, history, "rev2")).await;

    let v = get_json(&format!("{base}/api/v1/canaries/prod/podinfo")).await;
    assert_eq!(v["canary"]["phase"], "Progressing");
    assert_eq!(v["canary"]["run"]["revision"], "rev2");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["outcome"]["result"], "promoted");
    assert_eq!(runs[0]["timeline"][0]["type"], "runStarted");

    let payload = r#"{"name":"podinfo","namespace":"prod"}"#;
    assert_eq!(
        call("POST", &format!("{base}/gate/check"), &[], payload)
            .await
            .0,
        403
    );
    let auth = format!("Bearer {TOKEN}");
    let (s, b, _) = call(
        "POST",
        &format!("{base}/gate/open"),
        &[("authorization", &auth)],
        payload,
    )
    .await;
    assert_eq!(s, 202, "{b}");
    // Pending, not yet applied by the engine, and already open for the gate check.
    assert_eq!(
        call("POST", &format!("{base}/gate/check"), &[], payload)
            .await
            .0,
        200
    );
    let pending = store.canaries.lock().unwrap()[0].pending.clone();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        serde_json::to_value(&pending[0]).unwrap()["action"],
        "gate-open"
    );
    let h = get_json(&format!(
        "{base}/api/v1/canaries/prod/podinfo/history?run=2"
    ))
    .await;
    let last = h["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["type"].as_str(), last["state"].as_str()),
        (Some("command"), Some("received"))
    );
    // Resume while not paused is refused.
    let (s, _, _) = call(
        "POST",
        &format!("{base}/api/v1/canaries/prod/podinfo/actions/resume"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(s, 409);
    server.abort();
}

/// A router over one engine canary in `phase` (run 2 of rev2 ended or in flight as the phase
/// says): (base URL, server task).
async fn one_canary_in(phase: serin_core::Phase) -> (String, tokio::task::JoinHandle<()>) {
    let in_flight = matches!(
        phase,
        serin_core::Phase::Waiting
            | serin_core::Phase::Progressing
            | serin_core::Phase::WaitingPromotion
            | serin_core::Phase::Promoting
            | serin_core::Phase::Finalising
    );
    let status = serin_core::Status {
        phase,
        last_promoted_spec: Some("rev1".into()),
        run: in_flight.then(run2),
        runs: 2,
        ..Default::default()
    };
    let target_revision = if in_flight { "rev2" } else { "rev1" };
    let (_, base, server) = serve_engine(podinfo(status, vec![], target_revision)).await;
    (base, server)
}

#[tokio::test]
async fn promote_and_abort_the_engine_would_ignore_are_refused_not_accepted() {
    // The engine applies promote and abort only while an analysis runs (Waiting, Progressing,
    // WaitingPromotion) and records any other as "ignored". Accepting one with 202 told
    // `serin promote` "recorded ... applies it on its next tick" (exit 0) for nothing.
    use serin_core::Phase as P;
    let auth = format!("Bearer {TOKEN}");
    for (phase, action, accepted, why) in [
        (P::Succeeded, "promote", false, "no analysis in progress"),
        (P::Failed, "abort", false, "no analysis in progress"),
        (P::Promoting, "abort", false, "promotion already under way"),
        (P::Progressing, "promote", true, ""),
        (P::WaitingPromotion, "abort", true, ""),
    ] {
        let (base, server) = one_canary_in(phase).await;
        let (s, b, _) = call(
            "POST",
            &format!("{base}/api/v1/canaries/prod/podinfo/actions/{action}"),
            &[("authorization", &auth)],
            "",
        )
        .await;
        if accepted {
            assert_eq!(s, 202, "{phase:?} {action}: {b}");
        } else {
            assert_eq!(s, 409, "{phase:?} {action}: {b}");
            assert!(
                b.contains(why) && b.contains("conflict"),
                "{phase:?} {action}: {b}"
            );
        }
        server.abort();
    }
}
