//! Notifications that fail: in the history, not only in the log.

use super::fixtures::*;

/// A controller context whose clock the test moves, for several ticks of one Canary.
struct Ticks {
    ctx: Arc<Context>,
    handle: Option<Handle>,
    now: Arc<std::sync::atomic::AtomicI64>,
    /// The "Advanced" Event's name once created: the recorder patches its series after that.
    advanced: Arc<Mutex<Option<String>>>,
}

impl Ticks {
    fn new(at: Timestamp, analyzer: Arc<dyn Analyzer>) -> Self {
        let (client, handle) = mock_client(NS);
        let now = Arc::new(std::sync::atomic::AtomicI64::new(at.as_millis()));
        let clock = now.clone();
        let mut config = config(at, analyzer, Some("serin-controller-0"));
        config.clock = Arc::new(move || {
            Timestamp::from_millis(clock.load(std::sync::atomic::Ordering::SeqCst))
        });
        Self {
            ctx: Arc::new(Context::new(client, config, Arc::new(Metrics::new()))),
            handle: Some(handle),
            now,
            advanced: Arc::default(),
        }
    }

    /// The "Advanced" Event: created the first time, counted in its series after that.
    fn advanced(&self) -> Expect {
        let name = self.advanced.lock().unwrap().clone();
        match name {
            None => {
                let keep = self.advanced.clone();
                event("Advanced").also(move |b| {
                    *keep.lock().unwrap() = b["metadata"]["name"].as_str().map(str::to_string);
                })
            }
            Some(name) => expect(
                "PATCH",
                format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/{name}"),
            )
            .check(|b| assert_eq!(b["reason"], "Advanced", "{b}")),
        }
    }

    /// One reconcile at `at`, answering exactly `calls`; it must finish within `within`.
    async fn tick(&mut self, canary: &Value, at: Timestamp, within: Duration, calls: Vec<Expect>) {
        self.now
            .store(at.as_millis(), std::sync::atomic::Ordering::SeqCst);
        let server = tokio::spawn(play(self.handle.take().unwrap(), calls));
        let result =
            tokio::time::timeout(within, reconcile(parse(canary.clone()), self.ctx.clone()))
                .await
                .unwrap_or_else(|_| panic!("the tick at {at:?} took longer than {within:?}"));
        result.unwrap();
        self.handle = Some(server.await.expect("scenario failed"));
    }

    /// The calls of a tick that moves the weight to `canary_weight` (the target at
    /// `podinfo:2`, the primary at `podinfo:1`), the status write checked by `check`.
    fn advancing(
        &self,
        canary: &Value,
        canary_weight: u32,
        check: impl FnOnce(&Value) + Send + 'static,
    ) -> Vec<Expect> {
        vec![
            get_target(deployment("podinfo:2")),
            get_primary(primary("podinfo:1")),
            apply_route(100 - canary_weight, canary_weight),
            self.advanced(),
            status_write(canary, check),
        ]
    }

    /// Waits until the Canary's notifications went out (or failed), then checks that no API
    /// call is left.
    async fn delivered(&mut self) {
        let id = serin_controller::adapters::CanaryId::new(NS, "podinfo");
        tokio::time::timeout(Duration::from_secs(10), self.ctx.deliveries().idle(&id))
            .await
            .expect("the notifications were delivered or failed within 10s");
        assert_no_more_calls(self.handle.as_mut().unwrap()).await;
    }
}

fn with_written(mut canary: Value, written: &Arc<Mutex<Value>>) -> Value {
    canary["status"] = written.lock().unwrap().clone();
    canary
}

fn keep(written: &Arc<Mutex<Value>>, b: &Value) {
    *written.lock().unwrap() = b["status"].clone();
}

fn failures(b: &Value) -> Vec<Value> {
    b["status"]["serin"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "notificationFailed")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_failed_event_webhook_is_in_the_next_ticks_history_not_only_the_log() {
    // The receiver stays down (its script is empty: every answer is 500).
    let hook = receiver::receiver(vec![]).await;
    let mut canary = canary("podinfo")
        .webhooks(json!([
            {"name": "chat", "type": "event", "url": format!("http://{}/events", hook.addr)}
        ]))
        .build();
    canary["spec"]["analysis"]["maxWeight"] = json!(50);
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let mut ticks = Ticks::new(at, analyzer(vec![pass()]));
    let written = Arc::new(Mutex::new(Value::Null));
    let minute = Duration::from_secs(60);

    // The tick does not wait for the receiver: its write cannot know the answer yet.
    let w = written.clone();
    ticks
        .tick(
            &canary,
            at + minute,
            Duration::from_secs(10),
            ticks.advancing(&canary, 20, move |b| {
                assert_eq!(b["status"]["canaryWeight"], 20, "the rollout went on");
                assert!(failures(b).is_empty(), "{b}");
                keep(&w, b);
            }),
        )
        .await;
    ticks.delivered().await;

    // The next tick records it, at the status it was sent for.
    let next = with_written(canary.clone(), &written);
    let w = written.clone();
    ticks
        .tick(
            &next,
            at + minute * 2,
            Duration::from_secs(10),
            ticks.advancing(&next, 30, move |b| {
                assert_eq!(b["status"]["canaryWeight"], 30);
                let failed = failures(b);
                assert_eq!(failed.len(), 1, "once: {failed:?}");
                let m = failed[0]["message"].as_str().unwrap();
                assert!(
                    m.contains("event webhook \"chat\" was not delivered") && m.contains("500"),
                    "{m}"
                );
                assert_eq!(failed[0]["gates"][0]["name"], "chat");
                assert_eq!(failed[0]["gates"][0]["passed"], false);
                assert_eq!(failed[0]["canaryWeight"], 20, "the status it was sent for");
                keep(&w, b);
            }),
        )
        .await;
    ticks.delivered().await;

    // And again: the history keeps the latest failure only, so a receiver that stays down
    // cannot push the checks out of the bounded history.
    let next = with_written(canary, &written);
    ticks
        .tick(
            &next,
            at + minute * 3,
            Duration::from_secs(10),
            ticks.advancing(&next, 40, |b| {
                let failed = failures(b);
                assert_eq!(failed.len(), 1, "{failed:?}");
                assert_eq!(failed[0]["canaryWeight"], 30, "the latest one");
                let hist = b["status"]["serin"]["history"].as_array().unwrap();
                let checks = hist.iter().filter(|h| !h["checks"].is_null()).count();
                assert!(checks >= 3, "every tick's checks are kept: {hist:?}");
            }),
        )
        .await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_the_canarys_ticks() {
    // Every request is read and never answered (an hour, far past the test); each hook waits
    // 30 s per attempt with 2 retries, so one tick that awaited them would take minutes.
    let mut hook = receiver::receiver(vec![(200, Duration::from_secs(3600)); 16]).await;
    let mut canary = canary("podinfo")
        .webhooks(json!([
            {"name": "chat", "type": "event", "url": format!("http://{}/events", hook.addr),
             "timeout": "30s", "retries": 2},
            {"name": "audit", "type": "post-rollout", "url": format!("http://{}/audit", hook.addr),
             "timeout": "30s", "retries": 2}
        ]))
        .build();
    canary["spec"]["analysis"]["maxWeight"] = json!(50);
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let mut ticks = Ticks::new(at, analyzer(vec![pass()]));
    let written = Arc::new(Mutex::new(Value::Null));
    let minute = Duration::from_secs(60);
    let id = serin_controller::adapters::CanaryId::new(NS, "podinfo");

    let mut current = canary.clone();
    for (i, canary_weight) in [20, 30, 40].into_iter().enumerate() {
        let w = written.clone();
        let calls = ticks.advancing(&current, canary_weight, move |b| {
            assert_eq!(
                b["status"]["canaryWeight"], canary_weight,
                "advanced on time"
            );
            keep(&w, b);
        });
        // Each tick is over long before one attempt's 30 s timeout.
        ticks
            .tick(
                &current,
                at + minute * (i as u32 + 1),
                Duration::from_secs(5),
                calls,
            )
            .await;
        current = with_written(canary.clone(), &written);
    }
    // The first event reached the receiver, which holds it: it is still being delivered, and
    // the later ones wait behind it, in order.
    let seen = receiver::next(&mut hook).await;
    assert_eq!(seen.path, "/events");
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert!(
        body["metadata"]["eventMessage"]
            .as_str()
            .unwrap()
            .contains("20"),
        "{body}"
    );
    assert_eq!(
        ticks.ctx.deliveries().waiting(&id),
        3,
        "one in flight, two queued"
    );
    let metrics = ticks.ctx.metrics().encode();
    assert!(
        metrics.contains("serin_notification_queue_depth 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_undeliverable_alert_is_in_the_next_ticks_history_naming_its_provider() {
    let canary = canary("podinfo")
        .alerts(json!([
            {"name": "on-call", "severity": "error", "providerRef": {"name": "slack"}}
        ]))
        .build();
    let (status, at) = status_where(
        &canary,
        |sim| sim.world.checks = vec![fail()],
        |s| s.phase == Phase::Progressing && s.failed_checks == 1,
    );
    let canary = with_status(canary, &status);
    let mut ticks = Ticks::new(at, analyzer(vec![fail()]));
    let written = Arc::new(Mutex::new(Value::Null));
    let w = written.clone();
    let mut calls = rolling_back(&canary, move |b| {
        assert_eq!(b["status"]["phase"], "Failed");
        assert!(failures(b).is_empty(), "not known yet: {b}");
        keep(&w, b);
    });
    // The alert goes out after the write, from the Canary's queue.
    calls.push(
        expect(
            "GET",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/alertproviders/slack"),
        )
        .not_found(),
    );
    ticks
        .tick(
            &canary,
            at + Duration::from_secs(60),
            Duration::from_secs(10),
            calls,
        )
        .await;
    ticks.delivered().await;

    // The next tick writes it although nothing else changed.
    let next = with_written(canary, &written);
    ticks
        .tick(
            &next,
            at + Duration::from_secs(120),
            Duration::from_secs(10),
            vec![
                get_target(deployment("podinfo:2")),
                get_primary(primary("podinfo:1")),
                status_write(&next, |b| {
                    assert_eq!(b["status"]["phase"], "Failed");
                    let failed = failures(b);
                    assert_eq!(failed.len(), 1, "{failed:?}");
                    let m = failed[0]["message"].as_str().unwrap();
                    assert!(
                        m.contains("alert \"on-call\" through test/slack was not delivered")
                            && m.contains("does not exist"),
                        "{m}"
                    );
                    assert_eq!(failed[0]["phase"], "Failed", "the status it was sent for");
                }),
            ],
        )
        .await;
    ticks.delivered().await;
}

#[tokio::test]
async fn the_same_event_again_patches_its_series_instead_of_creating_another() {
    let canary = canary("podinfo").build();
    let (client, handle) = mock_client(NS);
    let config = config(
        Timestamp::from_millis(T0),
        analyzer(vec![]),
        Some("serin-controller-0"),
    );
    let ctx = Arc::new(Context::new(client, config, Arc::new(Metrics::new())));
    let bootstrap = |halted: Expect| {
        bootstrapping_halted(&canary, halted, |b| {
            assert_eq!(b["status"]["phase"], "Initializing")
        })
    };
    // The first time: a new Event.
    let name = Arc::new(Mutex::new(String::new()));
    let n = name.clone();
    let first = event("Halted").check(move |b| {
        assert_eq!(b["reason"], "Halted", "{b}");
        *n.lock().unwrap() = b["metadata"]["name"].as_str().unwrap().to_string();
    });
    let server = tokio::spawn(play(handle, bootstrap(first)));
    reconcile(parse(canary.clone()), ctx.clone()).await.unwrap();
    let handle = server.await.unwrap();
    let name = name.lock().unwrap().clone();
    assert!(!name.is_empty(), "the Event was named");

    // The same reconcile again (the primary is still not there): the same Event, counted in its
    // series, as kubectl shows "x2".
    let again = expect(
        "PATCH",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/{name}"),
    )
    .check(|b| {
        assert_eq!(b["reason"], "Halted", "{b}");
        assert_eq!(b["series"]["count"], 2, "{b}");
    });
    let server = tokio::spawn(play(handle, bootstrap(again)));
    reconcile(parse(canary), ctx).await.unwrap();
    let mut handle = server.await.unwrap();
    assert_no_more_calls(&mut handle).await;
}

#[test]
fn an_event_note_fits_the_api_servers_1024_bytes_whatever_the_characters() {
    use serin_kube::notify::event_note;
    // The API server refuses (422) an Event whose note is over 1024 bytes: a message of 1,000
    // characters with a receiver's non-ASCII answer in it is more than that.
    let message = format!("gate refused: {}", "é".repeat(1000));
    let note = event_note(&message);
    assert!(note.len() <= 1024, "{} bytes", note.len());
    assert!(note.ends_with('…'), "said to be cut");
    assert!(message.starts_with(note.trim_end_matches('…')));
    assert_eq!(event_note("short"), "short");
}

#[tokio::test(start_paused = true)]
async fn an_alert_receiver_gets_five_seconds_as_flaggers_notifier_gives_it() {
    use serin_controller::adapters::{AlertRoute, Notifier};
    use serin_controller::alerts::{Alert, AlertClient, Severity};
    use serin_controller::http::HttpClient;
    use serin_kube::notify::KubeNotifier;
    // The receiver answers after 6 s: past Flagger's 5 s (the clock is paused, so the test
    // takes no real time and the timeout fires at exactly its virtual deadline).
    let hook = receiver::receiver(vec![(200, Duration::from_secs(6))]).await;
    let provider = json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "AlertProvider",
        "metadata": {"name": "slack", "namespace": NS},
        "spec": {"type": "slack", "address": format!("http://{}/slack", hook.addr)}
    });
    let calls = vec![
        expect(
            "GET",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/alertproviders/slack"),
        )
        .reply(200, provider),
    ];
    let failures = scenario(NS, Duration::from_secs(60), calls, async |client| {
        let notifier = KubeNotifier::new(
            client,
            AlertClient::new(HttpClient::new()),
            Arc::new(Metrics::new()),
        );
        let (_, mut ctx) =
            serin_controller::plan::context(NS, &parse(canary("podinfo").build())).unwrap();
        ctx.alerts = vec![AlertRoute {
            name: "on-call".into(),
            severity: Severity::Info,
            provider: "slack".into(),
            provider_namespace: NS.into(),
        }];
        let alert = Alert {
            name: "podinfo".into(),
            namespace: NS.into(),
            phase: "Progressing".into(),
            severity: Severity::Warn,
            message: "Halt advancement".into(),
            fields: vec![],
        };
        let started = tokio::time::Instant::now();
        let failures = notifier.deliver(&ctx, &alert).await;
        (failures, started.elapsed())
    })
    .await;
    let (failures, took) = failures;
    assert_eq!(failures.len(), 1, "not delivered: {failures:?}");
    assert!(
        failures[0].reason.contains("no response within 5s"),
        "{:?}",
        failures[0].reason
    );
    assert_eq!(took, Duration::from_secs(5), "cut off at 5 s");
}
