//! The sidecar proxy library behind the `serin-proxy` binary.
