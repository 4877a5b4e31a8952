//! The workspace's crate graph, read from `cargo metadata --no-deps` (no network, no build):
//! the dependency rules the crates' READMEs state hold, and the picture in the top README is the
//! graph as it is (`SERIN_UPDATE_README=1` rewrites it). It lives here because serin-core is the
//! cheapest crate to build and every other crate depends on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Optional dependencies between workspace crates that a feature of the crate turns on, and
/// the only ones allowed: serin-local's `site` feature runs the control plane and a proxy
/// in-process for `serin demo` and the tests, while its controller reaches them over loopback
/// HTTP and links neither.
const OPTIONAL_ALLOWED: &[(&str, &str)] = &[
    ("serin-local", "serin-mesh-control"),
    ("serin-local", "serin-proxy"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Normal (not dev, not build) dependencies between workspace crates, every crate's
/// third-party dependencies (optional ones included), and of the workspace edges the optional
/// ones (`from`, `to`).
fn graph_with_optional() -> (Graph, Graph, BTreeSet<(String, String)>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let (mut inner, mut outer) = (Graph::new(), Graph::new());
    let mut optional = BTreeSet::new();
    for p in packages {
        let name = p["name"].as_str().unwrap().to_string();
        let (i, o) = (
            inner.entry(name.clone()).or_default(),
            outer.entry(name).or_default(),
        );
        for d in p["dependencies"].as_array().unwrap() {
            if !d["kind"].is_null() {
                continue;
            }
            let dep = d["name"].as_str().unwrap().to_string();
            if names.contains(&dep) {
                if d["optional"] == true {
                    optional.insert((p["name"].as_str().unwrap().to_string(), dep.clone()));
                }
                i.insert(dep);
            } else {
                o.insert(dep);
            }
        }
    }
    (inner, outer, optional)
}

/// Every crate `from` reaches, itself excluded.
fn reach(g: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&String> = g[from].iter().collect();
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            todo.extend(g[n].iter());
        }
    }
    seen
}

#[test]
fn crates_depend_only_inward() {
    let (mut inner, outer, optional) = graph_with_optional();
    let mut broken = vec![];
    // The rules hold for every crate as built without features; optional edges are allowed
    // only where OPTIONAL_ALLOWED says.
    for (from, to) in &optional {
        if !OPTIONAL_ALLOWED.contains(&(from.as_str(), to.as_str())) {
            broken.push(format!("{from} depends on {to} (optional)"));
        }
        inner.get_mut(from).expect("a workspace crate").remove(to);
    }
    // (crate, Serin crates it must not reach, even through others)
    let rules: &[(&str, &[&str])] = &[
        ("serin-core", &["*"]),
        ("serin-http1", &["*"]),
        ("serin-mesh-api", &["* but serin-core"]),
        ("serin-analysis", &["* but serin-core"]),
        ("serin-dashboard", &["* but serin-core"]),
        (
            "serin-api",
            &[
                "serin-controller",
                "serin-kube",
                "serin-local",
                "serin-proxy",
            ],
        ),
        (
            "serin-controller",
            &[
                "serin-kube",
                "serin-local",
                "serin-proxy",
                "serin-mesh-control",
            ],
        ),
        (
            "serin-kube",
            &[
                "serin-local",
                "serin-proxy",
                "serin-mesh-control",
                "serin-demo",
            ],
        ),
        (
            "serin-local",
            &[
                "serin-kube",
                "serin-proxy",
                "serin-mesh-control",
                "serin-demo",
            ],
        ),
        (
            "serin-proxy",
            &["serin-controller", "serin-kube", "serin-local", "serin-api"],
        ),
        (
            "serin-mesh-control",
            &[
                "serin-controller",
                "serin-kube",
                "serin-local",
                "serin-proxy",
            ],
        ),
        ("serin-demo", &["serin-kube"]),
        ("serin-tests", &["serin-kube"]),
    ];
    for (krate, banned) in rules {
        let reached = reach(&inner, krate);
        for r in &reached {
            let bad = match banned {
                ["*"] => true,
                ["* but serin-core"] => r != "serin-core",
                list => list.contains(&r.as_str()),
            };
            if bad {
                broken.push(format!("{krate} depends on {r}"));
            }
        }
    }
    // Kubernetes stays out of the model, the judge, the dashboard, the proxy and the local
    // platform (serin-mesh-api has it behind its `k8s` feature; serin-api for the CRD derive).
    for krate in [
        "serin-core",
        "serin-analysis",
        "serin-dashboard",
        "serin-controller",
        "serin-local",
        "serin-proxy",
        "serin-http1",
    ] {
        for k in ["kube", "k8s-openapi"] {
            if outer[krate].contains(k) {
                broken.push(format!("{krate} depends on {k}"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

const BEGIN: &str = "```mermaid\nflowchart TD\n";

/// The README's picture: direct edges only where no longer path implies them.
fn mermaid(inner: &Graph, optional: &BTreeSet<(String, String)>) -> String {
    let groups: &[(&str, &str, &[&str])] = &[
        (
            "Consumers",
            "Consumers",
            &["serin-cli", "serin-demo", "serin-tests"],
        ),
        ("Platforms", "Platforms", &["serin-kube", "serin-local"]),
        (
            "Platform_neutral_controller",
            "Platform-neutral controller",
            &[
                "serin-controller",
                "serin-dashboard",
                "serin-analysis",
                "serin-api",
            ],
        ),
        (
            "Mesh",
            "Mesh",
            &["serin-mesh-control", "serin-proxy", "serin-http1"],
        ),
        (
            "Contracts_and_model",
            "Contracts and model",
            &["serin-mesh-api", "serin-core"],
        ),
    ];
    let id = |n: &str| n.trim_start_matches("serin-").replace('-', "_");
    let mut out = String::from(BEGIN);
    let mut placed = BTreeSet::new();
    for (gid, title, members) in groups {
        out += &format!("    subgraph {gid}[\"{title}\"]\n");
        for m in *members {
            out += &format!("        {}[\"{m}\"]\n", id(m));
            placed.insert(m.to_string());
        }
        out += "    end\n";
    }
    let unplaced: Vec<&String> = inner.keys().filter(|k| !placed.contains(*k)).collect();
    assert!(
        unplaced.is_empty(),
        "new crates {unplaced:?}: give them a group in crate_graph.rs"
    );
    for (from, deps) in inner {
        for to in deps {
            let implied = deps
                .iter()
                .any(|other| other != to && reach(inner, other).contains(to));
            if !implied {
                let arrow = if optional.contains(&(from.clone(), to.clone())) {
                    "-. feature .->"
                } else {
                    "-->"
                };
                out += &format!("    {} {arrow} {}\n", id(from), id(to));
            }
        }
    }
    out + "```"
}

#[test]
fn the_readme_shows_the_crate_graph_as_it_is() {
    let (inner, _, optional) = graph_with_optional();
    let want = mermaid(&inner, &optional);
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let start = readme
        .find(BEGIN)
        .expect("README.md has a ```mermaid crate graph");
    let end = start
        + readme[start + BEGIN.len()..]
            .find("```")
            .expect("the graph block ends")
        + BEGIN.len()
        + 3;
    if std::env::var_os("SERIN_UPDATE_README").is_some() {
        let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("README.md is writable");
        return;
    }
    assert_eq!(
        &readme[start..end],
        want,
        "the crate graph in README.md is stale: run with SERIN_UPDATE_README=1"
    );
}
