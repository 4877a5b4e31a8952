//! The Kubernetes source (`--kubernetes`): reflectors over HTTPRoutes, TrafficSplits, Services,
//! EndpointSlices, ReferenceGrants and pods' metadata (for the endpoints' `dst_pod`,
//! `dst_pod_template_hash` and workload labels) in every namespace; each batch of watch events rebuilds the changed kinds
//! in the state, and HTTPRoute status is written back (`Accepted`, `ResolvedRefs` per Service
//! parent, under controller name [`CONTROLLER_NAME`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::hub::Hub;
use crate::state::RouteKind;
use crate::translate::route_verdicts;
use crate::world::{EndpointMeta, EndpointSet, ObjKey, PodIdentity, ServiceInfo, slice_service};
use serin_mesh_api::objects::{
    CONTROLLER_NAME, HttpRoute, ReferenceGrant, RouteParentStatus, TrafficSplit, TrafficSplitSpec,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Routes,
    Splits,
    Services,
    Slices,
    Grants,
    Pods,
}

const KINDS: [Kind; 6] = [
    Kind::Routes,
    Kind::Splits,
    Kind::Services,
    Kind::Slices,
    Kind::Grants,
    Kind::Pods,
];

struct Stores {
    routes: Store<HttpRoute>,
    /// TrafficSplits at whichever SMI version the cluster serves (see [`split_events`]).
    splits: Store<DynamicObject>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    grants: Store<ReferenceGrant>,
    pods: Store<PartialObjectMeta<Pod>>,
}

/// What one watch event told us.
enum Seen {
    /// The store changed (or finished a relist).
    Changed { synced: bool },
    /// The watch failed (it retries with backoff). `missing` when the list answered 404: the
    /// kind's CRD is not installed (e.g. no SMI in this cluster).
    Failed { error: String, missing: bool },
}

/// SMI TrafficSplit versions, newest first. Clusters serve different ones (linkerd-smi:
/// v1alpha1 and v1alpha2; OSM and the SMI spec's own CRD: up to v1alpha4); every one has
/// `service` and `backends[{service, weight}]`, which is all Serin reads.
const SPLIT_VERSIONS: [&str; 4] = ["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"];

fn split_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("split.smi-spec.io", version, "TrafficSplit"),
        "trafficsplits",
    )
}

type SplitEvents = BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>>;

/// Watch events of TrafficSplits at the newest version the API server serves: a version whose
/// list answers 404 hands over to the next older one. When none is served, the last 404 is
/// passed on (the caller then treats the kind as empty) and the next poll, after the caller's
/// backoff, starts again from the newest, so installing the CRD later works.
fn split_events(client: Client) -> SplitEvents {
    let watch = |client: &Client, version: &str| -> SplitEvents {
        let api = Api::<DynamicObject>::all_with(client.clone(), &split_resource(version));
        watcher(api, watcher::Config::default()).boxed()
    };
    futures::stream::unfold(
        (client, 0usize, None::<SplitEvents>),
        move |(client, mut version, mut current)| async move {
            loop {
                let mut stream = current
                    .take()
                    .unwrap_or_else(|| watch(&client, SPLIT_VERSIONS[version]));
                match stream.next().await {
                    Some(Err(e)) if not_served(&e) => {
                        version += 1;
                        if version == SPLIT_VERSIONS.len() {
                            return Some((Err(e), (client, 0, None)));
                        }
                        tracing::debug!(
                            version = SPLIT_VERSIONS[version],
                            "TrafficSplit version not served; trying an older one"
                        );
                    }
                    Some(item) => return Some((item, (client, version, Some(stream)))),
                    // A watcher does not end; if one did, start it again.
                    None => {}
                }
            }
        },
    )
    .boxed()
}

/// The list answered 404: the kind (at this version) is not served.
fn not_served(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.is_not_found())
}

/// A TrafficSplit read at any SMI version, as Serin's [`TrafficSplit`]; None (reported) when
/// its spec has none of the shapes Serin reads.
fn split_from_dynamic(hub: &Hub, obj: &DynamicObject) -> Option<TrafficSplit> {
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    match serde_json::from_value::<TrafficSplitSpec>(spec) {
        Ok(spec) => Some(TrafficSplit {
            metadata: obj.metadata.clone(),
            spec,
        }),
        Err(e) => {
            tracing::warn!(split = %ObjKey::of(obj), error = %e, "TrafficSplit spec not readable; ignored");
            hub.metrics.error("trafficsplit", "Invalid");
            None
        }
    }
}

fn seen<K>(ev: Result<watcher::Event<K>, watcher::Error>) -> Seen {
    match ev {
        Ok(watcher::Event::InitDone) => Seen::Changed { synced: true },
        Ok(_) => Seen::Changed { synced: false },
        Err(e) => {
            let missing = not_served(&e);
            Seen::Failed {
                error: e.to_string(),
                missing,
            }
        }
    }
}

/// Watches until the process stops. Watch failures are logged, counted and retried with
/// backoff; the last state stays published meanwhile.
pub async fn run(client: Client, hub: Arc<Hub>) {
    let (routes, routes_w) = reflector::store::<HttpRoute>();
    let splits_w =
        reflector::store::Writer::<DynamicObject>::new(split_resource(SPLIT_VERSIONS[0]));
    let splits = splits_w.as_reader();
    let (services, services_w) = reflector::store::<Service>();
    let (slices, slices_w) = reflector::store::<EndpointSlice>();
    let (grants, grants_w) = reflector::store::<ReferenceGrant>();
    // Metadata only: the labels and owners are all an endpoint's labels need. A pod's status
    // changes come through too, but change nothing the state keeps, so they publish nothing.
    let (pods, pods_w) = reflector::store::<PartialObjectMeta<Pod>>();
    let cfg = watcher::Config::default;
    let streams = vec![
        reflector::reflector(
            routes_w,
            watcher(Api::<HttpRoute>::all(client.clone()), cfg()),
        )
        .default_backoff()
        .map(|e| (Kind::Routes, seen(e)))
        .boxed(),
        reflector::reflector(splits_w, split_events(client.clone()))
            .default_backoff()
            .map(|e| (Kind::Splits, seen(e)))
            .boxed(),
        reflector::reflector(
            services_w,
            watcher(Api::<Service>::all(client.clone()), cfg()),
        )
        .default_backoff()
        .map(|e| (Kind::Services, seen(e)))
        .boxed(),
        reflector::reflector(
            slices_w,
            watcher(Api::<EndpointSlice>::all(client.clone()), cfg()),
        )
        .default_backoff()
        .map(|e| (Kind::Slices, seen(e)))
        .boxed(),
        reflector::reflector(
            grants_w,
            watcher(Api::<ReferenceGrant>::all(client.clone()), cfg()),
        )
        .default_backoff()
        .map(|e| (Kind::Grants, seen(e)))
        .boxed(),
        reflector::reflector(
            pods_w,
            watcher(Api::<PartialObjectMeta<Pod>>::all(client.clone()), cfg()),
        )
        .default_backoff()
        .map(|e| (Kind::Pods, seen(e)))
        .boxed(),
    ];
    let stores = Stores {
        routes,
        splits,
        services,
        slices,
        grants,
        pods,
    };
    let mut events = futures::stream::select_all(streams);
    let mut synced = BTreeMap::new();
    let mut written: BTreeMap<ObjKey, Vec<RouteParentStatus>> = BTreeMap::new();
    while let Some(first) = events.next().await {
        let received = Instant::now();
        let mut dirty = Vec::new();
        let mut batch = vec![first];
        // Coalesce whatever else is already queued into one snapshot.
        while let Some(Some(more)) = events.next().now_or_never() {
            batch.push(more);
        }
        for (kind, s) in batch {
            match s {
                Seen::Changed { synced: done } => {
                    if done {
                        synced.insert(kind, true);
                    }
                    if !dirty.contains(&kind) {
                        dirty.push(kind);
                    }
                }
                Seen::Failed { error, missing } => {
                    if missing && !synced.contains_key(&kind) {
                        // A cluster without this CRD simply has none of these objects; waiting
                        // for it would keep every proxy without routes. The watch keeps
                        // retrying, so installing the CRD later works.
                        tracing::warn!(?kind, error = %error, "resource not served by the API server (CRD not installed?); treating it as empty");
                        synced.insert(kind, true);
                        if !dirty.contains(&kind) {
                            dirty.push(kind);
                        }
                    } else {
                        tracing::warn!(?kind, error = %error, "watch failed; retrying with backoff");
                    }
                    hub.metrics
                        .error("watch", if missing { "NotFound" } else { "Api" });
                }
            }
        }
        // Publish only once every kind has listed once, so proxies never see a half-built
        // table (e.g. routes without their Services).
        if KINDS.iter().all(|k| synced.contains_key(k)) {
            rebuild(&hub, &stores, received);
            if !hub.is_ready() {
                tracing::info!("every watch synced; serving route tables");
                hub.set_ready();
            }
            write_statuses(&client, &hub, &stores, &mut written).await;
        }
    }
}

fn rebuild(hub: &Hub, stores: &Stores, received: Instant) {
    let services: BTreeMap<ObjKey, ServiceInfo> = stores
        .services
        .state()
        .iter()
        .map(|s| (ObjKey::of(s.as_ref()), ServiceInfo::from_k8s(s)))
        .collect();
    let pods: BTreeMap<ObjKey, PodIdentity> = stores
        .pods
        .state()
        .iter()
        .map(|p| (ObjKey::of(p.as_ref()), PodIdentity::from_meta(&p.metadata)))
        .collect();
    let mut meta = EndpointMeta::default();
    let mut endpoints: BTreeMap<ObjKey, BTreeMap<String, EndpointSet>> = BTreeMap::new();
    for slice in stores.slices.state() {
        meta.add_slice(&slice, &pods);
        if let Some(svc) = slice_service(&slice) {
            endpoints.entry(svc).or_default().insert(
                slice.metadata.name.clone().unwrap_or_default(),
                EndpointSet::from_slice(&slice),
            );
        }
    }
    let routes: Vec<HttpRoute> = stores
        .routes
        .state()
        .iter()
        .map(|r| (**r).clone())
        .collect();
    let splits: Vec<TrafficSplit> = stores
        .splits
        .state()
        .iter()
        .filter_map(|s| split_from_dynamic(hub, s))
        .collect();
    let grants = stores
        .grants
        .state()
        .iter()
        .map(|g| (ObjKey::of(g.as_ref()), g.spec.clone()))
        .collect();
    hub.update(received, |state| {
        state.set_services(services);
        state.set_endpoints(endpoints);
        state.set_endpoint_meta(meta);
        state.set_grants(grants);
        state.set_routes(routes);
        state.set_splits(splits);
    });
}

/// Our `status.parents` entries for every HTTPRoute, written when they differ from what the
/// object carries (ignoring transition times, so a status write does not cause another).
async fn write_statuses(
    client: &Client,
    hub: &Hub,
    stores: &Stores,
    written: &mut BTreeMap<ObjKey, Vec<RouteParentStatus>>,
) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let wanted: Vec<(ObjKey, Arc<HttpRoute>, Vec<RouteParentStatus>)> = hub.with_state(|state| {
        stores
            .routes
            .state()
            .into_iter()
            .map(|route| {
                let key = ObjKey::of(route.as_ref());
                let problems = state.problems(RouteKind::HttpRoute, &key);
                let generation = route.metadata.generation;
                let ours = route_verdicts(state.world(), &route, problems)
                    .into_iter()
                    .map(|v| {
                        let cond =
                            |type_: &str, (ok, reason, message): (bool, &str, String)| Condition {
                                type_: type_.into(),
                                status: if ok { "True" } else { "False" }.into(),
                                reason: reason.into(),
                                message,
                                observed_generation: generation,
                                last_transition_time: now.clone(),
                            };
                        RouteParentStatus {
                            parent_ref: v.parent_ref,
                            controller_name: CONTROLLER_NAME.into(),
                            conditions: vec![
                                cond("Accepted", v.accepted),
                                cond("ResolvedRefs", v.resolved_refs),
                            ],
                        }
                    })
                    .collect();
                (key, route, ours)
            })
            .collect()
    });
    written.retain(|k, _| wanted.iter().any(|(key, _, _)| key == k));
    for (key, route, ours) in wanted {
        let current: Vec<RouteParentStatus> = route
            .status
            .as_ref()
            .map(|s| s.parents.clone())
            .unwrap_or_default();
        let current_ours: Vec<&RouteParentStatus> = current
            .iter()
            .filter(|p| p.controller_name == CONTROLLER_NAME)
            .collect();
        if same_ignoring_time(&current_ours, &ours.iter().collect::<Vec<_>>())
            || written.get(&key).is_some_and(|w| {
                same_ignoring_time(
                    &w.iter().collect::<Vec<_>>(),
                    &ours.iter().collect::<Vec<_>>(),
                )
            })
        {
            continue;
        }
        // Keep a condition's transition time when its status did not change.
        let mut ours = ours;
        for p in &mut ours {
            if let Some(old) = current_ours.iter().find(|o| o.parent_ref == p.parent_ref) {
                for c in &mut p.conditions {
                    if let Some(oc) = old.conditions.iter().find(|oc| oc.type_ == c.type_)
                        && oc.status == c.status
                    {
                        c.last_transition_time = oc.last_transition_time.clone();
                    }
                }
            }
        }
        // status.parents is an atomic list: send other controllers' entries back unchanged.
        let mut parents: Vec<RouteParentStatus> = current
            .into_iter()
            .filter(|p| p.controller_name != CONTROLLER_NAME)
            .collect();
        parents.extend(ours.iter().cloned());
        // The list is replaced whole, so the write is conditional on the version it was
        // built from: an entry another controller (Linkerd's policy controller writes the
        // same routes' status) added meanwhile is not wiped out. On a conflict the newer
        // version arrives through the watch and is written from then.
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": route.metadata.resource_version },
            "status": { "parents": parents },
        });
        let api: Api<HttpRoute> = Api::namespaced(client.clone(), &key.namespace);
        match api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                written.insert(key, ours);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(route = %key, "HTTPRoute changed meanwhile; its status is written from the newer version");
                hub.metrics.error("status", "Conflict");
            }
            Err(e) => {
                tracing::warn!(route = %key, error = %e, "cannot write HTTPRoute status");
                hub.metrics.error("status", "Api");
            }
        }
    }
}

fn same_ignoring_time(a: &[&RouteParentStatus], b: &[&RouteParentStatus]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.parent_ref == y.parent_ref
                && x.conditions.len() == y.conditions.len()
                && x.conditions.iter().zip(&y.conditions).all(|(c, d)| {
                    c.type_ == d.type_
                        && c.status == d.status
                        && c.reason == d.reason
                        && c.message == d.message
                        && c.observed_generation == d.observed_generation
                })
        })
}
