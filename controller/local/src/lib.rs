//! `serin-local`: Serin on one machine, without Kubernetes.
//!
//! - [`controller`]: the assembly `serin controller --local` runs (manifests -> supervisor,
//!   routes, analyzer, file store -> the platform-neutral driver of `serin-controller`).
//! - [`dashboard`]: the dashboard's store over the file store, and [`dashboard::run_controller`],
//!   the controller with its dashboard as the CLI starts it.
//! - [`manifest`]: `Process` and `Canary` manifests read from a directory.
//! - [`supervisor`]: runs primary and canary processes on loopback ports, probes and restarts
//!   them, drains them on stop, adopts them after a controller restart.
//! - [`store`]: status and history as atomically written JSON files.
//!
//! Not here: rollout decisions (`serin-core`), the adapter traits (`serin-controller`), anything
//! Kubernetes (`serin-kube`), the proxy and the control plane (reached over loopback HTTP).

pub mod analysis;
pub mod controller;
pub mod dashboard;
pub mod manifest;
pub mod platform;
pub mod router;
pub mod store;
pub mod supervisor;
