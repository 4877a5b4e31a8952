//! `serin install`'s manifests: the committed deploy/serin.yaml matches the code, every object
//! is exactly its k8s-openapi type (a field the type does not know fails), the flags change
//! what they should, and bad flags are errors that name the flag.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serin_kube::install::{self, CrdSelection, InstallOptions, Object};

const COMMITTED: &str = include_str!("../../../../deploy/serin.yaml");

fn defaults() -> InstallOptions {
    InstallOptions::default()
}

fn rendered(opts: &InstallOptions) -> String {
    install::render(&install::objects(opts).unwrap()).unwrap()
}

/// The YAML documents of a stream, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn kinds(opts: &InstallOptions) -> Vec<String> {
    documents(&rendered(opts))
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn deployments(docs: &[Value]) -> Vec<&Value> {
    docs.iter().filter(|d| d["kind"] == "Deployment").collect()
}

#[test]
fn the_committed_manifests_match_the_code() {
    let generated = rendered(&defaults());
    if std::env::var_os("SERIN_UPDATE_DEPLOY").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/serin.yaml");
        std::fs::write(path, &generated).expect("deploy/serin.yaml is writable");
        return;
    }
    assert!(
        generated == COMMITTED,
        "deploy/serin.yaml is out of date with `serin install`.\n\
         Regenerate it with:\n    cargo run -p serin-cli -- install > deploy/serin.yaml\n\
         or:\n    SERIN_UPDATE_DEPLOY=1 cargo test -p serin-kube --test kubernetes install::"
    );
}

/// Deserialises `doc` as `T` and serialises it back: anything the type does not know is lost
/// on the way, so the round trip differs.
fn exactly<T: DeserializeOwned + Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not parse as its type: {e}", doc["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, doc,
        "{}/{} has fields its k8s-openapi type does not know",
        doc["kind"], doc["metadata"]["name"]
    );
}

fn check_exact(doc: &Value) {
    match doc["kind"].as_str().unwrap() {
        "Namespace" => exactly::<Namespace>(doc),
        "CustomResourceDefinition" => exactly::<CustomResourceDefinition>(doc),
        "ServiceAccount" => exactly::<ServiceAccount>(doc),
        "ClusterRole" => exactly::<ClusterRole>(doc),
        "ClusterRoleBinding" => exactly::<ClusterRoleBinding>(doc),
        "Role" => exactly::<Role>(doc),
        "RoleBinding" => exactly::<RoleBinding>(doc),
        "Service" => exactly::<Service>(doc),
        "Deployment" => exactly::<Deployment>(doc),
        "PodDisruptionBudget" => exactly::<PodDisruptionBudget>(doc),
        "MutatingWebhookConfiguration" => exactly::<MutatingWebhookConfiguration>(doc),
        other => panic!("unexpected kind {other}"),
    }
}

#[test]
fn every_object_is_exactly_its_kubernetes_type() {
    let all = InstallOptions {
        ha: true,
        metrics_server: Some("http://prometheus.monitoring:9090".into()),
        dashboard_token_secret: Some("serin-dashboard".into()),
        ..defaults()
    };
    for opts in [defaults(), all] {
        let docs = documents(&rendered(&opts));
        assert!(docs.len() > 20);
        for d in &docs {
            check_exact(d);
        }
    }
}

#[test]
fn the_exactness_check_catches_an_unknown_field() {
    let mut docs = documents(&rendered(&defaults()));
    let d = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always".into();
    let caught = std::panic::catch_unwind(|| check_exact(d));
    assert!(caught.is_err(), "a misspelt field is caught");
}

#[test]
fn the_default_install_has_every_component_in_apply_order() {
    let k = kinds(&defaults());
    assert_eq!(k[0], "Namespace/serin-system", "the namespace first");
    for crd in [
        "canaries.serin.dev",
        "metrictemplates.serin.dev",
        "alertproviders.serin.dev",
    ] {
        assert!(k.contains(&format!("CustomResourceDefinition/{crd}")));
    }
    for c in ["serin-controller", "serin-control-plane", "serin-injector"] {
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
        ] {
            assert!(k.contains(&format!("{kind}/{c}")), "{kind}/{c} in {k:?}");
        }
    }
    assert!(
        k.contains(&"Role/serin-controller".to_string()),
        "the Lease role"
    );
    assert!(k.contains(&"PodDisruptionBudget/serin-controller".to_string()));
    assert!(
        !k.contains(&"PodDisruptionBudget/serin-control-plane".to_string()),
        "one replica: no budget that blocks drains"
    );
    assert_eq!(
        k.last().unwrap(),
        "MutatingWebhookConfiguration/serin-injector"
    );
    let docs = documents(&rendered(&defaults()));
    assert_eq!(
        find(&docs, "Deployment", "serin-controller")["spec"]["replicas"],
        2,
        "leader election needs two"
    );
}

#[test]
fn every_deployment_is_hardened_probed_sized_and_spread() {
    let docs = documents(&rendered(&defaults()));
    let ds = deployments(&docs);
    assert_eq!(ds.len(), 3);
    for d in ds {
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], name);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let spread = pod["topologySpreadConstraints"].as_array().unwrap();
        assert!(
            spread
                .iter()
                .any(|c| c["topologyKey"] == "kubernetes.io/hostname"),
            "{name}"
        );
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
            assert!(
                c["livenessProbe"].is_object() && c["readinessProbe"].is_object(),
                "{name}"
            );
            for k in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    assert!(c["resources"][k][r].is_string(), "{name} {k}.{r}");
                }
            }
            assert_eq!(c["image"], "ghcr.io/serin-dev/serin:0.1.0");
        }
    }
}

#[test]
fn the_injector_matches_the_shared_contract() {
    let docs = documents(&rendered(&defaults()));
    let svc = find(&docs, "Service", "serin-injector");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8443);
    assert_eq!(svc["spec"]["ports"][0]["name"], "https");
    let d = find(&docs, "Deployment", "serin-injector");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["injector"]));
    assert_eq!(c["ports"][0]["containerPort"], 8443);
    let w = find(&docs, "MutatingWebhookConfiguration", "serin-injector");
    let hooks = w["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    assert_eq!(h["name"], "inject.serin.dev");
    assert_eq!(h["failurePolicy"], "Ignore");
    assert_eq!(h["sideEffects"], "None");
    assert_eq!(h["admissionReviewVersions"], serde_json::json!(["v1"]));
    assert_eq!(h["clientConfig"]["service"]["path"], "/inject");
    assert_eq!(h["clientConfig"]["service"]["name"], "serin-injector");
    assert!(
        h["clientConfig"].get("caBundle").is_none(),
        "the injector patches the CA bundle"
    );
    assert_eq!(h["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    assert_eq!(h["rules"][0]["resources"], serde_json::json!(["pods"]));
    let sel = &h["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(sel["operator"], "NotIn");
    assert_eq!(
        sel["values"],
        serde_json::json!(["serin-system", "kube-system"])
    );
}

#[test]
fn the_output_is_the_same_on_every_run() {
    assert_eq!(rendered(&defaults()), rendered(&defaults()));
    assert!(!rendered(&defaults()).contains("BEGIN"), "no key material");
}

#[test]
fn no_role_grants_wildcards_or_secrets_everywhere_to_the_injector() {
    let docs = documents(&rendered(&defaults()));
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for r in d["rules"].as_array().unwrap() {
            for field in ["verbs", "resources", "apiGroups"] {
                assert!(
                    !r[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "{} {}: wildcard {field}",
                    d["kind"],
                    d["metadata"]["name"]
                );
            }
        }
    }
    let injector = find(&docs, "ClusterRole", "serin-injector");
    assert!(
        !injector.to_string().contains("secrets"),
        "secrets only in its own namespace"
    );
}

#[test]
fn namespace_moves_every_namespaced_object_and_every_reference() {
    let opts = InstallOptions {
        namespace: "mesh".into(),
        ..defaults()
    };
    let yaml = rendered(&opts);
    assert!(
        !yaml.contains("serin-system"),
        "no default namespace left anywhere"
    );
    let docs = documents(&yaml);
    assert_eq!(find(&docs, "Namespace", "mesh")["kind"], "Namespace");
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "Namespace"
                | "CustomResourceDefinition"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "MutatingWebhookConfiguration"
        );
        assert_eq!(
            d["metadata"].get("namespace").is_none(),
            cluster_scoped,
            "{kind}"
        );
        if !cluster_scoped {
            assert_eq!(d["metadata"]["namespace"], "mesh");
        }
    }
    let controller = find(&docs, "Deployment", "serin-controller");
    assert!(
        controller
            .to_string()
            .contains("http://serin-control-plane.mesh.svc:8086")
    );
    let w = find(&docs, "MutatingWebhookConfiguration", "serin-injector");
    assert_eq!(
        w["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "mesh"
    );
}

#[test]
fn registry_and_version_name_every_image() {
    let opts = InstallOptions {
        registry: "localhost:5000/team".into(),
        version: "v1.2.3-rc.1".into(),
        ..defaults()
    };
    let docs = documents(&rendered(&opts));
    let images: BTreeSet<String> = deployments(&docs)
        .iter()
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .clone()
        })
        .map(|c| c["image"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        images,
        BTreeSet::from(["localhost:5000/team/serin:v1.2.3-rc.1".to_string()])
    );
}

#[test]
fn ha_runs_three_of_everything_with_budgets_and_required_spread() {
    let opts = InstallOptions {
        ha: true,
        ..defaults()
    };
    let docs = documents(&rendered(&opts));
    for d in deployments(&docs) {
        let name = d["metadata"]["name"].as_str().unwrap();
        assert_eq!(d["spec"]["replicas"], 3, "{name}");
        assert_eq!(
            find(&docs, "PodDisruptionBudget", name)["spec"]["maxUnavailable"],
            1
        );
        let spread = &d["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
        assert_eq!(spread["whenUnsatisfiable"], "DoNotSchedule", "{name}");
    }
}

#[test]
fn control_plane_replicas_set_its_count_and_budget() {
    let opts = InstallOptions {
        control_plane_replicas: Some(2),
        ..defaults()
    };
    let docs = documents(&rendered(&opts));
    assert_eq!(
        find(&docs, "Deployment", "serin-control-plane")["spec"]["replicas"],
        2
    );
    find(&docs, "PodDisruptionBudget", "serin-control-plane");
}

fn controller_env(opts: &InstallOptions) -> Vec<Value> {
    let docs = documents(&rendered(opts));
    find(&docs, "Deployment", "serin-controller")["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn metrics_server_and_dashboard_token_reach_the_controller() {
    let plain = controller_env(&defaults());
    assert!(
        !plain
            .iter()
            .any(|e| e["name"] == "SERIN_METRICS_SERVER" || e["name"] == "SERIN_DASHBOARD_TOKEN")
    );
    let env = controller_env(&InstallOptions {
        metrics_server: Some("http://prometheus.monitoring:9090".into()),
        dashboard_token_secret: Some("serin-dashboard".into()),
        ..defaults()
    });
    let m = env
        .iter()
        .find(|e| e["name"] == "SERIN_METRICS_SERVER")
        .unwrap();
    assert_eq!(m["value"], "http://prometheus.monitoring:9090");
    let t = env
        .iter()
        .find(|e| e["name"] == "SERIN_DASHBOARD_TOKEN")
        .unwrap();
    assert_eq!(t["valueFrom"]["secretKeyRef"]["name"], "serin-dashboard");
    assert_eq!(t["valueFrom"]["secretKeyRef"]["key"], "token");
    assert!(
        t.get("value").is_none(),
        "the token is never in the manifests"
    );
}

#[test]
fn crds_only_and_skip_crds() {
    let only = kinds(&InstallOptions {
        crds: CrdSelection::Only,
        ..defaults()
    });
    assert_eq!(only.len(), 3);
    assert!(
        only.iter()
            .all(|k| k.starts_with("CustomResourceDefinition/"))
    );
    let yaml = install::render(
        &serin_api::crds()
            .into_iter()
            .map(Object::Crd)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(
        rendered(&InstallOptions {
            crds: CrdSelection::Only,
            ..defaults()
        }),
        yaml
    );
    let skipped = kinds(&InstallOptions {
        crds: CrdSelection::Skip,
        ..defaults()
    });
    assert!(
        !skipped
            .iter()
            .any(|k| k.starts_with("CustomResourceDefinition/"))
    );
    assert_eq!(skipped.len() + 3, kinds(&defaults()).len());
}

#[test]
fn output_groups_are_numbered_in_apply_order() {
    let groups = install::groups(&defaults()).unwrap();
    let files: Vec<&str> = groups.iter().map(|g| g.file).collect();
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
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(
        files, sorted,
        "kubectl apply -f DIR reads files in name order"
    );
}

#[test]
fn bad_flags_are_errors_naming_the_flag_and_what_is_accepted() {
    let cases: Vec<(InstallOptions, &str)> = vec![
        (
            InstallOptions {
                namespace: "Serin_System".into(),
                ..defaults()
            },
            "--namespace",
        ),
        (
            InstallOptions {
                namespace: "".into(),
                ..defaults()
            },
            "--namespace",
        ),
        (
            InstallOptions {
                registry: "ghcr.io/serin/".into(),
                ..defaults()
            },
            "--registry",
        ),
        (
            InstallOptions {
                registry: "ghcr.io/serin:1.0".into(),
                ..defaults()
            },
            "--registry",
        ),
        (
            InstallOptions {
                registry: "".into(),
                ..defaults()
            },
            "--registry",
        ),
        (
            InstallOptions {
                version: "1.0 beta".into(),
                ..defaults()
            },
            "--version",
        ),
        (
            InstallOptions {
                version: "".into(),
                ..defaults()
            },
            "--version",
        ),
        (
            InstallOptions {
                metrics_server: Some("prometheus:9090".into()),
                ..defaults()
            },
            "--metrics-server",
        ),
        (
            InstallOptions {
                dashboard_token_secret: Some("Token!".into()),
                ..defaults()
            },
            "--dashboard-token-secret",
        ),
        (
            InstallOptions {
                control_plane_replicas: Some(0),
                ..defaults()
            },
            "--control-plane-replicas",
        ),
    ];
    for (opts, flag) in cases {
        let e = install::objects(&opts).expect_err(flag);
        assert_eq!(e.flag, flag);
        let message = e.to_string();
        assert!(
            message.starts_with(flag) && message.len() > flag.len() + 20,
            "{message}"
        );
    }
}
