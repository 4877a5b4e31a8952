//! `serin uninstall` against a fake API server: what it prints for `kubectl delete -f -`, and
//! when it refuses (Canaries whose primaries the garbage collector would delete, meshed pods).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use serin_kube::install::{self, InstallOptions, Object};
use serin_kube::testing::{Call, mock_client, respond, status_err};
use serin_kube::uninstall::{self, PlanError, Refusal, Uninstall, UninstallOptions};

const NS: &str = "serin-system";

/// `GET path?query` -> answer; anything else is a 404.
type Answers = BTreeMap<String, (u16, Value)>;

/// The cluster after a default `serin install` (no `--ha`: no PodDisruptionBudgets), with no
/// Canary and one unmeshed pod.
fn installed() -> Answers {
    let mut a = Answers::new();
    for o in install::objects(&InstallOptions::default()).unwrap() {
        let (path, v) = path_and_body(&o);
        a.insert(path, (200, v));
    }
    // What the components create at run time: the controller's Lease (no labels) and the
    // injector's certificate Secret (labelled).
    a.insert(
        format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/serin-controller"),
        (
            200,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "serin-controller", "namespace": NS}}),
        ),
    );
    a.insert(
        format!("/api/v1/namespaces/{NS}/secrets/serin-injector-tls"),
        (
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "serin-injector-tls", "namespace": NS, "labels": {"app.kubernetes.io/part-of": "serin"}}}),
        ),
    );
    a.insert(
        "/apis/serin.dev/v1beta1/canaries?&limit=500".into(),
        (200, list("CanaryList", "serin.dev/v1beta1", vec![], None)),
    );
    a.insert(
        "/api/v1/pods?&limit=500".into(),
        (
            200,
            list("PodList", "v1", vec![pod("shop", "web-1", false)], None),
        ),
    );
    a
}

fn path_and_body(o: &Object) -> (String, Value) {
    let v = serde_json::to_value(o).unwrap();
    let name = v["metadata"]["name"].as_str().unwrap().to_string();
    let ns = v["metadata"]["namespace"].as_str().map(String::from);
    let (group_version, plural) = match o {
        Object::Namespace(_) => ("api/v1", "namespaces"),
        Object::Crd(_) => ("apis/apiextensions.k8s.io/v1", "customresourcedefinitions"),
        Object::ServiceAccount(_) => ("api/v1", "serviceaccounts"),
        Object::ClusterRole(_) => ("apis/rbac.authorization.k8s.io/v1", "clusterroles"),
        Object::ClusterRoleBinding(_) => {
            ("apis/rbac.authorization.k8s.io/v1", "clusterrolebindings")
        }
        Object::Role(_) => ("apis/rbac.authorization.k8s.io/v1", "roles"),
        Object::RoleBinding(_) => ("apis/rbac.authorization.k8s.io/v1", "rolebindings"),
        Object::Service(_) => ("api/v1", "services"),
        Object::Deployment(_) => ("apis/apps/v1", "deployments"),
        Object::PodDisruptionBudget(_) => ("apis/policy/v1", "poddisruptionbudgets"),
        Object::Webhook(_) => (
            "apis/admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
        ),
    };
    let path = match ns {
        Some(ns) => format!("/{group_version}/namespaces/{ns}/{plural}/{name}"),
        None => format!("/{group_version}/{plural}/{name}"),
    };
    (path, v)
}

fn list(kind: &str, api_version: &str, items: Vec<Value>, next: Option<&str>) -> Value {
    json!({"kind": kind, "apiVersion": api_version,
           "metadata": {"resourceVersion": "42", "continue": next.unwrap_or("")},
           "items": items})
}

fn pod(ns: &str, name: &str, meshed: bool) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    if meshed {
        p["metadata"]["annotations"] =
            json!({"serin.dev/proxy-image": "ghcr.io/serin/serin:0.1.0"});
        p["spec"]["initContainers"] = json!([{"name": "serin-proxy", "image": "ghcr.io/serin/serin:0.1.0", "restartPolicy": "Always"}]);
    }
    p
}

fn canary_meta(ns: &str, name: &str, finalizer: bool) -> Value {
    let mut m = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "namespace": ns}});
    if finalizer {
        m["metadata"]["finalizers"] = json!([serin_kube::FINALIZER]);
    }
    m
}

/// Plays `answers` and returns the plan, with every call the fake saw (`METHOD path?query`).
async fn plan(answers: Answers) -> (Result<Uninstall, PlanError>, Vec<String>) {
    plan_in(answers, NS).await
}

async fn plan_in(answers: Answers, namespace: &str) -> (Result<Uninstall, PlanError>, Vec<String>) {
    let (client, mut handle) = mock_client("default");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let Call {
                method,
                path,
                query,
                ..
            } = Call::read(req).await;
            let key = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            seen.lock().unwrap().push(format!("{method} {key}"));
            let (code, body) = match method.as_str() {
                "GET" => answers.get(&key).cloned().unwrap_or_else(|| {
                    (
                        404,
                        status_err(404, "NotFound", &format!("{key} not found")),
                    )
                }),
                _ => (
                    405,
                    status_err(405, "MethodNotAllowed", "uninstall only reads"),
                ),
            };
            respond(send, code, &body);
        }
    });
    let opts = UninstallOptions {
        namespace: namespace.into(),
    };
    let got = tokio::time::timeout(Duration::from_secs(20), uninstall::plan(&client, &opts))
        .await
        .expect("the plan finishes");
    let calls = calls.lock().unwrap().clone();
    (got, calls)
}

fn kinds_names(u: &Uninstall) -> Vec<String> {
    u.objects.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn an_idle_install_is_listed_webhook_first_crds_last_and_only_what_exists() {
    let (got, calls) = plan(installed()).await;
    let u = got.expect("plan");
    assert!(u.blockers.is_empty(), "{:?}", u.blockers);
    assert!(u.foreign.is_empty(), "{:?}", u.foreign);
    let names = kinds_names(&u);
    assert_eq!(
        names.first().map(String::as_str),
        Some("MutatingWebhookConfiguration serin-injector")
    );
    let crds = serin_api::crds().len();
    assert!(
        names[names.len() - crds..]
            .iter()
            .all(|n| n.starts_with("CustomResourceDefinition ")),
        "{names:#?}"
    );
    assert!(names.contains(&format!("Deployment {NS}/serin-controller")));
    assert!(names.contains(&format!("Namespace {NS}")));
    // Every object of the install, each once, and the two the components made at run time,
    // before the namespace.
    let installed = install::objects(&InstallOptions::default()).unwrap().len() + 2;
    assert_eq!(names.len(), installed, "{names:#?}");
    let at = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} in {names:#?}"))
    };
    assert!(at(&format!("Lease {NS}/serin-controller")) < at(&format!("Namespace {NS}")));
    assert!(at(&format!("Secret {NS}/serin-injector-tls")) < at(&format!("Namespace {NS}")));
    // It only reads.
    assert!(calls.iter().all(|c| c.starts_with("GET ")), "{calls:#?}");

    let (notes, yaml) = u.outcome(NS, false);
    assert!(notes.is_empty(), "{notes:?}");
    let yaml = yaml.expect("printed");
    assert!(yaml.starts_with(uninstall::HEADER));
    // kubectl delete -f - needs apiVersion, kind, name (and namespace): that is all there is.
    let docs: Vec<Value> = yaml
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_norway::from_str(d).expect("each document is YAML"))
        .collect();
    assert_eq!(docs.len(), installed);
    assert_eq!(
        docs[0],
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "serin-injector"}})
    );
    assert!(docs.iter().any(|d| *d
        == json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serin-controller", "namespace": NS}})));
}

#[tokio::test]
async fn canaries_and_meshed_pods_refuse_the_uninstall_naming_each_until_forced() {
    let mut a = installed();
    // Two pages of Canaries, as the API server pages a list.
    a.insert(
        "/apis/serin.dev/v1beta1/canaries?&limit=500".into(),
        (
            200,
            list(
                "PartialObjectMetadataList",
                "meta.k8s.io/v1",
                vec![canary_meta("shop", "web", false)],
                Some("page-2"),
            ),
        ),
    );
    a.insert(
        "/apis/serin.dev/v1beta1/canaries?&limit=500&continue=page-2".into(),
        (
            200,
            list(
                "PartialObjectMetadataList",
                "meta.k8s.io/v1",
                vec![canary_meta("pay", "api", true)],
                None,
            ),
        ),
    );
    a.insert(
        "/api/v1/pods?&limit=500".into(),
        (
            200,
            list(
                "PodList",
                "v1",
                vec![
                    pod("shop", "web-1", true),
                    pod("shop", "web-2", true),
                    pod("pay", "api-1", true),
                    pod("kube-system", "dns", false),
                    // A meshed Job's pod that ran to the end runs no proxy.
                    {
                        let mut done = pod("shop", "migrate-x7k2p", true);
                        done["status"] = json!({"phase": "Succeeded"});
                        done
                    },
                ],
                None,
            ),
        ),
    );
    let (got, _) = plan(a).await;
    let u = got.expect("plan");
    assert_eq!(u.blockers.len(), 2, "{:#?}", u.blockers);
    assert_eq!(
        u.blockers[0].message,
        "2 Canaries still exist: shop/web, pay/api (revertOnDeletion)"
    );
    assert!(
        u.blockers[0].hint.contains("-primary"),
        "{}",
        u.blockers[0].hint
    );
    assert!(u.blockers[0].hint.contains("--force"));
    assert_eq!(
        u.blockers[1].message,
        "3 pods still run serin-proxy, in namespaces pay (1), shop (2)"
    );
    assert!(u.blockers[1].hint.contains("serin.dev/inject"));

    let (lines, refused) = u.outcome(NS, false);
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("error: ") && l.contains("(hint: "))
    );
    let err = refused.expect_err("refused");
    assert!(matches!(err, Refusal::Blocked(2)), "{err}");
    assert_eq!(
        err.to_string(),
        "refusing to uninstall: 2 reasons above (--force prints the objects anyway)"
    );

    let (lines, forced) = u.outcome(NS, true);
    assert!(
        lines.iter().all(|l| l.starts_with("warning: ")),
        "{lines:?}"
    );
    assert!(forced.expect("forced").contains("kind: Deployment"));
}

#[tokio::test]
async fn a_namespace_someone_else_made_is_left_alone_and_a_bare_cluster_has_nothing_to_remove() {
    let mut a = installed();
    a.insert(
        format!("/api/v1/namespaces/{NS}"),
        (
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "platform"}}}),
        ),
    );
    let (got, _) = plan(a).await;
    let u = got.expect("plan");
    assert!(!kinds_names(&u).contains(&format!("Namespace {NS}")));
    assert_eq!(
        u.foreign
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!("Namespace {NS}")]
    );
    let (notes, yaml) = u.outcome(NS, false);
    assert_eq!(
        notes,
        [format!(
            "note: Namespace {NS} is not Serin's (no app.kubernetes.io/part-of: serin label): left alone"
        )]
    );
    let yaml = yaml.expect("the rest is printed");
    assert!(yaml.contains("serin-controller"));
    // A namespace Serin did not make is not deleted, so what the components left in it is
    // listed: the injector's CA key must not stay behind.
    assert!(yaml.contains("name: serin-injector-tls"), "{yaml}");
    assert!(yaml.contains("kind: Lease"), "{yaml}");

    // No install, no CRD (the Canary list is a 404), no pod.
    let mut bare = Answers::new();
    bare.insert(
        "/api/v1/pods?&limit=500".into(),
        (200, list("PodList", "v1", vec![], None)),
    );
    let (got, _) = plan(bare).await;
    let u = got.expect("plan");
    assert!(u.objects.is_empty() && u.blockers.is_empty());
    let err = u.outcome(NS, false).1.expect_err("nothing to print");
    assert_eq!(
        err.to_string(),
        format!(
            "nothing of Serin's found in this cluster (--namespace {NS}): nothing to uninstall"
        )
    );
}

#[tokio::test]
async fn a_forbidden_list_or_a_bad_namespace_is_an_error_naming_what_failed() {
    let mut a = installed();
    a.insert(
        "/api/v1/pods?&limit=500".into(),
        (
            403,
            status_err(
                403,
                "Forbidden",
                "pods is forbidden: User \"dev\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
            ),
        ),
    );
    let (got, _) = plan(a).await;
    let err = got.expect_err("forbidden").to_string();
    assert!(
        err.starts_with("listing pods in every namespace (to find meshed ones): "),
        "{err}"
    );
    assert!(err.contains("cannot list resource \"pods\""), "{err}");

    let (got, calls) = plan_in(installed(), "Serin_System").await;
    let err = got.expect_err("bad namespace").to_string();
    assert!(err.contains("--namespace"), "{err}");
    assert!(
        calls.is_empty(),
        "no call before the flag is checked: {calls:?}"
    );
}
