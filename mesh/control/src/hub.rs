//! The hub: owns the [`State`], publishes versioned snapshots to every subscribed proxy, and
//! tracks which version each proxy has applied.
//!
//! Publishing is a `tokio::sync::watch` of the latest [`Snapshot`]: a proxy stream that falls
//! behind skips straight to the newest version (snapshots are complete, never diffs). Each
//! snapshot encodes its table once per client namespace and shares the bytes between streams.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::Stream;
use serin_mesh_api::protocol::{
    Ack, HEARTBEAT_INTERVAL_SECS, LineDecoder, ServerMessage, StreamAck, Workload, encode_line,
    encode_snapshot,
};
use serin_mesh_api::status::{ControlPlaneStatus, ProxyInfo, RouteStatus};
use serin_mesh_api::table::RouteTable;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::state::{RouteInfo, RouteKind, State};
use crate::translate::{Options, translate};
use crate::world::{ObjKey, World};

/// One published version.
pub struct Snapshot {
    /// Version.
    pub version: u64,
    /// The effective world it was built from.
    pub world: Arc<World>,
    /// When it was published.
    pub published_at: Instant,
    opts: Options,
    /// Encoded snapshot lines per client namespace: `[full, compact]` (see
    /// [`serin_mesh_api::protocol::encode_snapshot`]).
    lines: Mutex<[HashMap<String, Arc<OnceLock<Bytes>>>; 2]>,
}

impl Snapshot {
    fn new(version: u64, world: Arc<World>, published_at: Instant, opts: Options) -> Self {
        Snapshot {
            version,
            world,
            published_at,
            opts,
            lines: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    /// The table for proxies in namespace `ns`.
    pub fn table(&self, ns: &str) -> RouteTable {
        translate(&self.world, ns, &self.opts, self.version)
    }

    /// The encoded snapshot message for namespace `ns`, in compact form (routes with `aliases`)
    /// or not; computed once per form, then shared.
    pub fn line(&self, ns: &str, compact: bool) -> Bytes {
        let cell = {
            let mut lines = lock(&self.lines);
            let lines = &mut lines[usize::from(compact)];
            // Look up before inserting: all but the first stream of a namespace find the cell,
            // and need not allocate a key.
            match lines.get(ns) {
                Some(cell) => cell.clone(),
                None => lines
                    .entry(ns.to_string())
                    .or_insert_with(|| Arc::new(OnceLock::new()))
                    .clone(),
            }
        };
        // Outside the map lock, so namespaces encode in parallel; the cell makes the thousand
        // streams of one namespace that wake together wait for a single translation.
        cell.get_or_init(|| Bytes::from(encode_snapshot(self.version, &self.table(ns), compact)))
            .clone()
    }
}

struct ProxyEntry {
    info: ProxyInfo,
    namespace: String,
    conn: u64,
}

struct Inner {
    state: State,
    proxies: BTreeMap<String, ProxyEntry>,
    /// How many subscribed proxies have applied each version (0 = none yet): "how many run
    /// version v or later" is then a sum over the few distinct versions in use, not a walk over
    /// every proxy on each of their thousand acks.
    applied: BTreeMap<u64, usize>,
    next_conn: u64,
    published: VecDeque<(u64, Instant)>,
}

impl Inner {
    fn count_applied(&mut self, version: u64, delta: isize) {
        let n = self.applied.entry(version).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.applied.remove(&version);
        }
    }

    /// Subscribed proxies that applied `version` or later.
    fn up_to_date(&self, version: u64) -> usize {
        self.applied.range(version..).map(|(_, n)| n).sum()
    }
}

/// See the module docs.
pub struct Hub {
    inner: Mutex<Inner>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    progress: watch::Sender<u64>,
    /// Metrics.
    pub metrics: Metrics,
    opts: Options,
    ready: AtomicBool,
    heartbeat: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated in a way that matters
    // more than stopping service would, so keep going with the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// A hub with an empty state at version 0 (not ready until the source calls
    /// [`Hub::set_ready`]).
    pub fn new(opts: Options) -> Arc<Self> {
        Self::with_heartbeat(opts, Duration::from_secs(HEARTBEAT_INTERVAL_SECS))
    }

    /// Same, with a custom heartbeat interval (tests).
    pub fn with_heartbeat(opts: Options, heartbeat: Duration) -> Arc<Self> {
        let first = Arc::new(Snapshot::new(
            0,
            Arc::new(World::default()),
            Instant::now(),
            opts.clone(),
        ));
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                state: State::default(),
                proxies: BTreeMap::new(),
                applied: BTreeMap::new(),
                next_conn: 0,
                published: VecDeque::new(),
            }),
            snapshots: watch::channel(first).0,
            progress: watch::channel(0).0,
            metrics: Metrics::new(),
            opts,
            ready: AtomicBool::new(false),
            heartbeat,
        })
    }

    /// Marks the source as synced (`/ready` answers 200 from now on).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// True once the source synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Applies a change to the state and, if it changed anything, publishes a new version.
    /// `received` is when the source saw the change (for the watch-lag metric).
    pub fn update(&self, received: Instant, f: impl FnOnce(&mut State)) -> Option<u64> {
        let mut inner = lock(&self.inner);
        f(&mut inner.state);
        for r in inner.state.take_reports() {
            for p in &r.problems {
                self.metrics.error(r.kind.kind(), p.reason);
            }
            let text = r
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            tracing::error!(kind = r.kind.kind(), object = %r.key, problems = %text, "route object is invalid; its last valid version (if any) stays in force");
        }
        let infos = inner.state.route_infos();
        self.metrics.route_objects.set(infos.len() as i64);
        self.metrics
            .invalid_route_objects
            .set(infos.iter().filter(|i| !i.valid).count() as i64);
        let version = inner.state.commit()?;
        let now = Instant::now();
        inner.published.push_back((version, now));
        while inner.published.len() > 256 {
            inner.published.pop_front();
        }
        let snap = Arc::new(Snapshot::new(
            version,
            Arc::new(inner.state.world().clone()),
            now,
            self.opts.clone(),
        ));
        drop(inner);
        self.snapshots.send_replace(snap);
        self.metrics.snapshots.inc();
        self.metrics.version.set(version as i64);
        self.metrics
            .watch_lag
            .observe(now.saturating_duration_since(received).as_secs_f64());
        self.progress.send_modify(|v| *v = version);
        tracing::debug!(version, "published route tables");
        Some(version)
    }

    /// Reads the state.
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&lock(&self.inner).state)
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Opens a proxy stream: the current snapshot first, then each newer one, heartbeats in
    /// between. The proxy is registered until the stream is dropped. `acks`, for a duplex
    /// stream, is the request body carrying the proxy's [`StreamAck`] lines; it is read until it
    /// ends or the returned stream is dropped. `compact`: the proxy reads routes with `aliases`.
    pub fn subscribe<A, E>(
        self: &Arc<Self>,
        workload: Workload,
        proxy: String,
        acks: Option<A>,
        compact: bool,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + use<A, E>
    where
        A: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let conn = {
            let mut inner = lock(&self.inner);
            inner.next_conn += 1;
            let conn = inner.next_conn;
            let connected_at = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let replaced = inner.proxies.insert(
                proxy.clone(),
                ProxyEntry {
                    info: ProxyInfo {
                        id: proxy.clone(),
                        workload: workload.to_string(),
                        sent_version: 0,
                        applied_version: 0,
                        rejected: None,
                        connected_at,
                    },
                    namespace: workload.namespace.clone(),
                    conn,
                },
            );
            inner.count_applied(0, 1);
            match replaced {
                Some(old) => inner.count_applied(old.info.applied_version, -1),
                None => {
                    self.metrics.connected_proxies.inc();
                }
            }
            conn
        };
        tracing::info!(proxy = %proxy, workload = %workload, "proxy subscribed");
        let reader = acks.map(|acks| {
            AbortOnDrop(tokio::spawn(read_acks(
                self.clone(),
                proxy.clone(),
                conn,
                acks,
            )))
        });
        let guard = Registration {
            hub: self.clone(),
            proxy,
            conn,
            _reader: reader,
        };
        let mut rx = self.snapshots.subscribe();
        rx.mark_changed();
        let heartbeat = self.heartbeat;
        let ns = workload.namespace;
        futures::stream::unfold(
            (rx, guard, ns, 0u64),
            move |(mut rx, guard, ns, mut sent)| async move {
                let line = tokio::select! {
                    changed = rx.changed() => {
                        // The sender lives as long as the hub, which this stream holds.
                        changed.ok()?;
                        let snap = rx.borrow_and_update().clone();
                        sent = snap.version;
                        let line = snap.line(&ns, compact);
                        guard.hub.mark_sent(&guard.proxy, guard.conn, sent);
                        line
                    }
                    _ = tokio::time::sleep(heartbeat) => {
                        Bytes::from(encode_line(&ServerMessage::Heartbeat { version: sent }))
                    }
                };
                Some((Ok(line), (rx, guard, ns, sent)))
            },
        )
    }

    fn mark_sent(&self, proxy: &str, conn: u64, version: u64) {
        let mut inner = lock(&self.inner);
        if let Some(e) = inner.proxies.get_mut(proxy)
            && e.conn == conn
        {
            e.info.sent_version = version;
        }
        self.metrics.pushes.inc();
    }

    /// Records an ack (`POST /v1/ack`). False when no stream with that proxy id is open.
    pub fn ack(&self, ack: &Ack) -> bool {
        self.record_ack(&ack.proxy, None, ack.version, ack.error.as_deref())
    }

    /// Records an ack for `proxy`; with `conn`, only if that stream is still the proxy's current
    /// one (an ack read from a replaced stream must not speak for its successor).
    fn record_ack(
        &self,
        proxy: &str,
        conn: Option<u64>,
        version: u64,
        error: Option<&str>,
    ) -> bool {
        let mut inner = lock(&self.inner);
        let published_at = inner
            .published
            .iter()
            .rev()
            .find(|(v, _)| *v == version)
            .map(|(_, t)| *t);
        let Some(e) = inner.proxies.get_mut(proxy) else {
            return false;
        };
        if conn.is_some_and(|c| c != e.conn) {
            return false;
        }
        match error {
            None => {
                let before = e.info.applied_version;
                if version > before {
                    e.info.applied_version = version;
                    inner.count_applied(before, -1);
                    inner.count_applied(version, 1);
                }
                if let Some(t) = published_at {
                    self.metrics.push_latency.observe(t.elapsed().as_secs_f64());
                }
            }
            Some(err) => {
                tracing::error!(proxy = %proxy, version, error = %err, "proxy refused a snapshot");
                self.metrics.error("ack", "Rejected");
                e.info.rejected = Some((version, err.to_string()));
            }
        }
        drop(inner);
        self.progress.send_modify(|_| {});
        true
    }

    fn unregister(&self, proxy: &str, conn: u64) {
        let mut inner = lock(&self.inner);
        if inner.proxies.get(proxy).is_some_and(|e| e.conn == conn) {
            if let Some(e) = inner.proxies.remove(proxy) {
                inner.count_applied(e.info.applied_version, -1);
            }
            self.metrics.connected_proxies.dec();
            tracing::info!(proxy = %proxy, "proxy unsubscribed");
        }
        drop(inner);
        self.progress.send_modify(|_| {});
    }

    /// The full status document.
    pub fn status(&self) -> ControlPlaneStatus {
        let inner = lock(&self.inner);
        let routes = inner
            .state
            .route_infos()
            .into_iter()
            .map(|info| route_status(&inner, info))
            .collect();
        ControlPlaneStatus {
            version: inner.state.version(),
            ready: self.is_ready(),
            proxies: inner.proxies.values().map(|e| e.info.clone()).collect(),
            routes,
        }
    }

    /// Status of one route object; None when unknown.
    pub fn route_status(&self, kind: RouteKind, key: &ObjKey) -> Option<RouteStatus> {
        let inner = lock(&self.inner);
        let info = inner
            .state
            .route_infos()
            .into_iter()
            .find(|i| i.kind == kind && i.namespace == key.namespace && i.name == key.name)?;
        Some(route_status(&inner, info))
    }

    /// Waits until the route object is converged (or `timeout` passes), then returns its status.
    pub async fn wait_converged(
        &self,
        kind: RouteKind,
        key: &ObjKey,
        timeout: Duration,
    ) -> Option<RouteStatus> {
        let mut rx = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.route_status(kind, key)?;
            if status.converged {
                return Some(status);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.route_status(kind, key),
            }
        }
    }
}

impl Hub {
    /// Waits until every subscribed proxy has applied `version` or later (true), or `timeout`
    /// passes (false). Vacuously true with no proxy.
    pub async fn wait_applied(&self, version: u64, timeout: Duration) -> bool {
        let mut rx = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let all = {
                let inner = lock(&self.inner);
                inner.up_to_date(version) == inner.proxies.len()
            };
            if all {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return false,
            }
        }
    }
}

fn route_status(inner: &Inner, info: RouteInfo) -> RouteStatus {
    let proxies = inner.proxies.len();
    let up = inner.up_to_date(info.version);
    RouteStatus {
        latest_version: inner.state.version(),
        proxies,
        proxies_up_to_date: up,
        converged: up == proxies,
        info,
    }
}

/// Reads a duplex stream's ack lines until the request body ends. A bad line is logged and
/// counted and the rest still count; a broken body only ends the reading (the snapshots keep
/// flowing, and the proxy can still ack with `POST /v1/ack`).
async fn read_acks<A, E>(hub: Arc<Hub>, proxy: String, conn: u64, mut acks: A)
where
    A: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let mut decoder: LineDecoder<StreamAck> = LineDecoder::default();
    while let Some(chunk) = acks.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(proxy = %proxy, error = %e, "ack side of the stream broke");
                return;
            }
        };
        let result = decoder.push_lossy(&chunk, |ack| match ack {
            Ok(ack) => {
                hub.record_ack(&proxy, Some(conn), ack.version, ack.error.as_deref());
            }
            Err(e) => {
                tracing::warn!(proxy = %proxy, error = %e, "bad ack line on the stream (expected {{\"version\":N[,\"error\":TEXT]}})");
                hub.metrics.error("ack", "BadAck");
            }
        });
        if let Err(e) = result {
            tracing::warn!(proxy = %proxy, error = %e, "ack side of the stream is unreadable; ignoring it from now on");
            hub.metrics.error("ack", "BadAck");
            return;
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes the proxy from the registry when its stream is dropped (and stops reading its acks).
struct Registration {
    hub: Arc<Hub>,
    proxy: String,
    conn: u64,
    _reader: Option<AbortOnDrop>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.proxy, self.conn);
    }
}

impl Hub {
    /// Namespace of each subscribed proxy (for tests and the bench).
    pub fn proxy_namespaces(&self) -> Vec<String> {
        lock(&self.inner)
            .proxies
            .values()
            .map(|e| e.namespace.clone())
            .collect()
    }
}
