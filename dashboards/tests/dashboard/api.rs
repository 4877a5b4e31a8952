//! The JSON API, the actions with and without the token, server-sent events, and the Flagger
//! gate endpoints, against a real server on 127.0.0.1:0 over a `MemoryBackend`.

use crate::support;

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::json;
use serin_dashboard::Backend;
use serin_dashboard::memory::MemoryBackend;
use serin_dashboard::model::{Action, EntryKind, Phase};
use support::{TOKEN, call, get_json, key, scenario, serve, t};

#[tokio::test]
async fn list_filters_counts_and_pages_and_names_bad_parameters() {
    let server = serve(scenario(), None).await;
    let v = get_json(&server.url("/api/v1/canaries?phase=Failed")).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["name"], "podinfo");
    assert_eq!(v["total"], 1);
    assert_eq!(v["counts"], json!({"Initialized": 1, "Failed": 1}));
    let v = get_json(&server.url("/api/v1/canaries?q=BACK&namespace=test")).await;
    assert_eq!(v["items"][0]["name"], "backend");
    assert_eq!(v["counts"], json!({"Initialized": 1}));
    let v = get_json(&server.url("/api/v1/canaries?offset=1&limit=1")).await;
    assert_eq!(v["items"][0]["name"], "podinfo");
    assert_eq!(v["total"], 2);
    for (query, names) in [
        (
            "phase=Bogus",
            "is not a phase; accepted: Initializing, Initialized",
        ),
        ("page=0", "page: 0 is not valid"),
        ("limit=-1", "is not valid; accepted: a non-negative integer"),
        (
            "sort=name",
            "accepted parameters: phase, namespace, q, limit, offset, page",
        ),
    ] {
        let (status, body, _) = call(
            "GET",
            &server.url(&format!("/api/v1/canaries?{query}")),
            &[],
            "",
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert!(body.contains(names), "{query}: {body}");
    }
    let (status, html, _) = call("GET", &server.url("/?phase=Bogus"), &[], "").await;
    assert_eq!(status, 400);
    assert!(html.contains("phase"), "{html}");
}

#[tokio::test]
async fn list_shows_every_canary_with_camel_case_fields() {
    let server = serve(scenario(), None).await;
    let v = get_json(&server.url("/api/v1/canaries")).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Sorted by namespace and name.
    assert_eq!(items[0]["name"], "backend");
    let p = &items[1];
    assert_eq!(p["namespace"], "test");
    assert_eq!(p["name"], "podinfo");
    assert_eq!(
        p["target"],
        json!({"kind": "Deployment", "name": "podinfo"})
    );
    assert_eq!(p["phase"], "Failed");
    assert_eq!(p["canaryWeight"], 0);
    assert_eq!(p["failedChecks"], 2);
    assert_eq!(p["promotedRevision"], "v1");
    assert_eq!(p["targetRevision"], "v2");
    assert_eq!(p["run"]["id"], 2);
    assert_eq!(p["run"]["revision"], "v2");
    assert_eq!(p["run"]["outcome"]["result"], "rolledBack");
    assert!(
        p["run"]["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("90.5 below minimum 99")
    );
    assert_eq!(p["gates"], json!({"confirm": false, "rollback": false}));
    assert_eq!(p["lastTransitionTime"], "2026-09-21T14:32:05Z");
}

#[tokio::test]
async fn detail_has_runs_newest_first_with_measured_values_and_why_it_ended() {
    let server = serve(scenario(), None).await;
    let v = get_json(&server.url("/api/v1/canaries/test/podinfo")).await;
    assert_eq!(v["canary"]["phase"], "Failed");
    assert_eq!(v["analysis"]["threshold"], 2);
    // The planner's figures travel with the analysis settings.
    let plan = &v["analysis"]["plan"];
    assert_eq!(plan["lines"][0]["rps"], 1.0);
    assert_eq!(plan["lines"][0]["inconclusivePct"], 100.0);
    assert!(
        plan["lines"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("can never prove anything")
    );
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], 2);
    assert_eq!(runs[1]["id"], 1);
    assert_eq!(runs[1]["outcome"]["result"], "promoted");
    let timeline = runs[0]["timeline"].as_array().unwrap();
    let types: Vec<&str> = timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "runStarted",
            "phase",
            "weight",
            "check",
            "webhook",
            "check",
            "event",
            "runEnded",
            "phase"
        ]
    );
    let failed = &timeline[5];
    assert_eq!(failed["name"], "request-success-rate");
    assert_eq!(failed["verdict"], "fail");
    assert_eq!(failed["value"], 90.5);
    assert_eq!(failed["min"], 99.0);
    assert_eq!(failed["sampleSize"], 200);
    assert_eq!(failed["run"], 2);
    assert_eq!(timeline[4]["webhookType"], "rollout");
    assert_eq!(timeline[4]["status"], 200);
    assert_eq!(timeline[7]["outcome"]["result"], "rolledBack");
    assert_eq!(timeline[8]["to"], "Failed");
}

#[tokio::test]
async fn series_gives_canary_and_primary_points_of_the_current_run() {
    let server = serve(scenario(), None).await;
    let v = get_json(&server.url("/api/v1/canaries/test/podinfo/series")).await;
    assert_eq!(v["run"], 2);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["weight"], 10);
    assert_eq!(points[0]["canary"]["successRate"], 91.2);
    assert_eq!(points[0]["primary"]["successRate"], 99.9);
    assert_eq!(points[0]["canary"]["latencyP99Ms"], 55.0);
    let run1 = get_json(&server.url("/api/v1/canaries/test/podinfo/series?run=1")).await;
    let weights: Vec<u64> = run1["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [10, 20, 30, 40, 50]);
}

#[tokio::test]
async fn history_filters_by_run_and_limit_and_names_bad_parameters() {
    let server = serve(scenario(), None).await;
    let v = get_json(&server.url("/api/v1/canaries/test/podinfo/history?run=2&limit=3")).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|e| e["run"] == 2));
    assert_eq!(items[2]["type"], "phase");

    let (status, body, _) = call(
        "GET",
        &server.url("/api/v1/canaries/test/podinfo/history?run=two"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("run: \\\"two\\\" is not valid"), "{body}");
    let (status, body, _) = call(
        "GET",
        &server.url("/api/v1/canaries/test/podinfo/history?since=1"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("accepted parameters: run, limit"), "{body}");
}

#[tokio::test]
async fn unknown_canary_is_a_404_with_a_json_error() {
    let server = serve(scenario(), None).await;
    let (status, body, _) = call("GET", &server.url("/api/v1/canaries/test/nope"), &[], "").await;
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "notFound");
    assert_eq!(v["message"], "canary test/nope not found");
}

#[tokio::test]
async fn without_a_configured_token_every_action_is_refused() {
    let server = serve(scenario(), None).await;
    for action in Action::ALL {
        let (status, body, headers) = call(
            "POST",
            &server.url(&format!("/api/v1/canaries/test/podinfo/actions/{action}")),
            &[("authorization", "Bearer anything")],
            "",
        )
        .await;
        assert_eq!(status, 401, "{action}: {body}");
        assert!(body.contains("\"readOnly\""), "{body}");
        assert!(headers.contains_key("www-authenticate"));
    }
    let v = get_json(&server.url("/api/v1")).await;
    assert_eq!(v["actionsEnabled"], false);
    // Nothing was recorded.
    let h = server
        .backend
        .history(&key("podinfo"), &Default::default())
        .await
        .unwrap();
    assert!(
        !h.iter()
            .any(|e| matches!(e.kind, EntryKind::Command { .. }))
    );
}

#[tokio::test]
async fn a_missing_or_wrong_bearer_is_refused_and_the_right_one_is_recorded_with_who_and_when() {
    let server = serve(scenario(), Some(TOKEN)).await;
    let url = server.url("/api/v1/canaries/test/backend/actions/pause");
    let (status, body, _) = call("POST", &url, &[], "").await;
    assert_eq!(status, 401);
    assert!(body.contains("missing Authorization"), "{body}");
    let (status, body, _) = call("POST", &url, &[("authorization", "Bearer nope")], "").await;
    assert_eq!(status, 401);
    assert!(body.contains("wrong token"), "{body}");

    let auth = format!("Bearer {TOKEN}");
    let (status, body, _) = call(
        "POST",
        &url,
        &[("authorization", &auth)],
        r#"{"by":"alice"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let receipt: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(receipt["command"]["action"], "pause");
    assert_eq!(receipt["command"]["by"], "alice");
    assert_eq!(receipt["canary"]["paused"], true);
    assert_eq!(receipt["canary"]["waiting"]["reason"], "paused");

    let history = get_json(&server.url("/api/v1/canaries/test/backend/history")).await;
    let last = history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "command");
    assert_eq!(last["action"], "pause");
    assert_eq!(last["by"], "alice");
    assert_eq!(last["state"], "received");
    assert!(last["at"].as_str().unwrap().starts_with("20"));

    // Pausing twice is a conflict; resume works once.
    let (status, body, _) = call("POST", &url, &[("authorization", &auth)], "").await;
    assert_eq!(status, 409, "{body}");
    let resume = server.url("/api/v1/canaries/test/backend/actions/resume");
    assert_eq!(
        call("POST", &resume, &[("authorization", &auth)], "")
            .await
            .0,
        202
    );
    assert_eq!(
        call("POST", &resume, &[("authorization", &auth)], "")
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn bad_action_requests_name_what_is_wrong() {
    let server = serve(scenario(), Some(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    let h = [("authorization", auth.as_str())];
    let base = server.url("/api/v1/canaries/test/backend/actions/");
    let (s, b, _) = call("POST", &format!("{base}restart"), &h, "").await;
    assert_eq!(s, 404);
    assert!(
        b.contains("accepted: promote, abort, pause, resume, gate-open, gate-close"),
        "{b}"
    );
    let (s, b, _) = call("POST", &format!("{base}pause"), &h, r#"{"who":"x"}"#).await;
    assert_eq!(s, 400);
    assert!(b.contains("unknown field `who`"), "{b}");
    let (s, b, _) = call("POST", &format!("{base}pause"), &h, r#"{"by":""}"#).await;
    assert_eq!(s, 400);
    assert!(b.contains("by: must be 1 to 128"), "{b}");
    let (s, b, _) = call(
        "POST",
        &format!("{base}gate-open"),
        &h,
        r#"{"gate":"sesame"}"#,
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("unknown gate \\\"sesame\\\""), "{b}");
    let (s, b, _) = call("POST", &format!("{base}pause"), &h, r#"{"gate":"confirm"}"#).await;
    assert_eq!(s, 400);
    assert!(
        b.contains("only gate-open and gate-close take a gate"),
        "{b}"
    );
    // Promote while idle: nothing to promote.
    let (s, b, _) = call("POST", &format!("{base}promote"), &h, "").await;
    assert_eq!(s, 409);
    assert!(b.contains("no run in flight"), "{b}");
    let (s, _, _) = call(
        "POST",
        &server.url("/api/v1/canaries/test/ghost/actions/pause"),
        &h,
        "",
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_same_command_id_is_applied_once() {
    let server = serve(scenario(), Some(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    let url = server.url("/api/v1/canaries/test/backend/actions/gate-open");
    for _ in 0..2 {
        let (s, b, _) = call(
            "POST",
            &url,
            &[("authorization", &auth)],
            r#"{"id":"ci-42","by":"ci"}"#,
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    let h = server
        .backend
        .history(&key("backend"), &Default::default())
        .await
        .unwrap();
    let commands = h
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Command { .. }))
        .count();
    assert_eq!(commands, 1);
}

/// Reads an SSE stream until an event named `name` whose data contains `needle` arrives.
async fn next_event(
    body: &mut hyper::body::Incoming,
    buf: &mut String,
    name: &str,
    needle: &str,
) -> String {
    let wanted = format!("event: {name}\n");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                if event.contains(&wanted) && event.contains(needle) {
                    return event;
                }
            }
            let frame = body
                .frame()
                .await
                .expect("stream ended")
                .expect("stream error");
            if let Ok(data) = frame.into_data() {
                buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {name} event containing {needle:?} within 10s"))
}

#[tokio::test]
async fn server_sent_events_push_changes_of_the_watched_canary() {
    let backend = scenario();
    let server = serve(backend.clone(), None).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::get(server.url("/api/v1/events?namespace=test&name=backend"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();
    next_event(&mut body, &mut buf, "hello", "{}").await;

    // A change of another canary is filtered out; the watched one arrives.
    backend.set_weight(&key("podinfo"), 30, t(2000)).unwrap();
    backend.start_run(&key("backend"), "r8", t(2001)).unwrap();
    let ev = next_event(&mut body, &mut buf, "canary", "\"phase\":\"Progressing\"").await;
    assert!(ev.contains("\"name\":\"backend\""), "{ev}");
    assert!(!buf.contains("podinfo"));
    let ev = next_event(&mut body, &mut buf, "entry", "runStarted").await;
    assert!(ev.contains("\"revision\":\"r8\""), "{ev}");
}

#[tokio::test]
async fn flagger_gate_endpoints_keep_their_semantics() {
    let backend = scenario();
    let server = serve(backend.clone(), Some(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    let a = [("authorization", auth.as_str())];
    let payload =
        r#"{"name":"podinfo","namespace":"test","phase":"Progressing","metadata":{"by":"bob"}}"#;
    let post = |path: &str| server.url(path);

    assert_eq!(
        call("POST", &post("/gate/check"), &[], payload).await.0,
        403
    );
    assert_eq!(
        call("POST", &post("/rollback/check"), &[], payload).await.0,
        403
    );
    // Opening needs the token.
    assert_eq!(call("POST", &post("/gate/open"), &[], payload).await.0, 401);
    assert_eq!(call("POST", &post("/gate/open"), &a, payload).await.0, 202);
    let (s, b, _) = call("POST", &post("/gate/check"), &[], payload).await;
    assert_eq!((s, b.as_str()), (200, "Approved"));
    // The rollback gate is separate.
    assert_eq!(
        call("POST", &post("/rollback/check"), &[], payload).await.0,
        403
    );
    assert_eq!(
        call("POST", &post("/rollback/open"), &a, payload).await.0,
        202
    );
    assert_eq!(
        call("POST", &post("/rollback/check"), &[], payload).await.0,
        200
    );
    assert_eq!(
        call("POST", &post("/rollback/close"), &a, payload).await.0,
        202
    );
    assert_eq!(
        call("POST", &post("/rollback/check"), &[], payload).await.0,
        403
    );
    assert_eq!(call("POST", &post("/gate/close"), &a, payload).await.0, 202);
    let (s, b, _) = call("POST", &post("/gate/check"), &[], payload).await;
    assert_eq!((s, b.as_str()), (403, "Forbidden"));
    // Static gates.
    assert_eq!(
        call("POST", &post("/gate/approve"), &[], payload).await.0,
        200
    );
    assert_eq!(call("POST", &post("/gate/halt"), &[], payload).await.0, 403);
    // Unknown canaries have closed gates and cannot be opened.
    let ghost = r#"{"name":"ghost","namespace":"test"}"#;
    assert_eq!(call("POST", &post("/gate/check"), &[], ghost).await.0, 403);
    assert_eq!(call("POST", &post("/gate/open"), &a, ghost).await.0, 404);
    // Bad payloads name the field.
    let (s, b, _) = call("POST", &post("/gate/check"), &[], r#"{"namespace":"test"}"#).await;
    assert_eq!(s, 400);
    assert!(b.starts_with("name: required"), "{b}");
    let (s, b, _) = call("POST", &post("/gate/check"), &[], "not json").await;
    assert_eq!(s, 400);
    assert!(b.starts_with("body:"), "{b}");

    // Every gate change is in the history with who asked.
    let h = backend
        .history(&key("podinfo"), &Default::default())
        .await
        .unwrap();
    let gates: Vec<(String, String, String)> = h
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Command {
                action, gate, by, ..
            } => Some((action.to_string(), gate.clone().unwrap(), by.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(gates.len(), 4);
    assert_eq!(
        gates[0],
        ("gate-open".into(), "confirm".into(), "bob".into())
    );
    assert_eq!(
        gates[3],
        ("gate-close".into(), "confirm".into(), "bob".into())
    );
}

#[tokio::test]
async fn commands_and_gates_survive_a_restart_of_the_backend() {
    let dir = std::env::temp_dir().join(format!("serin-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    {
        let backend = std::sync::Arc::new(MemoryBackend::open(&path).unwrap());
        backend
            .add_canary(&key("podinfo"), support::target("podinfo"), "v1", t(0))
            .unwrap();
        backend.start_run(&key("podinfo"), "v2", t(10)).unwrap();
        let server = serve(backend, Some(TOKEN)).await;
        let auth = format!("Bearer {TOKEN}");
        for action in ["gate-open", "promote"] {
            let (s, b, _) = call(
                "POST",
                &server.url(&format!("/api/v1/canaries/test/podinfo/actions/{action}")),
                &[("authorization", &auth)],
                r#"{"by":"carol"}"#,
            )
            .await;
            assert_eq!(s, 202, "{b}");
        }
    }
    let reopened = std::sync::Arc::new(MemoryBackend::open(&path).unwrap());
    let pending = reopened.pending_commands(&key("podinfo"));
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].action, Action::Promote);
    assert_eq!(pending[0].by, "carol");
    let server = serve(reopened.clone(), None).await;
    let (s, b, _) = call(
        "POST",
        &server.url("/gate/check"),
        &[],
        r#"{"name":"podinfo","namespace":"test"}"#,
    )
    .await;
    assert_eq!((s, b.as_str()), (200, "Approved"));
    let v = get_json(&server.url("/api/v1/canaries/test/podinfo")).await;
    assert_eq!(v["canary"]["phase"], Phase::Progressing.as_str());
    let timeline = v["runs"][0]["timeline"].as_array().unwrap();
    assert_eq!(timeline.last().unwrap()["by"], "carol");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn pages_render_rows_charts_and_escape_text() {
    let backend = scenario();
    backend
        .record(
            &key("podinfo"),
            t(3000),
            EntryKind::Event {
                severity: serin_dashboard::model::Severity::Warn,
                message: "<script>alert(1)</script>".into(),
            },
        )
        .unwrap();
    let server = serve(backend, None).await;
    let (s, html, _) = call("GET", &server.url("/"), &[], "").await;
    assert_eq!(s, 200);
    assert!(html.contains(r#"<tr data-canary="test/podinfo">"#));
    assert!(html.contains(r#"<span class="phase p-Failed">Failed</span>"#));
    assert!(html.contains("read-only (no token configured)"));
    let (s, html, _) = call("GET", &server.url("/canaries/test/podinfo"), &[], "").await;
    assert_eq!(s, 200);
    for chart in ["weight", "success", "latency"] {
        assert!(
            html.contains(&format!(r#"data-chart="{chart}""#)),
            "{chart}"
        );
    }
    assert!(html.contains("<polyline class=\"series\" data-series=\"canary\""));
    assert!(html.contains("request-success-rate: measured <b>90.5</b> vs min 99"));
    // The plan card: what the judge can prove on this schedule at each traffic level.
    assert!(html.contains(r#"<div class="card" id="plan">"#), "{html}");
    assert!(
        html.contains(r#"<tr data-rps="1"><td>1</td><td>0%</td><td>0%</td><td>100%</td><td>at 1 rps this rollout can never prove anything; it will end by onInconclusive (rollback) after 15m</td></tr>"#),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>alert(1)"));
    let (s, html, _) = call("GET", &server.url("/canaries/test/ghost"), &[], "").await;
    assert_eq!(s, 404);
    assert!(html.contains("canary test/ghost not found"));
}

#[tokio::test]
async fn an_unknown_api_path_answers_the_documented_json_error() {
    // Every error of /api/v1 is `{"error","message"}`; an unknown path (a typo, an older CLI
    // against a newer server) answered 404 with an empty body.
    let server = serve(scenario(), None).await;
    for path in [
        "/api/v1/canary",
        "/api/v1/canaries/test/podinfo/timeline",
        "/api/v2",
    ] {
        let (status, body, _) = call("GET", &server.url(path), &[], "").await;
        assert_eq!(status, 404, "{path}: {body}");
        if path.starts_with("/api/v1/") {
            let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(v["error"], "notFound", "{path}: {body}");
            assert!(
                v["message"].as_str().unwrap().contains(path),
                "{path}: {body}"
            );
        }
    }
}
