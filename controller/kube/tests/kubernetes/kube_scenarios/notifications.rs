//! Notifications that fail: in the history, not only in the log.

use super::fixtures::*;

#[tokio::test]
async fn a_failed_event_webhook_is_in_the_history_not_only_the_log() {
    // The receiver stays down (its script is empty: every answer is 500).
    let hook = receiver::receiver(vec![]).await;
    let canary = canary("podinfo")
        .webhooks(json!([
            {"name": "chat", "type": "event", "url": format!("http://{}/events", hook.addr)}
        ]))
        .build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let written = Arc::new(Mutex::new(Value::Null));
    let w = written.clone();
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, move |b| {
            assert_eq!(b["status"]["canaryWeight"], 20, "the rollout went on");
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let failed: Vec<&Value> = hist
                .iter()
                .filter(|h| h["kind"] == "notificationFailed")
                .collect();
            assert_eq!(failed.len(), 1, "once per tick: {hist:?}");
            let m = failed[0]["message"].as_str().unwrap();
            assert!(
                m.contains("event webhook \"chat\" was not delivered") && m.contains("500"),
                "{m}"
            );
            assert_eq!(failed[0]["gates"][0]["name"], "chat");
            assert_eq!(failed[0]["gates"][0]["passed"], false);
            assert_eq!(failed[0]["canaryWeight"], 20);
            *w.lock().unwrap() = b["status"].clone();
        }),
    ];
    let (result, _) = run(
        parse(canary.clone()),
        at + Duration::from_secs(60),
        analyzer(vec![pass()]),
        calls,
    )
    .await;
    result.unwrap();

    // The next tick fails the same way: the history keeps the latest failure only, so a
    // receiver that stays down cannot push the checks out of the bounded history.
    let mut next = canary;
    next["status"] = written.lock().unwrap().clone();
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(70, 30),
        event("Advanced"),
        status_write(&next, |b| {
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let failed: Vec<&Value> = hist
                .iter()
                .filter(|h| h["kind"] == "notificationFailed")
                .collect();
            assert_eq!(failed.len(), 1, "{hist:?}");
            assert_eq!(failed[0]["canaryWeight"], 30, "the latest one");
            let checks = hist.iter().filter(|h| !h["checks"].is_null()).count();
            assert!(checks >= 2, "both ticks' checks are kept: {hist:?}");
        }),
    ];
    let (result, _) = run(
        parse(next),
        at + Duration::from_secs(120),
        analyzer(vec![pass()]),
        calls,
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn an_undeliverable_alert_is_in_the_history_naming_its_provider() {
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
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        event("Halted"),
        apply_route(100, 0),
        scale_target(0),
        event("RolledBack"),
        expect(
            "GET",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/alertproviders/slack"),
        )
        .not_found(),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Failed");
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let failed = hist
                .iter()
                .find(|h| h["kind"] == "notificationFailed")
                .unwrap_or_else(|| panic!("no notificationFailed entry in {hist:?}"));
            let m = failed["message"].as_str().unwrap();
            assert!(
                m.contains("alert \"on-call\" through test/slack was not delivered")
                    && m.contains("does not exist"),
                "{m}"
            );
        }),
    ];
    let (result, _) = run(
        parse(canary),
        at + Duration::from_secs(60),
        analyzer(vec![fail()]),
        calls,
    )
    .await;
    result.unwrap();
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
        vec![
            get_target(deployment("podinfo:1")),
            no_primary(),
            get_target(deployment("podinfo:1")),
            apply_primary(|_| {}),
            apply_service("podinfo-primary", "podinfo-primary"),
            apply_service("podinfo-canary", "podinfo"),
            apply_service("podinfo", "podinfo-primary"),
            halted,
            status_write(&canary, |b| {
                assert_eq!(b["status"]["phase"], "Initializing")
            }),
        ]
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
