//! serin-proxy's integration tests, one binary with a module per topic. (tests/sighup.rs is its
//! own binary: the signal it sends goes to every SIGHUP watcher in its process.)

mod support;

mod abuse;
mod client_h1;
mod control_stream;
mod flags;
mod fuzz;
mod h2_pool;
mod idle;
mod netns;
mod overload;
mod proxy;
mod readme;
mod reload;
mod upgrade;
mod upstream_h1;
