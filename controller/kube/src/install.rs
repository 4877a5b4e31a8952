//! `serin install`: every object a cluster needs to run Serin, built as typed k8s-openapi
//! objects (never templated text) and rendered as one YAML stream or a directory of files.
//!
//! Three components, each with its own ServiceAccount and exactly the RBAC rules its code calls
//! (the rules live in [`controller_rules`], [`control_plane_rules`] and [`injector_rules`], and
//! a test compares them with the API calls the mocked-API scenarios answer):
//! - `serin-controller`: reconciles Canaries, two replicas with leader election (a Lease in the
//!   install namespace), serves the dashboard;
//! - `serin-control-plane`: turns HTTPRoutes/TrafficSplits + endpoints into proxy route tables;
//! - `serin-injector`: the admission webhook that adds the proxy to pods. It manages its own
//!   serving certificate (Secret `serin-injector-tls`) and patches the webhook configuration's
//!   `caBundle`, so the output here holds no key material and is the same on every run.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, TCPSocketAction, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

/// The namespace Serin installs into unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "serin-system";
/// Where the images come from unless `--registry` says otherwise.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/serin-dev";
/// The controller: Deployment, ServiceAccount, ClusterRole, Service and Lease name.
pub const CONTROLLER: &str = "serin-controller";
/// The traffic-split control plane.
pub const CONTROL_PLANE: &str = "serin-control-plane";
/// The sidecar injector (Deployment, Service, webhook configuration).
pub const INJECTOR: &str = "serin-injector";
/// The one webhook of the injector's configuration.
pub const INJECTOR_WEBHOOK: &str = "inject.serin.dev";
/// The injector's serving certificate, created by the injector itself.
pub const INJECTOR_TLS_SECRET: &str = "serin-injector-tls";
/// The controller's admin port (`/metrics`, `/healthz`, `/readyz`).
pub const CONTROLLER_ADMIN_PORT: i32 = 8080;
/// The controller's dashboard port.
pub const DASHBOARD_PORT: i32 = 7979;
/// The control plane's port (proxies, route status API, `/metrics`, `/ready`, `/live`).
pub const CONTROL_PLANE_PORT: i32 = 8086;
/// The injector's HTTPS port in its container (its Service listens on 443).
pub const INJECTOR_PORT: i32 = 8443;
/// The key of `--dashboard-token-secret` that holds the token.
pub const DASHBOARD_TOKEN_KEY: &str = "token";
/// The image's non-root user and group.
pub const RUN_AS: i64 = 65532;

/// Which of the objects to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrdSelection {
    /// The CRDs and everything else.
    #[default]
    Include,
    /// Only the CRDs (`--crds-only`).
    Only,
    /// Everything but the CRDs (`--skip-crds`).
    Skip,
}

/// What `serin install` was asked for.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The namespace of every namespaced object (`--namespace`).
    pub namespace: String,
    /// Image registry and repository prefix (`--registry`); the image is `REGISTRY/serin:VERSION`.
    pub registry: String,
    /// Image tag (`--version`).
    pub version: String,
    /// Three replicas of each component, PDBs, spread required across nodes (`--ha`).
    pub ha: bool,
    /// Prometheus for Canaries that name none (`--metrics-server`).
    pub metrics_server: Option<String>,
    /// Secret (key `token`) whose value enables the dashboard's actions (`--dashboard-token-secret`).
    pub dashboard_token_secret: Option<String>,
    /// Control-plane replicas (`--control-plane-replicas`; default 1, 3 with `--ha`).
    pub control_plane_replicas: Option<i32>,
    /// CRDs included, alone, or skipped.
    pub crds: CrdSelection,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            registry: DEFAULT_REGISTRY.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ha: false,
            metrics_server: None,
            dashboard_token_secret: None,
            control_plane_replicas: None,
            crds: CrdSelection::Include,
        }
    }
}

/// A flag of `serin install` that cannot work, named with what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag} {value:?}: {accepted}")]
pub struct InstallError {
    /// The flag (`--namespace`).
    pub flag: &'static str,
    /// What was given.
    pub value: String,
    /// What is accepted.
    pub accepted: &'static str,
}

/// One object of the install, typed.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// The install namespace.
    Namespace(Namespace),
    /// A Serin CRD.
    Crd(CustomResourceDefinition),
    /// A component's identity.
    ServiceAccount(ServiceAccount),
    /// Cluster-wide rules of a component.
    ClusterRole(ClusterRole),
    /// Binds a ClusterRole to its ServiceAccount.
    ClusterRoleBinding(ClusterRoleBinding),
    /// Rules inside the install namespace.
    Role(Role),
    /// Binds a Role to its ServiceAccount.
    RoleBinding(RoleBinding),
    /// A component's Service.
    Service(Service),
    /// A component's Deployment.
    Deployment(Deployment),
    /// Keeps one replica up through voluntary disruptions.
    PodDisruptionBudget(PodDisruptionBudget),
    /// The injector's admission webhook.
    Webhook(MutatingWebhookConfiguration),
}

impl Object {
    /// `Kind/name`, for messages and file names.
    pub fn kind_name(&self) -> (&'static str, String) {
        fn n(m: &ObjectMeta) -> String {
            m.name.clone().unwrap_or_default()
        }
        match self {
            Object::Namespace(o) => ("Namespace", n(&o.metadata)),
            Object::Crd(o) => ("CustomResourceDefinition", n(&o.metadata)),
            Object::ServiceAccount(o) => ("ServiceAccount", n(&o.metadata)),
            Object::ClusterRole(o) => ("ClusterRole", n(&o.metadata)),
            Object::ClusterRoleBinding(o) => ("ClusterRoleBinding", n(&o.metadata)),
            Object::Role(o) => ("Role", n(&o.metadata)),
            Object::RoleBinding(o) => ("RoleBinding", n(&o.metadata)),
            Object::Service(o) => ("Service", n(&o.metadata)),
            Object::Deployment(o) => ("Deployment", n(&o.metadata)),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", n(&o.metadata)),
            Object::Webhook(o) => ("MutatingWebhookConfiguration", n(&o.metadata)),
        }
    }
}

/// The objects grouped as `--output-dir` writes them: one file per group, numbered in the
/// order `kubectl apply -f DIR` must create them.
#[derive(Debug, Clone)]
pub struct Group {
    /// File name (`00-namespace.yaml`).
    pub file: &'static str,
    /// Its objects, in order.
    pub objects: Vec<Object>,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

impl InstallOptions {
    /// Checks every flag; the first that cannot work is the error.
    pub fn validate(&self) -> Result<(), InstallError> {
        let err = |flag, value: &str, accepted| {
            Err(InstallError {
                flag,
                value: value.to_string(),
                accepted,
            })
        };
        if !is_dns_label(&self.namespace) {
            return err(
                "--namespace",
                &self.namespace,
                "a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters",
            );
        }
        // A host may carry a port (localhost:5000/serin); no tag or digest, no empty segment.
        let segments: Vec<&str> = self.registry.split('/').collect();
        let registry_ok = !self.registry.contains(char::is_whitespace)
            && !self.registry.contains('@')
            && segments.iter().all(|s| !s.is_empty())
            && segments.iter().skip(1).all(|s| !s.contains(':'))
            && (segments.len() > 1 || !self.registry.contains(':'));
        if !registry_ok {
            return err(
                "--registry",
                &self.registry,
                "a registry and repository prefix without tag or trailing '/', e.g. ghcr.io/serin-dev or localhost:5000/serin",
            );
        }
        let tag_ok = !self.version.is_empty()
            && self.version.len() <= 128
            && !self.version.starts_with(['.', '-'])
            && self
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return err(
                "--version",
                &self.version,
                "an image tag: letters, digits, '_', '.', '-' (not first), at most 128 characters",
            );
        }
        if let Some(url) = &self.metrics_server
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return err(
                "--metrics-server",
                url,
                "an http:// or https:// URL of Prometheus, e.g. http://prometheus.monitoring:9090",
            );
        }
        if let Some(name) = &self.dashboard_token_secret
            && !is_dns_subdomain(name)
        {
            return err(
                "--dashboard-token-secret",
                name,
                "the name of a Secret in the install namespace (a DNS-1123 subdomain) holding the key `token`",
            );
        }
        if let Some(n) = self.control_plane_replicas
            && !(1..=100).contains(&n)
        {
            return err(
                "--control-plane-replicas",
                &n.to_string(),
                "a whole number from 1 to 100",
            );
        }
        Ok(())
    }

    /// The one image holding `serin` and `serin-proxy`.
    pub fn image(&self) -> String {
        format!("{}/serin:{}", self.registry, self.version)
    }

    fn controller_replicas(&self) -> i32 {
        if self.ha { 3 } else { 2 }
    }

    fn control_plane_replicas(&self) -> i32 {
        self.control_plane_replicas
            .unwrap_or(if self.ha { 3 } else { 1 })
    }

    fn injector_replicas(&self) -> i32 {
        if self.ha { 3 } else { 1 }
    }
}

/// Every object, grouped by file, after checking the options.
pub fn groups(opts: &InstallOptions) -> Result<Vec<Group>, InstallError> {
    opts.validate()?;
    let crds = Group {
        file: "01-crds.yaml",
        objects: serin_api::crds().into_iter().map(Object::Crd).collect(),
    };
    if opts.crds == CrdSelection::Only {
        return Ok(vec![crds]);
    }
    let mut out = vec![Group {
        file: "00-namespace.yaml",
        objects: vec![Object::Namespace(namespace(opts))],
    }];
    if opts.crds == CrdSelection::Include {
        out.push(crds);
    }
    out.push(Group {
        file: "02-controller.yaml",
        objects: controller(opts),
    });
    out.push(Group {
        file: "03-control-plane.yaml",
        objects: control_plane(opts),
    });
    out.push(Group {
        file: "04-injector.yaml",
        objects: injector(opts),
    });
    Ok(out)
}

/// Every object in apply order.
pub fn objects(opts: &InstallOptions) -> Result<Vec<Object>, InstallError> {
    Ok(groups(opts)?.into_iter().flat_map(|g| g.objects).collect())
}

/// First lines of the rendered output.
pub const HEADER: &str = "# Serin: generated by `serin install`; do not edit.\n# Apply with: serin install | kubectl apply -f -   (remove: serin uninstall | kubectl delete -f -)\n";

/// Errors while rendering YAML.
#[derive(Debug, thiserror::Error)]
#[error("rendering {kind}/{name} as YAML")]
pub struct RenderError {
    kind: &'static str,
    name: String,
    #[source]
    source: serde_norway::Error,
}

/// Objects as one multi-document YAML stream.
pub fn render(objects: &[Object]) -> Result<String, RenderError> {
    let mut out = String::from(HEADER);
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(o).map_err(|source| {
            let (kind, name) = o.kind_name();
            RenderError { kind, name, source }
        })?);
    }
    Ok(out)
}

// ---------------------------------------------------------------- shared pieces

fn labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), component.to_string()),
        ("app.kubernetes.io/part-of".to_string(), "serin".to_string()),
    ])
}

/// The labels a component's Deployment selects its pods by.
pub(crate) fn selector_labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), component.to_string())])
}

fn meta(name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(String::from),
        labels: Some(labels(component)),
        ..Default::default()
    }
}

fn namespace(opts: &InstallOptions) -> Namespace {
    Namespace {
        metadata: meta(&opts.namespace, None, "serin"),
        ..Default::default()
    }
}

/// A rule of `verbs` on `resources` of `group`.
fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn named(mut r: PolicyRule, names: &[&str]) -> PolicyRule {
    r.resource_names = Some(names.iter().map(|s| s.to_string()).collect());
    r
}

/// Where each component's rules apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRules {
    /// ClusterRole rules (every namespace).
    pub cluster: Vec<PolicyRule>,
    /// Role rules in the install namespace.
    pub namespaced: Vec<PolicyRule>,
}

/// The controller: Canaries and their templates/providers, the targets and what it creates for
/// them (primaries, Services, routes, HPAs, config copies), Events; its Lease in its namespace.
pub fn controller_rules() -> ComponentRules {
    ComponentRules {
        cluster: vec![
            // list/watch: the controller and the dashboard's reflector; patch: finalizers and
            // the dashboard's command annotation. Nothing reads one Canary with a GET.
            rule("serin.dev", &["canaries"], &["list", "watch", "patch"]),
            rule("serin.dev", &["canaries/status"], &["patch"]),
            rule(
                "serin.dev",
                &["metrictemplates", "alertproviders"],
                &["get"],
            ),
            rule(
                "apps",
                &["deployments", "daemonsets"],
                &["get", "list", "watch", "patch"],
            ),
            rule("", &["services"], &["list", "watch", "patch"]),
            // list/watch: metadata-only watches, so a tracked config or signing key is read
            // (get) once per version, not at every observation.
            rule(
                "",
                &["configmaps", "secrets"],
                &["get", "list", "watch", "patch"],
            ),
            // The endpoints of Serin's Services: a pod becoming ready wakes its Canary.
            rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
            rule(
                "autoscaling",
                &["horizontalpodautoscalers"],
                &["get", "patch"],
            ),
            // list/watch: Serin's own routes (metadata), so an unchanged one is not applied
            // again and one changed by someone else is put back.
            rule(
                "gateway.networking.k8s.io",
                &["httproutes"],
                &["list", "watch", "patch", "delete"],
            ),
            rule(
                "split.smi-spec.io",
                &["trafficsplits"],
                &["list", "watch", "patch", "delete"],
            ),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
        ],
        namespaced: vec![rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"],
        )],
    }
}

/// The control plane: watches routes, splits, Services and endpoints; writes route status.
pub fn control_plane_rules() -> ComponentRules {
    ComponentRules {
        cluster: vec![
            rule(
                "gateway.networking.k8s.io",
                &["httproutes", "referencegrants"],
                &["list", "watch"],
            ),
            rule(
                "gateway.networking.k8s.io",
                &["httproutes/status"],
                &["patch"],
            ),
            rule("split.smi-spec.io", &["trafficsplits"], &["list", "watch"]),
            rule("", &["services"], &["list", "watch"]),
            rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
            // Pods' metadata: the endpoints' dst_pod_template_hash and workload labels.
            rule("", &["pods"], &["list", "watch"]),
        ],
        namespaced: vec![],
    }
}

/// The injector: its own webhook configuration (to patch the CA bundle) and its serving
/// certificate Secret (created at first start).
pub fn injector_rules() -> ComponentRules {
    ComponentRules {
        cluster: vec![
            named(
                rule(
                    "admissionregistration.k8s.io",
                    &["mutatingwebhookconfigurations"],
                    &["get", "patch"],
                ),
                &[INJECTOR],
            ),
            // `serin.dev/inject` on the pod's Namespace decides when the pod has none: read
            // from a watched cache, with a get for a namespace the cache does not hold yet.
            rule("", &["namespaces"], &["get", "list", "watch"]),
            // Pods' metadata: opted-in pods running without the proxy (a gauge).
            rule("", &["pods"], &["list", "watch"]),
        ],
        namespaced: vec![
            // `update`: the certificate is renewed in place before it expires.
            named(
                rule("", &["secrets"], &["get", "update"]),
                &[INJECTOR_TLS_SECRET],
            ),
            // `create` cannot be limited by name: the API server has no name before creation.
            rule("", &["secrets"], &["create"]),
        ],
    }
}

fn rbac(opts: &InstallOptions, component: &str, rules: ComponentRules) -> Vec<Object> {
    let ns = opts.namespace.as_str();
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: component.into(),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    let mut out = vec![
        Object::ServiceAccount(ServiceAccount {
            metadata: meta(component, Some(ns), component),
            ..Default::default()
        }),
        Object::ClusterRole(ClusterRole {
            metadata: meta(component, None, component),
            rules: Some(rules.cluster),
            ..Default::default()
        }),
        Object::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(component, None, component),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: component.into(),
            },
            subjects: Some(vec![subject.clone()]),
        }),
    ];
    if !rules.namespaced.is_empty() {
        out.push(Object::Role(Role {
            metadata: meta(component, Some(ns), component),
            rules: Some(rules.namespaced),
        }));
        out.push(Object::RoleBinding(RoleBinding {
            metadata: meta(component, Some(ns), component),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: component.into(),
            },
            subjects: Some(vec![subject]),
        }));
    }
    out
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(name: &str, container_port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn http_probe(path: &str, port_name: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port_name.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn resources(cpu: &str, memory: &str, cpu_limit: &str, memory_limit: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu)),
            ("memory".to_string(), q(memory)),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu_limit)),
            ("memory".to_string(), q(memory_limit)),
        ])),
        ..Default::default()
    }
}

/// Non-root, read-only root filesystem, no capabilities, no privilege escalation.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Spread replicas over nodes and zones: preferred by default (a one-node cluster still
/// schedules every replica), required across nodes with `--ha`.
fn spread(opts: &InstallOptions, component: &str) -> Vec<TopologySpreadConstraint> {
    let selector = LabelSelector {
        match_labels: Some(selector_labels(component)),
        ..Default::default()
    };
    let c = |key: &str, when: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: when.into(),
        label_selector: Some(selector.clone()),
        ..Default::default()
    };
    vec![
        c(
            "kubernetes.io/hostname",
            if opts.ha {
                "DoNotSchedule"
            } else {
                "ScheduleAnyway"
            },
        ),
        c("topology.kubernetes.io/zone", "ScheduleAnyway"),
    ]
}

struct Workload<'a> {
    component: &'a str,
    replicas: i32,
    container: Container,
}

fn deployment(opts: &InstallOptions, w: Workload<'_>) -> Deployment {
    let ns = opts.namespace.as_str();
    Deployment {
        metadata: meta(w.component, Some(ns), w.component),
        spec: Some(DeploymentSpec {
            replicas: Some(w.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(w.component)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(w.component)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(w.component.into()),
                    security_context: Some(pod_security()),
                    topology_spread_constraints: Some(spread(opts, w.component)),
                    containers: vec![w.container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(opts: &InstallOptions, component: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(component, Some(&opts.namespace), component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(component)),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service_port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(target.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// One replica may be down at a time; only where more than one runs (a budget of one on a
/// single replica would block every node drain).
fn pdb(opts: &InstallOptions, component: &str, replicas: i32) -> Option<Object> {
    (replicas > 1).then(|| {
        Object::PodDisruptionBudget(PodDisruptionBudget {
            metadata: meta(component, Some(&opts.namespace), component),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(component)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    })
}

fn container(opts: &InstallOptions, name: &str, args: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some(opts.image()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args.iter().map(|s| s.to_string()).collect()),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- components

fn controller(opts: &InstallOptions) -> Vec<Object> {
    let ns = opts.namespace.as_str();
    let mut env = vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env(
            "SERIN_ADMIN_ADDR",
            &format!("0.0.0.0:{CONTROLLER_ADMIN_PORT}"),
        ),
        env("SERIN_DASHBOARD_ADDR", &format!("0.0.0.0:{DASHBOARD_PORT}")),
        env(
            "SERIN_CONTROL_PLANE",
            &format!("http://{CONTROL_PLANE}.{ns}.svc:{CONTROL_PLANE_PORT}"),
        ),
    ];
    if let Some(url) = &opts.metrics_server {
        env.push(self::env("SERIN_METRICS_SERVER", url));
    }
    if let Some(secret) = &opts.dashboard_token_secret {
        env.push(EnvVar {
            name: "SERIN_DASHBOARD_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: DASHBOARD_TOKEN_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut c = container(opts, "controller", &["controller", "--kubernetes"]);
    c.env = Some(env);
    c.ports = Some(vec![
        port("admin-http", CONTROLLER_ADMIN_PORT),
        port("dashboard", DASHBOARD_PORT),
    ]);
    c.liveness_probe = Some(http_probe("/healthz", "admin-http", 10));
    // A standby is ready too: it serves the dashboard and takes over when the leader goes.
    c.readiness_probe = Some(http_probe("/readyz", "admin-http", 5));
    c.resources = Some(resources("100m", "64Mi", "1", "256Mi"));
    let replicas = opts.controller_replicas();
    let mut out = rbac(opts, CONTROLLER, controller_rules());
    out.push(Object::Service(service(
        opts,
        CONTROLLER,
        vec![
            service_port("dashboard", DASHBOARD_PORT, "dashboard"),
            service_port("admin-http", CONTROLLER_ADMIN_PORT, "admin-http"),
        ],
    )));
    out.push(Object::Deployment(deployment(
        opts,
        Workload {
            component: CONTROLLER,
            replicas,
            container: c,
        },
    )));
    out.extend(pdb(opts, CONTROLLER, replicas));
    out
}

fn control_plane(opts: &InstallOptions) -> Vec<Object> {
    let mut c = container(opts, "control-plane", &["control-plane", "--kubernetes"]);
    c.env = Some(vec![env(
        "SERIN_CP_LISTEN",
        &format!("0.0.0.0:{CONTROL_PLANE_PORT}"),
    )]);
    c.ports = Some(vec![port("http", CONTROL_PLANE_PORT)]);
    c.liveness_probe = Some(http_probe("/live", "http", 10));
    c.readiness_probe = Some(http_probe("/ready", "http", 5));
    c.resources = Some(resources("100m", "64Mi", "1", "256Mi"));
    let replicas = opts.control_plane_replicas();
    let mut out = rbac(opts, CONTROL_PLANE, control_plane_rules());
    out.push(Object::Service(service(
        opts,
        CONTROL_PLANE,
        vec![service_port("http", CONTROL_PLANE_PORT, "http")],
    )));
    out.push(Object::Deployment(deployment(
        opts,
        Workload {
            component: CONTROL_PLANE,
            replicas,
            container: c,
        },
    )));
    out.extend(pdb(opts, CONTROL_PLANE, replicas));
    out
}

fn injector(opts: &InstallOptions) -> Vec<Object> {
    let ns = opts.namespace.as_str();
    let mut c = container(opts, "injector", &["injector"]);
    c.env = Some(vec![
        env_field("POD_NAMESPACE", "metadata.namespace"),
        // The sidecar it injects comes from the same image.
        env("SERIN_PROXY_IMAGE", &opts.image()),
        // Where the injected proxies stream their route tables from.
        env(
            "SERIN_CONTROL_PLANE_URL",
            &format!("http://{CONTROL_PLANE}.{ns}.svc:{CONTROL_PLANE_PORT}"),
        ),
    ]);
    c.ports = Some(vec![port("https", INJECTOR_PORT)]);
    // TCP probes: the serving certificate is the injector's own, so kubelet could not verify it.
    let tcp = |period| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("https".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    };
    c.liveness_probe = Some(tcp(10));
    c.readiness_probe = Some(tcp(5));
    c.resources = Some(resources("50m", "32Mi", "500m", "128Mi"));
    let replicas = opts.injector_replicas();
    let mut out = rbac(opts, INJECTOR, injector_rules());
    let mut svc = service(opts, INJECTOR, vec![service_port("https", 443, "https")]);
    if let Some(spec) = svc.spec.as_mut()
        && let Some(p) = spec.ports.as_mut().and_then(|p| p.first_mut())
    {
        p.target_port = Some(IntOrString::Int(INJECTOR_PORT));
    }
    out.push(Object::Service(svc));
    out.push(Object::Deployment(deployment(
        opts,
        Workload {
            component: INJECTOR,
            replicas,
            container: c,
        },
    )));
    out.extend(pdb(opts, INJECTOR, replicas));
    out.push(Object::Webhook(MutatingWebhookConfiguration {
        metadata: meta(INJECTOR, None, INJECTOR),
        webhooks: Some(vec![MutatingWebhook {
            name: INJECTOR_WEBHOOK.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Ignore".into()),
            timeout_seconds: Some(10),
            reinvocation_policy: Some("Never".into()),
            // No caBundle: the injector patches it in from its own certificate.
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: INJECTOR.into(),
                    namespace: ns.into(),
                    path: Some("/inject".into()),
                    port: Some(443),
                }),
                ..Default::default()
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            // Serin's own pods and the cluster's (kube-system: DNS, CNI, kube-proxy) never
            // reach the injector: their creation never waits on it, even while it is down
            // or slow (the API server waits up to timeoutSeconds before ignoring it).
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(vec![ns.into(), crate::inject::KUBE_SYSTEM.into()]),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    }));
    out
}
