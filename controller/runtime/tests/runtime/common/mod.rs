//! Shared fixtures of the runtime's integration tests.

#![allow(dead_code)]

pub use serin_controller::testing::receiver;
