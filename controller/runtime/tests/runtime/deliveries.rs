//! The background notification queues: ordered per Canary, never waiting for another Canary's
//! receiver, bounded (the oldest dropped and recorded), drained at shutdown within a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serin_controller::adapters::*;
use serin_controller::alerts::{Alert, Severity};
use serin_controller::deliveries::{Deliveries, DeliveryConfig, Notification, Outgoing};
use serin_controller::metrics::Metrics;
use serin_controller::webhook::WebhookOutcome;
use serin_core::{HistoryEntry, HistoryKind, Phase, Timestamp, Webhook, WebhookKind};
use tokio::sync::{Semaphore, mpsc};

/// Hooks that report each call (canary, event message) and answer 200, or 500 for a message
/// starting with `fail`; Canary `stuck`'s receiver never answers, and every answer waits for a
/// permit of `gate` when one is set.
#[derive(Clone)]
struct Receivers {
    seen: mpsc::UnboundedSender<(String, String)>,
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Hooks for Receivers {
    async fn call(
        &self,
        canary: &CanaryContext,
        _webhook: &Webhook,
        _phase: Phase,
        _checksum: &str,
        extra: BTreeMap<String, String>,
    ) -> WebhookOutcome {
        let message = extra.get("eventMessage").cloned().unwrap_or_default();
        let _ = self.seen.send((canary.id.name.clone(), message.clone()));
        if canary.id.name == "stuck" {
            std::future::pending::<()>().await;
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let ok = !message.starts_with("fail");
        WebhookOutcome {
            ok,
            status: Some(if ok { 200 } else { 500 }),
            body: String::new(),
            error: None,
            attempts: 1,
            elapsed_ms: 0,
        }
    }
}

/// Alerts are not what these tests are about: every one is delivered.
struct Silent;

#[async_trait]
impl Notifier for Silent {
    async fn alert(&self, _c: &CanaryContext, _a: &Alert) {}
}

fn queues(
    gate: Option<Arc<Semaphore>>,
    config: DeliveryConfig,
) -> (
    Deliveries,
    mpsc::UnboundedReceiver<(String, String)>,
    Arc<Metrics>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::new());
    let d = Deliveries::new(
        Arc::new(Receivers { seen: tx, gate }),
        Arc::new(Silent),
        metrics.clone(),
        config,
    );
    (d, rx, metrics)
}

fn canary(name: &str) -> CanaryContext {
    let plan = crate::common::canary_plan(vec![10], 1, vec![]);
    CanaryContext::new(CanaryId::new("test", name), plan, name)
}

fn failed_entry() -> HistoryEntry {
    HistoryEntry {
        at: Timestamp::from_millis(1_700_000_000_000),
        run: 1,
        revision: None,
        kind: HistoryKind::NotificationFailed,
        phase: Phase::Progressing,
        step: 0,
        canary_weight: 10,
        iterations: 0,
        failed_checks: 0,
        threshold: 1,
        checks: vec![],
        gates: vec![],
        commands: vec![],
        message: String::new(),
        sample: None,
    }
}

fn event(message: &str) -> Outgoing {
    Outgoing {
        notification: Notification::Webhook {
            webhook: Webhook {
                name: "chat".into(),
                kind: WebhookKind::Event,
            },
            phase: Phase::Progressing,
            checksum: "r2".into(),
            extra: BTreeMap::from([("eventMessage".to_string(), message.to_string())]),
        },
        failed: failed_entry(),
    }
}

fn alert(message: &str) -> Outgoing {
    Outgoing {
        notification: Notification::Alert(Alert {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            severity: Severity::Info,
            message: message.into(),
            fields: vec![],
        }),
        failed: failed_entry(),
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("within 10s")
}

#[tokio::test]
async fn each_canary_is_served_in_order_and_never_waits_for_another_canarys_receiver() {
    let (d, mut seen, _) = queues(None, DeliveryConfig::default());
    let (stuck, fine) = (canary("stuck"), canary("fine"));
    d.enqueue(&stuck, vec![event("s1"), event("s2")]);
    d.enqueue(&fine, vec![event("f1"), alert("a"), event("f2")]);
    d.enqueue(&fine, vec![event("f3")]);
    within(d.idle(&fine.id)).await;
    let mut got = Vec::new();
    while let Ok(call) = seen.try_recv() {
        got.push(call);
    }
    let fine_calls: Vec<&str> = got
        .iter()
        .filter(|(c, _)| c == "fine")
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(fine_calls, ["f1", "f2", "f3"], "in order, all of them");
    assert_eq!(
        got.iter().filter(|(c, _)| c == "stuck").count(),
        1,
        "the stuck Canary's first is in flight, the second waits: {got:?}"
    );
    assert_eq!(d.waiting(&stuck.id), 2);
    assert_eq!(d.waiting(&fine.id), 0);
    assert!(d.take_failed(&fine.id).is_empty());
}

#[tokio::test]
async fn what_fails_waits_for_the_next_tick_and_can_be_handed_back() {
    let (d, _seen, metrics) = queues(None, DeliveryConfig::default());
    let c = canary("podinfo");
    d.enqueue(
        &c,
        vec![event("fail one"), event("fine"), event("fail two")],
    );
    within(d.idle(&c.id)).await;
    assert!(d.has_failed(&c.id));
    let failed = d.take_failed(&c.id);
    assert_eq!(failed.len(), 1, "the same failure once: {failed:?}");
    assert!(
        failed[0]
            .message
            .contains("event webhook \"chat\" was not delivered: status 500"),
        "{}",
        failed[0].message
    );
    assert_eq!(failed[0].gates[0].name, "chat");
    assert!(!d.has_failed(&c.id), "taken");
    // The write that was to record it failed: it is back for the next one.
    d.give_back(&c.id, failed);
    assert_eq!(d.take_failed(&c.id).len(), 1);
    let text = metrics.encode();
    assert!(
        text.contains(r#"serin_notification_deliveries_total{kind="webhook",result="failed"} 2"#)
            && text.contains(
                r#"serin_notification_deliveries_total{kind="webhook",result="delivered"} 1"#
            ),
        "{text}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_its_oldest_and_records_that() {
    let gate = Arc::new(Semaphore::new(0));
    let config = DeliveryConfig {
        capacity: 2,
        ..DeliveryConfig::default()
    };
    let (d, mut seen, metrics) = queues(Some(gate.clone()), config);
    let c = canary("podinfo");
    // One thread: the worker cannot start before this returns, so four meet a queue of two.
    d.enqueue(&c, vec![event("1"), event("2"), event("3"), event("4")]);
    gate.add_permits(4);
    within(d.idle(&c.id)).await;
    let mut got = Vec::new();
    while let Ok((_, m)) = seen.try_recv() {
        got.push(m);
    }
    assert_eq!(got, ["3", "4"], "the newest kept");
    let failed = d.take_failed(&c.id);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .message
            .contains("was not delivered: dropped, 2 notifications"),
        "{}",
        failed[0].message
    );
    let text = metrics.encode();
    assert!(
        text.contains(r#"serin_notification_deliveries_total{kind="webhook",result="dropped"} 2"#),
        "{text}"
    );
    assert!(text.contains("serin_notification_queue_depth 0"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_until_its_deadline_then_drops_what_is_left() {
    let config = DeliveryConfig {
        capacity: 8,
        drain: Duration::from_secs(5),
    };
    let (d, _seen, metrics) = queues(None, config);
    let (stuck, fine) = (canary("stuck"), canary("fine"));
    d.enqueue(&stuck, vec![event("s1"), event("s2"), event("s3")]);
    d.enqueue(&fine, vec![event("f1")]);
    let started = tokio::time::Instant::now();
    let drained = d.shutdown().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "the whole deadline, no more"
    );
    assert!(!drained.complete);
    assert_eq!(
        drained.lost, 3,
        "the stuck Canary's three; the other's went out"
    );
    assert_eq!(d.waiting(&fine.id), 0);
    // Stopped: nothing more is taken.
    d.enqueue(&fine, vec![event("late")]);
    assert_eq!(d.waiting(&fine.id), 0);
    let text = metrics.encode();
    assert!(
        text.contains(r#"serin_notification_deliveries_total{kind="webhook",result="lost"} 3"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_nothing_stuck_returns_as_soon_as_the_queues_are_empty() {
    let (d, _seen, _) = queues(None, DeliveryConfig::default());
    let c = canary("podinfo");
    d.enqueue(&c, vec![event("1"), event("2")]);
    let started = tokio::time::Instant::now();
    let drained = d.shutdown().await;
    assert!(drained.complete, "{drained:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_forgotten_canarys_queue_goes_away_after_delivering_what_it_held() {
    let gate = Arc::new(Semaphore::new(0));
    let (d, mut seen, _) = queues(Some(gate.clone()), DeliveryConfig::default());
    let c = canary("podinfo");
    d.enqueue(&c, vec![event("fail: last words")]);
    d.forget(&c.id);
    gate.add_permits(1);
    let (_, m) = within(seen.recv()).await.unwrap();
    assert_eq!(m, "fail: last words", "still delivered");
    assert_eq!(d.waiting(&c.id), 0, "no queue kept");
    assert!(
        d.take_failed(&c.id).is_empty(),
        "nothing kept for a Canary that is gone"
    );
}
