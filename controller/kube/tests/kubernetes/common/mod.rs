//! Shared fixtures of the Kubernetes integration tests (the mocked API server itself is
//! `serin_kube::testing`).

#![allow(dead_code)]

pub use serin_controller::testing::receiver;
