//! Shared fixtures of the Kubernetes integration tests.

#![allow(dead_code)]

pub mod api_log;
pub mod kube;
pub use serin_controller::testing::receiver;
