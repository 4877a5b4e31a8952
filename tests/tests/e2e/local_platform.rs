//! The local platform end to end: real workload processes (the sample app), a real controller
//! process, the real control plane and proxy, real HTTP load through the proxy. Every wait polls
//! with a deadline; every port is chosen by the OS.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use serin_tests::{
    CanaryShape, Observed, Site, advanced_weights, history, phase, pid_alive, run_history,
    run_revision,
};

const BIN: &str = env!("CARGO_BIN_EXE_serin-e2e");
/// Generous: the machine running the tests is shared.
const STEP: Duration = Duration::from_secs(60);

/// The rollouts run at half the shape's default interval with twice the load, so each look
/// sees the traffic a 1 s look at 50 requests per second sees (the checks read the proxies'
/// counters since the run started, over up to their own 10 s `interval`), in half the time.
fn fast() -> CanaryShape {
    CanaryShape {
        interval: "500ms",
        ..CanaryShape::default()
    }
}

/// The load of the [`fast`] rollouts (requests per second).
const RATE: f64 = 100.0;

/// The failed requests, with when they were due (for the failure message).
fn failures(samples: &[serin_demo::load::Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| s.outcome.is_failure())
        .map(|s| format!("{:?} at {:?}", s.outcome, s.due))
        .collect()
}

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// The run of `revision` ended in `end`.
fn ended(revision: &'static str, end: &'static str) -> impl Fn(&Value) -> bool {
    move |r| run_revision(r) == revision && phase(r) == end
}

fn kinds(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The instances left running: (role, revision) of each process record.
fn running(site: &Site) -> BTreeSet<(String, String)> {
    site.processes()
        .iter()
        .filter(|r| r["retiring"] != true)
        .map(|r| {
            (
                r["role"].as_str().unwrap_or_default().to_string(),
                r["revision"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn only_primary(revision: &str) -> BTreeSet<(String, String)> {
    BTreeSet::from([("primary".to_string(), revision.to_string())])
}

/// Every process record has exited (nothing retiring left behind) and only `revision`'s
/// primary is recorded.
fn settled_on(site: &Site, revision: &str) -> bool {
    let records = site.processes();
    records.len() == 1 && running(site) == only_primary(revision)
}

/// How often each (role, revision) was started as a process (from the per-instance logs).
fn starts(site: &Site, role: &str, revision: &str) -> usize {
    site.instances_started()
        .iter()
        .filter(|(r, v, _)| r == role && v == revision)
        .count()
}

/// Records the pids of `role`/`revision` instances now.
fn pids_of(site: &Site, role: &str, revision: &str) -> Vec<u32> {
    site.processes()
        .iter()
        .filter(|r| r["role"] == role && r["revision"] == revision)
        .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
        .filter(|p| *p != 0)
        .collect()
}

async fn initialized(site: &mut Site) -> anyhow::Result<()> {
    site.start_initialized(STEP).await?;
    site.await_that("the v1 primary serving", STEP, |s| {
        running(s) == only_primary("v1")
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_release_is_rolled_back_and_a_good_one_promoted_without_a_failed_request()
-> anyhow::Result<()> {
    let mut site = Site::start(bin(), "promote", fast()).await?;
    initialized(&mut site).await?;

    // v2 answers 30% of its requests with a 500.
    let load = site.start_load(RATE);
    load.await_more(20, STEP).await?;
    site.rollout("v2", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0.3")])?;
    let mut seen: Vec<Observed> = Vec::new();
    let record = site
        .await_status("v2 rolled back", STEP, &mut seen, ended("v2", "Failed"))
        .await?;
    let (report, samples) = load.finish().await?;

    let v2 = run_history(&record, "v2");
    let k = kinds(&v2);
    assert!(k.contains(&"rolledBack".to_string()), "{k:?}");
    assert!(!k.contains(&"promoting".to_string()), "{k:?}");
    assert!(
        v2.iter().all(|e| e["canaryWeight"].as_u64() < Some(100)),
        "v2 reached 100%: {v2:#?}"
    );
    assert!(
        seen.iter()
            .filter(|o| o.revision == "v2")
            .all(|o| o.canary_weight <= 50),
        "{seen:?}"
    );
    assert_eq!(advanced_weights(&v2).first(), Some(&25), "{v2:#?}");
    assert_eq!(starts(&site, "primary", "v2"), 0, "v2 never became primary");
    // The bad release really was bad and really got traffic (so this test can fail).
    let from_v2 = samples
        .iter()
        .filter(|s| s.version.as_deref() == Some("v2"))
        .count();
    assert!(from_v2 > 0, "the canary got no traffic");
    assert!(report.errors > 0, "v2 never failed a request");
    site.await_that("the v2 canary stopped", STEP, |s| settled_on(s, "v1"))
        .await?;

    // v3 is healthy: promoted under constant load, with no failed request at any point.
    let load = site.start_load(RATE);
    load.await_more(20, STEP).await?;
    let v1_pids = pids_of(&site, "primary", "v1");
    assert_eq!(v1_pids.len(), 1);
    site.rollout("v3", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0")])?;
    let mut seen: Vec<Observed> = Vec::new();
    let mut canary_pids = Vec::new();
    site.await_status("v3 promoting", STEP, &mut seen, |r| {
        run_revision(r) == "v3" && phase(r) == "Promoting"
    })
    .await?;
    canary_pids.extend(pids_of(&site, "canary", "v3"));
    let record = site
        .await_status("v3 promoted", STEP, &mut seen, ended("v3", "Succeeded"))
        .await?;
    site.await_that("the old primary and the canary gone", STEP, |s| {
        settled_on(s, "v3")
    })
    .await?;
    // Traffic after the drain still flows, to v3 only.
    load.await_more(50, STEP).await?;
    let (report, samples) = load.finish().await?;

    assert_eq!(
        report.errors,
        0,
        "failed requests during the promotion: {} {:?}\n{}",
        report.breakdown(),
        failures(&samples),
        site.controller_logs()
    );
    let v3 = run_history(&record, "v3");
    assert_eq!(advanced_weights(&v3), [25, 50], "{v3:#?}");
    let k = kinds(&v3);
    assert_eq!(
        k.iter().filter(|k| *k == "promoting").count(),
        1,
        "one promotion: {k:?}"
    );
    assert_eq!(k.last().map(String::as_str), Some("succeeded"), "{k:?}");
    // The phases in order, as the status went (polling may skip a short one, never reorder).
    let phases: Vec<&str> = seen
        .iter()
        .filter(|o| o.revision == "v3")
        .map(|o| o.phase.as_str())
        .collect();
    let order = ["Progressing", "Promoting", "Finalising", "Succeeded"];
    let mut at = 0;
    for p in &phases {
        let i = order.iter().position(|o| o == p).unwrap_or(usize::MAX);
        assert!(
            i != usize::MAX && i >= at,
            "phases out of order: {phases:?}"
        );
        at = i;
    }
    assert!(phases.contains(&"Promoting") && phases.last() == Some(&"Succeeded"));
    assert_eq!(starts(&site, "primary", "v3"), 1, "one new primary");
    assert_eq!(starts(&site, "canary", "v3"), 1);
    for pid in v1_pids.iter().chain(&canary_pids) {
        assert!(
            !pid_alive(*pid),
            "pid {pid} (old primary or canary) still runs"
        );
    }
    let versions: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.version.as_deref())
        .collect();
    assert_eq!(versions.first(), Some(&"v1"));
    assert!(
        versions.iter().rev().take(50).all(|v| *v == "v3"),
        "after the promotion only v3 answers"
    );
    site.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_while_progressing_or_promoting_finishes_the_rollout_once()
-> anyhow::Result<()> {
    let mut site = Site::start(bin(), "kill", fast()).await?;
    initialized(&mut site).await?;
    let load = site.start_load(RATE);
    load.await_more(20, STEP).await?;

    // Killed while Progressing: the workloads keep serving, the restarted controller adopts
    // them and carries on from the persisted status.
    site.rollout("v2", &[])?;
    let mut seen = Vec::new();
    site.await_status("v2 progressing", STEP, &mut seen, |r| {
        run_revision(r) == "v2" && phase(r) == "Progressing" && r["status"]["canaryWeight"] == 25
    })
    .await?;
    let before: Vec<u32> = site
        .processes()
        .iter()
        .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
        .collect();
    site.kill_controller()?;
    load.await_more(50, STEP).await?;
    for pid in &before {
        assert!(pid_alive(*pid), "workload {pid} died with the controller");
    }
    site.start_controller().await?;
    let record = site
        .await_status("v2 promoted", STEP, &mut seen, ended("v2", "Succeeded"))
        .await?;
    site.await_that("v2 alone", STEP, |s| settled_on(s, "v2"))
        .await?;
    let v2 = run_history(&record, "v2");
    assert_eq!(
        kinds(&v2).iter().filter(|k| *k == "promoting").count(),
        1,
        "{v2:#?}"
    );
    assert_eq!(advanced_weights(&v2), [25, 50], "{v2:#?}");
    assert_eq!(starts(&site, "primary", "v2"), 1);
    assert_eq!(
        starts(&site, "canary", "v2"),
        1,
        "the canary was adopted, not restarted"
    );

    // Killed while Promoting (the new primary is starting or waiting for traffic to move).
    site.rollout("v3", &[])?;
    site.await_status("v3 promoting", STEP, &mut seen, |r| {
        run_revision(r) == "v3" && phase(r) == "Promoting"
    })
    .await?;
    site.kill_controller()?;
    load.await_more(25, STEP).await?;
    site.start_controller().await?;
    let record = site
        .await_status("v3 promoted", STEP, &mut seen, ended("v3", "Succeeded"))
        .await?;
    site.await_that("v3 alone", STEP, |s| settled_on(s, "v3"))
        .await?;
    load.await_more(50, STEP).await?;
    let (report, samples) = load.finish().await?;

    let v3 = run_history(&record, "v3");
    let k = kinds(&v3);
    assert_eq!(k.iter().filter(|k| *k == "promoting").count(), 1, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "succeeded").count(), 1, "{k:?}");
    assert_eq!(
        starts(&site, "primary", "v3"),
        1,
        "the primary started on v3 exactly once"
    );
    assert_eq!(record["status"]["runs"], 2, "two runs, no restarted run");
    assert_eq!(
        report.errors,
        0,
        "failed requests across two controller crashes: {} {:?}\n{}",
        report.breakdown(),
        failures(&samples),
        site.controller_logs()
    );
    assert!(
        samples
            .iter()
            .rev()
            .take(50)
            .all(|s| s.version.as_deref() == Some("v3"))
    );

    // The same revision name with a changed environment is a new run (as a changed ConfigMap
    // is for Flagger), not a change nobody acts on. (The analysis needs traffic: without any,
    // noData.policy `wait` holds the run.)
    let load = site.start_load(RATE);
    load.await_more(20, STEP).await?;
    site.rollout("v3", &[("SERIN_SAMPLE_APP_MESSAGE", "hello")])?;
    let record = site
        .await_status("the re-rolled v3 promoted", STEP, &mut seen, |r| {
            r["status"]["runs"] == 3 && ended("v3", "Succeeded")(r)
        })
        .await?;
    let reruns = history(&record)
        .iter()
        .filter(|e| e["run"] == 3 && e["kind"] == "succeeded")
        .count();
    assert_eq!(reruns, 1);
    let (report, _) = load.finish().await?;
    assert_eq!(report.errors, 0, "{}", report.breakdown());
    site.stop().await;
    Ok(())
}

/// The template's check results recorded in `entries`: (verdict, value).
fn template_checks(entries: &[Value]) -> Vec<(String, Option<f64>)> {
    entries
        .iter()
        .flat_map(|e| e["checks"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["name"] == "canary-error-percentage")
        .map(|c| {
            (
                c["verdict"].as_str().unwrap_or_default().to_string(),
                c["value"].as_f64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_template_on_a_real_prometheus_judges_the_local_rollouts() -> anyhow::Result<()> {
    let shape = CanaryShape {
        template: true,
        ..CanaryShape::default()
    };
    let mut site = Site::start(bin(), "template", shape).await?;
    let admin = site
        .proxy_metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let prometheus = serin_analysis::testing::start_prometheus_with(
        serin_analysis::testing::PrometheusOptions {
            scrape_targets: vec![admin],
            ..Default::default()
        },
    )
    .await;
    let client = serin_analysis::PrometheusProvider::new(serin_analysis::PrometheusConfig::new(
        prometheus.address.clone(),
        serin_analysis::Mesh::Serin,
    ))?;
    let deadline = std::time::Instant::now() + STEP;
    while serin_analysis::MetricsProvider::probe(&client)
        .await
        .is_err()
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "Prometheus never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    site.metrics_server = Some(prometheus.address.clone());
    initialized(&mut site).await?;

    // The bad release: the template's error percentage (max 5) fails it.
    let load = site.start_load(50.0);
    load.await_more(20, STEP).await?;
    site.rollout("v2", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0.3")])?;
    let mut seen = Vec::new();
    let record = site
        .await_status("v2 rolled back", STEP, &mut seen, ended("v2", "Failed"))
        .await?;
    let checks = template_checks(&run_history(&record, "v2"));
    assert!(
        checks
            .iter()
            .filter(|(v, x)| v == "fail" && x.is_some_and(|x| x > 5.0))
            .count()
            >= 2,
        "the template failed v2 twice: {checks:?}"
    );
    site.await_that("the v2 canary stopped", STEP, |s| settled_on(s, "v1"))
        .await?;
    load.finish().await?;

    // The good release passes the same template and is promoted.
    let load = site.start_load(50.0);
    load.await_more(20, STEP).await?;
    site.rollout("v3", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0")])?;
    let record = site
        .await_status("v3 promoted", STEP, &mut seen, ended("v3", "Succeeded"))
        .await?;
    let checks = template_checks(&run_history(&record, "v3"));
    assert!(
        checks.iter().any(|(v, x)| v == "pass" && *x == Some(0.0)),
        "{checks:?}"
    );
    assert!(!checks.iter().any(|(v, _)| v == "fail"), "{checks:?}");
    let (report, _) = load.finish().await?;
    assert_eq!(report.errors, 0, "{}", report.breakdown());
    site.stop().await;
    drop(prometheus);
    Ok(())
}
