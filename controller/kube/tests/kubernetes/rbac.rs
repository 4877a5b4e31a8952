//! The install's RBAC rules cannot drift from the code: every component's mocked-API scenarios
//! are modules of this test binary (the control plane's, which live in serin-mesh-control, are
//! included by one `#[path]` line in main.rs), run again in a child process that logs each call
//! its fake API server answers, and the calls are compared with the component's generated rules
//! — each call must be allowed, and each rule must be used.
//!
//! Adding a component's scenarios: a module of this binary (their fake API server logs through
//! `serin_kube::testing` or, outside serin-kube, its `api_log.rs` included by `#[path]`), named
//! in that component's `check` test (one `check` test per component).

use std::collections::BTreeSet;
use std::process::Command;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serin_kube::install::{self, ComponentRules};

/// One API call reduced to what RBAC judges.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

/// `GET /apis/apps/v1/namespaces/test/deployments/podinfo?` -> get apps/deployments podinfo.
fn access(line: &str) -> Access {
    let (method, rest) = line.split_once(' ').expect("METHOD PATH?QUERY");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => panic!("not an API path: {line}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [res] => (res.to_string(), None),
        [res, name] => (res.to_string(), Some(name.to_string())),
        [res, name, sub] => (format!("{res}/{sub}"), Some(name.to_string())),
        _ => panic!("not a resource path: {line}"),
    };
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => panic!("unexpected method: {line}"),
    };
    Access {
        verb: verb.into(),
        group,
        resource,
        namespace,
        name,
    }
}

fn covers(rule: &PolicyRule, a: &Access) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| {
        list.as_ref().is_some_and(|l| l.iter().any(|x| x == v))
    };
    has(&rule.api_groups, &a.group)
        && has(&rule.resources, &a.resource)
        && rule.verbs.iter().any(|v| v == &a.verb)
        && match &rule.resource_names {
            None => true,
            Some(names) => a.name.as_ref().is_some_and(|n| names.contains(n)),
        }
}

/// Which rule allows `a`: a ClusterRole rule anywhere, a Role rule in a namespace (the
/// component's own in a cluster; scenarios name it freely, e.g. to test how it is chosen).
fn allowed_by<'r>(rules: &'r ComponentRules, a: &Access) -> Option<&'r PolicyRule> {
    let namespaced = a.namespace.is_some();
    rules.cluster.iter().find(|r| covers(r, a)).or_else(|| {
        namespaced
            .then(|| rules.namespaced.iter().find(|r| covers(r, a)))
            .flatten()
    })
}

/// Every (verb, group, resource, names) a rule grants, one per verb.
fn grants(rule: &PolicyRule) -> Vec<(String, String, String)> {
    let mut out = vec![];
    for g in rule.api_groups.iter().flatten() {
        for r in rule.resources.iter().flatten() {
            for v in &rule.verbs {
                out.push((v.clone(), g.clone(), r.clone()));
            }
        }
    }
    out
}

/// Runs this binary's tests under `modules` (`name::`, matched as libtest filters) in a child
/// process and returns the calls logged.
fn calls_of(module: &str, modules: &[&str]) -> Vec<Access> {
    let log = std::env::temp_dir().join(format!("serin-rbac-{}-{module}log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(modules)
        .env("SERIN_API_CALL_LOG", &log)
        .output()
        .expect("the test binary runs itself");
    assert!(
        out.status.success(),
        "the scenarios of {module} failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("running 0 tests"),
        "no scenarios under {module}"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    text.lines().map(access).collect()
}

/// Grants the code needs whose calls no scenario plays yet, written out so the gap is visible:
/// the test fails when one of them becomes covered (then delete its line) and any other unused
/// grant fails at once.
const AWAITING_A_SCENARIO: &[(&str, &str)] = &[];

/// `module` names the component in messages; `modules` are its scenarios' modules.
fn check(module: &str, modules: &[&str], rules: ComponentRules) {
    let calls: BTreeSet<Access> = calls_of(module, modules).into_iter().collect();
    assert!(!calls.is_empty(), "{module}: no API calls logged");
    let denied: Vec<String> = calls
        .iter()
        .filter(|a| allowed_by(&rules, a).is_none())
        .map(|a| a.to_string())
        .collect();
    assert!(
        denied.is_empty(),
        "{module}: calls its rules do not allow:\n  {}",
        denied.join("\n  ")
    );
    let mut unused = vec![];
    for rule in rules.cluster.iter().chain(&rules.namespaced) {
        for (verb, group, resource) in grants(rule) {
            let used = calls.iter().any(|a| {
                a.verb == verb && a.group == group && a.resource == resource && covers(rule, a)
            });
            let grant = format!("{verb} {group}/{resource}");
            let awaited = AWAITING_A_SCENARIO.contains(&(module, grant.as_str()));
            assert!(
                !(used && awaited),
                "{module}: {grant} is now played by a scenario: delete it from AWAITING_A_SCENARIO"
            );
            if !used && !awaited {
                unused.push(grant);
            }
        }
    }
    assert!(
        unused.is_empty(),
        "{module}: rules no scenario uses (drop them, or add the scenario that needs them):\n  {}",
        unused.join("\n  ")
    );
}

#[test]
fn rbac_of_the_controller_matches_its_calls() {
    check(
        "rbac_controller_",
        &["kube_scenarios::", "kube_leader_election::"],
        install::controller_rules(),
    );
}

#[test]
fn rbac_of_the_control_plane_matches_its_calls() {
    check(
        "rbac_control_plane_",
        &["control_plane_kubernetes::"],
        install::control_plane_rules(),
    );
}

#[test]
fn rbac_of_the_injector_matches_its_calls() {
    check("rbac_injector_", &["injector::"], install::injector_rules());
}

#[test]
fn rbac_paths_are_read_as_the_api_server_reads_them() {
    let a = access("GET /apis/apps/v1/namespaces/test/deployments/podinfo?");
    assert_eq!(a.to_string(), "get apps/deployments podinfo in test");
    let a = access("GET /api/v1/services?watch=true&resourceVersion=1");
    assert_eq!(a.to_string(), "watch core/services");
    let a = access(
        "PATCH /apis/serin.dev/v1beta1/namespaces/test/canaries/podinfo/status?fieldManager=serin",
    );
    assert_eq!(
        a.to_string(),
        "patch serin.dev/canaries/status podinfo in test"
    );
    let a = access("POST /apis/coordination.k8s.io/v1/namespaces/serin-system/leases?");
    assert_eq!(
        a.to_string(),
        "create coordination.k8s.io/leases in serin-system"
    );
    let a = access("GET /api/v1/namespaces/serin-system?");
    assert_eq!(a.to_string(), "get core/namespaces serin-system");
}
