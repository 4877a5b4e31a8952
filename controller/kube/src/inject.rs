//! Sidecar injection: the one function `serin inject` (manifests) and `serin injector` (the
//! admission webhook) share, and the AdmissionReview handling around it.
//!
//! A pod is injected when `serin.dev/inject: enabled` is on its template or its namespace (the
//! pod's value wins; `disabled` opts out). It is skipped with `hostNetwork`, in the Serin
//! namespace, or when already injected. Injection adds, in this order, before the pod's own
//! init containers:
//!
//! 1. `serin-init`: `serin-proxy init`, the only container with `NET_ADMIN`/`NET_RAW`;
//! 2. `serin-proxy`: a native sidecar (init container with `restartPolicy: Always`: it starts
//!    before the app and the app's init containers, stops after it, and Jobs still complete),
//!    transparent, its identity from the Downward API (`namespace`, `pod`, the owning workload
//!    as Linkerd labels it — `deployment`, `statefulset`, `daemonset`, `job`, ... — and
//!    `pod_template_hash` on every series), so Flagger's Linkerd queries match its metrics.
//!
//! Per-pod annotations override the proxy's resources, log level, the ports left uncaptured and
//! IPv6 capture.
//! Nothing here talks to the API server: the webhook's caller supplies the namespace's
//! annotations.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, Pod, PodSpec, Probe, ResourceRequirements, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Opt-in/opt-out annotation on a Namespace or a pod template: `enabled` or `disabled`.
pub const INJECT: &str = "serin.dev/inject";
/// Set on injected pods: the proxy image injected (also how re-injection is avoided).
pub const INJECTED: &str = "serin.dev/proxy-image";
/// Per-pod override: the proxy's CPU request (a Kubernetes quantity, e.g. `100m`).
pub const PROXY_CPU_REQUEST: &str = "serin.dev/proxy-cpu-request";
/// Per-pod override: the proxy's CPU limit.
pub const PROXY_CPU_LIMIT: &str = "serin.dev/proxy-cpu-limit";
/// Per-pod override: the proxy's memory request (e.g. `20Mi`).
pub const PROXY_MEMORY_REQUEST: &str = "serin.dev/proxy-memory-request";
/// Per-pod override: the proxy's memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "serin.dev/proxy-memory-limit";
/// Per-pod override: the proxy's log level (`error`, `warn`, `info`, `debug`, `trace`).
pub const PROXY_LOG_LEVEL: &str = "serin.dev/proxy-log-level";
/// Per-pod: inbound ports not captured, comma-separated (e.g. `22,9100`).
pub const SKIP_INBOUND_PORTS: &str = "serin.dev/skip-inbound-ports";
/// Per-pod: outbound destination ports not captured, comma-separated (e.g. `3306,5432`).
pub const SKIP_OUTBOUND_PORTS: &str = "serin.dev/skip-outbound-ports";
/// Per-pod: IPv6 capture, `auto` (where the pod has IPv6: what happens without the
/// annotation), `on` (the pod does not start without IPv6 capture) or `off` (IPv6 bypasses the
/// proxy). Passed to both `serin-proxy init --ipv6` and the proxy's `--transparent-ipv6`.
pub const CAPTURE_IPV6: &str = "serin.dev/capture-ipv6";

/// Per-pod: the proxy's timings, each a duration (`90s`, `5m`, `1500ms`) passed to the proxy
/// as the environment variable beside it (an injected proxy has no config file, so these are
/// its only knobs): the annotation, the variable, and whether 0 is accepted (only for
/// `metrics-retain-idle`: 0 drops a gone endpoint's series at once; a zero timeout would refuse
/// or cut every request, and the proxy refuses it).
pub const PROXY_TIMINGS: [(&str, &str, bool); 5] = [
    // How long in-flight requests may run after SIGTERM; keep it under the pod's
    // terminationGracePeriodSeconds.
    (
        "serin.dev/proxy-shutdown-timeout",
        "SERIN_PROXY_SHUTDOWN_TIMEOUT",
        false,
    ),
    // Time to connect to an endpoint before a 502.
    (
        "serin.dev/proxy-connect-timeout",
        "SERIN_PROXY_CONNECT_TIMEOUT",
        false,
    ),
    // Longest pause inside a body and longest wait for a response head: raise it for long polls.
    (
        "serin.dev/proxy-body-idle-timeout",
        "SERIN_PROXY_BODY_IDLE_TIMEOUT",
        false,
    ),
    // An h2c client connection without open streams for this long is closed.
    (
        "serin.dev/proxy-h2-idle-timeout",
        "SERIN_PROXY_H2_IDLE_TIMEOUT",
        false,
    ),
    // How long a gone endpoint's series stay on /metrics.
    (
        "serin.dev/proxy-metrics-retain-idle",
        "SERIN_PROXY_METRICS_RETAIN_IDLE",
        true,
    ),
];

/// Name of the injected init container that installs the capture rules.
pub const INIT_CONTAINER: &str = "serin-init";
/// Name of the injected proxy (native sidecar).
pub const PROXY_CONTAINER: &str = "serin-proxy";
/// The namespace Serin itself runs in: never injected.
pub const SYSTEM_NAMESPACE: &str = "serin-system";
/// The cluster's own namespace (DNS, CNI, kube-proxy): never injected, and left out of the
/// webhook's namespace selector, so that meshing can never stand between the cluster and its
/// DNS.
pub const KUBE_SYSTEM: &str = "kube-system";

/// The volume mounted at `/run` in [`INIT_CONTAINER`]: iptables-legacy (and
/// iptables-legacy-restore) take the lock file `/run/xtables.lock` before any change and exit
/// with "can't open lock file" when `/run` is read-only, which it is under the init container's
/// `readOnlyRootFilesystem`. Nodes whose rules are in the legacy backend would otherwise never
/// start an injected pod.
pub const XTABLES_LOCK_VOLUME: &str = "serin-init-xtables-lock";

/// Containers another mesh's injector adds (Linkerd's, Istio's). A pod holding one already has
/// its traffic captured by that mesh: a second set of capture rules would send each connection
/// through both proxies, or loop.
const OTHER_MESH_CONTAINERS: [&str; 5] = [
    "linkerd-proxy",
    "linkerd-init",
    "istio-proxy",
    "istio-init",
    "istio-validation",
];
/// Annotations another mesh's injector leaves on the pods it injected (the uninjected-pods
/// watch sees pods' metadata only, so the containers are not enough).
const OTHER_MESH_MARKERS: [&str; 2] = ["linkerd.io/proxy-version", "sidecar.istio.io/status"];

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
/// The values of [`CAPTURE_IPV6`], as `serin-proxy` takes them.
const IPV6_MODES: [&str; 3] = ["auto", "on", "off"];

/// What the injector puts into pods (from `serin inject` / `serin injector` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// The serin-proxy image (runs both the init container and the sidecar).
    pub proxy_image: String,
    /// UID the proxy runs as (exempt from capture).
    pub proxy_uid: i64,
    /// The control plane the proxies stream route tables from (`http://host:port`).
    pub control_plane: String,
    /// Outbound listener port.
    pub outbound_port: u16,
    /// Transparent inbound listener port.
    pub inbound_port: u16,
    /// Admin port (`/metrics`, never captured inbound).
    pub admin_port: u16,
    /// Default proxy resources (annotations override each).
    pub cpu_request: String,
    /// Default CPU limit; empty = none.
    pub cpu_limit: String,
    /// Default memory request.
    pub memory_request: String,
    /// Default memory limit; empty = none.
    pub memory_limit: String,
    /// Default log level.
    pub log_level: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            proxy_image: "ghcr.io/serin-dev/serin-proxy:latest".into(),
            proxy_uid: 2102,
            control_plane: "http://serin-control-plane.serin-system.svc.cluster.local:8086".into(),
            outbound_port: 4140,
            inbound_port: 4143,
            admin_port: 4191,
            cpu_request: "100m".into(),
            cpu_limit: String::new(),
            memory_request: "20Mi".into(),
            memory_limit: "250Mi".into(),
            log_level: "info".into(),
        }
    }
}

/// Why a pod was left alone; the label of the skipped-pods metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Neither the pod nor its namespace opted in.
    NotEnabled,
    /// `serin.dev/inject: disabled` (on the pod, or on the namespace with nothing on the pod).
    Disabled,
    /// The pod uses the node's network: capture rules would rewrite the node's traffic.
    HostNetwork,
    /// Serin's own namespace, or `kube-system`.
    SystemNamespace,
    /// The proxy is already there.
    AlreadyInjected,
    /// Another mesh's proxy is there (Linkerd's, Istio's), or that mesh's injector is asked to
    /// add it (`linkerd.io/inject` on the pod or its namespace, `sidecar.istio.io/inject` on
    /// the pod): two meshes' capture rules in one pod would send traffic through both proxies.
    OtherMesh,
}

impl Skip {
    /// Stable metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Skip::NotEnabled => "not_enabled",
            Skip::Disabled => "disabled",
            Skip::HostNetwork => "host_network",
            Skip::SystemNamespace => "system_namespace",
            Skip::AlreadyInjected => "already_injected",
            Skip::OtherMesh => "other_mesh",
        }
    }
}

/// A bad annotation or pod: names the annotation (or field) and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An annotation has a value outside what is accepted.
    #[error("annotation {annotation}: {value:?} is not accepted; expected {expected}")]
    Annotation {
        /// The annotation key.
        annotation: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The pod has no `spec`.
    #[error("the pod has no spec")]
    NoSpec,
    /// One of the pod's containers runs as the proxy's UID, whose traffic the capture rules
    /// let through untouched: that container would silently not be meshed.
    #[error(
        "container {container:?} runs as UID {uid} ({field}), the UID the proxy runs as: the capture rules let that UID's traffic bypass the proxy, so the container would not be meshed; run it as another UID, or inject with another --proxy-uid"
    )]
    ProxyUid {
        /// The container's name.
        container: String,
        /// Where its UID is set.
        field: &'static str,
        /// The UID.
        uid: i64,
    },
    /// A proxy resource request above its limit: the API server would refuse the pod, naming
    /// only `spec.initContainers[1]`, which the user never wrote.
    #[error(
        "the proxy's {resource} request {request} is above its {resource} limit {limit}, which Kubernetes refuses; set {limit_annotation} at or above the request, or lower the request"
    )]
    RequestAboveLimit {
        /// `cpu` or `memory`.
        resource: &'static str,
        /// The request and where it comes from (the annotation, or the injector's default).
        request: String,
        /// The limit and where it comes from.
        limit: String,
        /// The annotation that sets the limit.
        limit_annotation: &'static str,
    },
}

/// What the pod is, for its identity labels: the workload that owns it, named as Linkerd's
/// metrics name it (`deployment`, `statefulset`, `daemonset`, `job`, `replicaset`,
/// `replicationcontroller`, `cronjob`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// The owner's metric label name (one of [`WORKLOAD_LABELS`]) and the owner's name.
    pub owner: Option<(&'static str, String)>,
}

pub use serin_mesh_api::workload::{WORKLOAD_LABELS, workload_label};

impl Workload {
    /// `kind`'s label and `name` (None for a kind that owns no pods).
    pub fn named(kind: &str, name: &str) -> Workload {
        Workload {
            owner: workload_label(kind).map(|l| (l, name.to_string())),
        }
    }

    /// The owning Deployment, when the pod belongs to one.
    pub fn deployment(&self) -> Option<&str> {
        match &self.owner {
            Some(("deployment", name)) => Some(name),
            _ => None,
        }
    }

    /// The workload a pod belongs to. A ReplicaSet owner whose name ends in the pod's
    /// `pod-template-hash` is a Deployment's (`web-7d9f8c` -> deployment `web`); without an
    /// owner, `generateName` with that suffix says the same. Any other controlling owner
    /// (StatefulSet, DaemonSet, Job, a bare ReplicaSet, ReplicationController) is the workload
    /// under its own kind.
    pub fn of_pod(meta: &ObjectMeta) -> Workload {
        use serin_mesh_api::workload::{deployment_of, owner_workload};
        let hash = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .map(String::as_str);
        let owners: Vec<_> = meta.owner_references.iter().flatten().collect();
        // The controlling owner decides; a pod with owners but none marked controller (rare,
        // hand-written) takes its first.
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or(owners.first());
        if let Some(o) = owner {
            return Workload {
                owner: owner_workload(&o.kind, &o.name, hash),
            };
        }
        let from_generate = meta
            .generate_name
            .as_deref()
            .and_then(|g| g.strip_suffix('-'))
            .zip(hash)
            .and_then(|(g, h)| deployment_of(g, h));
        Workload {
            owner: from_generate.map(|d| ("deployment", d.to_string())),
        }
    }
}

/// The outcome of [`inject`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The injected pod (metadata and spec).
    Injected(Box<Pod>),
    /// Left alone, and why.
    Skipped(Skip),
}

/// Whether `pod` in `namespace` (with `namespace_annotations`) is to be injected.
pub fn wanted(
    pod: &Pod,
    namespace: &str,
    namespace_annotations: &BTreeMap<String, String>,
) -> Result<Option<Skip>, InjectError> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if is_injected(pod) {
        return Ok(Some(Skip::AlreadyInjected));
    }
    if namespace == SYSTEM_NAMESPACE || namespace == KUBE_SYSTEM {
        return Ok(Some(Skip::SystemNamespace));
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return Ok(Some(Skip::HostNetwork));
    }
    let parse = |v: &String| match v.as_str() {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        _ => Err(InjectError::Annotation {
            annotation: INJECT,
            value: v.clone(),
            expected: "`enabled` or `disabled`",
        }),
    };
    // The pod's own annotation wins over its namespace's.
    let on = match annotations.get(INJECT) {
        Some(v) => Some(parse(v)?),
        None => namespace_annotations.get(INJECT).map(parse).transpose()?,
    };
    Ok(match on {
        Some(true) if other_mesh(pod, namespace_annotations) => Some(Skip::OtherMesh),
        Some(true) => None,
        Some(false) => Some(Skip::Disabled),
        None => Some(Skip::NotEnabled),
    })
}

/// Whether another mesh's proxy is in the pod or is to be injected into it (see
/// [`Skip::OtherMesh`]). Istio's namespace opt-in is a label the injector does not read; its
/// sidecar is seen once in the pod (by `serin inject` on a rendered manifest, or when Istio's
/// webhook ran first).
fn other_mesh(pod: &Pod, namespace_annotations: &BTreeMap<String, String>) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let linkerd_opt_in = |v: Option<&str>| matches!(v, Some("enabled" | "ingress"));
    let linkerd = match annotation("linkerd.io/inject") {
        Some(v) => linkerd_opt_in(Some(v)),
        None => linkerd_opt_in(
            namespace_annotations
                .get("linkerd.io/inject")
                .map(String::as_str),
        ),
    };
    let istio_label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("sidecar.istio.io/inject"))
        .map(String::as_str);
    let istio =
        annotation("sidecar.istio.io/inject") == Some("true") || istio_label == Some("true");
    let marked = OTHER_MESH_MARKERS.iter().any(|m| annotation(m).is_some());
    let containers = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| OTHER_MESH_CONTAINERS.contains(&c.name.as_str()))
    });
    linkerd || istio || marked || containers
}

/// The first of the pod's containers that would run as `uid` (its own `runAsUser`, else the
/// pod's), with where that UID is set. An image's `USER` is not known here.
fn runs_as(pod: &Pod, uid: i64) -> Option<(String, &'static str)> {
    let spec = pod.spec.as_ref()?;
    let pod_uid = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find_map(|c| {
            let own = c.security_context.as_ref().and_then(|s| s.run_as_user);
            match (own, pod_uid) {
                (Some(u), _) if u == uid => Some((c.name.clone(), "securityContext.runAsUser")),
                (None, Some(u)) if u == uid => {
                    Some((c.name.clone(), "the pod's securityContext.runAsUser"))
                }
                _ => None,
            }
        })
}

/// True when the proxy is already in the pod.
pub fn is_injected(pod: &Pod) -> bool {
    let named = |c: &Container| c.name == PROXY_CONTAINER || c.name == INIT_CONTAINER;
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED))
        || pod.spec.as_ref().is_some_and(|s| {
            s.containers.iter().any(named) || s.init_containers.iter().flatten().any(named)
        })
}

/// The one injection function. `force` injects without the opt-in annotation (`serin inject`
/// names the workloads itself) but still honours `disabled` and every other skip.
pub fn inject(
    pod: &Pod,
    namespace: &str,
    namespace_annotations: &BTreeMap<String, String>,
    workload: &Workload,
    cfg: &InjectConfig,
    force: bool,
) -> Result<Decision, InjectError> {
    match wanted(pod, namespace, namespace_annotations)? {
        None => {}
        Some(Skip::NotEnabled) if force && other_mesh(pod, namespace_annotations) => {
            return Ok(Decision::Skipped(Skip::OtherMesh));
        }
        Some(Skip::NotEnabled) if force => {}
        Some(skip) => return Ok(Decision::Skipped(skip)),
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let overrides = Overrides::read(&annotations, cfg)?;
    if let Some((container, field)) = runs_as(pod, cfg.proxy_uid) {
        return Err(InjectError::ProxyUid {
            container,
            field,
            uid: cfg.proxy_uid,
        });
    }
    let mut out = pod.clone();
    let spec: &mut PodSpec = out.spec.as_mut().ok_or(InjectError::NoSpec)?;
    let mut init = vec![
        init_container(cfg, &overrides),
        proxy_container(cfg, &overrides, workload),
    ];
    init.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init);
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: XTABLES_LOCK_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    out.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(INJECTED.into(), cfg.proxy_image.clone());
    Ok(Decision::Injected(Box::new(out)))
}

/// Checks what `cfg` puts into a pod without annotations (a request above its limit, a bad
/// quantity or log level), so that `serin inject` and `serin injector` refuse such flags at
/// start instead of refusing every pod.
pub fn check_defaults(cfg: &InjectConfig) -> Result<(), InjectError> {
    Overrides::read(&BTreeMap::new(), cfg).map(drop)
}

/// The per-pod annotations, checked.
struct Overrides {
    resources: ResourceRequirements,
    log_level: String,
    skip_inbound: BTreeSet<u16>,
    skip_outbound: BTreeSet<u16>,
    /// [`CAPTURE_IPV6`], when set (else both sides default to `auto`).
    ipv6: Option<String>,
    /// The [`PROXY_TIMINGS`] set on the pod: the proxy's variable and the checked value.
    timings: Vec<(&'static str, String)>,
}

impl Overrides {
    fn read(a: &BTreeMap<String, String>, cfg: &InjectConfig) -> Result<Overrides, InjectError> {
        let quantity = |key: &'static str,
                        default: &str|
         -> Result<Option<Quantity>, InjectError> {
            let v = a.get(key).map(String::as_str).unwrap_or(default);
            if v.is_empty() {
                return Ok(None);
            }
            if !is_quantity(v) {
                return Err(InjectError::Annotation {
                    annotation: key,
                    value: v.to_string(),
                    expected: "a non-negative Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi",
                });
            }
            Ok(Some(Quantity(v.to_string())))
        };
        // A request above its limit: the API server would refuse the pod naming only the
        // injected container; name what the user can change instead.
        for (resource, request_key, request_default, limit_key, limit_default) in [
            (
                "cpu",
                PROXY_CPU_REQUEST,
                &cfg.cpu_request,
                PROXY_CPU_LIMIT,
                &cfg.cpu_limit,
            ),
            (
                "memory",
                PROXY_MEMORY_REQUEST,
                &cfg.memory_request,
                PROXY_MEMORY_LIMIT,
                &cfg.memory_limit,
            ),
        ] {
            let from = |key: &'static str, default: &String, kind: &str| match a.get(key) {
                Some(v) => (v.clone(), format!("{v} (annotation {key})")),
                None => (
                    default.clone(),
                    format!("{default} (the injector's default, --proxy-{resource}-{kind})"),
                ),
            };
            let (request, request_named) = from(request_key, request_default, "request");
            let (limit, limit_named) = from(limit_key, limit_default, "limit");
            if let (Some(r), Some(l)) = (quantity_value(&request), quantity_value(&limit))
                && r > l
            {
                return Err(InjectError::RequestAboveLimit {
                    resource,
                    request: request_named,
                    limit: limit_named,
                    limit_annotation: limit_key,
                });
            }
        }
        let pair = |cpu: Option<Quantity>, mem: Option<Quantity>| {
            let mut m = BTreeMap::new();
            if let Some(c) = cpu {
                m.insert("cpu".to_string(), c);
            }
            if let Some(q) = mem {
                m.insert("memory".to_string(), q);
            }
            (!m.is_empty()).then_some(m)
        };
        let resources = ResourceRequirements {
            requests: pair(
                quantity(PROXY_CPU_REQUEST, &cfg.cpu_request)?,
                quantity(PROXY_MEMORY_REQUEST, &cfg.memory_request)?,
            ),
            limits: pair(
                quantity(PROXY_CPU_LIMIT, &cfg.cpu_limit)?,
                quantity(PROXY_MEMORY_LIMIT, &cfg.memory_limit)?,
            ),
            ..ResourceRequirements::default()
        };
        let log_level = a.get(PROXY_LOG_LEVEL).unwrap_or(&cfg.log_level).clone();
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(InjectError::Annotation {
                annotation: PROXY_LOG_LEVEL,
                value: log_level,
                expected: "one of error, warn, info, debug, trace",
            });
        }
        let ports = |key: &'static str| -> Result<BTreeSet<u16>, InjectError> {
            let Some(v) = a.get(key) else {
                return Ok(BTreeSet::new());
            };
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| match p.parse::<u16>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(InjectError::Annotation {
                        annotation: key,
                        value: v.clone(),
                        expected: "comma-separated single ports 1-65535, e.g. 22,3306 (ranges such as 8000-9000, which Linkerd's skip-ports annotations take, are not accepted: list each port)",
                    }),
                })
                .collect()
        };
        let ipv6 = a.get(CAPTURE_IPV6).cloned();
        if let Some(v) = ipv6.as_ref().filter(|v| !IPV6_MODES.contains(&v.as_str())) {
            return Err(InjectError::Annotation {
                annotation: CAPTURE_IPV6,
                value: v.clone(),
                expected: "one of auto, on, off",
            });
        }
        let mut timings = Vec::new();
        for (annotation, var, zero_ok) in PROXY_TIMINGS {
            let Some(v) = a.get(annotation) else {
                continue;
            };
            match serin_core::duration::parse_duration(v) {
                Ok(d) if zero_ok || !d.is_zero() => timings.push((var, v.clone())),
                _ => {
                    return Err(InjectError::Annotation {
                        annotation,
                        value: v.clone(),
                        expected: if zero_ok {
                            "a duration such as 10m, 30s or 0"
                        } else {
                            "a duration above 0 such as 90s, 5m or 1500ms"
                        },
                    });
                }
            }
        }
        Ok(Overrides {
            resources,
            log_level,
            skip_inbound: ports(SKIP_INBOUND_PORTS)?,
            skip_outbound: ports(SKIP_OUTBOUND_PORTS)?,
            ipv6,
            timings,
        })
    }
}

/// Whether `s` is a Kubernetes quantity a container's resources accept: a non-negative
/// decimal number (`0.5`, `.5`, `+1`) with an optional suffix: binary (`Ki` .. `Ei`), decimal
/// (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) or an exponent (`1e3`, `5E-2`).
pub fn is_quantity(s: &str) -> bool {
    quantity_value(s).is_some()
}

/// The value of the non-negative quantity `s` (`100m` is 0.1, `64Mi` 67108864, `1e3` 1000),
/// None when `s` is not one. Precise enough to compare a request with a limit.
pub fn quantity_value(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    let num_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (num, suffix) = unsigned.split_at(num_end);
    if !num.chars().any(|c| c.is_ascii_digit()) || num.matches('.').count() > 1 {
        return None;
    }
    // Equal quantities must compare equal (700m and 0.7, 0.1Gi and 107374182.4): a decimal
    // suffix is folded into the exponent so the number is parsed (rounded) once, and a binary
    // one multiplies by a power of two, which is exact. Multiplying by a rounded 1e-3 made
    // 700m read as 0.7000000000000001, above a 0.7 limit.
    let binary =
        |power: i32| -> Option<f64> { Some(num.parse::<f64>().ok()? * 1024f64.powi(power)) };
    let decimal = |exp: i32| -> Option<f64> { format!("{num}e{exp}").parse::<f64>().ok() };
    let v = match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        e => {
            // A decimal exponent: `e` or `E` and a signed integer.
            let exp = e.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            decimal(exp.parse::<i32>().ok()?)
        }
    }?;
    v.is_finite().then_some(v)
}

fn join(ports: impl IntoIterator<Item = u16>) -> String {
    ports
        .into_iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn init_container(cfg: &InjectConfig, o: &Overrides) -> Container {
    let mut skip_in: BTreeSet<u16> = o.skip_inbound.clone();
    // The admin port is scraped by Prometheus and probed by the kubelet: never captured.
    skip_in.insert(cfg.admin_port);
    let mut args = vec![
        "init".to_string(),
        "--inbound-port".into(),
        cfg.inbound_port.to_string(),
        "--outbound-port".into(),
        cfg.outbound_port.to_string(),
        "--proxy-uid".into(),
        cfg.proxy_uid.to_string(),
        "--skip-inbound-ports".into(),
        join(skip_in),
    ];
    if !o.skip_outbound.is_empty() {
        args.push("--skip-outbound-ports".into());
        args.push(join(o.skip_outbound.iter().copied()));
    }
    if let Some(v) = &o.ipv6 {
        args.push("--ipv6".into());
        args.push(v.clone());
    }
    let small = |cpu: &str, mem: &str| {
        Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ]))
    };
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(cfg.proxy_image.clone()),
        args: Some(args),
        // iptables needs root and exactly these two capabilities; nothing else in the pod
        // gets them.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        resources: Some(ResourceRequirements {
            requests: small("10m", "10Mi"),
            limits: small("100m", "50Mi"),
            ..ResourceRequirements::default()
        }),
        // iptables-legacy's lock file; the root filesystem stays read-only.
        volume_mounts: Some(vec![VolumeMount {
            name: XTABLES_LOCK_VOLUME.into(),
            mount_path: "/run".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn proxy_container(cfg: &InjectConfig, o: &Overrides, workload: &Workload) -> Container {
    // Later variables refer to earlier ones with $(NAME): the kubelet expands them.
    let mut labels = "namespace=$(SERIN_POD_NAMESPACE),pod=$(SERIN_POD_NAME)".to_string();
    let workload_name = match &workload.owner {
        Some((label, name)) => {
            labels.push_str(&format!(",{label}={name}"));
            name.clone()
        }
        None => "$(SERIN_POD_NAME)".to_string(),
    };
    labels.push_str(",pod_template_hash=$(SERIN_POD_TEMPLATE_HASH)");
    let mut env = vec![
        field_env("SERIN_POD_NAMESPACE", "metadata.namespace"),
        field_env("SERIN_POD_NAME", "metadata.name"),
        field_env(
            "SERIN_POD_TEMPLATE_HASH",
            "metadata.labels['pod-template-hash']",
        ),
        value_env("SERIN_PROXY_LABELS", labels),
        value_env(
            "SERIN_PROXY_WORKLOAD",
            format!("$(SERIN_POD_NAMESPACE)/{workload_name}"),
        ),
        value_env("SERIN_PROXY_CONTROL_PLANE", cfg.control_plane.clone()),
        value_env("SERIN_PROXY_TRANSPARENT", "true".into()),
        value_env(
            "SERIN_PROXY_OUTBOUND",
            format!("127.0.0.1:{}", cfg.outbound_port),
        ),
        value_env(
            "SERIN_PROXY_TRANSPARENT_INBOUND",
            format!("0.0.0.0:{}", cfg.inbound_port),
        ),
        value_env("SERIN_PROXY_ADMIN", format!("0.0.0.0:{}", cfg.admin_port)),
        value_env("RUST_LOG", o.log_level.clone()),
    ];
    if let Some(v) = &o.ipv6 {
        env.push(value_env("SERIN_PROXY_TRANSPARENT_IPV6", v.clone()));
    }
    for (var, v) in &o.timings {
        env.push(value_env(var, v.clone()));
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(cfg.admin_port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(2),
        failure_threshold: Some(30),
        ..Probe::default()
    };
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(cfg.proxy_image.clone()),
        // A native sidecar: starts before the app containers, stops after them.
        restart_policy: Some("Always".into()),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("serin-proxy".into()),
                container_port: i32::from(cfg.inbound_port),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("serin-admin".into()),
                container_port: i32::from(cfg.admin_port),
                ..ContainerPort::default()
            },
        ]),
        resources: Some(o.resources.clone()),
        // The kubelet starts the app only once the proxy is live.
        startup_probe: Some(probe("/live")),
        liveness_probe: Some(probe("/live")),
        security_context: Some(SecurityContext {
            run_as_user: Some(cfg.proxy_uid),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// What `serin inject` did to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `kind/name` of the resource (e.g. `deployment/web`).
    pub resource: String,
    /// None when injected, else why it was left alone.
    pub skipped: Option<Skip>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.skipped {
            None if self.resource.starts_with("namespace/") => write!(
                f,
                "{} annotated {INJECT}: enabled (pods created in it from now on are injected)",
                self.resource
            ),
            None => write!(f, "{} injected", self.resource),
            Some(Skip::OtherMesh) => write!(
                f,
                "{} skipped (other_mesh: it has or asks for Linkerd's or Istio's proxy; two meshes would capture its traffic twice)",
                self.resource
            ),
            Some(s) => write!(f, "{} skipped ({})", self.resource, s.label()),
        }
    }
}

/// Why manifests could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A YAML document does not parse.
    #[error("document {index}: not valid YAML: {message}")]
    Yaml {
        /// 1-based document number.
        index: usize,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A workload's pod template is not a valid pod.
    #[error("{resource}: the pod template is not a valid v1 PodTemplateSpec: {message}")]
    Template {
        /// `kind/name`.
        resource: String,
        /// Why.
        message: String,
    },
    /// A bad annotation on a workload.
    #[error("{resource}: {source}")]
    Inject {
        /// `kind/name`.
        resource: String,
        /// The annotation problem.
        #[source]
        source: InjectError,
    },
}

/// `serin inject` on a Namespace (as `linkerd inject` on one): opts it in with
/// `serin.dev/inject: enabled`, so the injector meshes the pods created in it from then on.
/// A namespace that says `disabled`, Serin's own and `kube-system` are left alone.
fn inject_namespace(
    mut doc: serde_json::Value,
    reports: &mut Vec<Report>,
) -> Result<serde_json::Value, ManifestError> {
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let resource = format!("namespace/{name}");
    let skipped = if name == SYSTEM_NAMESPACE || name == KUBE_SYSTEM {
        Some(Skip::SystemNamespace)
    } else {
        match doc["metadata"]["annotations"][INJECT].as_str() {
            Some("enabled") => Some(Skip::AlreadyInjected),
            Some("disabled") => Some(Skip::Disabled),
            Some(other) => {
                return Err(ManifestError::Inject {
                    resource,
                    source: InjectError::Annotation {
                        annotation: INJECT,
                        value: other.to_string(),
                        expected: "`enabled` or `disabled`",
                    },
                });
            }
            None => None,
        }
    };
    if skipped.is_none() {
        let not_a_map = |field: &str| ManifestError::Template {
            resource: resource.clone(),
            message: format!("{field} is not a map"),
        };
        let root = doc
            .as_object_mut()
            .ok_or_else(|| not_a_map("the document"))?;
        let meta = root
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if meta.is_null() {
            *meta = serde_json::json!({});
        }
        let meta = meta.as_object_mut().ok_or_else(|| not_a_map("metadata"))?;
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if annotations.is_null() {
            *annotations = serde_json::json!({});
        }
        annotations
            .as_object_mut()
            .ok_or_else(|| not_a_map("metadata.annotations"))?
            .insert(INJECT.into(), "enabled".into());
    }
    reports.push(Report { resource, skipped });
    Ok(doc)
}

/// Where a kind keeps its pod template (JSON pointer), for the kinds that have one.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        "Pod" => Some(""),
        _ => None,
    }
}

/// `serin inject` on YAML text (one or more documents): every Pod and pod template is injected
/// with the same function and patch as the webhook uses (without needing the opt-in
/// annotation, but honouring `disabled` and every other skip), and every Namespace opted in
/// (see [`inject_namespace`]). Other documents pass through.
pub fn inject_yaml(src: &str, cfg: &InjectConfig) -> Result<(String, Vec<Report>), ManifestError> {
    use serde::Deserialize as _;
    let mut out = String::new();
    let mut reports = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(src).enumerate() {
        let doc = serde_json::Value::deserialize(de).map_err(|e| ManifestError::Yaml {
            index: i + 1,
            message: e.to_string(),
        })?;
        if doc.is_null() {
            continue;
        }
        let doc = inject_value(doc, cfg, &mut reports)?;
        let text = serde_norway::to_string(&doc).map_err(|e| ManifestError::Yaml {
            index: i + 1,
            message: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok((out, reports))
}

fn inject_value(
    mut doc: serde_json::Value,
    cfg: &InjectConfig,
    reports: &mut Vec<Report>,
) -> Result<serde_json::Value, ManifestError> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(|i| i.as_array_mut()) {
            for item in items.iter_mut() {
                *item = inject_value(item.take(), cfg, reports)?;
            }
        }
        return Ok(doc);
    }
    if kind == "Namespace" {
        return inject_namespace(doc, reports);
    }
    let Some(pointer) = template_pointer(&kind) else {
        return Ok(doc);
    };
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let resource = format!("{}/{name}", kind.to_ascii_lowercase());
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let Some(template) = doc.pointer_mut(pointer) else {
        return Ok(doc);
    };
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": template.get("metadata").cloned().unwrap_or_default(),
        "spec": template.get("spec").cloned().unwrap_or_default(),
    }))
    .map_err(|e| ManifestError::Template {
        resource: resource.clone(),
        message: e.to_string(),
    })?;
    // A workload's template has no owner yet: the workload itself is the owner (a bare Pod's
    // is read from its own metadata).
    let workload = match workload_label(&kind) {
        Some(_) => Workload::named(&kind, &name),
        None => Workload::of_pod(&pod.metadata),
    };
    let decision =
        inject(&pod, &namespace, &BTreeMap::new(), &workload, cfg, true).map_err(|source| {
            ManifestError::Inject {
                resource: resource.clone(),
                source,
            }
        })?;
    match decision {
        Decision::Skipped(skip) => reports.push(Report {
            resource,
            skipped: Some(skip),
        }),
        Decision::Injected(after) => {
            // The webhook's patch, applied to the template as it was written.
            let patch =
                crate::admission::patch(&pod, &after).map_err(|e| ManifestError::Template {
                    resource: resource.clone(),
                    message: e.to_string(),
                })?;
            if template.get("metadata").is_none_or(|m| m.is_null()) {
                template["metadata"] = serde_json::json!({});
            }
            json_patch::patch(template, &patch).map_err(|e| ManifestError::Template {
                resource: resource.clone(),
                message: e.to_string(),
            })?;
            reports.push(Report {
                resource,
                skipped: None,
            });
        }
    }
    Ok(doc)
}
