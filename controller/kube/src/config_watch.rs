//! ConfigMaps and Secrets the controller reads (a target's tracked configs, webhook signing
//! keys), served without a GET per observation.
//!
//! Two metadata-only watches (no data, no managed fields: a few hundred bytes per object) tell
//! the current `resourceVersion` of every ConfigMap and Secret; the content is read with one GET
//! the first time and again only when the watch shows a new version. A full watch of Secrets and
//! ConfigMaps would hold every object's data (Helm releases, certificates, ...) in the
//! controller's memory; a GET per observation cost one request per tracked config and Canary
//! every interval. The content cache holds only what a Canary uses.
//!
//! A tracked config changing wakes the Canaries whose target references it, so the change is
//! analysed at once (as a new pod-template revision is) instead of at the next interval.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

type Cache<K> = Arc<Mutex<HashMap<(String, String), Arc<K>>>>;

/// The config watches' stores and the content read so far.
#[derive(Clone)]
pub struct ConfigWatch {
    configmaps: Store<PartialObjectMeta<ConfigMap>>,
    secrets: Store<PartialObjectMeta<Secret>>,
    configmap_data: Cache<ConfigMap>,
    secret_data: Cache<Secret>,
}

/// The writers of a [`ConfigWatch`]'s stores.
pub struct ConfigWriters {
    /// ConfigMaps (metadata).
    pub configmaps: reflector::store::Writer<PartialObjectMeta<ConfigMap>>,
    /// Secrets (metadata).
    pub secrets: reflector::store::Writer<PartialObjectMeta<Secret>>,
}

impl ConfigWatch {
    /// Empty stores and their writers.
    pub fn new() -> (Self, ConfigWriters) {
        let (configmaps, cw) = reflector::store();
        let (secrets, sw) = reflector::store();
        (
            Self {
                configmaps,
                secrets,
                configmap_data: Arc::default(),
                secret_data: Arc::default(),
            },
            ConfigWriters {
                configmaps: cw,
                secrets: sw,
            },
        )
    }

    /// The ConfigMap `ns/name` (`None`: it does not exist).
    pub async fn config_map(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<ConfigMap>>, kube::Error> {
        read(&self.configmaps, &self.configmap_data, client, ns, name).await
    }

    /// The Secret `ns/name` (`None`: it does not exist).
    pub async fn secret(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        read(&self.secrets, &self.secret_data, client, ns, name).await
    }

    /// Whether a ConfigMap a Canary read before is now at another version.
    pub fn config_map_changed(&self, meta: &PartialObjectMeta<ConfigMap>) -> bool {
        changed(&self.configmap_data, meta)
    }

    /// Whether a Secret a Canary read before is now at another version.
    pub fn secret_changed(&self, meta: &PartialObjectMeta<Secret>) -> bool {
        changed(&self.secret_data, meta)
    }
}

fn changed<K: Resource>(cache: &Cache<K>, meta: &PartialObjectMeta<K>) -> bool {
    let key = (meta.namespace().unwrap_or_default(), meta.name_any());
    cache
        .lock()
        .ok()
        .and_then(|m| m.get(&key).map(|k| k.resource_version()))
        .is_some_and(|read| read != meta.resource_version())
}

/// One object, from the cache while the watch shows the version read; a GET otherwise (and
/// always before the watch has listed).
async fn read<K>(
    store: &Store<PartialObjectMeta<K>>,
    cache: &Cache<K>,
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<Arc<K>>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let listed = store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok());
    if !listed {
        return Ok(api.get_opt(name).await?.map(Arc::new));
    }
    let key = (ns.to_string(), name.to_string());
    let Some(meta) = store.get(&ObjectRef::new(name).within(ns)) else {
        if let Ok(mut m) = cache.lock() {
            m.remove(&key);
        }
        return Ok(None);
    };
    let cached = cache.lock().ok().and_then(|m| m.get(&key).cloned());
    if let Some(c) = cached
        && c.resource_version() == meta.resource_version()
    {
        return Ok(Some(c));
    }
    let got = api.get_opt(name).await?.map(Arc::new);
    if let Ok(mut m) = cache.lock() {
        match &got {
            Some(o) => m.insert(key, o.clone()),
            None => m.remove(&key),
        };
    }
    Ok(got)
}
