//! Pure translation: [`World`] (Services, endpoints, HTTPRoutes, TrafficSplits) → the
//! [`RouteTable`] a proxy in a given namespace enforces, plus what is wrong with each object.
//!
//! Semantics (Gateway API GAMMA mesh mode, where it speaks):
//! - Every Service gets a route for each of its authorities: `name` (only for clients in the same
//!   namespace, as DNS search paths do), `name.ns`, `name.ns.svc`, `name.ns.svc.<cluster domain>`
//!   and each cluster IP; without an HTTPRoute or TrafficSplit it sends everything to itself.
//! - HTTPRoutes whose `parentRefs` name a Service replace that default. Several routes attached to
//!   one Service are merged; rules are ordered by Gateway API precedence (exact path, longest
//!   prefix, method, most header matches, most query matches, then oldest route, then name, then
//!   rule order). A route in another namespace than its Service (a consumer route) applies only to
//!   clients in the route's namespace and, for them, takes precedence over producer routes.
//! - A TrafficSplit applies to its apex Service unless an HTTPRoute is attached to that Service
//!   (the split is then reported as conflicting); of two splits for one apex the older wins.
//! - An HTTPRoute backend whose Service is missing or out of the route's reach (no
//!   ReferenceGrant) gets no endpoints and is marked invalid: the proxy answers 500 for its share
//!   of requests, as Gateway API requires. A backend without ready endpoints, or a TrafficSplit
//!   backend whose Service is missing (SMI says nothing of invalid backends), gets no endpoints:
//!   503.
//! - An object that is invalid on its own (see [`check_route`], [`check_split`]) never reaches
//!   this module: the state keeps its last valid version (see [`crate::state`]).

mod check;
mod status;
mod table;

pub use check::{check_route, check_split, is_fatal};
use status::ordered_splits;
pub use status::{
    ParentVerdict, route_reference_problems, route_verdicts, split_conflicts,
    split_reference_problems,
};
pub use table::{endpoints_of, translate};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serin_mesh_api::table::{
    Authority, Backend, BackendDef, Fraction, HeaderValue, Match, Mirror, PathChange,
    PathChangeType, PathMatch, PathMatchType, REDIRECT_STATUS_CODES, Redirect, ResponseHeaders,
    Route, RouteTable, Rule, ValueMatch, ValueMatchType, framing_header_problem, parse_duration,
    path_change_problem, redirect_hostname_problem, request_header_problem,
};

use crate::world::{ObjKey, ServiceInfo, ServicePort, World};
use serin_mesh_api::objects::{
    HttpBackendRef, HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, ParentReference,
    TrafficSplit,
};

/// Translation options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Something wrong with an object, as reported in logs, metrics and HTTPRoute status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Path of the offending field, e.g. `spec.rules[0].filters[1].type`.
    pub field: String,
    /// Gateway API condition reason (`UnsupportedValue`, `BackendNotFound`, ...), also the
    /// low-cardinality `reason` label of the error metric.
    pub reason: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// Why a backendRef or mirror target is not a kind Serin can send to (Gateway API's
/// `InvalidKind`): backends must be core Services. Not a problem of the route itself: the
/// route is accepted and the reference's share of requests is answered 500.
fn unsupported_kind(group: Option<&str>, kind: Option<&str>) -> Option<String> {
    let (group, kind) = (group.unwrap_or(""), kind.unwrap_or("Service"));
    (!group.is_empty() || kind != "Service")
        .then(|| format!("{group}/{kind} is not supported; backends must be core Services"))
}

impl Problem {
    fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }
}

impl Problem {
    /// The problem as the status API reports it.
    pub fn into_status(self) -> serin_mesh_api::status::RouteProblem {
        serin_mesh_api::status::RouteProblem {
            field: self.field,
            reason: self.reason.to_string(),
            message: self.message,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.reason)
    }
}
