//! The exporter of Linkerd/Istio/serin-proxy-named metrics lives in `serin_analysis::testing`
//! (feature `test-support`), shared with the controller runtime's tests.

#![allow(unused_imports)]

pub use serin_analysis::testing::{
    CANARY_FAILURES_PER_TICK, Exporter, PER_TICK, PRIMARY_FAILURES_PER_TICK, start_exporter,
};
