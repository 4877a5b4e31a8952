//! Route tables from the control plane (`serin-proxy --control-plane URL --workload NS/NAME`).
//!
//! A thin adapter: the stream, acks and reconnect-with-backoff live in
//! `serin_mesh_api::client`; here each snapshot goes through [`TableHandle::apply`], so a
//! snapshot the proxy cannot compile is refused (and reported back) while the table in force
//! stays. A broken stream never clears the table: the proxy keeps routing with the last one.

use http::Uri;
use serin_mesh_api::RouteTable;
use serin_mesh_api::client::{ClientConfig, Sink, default_proxy_id};
use serin_mesh_api::protocol::Workload;
use tokio::task::JoinHandle;

use crate::table::TableHandle;

/// Feeds control-plane snapshots into a [`TableHandle`], and reports the stream's state in the
/// logs and on `/metrics` (`serin_proxy_control_plane_connected`,
/// `serin_proxy_control_plane_disconnects_total`).
pub struct TableSink {
    table: TableHandle,
}

impl TableSink {
    /// A sink for `table`; from now on `/metrics` shows the stream's series (down until the
    /// first snapshot arrives).
    pub fn new(table: TableHandle) -> Self {
        table.registry().control_plane_client();
        TableSink { table }
    }
}

impl Sink for TableSink {
    fn apply(&mut self, table: RouteTable) -> Result<(), String> {
        self.table.apply(table).map_err(|e| e.to_string())
    }

    fn connection(&mut self, up: bool, detail: &str) {
        self.table.registry().control_plane_stream(up);
        let version = self.table.current().version;
        if up {
            tracing::info!(detail, "control-plane stream up");
        } else {
            tracing::warn!(
                detail,
                version_in_force = version,
                "control-plane stream down; keeping the last table and reconnecting"
            );
        }
    }
}

/// Subscribes to the control plane at `url` as a proxy of `workload` and applies every snapshot
/// to `table` until the returned task is aborted.
pub fn spawn(url: Uri, workload: Workload, table: TableHandle) -> JoinHandle<()> {
    let cfg = ClientConfig::new(url, workload, default_proxy_id());
    tracing::info!(url = %cfg.url, workload = %cfg.workload, proxy = %cfg.proxy_id, "route tables from the control plane");
    tokio::spawn(serin_mesh_api::client::run(cfg, TableSink::new(table)))
}

/// Same with a full client configuration (ids, backoff, idle timeout).
pub fn spawn_with(cfg: ClientConfig, table: TableHandle) -> JoinHandle<()> {
    tokio::spawn(serin_mesh_api::client::run(cfg, TableSink::new(table)))
}
