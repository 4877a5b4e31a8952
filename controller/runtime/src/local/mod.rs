//! The local platform: Serin on one machine, without Kubernetes.
//!
//! - [`manifest`]: `Process` and `Canary` manifests read from a directory.
//! - [`supervisor`]: runs primary and canary processes on loopback ports, probes and restarts
//!   them, drains them on stop, adopts them after a controller restart.
//! - [`store`]: status and history as atomically written JSON files.

pub mod analysis;
pub mod controller;
pub mod manifest;
pub mod platform;
pub mod router;
pub mod store;
pub mod supervisor;
