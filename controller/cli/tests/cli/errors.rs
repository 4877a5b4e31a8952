//! How any command reports a mistake: one plain `error:` line naming the flag or field, the
//! same whatever the environment.

use std::process::Command;

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// `serin ARGS` with nothing on its standard input.
fn without_input(args: &[&str]) -> std::process::Output {
    Command::new(SERIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("serin runs")
}

#[test]
fn a_flag_error_is_one_plain_line_even_with_rust_backtrace_set() {
    // CI images and Rust developers often export RUST_BACKTRACE=1; a mistyped flag must still
    // read as a message, not as a stack dump.
    for args in [
        &["install", "--namespace", "Not_A_Name"][..],
        &["uninstall", "--namespace", "Not_A_Name"][..],
        &["rollout", "podinfo", "--revision", "", "--dir", "."][..],
        &[
            "rollout",
            "podinfo",
            "--revision",
            "v2",
            "--dir",
            "/nonexistent-serin-dir",
        ][..],
        &[
            "load",
            "http://127.0.0.1:9/",
            "--rate",
            "0",
            "--duration",
            "1s",
        ][..],
    ] {
        let out = Command::new(SERIN)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("serin runs");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("backtrace"), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        // No placeholder where a field path would go (`--revision: -: must not be empty`).
        assert!(!err.contains(": -:"), "{args:?}: {err}");
    }
}

#[test]
fn a_bad_proxy_resource_flag_is_named_as_the_flag_before_any_pod_is_read() {
    // Checked up front: with no pod in the input it used to pass silently, and with one it was
    // reported as the per-pod annotation the user never wrote, twice.
    for (args, flag) in [
        (
            &["inject", "-", "--proxy-cpu-request", "banana"][..],
            "--proxy-cpu-request \"banana\"",
        ),
        (
            &["inject", "-", "--proxy-memory-limit", "1 GB"][..],
            "--proxy-memory-limit \"1 GB\"",
        ),
        (
            &["injector", "--proxy-cpu-limit", "two"][..],
            "--proxy-cpu-limit \"two\"",
        ),
    ] {
        let out = without_input(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("error: {flag}: not a Kubernetes quantity")),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_cause_already_quoted_in_the_message_is_not_printed_twice() {
    let dir = std::env::temp_dir().join(format!("serin-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: {serin.dev/proxy-memory-limit: lots}\n    spec:\n      containers: [{name: web, image: nginx}]\n",
    )
    .unwrap();
    let out = Command::new(SERIN)
        .arg("inject")
        .arg(&file)
        .output()
        .expect("serin runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("serin.dev/proxy-memory-limit").count(),
        1,
        "{err}"
    );
    assert!(err.contains("\"lots\" is not accepted"), "{err}");
}

#[test]
fn a_negative_number_reaches_the_flags_own_check_instead_of_clap_calling_it_an_argument() {
    // `--rps -5` used to end as "unexpected argument '-5' found", which names neither the flag
    // nor what it accepts.
    let dir = std::env::temp_dir().join(format!("serin-negative-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let canary = dir.join("c.yaml");
    std::fs::write(
        &canary,
        "apiVersion: serin.dev/v1beta1\nkind: Canary\nmetadata: {name: podinfo}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n  service: {port: 9898}\n  analysis: {interval: 1m, stepWeight: 10}\n",
    )
    .unwrap();
    let c = canary.to_str().unwrap();
    for (args, code, says) in [
        (
            &["plan", "-f", c, "--rps", "-5"][..],
            2,
            "--rps: -5 is not accepted; accepted:",
        ),
        (
            &["plan", "-f", c, "--rps", "5", "--error-rate", "-1"][..],
            2,
            "--error-rate: \"-1\" is not accepted; accepted:",
        ),
        (
            &["validate", "-f", c, "--rps", "-5"][..],
            2,
            "--rps: -5 is not accepted; accepted:",
        ),
        (
            &[
                "load",
                "http://127.0.0.1:9/",
                "--rate",
                "-1",
                "--duration",
                "1s",
            ][..],
            1,
            "--rate: -1 is not a rate",
        ),
        (
            &["install", "--control-plane-replicas", "-1"][..],
            1,
            "--control-plane-replicas \"-1\": a whole number from 1 to 100",
        ),
        (
            &["inject", "-", "--proxy-uid", "-1"][..],
            1,
            "--proxy-uid -1: not accepted; accepted: a UID from 1",
        ),
        (
            &["inject", "-", "--proxy-uid", "0"][..],
            1,
            "--proxy-uid 0: not accepted",
        ),
        (
            &["sample-app", "--error-rate", "-0.1"][..],
            1,
            "`-0.1` is not an error rate",
        ),
        (
            &["demo", "--rate", "-5"][..],
            1,
            "--rate: -5 is out of range; accepted: 10 to 2000",
        ),
    ] {
        let out = without_input(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_local_controller_refused_at_start_prints_no_dashboard_address() {
    // It used to bind the dashboard and print "dashboard on http://..." before finding that a
    // flag was missing, and ran on (logging at every reload) with a --local directory that
    // does not exist.
    let base = [
        "controller",
        "--dashboard-addr",
        "127.0.0.1:0",
        "--routes-dir",
        "/tmp",
        "--proxy-metrics",
        "http://127.0.0.1:9/metrics",
    ];
    for (extra, says) in [
        (
            &[
                "--local",
                "/nonexistent-serin-dir",
                "--control-plane",
                "http://127.0.0.1:9",
            ][..],
            "error: --local /nonexistent-serin-dir: not a directory",
        ),
        (
            &["--local", "/tmp"][..],
            "error: --local needs --control-plane URL",
        ),
    ] {
        let out = Command::new(SERIN)
            .args(base)
            .args(extra)
            .output()
            .expect("serin runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
