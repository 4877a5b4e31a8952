//! Serin's web dashboard and the JSON API behind it.
//!
//! - [`model`]: the stable JSON types served under `/api/v1` (canaries, runs, timeline entries,
//!   chart series, commands); documented in `dashboards/README.md`.
//! - [`Backend`]: the async trait a controller runtime implements (list, get, history,
//!   subscribe, apply a command). `memory::MemoryBackend` (feature
//!   `test-support`, a test double) is a complete implementation.
//! - [`router`]: the axum `Router` serving the pages (server-rendered HTML and SVG, one small
//!   inline script, no Node build), live updates over server-sent events, token-protected
//!   actions, and Flagger load-tester-compatible gate endpoints.
//! - [`client::Client`]: a typed client of the API (the `serin` CLI uses it), and [`wait`]: the
//!   pure decision behind `serin wait`.
//!
//! What this crate is not: it runs no canary analysis, persists nothing of its own (the backend
//! does; `MemoryBackend` only snapshots to a JSON file) and does not bind sockets: the controller
//! binary mounts [`router`] on its `--dashboard-addr` listener.

pub mod backend;
pub mod client;
pub mod convert;
pub mod engine;
pub mod listing;
#[cfg(feature = "test-support")]
pub mod memory;
pub mod model;
mod page;
mod server;
pub mod wait;

pub use backend::{Backend, BackendError, HistoryQuery};
pub use server::{DashboardConfig, new_command_id, router};

/// The dashboard's default listen address (`serin controller --dashboard-addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:7979";
/// The URL the CLI uses when neither `--server` nor `SERIN_SERVER` is given.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:7979";
