//! The driver's adapters on Kubernetes, built once per controller (in [`crate::Context`]) and
//! shared by every reconcile, as controller-rs keeps its client, recorder and metrics in its
//! context instead of making them per reconcile.
//!
//! What belongs to one Canary is not part of an adapter: the object as the prepare step read
//! it, its normalized spec, its routing provider, the runtime conditions its status carries and
//! the tick's time. The prepare step hands them over in [`Reconciling`] for the length of the
//! Canary's tick; each adapter call finds them by the Canary's id and works through that Canary's
//! view ([`KubeWorkloads`], [`KubeRouter`], [`KubeStore`], [`KubeEvents`]), a handful of `Arc`
//! clones. kube-runtime's `Controller` never reconciles one object twice at once, so one entry
//! per Canary is enough.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use kube::runtime::events::Recorder;
use kube::{Client, ResourceExt};
use serin_api::{Canary, Normalized};
use serin_core::{Command, EventType, HistoryEntry, Routes, Status, Timestamp};

use super::notify::KubeEvents;
use super::routing::{ConvergenceProbe, KubeRouter, Provider};
use super::status::{KubeStore, RuntimeCondition};
use super::watch::Stores;
use super::workloads::KubeWorkloads;
use serin_controller::adapters::{
    AdapterError, AnalysisState, CanaryContext, CanaryId, ErrorKind, EventRecorder, Router, Store,
    WorkloadState, Workloads,
};

/// What the prepare step read and decided for one Canary, for its tick.
pub struct Prepared {
    /// The Canary, the freshest copy known (see [`LastWrites`]).
    pub canary: Arc<Canary>,
    /// Its validated, normalized spec.
    pub spec: Arc<Normalized>,
    /// How its traffic is routed.
    pub provider: Provider,
    /// The runtime conditions written with its status (Valid, ProviderSupported, ...).
    pub runtime: Vec<RuntimeCondition>,
    /// The tick's time.
    pub now: Timestamp,
}

/// The Canaries being ticked right now, by id, with what their prepare step decided.
#[derive(Default)]
pub struct Reconciling(Mutex<HashMap<CanaryId, Arc<Prepared>>>);

/// A Canary's entry in [`Reconciling`], removed when this is dropped (the tick ended, failed or
/// was cancelled).
pub struct Ticking<'a> {
    reconciling: &'a Reconciling,
    id: CanaryId,
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.reconciling.0.lock() {
            m.remove(&self.id);
        }
    }
}

impl Reconciling {
    /// Hands `prepared` to the adapters for the tick of `id`.
    pub fn enter(&self, id: CanaryId, prepared: Arc<Prepared>) -> Ticking<'_> {
        if let Ok(mut m) = self.0.lock() {
            m.insert(id.clone(), prepared);
        }
        Ticking {
            reconciling: self,
            id,
        }
    }

    fn get(&self, id: &CanaryId) -> Result<Arc<Prepared>, AdapterError> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
            // Only the driver calls the adapters, and only within a tick the reconcile entered.
            .ok_or_else(|| {
                AdapterError::new(
                    ErrorKind::Other,
                    format!("canary {}/{}", id.namespace, id.name),
                    "an adapter was called outside the Canary's reconcile",
                )
            })
    }
}

/// The Canary as this controller's own last write returned it, per Canary.
///
/// The reflector's copy lags our writes: a requeue (or the watch event of an earlier write) can
/// hand the reconcile a Canary whose status is older than the one we wrote, and acting on it
/// would redo the step we just took (route, analysis, events, history). The reconcile therefore
/// works from whichever copy is newer. Resource versions are compared only when both are
/// integers, which is what every etcd-backed API server sends (they grow with every write);
/// otherwise the watched copy is taken, as before.
#[derive(Default)]
pub struct LastWrites(Mutex<HashMap<(String, String), Arc<Canary>>>);

fn resource_version(c: &Canary) -> Option<u64> {
    c.resource_version()?.parse().ok()
}

impl LastWrites {
    /// Remembers what a write of ours returned.
    pub fn record(&self, written: Canary) {
        let key = (written.namespace().unwrap_or_default(), written.name_any());
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, Arc::new(written));
        }
    }

    /// The newer of `seen` (the watch's copy) and our last write. Ours is forgotten once the
    /// watch caught up with it (or something else wrote after it).
    pub fn freshest(&self, seen: Arc<Canary>) -> Arc<Canary> {
        let key = (seen.namespace().unwrap_or_default(), seen.name_any());
        let Ok(mut m) = self.0.lock() else {
            return seen;
        };
        let Some(ours) = m.get(&key) else {
            return seen;
        };
        match (resource_version(&seen), resource_version(ours)) {
            (Some(s), Some(o)) if s < o && seen.uid() == ours.uid() => {
                tracing::debug!(
                    canary = %key.1, ns = %key.0, watched = s, written = o,
                    "the watch lags our last write; reconciling from what we wrote"
                );
                ours.clone()
            }
            _ => {
                m.remove(&key);
                seen
            }
        }
    }

    /// Forgets a Canary that is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&(namespace.to_string(), name.to_string()));
        }
    }
}

/// The Kubernetes side of the driver: workloads, routing, status and events, for every Canary.
pub struct KubeAdapters {
    client: Client,
    stores: OnceLock<Stores>,
    probe: Option<Arc<dyn ConvergenceProbe>>,
    recorder: Recorder,
    reconciling: Arc<Reconciling>,
    written: Arc<LastWrites>,
}

impl KubeAdapters {
    /// Adapters over `client`; they GET what they read until [`KubeAdapters::use_stores`].
    pub fn new(
        client: Client,
        probe: Option<Arc<dyn ConvergenceProbe>>,
        recorder: Recorder,
        reconciling: Arc<Reconciling>,
        written: Arc<LastWrites>,
    ) -> Self {
        Self {
            client,
            stores: OnceLock::new(),
            probe,
            recorder,
            reconciling,
            written,
        }
    }

    /// Reads what the controller's watches hold from `stores` instead of GETting it (set once,
    /// when the controller is assembled).
    pub fn use_stores(&self, stores: Stores) {
        if self.stores.set(stores).is_err() {
            tracing::warn!("the adapters already read from stores; the new ones are not used");
        }
    }

    fn prepared(&self, ctx: &CanaryContext) -> Result<Arc<Prepared>, AdapterError> {
        self.reconciling.get(&ctx.id)
    }

    fn workloads(&self, p: &Prepared) -> Arc<KubeWorkloads> {
        Arc::new(
            KubeWorkloads::new(self.client.clone(), p.canary.clone(), p.spec.clone())
                .with_stores(self.stores.get().cloned()),
        )
    }

    fn router(&self, p: &Prepared) -> KubeRouter {
        KubeRouter::new(
            self.client.clone(),
            p.canary.clone(),
            p.spec.clone(),
            p.provider.clone(),
            self.probe.clone(),
            self.workloads(p),
        )
        .with_routes(self.stores.get().map(|s| s.routes.clone()))
    }

    /// Puts back the Canary's route when someone else changed or deleted it (see
    /// [`crate::route_watch`]); says whether it did.
    pub async fn restore_route(&self, p: &Prepared) -> Result<bool, AdapterError> {
        let (Some(stores), Some(kind)) = (self.stores.get(), p.provider.route_kind()) else {
            return Ok(false);
        };
        let ns = p.canary.namespace().unwrap_or_default();
        let name = super::services::ServiceNames::new(&p.spec).apex;
        stores.routes.restore(&self.client, kind, &ns, &name).await
    }

    fn store(&self, p: &Prepared) -> KubeStore {
        KubeStore::new(
            self.client.clone(),
            p.canary.clone(),
            p.runtime.clone(),
            p.now,
        )
        .recording(self.written.clone())
    }
}

#[async_trait]
impl Workloads for KubeAdapters {
    async fn observe(&self, ctx: &CanaryContext) -> Result<WorkloadState, AdapterError> {
        self.workloads(&*self.prepared(ctx)?).observe(ctx).await
    }
    async fn initialize_primary(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        self.workloads(&p).initialize_primary(ctx).await
    }
    async fn scale_canary_to_zero(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        self.workloads(&p).scale_canary_to_zero(ctx).await
    }
    async fn scale_canary_up(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        self.workloads(&p).scale_canary_up(ctx).await
    }
    async fn promote(&self, ctx: &CanaryContext, revision: &str) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        self.workloads(&p).promote(ctx, revision).await
    }
    async fn revert(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        Workloads::revert(&*self.workloads(&p), ctx).await
    }
}

#[async_trait]
impl Router for KubeAdapters {
    async fn set_routes(&self, ctx: &CanaryContext, routes: &Routes) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        self.router(&p).set_routes(ctx, routes).await
    }
    async fn in_force(&self, ctx: &CanaryContext, routes: &Routes) -> Result<bool, AdapterError> {
        let p = self.prepared(ctx)?;
        self.router(&p).in_force(ctx, routes).await
    }
    async fn revert(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        Router::revert(&self.router(&p), ctx).await
    }
}

#[async_trait]
impl Store for KubeAdapters {
    async fn load(&self, id: &CanaryId) -> Result<Option<Status>, AdapterError> {
        let p = self.reconciling.get(id)?;
        self.store(&p).load(id).await
    }
    async fn save(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
    ) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        self.store(&p).save(ctx, status, history).await
    }
    async fn pending_commands(&self, id: &CanaryId) -> Result<Vec<Command>, AdapterError> {
        let p = self.reconciling.get(id)?;
        self.store(&p).pending_commands(id).await
    }
    async fn load_analysis(&self, id: &CanaryId) -> Result<Option<AnalysisState>, AdapterError> {
        let p = self.reconciling.get(id)?;
        self.store(&p).load_analysis(id).await
    }
    async fn save_with_analysis(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
        analysis: Option<&AnalysisState>,
    ) -> Result<(), AdapterError> {
        let p = self.prepared(ctx)?;
        self.store(&p)
            .save_with_analysis(ctx, status, history, analysis)
            .await
    }
    async fn save_if_changed(
        &self,
        ctx: &CanaryContext,
        status: &Status,
    ) -> Result<bool, AdapterError> {
        let p = self.prepared(ctx)?;
        self.store(&p).save_if_changed(ctx, status).await
    }
}

#[async_trait]
impl EventRecorder for KubeAdapters {
    async fn event(&self, ctx: &CanaryContext, kind: EventType, reason: &str, message: &str) {
        match self.prepared(ctx) {
            Ok(p) => {
                KubeEvents::new(self.recorder.clone(), p.canary.clone())
                    .event(ctx, kind, reason, message)
                    .await
            }
            Err(e) => tracing::warn!(error = %e, reason, "event not published"),
        }
    }
}
