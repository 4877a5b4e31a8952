//! `serin-kube`: everything Serin knows about Kubernetes. The controller ([`run_controller`]) is
//! a kube-rs `Controller` on Canaries that also watches what it owns (primary Deployments and
//! DaemonSets, Services) and the targets themselves (a new revision is acted on at once, see
//! [`watch`]), ticks each Canary at its analysis interval through the platform-neutral `Driver`
//! of `serin-controller`, and writes status with server-side apply. The reconcile is shaped as
//! controller-rs's: a prepare step, then apply or cleanup ([`reconcile`]), with the driver and its
//! adapters built once in the shared [`Context`] ([`adapters`]). The CLI's cluster client
//! ([`source`]) and the dashboard's store over a cluster ([`dashboard`]) live here too.
//!
//! State lives only in the Canary's status, so a restarted controller resumes mid-rollout.
//!
//! Not here: rollout decisions (`serin-core`), the adapter traits and the driver
//! (`serin-controller`), anything one-machine (`serin-local`).

pub mod adapters;
pub mod admission;
pub mod analysis;
pub mod check;
pub mod config_watch;
mod context;
mod controller;
pub mod dashboard;
pub mod inject;
pub mod injector;
pub mod install;
mod lease;
pub mod notify;
mod reconcile;
pub mod route_watch;
pub mod routing;
mod run;
pub mod services;
pub mod source;
pub mod status;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod throttle;
pub mod uninjected;
pub mod uninstall;
pub mod watch;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serin_api::Canary;
use serin_core::Timestamp;

pub use context::Context;
pub use controller::{
    MAX_CONCURRENT_RECONCILES, STORES_READY_WAIT, backoff, error_policy, run_controller,
};
pub use lease::{LeaderElection, LeaseConfig};
pub use reconcile::{ReconcileError, reconcile, signing_keys};
use routing::ConvergenceProbe;
pub use run::{ControlPlaneProbe, KubernetesOptions, NoBackendAnalyzer, RunError, run, run_with};

use serin_controller::adapters::{AdapterError, Analyzer, ErrorKind};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "serin";
/// Finalizer that makes deletion wait for `revertOnDeletion`.
pub const FINALIZER: &str = "serin.dev/finalizer";

/// The controller's client: the inferred configuration (in a cluster its service account, else
/// the kubeconfig's context), with [`throttle::RetryAfterLayer`] on its stack so a failed call
/// keeps the API server's `Retry-After`.
pub async fn client() -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&throttle::RetryAfterLayer)
        .build())
}

/// Maps a kube error to an [`AdapterError`] with a stable kind.
pub fn kube_error(e: kube::Error, what: impl Into<String>) -> AdapterError {
    let kind = match &e {
        kube::Error::Api(s) => match s.code {
            409 => ErrorKind::Conflict,
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::Forbidden,
            408 | 504 => ErrorKind::Timeout,
            400 | 422 => ErrorKind::Invalid,
            _ => ErrorKind::Other,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    };
    let message = match &e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    };
    AdapterError::new(kind, what, message).with_source(e)
}

/// The controller owner reference to `canary` (garbage collection of what Serin creates).
pub fn owner_reference(canary: &Canary) -> OwnerReference {
    let mut o = canary.controller_owner_ref(&()).unwrap_or(OwnerReference {
        api_version: serin_api::API_VERSION.into(),
        kind: "Canary".into(),
        name: canary.name_any(),
        uid: canary.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    });
    o.block_owner_deletion = Some(true);
    o
}

/// A clock, so tests can pin time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::from_system_time(std::time::SystemTime::now()))
}

/// What the Kubernetes controller needs besides a client.
#[derive(Clone)]
pub struct KubeConfig {
    /// Provider for Canaries that set none (`serin`).
    pub default_provider: String,
    /// Metric checks and judge.
    pub analyzer: Arc<dyn Analyzer>,
    /// Asks Serin's control plane whether a weight is in force; `None` assumes it is.
    pub probe: Option<Arc<dyn ConvergenceProbe>>,
    /// Watch only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Name reported on Events.
    pub reporter: String,
    /// Pod name reported on Events and used as the Lease holder identity.
    pub instance: Option<String>,
    /// Time source.
    pub clock: Clock,
    /// Webhook retry backoff base.
    pub webhook_backoff: Duration,
}
