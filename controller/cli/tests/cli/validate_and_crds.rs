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
        "<stdin>: document 1 (Canary test/podinfo): valid and runnable\n"
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
        "<stdin>: document 1 (Canary test/podinfo): valid and runnable\n"
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
fn a_cloudwatch_query_with_a_misspelt_key_is_named_before_it_runs() {
    let template = |query: &str| {
        format!(
            "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {{name: cw, namespace: test}}\nspec:\n  provider: {{type: cloudwatch, region: eu-west-1}}\n  query: |\n    {query}\n"
        )
    };
    // Template expressions inside strings and in place of numbers keep a query checkable.
    let good = template(
        r#"[{"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Errors", "Dimensions": [{"Name": "app", "Value": "{{ target }}"}]}, "Period": {{ variables.period }}, "Stat": "Sum"}}]"#,
    );
    let out = run_stdin(&["validate", "-f", "-"], &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bad = template(
        r#"[{"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Errors", "Dimension": [{"Name": "app", "Value": "{{ target }}"}]}, "Period": 60, "Stat": "Sum"}}]"#,
    );
    let out = run_stdin(&["validate", "-f", "-"], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "<stdin>: document 1 (MetricTemplate test/cw): spec.query: query[0].MetricStat.Metric: unknown key \"Dimension\"; accepted: Namespace, MetricName, Dimensions\n\
         serin validate: 1 of 1 documents are invalid\n"
    );
}

#[test]
fn a_template_query_naming_an_unknown_variable_is_named_before_it_runs() {
    let template = |query: &str| {
        format!(
            "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {{name: t, namespace: test}}\nspec:\n  provider: {{type: prometheus, address: \"http://prometheus:9090\"}}\n  query: '{query}'\n"
        )
    };
    let good = template(
        r#"sum(rate(x{namespace="{{ namespace }}",deployment=~"{{ target }}",zone="{{ variables.zone }}"}[{{ interval }}]))"#,
    );
    let out = run_stdin(&["validate", "-f", "-"], &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // `{{ deployment }}` is not one of Flagger's variables: at run time it would hold the canary
    // at its first step with an inconclusive check.
    let bad = template(r#"sum(rate(x{deployment=~"{{ deployment }}"}[1m]))"#);
    let out = run_stdin(&["validate", "-f", "-"], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "<stdin>: document 1 (MetricTemplate test/t): spec.query: template variable `deployment` is not defined (known: name, namespace, target, service, ingress, route, interval, variables.<key>)\n\
         serin validate: 1 of 1 documents are invalid\n"
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

/// The good fixtures, copied into `dir`; with `convert`, apiVersion changed to Serin's.
fn copy_fixtures(dir: &Path, convert: bool) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        if convert {
            text = text.replace("flagger.app/v1beta1", "serin.dev/v1beta1");
        }
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
        count += 1;
    }
    count
}

#[test]
fn every_flagger_fixture_is_valid_after_changing_only_api_version_and_exit_three_names_what_is_not_run()
 {
    let dir = scratch("fixtures");
    assert!(copy_fixtures(&dir, true) >= 15);
    let out = serin().args(["validate", "-f"]).arg(&dir).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stdout.contains("(Ingress test/podinfo): skipped"),
        "{stdout}"
    );
    assert!(
        !stderr.lines().any(|l| l.contains(": spec.")
            && !l.contains(": warning: ")
            && !l.contains("not runnable by this Serin: ")),
        "no document may be invalid:\n{stderr}"
    );
    assert!(
        stderr.contains("(Canary test/podinfo): valid for Flagger, not runnable by this Serin: provider \"nginx\" is not driven by this Serin (canary Ingress annotations are not written); supported: serin, kubernetes, linkerd, gatewayapi,"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(MetricTemplate test/keptn-slo): valid for Flagger, not runnable by this Serin: metric provider \"keptn\" is not queried by this Serin; supported: prometheus,"),
        "{stderr}"
    );
    for queried in [
        "datadog-errors",
        "cloudwatch-latency",
        "cloudwatch-error-rate",
        "splunk-errors",
        "splunk-stream-latency",
    ] {
        assert!(
            !stderr.contains(&format!("(MetricTemplate test/{queried})")),
            "{queried} is queried: {stderr}"
        );
    }
    // A Canary in one file using a template of another file that is not queried.
    assert!(
        stderr.contains("(Canary test/podinfo): valid for Flagger, not runnable by this Serin: metric \"error-rate\" uses MetricTemplate test/keptn-slo"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(" documents are valid for Flagger but not runnable by this Serin\n"),
        "{stderr}"
    );
    assert!(
        stdout.contains(": warning: spec.analysis.interval: \"5s\" is shorter than 10s"),
        "{stdout}"
    );
}

#[test]
fn a_migration_report_reads_a_flagger_directory_unchanged() {
    let dir = scratch("migration");
    let count = copy_fixtures(&dir, false);
    let out = serin()
        .args(["validate", "--flagger", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stdout.starts_with("Flagger migration report for "),
        "{stdout}"
    );
    assert!(
        stdout.contains("(Canary test/abtest): ignored: spec.service.gateways: Istio VirtualService/DestinationRule setting; Serin writes HTTPRoutes"),
        "{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.contains(" documents: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let runnable = stdout.matches(": valid and runnable").count();
    let not_runnable = stderr
        .lines()
        .filter(|l| l.contains(": valid for Flagger, not runnable"))
        .map(|l| l.split(": valid for").next().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        summary.starts_with(&format!(
            "{} documents: {runnable} valid and runnable, {not_runnable} valid for Flagger but not runnable by this Serin, 0 invalid; ",
            runnable + not_runnable
        )),
        "{summary}"
    );
    assert!(
        // Not-runnable documents shrink as providers are added (cloudwatch and splunk left it).
        count >= 15 && runnable >= 15 && not_runnable >= 10,
        "{summary}"
    );
    assert!(
        stdout.contains("To migrate the runnable documents"),
        "{stdout}"
    );

    // The repository's fixture tree, bad examples included (searched recursively): exit 1.
    let out = serin()
        .args(["validate", "--flagger", "-f"])
        .arg(fixtures())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("provider-linkerd-v9.yaml: document 1 (Canary test/podinfo): spec.provider: unknown version \"v9\" of provider linkerd"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_valid_canary_this_serin_does_not_run_exits_three() {
    let istio = VALID.replace("  targetRef:", "  provider: istio\n  targetRef:");
    let out = run_stdin(&["validate", "-f", "-"], &istio);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "<stdin>: document 1 (Canary test/podinfo): valid for Flagger, not runnable by this Serin: {}\n\
             serin validate: 1 of 1 documents are valid for Flagger but not runnable by this Serin\n",
            serin_api::support::provider_not_driven("istio").unwrap()
        )
    );
    // An invalid document wins over a runnable-or-not verdict.
    let out = run_stdin(
        &["validate", "-f", "-"],
        &format!(
            "{istio}---\n{}",
            VALID.replace("interval: 1m", "interval: 60")
        ),
    );
    assert_eq!(out.status.code(), Some(1));
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
        "{}: document 1 (Canary test/podinfo): spec.targetRef.kind: unknown value \"StatefulSet\"; accepted: Deployment, DaemonSet, Process, Service\n",
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
        "<stdin>: document 1 (AlertProvider slack): valid and runnable\n"
    );
}

#[test]
fn local_process_manifests_are_checked_with_the_local_reader() {
    let good = "apiVersion: serin.dev/v1beta1\nkind: Process\nmetadata:\n  name: podinfo\nspec:\n  command: serin\n  args: [sample-app]\n";
    let out = run_stdin(&["validate", "-f", "-"], &format!("{good}---\n{VALID}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .starts_with("<stdin>: document 1 (Process podinfo): valid and runnable\n"),
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

#[test]
fn validate_with_rps_prints_the_plan_beside_the_verdict() {
    let out = run_stdin(&["validate", "-f", "-", "--rps", "1"], PLANNED_CANARY);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let prefix = "<stdin>: document 1 (Canary test/podinfo)";
    assert!(
        stdout.contains(&format!("{prefix}: valid and runnable")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{prefix}: plan at 1 rps:")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{prefix}: plan: schedule: stepWeights 10,20,30,40,50, interval 1m, stepBudget 30m"
        )),
        "{stdout}"
    );
    // The same figures as `serin plan`: both scenarios and the verdict in words.
    for expected in [
        "plan: healthy canary: promoted 0%",
        "plan: 2x error rate : promoted 0%",
        "plan: => at 1 rps this rollout can never prove anything; it will end by onInconclusive (rollback) after 30m",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}:\n{stdout}");
    }
    // Without --rps validate prints no plan (it knows no traffic).
    let out = run_stdin(&["validate", "-f", "-"], PLANNED_CANARY);
    assert!(!text(&out.stdout).contains("plan"), "{}", text(&out.stdout));
    // A Canary without the judge has nothing to plan, and says why; still valid (exit 0).
    let judgeless = PLANNED_CANARY.replace(
        "    judge: {onInconclusive: rollback, stepBudget: 30m}\n",
        "",
    );
    let out = run_stdin(&["validate", "-f", "-", "--rps", "5"], &judgeless);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{prefix}: plan: none: spec.analysis.judge is off")),
        "{}",
        text(&out.stdout)
    );
    // Bad traffic flags name the flag and exit 2.
    let out = run_stdin(&["validate", "-f", "-", "--rps=-3"], PLANNED_CANARY);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--rps: -3 is not accepted; accepted: requests per second"),
        "{}",
        text(&out.stderr)
    );
    let out = run_stdin(
        &["validate", "-f", "-", "--rps", "3", "--error-rate", "many"],
        PLANNED_CANARY,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--error-rate"),
        "{}",
        text(&out.stderr)
    );
    let out = run_stdin(
        &["validate", "-f", "-", "--error-rate", "2%"],
        PLANNED_CANARY,
    );
    assert_eq!(out.status.code(), Some(2), "--error-rate needs --rps");
}

const DATADOG_TEMPLATE: &str = "apiVersion: serin.dev/v1beta1
kind: MetricTemplate
metadata: {name: latency, namespace: prod}
spec:
  provider: {type: datadog, address: https://api.datadoghq.eu, secretRef: {name: datadog}}
  query: avg:trace.http.request.duration{service:podinfo}
";

const SLACK_PROVIDER: &str = "apiVersion: serin.dev/v1beta1
kind: AlertProvider
metadata: {name: on-call, namespace: prod}
spec:
  type: slack
  secretRef: {name: slack-url}
";

/// The local platform reads a `secretRef` only from a `kind: Secret` document beside the
/// template: `validate` warns, naming the field and the Secret, when none is given (in another
/// namespace does not count), and says nothing once it is there (in any of the files given).
#[test]
fn a_secret_named_but_not_among_the_documents_is_a_warning_naming_field_and_secret() {
    let out = run_stdin(
        &["validate", "-f", "-"],
        &format!(
            "{DATADOG_TEMPLATE}---\n{SLACK_PROVIDER}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: datadog, namespace: staging}}\nstringData: {{datadog_api_key: a, datadog_application_key: b}}\n"
        ),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning only: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("<stdin>: document 1 (MetricTemplate prod/latency): warning: spec.provider.secretRef.name: Secret prod/datadog is not among the documents given; the local platform reads it only from a `kind: Secret` document"),
        "{stdout}"
    );
    assert!(
        stdout.contains("<stdin>: document 2 (AlertProvider prod/on-call): warning: spec.secretRef.name: Secret prod/slack-url is not among the documents given"),
        "{stdout}"
    );
    // What a provider's "supported" stands on is said with the template.
    assert!(
        stdout.contains("<stdin>: document 1 (MetricTemplate prod/latency): note: provider datadog: tested against a local HTTP server"),
        "{stdout}"
    );

    let dir = scratch("secrets");
    std::fs::write(dir.join("template.yaml"), DATADOG_TEMPLATE).unwrap();
    std::fs::write(dir.join("provider.yaml"), SLACK_PROVIDER).unwrap();
    std::fs::write(
        dir.join("secrets.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: datadog, namespace: prod}\nstringData: {datadog_api_key: a, datadog_application_key: b}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: slack-url, namespace: prod}\nstringData: {address: https://hooks.slack.com/services/x}\n",
    )
    .unwrap();
    let out = serin()
        .args(["validate", "-f", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("warning"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn fields_serin_accepts_and_ignores_are_named_without_flagger_too() {
    // A Serin Canary (not only a Flagger one under --flagger) that sets a field Serin keeps but
    // does not act on is told so: retries and a service-level match would otherwise vanish
    // silently from the rollout.
    let canary = VALID.replace(
        "  service: {port: 9898}\n",
        "  service:\n    port: 9898\n    retries: {attempts: 3}\n    match:\n      - uri: {prefix: /api}\n",
    );
    let out = run_stdin(&["validate", "-f", "-"], &canary);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("<stdin>: document 1 (Canary test/podinfo): valid and runnable\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("<stdin>: document 1 (Canary test/podinfo): ignored: spec.service.retries: retries are not part of the routes Serin writes\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(Canary test/podinfo): ignored: spec.service.match: "),
        "{stdout}"
    );
    // --quiet prints only errors and documents that are not runnable.
    let out = run_stdin(&["validate", "-q", "-f", "-"], &canary);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "");
}
