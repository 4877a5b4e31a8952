//! serin-mesh-control's integration tests, one binary with a module per topic.

mod common;

mod e2e;
mod gateway;
mod kubernetes;
mod local;
mod stream;
mod translate;
