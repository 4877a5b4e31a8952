//! Serin on one machine, for demos and tests: the podinfo-like sample app, the open-loop load
//! generator (also a Flagger load-tester compatible webhook runner), the orchestration behind
//! `serin demo`, and the engine walkthrough behind `serin walkthrough` ([`walkthrough`]: the real
//! engine of serin-core played against its simulated runtime, `serin_core::sim`).
//!
//! This crate is not the controller, the proxy or the control plane: `serin demo`
//! ([`orchestrate`]) runs their libraries side by side on loopback listeners, talking to each
//! other over HTTP as the separate binaries do, and the sample app as child processes of the
//! controller's supervisor. What the demo shows and expects, without I/O, is in [`scenario`].

pub mod duration;
pub mod error;
pub mod load;
pub mod loadtester;
pub mod orchestrate;
pub mod sample_app;
pub mod scenario;
pub mod server;
pub mod walkthrough;

pub use error::DemoError;
