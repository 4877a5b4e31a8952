//! The CI commands against a REAL `serin controller --local` (the built `serin` binary, with its
//! dashboard on a port-0 address), a real local control plane and real `serin sample-app`
//! workload processes: every `serin wait` exit code reached by a real run, `wait` ignoring the
//! previous run's `Succeeded`, and manual commands persisted across a controller that was
//! SIGKILLed and started again, with who and when in the history.
//!
//! The Canary measures no metrics: its runs are steered by Flagger-style webhooks pointing at
//! the controller's own gate endpoints (`/gate/check` as the confirm-promotion gate,
//! `/rollback/check` as the rollback webhook), which `serin gate open|close` flips. So no proxy
//! or load is needed here; the browser test runs real traffic.

use crate::local_site;

use std::time::Duration;

use local_site::Site;
use serin_dashboard::model::{Action, CommandState, EntryKind, Phase, RunResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wait_exit_code_is_reached_by_a_real_local_controller_and_commands_survive_a_restart()
{
    let mut site = Site::start("exit-codes").await;
    site.start_controller().await;
    // The webhooks point at the dashboard's address, known once the controller printed it.
    site.write_gated_canary();
    let s = site
        .await_summary("podinfo initialized on v1", |s| {
            s.phase == Phase::Initialized && s.promoted_revision.as_deref() == Some("v1")
        })
        .await;
    assert_eq!(s.target_revision.as_deref(), Some("v1"));

    // 4: not found, and unreachable.
    let (code, _, err) = site.serin(&["wait", "nosuch", "--timeout", "10s"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("canary default/nosuch not found"), "{err}");
    let (code, _, err) = site
        .serin_at("http://127.0.0.1:1", &["status", "podinfo"])
        .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("unreachable"), "{err}");

    // Run 1 (v2) stops at the closed confirm-promotion gate.
    site.rollout("v2").await;
    // 3: timed out while the gate holds the run (no --until-paused).
    let (code, out, _) = site.serin(&["wait", "podinfo", "--timeout", "3s"]).await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("timed out after 3s waiting for default/podinfo revision v2"),
        "{out}"
    );
    // 2: waiting for a person, with --until-paused.
    let (code, out, _) = site
        .serin(&["wait", "podinfo", "--until-paused", "--timeout", "60s"])
        .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("waiting for confirm-promotion gate"), "{out}");
    // An action without the token is refused; with it, the gate opens.
    let (code, _, err) = site.serin_without_token(&["gate", "open", "podinfo"]).await;
    assert_ne!(code, 0, "a gate opened without the token");
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = site
        .serin(&["gate", "open", "podinfo", "--by", "release-bot"])
        .await;
    assert_eq!(code, 0, "{err}");
    // 0: promoted.
    let (code, out, _) = site.serin(&["wait", "podinfo", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("promoted: default/podinfo revision v2 (run 1)"),
        "{out}"
    );
    let (code, _, _) = site.serin(&["gate", "close", "podinfo"]).await;
    assert_eq!(code, 0);

    // Run 2 (v3): `wait` starts while the status still says Succeeded (v2) and must not return
    // on it; the rollback gate then rolls v3 back: 1.
    site.rollout("v3").await;
    let waiter = site.spawn_serin(&["wait", "podinfo", "--timeout", "90s"]);
    site.await_summary("run 2 of v3 in flight", |s| {
        s.revision_in_flight() == Some("v3")
    })
    .await;
    assert!(
        !waiter.is_finished(),
        "wait returned on the previous run's Succeeded"
    );
    let (code, _, err) = site
        .serin(&["gate", "open", "podinfo", "--gate", "rollback"])
        .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = waiter.await.unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("failed: default/podinfo: revision v3 rolled back (run 2)"),
        "{out}"
    );
    assert!(out.contains("rollback webhook"), "{out}");
    let (code, _, _) = site
        .serin(&["gate", "close", "podinfo", "--gate", "rollback"])
        .await;
    assert_eq!(code, 0);

    // Run 3 (v4): paused by a person; the controller is SIGKILLed and started again (on a new
    // dashboard port); the pause holds, and the history says who paused and when.
    site.rollout("v4").await;
    site.await_summary("run 3 of v4 in flight", |s| {
        s.revision_in_flight() == Some("v4")
    })
    .await;
    let (code, _, err) = site.serin(&["pause", "podinfo", "--by", "dana"]).await;
    assert_eq!(code, 0, "{err}");
    let paused = site.await_summary("v4 paused", |s| s.paused).await;
    let weight = paused.canary_weight;
    site.kill_controller();
    site.start_controller().await;
    site.write_gated_canary(); // the webhooks follow the new dashboard port
    let (code, out, _) = site
        .serin(&["wait", "podinfo", "--until-paused", "--timeout", "30s"])
        .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is paused: paused by dana"), "{out}");
    let s = site.summary().await;
    assert!(s.paused && s.revision_in_flight() == Some("v4"), "{s:?}");
    assert_eq!(s.canary_weight, weight, "a paused run does not advance");
    let history = site.history().await;
    let pause = history
        .iter()
        .find_map(|e| match &e.kind {
            EntryKind::Command {
                action: Action::Pause,
                by,
                state: CommandState::Applied,
                ..
            } => Some((by.clone(), e.at, e.run)),
            _ => None,
        })
        .expect("the applied pause is in the history");
    assert_eq!(pause.0, "dana");
    assert_eq!(pause.2, Some(3));
    assert!(pause.1 > s.run.as_ref().unwrap().started_at);

    // Resume, then abort: 1 again, recorded as aborted by whom.
    let (code, _, err) = site.serin(&["resume", "podinfo", "--by", "dana"]).await;
    assert_eq!(code, 0, "{err}");
    site.await_summary("v4 resumed", |s| !s.paused).await;
    let (code, _, err) = site.serin(&["abort", "podinfo", "--by", "oncall"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = site.serin(&["wait", "podinfo", "--timeout", "60s"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("revision v4 aborted (run 3)"), "{out}");
    let detail = site.detail().await;
    let run3 = detail.runs.iter().find(|r| r.run.id == 3).unwrap();
    let outcome = run3.run.outcome.as_ref().unwrap();
    assert_eq!(outcome.result, RunResult::Aborted);
    assert!(outcome.reason.contains("oncall"), "{outcome:?}");

    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_refuses_bad_dashboard_flags_with_the_flag_named() {
    let site = Site::start("bad-flags").await;
    for (args, needle) in [
        (
            vec!["--dashboard-addr", "localhost"],
            "--dashboard-addr \"localhost\": not an address",
        ),
        (vec!["--dashboard-token", " "], "--dashboard-token"),
    ] {
        let (code, err) = site.controller_once(&args).await;
        assert_ne!(code, 0);
        assert!(err.contains(needle), "{err}");
    }
    // A busy port is a start-up error naming the flag, not a controller without a dashboard.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, err) = site.controller_once(&["--dashboard-addr", &addr]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("--dashboard-addr {addr}: cannot listen")),
        "{err}"
    );
    drop(busy);
    let _ = Duration::ZERO;
    site.stop().await;
}

/// A running controller with the gated Canary, initialized on v1.
async fn gated_on_v1(test: &str) -> Site {
    let mut site = Site::start(test).await;
    site.start_controller().await;
    site.write_gated_canary();
    site.await_summary("podinfo initialized on v1", |s| {
        s.phase == Phase::Initialized && s.promoted_revision.as_deref() == Some("v1")
    })
    .await;
    site
}

async fn await_v2_at_the_gate(site: &Site) {
    site.await_summary("v2 waiting at the confirm gate", |s| {
        s.waiting.is_some() && s.revision_in_flight() == Some("v2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_saved_mid_rollout_keeps_the_run_on_its_last_valid_manifests() {
    let site = gated_on_v1("typo").await;
    // Run 1 (v2) holds at the closed confirm-promotion gate.
    site.rollout("v2").await;
    await_v2_at_the_gate(&site).await;
    let run = site.summary().await.run.unwrap().id;

    // Someone saves a typo in each manifest mid-run.
    let canary = site.read("canary.yaml");
    let process = site.read("process.yaml");
    let broken_canary = canary.replace("threshold: 1", "threshold: one");
    let broken_process = process.replace("kind: Process", "kind: Process\nspec: [");
    assert_ne!(broken_canary, canary);
    site.write("canary.yaml", &broken_canary);
    site.write("process.yaml", &broken_process);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !site
        .logs()
        .contains("it keeps running with its last valid manifest")
        || !site.logs().contains("kept=Process default/podinfo")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the controller never said it kept the last valid manifests:\n{}",
            site.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        site.logs().contains("threshold"),
        "the error names the field:\n{}",
        site.logs()
    );
    // Not deleted, not holding on a missing target: the same run, still at its gate.
    let s = site.summary().await;
    assert_ne!(s.phase, Phase::Terminating, "{s:#?}");
    assert_eq!(s.run.as_ref().map(|r| r.id), Some(run), "{s:#?}");
    assert!(s.waiting.is_some(), "{s:#?}");
    assert_eq!(s.target_revision.as_deref(), Some("v2"), "{s:#?}");

    // Fixed, and the gate opened: the run promotes v2.
    site.write("canary.yaml", &canary);
    site.write("process.yaml", &process);
    let (code, _, err) = site.serin(&["gate", "open", "podinfo"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = site.serin(&["wait", "podinfo", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{out}\n{}", site.logs());
    assert!(
        out.contains(&format!(
            "promoted: default/podinfo revision v2 (run {run})"
        )),
        "{out}"
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_manifest_is_removed_and_put_back_starts_anew() {
    let site = gated_on_v1("recreated").await;
    let canary = site.read("canary.yaml");
    // Deleted (its manifest removed): the controller terminates it.
    site.remove("canary.yaml");
    site.await_summary("podinfo terminating", |s| s.phase == Phase::Terminating)
        .await;
    // Re-created: a new Canary, as `kubectl apply` after `kubectl delete` makes one.
    site.write("canary.yaml", &canary);
    site.await_summary("podinfo initialized again", |s| {
        s.phase == Phase::Initialized && s.promoted_revision.as_deref() == Some("v1")
    })
    .await;
    // And it rolls out again.
    site.rollout("v2").await;
    await_v2_at_the_gate(&site).await;
    site.stop().await;
}

/// Polls (the controller runs on its own clock) until `pred` holds for the site, or fails
/// naming `what` with the controller's logs.
async fn await_site(site: &Site, what: &str, pred: impl Fn(&Site) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pred(site) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; instances {:?}, routes {:?}\n{}",
            site.live_instances(),
            site.routes_file(),
            site.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_canary_stops_what_it_ran_and_its_routes_go() {
    let site = gated_on_v1("removed-stops").await;
    site.rollout("v2").await;
    await_v2_at_the_gate(&site).await;
    let before = site.live_instances();
    assert!(
        before.iter().any(|(role, _, _)| role == "primary")
            && before.iter().any(|(role, _, _)| role == "canary"),
        "{before:?}"
    );
    assert!(site.routes_file().is_some());
    // Deleted without revertOnDeletion: as Kubernetes' garbage collector deletes the primary
    // and the Services a Canary owns, nothing of it keeps running or routed.
    site.remove("canary.yaml");
    await_site(
        &site,
        "every podinfo process stopped and its routes gone",
        |s| s.live_instances().is_empty() && s.routes_file().is_none(),
    )
    .await;
    for (_, pid, _) in before {
        assert!(!serin_local::site::pid_alive(pid), "pid {pid} still runs");
    }
    site.stop().await;
}

/// A gated Canary with revertOnDeletion, initialized on v1, then removed: once this returns the
/// target was scaled up and got all the traffic, and the primary stopped.
async fn handed_back(test: &str) -> Site {
    let mut site = Site::start(test).await;
    site.start_controller().await;
    let canary = site
        .gated_canary()
        .replacen("spec:\n", "spec:\n  revertOnDeletion: true\n", 1);
    site.write("canary.yaml", &canary);
    site.await_summary("podinfo initialized on v1", |s| {
        s.phase == Phase::Initialized && s.promoted_revision.as_deref() == Some("v1")
    })
    .await;
    site.remove("canary.yaml");
    await_site(&site, "only the target left, with all the traffic", |s| {
        let live = s.live_instances();
        !live.is_empty()
            && live.iter().all(|(role, _, _)| role == "canary")
            && s.routes_file().is_some_and(|r| r.contains("podinfo"))
    })
    .await;
    site
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_canary_with_revert_on_deletion_leaves_the_target_serving_until_its_process_goes()
{
    let mut site = handed_back("removed-reverts").await;
    let (_, _, port) = site.live_instances()[0].clone();
    let routes = site.routes_file().unwrap();
    assert!(
        routes.contains(&format!("127.0.0.1:{port}")) || routes.contains(&port.to_string()),
        "{routes}"
    );
    // It outlives a controller restart: the new controller takes it back.
    site.kill_controller();
    site.start_controller().await;
    await_site(&site, "the target still serving after the restart", |s| {
        s.live_instances().iter().any(|(_, _, p)| *p == port) && s.routes_file().is_some()
    })
    .await;
    // Its Process manifest removed too: it stops, and its routes go.
    site.remove("process.yaml");
    await_site(&site, "the target stopped and its routes gone", |s| {
        s.live_instances().is_empty() && s.routes_file().is_none()
    })
    .await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_removed_while_no_controller_ran_is_cleaned_up_by_the_next_one() {
    let mut site = gated_on_v1("removed-offline").await;
    let before = site.live_instances();
    assert!(!before.is_empty());
    site.kill_controller();
    site.remove("canary.yaml");
    site.start_controller().await;
    await_site(
        &site,
        "the left-behind processes stopped and routes gone",
        |s| s.live_instances().is_empty() && s.routes_file().is_none(),
    )
    .await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_named_apart_from_its_target_removed_while_no_controller_ran_leaves_no_routes() {
    let mut site = Site::start("removed-offline-named").await;
    site.start_controller().await;
    // The Canary `podinfo-rollout` targets the Process `podinfo` and routes its Service
    // `podinfo`: nothing about what it runs can be read off the Canary's name.
    let canary = site.gated_canary().replacen(
        "metadata:\n  name: podinfo\n",
        "metadata:\n  name: podinfo-rollout\n",
        1,
    );
    assert!(canary.contains("podinfo-rollout"), "{canary}");
    site.write("canary.yaml", &canary);
    await_site(&site, "podinfo running and routed", |s| {
        !s.live_instances().is_empty() && s.routes_file().is_some()
    })
    .await;
    site.kill_controller();
    site.remove("canary.yaml");
    site.start_controller().await;
    await_site(
        &site,
        "the left-behind processes stopped and the podinfo routes gone",
        |s| s.live_instances().is_empty() && s.routes_file().is_none(),
    )
    .await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_manifest_is_broken_at_start_up_is_not_cleaned_up_as_removed() {
    let mut site = gated_on_v1("broken-at-start").await;
    let before = site.live_instances();
    assert!(!before.is_empty());
    site.kill_controller();
    // A typo saved while no controller ran: the Canary is broken, not removed.
    let broken = site.gated_canary().replacen("spec:\n", "spec: [\n", 1);
    site.write("canary.yaml", &broken);
    site.start_controller().await;
    await_site(&site, "the controller's start-up done", |s| {
        s.logs().contains("local controller started")
    })
    .await;
    for (_, pid, _) in &before {
        assert!(
            serin_local::site::pid_alive(*pid),
            "pid {pid} was stopped\n{}",
            site.logs()
        );
    }
    assert!(site.routes_file().is_some(), "{}", site.logs());
    // Fixed, it is the same Canary, still on what it ran.
    site.write_gated_canary();
    site.await_summary("podinfo still initialized on v1", |s| {
        s.phase == Phase::Initialized && s.promoted_revision.as_deref() == Some("v1")
    })
    .await;
    let after = site.live_instances();
    assert!(
        before.iter().all(|b| after.contains(b)),
        "{before:?} -> {after:?}"
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_directory_that_cannot_be_read_removes_nothing() {
    let site = gated_on_v1("unreadable-dir").await;
    let before = site.live_instances();
    assert!(!before.is_empty());
    // The directory goes away for a while (an unmounted volume, a checkout being replaced):
    // nothing in it can be told removed, so nothing stops.
    let dir = site.manifests();
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).unwrap();
    await_site(
        &site,
        "the controller to find the directory unreadable",
        |s| s.logs().contains("cannot read the manifest directory"),
    )
    .await;
    // One more pass of the loop, then the workloads and routes are still there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(site.live_instances(), before, "{}", site.logs());
    assert!(site.routes_file().is_some());
    assert!(!site.logs().contains("manifest removed"), "{}", site.logs());
    std::fs::rename(&aside, &dir).unwrap();
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_target_outlives_a_restart_with_its_process_manifest_broken() {
    let mut site = handed_back("released-broken").await;
    let target = site.live_instances();
    // Restarted while its Process manifest has a typo: a Process missing from a broken file is
    // not a removed one, so the target keeps running and routed.
    site.kill_controller();
    let process = site.read("process.yaml");
    site.write("process.yaml", &format!("{process}\n  oops: [\n"));
    site.start_controller().await;
    await_site(&site, "the restarted controller running", |s| {
        s.logs().matches("local controller started").count() == 2
    })
    .await;
    // A few passes of its loop (each reconciles the released target).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = site.logs();
    assert!(logs.contains("process.yaml: not valid YAML"), "{logs}");
    assert!(!logs.contains("Process manifest is gone"), "{logs}");
    assert_eq!(site.live_instances(), target, "{logs}");
    let (_, _, port) = target[0];
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the target no longer answers on {port}\n{logs}"
    );
    assert!(
        site.routes_file()
            .is_some_and(|r| r.contains(&port.to_string())),
        "{logs}"
    );
    site.write("process.yaml", &process);
    site.stop().await;
}
