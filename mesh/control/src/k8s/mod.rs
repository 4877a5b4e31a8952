//! Kubernetes: the object types Serin reads and writes, and the watch-based source.

pub mod source;
pub mod types;
