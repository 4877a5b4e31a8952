//! `serin crds` and `serin validate`, run as the built binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn serin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serin"));
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    repo().join("controller/api/tests/fixtures/flagger")
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = serin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory under the target dir, unique per test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("validate-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const VALID: &str = "\
apiVersion: serin.dev/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 1m
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
";

#[test]
fn crds_prints_exactly_the_committed_yaml() {
    let out = serin().arg("crds").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed = std::fs::read_to_string(repo().join("crds/serin.yaml")).unwrap();
    assert!(
        text(&out.stdout) == committed,
        "`serin crds` differs from crds/serin.yaml; regenerate with: cargo run -p serin-cli -- crds > crds/serin.yaml"
    );
    let kinds: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("    kind: "))
        .map(|l| l.trim_start_matches("    kind: ").to_string())
        .collect();
    assert_eq!(kinds, ["Canary", "MetricTemplate", "AlertProvider"]);
}

#[test]
fn a_valid_manifest_on_stdin_passes() {
    let out = run_stdin(&["validate", "-f", "-"], VALID);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "<stdin>: document 1 (Canary test/podinfo): valid\n"
    );
}

#[test]
fn errors_name_file_document_resource_and_field_and_exit_one() {
    let bad = VALID
        .replace("interval: 1m", "interval: 60")
        .replace("stepWeight: 10", "stepWeights: [10, 5]");
    let input = format!("{VALID}---\n{bad}");
    let out = run_stdin(&["validate", "-f", "-"], &input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "<stdin>: document 1 (Canary test/podinfo): valid\n"
    );
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr,
        "<stdin>: document 2 (Canary test/podinfo): spec.analysis.interval: 60 has no unit; accepted: a duration like 10s, 1m, 1m30s or 1h\n\
         <stdin>: document 2 (Canary test/podinfo): spec.analysis.stepWeights[1]: 5 does not increase on the previous step 10; accepted: strictly increasing weights\n\
         serin validate: 1 of 2 documents are invalid\n"
    );
}

#[test]
fn flagger_manifests_are_told_to_change_api_version() {
    let file = fixtures().join("podinfo-linkerd.yaml");
    let out = serin()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: document 1 (Canary test/podinfo): apiVersion: flagger.app/v1beta1 is Flagger's; change apiVersion to serin.dev/v1beta1",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn every_flagger_fixture_passes_after_changing_only_api_version() {
    let dir = scratch("fixtures");
    let mut count = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let converted = std::fs::read_to_string(&path)
            .unwrap()
            .replace("flagger.app/v1beta1", "serin.dev/v1beta1");
        std::fs::write(dir.join(path.file_name().unwrap()), converted).unwrap();
        count += 1;
    }
    assert!(count >= 10);
    let out = serin().args(["validate", "-f"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(Ingress test/podinfo): skipped"),
        "{stdout}"
    );
    assert_eq!(stdout.matches(": valid").count(), 20, "{stdout}");
}

#[test]
fn yaml_syntax_errors_report_line_and_column() {
    // VALID is 14 lines; the unclosed list is on line 18 and the parser notices at the end of
    // the stream, line 19: line numbers count from the start of the file, not the document.
    assert_eq!(VALID.lines().count(), 14);
    let input = format!("{VALID}---\nkind: Canary\nmetadata:\n  name: [x\n");
    let out = run_stdin(&["validate", "-f", "-"], &input);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("<stdin>: document 2: line 19 column 1: YAML syntax error: "),
        "{stderr}"
    );
}

#[test]
fn several_files_and_quiet_mode() {
    let dir = scratch("several");
    let good = dir.join("good.yaml");
    let bad = dir.join("bad.yaml");
    std::fs::write(&good, VALID).unwrap();
    std::fs::write(&bad, VALID.replace("kind: Deployment", "kind: StatefulSet")).unwrap();
    let out = serin()
        .args(["validate", "--quiet", "-f"])
        .arg(&good)
        .arg("-f")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).starts_with(&format!(
        "{}: document 1 (Canary test/podinfo): spec.targetRef.kind: unknown value \"StatefulSet\"; accepted: Deployment, DaemonSet, Process\n",
        bad.display()
    )));
}

#[test]
fn unreadable_input_and_nothing_to_check_exit_two() {
    let out = serin()
        .args(["validate", "-f", "/nonexistent/canary.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("serin validate: cannot read /nonexistent/canary.yaml: ")
    );

    let out = run_stdin(
        &["validate", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no Canary, MetricTemplate or AlertProvider found"));
}

#[test]
fn the_file_flag_is_required() {
    let out = serin().arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--filename"));
}

#[test]
fn json_manifests_are_accepted() {
    let json = r#"{"apiVersion":"serin.dev/v1beta1","kind":"AlertProvider","metadata":{"name":"slack"},"spec":{"type":"slack","address":"https://hooks.slack.com/services/x"}}"#;
    let out = run_stdin(&["validate", "-f", "-"], json);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "<stdin>: document 1 (AlertProvider slack): valid\n"
    );
}

#[test]
fn local_process_manifests_are_checked_with_the_local_reader() {
    let good = "apiVersion: serin.dev/v1beta1\nkind: Process\nmetadata:\n  name: podinfo\nspec:\n  command: serin\n  args: [sample-app]\n";
    let out = run_stdin(&["validate", "-f", "-"], &format!("{good}---\n{VALID}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("<stdin>: document 1 (Process podinfo): valid\n"),
        "{}",
        text(&out.stdout)
    );

    let bad = "apiVersion: serin.dev/v1beta1\nkind: Process\nmetadata:\n  name: Pod_Info\nspec:\n  command: serin\n";
    let out = run_stdin(&["validate", "-f", "-"], bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("<stdin>: document 1 (Process Pod_Info): metadata.name: "),
        "{}",
        text(&out.stderr)
    );
}

const PLANNED_CANARY: &str = "apiVersion: serin.dev/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 1m
    stepWeights: [10, 20, 30, 40, 50]
    judge: {onInconclusive: rollback, stepBudget: 30m}
";

#[test]
fn plan_says_when_a_rollout_can_never_prove_anything() {
    let out = run_stdin(
        &["plan", "-f", "-", "--rps", "1", "--trials", "20"],
        PLANNED_CANARY,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Canary test/podinfo"), "{stdout}");
    assert!(
        stdout.contains("stepWeights 10,20,30,40,50, interval 1m, stepBudget 30m"),
        "{stdout}"
    );
    assert!(
        stdout.contains("at 1 rps this rollout can never prove anything; it will end by onInconclusive (rollback) after 30m"),
        "{stdout}"
    );
    // Busy enough: a figure for both scenarios.
    let out = run_stdin(
        &[
            "plan",
            "-f",
            "-",
            "--rps",
            "200",
            "--error-rate",
            "5%",
            "--trials",
            "20",
        ],
        PLANNED_CANARY,
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("a healthy release is typically promoted in"),
        "{stdout}"
    );
}

#[test]
fn plan_rejects_bad_flags_and_judgeless_canaries() {
    let out = run_stdin(
        &["plan", "-f", "-", "--rps", "5", "--error-rate", "lots"],
        PLANNED_CANARY,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--error-rate"),
        "{}",
        text(&out.stderr)
    );
    let out = run_stdin(&["plan", "-f", "-", "--rps", "-1"], PLANNED_CANARY);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--rps"), "{}", text(&out.stderr));
    let judgeless = PLANNED_CANARY.replace(
        "    judge: {onInconclusive: rollback, stepBudget: 30m}\n",
        "",
    );
    let out = run_stdin(&["plan", "-f", "-", "--rps", "5"], &judgeless);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("spec.analysis.judge is off"),
        "{}",
        text(&out.stderr)
    );
}
