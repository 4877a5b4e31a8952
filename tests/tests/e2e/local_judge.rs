//! The statistical judge inside the real local platform: a real controller process reading the
//! real proxy's counters while real HTTP load goes through it. What the engine tests show with
//! scripted verdicts, shown here on traffic:
//!
//! * a look that brings no new traffic never passes: when the load stops, the weight stays;
//! * a Fail comes at the look where the always-valid p-value crosses its bound, not later,
//!   and for a canary failing every request sooner than for one failing 10 % (no look floor);
//! * a run the traffic starves ends by `onInconclusive` (rollback, the default) after its
//!   budget, with the reason in the status and history.
//!
//! Every wait polls the persisted record with a deadline (no fixed sleeps); ports are the OS's.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use serin_tests::{
    CanaryShape, Observed, Site, advanced_weights, phase, run_history, run_revision,
};

const BIN: &str = env!("CARGO_BIN_EXE_serin-e2e");
/// Generous: the machine running the tests is shared.
const STEP: Duration = Duration::from_secs(90);

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// The judge's look recorded with a measured tick, if the entry is one.
fn judge_look(entry: &Value) -> Option<&Value> {
    (entry["kind"] == "measured")
        .then(|| &entry["sample"]["judge"])
        .filter(|j| j.is_object())
}

/// Whether a judge look's evidence has crossed a fail bound (p-value at or under its alpha).
fn crossed(look: &Value) -> bool {
    look["evidence"].as_array().is_some_and(|ev| {
        ev.iter().any(|e| {
            matches!(
                (e["pValue"].as_f64(), e["alpha"].as_f64()),
                (Some(p), Some(a)) if p <= a
            )
        })
    })
}

async fn initialized(site: &mut Site) -> anyhow::Result<()> {
    site.start_initialized(STEP).await
}

/// The judge with margins a loopback service's few hundred requests a second can prove within
/// seconds (as `serin demo` uses), and no other check deciding anything. Looks every 500 ms,
/// with the load at twice the rate a 1 s look would need ([`RATE`]): each look weighs the
/// evidence of a 1 s look at half the rate.
fn judge_shape(extra: &'static str) -> CanaryShape {
    CanaryShape {
        step_weight: 20,
        max_weight: 60,
        threshold: 2,
        interval: "500ms",
        template: false,
        analysis_extra: extra,
        metrics: Some(LOOSE_CHECKS),
    }
}

/// Threshold checks that only catch disasters (as a Flagger user burnt by rollbacks on noise
/// keeps them): a 10 % error rate passes them, so only the judge can roll it back.
const LOOSE_CHECKS: &str = r#"    metrics:
      - name: request-success-rate
        thresholdRange: { min: 50 }
        interval: 10s
      - name: request-duration
        thresholdRange: { max: 5000 }
        interval: 10s
"#;

/// The load (requests per second) at [`judge_shape`]'s 500 ms looks: 200 a second at 1 s looks.
const RATE: f64 = 400.0;

/// The latency margin is wide: on loopback a request takes about a millisecond and its p99 is
/// the shared machine's scheduling noise, which a tight margin would need minutes to see past.
const WAITING_JUDGE: &str = "    judge:
      enabled: true
      minRequests: 50
      errorRateMarginAbsolute: 2
      latencyMargin: 400
      onInconclusive: wait
      stepBudget: 1h
      runBudget: 2h
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_traffic_stops_the_judge_never_passes_and_the_weight_stays() -> anyhow::Result<()>
{
    let mut site = Site::start(bin(), "judge-empty", judge_shape(WAITING_JUDGE)).await?;
    initialized(&mut site).await?;
    let load = site.start_load(RATE);
    load.await_more(50, STEP).await?;
    site.rollout("v2", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0")])?;
    let mut seen: Vec<Observed> = Vec::new();
    // A Pass on traffic: the judge proved the canary within the margins and the weight grew.
    site.await_status("a step up on a Pass", STEP, &mut seen, |r| {
        run_revision(r) == "v2" && advanced_weights(&run_history(r, "v2")).len() >= 2
    })
    .await?;
    let (report, _) = load.finish().await?;
    anyhow::ensure!(report.requests > 0, "the load sent nothing");

    // From the first look without new traffic on, nothing advances: three such looks in a row
    // must hold the weight.
    let empty_looks = |r: &Value| {
        run_history(r, "v2")
            .iter()
            .filter_map(judge_look)
            .filter(|j| {
                j["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("no new traffic"))
            })
            .count()
    };
    let record = site
        .await_status("three looks without traffic", STEP, &mut seen, |r| {
            empty_looks(r) >= 3
        })
        .await?;
    let v2 = run_history(&record, "v2");
    let first_empty = v2
        .iter()
        .position(|e| {
            judge_look(e).is_some_and(|j| {
                j["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("no new traffic"))
            })
        })
        .expect("an empty look was counted");
    for e in &v2[first_empty..] {
        if let Some(j) = judge_look(e) {
            assert_ne!(j["verdict"], "pass", "an empty look passed: {e:#}");
        }
        assert_ne!(
            e["kind"], "advanced",
            "the weight grew without traffic: {v2:#?}"
        );
        assert_ne!(e["kind"], "promoting", "promoted without traffic: {v2:#?}");
    }
    assert_eq!(phase(&record), "Progressing", "{:#}", record["status"]);
    // The test could fail: passes did happen while there was traffic.
    assert!(
        v2[..first_empty]
            .iter()
            .filter_map(judge_look)
            .any(|j| j["verdict"] == "pass"),
        "{v2:#?}"
    );
    site.stop().await;
    Ok(())
}

/// A latency check that only catches disasters and no error-rate check: every error
/// rollback in the test below is the judge's.
const DURATION_ONLY: &str = r#"    metrics:
      - name: request-duration
        thresholdRange: { max: 5000 }
        interval: 10s
"#;

/// Asserts that `revision`'s run was rolled back by the judge at the look where its evidence
/// first crossed a fail bound, and returns how many looks that took.
fn rolled_back_at_the_crossing_look(record: &Value, revision: &str) -> usize {
    let history = run_history(record, revision);
    let looks: Vec<&Value> = history.iter().filter_map(judge_look).collect();
    let first_crossed = looks
        .iter()
        .position(|j| crossed(j))
        .unwrap_or_else(|| panic!("{revision}: no look crossed a fail bound: {history:#?}"));
    // Every look before the crossing one was not a Fail; the crossing one is.
    for j in &looks[..first_crossed] {
        assert_ne!(
            j["verdict"], "fail",
            "{revision}: failed before crossing: {j:#}"
        );
    }
    assert_eq!(
        looks[first_crossed]["verdict"], "fail",
        "{revision}: the crossing look is the Fail: {:#}",
        looks[first_crossed]
    );
    // The rollback follows that look; nothing advanced after it.
    let crossing_at = history
        .iter()
        .position(|e| judge_look(e).is_some_and(|j| std::ptr::eq(j, looks[first_crossed])))
        .expect("the crossing look is in the history");
    assert!(
        history[crossing_at..]
            .iter()
            .any(|e| e["kind"] == "rolledBack"),
        "{history:#?}"
    );
    assert!(
        !history[crossing_at..]
            .iter()
            .any(|e| e["kind"] == "advanced"),
        "{history:#?}"
    );
    // The judge, not a threshold check, decided (no check looks at errors).
    assert!(
        looks[first_crossed]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("worse"),
        "{:#}",
        looks[first_crossed]
    );
    first_crossed + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_at_the_look_where_the_evidence_crosses()
-> anyhow::Result<()> {
    let shape = CanaryShape {
        metrics: Some(DURATION_ONLY),
        ..judge_shape(WAITING_JUDGE)
    };
    let mut site = Site::start(bin(), "judge-fail", shape).await?;
    initialized(&mut site).await?;
    let load = site.start_load(RATE);
    load.await_more(50, STEP).await?;
    // 10 % errors: the judge comparing arms catches it after a few looks.
    site.rollout("v2", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0.1")])?;
    let mut seen: Vec<Observed> = Vec::new();
    let record = site
        .await_status("v2 rolled back", STEP, &mut seen, |r| {
            run_revision(r) == "v2" && phase(r) == "Failed"
        })
        .await?;
    let v2_looks = rolled_back_at_the_crossing_look(&record, "v2");
    // A canary failing every request: overwhelming evidence, no look floor. The Fail is again
    // the crossing look, and it comes sooner than the 10 % canary's.
    site.rollout("v3", &[("SERIN_SAMPLE_APP_ERROR_RATE", "1")])?;
    let record = site
        .await_status("v3 rolled back", STEP, &mut seen, |r| {
            run_revision(r) == "v3" && phase(r) == "Failed"
        })
        .await?;
    load.finish().await?;
    let v3_looks = rolled_back_at_the_crossing_look(&record, "v3");
    eprintln!("looks to the Fail: 10 % errors {v2_looks}, every request failing {v3_looks}");
    assert!(
        v3_looks < v2_looks,
        "a canary failing everything took {v3_looks} looks, one failing 10 % {v2_looks}"
    );
    site.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_run_ends_by_on_inconclusive_rollback_after_its_step_budget() -> anyhow::Result<()>
{
    // Default margins (0.5 points, 25 %) and a trickle of traffic: the judge can never show
    // them, so the step budget ends the run by the default policy, rollback. (10 requests a
    // second and a 5 s budget at 1 s looks: the same requests per look and looks per budget.)
    const STARVED: &str = "    judge:
      enabled: true
      stepBudget: 2500ms
      runBudget: 1h
";
    let mut site = Site::start(bin(), "judge-starved", judge_shape(STARVED)).await?;
    initialized(&mut site).await?;
    let load = site.start_load(20.0);
    load.await_more(5, STEP).await?;
    site.rollout("v2", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0")])?;
    let mut seen: Vec<Observed> = Vec::new();
    let record = site
        .await_status("v2 ended by onInconclusive", STEP, &mut seen, |r| {
            run_revision(r) == "v2" && phase(r) == "Failed"
        })
        .await?;
    let (report, _) = load.finish().await?;
    assert_eq!(report.errors, 0, "a healthy canary: {}", report.breakdown());
    let v2 = run_history(&record, "v2");
    let rolled = v2
        .iter()
        .find(|e| e["kind"] == "rolledBack")
        .unwrap_or_else(|| panic!("no rollback: {v2:#?}"));
    let message = rolled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("onInconclusive rollback") && message.contains("step budget"),
        "{rolled:#}"
    );
    // Never a Pass on the way, never a Fail: it ended for lack of evidence.
    let looks: Vec<&Value> = v2.iter().filter_map(judge_look).collect();
    assert!(!looks.is_empty(), "the judge looked: {v2:#?}");
    assert!(
        looks.iter().all(|j| j["verdict"] == "inconclusive"),
        "{looks:#?}"
    );
    assert!(advanced_weights(&v2).len() <= 1, "{v2:#?}");
    let status_text = record["status"].to_string();
    assert!(status_text.contains("onInconclusive"), "{status_text}");
    site.stop().await;
    Ok(())
}
