//! `serin-mesh-api`: the contract between `serin-proxy` and the control plane.
//!
//! It holds the route-table types ([`table`]) that the proxy reads from its static YAML file and
//! that the control plane streams, plus their validation. It is plain data: no I/O, no async, no
//! Kubernetes types, so both sides (and tests) can depend on it cheaply.

pub mod table;

/// Which workload a pod belongs to, as Linkerd's metric labels name it.
pub mod workload;

/// The control-plane ⇄ proxy stream: transport, framing, snapshots and acks.
pub mod protocol;

/// The proxy side of the stream (feature `client`; pulls tokio and hyper).
#[cfg(feature = "client")]
pub mod client;

/// The `process_*` gauges every Serin binary exports (feature `process`; reads `/proc`).
#[cfg(feature = "process")]
pub mod process;

pub use table::{
    Authority, Backend, BackendDef, HeaderValue, Match, Mirror, PathMatch, PathMatchType,
    ResponseHeaders, Route, RouteTable, Rule, ValidationError, ValidationErrors, ValueMatch,
    ValueMatchType,
};
