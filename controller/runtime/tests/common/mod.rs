//! Shared fixtures of the runtime's integration tests.

#![allow(dead_code)]

pub mod kube;
pub mod receiver;
