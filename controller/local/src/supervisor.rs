//! The process supervisor: runs each `Process` as primary and canary instances on free loopback
//! ports, probes their readiness, restarts them when they die, stops them gracefully (SIGTERM,
//! then SIGKILL after the grace period), and adopts the instances a previous controller left
//! running, so a controller restart never interrupts traffic.
//!
//! It decides nothing about rollouts: the local [`Workloads`](super::LocalPlatform) adapter tells it
//! which spec each role should run, and the platform's reconciler retires a superseded primary
//! once traffic has left it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::manifest::{ProcessSpec, REVISION_ENV, process_args, process_env};
use super::store::write_atomic;

/// Which copy of the workload an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves the promoted revision.
    Primary,
    /// Serves the revision under analysis.
    Canary,
}

impl Role {
    /// `primary` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Canary => "canary",
        }
    }
}

/// What is persisted about an instance so a restarted controller can adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// Primary or canary.
    pub role: Role,
    /// The revision it runs.
    pub revision: String,
    /// [`ProcessSpec::content_hash`] of the spec it runs.
    pub spec_hash: u64,
    /// The spec itself (so an adopted instance can be restarted as it was).
    pub spec: ProcessSpec,
    /// The directory relative paths resolve against.
    pub dir: PathBuf,
    /// Its loopback port (kept across restarts of the process).
    pub port: u16,
    /// OS process id of the current incarnation.
    pub pid: u32,
    /// Whether it was being stopped.
    #[serde(default)]
    pub retiring: bool,
}

/// A live view of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Primary or canary.
    pub role: Role,
    /// Revision it runs.
    pub revision: String,
    /// Spec hash.
    pub spec_hash: u64,
    /// Its loopback port.
    pub port: u16,
    /// Current OS pid (0 while restarting).
    pub pid: u32,
    /// Passing its readiness probe.
    pub ready: bool,
    /// Being stopped (no longer wanted).
    pub retiring: bool,
    /// Times it was restarted after dying.
    pub restarts: u32,
    /// Whether its readiness is known: probed at least once (or exited) since this supervisor
    /// started watching it. An adopted instance is ready or not; until its first probe nobody
    /// knows, and "unknown" must not be published as "no endpoints".
    pub probed: bool,
}

struct Instance {
    role: Role,
    revision: String,
    spec_hash: u64,
    spec: ProcessSpec,
    dir: PathBuf,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    retiring: bool,
}

impl Instance {
    fn port(&self) -> u16 {
        self.shared.port.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Shared {
    /// The loopback port the instance serves on. It changes only when another process took
    /// it while the instance was down (see [`Monitor::reclaim_port`]).
    port: AtomicU16,
    pid: AtomicU32,
    ready: AtomicBool,
    restarts: AtomicU32,
    exited: AtomicBool,
    probed: AtomicBool,
}

/// Runs and watches every process instance of the local platform.
pub struct Supervisor {
    state_dir: PathBuf,
    log_dir: PathBuf,
    workloads: Mutex<BTreeMap<String, Vec<Instance>>>,
    changes: watch::Sender<u64>,
    counter: AtomicU64,
}

impl Supervisor {
    /// A supervisor keeping its instance records under `state_dir` and process output under
    /// `log_dir`.
    pub fn new(state_dir: impl Into<PathBuf>, log_dir: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            state_dir: state_dir.into(),
            log_dir: log_dir.into(),
            workloads: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            counter: AtomicU64::new(0),
        })
    }

    /// A receiver that changes whenever an instance starts, stops, becomes ready or unready.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        self.changes.send_replace(n);
    }

    fn record_file(&self, key: &str) -> PathBuf {
        self.state_dir
            .join(format!("{}.processes.json", key.replace('/', "_")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Instance>>> {
        // A panic while holding this lock would be a bug in this module; keep serving the data.
        self.workloads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adopts the instances recorded for `key` by an earlier controller: those still alive (same
    /// pid, same command line) are watched again; dead ones are started anew on their port.
    /// Retiring ones are stopped. Call once per workload at start-up, before [`Self::ensure`].
    pub fn adopt(self: &Arc<Self>, key: &str) {
        let path = self.record_file(key);
        let records: Vec<InstanceRecord> = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "ignoring unreadable process records");
                    return;
                }
            },
            Err(_) => return,
        };
        let mut map = self.lock();
        if map.get(key).is_some_and(|v| !v.is_empty()) {
            return;
        }
        let list = map.entry(key.to_string()).or_default();
        for record in records {
            // An instance is recorded (pid 0) before it is spawned and again with its pid after:
            // a controller killed in between left it running unrecorded. It is found by what it
            // was started with (program, port and revision in its environment), so it is adopted
            // instead of started a second time on a port it holds.
            let pid = if process_matches(record.pid, &record.spec) {
                Some(record.pid)
            } else {
                unrecorded_instance(&record.spec, record.port)
            };
            tracing::info!(workload = key, role = record.role.as_str(), revision = %record.revision, pid = pid.unwrap_or(record.pid), port = record.port, alive = pid.is_some(), "adopting instance");
            let instance = self.launch(key, record.role, record.spec, record.dir, record.port, pid);
            list.push(instance);
            if record.retiring {
                let last = list.len() - 1;
                list[last].retiring = true;
                let _ = list[last].stop.send(true);
            }
        }
        drop(map);
        self.persist(key);
        self.notify();
    }

    /// Makes sure an instance of `role` runs `spec`. For the canary, instances running another
    /// spec are stopped. For the primary, instances of another spec are kept (they still serve)
    /// until [`Self::retire_superseded_primaries`] is called once traffic has moved. Returns
    /// whether a new instance was started.
    pub fn ensure(
        self: &Arc<Self>,
        key: &str,
        role: Role,
        spec: &ProcessSpec,
        dir: &Path,
    ) -> std::io::Result<bool> {
        let hash = spec.content_hash();
        let mut map = self.lock();
        let list = map.entry(key.to_string()).or_default();
        let have = list
            .iter()
            .any(|i| i.role == role && i.spec_hash == hash && !i.retiring);
        if role == Role::Canary {
            for i in list
                .iter_mut()
                .filter(|i| i.role == role && i.spec_hash != hash && !i.retiring)
            {
                i.retiring = true;
                let _ = i.stop.send(true);
            }
        }
        if have {
            drop(map);
            self.persist(key);
            return Ok(false);
        }
        let port = free_port_except(&ports_in_use(&map))?;
        let list = map.entry(key.to_string()).or_default();
        tracing::info!(workload = key, role = role.as_str(), revision = %spec.revision(), port, "starting instance");
        let instance = self.launch(key, role, spec.clone(), dir.to_path_buf(), port, None);
        list.push(instance);
        drop(map);
        self.persist(key);
        self.notify();
        Ok(true)
    }

    /// Stops every instance of `role`.
    pub fn stop_role(&self, key: &str, role: Role) {
        let mut changed = false;
        {
            let mut map = self.lock();
            if let Some(list) = map.get_mut(key) {
                for i in list.iter_mut().filter(|i| i.role == role && !i.retiring) {
                    tracing::info!(workload = key, role = role.as_str(), revision = %i.revision, port = i.port(), "stopping instance");
                    i.retiring = true;
                    let _ = i.stop.send(true);
                    changed = true;
                }
            }
        }
        if changed {
            self.persist(key);
            self.notify();
        }
    }

    /// Stops primary instances whose spec differs from the newest primary's, once that newest
    /// one is ready. Call only after the routing no longer sends traffic to them.
    pub fn retire_superseded_primaries(&self, key: &str, current_hash: u64) -> usize {
        let mut n = 0;
        {
            let mut map = self.lock();
            if let Some(list) = map.get_mut(key) {
                for i in list.iter_mut().filter(|i| {
                    i.role == Role::Primary && i.spec_hash != current_hash && !i.retiring
                }) {
                    tracing::info!(workload = key, revision = %i.revision, port = i.port(), "draining superseded primary");
                    i.retiring = true;
                    let _ = i.stop.send(true);
                    n += 1;
                }
            }
        }
        if n > 0 {
            self.persist(key);
            self.notify();
        }
        n
    }

    /// Every instance of `key` (retiring ones included until they have exited).
    pub fn instances(&self, key: &str) -> Vec<InstanceView> {
        self.lock()
            .get(key)
            .map(|list| {
                list.iter()
                    .map(|i| InstanceView {
                        role: i.role,
                        revision: i.revision.clone(),
                        spec_hash: i.spec_hash,
                        port: i.port(),
                        pid: i.shared.pid.load(Ordering::Relaxed),
                        ready: i.shared.ready.load(Ordering::Relaxed) && !i.retiring,
                        retiring: i.retiring,
                        restarts: i.shared.restarts.load(Ordering::Relaxed),
                        probed: i.shared.probed.load(Ordering::Relaxed),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (at most `timeout`) until the readiness of every instance of `key` is known, so a
    /// restarted controller publishes the endpoints its adopted instances really serve on
    /// instead of an empty list for the first probe period (which fails every request routed
    /// meanwhile). Returns whether they all were probed in time.
    pub async fn await_probed(&self, key: &str, timeout: Duration) -> bool {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.instances(key).iter().all(|i| i.probed || i.retiring) {
                return true;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return false },
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Stops every instance of every workload and waits (up to each grace period) for them.
    pub async fn shutdown(&self) {
        let keys: Vec<String> = self.lock().keys().cloned().collect();
        for key in &keys {
            self.stop_role(key, Role::Canary);
            self.stop_role(key, Role::Primary);
        }
        let mut changes = self.changes();
        loop {
            let remaining = self.lock().values().map(Vec::len).sum::<usize>();
            if remaining == 0 {
                break;
            }
            if changes.changed().await.is_err() {
                break;
            }
        }
    }

    /// Drops instances that have exited after being stopped; called by their monitor tasks.
    fn reap(&self, key: &str) {
        let mut removed = false;
        {
            let mut map = self.lock();
            if let Some(list) = map.get_mut(key) {
                let before = list.len();
                list.retain(|i| !(i.retiring && i.shared.exited.load(Ordering::Relaxed)));
                removed = list.len() != before;
            }
        }
        if removed {
            self.persist(key);
        }
    }

    fn persist(&self, key: &str) {
        // The map stays locked until the file is written: persist runs from the supervisor and
        // from every instance's monitor task, and a snapshot taken earlier but renamed into
        // place later would overwrite a newer one (e.g. a just-spawned pid recorded as 0).
        let map = self.lock();
        let records: Vec<InstanceRecord> = map
            .get(key)
            .map(|list| {
                list.iter()
                    .filter(|i| !i.shared.exited.load(Ordering::Relaxed) || !i.retiring)
                    .map(|i| InstanceRecord {
                        role: i.role,
                        revision: i.revision.clone(),
                        spec_hash: i.spec_hash,
                        spec: i.spec.clone(),
                        dir: i.dir.clone(),
                        port: i.port(),
                        pid: i.shared.pid.load(Ordering::Relaxed),
                        retiring: i.retiring,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let path = self.record_file(key);
        let bytes = serde_json::to_vec_pretty(&records).unwrap_or_default();
        if let Err(error) = write_atomic(&path, &bytes) {
            tracing::warn!(file = %path.display(), %error, "cannot persist process records");
        }
        drop(map);
    }

    fn launch(
        self: &Arc<Self>,
        key: &str,
        role: Role,
        spec: ProcessSpec,
        dir: PathBuf,
        port: u16,
        adopted_pid: Option<u32>,
    ) -> Instance {
        let shared = Arc::new(Shared {
            port: AtomicU16::new(port),
            ..Shared::default()
        });
        // Known now, so the records written right after an adoption name the process (the
        // monitor task stores it too, but only once it runs, after that write).
        if let Some(pid) = adopted_pid {
            shared.pid.store(pid, Ordering::Relaxed);
        }
        let (stop, stop_rx) = watch::channel(false);
        let revision = spec.revision();
        let log = self.log_dir.join(format!(
            "{}-{}-{}-{}.log",
            key.replace('/', "_"),
            role.as_str(),
            sanitize(&revision),
            port
        ));
        let monitor = Monitor {
            supervisor: Arc::downgrade(self),
            key: key.to_string(),
            spec: spec.clone(),
            dir: dir.clone(),
            log,
            shared: shared.clone(),
        };
        tokio::spawn(monitor.run(stop_rx, adopted_pid));
        Instance {
            role,
            revision,
            spec_hash: spec.content_hash(),
            spec,
            dir,
            shared,
            stop,
            retiring: false,
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A free loopback port: bind port 0, read it, release it for the child.
///
/// Between the release and the child's bind another process may take the port: the child then
/// fails to bind and exits, and its monitor moves the instance to a new port
/// ([`Monitor::reclaim_port`]). Arbitrary programs take their port as a number (`$(PORT)`),
/// so handing over a bound socket is not an option.
pub fn free_port() -> std::io::Result<u16> {
    free_port_except(&[])
}

/// [`free_port`], never one of `taken` (ports this supervisor handed out whose instance may not
/// have bound them yet: the kernel would hand those out again).
fn free_port_except(taken: &[u16]) -> std::io::Result<u16> {
    // Held until the loop ends, so each attempt gets a different port.
    let mut held = Vec::new();
    for _ in 0..16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
        held.push(listener);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port outside the supervisor's own",
    ))
}

/// Every port the supervisor's instances hold or are about to bind.
fn ports_in_use(map: &BTreeMap<String, Vec<Instance>>) -> Vec<u16> {
    map.values().flatten().map(Instance::port).collect()
}

/// Whether another process listens on `port` (a bind to it is refused as in use).
fn port_taken(port: u16) -> bool {
    matches!(
        std::net::TcpListener::bind(("127.0.0.1", port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// Whether `pid` is alive and runs `spec`'s program (so a recycled pid is never adopted).
fn process_matches(pid: u32, spec: &ProcessSpec) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(after) = stat.rsplit(')').next()
        && after.trim_start().starts_with('Z')
    {
        return false;
    }
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let program = Path::new(&spec.command)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    String::from_utf8_lossy(first).ends_with(&program)
}

/// A live process started for `spec` on `port` whose pid was never recorded: it runs `spec`'s
/// program with the port and the revision the supervisor put in its environment.
fn unrecorded_instance(spec: &ProcessSpec, port: u16) -> Option<u32> {
    let env = process_env(spec, port);
    let wanted: Vec<Vec<u8>> = [REVISION_ENV, spec.port_env.as_str()]
        .iter()
        .filter_map(|k| env.get(*k).map(|v| format!("{k}={v}").into_bytes()))
        .collect();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                wanted
                    .iter()
                    .all(|w| environ.split(|b| *b == 0).any(|kv| kv == w.as_slice()))
            }) && process_matches(*pid, spec)
        })
}

pub(crate) fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

pub(crate) fn alive(pid: u32) -> bool {
    match i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        Some(p) => {
            rustix::process::test_kill_process(p).is_ok() && {
                // A zombie still answers kill(0); it is not alive for our purposes.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
            }
        }
        None => false,
    }
}

struct Monitor {
    supervisor: std::sync::Weak<Supervisor>,
    key: String,
    spec: ProcessSpec,
    dir: PathBuf,
    log: PathBuf,
    shared: Arc<Shared>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The process exited (or a pause ended).
    Exited,
    /// A stop was asked.
    Stop,
    /// The supervisor was dropped.
    Gone,
}

enum Running {
    Child(tokio::process::Child),
    Adopted(u32),
}

impl Monitor {
    fn notify(&self) {
        if let Some(s) = self.supervisor.upgrade() {
            s.notify();
        }
    }

    fn persist(&self) {
        if let Some(s) = self.supervisor.upgrade() {
            s.persist(&self.key);
        }
    }

    fn port(&self) -> u16 {
        self.shared.port.load(Ordering::Relaxed)
    }

    /// After the process exited: when another process listens on its port (taken between the
    /// supervisor choosing it and the child binding it, or while the child was down), a
    /// restart there can only fail again, forever. Move the instance to a free port instead;
    /// the routes follow it (they are published from [`Supervisor::instances`]). Returns
    /// whether it moved.
    fn reclaim_port(&self) -> bool {
        let old = self.port();
        if !port_taken(old) {
            return false;
        }
        let Some(supervisor) = self.supervisor.upgrade() else {
            return false;
        };
        let moved = {
            let map = supervisor.lock();
            match free_port_except(&ports_in_use(&map)) {
                Ok(port) => {
                    self.shared.port.store(port, Ordering::Relaxed);
                    Ok(port)
                }
                Err(error) => Err(error),
            }
        };
        match moved {
            Ok(port) => {
                tracing::warn!(workload = %self.key, revision = %self.spec.revision(), old_port = old, port, "another process listens on the instance's port; restarting it on a new port");
                supervisor.persist(&self.key);
                supervisor.notify();
                true
            }
            Err(error) => {
                tracing::warn!(workload = %self.key, port = old, %error, "another process listens on the instance's port and no other is free");
                false
            }
        }
    }

    fn set_ready(&self, ready: bool) {
        let first = !self.shared.probed.swap(true, Ordering::Relaxed);
        if self.shared.ready.swap(ready, Ordering::Relaxed) != ready {
            tracing::info!(workload = %self.key, revision = %self.spec.revision(), port = self.port(), ready, "readiness changed");
            self.notify();
        } else if first {
            self.notify();
        }
    }

    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let env = process_env(&self.spec, self.port());
        let args = process_args(&self.spec, &env);
        let program = if self.spec.command.contains('/') {
            self.dir.join(&self.spec.command)
        } else {
            PathBuf::from(&self.spec.command)
        };
        let workdir = match &self.spec.working_dir {
            Some(w) => self.dir.join(w),
            None => self.dir.clone(),
        };
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&args)
            .envs(&env)
            .current_dir(workdir)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C in the terminal reaches the controller, which
            // then stops workloads in order, instead of killing them all at once mid-request.
            .process_group(0)
            .kill_on_drop(false);
        cmd.spawn()
    }

    async fn run(self, mut stop: watch::Receiver<bool>, adopted: Option<u32>) {
        const MIN_BACKOFF: Duration = Duration::from_millis(500);
        const MAX_BACKOFF: Duration = Duration::from_secs(30);
        let mut backoff = MIN_BACKOFF;
        let mut current = adopted.map(Running::Adopted);
        loop {
            if *stop.borrow() {
                break;
            }
            let started = tokio::time::Instant::now();
            let mut running = match current.take() {
                Some(r) => r,
                None => match self.spawn() {
                    Ok(child) => {
                        let pid = child.id().unwrap_or(0);
                        self.shared.pid.store(pid, Ordering::Relaxed);
                        self.persist();
                        Running::Child(child)
                    }
                    Err(error) => {
                        tracing::warn!(workload = %self.key, command = %self.spec.command, %error, "cannot start process");
                        if self.pause(&mut stop, backoff).await == Wake::Gone {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            if let Running::Adopted(pid) = running {
                self.shared.pid.store(pid, Ordering::Relaxed);
            }
            let end = self.watch(&mut running, &mut stop).await;
            self.set_ready(false);
            match end {
                // The supervisor was dropped without stopping its workloads (the controller is
                // going away on purpose): leave the process serving for the next controller to
                // adopt, and never restart anything.
                Wake::Gone => return,
                Wake::Stop => {
                    self.terminate(running).await;
                    break;
                }
                Wake::Exited => {}
            }
            let restarts = self.shared.restarts.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(workload = %self.key, revision = %self.spec.revision(), port = self.port(), restarts, "process exited; restarting");
            self.shared.pid.store(0, Ordering::Relaxed);
            // Not the process's fault: restart at once on the new port.
            if self.reclaim_port() {
                backoff = MIN_BACKOFF;
                continue;
            }
            // A process that ran a good while earns a quick restart; one that keeps dying waits
            // longer each time (never less than MIN_BACKOFF between two starts).
            if started.elapsed() > MAX_BACKOFF {
                backoff = MIN_BACKOFF;
            }
            if self.pause(&mut stop, backoff).await == Wake::Gone {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.shared.pid.store(0, Ordering::Relaxed);
        self.shared.exited.store(true, Ordering::Relaxed);
        if let Some(s) = self.supervisor.upgrade() {
            s.reap(&self.key);
            s.notify();
        }
    }

    /// Sleeps `d` unless a stop arrives first.
    async fn pause(&self, stop: &mut watch::Receiver<bool>, d: Duration) -> Wake {
        tokio::select! {
            () = tokio::time::sleep(d) => Wake::Exited,
            changed = stop.changed() => if changed.is_err() { Wake::Gone } else { Wake::Stop },
        }
    }

    /// Probes until the process exits, a stop is asked, or the supervisor is gone.
    async fn watch(&self, running: &mut Running, stop: &mut watch::Receiver<bool>) -> Wake {
        let (period, timeout, failure_threshold) = self.spec.probe_timing();
        let mut failures = 0u32;
        let mut ever_ready = false;
        loop {
            let wait = if ever_ready {
                period
            } else {
                Duration::from_millis(50)
            };
            let exited = async {
                match running {
                    Running::Child(child) => {
                        let _ = child.wait().await;
                    }
                    Running::Adopted(pid) => loop {
                        if !alive(*pid) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    },
                }
            };
            tokio::select! {
                () = exited => return Wake::Exited,
                changed = stop.changed() => {
                    return if changed.is_err() { Wake::Gone } else { Wake::Stop };
                }
                () = tokio::time::sleep(wait) => {}
            }
            let ok = probe(
                self.port(),
                self.spec
                    .readiness_probe
                    .as_ref()
                    .map(|p| p.http_get.path.as_str()),
                timeout,
            )
            .await;
            if ok {
                failures = 0;
                ever_ready = true;
                self.set_ready(true);
            } else if ever_ready {
                failures += 1;
                if failures >= failure_threshold {
                    self.set_ready(false);
                }
            } else {
                // Not ready yet: known now (for an adopted instance this ends "unknown").
                self.set_ready(false);
            }
        }
    }

    /// SIGTERM, then SIGKILL after the grace period.
    async fn terminate(&self, running: Running) {
        let grace = Duration::from_secs(self.spec.termination_grace_period_seconds);
        match running {
            Running::Child(mut child) => {
                if let Some(pid) = child.id() {
                    signal(pid, rustix::process::Signal::TERM);
                }
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    tracing::warn!(workload = %self.key, port = self.port(), "grace period over; killing");
                    let _ = child.kill().await;
                }
            }
            Running::Adopted(pid) => {
                signal(pid, rustix::process::Signal::TERM);
                let deadline = tokio::time::Instant::now() + grace;
                while alive(pid) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if alive(pid) {
                    signal(pid, rustix::process::Signal::KILL);
                }
            }
        }
        tracing::info!(workload = %self.key, revision = %self.spec.revision(), port = self.port(), "instance stopped");
    }
}

/// One readiness probe: an HTTP GET answered 2xx/3xx, or (without a path) a TCP connect.
async fn probe(port: u16, path: Option<&str>, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let Some(path) = path else {
            return Some(true);
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: serin-probe\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = std::str::from_utf8(&buf[..got]).ok()?;
        let code: u16 = line.get(9..12)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{HttpGet, Probe};

    /// A real HTTP server every machine of this project has: Python's `http.server`.
    fn python_server(revision: &str) -> ProcessSpec {
        ProcessSpec {
            command: "/usr/bin/python3".into(),
            args: vec![
                "-m".into(),
                "http.server".into(),
                "$(PORT)".into(),
                "--bind".into(),
                "127.0.0.1".into(),
            ],
            env: vec![],
            working_dir: None,
            revision: Some(revision.into()),
            port_env: "PORT".into(),
            readiness_probe: Some(Probe {
                http_get: HttpGet { path: "/".into() },
                period_seconds: 1,
                timeout_seconds: 1,
                failure_threshold: 1,
            }),
            termination_grace_period_seconds: 5,
        }
    }

    async fn until(
        sup: &Supervisor,
        key: &str,
        what: &str,
        cond: impl Fn(&[InstanceView]) -> bool,
    ) -> Vec<InstanceView> {
        let mut changes = sup.changes();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = sup.instances(key);
            if cond(&now) {
                return now;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => panic!("timed out waiting for {what}: {now:?}"),
            }
        }
    }

    /// Leaves for `key` what a controller stopped before it recorded a pid leaves behind: one
    /// primary instance of `spec` (its revision) on `port`, with pid 0.
    fn record_without_pid(
        sup: &Supervisor,
        key: &str,
        spec: &ProcessSpec,
        spec_hash: u64,
        dir: &Path,
        port: u16,
    ) {
        let record = InstanceRecord {
            role: Role::Primary,
            revision: spec
                .revision
                .clone()
                .expect("python_server sets a revision"),
            spec_hash,
            spec: spec.clone(),
            dir: dir.to_path_buf(),
            port,
            pid: 0,
            retiring: false,
        };
        std::fs::create_dir_all(&sup.state_dir).unwrap();
        std::fs::write(
            sup.record_file(key),
            serde_json::to_vec(&vec![record]).unwrap(),
        )
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_restarts_replaces_and_stops_instances() {
        let dir = std::env::temp_dir().join(format!("serin-sup-{}", std::process::id()));
        let sup = Supervisor::new(dir.join("state"), dir.join("logs"));
        let key = "default/web";
        let v1 = python_server("v1");
        assert!(sup.ensure(key, Role::Primary, &v1, &dir).unwrap());
        assert!(
            !sup.ensure(key, Role::Primary, &v1, &dir).unwrap(),
            "idempotent"
        );
        let ready = until(&sup, key, "v1 ready", |i| i.len() == 1 && i[0].ready).await;
        let (port, pid) = (ready[0].port, ready[0].pid);

        // Killed from outside: restarted on the same port.
        signal(pid, rustix::process::Signal::KILL);
        let back = until(&sup, key, "restart", |i| {
            i[0].ready && i[0].pid != pid && i[0].pid != 0
        })
        .await;
        assert_eq!(back[0].port, port);
        assert_eq!(back[0].restarts, 1);

        // A new canary spec replaces the old canary; the primary is untouched.
        sup.ensure(key, Role::Canary, &python_server("v2"), &dir)
            .unwrap();
        until(&sup, key, "canary v2 ready", |i| {
            i.iter().any(|x| x.role == Role::Canary && x.ready)
        })
        .await;
        sup.ensure(key, Role::Canary, &python_server("v3"), &dir)
            .unwrap();
        let now = until(&sup, key, "v2 replaced by v3", |i| {
            let canaries: Vec<_> = i.iter().filter(|x| x.role == Role::Canary).collect();
            canaries.len() == 1 && canaries[0].revision == "v3" && canaries[0].ready
        })
        .await;
        assert!(
            now.iter()
                .any(|x| x.role == Role::Primary && x.revision == "v1" && x.ready)
        );

        // The records on disk let a new supervisor adopt the running processes. They are
        // written after each change, so await the write that matches what is running now
        // (the retiring v2 may still be listed, or v3's pid not yet recorded, just before).
        let mut pids: Vec<u32> = now.iter().map(|x| x.pid).collect();
        pids.sort_unstable();
        let mut changes = sup.changes();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let records: Vec<InstanceRecord> =
                serde_json::from_slice(&std::fs::read(sup.record_file(key)).unwrap()).unwrap();
            let mut on_disk: Vec<u32> = records.iter().map(|r| r.pid).collect();
            on_disk.sort_unstable();
            if on_disk == pids {
                break;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => panic!("records never settled: {on_disk:?} vs {pids:?}"),
            }
        }
        // The controller dies; its processes keep serving.
        drop(sup);
        let again = Supervisor::new(dir.join("state"), dir.join("logs"));
        again.adopt(key);
        let adopted = until(&again, key, "adopted ready", |i| {
            i.len() == 2 && i.iter().all(|x| x.ready)
        })
        .await;
        let mut adopted_pids: Vec<u32> = adopted.iter().map(|x| x.pid).collect();
        let mut expected = pids.clone();
        adopted_pids.sort_unstable();
        expected.sort_unstable();
        assert_eq!(adopted_pids, expected, "same processes, not new ones");
        // The new supervisor's records name them too: a third controller adopts them by pid
        // instead of searching every process for them (adopted ones were recorded as pid 0).
        let records: Vec<InstanceRecord> =
            serde_json::from_slice(&std::fs::read(again.record_file(key)).unwrap()).unwrap();
        let mut on_disk: Vec<u32> = records.iter().map(|r| r.pid).collect();
        on_disk.sort_unstable();
        assert_eq!(on_disk, expected, "adopted pids recorded");

        again.shutdown().await;
        assert!(again.instances(key).is_empty());
        for pid in pids {
            assert!(!alive(pid), "pid {pid} still alive");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_whose_port_another_process_took_moves_to_a_free_port() {
        let dir = std::env::temp_dir().join(format!("serin-sup-taken-{}", std::process::id()));
        let key = "default/web";
        let spec = python_server("v1");
        // Another program listens on the port the supervisor is about to start the instance
        // on: what happens when a port is taken between `free_port` and the child's bind, or
        // while a crashed instance was down (here: a dead instance recorded on that port).
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let sup = Supervisor::new(dir.join("state"), dir.join("logs"));
        record_without_pid(&sup, key, &spec, spec.content_hash(), &dir, taken);
        sup.adopt(key);
        let moved = until(&sup, key, "the instance ready on another port", |i| {
            i.len() == 1 && i[0].ready && i[0].port != taken
        })
        .await;
        // It answers on its new port, and the records say so (a next controller adopts it
        // there).
        assert!(probe(moved[0].port, Some("/"), Duration::from_secs(2)).await);
        let records: Vec<InstanceRecord> =
            serde_json::from_slice(&std::fs::read(sup.record_file(key)).unwrap()).unwrap();
        assert_eq!(records[0].port, moved[0].port);
        sup.shutdown().await;
        drop(squatter);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn free_ports_skip_the_ones_already_handed_out() {
        let first = free_port().unwrap();
        for _ in 0..50 {
            assert_ne!(free_port_except(&[first]).unwrap(), first);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_whose_pid_was_never_recorded_is_adopted_not_started_twice() {
        let dir = std::env::temp_dir().join(format!("serin-sup-orphan-{}", std::process::id()));
        let key = "default/web";
        let spec = python_server("v7");
        // What a controller killed between recording an instance (pid 0) and recording its pid
        // leaves behind: the record without a pid, and the process serving. (Started again on
        // another port if a concurrent test took this one before the orphan bound it.)
        let (port, mut orphan) = loop {
            let port = free_port().unwrap();
            let env = process_env(&spec, port);
            let mut orphan = std::process::Command::new(&spec.command)
                .args(process_args(&spec, &env))
                .envs(&env)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            loop {
                if probe(port, Some("/"), Duration::from_secs(1)).await {
                    break;
                }
                if orphan.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if orphan.try_wait().unwrap().is_none() {
                break (port, orphan);
            }
        };
        let sup = Supervisor::new(dir.join("state"), dir.join("logs"));
        record_without_pid(&sup, key, &spec, 0, &dir, port);
        assert_eq!(unrecorded_instance(&spec, port), Some(orphan.id()));
        sup.adopt(key);
        let adopted = until(&sup, key, "the orphan adopted", |i| {
            i.len() == 1 && i[0].ready
        })
        .await;
        assert_eq!(adopted[0].pid, orphan.id(), "adopted, not started again");
        assert_eq!(adopted[0].restarts, 0);
        sup.shutdown().await;
        assert!(
            orphan.try_wait().unwrap().is_some(),
            "stopped with the rest"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
