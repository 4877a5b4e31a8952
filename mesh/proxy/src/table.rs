//! [`TableHandle`]: the one place a route table enters the proxy, from any source.
//!
//! A table is validated and compiled off the request path, then swapped in with one atomic
//! pointer store. Requests already running keep the table they started with (they hold an
//! `Arc` to it); new requests see the new one. Connections are never touched by a swap.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serin_mesh_api::RouteTable;
use tokio::sync::watch;

use crate::metrics::Registry;
use crate::router::{CompileError, Compiled, EndpointStates};

/// What happened to the route table so far; observe it with [`TableHandle::events`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableEvents {
    /// Number of tables applied (0 = still the empty start-up table).
    pub applied: u64,
    /// Number of tables rejected.
    pub rejected: u64,
    /// Version of the table in force.
    pub version: u64,
    /// Why the last rejected table was rejected, until a later table is applied.
    pub last_error: Option<String>,
}

struct Inner {
    current: ArcSwap<Compiled>,
    registry: Arc<Registry>,
    endpoints: EndpointStates,
    events: watch::Sender<TableEvents>,
}

/// A cheap, cloneable handle to the route table in force.
///
/// Any source (the static file watcher, the control-plane client, a test) feeds tables through
/// [`TableHandle::apply`]; the proxy reads through [`TableHandle::compiled`] per request.
#[derive(Clone)]
pub struct TableHandle {
    inner: Arc<Inner>,
}

impl TableHandle {
    /// A handle holding the empty table (every request gets a 404 until a table is applied).
    pub fn new(registry: Arc<Registry>) -> Self {
        let (events, _) = watch::channel(TableEvents::default());
        TableHandle {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(Compiled::empty()),
                registry,
                endpoints: EndpointStates::default(),
                events,
            }),
        }
    }

    /// Validates, compiles and swaps in `table`. On error the table in force stays, the
    /// rejection is logged and counted (`serin_proxy_config_reloads_total{result="failure"}`),
    /// and the error names every offending field.
    pub fn apply(&self, table: RouteTable) -> Result<(), CompileError> {
        let version = table.version;
        match Compiled::compile(table, &self.inner.registry, &self.inner.endpoints) {
            Ok(compiled) => {
                self.inner.current.store(Arc::new(compiled));
                self.inner.registry.prune_endpoint_series();
                self.inner.registry.reload(true, version);
                self.inner.events.send_modify(|e| {
                    e.applied += 1;
                    e.version = version;
                    e.last_error = None;
                });
                tracing::info!(version, "route table applied");
                Ok(())
            }
            Err(err) => {
                self.reject(&err.to_string());
                Err(err)
            }
        }
    }

    /// Records a table that never got as far as [`apply`](Self::apply) (e.g. a YAML file that
    /// does not parse): logged, counted, and the table in force kept.
    pub fn reject(&self, error: &str) {
        let in_force = self.current().version;
        self.inner.registry.reload(false, in_force);
        self.inner.events.send_modify(|e| {
            e.rejected += 1;
            e.last_error = Some(error.to_string());
        });
        tracing::error!(
            error,
            version_in_force = in_force,
            "route table rejected; keeping the last good table"
        );
    }

    /// The compiled table in force (held by a request for its whole life).
    pub fn compiled(&self) -> Arc<Compiled> {
        self.inner.current.load_full()
    }

    /// The source of the table in force, as applied.
    pub fn current(&self) -> Arc<RouteTable> {
        self.inner.current.load().source.clone()
    }

    /// Applied/rejected counts; `changed().await` on the receiver to wait for the next event.
    pub fn events(&self) -> watch::Receiver<TableEvents> {
        self.inner.events.subscribe()
    }

    /// The registry the table's series live in (the control-plane client reports its stream
    /// there).
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// True once a table has been applied.
    pub fn has_table(&self) -> bool {
        self.inner.events.borrow().applied > 0
    }
}
