//! How any command reports a mistake: one plain `error:` line naming the flag or field, the
//! same whatever the environment.

use std::process::Command;

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

#[test]
fn a_flag_error_is_one_plain_line_even_with_rust_backtrace_set() {
    // CI images and Rust developers often export RUST_BACKTRACE=1; a mistyped flag must still
    // read as a message, not as a stack dump.
    for args in [
        &["install", "--namespace", "Not_A_Name"][..],
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
        let out = Command::new(SERIN)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("serin runs");
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
