//! Serin's end-to-end tests, one binary with a module per topic (the shared local-site fixture is
//! this package's library, src/lib.rs).

mod dashboards;
mod local_judge;
mod local_platform;
mod session_affinity;
