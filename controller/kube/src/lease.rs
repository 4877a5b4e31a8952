//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas never drive the same
//! Canary. Optimistic concurrency does the locking: every write carries the resourceVersion that
//! was read, so of two replicas racing for an expired lease exactly one wins (the other gets 409).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use serin_core::Timestamp;

use super::kube_error;
use serin_controller::adapters::AdapterError;

/// Where the lease lives and how long it lasts.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name (`serin-controller`).
    pub name: String,
    /// Lease namespace (the controller's own).
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    /// How often the holder renews: a third of the duration.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// One replica's view of the election.
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_millisecond(t.as_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn millis(t: &MicroTime) -> i64 {
    t.0.as_millisecond()
}

impl LeaderElection {
    /// An election over `config`'s Lease.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self { api, config }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Acquires the lease if it is free or expired, renews it if held; `Ok(true)` when this
    /// replica leads after the call. Losing a race is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, AdapterError> {
        let name = &self.config.name;
        let what = || format!("lease {}/{name}", self.config.namespace);
        let secs = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| kube_error(e, what()))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(micro(now)),
                    renew_time: Some(micro(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(kube_error(e, what())),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(secs)) * 1000;
        let expired = spec
            .renew_time
            .as_ref()
            .map(|t| millis(t) + duration_ms < now.as_millis())
            .unwrap_or(true);
        if !mine && !expired && spec.holder_identity.is_some() {
            return Ok(false);
        }
        let mut new = spec.clone();
        new.renew_time = Some(micro(now));
        new.lease_duration_seconds = Some(secs);
        if !mine {
            new.holder_identity = Some(self.config.identity.clone());
            new.acquire_time = Some(micro(now));
            new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new);
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(kube_error(e, what())),
        }
    }
}
