//! serin-api's integration tests, one binary with a module per topic.

mod bad_inputs;
mod compatibility_table;
mod crds;
mod defaults;
mod flagger_fixtures;
