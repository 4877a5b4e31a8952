//! Kubernetes scenarios in the controller-rs style: a `kube::Client` over a `tower_test` mock
//! (`serin_kube::testing`). Each scenario lists every API call the controller must make —
//! method, path, and what the body must say — and answers it as the API server would. A missing
//! call, an extra call or a call in the wrong order fails the test; every scenario is bounded by
//! a timeout.
//!
//! One module per topic; the cluster's objects and the expected calls are built in `fixtures`.
//! (rbac.rs runs these again in a child process to check the install's RBAC rules against the
//! calls.)

mod fixtures;

mod analysis;
mod awkward;
mod bootstrap;
mod commands;
mod deletion;
mod errors;
mod leases;
mod notifications;
mod primary_copies;
mod progress;
mod scale;
mod smi;
mod stale_reads;
mod unknown_fields;
mod unreadable_state;
mod validation;
mod watched_reads;
mod watches;
mod webhooks;
