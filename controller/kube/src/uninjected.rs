//! What the injector watches: every Namespace (a reflector, so an admission review reads the
//! namespace's `serin.dev/inject` from memory instead of a GET per pod) and the metadata of
//! every running pod not on the host network, to count the pods that opted in but run without
//! the proxy (`serin_injector_uninjected_pods`).
//!
//! Such pods exist because the webhook's failure policy is `Ignore`: while the injector is
//! down, pods are admitted unchanged rather than blocked. Pods created before their namespace
//! opted in show up here too. Both are fixed by restarting the workload.
//!
//! The count is [`count`], a pure function of the two caches; the watch loop only feeds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store, reflector, store};
use kube::runtime::{WatchStreamExt as _, watcher};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::admission::{NamespaceAnnotations, NamespaceLabels};
use crate::inject;
use crate::injector::ApiNamespaces;

/// Pods that can never carry the proxy or have stopped are left out by the API server: the
/// node's network is never captured, and a finished pod's containers are gone.
pub const POD_FIELDS: &str = "spec.hostNetwork=false,status.phase!=Succeeded,status.phase!=Failed";

/// How long changes are gathered before the gauge is computed again (each computation walks
/// every cached pod).
const SETTLE: Duration = Duration::from_millis(250);

/// Namespace annotations from the reflector's cache; a namespace the cache does not hold yet
/// (created a moment ago, or the cache still loading) is read from the API server.
#[derive(Clone)]
pub struct NamespaceCache {
    store: Store<Namespace>,
    client: Client,
}

#[async_trait::async_trait]
impl NamespaceAnnotations for NamespaceCache {
    async fn annotations(&self, namespace: &str) -> Result<BTreeMap<String, String>, String> {
        match self.store.get(&ObjectRef::new(namespace)) {
            Some(ns) => Ok(ns.metadata.annotations.clone().unwrap_or_default()),
            None => {
                ApiNamespaces(self.client.clone())
                    .annotations(namespace)
                    .await
            }
        }
    }
}

/// Pods without the proxy that would be injected now, by namespace. Every namespace that opted
/// in is listed (0 when all its pods carry the proxy), so a dashboard shows it before it drifts.
pub fn count<'a>(
    namespaces: impl IntoIterator<Item = &'a ObjectMeta>,
    pods: impl IntoIterator<Item = &'a ObjectMeta>,
) -> BTreeMap<String, i64> {
    let annotations: BTreeMap<&str, BTreeMap<String, String>> = namespaces
        .into_iter()
        .filter_map(|m| {
            Some((
                m.name.as_deref()?,
                m.annotations.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let mut out: BTreeMap<String, i64> = annotations
        .iter()
        .filter(|(name, a)| {
            **name != inject::SYSTEM_NAMESPACE
                && **name != inject::KUBE_SYSTEM
                && a.get(inject::INJECT).map(String::as_str) == Some("enabled")
        })
        .map(|(name, _)| (name.to_string(), 0))
        .collect();
    let none = BTreeMap::new();
    for meta in pods {
        let Some(ns) = meta.namespace.as_deref() else {
            continue;
        };
        // Metadata is all the watch carries: the injected marker annotation says whether the
        // proxy is there, and host-network pods were left out by the field selector.
        let pod = Pod {
            metadata: meta.clone(),
            ..Pod::default()
        };
        let ns_annotations = annotations.get(ns).unwrap_or(&none);
        // A bad annotation is denied at admission; a pod carrying one was never opted in.
        if let Ok(None) = inject::wanted(&pod, ns, ns_annotations) {
            *out.entry(ns.to_string()).or_default() += 1;
        }
    }
    out
}

/// Starts nothing by itself: returns the Namespace cache for the admission path and the
/// future that keeps it and `gauge` (by namespace) up to date. The future runs until dropped;
/// watch errors are logged and retried with backoff.
pub fn watch(
    client: Client,
    gauge: Family<NamespaceLabels, Gauge>,
) -> (NamespaceCache, impl Future<Output = ()> + Send) {
    let (ns_store, ns_writer) = store::<Namespace>();
    let (pod_store, pod_writer) = store::<PartialObjectMeta<Pod>>();
    let cache = NamespaceCache {
        store: ns_store.clone(),
        client: client.clone(),
    };
    let namespaces = reflector(
        ns_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|e| matches!(e, watcher::Event::InitDone)));
    let pods = reflector(
        pod_writer,
        watcher(
            Api::<PartialObjectMeta<Pod>>::all(client),
            watcher::Config::default().fields(POD_FIELDS),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|e| matches!(e, watcher::Event::InitDone)));
    let run = async move {
        let mut namespaces = std::pin::pin!(namespaces);
        let mut pods = std::pin::pin!(pods);
        let (mut ns_ready, mut pods_ready, mut dirty) = (false, false, false);
        let mut settle = tokio::time::interval(SETTLE);
        settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(e) = namespaces.next() => match e {
                    Ok(done) => { ns_ready |= done; dirty = true; }
                    Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                },
                Some(e) = pods.next() => match e {
                    Ok(done) => { pods_ready |= done; dirty = true; }
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                },
                _ = settle.tick() => {
                    // Not before both caches have loaded: a half-loaded cache would report
                    // numbers that are simply wrong.
                    if dirty && ns_ready && pods_ready {
                        dirty = false;
                        publish(&gauge, &ns_store.state(), &pod_store.state());
                    }
                }
            }
        }
    };
    (cache, run)
}

fn publish(
    gauge: &Family<NamespaceLabels, Gauge>,
    namespaces: &[Arc<Namespace>],
    pods: &[Arc<PartialObjectMeta<Pod>>],
) {
    let counts = count(
        namespaces.iter().map(|n| &n.metadata),
        pods.iter().map(|p| &p.metadata),
    );
    // Namespaces that stopped opting in (or were deleted) disappear from the series.
    gauge.clear();
    for (namespace, n) in counts {
        if n > 0 {
            tracing::warn!(ns = %namespace, pods = n, "opted-in pods run without the proxy");
        }
        gauge.get_or_create(&NamespaceLabels { namespace }).set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: Option<&str>, name: &str, annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(str::to_string),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn opted_in_pods_without_the_proxy_are_counted_per_namespace() {
        let namespaces = [
            meta(None, "shop", &[(inject::INJECT, "enabled")]),
            meta(None, "plain", &[]),
            meta(None, "serin-system", &[(inject::INJECT, "enabled")]),
            meta(None, "quiet", &[(inject::INJECT, "enabled")]),
        ];
        let pods = [
            meta(Some("shop"), "injected", &[(inject::INJECTED, "img")]),
            meta(Some("shop"), "missed", &[]),
            meta(Some("shop"), "opted-out", &[(inject::INJECT, "disabled")]),
            meta(Some("shop"), "bad-annotation", &[(inject::INJECT, "yes")]),
            meta(Some("plain"), "not-opted-in", &[]),
            meta(
                Some("plain"),
                "opted-in-alone",
                &[(inject::INJECT, "enabled")],
            ),
            meta(Some("serin-system"), "controller", &[]),
            meta(Some("quiet"), "injected", &[(inject::INJECTED, "img")]),
        ];
        let got = count(namespaces.iter(), pods.iter());
        assert_eq!(
            got,
            BTreeMap::from([
                ("shop".to_string(), 1),
                ("plain".to_string(), 1),
                ("quiet".to_string(), 0),
            ])
        );
    }
}
