//! `serin install` as a user runs it: stdout is the committed deploy/serin.yaml, `--output-dir`
//! writes the same objects as numbered files, and a bad flag exits non-zero naming the flag.

use std::process::Command;

const SERIN: &str = env!("CARGO_BIN_EXE_serin");
const COMMITTED: &str = include_str!("../../../../deploy/serin.yaml");

fn serin(args: &[&str]) -> std::process::Output {
    Command::new(SERIN).args(args).output().expect("serin runs")
}

#[test]
fn install_prints_the_committed_manifests() {
    let out = serin(&["install"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout) == COMMITTED);
}

#[test]
fn output_dir_writes_one_file_per_component_with_the_same_objects() {
    let dir = std::env::temp_dir().join(format!("serin-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = serin(&["install", "--output-dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "00-namespace.yaml",
            "01-crds.yaml",
            "02-controller.yaml",
            "03-control-plane.yaml",
            "04-injector.yaml"
        ]
    );
    let body =
        |text: &str| -> Vec<String> { text.split("---\n").skip(1).map(String::from).collect() };
    let joined: Vec<String> = files
        .iter()
        .flat_map(|f| body(&std::fs::read_to_string(dir.join(f)).unwrap()))
        .collect();
    assert_eq!(
        joined,
        body(COMMITTED),
        "the same documents in the same order"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flags_reach_the_output() {
    let out = serin(&["install", "--crds-only"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 3);
    assert!(!text.contains("kind: Deployment"));
    let out = serin(&[
        "install",
        "--skip-crds",
        "--ha",
        "--namespace",
        "mesh",
        "--registry",
        "r.example/x",
        "--version",
        "v2",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("kind: CustomResourceDefinition"));
    assert!(text.contains("image: r.example/x/serin:v2"));
    assert!(text.contains("namespace: mesh"));
    assert_eq!(text.matches("replicas: 3").count(), 3);
}

#[test]
fn a_bad_flag_exits_non_zero_naming_it() {
    for (args, flag) in [
        (&["install", "--namespace", "Not_A_Name"][..], "--namespace"),
        (
            &["install", "--control-plane-replicas", "0"][..],
            "--control-plane-replicas",
        ),
        (
            &["install", "--crds-only", "--skip-crds"][..],
            "--skip-crds",
        ),
    ] {
        let out = serin(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing half-printed");
    }
}
