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
//! - `site` (feature `site`): the one assembly of a local site on loopback (control plane,
//!   proxy, controller, dashboard) that `serin demo`, the CLI's tests and the end-to-end tests
//!   start.
//!
//! Not here: rollout decisions (`serin-core`), the adapter traits (`serin-controller`), anything
//! Kubernetes (`serin-kube`), the proxy and the control plane (reached over loopback HTTP).

pub mod analysis;
pub mod controller;
pub mod dashboard;
pub mod manifest;
pub mod platform;
pub mod router;
#[cfg(feature = "site")]
pub mod site;
pub mod store;
pub mod supervisor;
