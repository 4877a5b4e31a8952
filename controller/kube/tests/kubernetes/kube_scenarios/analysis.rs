//! The analyzer's side: nothing unmeasured passes, and the judge's state survives a controller
//! restart in the Canary's status.

use super::fixtures::*;

#[tokio::test]
async fn the_prometheus_analyzer_never_passes_what_it_could_not_measure() {
    use serin_kube::analysis::PrometheusAnalyzer;
    let canary = canary("podinfo")
        .metrics(json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
        {"name": "error-budget", "templateRef": {"name": "budget"}, "thresholdRange": {"max": 5}}
    ]))
        .build();
    let c: Canary = serde_json::from_value(canary).unwrap();
    let (_, ctx) = serin_controller::plan::context(NS, &c).unwrap();
    let (client, handle) = mock_client(NS);
    let template = json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "budget", "namespace": NS},
        "spec": {"provider": {"type": "keptn"}, "query": "slo/errors"}
    });
    let server = tokio::spawn(play(
        handle,
        vec![
            expect(
                "GET",
                format!("/apis/serin.dev/v1beta1/namespaces/{NS}/metrictemplates/budget"),
            )
            .reply(200, template),
        ],
    ));
    let analyzer = PrometheusAnalyzer::new(client, None, "serin".into());
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        analyzer.run_checks(&ctx, &Status::default()),
    )
    .await
    .unwrap()
    .unwrap();
    server.await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].verdict, Verdict::Inconclusive);
    assert!(
        results[0].detail.contains("metricsServer"),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].verdict, Verdict::Inconclusive);
    assert!(
        results[1].detail.contains("templateRef") && results[1].detail.contains("keptn"),
        "{:?}",
        results[1]
    );
}

/// Counts its looks in the analysis state, and remembers the state each look started from.
struct CountingAnalyzer {
    started_from: Mutex<Vec<Option<AnalysisState>>>,
}

#[async_trait]
impl Analyzer for CountingAnalyzer {
    async fn run_checks(
        &self,
        _c: &CanaryContext,
        _s: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        unreachable!("the driver continues from the saved state")
    }

    async fn run_checks_from(
        &self,
        _c: &CanaryContext,
        status: &Status,
        saved: Option<&AnalysisState>,
    ) -> Result<Checked, AdapterError> {
        self.started_from.lock().unwrap().push(saved.cloned());
        let run = status.run.as_ref().unwrap().id;
        let looks = saved
            .filter(|s| s.run == run)
            .and_then(|s| s.judge.as_ref())
            .and_then(|j| j["looks"].as_u64())
            .unwrap_or(0);
        Ok(Checked {
            checks: vec![pass()],
            state: Some(AnalysisState {
                run,
                judge: Some(json!({"looks": looks + 1})),
            }),
        })
    }
}

#[tokio::test]
async fn the_judges_state_is_saved_with_the_status_and_a_restarted_controller_continues_it() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let run_id = status.run.as_ref().unwrap().id;
    let canary = with_status(canary, &status);
    let written = Arc::new(Mutex::new(Value::Null));

    // First controller: its first look of the run starts from nothing and is saved.
    let first = Arc::new(CountingAnalyzer {
        started_from: Mutex::new(Vec::new()),
    });
    let w = written.clone();
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, move |b| {
            assert_eq!(
                b["status"]["serin"]["analysis"],
                json!({"run": run_id, "judge": {"looks": 1}}),
                "{b}"
            );
            *w.lock().unwrap() = b["status"].clone();
        }),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary.clone()), now, first.clone(), calls).await;
    result.unwrap();
    assert_eq!(
        first.started_from.lock().unwrap().as_slice(),
        &[Some(AnalysisState::default())],
        "a store that persists analysis state says so even when none is saved yet"
    );

    // The controller restarts: a new process (new analyzer, no memory) reads the Canary as the
    // API server now has it and continues the same sequential test at look 2.
    let mut restarted = canary.clone();
    restarted["status"] = written.lock().unwrap().clone();
    let second = Arc::new(CountingAnalyzer {
        started_from: Mutex::new(Vec::new()),
    });
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(70, 30),
        event("Advanced"),
        status_write(&restarted, move |b| {
            assert_eq!(
                b["status"]["serin"]["analysis"],
                json!({"run": run_id, "judge": {"looks": 2}}),
                "{b}"
            );
        }),
    ];
    let (result, _) = run(
        parse(restarted),
        now + Duration::from_secs(60),
        second.clone(),
        calls,
    )
    .await;
    result.unwrap();
    assert_eq!(
        second.started_from.lock().unwrap().as_slice(),
        &[Some(AnalysisState {
            run: run_id,
            judge: Some(json!({"looks": 1}))
        })]
    );
}

#[tokio::test]
async fn a_tick_without_a_look_keeps_the_saved_state_and_a_finished_run_drops_it() {
    let canary = canary("podinfo").build();
    let (status, at) = status_where(&canary, |_| {}, |s| s.phase == Phase::Promoting);
    let run_id = status.run.as_ref().unwrap().id;
    let mut canary = with_status(canary, &status);
    canary["status"]["serin"]["analysis"] = json!({"run": run_id, "judge": {"looks": 3}});
    // Promoting runs no checks: the state stays.
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:2").not_ready()),
        event("Halted"),
        status_write(&canary, move |b| {
            assert_eq!(b["status"]["serin"]["analysis"]["judge"]["looks"], 3, "{b}");
        }),
    ];
    let (result, _) = run(
        parse(canary.clone()),
        at + Duration::from_secs(60),
        analyzer(vec![]),
        calls,
    )
    .await;
    result.unwrap();
    // A state of an earlier run is not carried into the status of a later one.
    let mut idle = super::fixtures::canary("podinfo").build();
    let (status, at) = status_where(&idle, |_| {}, |s| s.phase == Phase::Succeeded);
    idle = with_status(idle, &status);
    idle["status"]["serin"]["analysis"] = json!({"run": run_id + 7, "judge": {"looks": 3}});
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:2")),
        status_write(&idle, |b| {
            assert!(b["status"]["serin"].get("analysis").is_none(), "{b}");
        }),
    ];
    let (result, _) = run(
        parse(idle),
        at + Duration::from_secs(60),
        analyzer(vec![]),
        calls,
    )
    .await;
    result.unwrap();
}
