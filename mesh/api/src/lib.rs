//! `serin-mesh-api`: the contract between `serin-proxy` and the control plane.
//!
//! It holds the route-table types ([`table`]) that the proxy reads from its static YAML file and
//! that the control plane streams, plus their validation; the control plane's status documents
//! ([`status`]); and, with feature `k8s`, the typed route objects ([`objects`]: the HTTPRoute
//! subset, TrafficSplit, ReferenceGrant, StaticEndpoints) that the canary controller writes and
//! the control plane reads. It is plain data: no I/O, no async, and no Kubernetes types unless
//! `k8s` is on, so the proxy (which never enables it) and tests can depend on it cheaply.

pub mod table;

/// Which workload a pod belongs to, as Linkerd's metric labels name it.
pub mod workload;

/// The control plane's status documents (route convergence, subscribed proxies).
pub mod status;

#[cfg(feature = "k8s")]
pub mod objects;

/// The control-plane ⇄ proxy stream: transport, framing, snapshots and acks.
pub mod protocol;

/// The proxy side of the stream (feature `client`; pulls tokio and hyper).
#[cfg(feature = "client")]
pub mod client;

/// The `process_*` gauges every Serin binary exports (feature `process`; reads `/proc`).
#[cfg(feature = "process")]
pub mod process;

pub use table::{
    Authority, Backend, BackendDef, Fraction, HeaderValue, Match, Mirror, PathChange,
    PathChangeType, PathMatch, PathMatchType, Redirect, RequestHeaders, ResponseHeaders, Route,
    RouteTable, Rule, ValidationError, ValidationErrors, ValueMatch, ValueMatchType,
};
