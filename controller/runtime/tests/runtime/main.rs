//! serin-controller's integration tests, one binary with a module per topic.

mod common;

mod deliveries;
mod driver;
mod http_clients;
