//! serin-dashboard's integration tests, one binary with a module per topic.

mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

mod api;
mod browser;
mod engine;
