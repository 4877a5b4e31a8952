//! serin-kube's integration tests, one binary with a module per topic: the mocked-API scenarios
//! (`kube_scenarios`, `kube_leader_election`, `injector`), install, check, RBAC and the analyzers.

mod common;
mod kube_scenarios;

mod check;
// The control plane's mocked-API scenarios, for the RBAC check (rbac.rs).
#[path = "../../../../mesh/control/tests/control/kubernetes.rs"]
mod control_plane_kubernetes;
mod injector;
mod install;
mod kube_concurrency;
mod kube_leader_election;
mod metric_providers;
mod prometheus_analyzer;
mod rbac;
mod routing_and_admin;
mod uninstall;
