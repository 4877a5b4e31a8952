//! The controller runtime: observe, call the engine, act through adapters.
