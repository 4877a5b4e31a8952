//! `serin-controller`: the controller runtime. Each tick of each Canary it observes the world
//! through adapter traits, asks the pure engine (`serin-core`) what to do, and carries out the
//! resulting actions through the same adapters. The platforms implement the adapters in their
//! own crates: `serin-kube` (Kubernetes) and `serin-local` (one machine).
//!
//! It is not the engine (no rollout decisions are made here) and not the CRD definitions
//! (`serin-api`); it is the I/O edge around them.

pub mod adapters;
pub mod alerts;
pub mod dashboard;
pub mod deliveries;
pub mod driver;
pub mod hooks;
pub mod http;
pub mod measure;
pub mod metrics;
pub mod plan;
pub mod sample;
pub mod webhook;

#[cfg(feature = "test-support")]
pub mod testing;
