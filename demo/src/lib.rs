//! Serin on one machine, for demos and tests: the podinfo-like sample app, the open-loop load
//! generator (also a Flagger load-tester compatible webhook runner), and the orchestration behind
//! `serin demo`.
//!
//! This crate is not the controller, the proxy or the control plane: it runs them as child
//! processes (the `serin` and `serin-proxy` binaries) and talks to them over loopback HTTP, the
//! way a person on one machine would.

pub mod duration;
pub mod error;
pub mod load;
pub mod loadtester;
pub mod sample_app;
pub mod server;

pub use error::DemoError;
