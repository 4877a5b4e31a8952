//! `serin inject`: manifests in (files, directories, stdin), injected YAML out.

use std::io::Write as _;
use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {serin.dev/skip-outbound-ports: '5432'}
    spec:
      initContainers: [{name: migrate, image: 'web-migrate:1'}]
      containers: [{name: app, image: 'web:1'}]
";
const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
";

fn serin(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serin runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn docs(yaml: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn stdin_manifests_come_back_injected_with_other_kinds_untouched() {
    let (ok, out, err) = serin(
        &["inject", "--proxy-image", "serin/proxy:1", "-"],
        &format!("{DEPLOYMENT}---\n{SERVICE}"),
    );
    assert!(ok, "{err}");
    assert!(err.contains("deployment/web injected"), "{err}");
    let d = docs(&out);
    assert_eq!(d.len(), 2);
    let dep: Deployment = serde_json::from_value(d[0].clone()).expect("a Deployment");
    let spec = dep.spec.unwrap().template.spec.unwrap();
    let inits: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["serin-init", "serin-proxy", "migrate"]);
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(containers, ["app"]);
    let init_args = spec.init_containers.as_ref().unwrap()[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        init_args.contains("--skip-outbound-ports 5432"),
        "{init_args}"
    );
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(proxy.image.as_deref(), Some("serin/proxy:1"));
    let labels = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SERIN_PROXY_LABELS")
        .unwrap();
    assert!(labels.value.as_deref().unwrap().contains("deployment=web"));
    let _: Service = serde_json::from_value(d[1].clone()).expect("the Service");
    assert_eq!(d[1], docs(SERVICE)[0], "other kinds pass through unchanged");

    // Injecting the output again changes nothing.
    let (ok, again, err) = serin(&["inject", "-"], &out);
    assert!(ok, "{err}");
    assert!(
        err.contains("deployment/web skipped (already_injected)"),
        "{err}"
    );
    assert_eq!(docs(&again), d);
}

#[test]
fn files_and_directories_are_read_and_bad_input_is_named() {
    let dir = std::env::temp_dir().join(format!("serin-inject-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/web.yaml"), DEPLOYMENT).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    let (ok, out, err) = serin(&["inject", dir.to_str().unwrap()], "");
    assert!(ok, "{err}");
    assert_eq!(docs(&out).len(), 1);
    assert!(err.contains("web.yaml: deployment/web injected"), "{err}");

    let bad = DEPLOYMENT.replace(
        "serin.dev/skip-outbound-ports: '5432'",
        "serin.dev/proxy-log-level: loud",
    );
    std::fs::write(dir.join("sub/web.yaml"), bad).unwrap();
    let (ok, _, err) = serin(&["inject", dir.join("sub/web.yaml").to_str().unwrap()], "");
    assert!(!ok);
    assert!(
        err.contains("deployment/web") && err.contains("serin.dev/proxy-log-level"),
        "{err}"
    );

    let (ok, _, err) = serin(&["inject", "/nonexistent/serin.yaml"], "");
    assert!(!ok);
    assert!(err.contains("no such file or directory"), "{err}");
    let (ok, _, err) = serin(&["inject", "-"], "kind: [unclosed");
    assert!(!ok);
    assert!(err.contains("not valid YAML"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_request_above_the_default_limit_is_refused_at_start_naming_the_flags() {
    // Without this check every pod would be refused later, under an annotation never written.
    let (ok, out, err) = serin(
        &["inject", "--proxy-memory-request", "512Mi", "-"],
        DEPLOYMENT,
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains("--proxy-memory-request") && err.contains("--proxy-memory-limit"),
        "{err}"
    );
    let (ok, _, err) = serin(
        &[
            "inject",
            "--proxy-memory-request",
            "512Mi",
            "--proxy-memory-limit",
            "1Gi",
            "-",
        ],
        DEPLOYMENT,
    );
    assert!(ok, "{err}");
}

#[test]
fn a_workload_meshed_by_another_mesh_is_left_alone_and_said_why() {
    let linkerd = DEPLOYMENT.replace(
        "annotations: {serin.dev/skip-outbound-ports: '5432'}",
        "annotations: {linkerd.io/inject: enabled}",
    );
    let (ok, out, err) = serin(&["inject", "-"], &linkerd);
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "deployment/web skipped (other_mesh: it has or asks for Linkerd's or Istio's proxy"
        ),
        "{err}"
    );
    assert_eq!(docs(&out), docs(&linkerd), "left unchanged");
}

#[test]
fn a_namespace_is_opted_in_as_linkerd_inject_does_it() {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";
    let (ok, out, err) = serin(&["inject", "-"], ns);
    assert!(ok, "{err}");
    assert!(
        err.contains("namespace/shop annotated serin.dev/inject: enabled"),
        "{err}"
    );
    let d = docs(&out);
    let parsed: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(d[0].clone()).expect("a Namespace");
    assert_eq!(
        parsed.metadata.annotations.unwrap()["serin.dev/inject"],
        "enabled"
    );
    // Again: unchanged. Opted out, Serin's own and kube-system: left alone.
    let (ok, again, err) = serin(&["inject", "-"], &out);
    assert!(
        ok && err.contains("namespace/shop skipped (already_injected)"),
        "{err}"
    );
    assert_eq!(docs(&again), d);
    for (yaml, why) in [
        (
            "kind: Namespace\nmetadata: {name: shop, annotations: {serin.dev/inject: disabled}}\n",
            "namespace/shop skipped (disabled)",
        ),
        (
            "kind: Namespace\nmetadata: {name: kube-system}\n",
            "namespace/kube-system skipped (system_namespace)",
        ),
    ] {
        let (ok, out, err) = serin(&["inject", "-"], yaml);
        assert!(ok && err.contains(why), "{err}");
        assert_eq!(docs(&out), docs(yaml));
    }
    let (ok, _, err) = serin(
        &["inject", "-"],
        "kind: Namespace\nmetadata: {name: shop, annotations: {serin.dev/inject: yes}}\n",
    );
    assert!(
        !ok && err.contains("namespace/shop") && err.contains("`enabled` or `disabled`"),
        "{err}"
    );
}
