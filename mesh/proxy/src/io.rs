//! The `tcp_*` metrics as the observer of the connections `serin-http1` counts.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub use serin_http1::io::{CountingIo, Opened, TcpObserver};

use crate::metrics::TcpMetrics;

impl TcpObserver for TcpMetrics {
    fn opened(&self) {
        self.open_total.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    fn read(&self, bytes: u64) {
        self.read_bytes.fetch_add(bytes, Relaxed);
    }

    fn written(&self, bytes: u64) {
        self.write_bytes.fetch_add(bytes, Relaxed);
    }

    fn closed(&self, open_for: Duration, errno: Option<i32>) {
        TcpMetrics::closed(self, open_for, errno);
    }
}
