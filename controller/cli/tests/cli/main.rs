//! The `serin` binary's integration tests, one binary with a module per command or topic.

mod local_site;

mod check;
mod ci;
mod demo;
mod errors;
mod inject;
mod install;
mod local_browser;
mod local_controller;
mod uninstall;
mod validate_and_crds;
