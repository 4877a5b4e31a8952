use super::*;

const GOOD: &str = r#"
apiVersion: serin.dev/v1beta1
kind: Process
metadata:
  name: podinfo
spec:
  command: serin
  args: ["sample-app", "--addr", "127.0.0.1:$(PORT)"]
  env:
    - name: GREETING
      value: "on $(PORT)"
  readinessProbe:
    httpGet: { path: /readyz }
"#;

#[test]
fn a_process_reads_with_defaults_and_expands_the_port() {
    let (docs, errors) = read_str(GOOD, "p.yaml", Path::new("."));
    assert!(errors.is_empty(), "{errors:?}");
    let Document::Process { process, .. } = &docs[0] else {
        panic!("not a process")
    };
    assert_eq!(process.spec.port_env, "PORT");
    assert_eq!(process.spec.termination_grace_period_seconds, 30);
    let env = process_env(&process.spec, 4242);
    assert_eq!(env["PORT"], "4242");
    assert_eq!(env["GREETING"], "on 4242");
    assert_eq!(process_args(&process.spec, &env)[2], "127.0.0.1:4242");
}

#[test]
fn the_revision_is_explicit_or_a_stable_hash_of_what_runs() {
    let (docs, _) = read_str(GOOD, "p.yaml", Path::new("."));
    let Document::Process { process, .. } = &docs[0] else {
        panic!()
    };
    let mut spec = process.spec.clone();
    let hash = spec.revision();
    assert_eq!(hash.len(), 16);
    assert_eq!(hash, spec.revision(), "stable");
    spec.args.push("--app-version=v2".into());
    assert_ne!(hash, spec.revision(), "args change the revision");
    spec.revision = Some("v2".into());
    assert_eq!(spec.revision(), "v2");
}

#[test]
fn expansion_keeps_unknown_and_escaped_variables() {
    let lookup = |n: &str| (n == "A").then(|| "1".to_string());
    assert_eq!(expand("x$(A)y", &lookup), "x1y");
    assert_eq!(expand("$(B)", &lookup), "$(B)");
    assert_eq!(expand("$$(A)", &lookup), "$(A)");
    assert_eq!(expand("cost $5", &lookup), "cost $5");
}

#[test]
fn bad_processes_name_each_field() {
    let bad = r#"
apiVersion: serin.dev/v1alpha1
kind: Process
metadata:
  name: Bad_Name
spec:
  command: ""
  portEnv: "1PORT"
  env:
    - name: "A-B"
      value: x
  readinessProbe:
    httpGet: { path: readyz }
    periodSeconds: 0
"#;
    let (docs, errors) = read_str(bad, "bad.yaml", Path::new("."));
    assert!(docs.is_empty());
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "apiVersion",
        "metadata.name",
        "spec.command",
        "spec.portEnv",
        "spec.env[0].name",
        "spec.readinessProbe.httpGet.path",
        "spec.readinessProbe.periodSeconds",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert!(errors[0].to_string().starts_with("bad.yaml: "));
}

#[test]
fn unknown_fields_and_kinds_are_refused() {
    let typo = GOOD.replace("readinessProbe", "readinesProbe");
    let (_, errors) = read_str(&typo, "t.yaml", Path::new("."));
    assert!(errors[0].message.contains("readinesProbe"), "{errors:?}");
    let (_, errors) = read_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
        "k.yaml",
        Path::new("."),
    );
    assert!(
        errors[0].message.contains("accepted: Canary, Process"),
        "{errors:?}"
    );
}

#[test]
fn several_documents_per_file_and_empty_ones_are_fine() {
    let text = format!(
        "---\n{GOOD}\n---\n---\n{}",
        GOOD.replace("podinfo", "other")
    );
    let (docs, errors) = read_str(&text, "m.yaml", Path::new("."));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(docs.len(), 2);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "serin-manifest-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CANARY: &str = r#"
apiVersion: serin.dev/v1beta1
kind: Canary
metadata:
  name: web
spec:
  targetRef:
    apiVersion: serin.dev/v1beta1
    kind: Process
    name: podinfo
"#;

#[test]
fn every_process_knows_its_revision() {
    let (docs, _) = read_str(GOOD, "p.yaml", Path::new("."));
    let Document::Process { process, .. } = &docs[0] else {
        panic!("not a process")
    };
    let mut spec = process.spec.clone();
    spec.revision = Some("v7".into());
    spec.args = vec!["--app-version".into(), "$(SERIN_REVISION)".into()];
    let env = process_env(&spec, 1);
    assert_eq!(env[REVISION_ENV], "v7");
    assert_eq!(process_args(&spec, &env)[1], "v7");
}

#[test]
fn set_revision_edits_the_canarys_target_and_reports_whether_anything_changed() {
    let dir = temp_dir("set");
    std::fs::write(dir.join("p.yaml"), GOOD).unwrap();
    std::fs::write(dir.join("c.yaml"), CANARY).unwrap();
    let env = [("ERROR_RATE".to_string(), "0.3".to_string())];
    let edit = set_revision(&dir, "default", "web", "v2", &env).unwrap();
    assert_eq!(edit.process, "podinfo");
    assert_eq!(edit.canary.as_deref(), Some("web"));
    assert!(edit.changed);
    let (docs, errors) = read_dir(&dir).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let spec = docs
        .iter()
        .find_map(|d| match d {
            Document::Process { process, .. } => Some(process.spec.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(spec.revision.as_deref(), Some("v2"));
    assert!(
        spec.env.iter().any(|e| e.name == "GREETING"),
        "other env kept"
    );
    assert!(
        spec.env
            .iter()
            .any(|e| e.name == "ERROR_RATE" && e.value == "0.3")
    );
    // Again with the same values: nothing changes; a new value replaces the old entry.
    assert!(
        !set_revision(&dir, "default", "web", "v2", &env)
            .unwrap()
            .changed
    );
    let env = [("ERROR_RATE".to_string(), "0".to_string())];
    let edit = set_revision(&dir, "default", "podinfo", "v2", &env).unwrap();
    assert!(edit.changed);
    assert_eq!(edit.canary, None, "named by its Process");
    let text = std::fs::read_to_string(dir.join("p.yaml")).unwrap();
    assert_eq!(text.matches("ERROR_RATE").count(), 1, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn set_revision_names_what_is_wrong() {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("p.yaml"), GOOD).unwrap();
    let err = |name: &str, rev: &str, env: &[(&str, &str)]| {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        set_revision(&dir, "default", name, rev, &env)
            .unwrap_err()
            .to_string()
    };
    assert!(err("podinfo", " ", &[]).contains("--revision"));
    assert!(err("podinfo", "v2", &[("1X", "a")]).contains("--env"));
    assert!(err("podinfo", "v2", &[("PORT", "1")]).contains("spec.portEnv"));
    assert!(err("nothing", "v2", &[]).contains("no Process \"nothing\""));
    assert!(
        set_revision(&dir.join("missing"), "default", "podinfo", "v2", &[])
            .unwrap_err()
            .to_string()
            .contains("cannot read the manifest directory")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metric_templates_are_read_from_the_directory() {
    let dir = temp_dir("templates");
    std::fs::write(
            dir.join("t.yaml"),
            "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: errors, namespace: prod}\nspec:\n  provider: {type: prometheus}\n  query: up\n---\napiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: broken}\nspec: {query: 3}\n",
        )
        .unwrap();
    std::fs::write(dir.join("c.yaml"), CANARY).unwrap();
    let (templates, errors) = read_templates(&dir).unwrap();
    assert_eq!(templates.keys().collect::<Vec<_>>(), ["prod/errors"]);
    assert_eq!(templates["prod/errors"].spec.query, "up");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("t.yaml"), "{}", errors[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secrets_are_read_from_the_directory_as_kubernetes_writes_them() {
    let dir = temp_dir("secrets");
    std::fs::write(
        dir.join("s.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: dd, namespace: prod}\ndata:\n  datadog_api_key: YXBpLTEyMw==\n  bad: '***'\nstringData:\n  datadog_application_key: app-456\n",
    )
    .unwrap();
    std::fs::write(dir.join("c.yaml"), CANARY).unwrap();
    let (secrets, errors) = read_secrets(&dir).unwrap();
    assert_eq!(secrets["prod/dd"]["datadog_api_key"], "api-123");
    assert_eq!(secrets["prod/dd"]["datadog_application_key"], "app-456");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("data.bad"), "{}", errors[0]);
    // A Secret is a local kind: the directory reads without complaint about it.
    let (_, errors) = read_dir(&dir).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_badly_indented_file_is_one_error_not_a_hang() {
    // serde_norway's document iterator repeats a scanner error forever; reading must stop at it.
    let text = "apiVersion: serin.dev/v1beta1\nkind: Process\nmetadata:\n  name: p\nspec:\n  command: serin\n  env:\n- name: A\n      value: b\n";
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_str(text, "p.yaml", Path::new(".")));
    });
    let (docs, errors) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("read_str returned");
    assert!(docs.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("not valid YAML"), "{errors:?}");
}

#[test]
fn a_file_with_a_yaml_syntax_error_beside_templates_and_secrets_is_no_hang() {
    // The controller reads MetricTemplates and Secrets on every reload; one file that does not
    // parse used to spin the reload forever (the document iterator repeats its error), which
    // froze the controller and its dashboard.
    let dir = temp_dir("broken-beside-templates");
    std::fs::write(dir.join("a-broken.yaml"), "kind: [\n").unwrap();
    std::fs::write(
        dir.join("t.yaml"),
        "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: errors}\nspec:\n  provider: {type: prometheus}\n  query: up\n",
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let read = dir.clone();
    std::thread::spawn(move || {
        let _ = tx.send((read_templates(&read).unwrap(), read_secrets(&read).unwrap()));
    });
    let ((templates, _), (secrets, _)) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("read_templates and read_secrets returned");
    assert_eq!(templates.keys().collect::<Vec<_>>(), ["default/errors"]);
    assert!(secrets.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_canary_that_does_not_read_is_reported_by_field_as_validate_says_it() {
    let value: serde_norway::Value = serde_norway::from_str(
        "apiVersion: serin.dev/v1beta1\nkind: Canary\nmetadata: {name: broken}\nspec:\n  targetRef: {apiVersion: serin.dev/v1beta1, kind: Process, name: p}\n  service: {port: 9898}\n  analysis: {interval: 10, stepWeight: 20}\n",
    )
    .unwrap();
    let errors = read_canary(value).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("spec.analysis.interval: 10 has no unit; accepted:")),
        "{errors:?}"
    );
}
