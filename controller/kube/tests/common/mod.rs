//! Shared fixtures of the Kubernetes integration tests.

#![allow(dead_code)]

pub mod api_log;
pub mod kube;
// Not every test binary uses the receiver.
#[allow(unused_imports)]
pub use serin_controller::testing::receiver;
