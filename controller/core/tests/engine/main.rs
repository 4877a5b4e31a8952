//! serin-core's integration tests, one binary: a module per topic (a binary per file linked
//! the engine's dependencies once per file, and cost CI a link each).

mod common;

mod commands;
mod crate_graph;
mod failures;
mod gates;
mod inconclusive;
mod properties;
mod strategies;
mod watched_target;
