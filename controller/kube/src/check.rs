//! `serin check`: is Serin installed and working in this cluster (as `linkerd check`)? Each
//! check asks the API server one question and answers ✔ or ✘ with a hint saying what to do.
//! `--pre` runs the checks that make sense before `serin install`; `--proxy` adds the data
//! plane's (as `linkerd check --proxy`): every meshed pod's proxy ready and connected to the
//! control plane, and no proxy refusing a route table.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde::Serialize;
use serin_core::Timestamp;

use crate::inject::{INIT_CONTAINER, PROXY_CONTAINER, is_injected};
use crate::install::{
    self, CONTROL_PLANE, CONTROLLER, ComponentRules, INJECTOR, INJECTOR_TLS_SECRET,
    INJECTOR_WEBHOOK,
};

/// The oldest Kubernetes the proxy's native sidecars run on.
pub const MIN_KUBERNETES: (u32, u32) = (1, 29);

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Serin's namespace.
    pub namespace: String,
    /// Only the checks that make sense before an install.
    pub pre: bool,
    /// The data plane's checks too: the meshed pods' proxies.
    pub proxy: bool,
}

/// One check's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// What was checked (stable, one line).
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub message: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Outcome {
    fn pass(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: true,
            message: message.into(),
            hint: None,
        }
    }

    fn fail(check: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: false,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// `✔ check: message` or `✘ check: message (hint: …)`, one line.
    pub fn line(&self) -> String {
        match &self.hint {
            Some(h) if !self.ok => format!("✘ {}: {} (hint: {h})", self.check, self.message),
            _ => format!(
                "{} {}: {}",
                if self.ok { "✔" } else { "✘" },
                self.check,
                self.message
            ),
        }
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.message.is_empty() => format!("{} ({})", s.reason, s.code),
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// Runs every check in order; `now` judges the Lease's freshness.
pub async fn run(client: &Client, opts: &CheckOptions, now: Timestamp) -> Vec<Outcome> {
    let mut out = vec![];
    let reachable = version(client, &mut out).await;
    if !reachable {
        return out;
    }
    if opts.pre {
        pre_permissions(client, &mut out).await;
        return out;
    }
    let ns = opts.namespace.as_str();
    crds(client, &mut out).await;
    for (component, rules) in [
        (CONTROLLER, install::controller_rules()),
        (CONTROL_PLANE, install::control_plane_rules()),
        (INJECTOR, install::injector_rules()),
    ] {
        out.push(rbac(client, ns, component, &rules).await);
    }
    for component in [CONTROLLER, CONTROL_PLANE, INJECTOR] {
        out.push(available(client, ns, component).await);
    }
    out.push(leader(client, ns, now).await);
    out.push(webhook(client, ns, now).await);
    let (outcome, status) = proxies(client, ns).await;
    out.push(outcome);
    out.push(metrics_server(client, ns).await);
    if opts.proxy {
        data_plane(client, ns, status.as_ref(), &mut out).await;
    }
    out
}

async fn version(client: &Client, out: &mut Vec<Outcome>) -> bool {
    let check = "Kubernetes API reachable";
    let info = match client.apiserver_version().await {
        Ok(i) => i,
        Err(e) => {
            out.push(Outcome::fail(
                check,
                api_message(&e),
                "check the kubeconfig context (kubectl cluster-info)",
            ));
            return false;
        }
    };
    out.push(Outcome::pass(check, info.git_version.clone()));
    let check = "Kubernetes version";
    let digits = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    match (digits(&info.major), digits(&info.minor)) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_KUBERNETES => out.push(Outcome::pass(
            check,
            format!(
                "{major}.{minor} (at least {}.{})",
                MIN_KUBERNETES.0, MIN_KUBERNETES.1
            ),
        )),
        (Some(major), Some(minor)) => out.push(Outcome::fail(
            check,
            format!(
                "{major}.{minor} is older than {}.{}",
                MIN_KUBERNETES.0, MIN_KUBERNETES.1
            ),
            "upgrade the cluster: the sidecar runs as a native sidecar (Kubernetes 1.29+)",
        )),
        _ => out.push(Outcome::fail(
            check,
            format!("unreadable version {:?}.{:?}", info.major, info.minor),
            "check that the API server is a Kubernetes API server",
        )),
    }
    true
}

/// Before an install: can the current user create what `serin install` creates?
async fn pre_permissions(client: &Client, out: &mut Vec<Outcome>) {
    let kinds = [
        ("", "namespaces", "Namespaces"),
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinitions",
        ),
        ("rbac.authorization.k8s.io", "clusterroles", "ClusterRoles"),
        (
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "ClusterRoleBindings",
        ),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfigurations",
        ),
    ];
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for (group, resource, what) in kinds {
        let check = format!("can create {what}");
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    verb: Some("create".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        out.push(match api.create(&PostParams::default(), &review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {
                Outcome::pass(check, "allowed")
            }
            Ok(_) => Outcome::fail(
                check,
                "denied",
                "run the install as a cluster administrator",
            ),
            Err(e) => Outcome::fail(check, api_message(&e), "check the kubeconfig credentials"),
        });
    }
}

async fn crds(client: &Client, out: &mut Vec<Outcome>) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for want in serin_api::crds() {
        let name = want.metadata.name.clone().unwrap_or_default();
        let check = format!("CRD {name}");
        let hint = "serin install --crds-only | kubectl apply -f -";
        let got = match api.get_opt(&name).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                out.push(Outcome::fail(check, "not installed", hint));
                continue;
            }
            Err(e) => {
                out.push(Outcome::fail(
                    check,
                    api_message(&e),
                    "check the kubeconfig credentials",
                ));
                continue;
            }
        };
        let versions = |c: &CustomResourceDefinition| -> Vec<(String, Option<serde_json::Value>)> {
            c.spec
                .versions
                .iter()
                .map(|v| {
                    (
                        v.name.clone(),
                        v.schema.as_ref().and_then(|s| serde_json::to_value(s).ok()),
                    )
                })
                .collect()
        };
        let names: Vec<String> = want.spec.versions.iter().map(|v| v.name.clone()).collect();
        out.push(if versions(&got) == versions(&want) {
            Outcome::pass(
                check,
                format!("{} as this binary expects", names.join(", ")),
            )
        } else {
            Outcome::fail(
                check,
                "installed with a different version or schema than this binary expects",
                hint,
            )
        });
    }
}

/// One question of a component's RBAC check: what it asks (`verb group/resource[/sub] [name]`)
/// and the SubjectAccessReview that asks it.
#[derive(Debug, Clone)]
pub struct Ask {
    /// How a denial is named in the check's message.
    pub what: String,
    /// The review sent to the API server.
    pub review: SubjectAccessReview,
}

/// Every grant of `rules` as SubjectAccessReviews for `component`'s ServiceAccount in `ns`: one
/// per group, resource, verb and, for a rule limited to `resourceNames`, per name (a grant of
/// one name says nothing about another).
pub fn rbac_asks(ns: &str, component: &str, rules: &ComponentRules) -> Vec<Ask> {
    let user = format!("system:serviceaccount:{ns}:{component}");
    let mut asks = Vec::new();
    let scoped = rules
        .cluster
        .iter()
        .map(|r| (r, None))
        .chain(rules.namespaced.iter().map(|r| (r, Some(ns))));
    for (rule, namespace) in scoped {
        let names: Vec<Option<&String>> = match rule.resource_names.as_deref() {
            Some(names) if !names.is_empty() => names.iter().map(Some).collect(),
            _ => vec![None],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let (resource, sub) = match resource.split_once('/') {
                    Some((r, s)) => (r, Some(s.to_string())),
                    None => (resource.as_str(), None),
                };
                for verb in &rule.verbs {
                    for name in &names {
                        let review = SubjectAccessReview {
                            spec: SubjectAccessReviewSpec {
                                user: Some(user.clone()),
                                groups: Some(vec![
                                    "system:serviceaccounts".into(),
                                    format!("system:serviceaccounts:{ns}"),
                                    "system:authenticated".into(),
                                ]),
                                resource_attributes: Some(ResourceAttributes {
                                    group: Some(group.clone()),
                                    resource: Some(resource.into()),
                                    subresource: sub.clone(),
                                    verb: Some(verb.clone()),
                                    namespace: namespace.map(String::from),
                                    name: name.cloned(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        let what = format!(
                            "{verb} {}/{resource}{}{}",
                            if group.is_empty() { "core" } else { group },
                            sub.as_ref().map(|s| format!("/{s}")).unwrap_or_default(),
                            name.map(|n| format!(" {n}")).unwrap_or_default()
                        );
                        asks.push(Ask { what, review });
                    }
                }
            }
        }
    }
    asks
}

/// Every grant of the component's rules, asked for its ServiceAccount with a
/// SubjectAccessReview (what impersonating it with a SelfSubjectAccessReview would answer).
pub async fn rbac(client: &Client, ns: &str, component: &str, rules: &ComponentRules) -> Outcome {
    let check = format!("{component} RBAC");
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut denied = BTreeSet::new();
    for ask in rbac_asks(ns, component, rules) {
        match api.create(&PostParams::default(), &ask.review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => {
                denied.insert(ask.what);
            }
            Err(e) => {
                return Outcome::fail(
                    check,
                    format!("cannot ask the API server: {}", api_message(&e)),
                    "serin check needs permission to create subjectaccessreviews",
                );
            }
        }
    }
    if denied.is_empty() {
        Outcome::pass(check, "every rule the component needs is granted")
    } else {
        Outcome::fail(
            check,
            format!(
                "denied: {}",
                denied.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "serin install --skip-crds | kubectl apply -f -   (restores the roles and bindings)",
        )
    }
}

async fn available(client: &Client, ns: &str, component: &str) -> Outcome {
    let check = format!("{component} Deployment available");
    let hint = format!("kubectl -n {ns} describe deployment {component}");
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    match api.get_opt(component).await {
        Ok(Some(d)) => {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            if ready >= want && want > 0 {
                Outcome::pass(check, format!("{ready}/{want} replicas available"))
            } else {
                Outcome::fail(check, format!("{ready}/{want} replicas available"), hint)
            }
        }
        Ok(None) => Outcome::fail(check, "not found", "serin install | kubectl apply -f -"),
        Err(e) => Outcome::fail(check, api_message(&e), hint),
    }
}

async fn leader(client: &Client, ns: &str, now: Timestamp) -> Outcome {
    let check = "one controller leading";
    let hint = format!("kubectl -n {ns} logs deployment/{CONTROLLER}");
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    let lease = match api.get_opt(CONTROLLER).await {
        Ok(Some(l)) => l,
        Ok(None) => return Outcome::fail(check, format!("no Lease {ns}/{CONTROLLER}"), hint),
        Err(e) => return Outcome::fail(check, api_message(&e), hint),
    };
    let spec = lease.spec.unwrap_or_default();
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Outcome::fail(check, "the Lease has no holder", hint);
    };
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
    let renewed = spec.renew_time.map(|t| t.0.as_millisecond());
    match renewed {
        // A reading across machines: allow one more lease duration for clock skew.
        Some(r) if now.as_millis() - r <= 2 * duration_ms => {
            Outcome::pass(check, format!("{holder} holds the Lease"))
        }
        _ => Outcome::fail(
            check,
            format!("the Lease held by {holder} is not being renewed"),
            hint,
        ),
    }
}

async fn webhook(client: &Client, ns: &str, now: Timestamp) -> Outcome {
    let check = "injector webhook and its CA bundle";
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = match api.get_opt(INJECTOR).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Outcome::fail(
                check,
                format!("no MutatingWebhookConfiguration {INJECTOR}"),
                "serin install | kubectl apply -f -",
            );
        }
        Err(e) => return Outcome::fail(check, api_message(&e), "check the kubeconfig credentials"),
    };
    let bundle = config
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .find(|w| w.name == INJECTOR_WEBHOOK)
        .and_then(|w| w.client_config.ca_bundle)
        .map(|b| b.0)
        .unwrap_or_default();
    let hint = format!(
        "the injector writes both at start: kubectl -n {ns} rollout restart deployment/{INJECTOR}"
    );
    if bundle.is_empty() {
        return Outcome::fail(check, "the webhook has no CA bundle yet", hint);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut data = match secrets.get_opt(INJECTOR_TLS_SECRET).await {
        Ok(Some(s)) => s.data.unwrap_or_default(),
        Ok(None) => Default::default(),
        Err(e) => return Outcome::fail(check, api_message(&e), hint),
    };
    match data.remove("ca.crt").map(|b| b.0) {
        Some(ca) if ca == bundle => {}
        Some(_) => {
            return Outcome::fail(
                check,
                format!("the CA bundle does not match Secret {INJECTOR_TLS_SECRET}'s ca.crt"),
                hint,
            );
        }
        None => {
            return Outcome::fail(
                check,
                format!("Secret {ns}/{INJECTOR_TLS_SECRET} (ca.crt) not found"),
                hint,
            );
        }
    }
    let cert = String::from_utf8_lossy(&data.remove("tls.crt").map(|b| b.0).unwrap_or_default())
        .into_owned();
    match certificate_expiry(&cert, now) {
        Ok(until) => Outcome::pass(
            check,
            format!("present; CA bundle matches the serving certificate, valid until {until}"),
        ),
        Err(message) => Outcome::fail(check, message, hint),
    }
}

/// Whether the injector's serving certificate (`tls.crt`) is current at `now`: readable, not
/// expired, and renewed on time. The injector renews it with a third of its lifetime left,
/// looking every hour; a certificate past that point by more than two hours means no replica
/// is renewing it, and once it expires the API server cannot call the webhook, so every pod
/// is created without the proxy (the failure policy is `Ignore`). Ok: the expiry, as RFC 3339.
fn certificate_expiry(cert_pem: &str, now: Timestamp) -> Result<String, String> {
    let (from, until) = crate::injector::validity(cert_pem)
        .map_err(|e| format!("Secret {INJECTOR_TLS_SECRET}: {e}"))?;
    let now = jiff::Timestamp::from_millisecond(now.as_millis())
        .map_err(|e| format!("the clock is out of range: {e}"))?;
    let until_text = until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    if now >= until {
        return Err(format!(
            "the serving certificate expired at {until_text}: the API server cannot call the injector, and pods are created without the proxy"
        ));
    }
    // The certificate is issued a day before its start (clock skew), not part of its lifetime.
    let lifetime = from.duration_until(until) - jiff::SignedDuration::from_hours(24);
    let renew_at = until - lifetime / 3;
    if now > renew_at + jiff::SignedDuration::from_hours(2) {
        return Err(format!(
            "the serving certificate expires at {until_text} and was not renewed (due since {}): no injector replica is renewing it",
            renew_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    Ok(until_text)
}

/// GET through the API server's service proxy.
async fn via_service(
    client: &Client,
    ns: &str,
    service: &str,
    path: &str,
) -> Result<String, String> {
    let uri = format!("/api/v1/namespaces/{ns}/services/{service}/proxy{path}");
    let req = http::Request::get(uri)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client.request_text(req).await.map_err(|e| api_message(&e))
}

/// The control plane's status document (also returned for the data plane's checks, when
/// readable and ready).
async fn proxies(client: &Client, ns: &str) -> (Outcome, Option<serde_json::Value>) {
    let check = "proxies connected to the control plane";
    let hint = format!("kubectl -n {ns} logs deployment/{CONTROL_PLANE}");
    let service = format!("{CONTROL_PLANE}:http");
    let text = match via_service(client, ns, &service, "/v1/status").await {
        Ok(t) => t,
        Err(e) => {
            return (
                Outcome::fail(check, format!("control plane unreachable: {e}"), hint),
                None,
            );
        }
    };
    let status: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return (
                Outcome::fail(check, format!("unreadable status: {e}"), hint),
                None,
            );
        }
    };
    if status["ready"] != true {
        return (
            Outcome::fail(
                check,
                "the control plane has not read the cluster's routes yet",
                hint,
            ),
            None,
        );
    }
    // The Service answered from one replica, which knows only its own proxies: with several
    // replicas (--ha) each is asked. When the replicas cannot be listed, the Service's count
    // is all there is, and the message says whose it is.
    let message = match replica_proxies(client, ns).await {
        Ok(r) if r.asked > 1 && r.unread.is_empty() => format!(
            "{} proxies connected to {} replicas",
            r.proxies.len(),
            r.asked
        ),
        Ok(r) if !r.unread.is_empty() => {
            return (
                Outcome::fail(
                    check,
                    format!(
                        "{} of {} control-plane replicas did not answer: {}",
                        r.unread.len(),
                        r.asked,
                        first_names(&r.unread)
                    ),
                    hint,
                ),
                Some(status),
            );
        }
        Ok(_) => format!(
            "{} proxies connected",
            status["proxies"].as_array().map_or(0, Vec::len)
        ),
        Err(e) => format!(
            "{} proxies connected to the replica the Service answered from (the replicas could not be listed: {e})",
            status["proxies"].as_array().map_or(0, Vec::len)
        ),
    };
    (Outcome::pass(check, message), Some(status))
}

/// How many objects a failure names (the count is always given).
const NAMED: usize = 10;

/// The first few of `names`, and how many more: a message names what it is about without
/// growing with the cluster.
pub(crate) fn first_names(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Every pod of the cluster that runs serin-proxy, read page by page. A pod whose phase is
/// terminal (`Succeeded` or `Failed`: a meshed Job's pod that ran to the end) runs no container
/// any more, so no proxy: it is not counted, as `linkerd check --proxy` skips completed pods.
pub(crate) async fn meshed_pods(client: &Client) -> Result<Vec<Pod>, kube::Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut pods = Vec::new();
    let mut lp = ListParams::default().limit(500);
    let ended = |p: &Pod| {
        matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    };
    loop {
        let page = api.list(&lp).await?;
        pods.extend(
            page.items
                .into_iter()
                .filter(|p| is_injected(p) && !ended(p)),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(pods),
        }
    }
}

/// Whether the pod's serin-proxy container (a native sidecar, so among the init containers'
/// statuses; a proxy added as a plain container is among the others) reports ready.
fn proxy_ready(pod: &Pod) -> bool {
    let Some(st) = pod.status.as_ref() else {
        return false;
    };
    st.phase.as_deref() == Some("Running")
        && st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER && c.ready)
}

/// The proxies subscribed to any control-plane replica, and the replicas that did not answer
/// (`pod: why`). Each proxy streams from the one replica its connection was balanced to, and a
/// replica's status lists only its own: with `--ha` or `--control-plane-replicas`, the
/// Service's answer (one replica's) would leave the others' proxies out, so each Running
/// replica is asked through its pod.
async fn replica_proxies(client: &Client, ns: &str) -> Result<ReplicaProxies, String> {
    let selector = install::selector_labels(CONTROL_PLANE)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let replicas = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_message(&e))?;
    let mut proxies = Vec::new();
    let mut unread = Vec::new();
    let mut asked = 0;
    for pod in replicas
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    {
        asked += 1;
        let name = pod.name_any();
        let path = format!(
            "/api/v1/namespaces/{ns}/pods/{name}:{}/proxy/v1/status",
            install::CONTROL_PLANE_PORT
        );
        let req = match http::Request::get(path).body(Vec::new()) {
            Ok(r) => r,
            Err(e) => {
                unread.push(format!("{name}: {e}"));
                continue;
            }
        };
        match client.request_text(req).await {
            Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(status) => {
                    proxies.extend(status["proxies"].as_array().cloned().unwrap_or_default())
                }
                Err(e) => unread.push(format!("{name}: unreadable status: {e}")),
            },
            Err(e) => unread.push(format!("{name}: {}", api_message(&e))),
        }
    }
    Ok(ReplicaProxies {
        proxies,
        unread,
        asked,
    })
}

/// What [`replica_proxies`] found.
struct ReplicaProxies {
    /// Every replica's subscribed proxies, joined.
    proxies: Vec<serde_json::Value>,
    /// Replicas that did not answer (`pod: why`).
    unread: Vec<String>,
    /// Running replicas asked.
    asked: usize,
}

/// `linkerd check --proxy`'s questions for Serin's data plane: are the meshed pods' proxies
/// ready, is each connected to the control plane, and has any refused a route table?
async fn data_plane(
    client: &Client,
    ns: &str,
    status: Option<&serde_json::Value>,
    out: &mut Vec<Outcome>,
) {
    let ready_check = "meshed pods' proxies ready";
    let connected_check = "meshed pods connected to the control plane";
    let tables_check = "route tables accepted by every proxy";
    let pods = match meshed_pods(client).await {
        Ok(p) => p,
        Err(e) => {
            out.push(Outcome::fail(
                ready_check,
                format!("listing pods in every namespace: {}", api_message(&e)),
                "serin check --proxy reads every pod: run it as a user who may list pods cluster-wide",
            ));
            return;
        }
    };
    let name = |p: &Pod| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
    let (ready, not_ready): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| proxy_ready(p));
    if not_ready.is_empty() {
        out.push(Outcome::pass(
            ready_check,
            format!("{} meshed pods, every proxy ready", pods.len()),
        ));
    } else {
        let names: Vec<String> = not_ready.iter().map(|p| name(p)).collect();
        out.push(Outcome::fail(
            ready_check,
            format!(
                "{} of {} meshed pods have no ready proxy: {}",
                names.len(),
                pods.len(),
                first_names(&names)
            ),
            format!("kubectl -n NAMESPACE describe pod POD (the {PROXY_CONTAINER} and {INIT_CONTAINER} containers), and kubectl -n NAMESPACE logs POD -c {PROXY_CONTAINER}"),
        ));
    }
    if status.is_none() {
        out.push(Outcome::fail(
            connected_check,
            "the control plane's status is not readable (see above)",
            format!("kubectl -n {ns} logs deployment/{CONTROL_PLANE}"),
        ));
        return;
    }
    let ReplicaProxies {
        proxies, unread, ..
    } = match replica_proxies(client, ns).await {
        Ok(found) => found,
        Err(e) => {
            out.push(Outcome::fail(
                connected_check,
                format!("listing the control plane's pods in {ns}: {e}"),
                "serin check --proxy asks each control-plane replica for its proxies: run it as a user who may list pods in Serin's namespace",
            ));
            return;
        }
    };
    // A proxy's id is its pod's name, then `-<pid>-<n>` (serin_mesh_api::client::
    // default_proxy_id), and its workload starts with the pod's namespace (both from the
    // injected environment: SERIN_POD_NAME, SERIN_PROXY_WORKLOAD). The suffix is checked
    // whole: pod `web-1-backup`'s proxy must not stand in for pod `web-1`'s.
    let of_pod = |id: &str, pod: &str| {
        id.strip_prefix(pod)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, n)| {
                [pid, n]
                    .iter()
                    .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    let connected = |p: &Pod| {
        let (pod_ns, pod) = (p.namespace().unwrap_or_default(), p.name_any());
        proxies.iter().any(|x| {
            x["id"].as_str().is_some_and(|id| of_pod(id, &pod))
                && x["workload"]
                    .as_str()
                    .is_some_and(|w| w.starts_with(&format!("{pod_ns}/")))
        })
    };
    let unconnected: Vec<String> = ready
        .iter()
        .filter(|p| !connected(p))
        .map(|p| name(p))
        .collect();
    if unconnected.is_empty() {
        out.push(Outcome::pass(
            connected_check,
            format!("{} ready proxies, each connected", ready.len()),
        ));
    } else {
        out.push(Outcome::fail(
            connected_check,
            format!(
                "{} of {} ready proxies are not connected: {}{}",
                unconnected.len(),
                ready.len(),
                first_names(&unconnected),
                match unread.len() {
                    0 => String::new(),
                    1 => format!(" (control-plane replica not read: {})", unread[0]),
                    _ => format!(
                        " (control-plane replicas not read: {})",
                        first_names(&unread)
                    ),
                }
            ),
            format!("kubectl -n NAMESPACE logs POD -c {PROXY_CONTAINER} says why it cannot reach {CONTROL_PLANE}.{ns}"),
        ));
    }
    let rejected: Vec<String> = proxies
        .iter()
        .filter_map(|x| {
            let r = x["rejected"].as_array()?;
            let version = r.first().and_then(|v| v.as_u64()).unwrap_or_default();
            // A refusal the proxy has since moved past (it applied a later table) is history.
            if x["appliedVersion"].as_u64().unwrap_or_default() > version {
                return None;
            }
            Some(format!(
                "{} ({}) refused version {}: {}",
                x["id"].as_str().unwrap_or("?"),
                x["workload"].as_str().unwrap_or("?"),
                version,
                r.get(1).and_then(|v| v.as_str()).unwrap_or_default()
            ))
        })
        .collect();
    if rejected.is_empty() {
        out.push(Outcome::pass(
            tables_check,
            "no proxy refused a route table",
        ));
    } else {
        out.push(Outcome::fail(
            tables_check,
            format!(
                "{} refused a route table: {}",
                if rejected.len() == 1 {
                    "1 proxy".to_string()
                } else {
                    format!("{} proxies", rejected.len())
                },
                first_names(&rejected)
            ),
            format!("a refused table is a control-plane defect (the proxy keeps its last good one): kubectl -n {ns} logs deployment/{CONTROL_PLANE}, and report it"),
        ));
    }
}

async fn metrics_server(client: &Client, ns: &str) -> Outcome {
    let check = "metrics server reachable";
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let url = api.get_opt(CONTROLLER).await.ok().flatten().and_then(|d| {
        d.spec?.template.spec?.containers.into_iter().find_map(|c| {
            c.env?
                .into_iter()
                .find(|e| e.name == "SERIN_METRICS_SERVER")
                .and_then(|e| e.value)
        })
    });
    let Some(url) = url else {
        return Outcome::pass(
            check,
            "none configured (Canaries name their own metricsServer)",
        );
    };
    let hint = "serin install --metrics-server URL: the Prometheus Service's in-cluster address";
    // http://NAME.NAMESPACE[.svc…]:PORT, reached through the API server's service proxy.
    let rest = url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let host_port = rest.split('/').next().unwrap_or_default();
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "80"));
    let mut parts = host.split('.');
    let (Some(svc), Some(svc_ns)) = (parts.next(), parts.next()) else {
        return Outcome::fail(
            check,
            format!("{url}: not a Service address (NAME.NAMESPACE:PORT)"),
            hint,
        );
    };
    let scheme = if url.starts_with("https://") {
        "https:"
    } else {
        ""
    };
    match via_service(client, svc_ns, &format!("{scheme}{svc}:{port}"), "/-/ready").await {
        Ok(_) => Outcome::pass(check, format!("{url} is ready")),
        Err(e) => Outcome::fail(check, format!("{url}: {e}"), hint),
    }
}
