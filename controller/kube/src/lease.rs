//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas never drive the same
//! Canary. Optimistic concurrency does the locking: every write carries the resourceVersion that
//! was read, so of two replicas racing for an expired lease exactly one wins (the other gets 409).
//!
//! Expiry is judged the way client-go judges it: not by comparing the holder's `renewTime` with
//! this replica's wall clock (with clock skew two replicas would lead at once), but by how long
//! this replica has watched the record stay unchanged on its own monotonic clock. A holder that
//! renews changes the record; one that stopped leaves it as it was for a whole lease duration.

use std::sync::Mutex;
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
    /// Lease namespace (the controller's own; empty: the client's default namespace).
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

    /// How long the holder keeps leading without a successful renewal: two thirds of the
    /// duration (client-go's 10s of 15s). A standby takes over only after watching the record
    /// unchanged for the whole duration, so the old leader has stopped by then.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// One replica's view of the election.
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The record as last read or written, and when (this replica's monotonic clock) it was
    /// first seen in that form.
    observed: Mutex<Option<Observed>>,
}

struct Observed {
    spec: LeaseSpec,
    at: tokio::time::Instant,
}

/// Whether a record names a holder (client-go releases a lease by emptying the identity).
fn held(spec: &LeaseSpec) -> bool {
    spec.holder_identity
        .as_deref()
        .is_some_and(|h| !h.is_empty())
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_millisecond(t.as_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

impl LeaderElection {
    /// An election over `config`'s Lease.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            observed: Mutex::new(None),
        }
    }

    /// Remembers `spec` as the record seen now, keeping the time of the first sighting while
    /// it stays the same; returns how long it has been unchanged.
    fn observe(&self, spec: &LeaseSpec) -> Duration {
        let now = tokio::time::Instant::now();
        let Ok(mut observed) = self.observed.lock() else {
            // A poisoned lock only means a panic elsewhere; judge the record as just seen.
            return Duration::ZERO;
        };
        match observed.as_ref() {
            Some(o) if o.spec == *spec => now.saturating_duration_since(o.at),
            _ => {
                *observed = Some(Observed {
                    spec: spec.clone(),
                    at: now,
                });
                Duration::ZERO
            }
        }
    }

    /// Forgets the record: the next read counts as a first sighting.
    fn forget(&self) {
        if let Ok(mut o) = self.observed.lock() {
            *o = None;
        }
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
                Ok(created) => {
                    self.observe(&created.spec.unwrap_or_default());
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(kube_error(e, what())),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(0),
        );
        let unchanged_for = self.observe(&spec);
        if !mine && held(&spec) && unchanged_for < duration {
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
            Ok(written) => {
                self.observe(&written.spec.unwrap_or_default());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.forget();
                Ok(false)
            }
            Err(e) => Err(kube_error(e, what())),
        }
    }

    /// Gives the lease up (on graceful shutdown) so a standby takes over at its next attempt
    /// instead of waiting a whole lease duration, as client-go's `ReleaseOnCancel` does: the
    /// holder is emptied and the duration set to one second. Does nothing when another replica
    /// holds the lease; `Ok(true)` when released.
    pub async fn release(&self, now: Timestamp) -> Result<bool, AdapterError> {
        let name = &self.config.name;
        let what = || format!("releasing lease {}/{name}", self.config.namespace);
        let Some(mut lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| kube_error(e, what()))?
        else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(micro(now)),
            renew_time: Some(micro(now)),
            ..spec
        });
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Someone wrote in between: it is not ours to release any more.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(kube_error(e, what())),
        }
    }
}
