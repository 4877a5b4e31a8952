//! Leader election and the controller process against a fake API server that keeps state: the
//! Lease is stored and versioned as the real server does (create, read, compare-and-swap on the
//! resourceVersion, 409 on a stale write, 404 when its namespace is missing), and the watches
//! of the controller are answered with a list and then held open. Time is tokio's, paused, so
//! a lease duration passes in an instant and a test can tell "before" from "after" exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use serin_core::Timestamp;
use serin_kube::testing::{Call, Handle, mock_client, respond, status_err};
use serin_kube::{KubernetesOptions, LeaderElection, LeaseConfig, RunError, run_with};
use tokio::sync::{mpsc, oneshot};
use tower_test::mock::SendResponse;

const T0: i64 = 1_700_000_000_000;
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/serin-system/leases";

/// A list or a watch (the controller's informers), not a call about one object.
fn is_watch_or_list(call: &Call) -> bool {
    call.method == "GET" && (call.is_watch() || call.path.ends_with('s'))
}

/// What the fake API server knows.
#[derive(Default)]
struct World {
    /// The stored Lease, when one exists.
    lease: Option<Value>,
    /// Last resourceVersion handed out.
    version: u64,
    /// Namespaces that exist (a Lease in any other is a 404 on create).
    namespaces: Vec<String>,
    /// Canaries returned by the Canary list.
    canaries: Vec<Value>,
    /// Lease calls get no answer (an API server that stopped answering this replica).
    hold_leases: bool,
}

struct FakeApi {
    world: Arc<Mutex<World>>,
    calls: mpsc::UnboundedReceiver<Call>,
    seen: Vec<Call>,
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

/// The API server's answer to one call; `None` holds the request open (a watch).
fn answer(world: &mut World, call: &Call) -> Option<(u16, Value)> {
    if call.query.contains("watch=true") {
        return None;
    }
    let (m, p) = (call.method.as_str(), call.path.as_str());
    if let Some(rest) = p.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        if world.hold_leases {
            return None;
        }
        let ns = rest.split('/').next().unwrap_or_default().to_string();
        return Some(lease_call(world, m, &ns, call));
    }
    let l = |kind: &str, v: &str, items| Some((200, list(kind, v, items)));
    match (m, p) {
        ("GET", "/apis/serin.dev/v1beta1/canaries") => {
            l("Canary", "serin.dev/v1beta1", world.canaries.clone())
        }
        ("GET", "/apis/apps/v1/deployments") => l("Deployment", "apps/v1", vec![]),
        ("GET", "/apis/apps/v1/daemonsets") => l("DaemonSet", "apps/v1", vec![]),
        ("GET", "/api/v1/services") => l("Service", "v1", vec![]),
        // Whatever a reconcile asks for does not exist: the test only needs to see it asked.
        _ => Some((404, status_err(404, "NotFound", "not found"))),
    }
}

fn lease_call(world: &mut World, method: &str, ns: &str, call: &Call) -> (u16, Value) {
    if !world.namespaces.iter().any(|n| n == ns) {
        // What the real server says for a Lease in a missing namespace.
        return match method {
            "GET" => (
                404,
                status_err(
                    404,
                    "NotFound",
                    "leases.coordination.k8s.io \"serin-controller\" not found",
                ),
            ),
            _ => (
                404,
                status_err(404, "NotFound", &format!("namespaces \"{ns}\" not found")),
            ),
        };
    }
    match (method, &world.lease) {
        ("GET", Some(l)) => (200, l.clone()),
        ("GET", None) => (
            404,
            status_err(
                404,
                "NotFound",
                "leases.coordination.k8s.io \"serin-controller\" not found",
            ),
        ),
        ("POST", Some(_)) => (
            409,
            status_err(
                409,
                "AlreadyExists",
                "leases.coordination.k8s.io \"serin-controller\" already exists",
            ),
        ),
        ("POST", None) | ("PUT", Some(_)) => {
            if method == "PUT" {
                let stored = &world.lease.as_ref().unwrap()["metadata"]["resourceVersion"];
                if call.body["metadata"]["resourceVersion"] != *stored {
                    return (
                        409,
                        status_err(
                            409,
                            "Conflict",
                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"serin-controller\": the object has been modified; please apply your changes to the latest version and try again",
                        ),
                    );
                }
            }
            world.version += 1;
            let mut l = call.body.clone();
            l["metadata"]["resourceVersion"] = json!(world.version.to_string());
            world.lease = Some(l.clone());
            (if method == "POST" { 201 } else { 200 }, l)
        }
        _ => (405, status_err(405, "MethodNotAllowed", "not allowed")),
    }
}

/// Starts the fake API server; returns the client the code under test uses.
fn fake_api(world: World, default_namespace: &str) -> (Client, FakeApi) {
    let (client, handle) = mock_client(default_namespace);
    let world = Arc::new(Mutex::new(world));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(serve(handle, world.clone(), tx));
    (
        client,
        FakeApi {
            world,
            calls: rx,
            seen: vec![],
        },
    )
}

async fn serve(mut handle: Handle, world: Arc<Mutex<World>>, calls: mpsc::UnboundedSender<Call>) {
    // Watches stay open until the server goes away.
    let mut held: Vec<SendResponse<http::Response<Body>>> = vec![];
    while let Some((req, send)) = handle.next_request().await {
        let call = Call::read(req).await;
        let reply = answer(&mut world.lock().unwrap(), &call);
        let _ = calls.send(call);
        match reply {
            Some((code, v)) => respond(send, code, &v),
            None => held.push(send),
        }
    }
}

impl FakeApi {
    /// Waits (up to a minute of test time) for a call that `wanted` accepts.
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Call) -> bool) -> Call {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let call = self
                    .calls
                    .recv()
                    .await
                    .expect("the fake API server stopped");
                self.seen.push(call.clone());
                if wanted(&call) {
                    return call;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {what}; calls: {:#?}", self.summary()))
    }

    /// Everything answered so far, as `METHOD path`.
    fn summary(&mut self) -> Vec<String> {
        while let Ok(c) = self.calls.try_recv() {
            self.seen.push(c);
        }
        self.seen
            .iter()
            .map(|c| format!("{} {}?{}", c.method, c.path, c.query))
            .collect()
    }

    fn lease(&self) -> Option<Value> {
        self.world.lock().unwrap().lease.clone()
    }

    /// The stored Lease's holder, as the API server has it.
    fn holder(&self) -> Option<String> {
        self.lease()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    }

    /// Another replica writes the Lease (a renewal with its own clock).
    fn write_lease(&self, holder: &str, renew: &str) {
        let mut w = self.world.lock().unwrap();
        w.version += 1;
        w.lease = Some(lease(holder, renew, &w.version.to_string()));
    }
}

fn lease(holder: &str, renew: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "serin-controller", "namespace": "serin-system", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew, "acquireTime": renew, "leaseTransitions": 3}
    })
}

fn lease_config(namespace: &str) -> LeaseConfig {
    LeaseConfig {
        name: "serin-controller".into(),
        namespace: namespace.into(),
        identity: "pod-a".into(),
        duration: Duration::from_secs(15),
    }
}

fn world_with_namespace() -> World {
    World {
        namespaces: vec!["serin-system".into()],
        ..Default::default()
    }
}

fn options(leader_election: Option<LeaseConfig>) -> KubernetesOptions {
    KubernetesOptions {
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        default_provider: "serin".into(),
        namespace: None,
        control_plane: None,
        leader_election,
        reporter: "serin-controller".into(),
        metrics_server: None,
    }
}

fn canary() -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "c-uid-1", "resourceVersion": "41", "generation": 1},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 2, "maxWeight": 30, "stepWeight": 10}
        }
    })
}

/// A call a reconcile of the Canary makes (anything about it or its target).
fn reconciles(c: &Call) -> bool {
    !is_watch_or_list(c) && c.path.contains("/namespaces/test/")
}

type Running = tokio::task::JoinHandle<Result<(), RunError>>;

fn start(client: Client, leader_election: Option<LeaseConfig>) -> (Running, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(run_with(client, options(leader_election), async move {
        let _ = stopped.await;
    }));
    (run, stop)
}

// ---------------------------------------------------------------- the process

#[tokio::test(start_paused = true)]
async fn without_leader_election_the_controller_reconciles_and_runs_until_stopped() {
    let (client, mut api) = fake_api(
        World {
            canaries: vec![canary()],
            ..Default::default()
        },
        "default",
    );
    let (run, stop) = start(client, None);
    let call = api
        .wait_for("reconcile of the listed Canary", reconciles)
        .await;
    assert!(!call.path.contains("leases"), "no Lease without election");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        !run.is_finished(),
        "the controller keeps running until told to stop"
    );
    stop.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), run).await;
    r.expect("stops on the signal").unwrap().unwrap();
    assert!(
        api.summary().iter().all(|c| !c.contains("leases")),
        "no Lease calls at all"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_lease_namespace_is_an_error_naming_the_flag() {
    let (client, mut api) = fake_api(World::default(), "default");
    let (run, _stop) = start(client, Some(lease_config("serin-system")));
    let r = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the controller stops instead of waiting for the namespace")
        .unwrap();
    let message = r.expect_err("a missing namespace is an error").to_string();
    for needle in ["serin-system", "--lease-namespace", "POD_NAMESPACE"] {
        assert!(message.contains(needle), "{needle:?} in {message:?}");
    }
    assert!(
        api.summary().iter().all(|c| !c.contains("canaries")),
        "nothing reconciled"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unset_lease_namespace_is_the_clients_default_namespace() {
    let (client, mut api) = fake_api(
        World {
            namespaces: vec!["team-a".into()],
            ..Default::default()
        },
        "team-a",
    );
    let (run, stop) = start(client, Some(lease_config("")));
    let created = api
        .wait_for("the Lease created", |c| {
            c.method == "POST" && c.path.contains("leases")
        })
        .await;
    assert_eq!(
        created.path,
        "/apis/coordination.k8s.io/v1/namespaces/team-a/leases"
    );
    assert_eq!(created.body["metadata"]["namespace"], "team-a");
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// Waits until the replica leads: it created the Lease, then started watching Canaries.
/// Returns the instant the Lease was seen created.
async fn until_leading(api: &mut FakeApi) -> tokio::time::Instant {
    api.wait_for("the Lease created", |c| {
        c.method == "POST" && c.path == LEASES
    })
    .await;
    let created = tokio::time::Instant::now();
    api.wait_for("the Canary watch", |c| c.path.ends_with("/canaries"))
        .await;
    created
}

#[tokio::test(start_paused = true)]
async fn a_leader_stopped_gracefully_releases_its_lease() {
    let (client, mut api) = fake_api(world_with_namespace(), "default");
    let (run, stop) = start(client, Some(lease_config("serin-system")));
    until_leading(&mut api).await;
    assert_eq!(api.holder().as_deref(), Some("pod-a"));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stops on the signal")
        .unwrap()
        .unwrap();
    let stored = api.lease().unwrap();
    assert_eq!(api.holder(), None, "released: no holder; lease {stored}");
    assert_eq!(stored["spec"]["leaseDurationSeconds"], 1);

    // The standby takes over at its very next attempt, not a lease duration later.
    let (client, _api2) = fake_api(
        World {
            lease: Some(stored),
            version: 10,
            ..world_with_namespace()
        },
        "default",
    );
    let mut standby = lease_config("serin-system");
    standby.identity = "pod-b".into();
    let b = LeaderElection::new(client, standby);
    assert!(
        b.try_acquire_or_renew(Timestamp::from_millis(T0))
            .await
            .unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_hang_stops_leading_before_a_standby_may_take_over() {
    let (client, mut api) = fake_api(world_with_namespace(), "default");
    let (run, _stop) = start(client, Some(lease_config("serin-system")));
    // The last write that reached the API server was no later than this.
    let written = until_leading(&mut api).await;
    // From now on the API server never answers this replica's Lease calls (a partition, an
    // overloaded server): a standby that still reaches it sees the record unchanged and takes
    // over 15s after it last saw it change.
    api.world.lock().unwrap().hold_leases = true;
    let r = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("a leader that cannot renew stops leading")
        .unwrap();
    let stopped_after = written.elapsed();
    assert!(
        matches!(r, Err(RunError::LostLease(_))),
        "exits as a lost lease: {r:?}"
    );
    assert!(
        stopped_after < Duration::from_secs(15),
        "stopped {stopped_after:?} after its last renewal; a standby may lead from 15s on"
    );
}

#[tokio::test(start_paused = true)]
async fn a_standby_whose_lease_calls_hang_still_stops_on_the_signal() {
    let mut world = world_with_namespace();
    world.hold_leases = true;
    let (client, mut api) = fake_api(world, "default");
    let (run, stop) = start(client, Some(lease_config("serin-system")));
    api.wait_for("the Lease read", |c| c.path.contains("leases"))
        .await;
    stop.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("SIGTERM stops a standby whose API call never answers");
    r.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_leader_stopping_while_the_api_does_not_answer_still_exits() {
    let (client, mut api) = fake_api(world_with_namespace(), "default");
    let (run, stop) = start(client, Some(lease_config("serin-system")));
    until_leading(&mut api).await;
    api.world.lock().unwrap().hold_leases = true;
    stop.send(()).unwrap();
    // Releasing the Lease is a courtesy to the standby; a release that gets no answer must
    // not keep the process from exiting (the kubelet would kill it after its grace period).
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the leader exits although its release gets no answer");
    r.unwrap().unwrap();
}

// ---------------------------------------------------------------- expiry by observation

async fn attempt(e: &LeaderElection) -> bool {
    e.try_acquire_or_renew(Timestamp::from_millis(T0))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_old_renew_time_from_a_skewed_clock_is_not_expiry_while_the_record_is_fresh() {
    // The holder's clock is an hour behind ours: by wall clock its lease looks long expired.
    let (client, api) = fake_api(world_with_namespace(), "default");
    api.write_lease("pod-b", "2023-11-14T21:13:15.000000Z");
    let a = LeaderElection::new(client, lease_config("serin-system"));
    assert!(!attempt(&a).await, "first sighting: held");
    tokio::time::advance(Duration::from_secs(14)).await;
    assert!(!attempt(&a).await, "unchanged for 14s of a 15s lease: held");
    assert_eq!(api.holder().as_deref(), Some("pod-b"));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(attempt(&a).await, "unchanged for 16s: expired, taken over");
    let l = api.lease().unwrap();
    assert_eq!(l["spec"]["holderIdentity"], "pod-a");
    assert_eq!(l["spec"]["leaseTransitions"], 4);
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_keeps_renewing_keeps_the_lease_whatever_its_clock_says() {
    let (client, api) = fake_api(world_with_namespace(), "default");
    let a = LeaderElection::new(client, lease_config("serin-system"));
    for i in 0..10 {
        // Each renewal is stamped an hour in the past (skewed clock) but changes the record.
        api.write_lease("pod-b", &format!("2023-11-14T21:13:{:02}.000000Z", i * 5));
        assert!(!attempt(&a).await, "renewal {i}: held");
        tokio::time::advance(Duration::from_secs(5)).await;
    }
    assert_eq!(api.holder().as_deref(), Some("pod-b"));
}

#[tokio::test(start_paused = true)]
async fn a_renew_time_in_the_future_does_not_keep_a_stopped_holder_leading() {
    // The holder's clock is an hour ahead, then it stops renewing.
    let (client, api) = fake_api(world_with_namespace(), "default");
    api.write_lease("pod-b", "2023-11-14T23:13:15.000000Z");
    let a = LeaderElection::new(client, lease_config("serin-system"));
    assert!(!attempt(&a).await);
    tokio::time::advance(Duration::from_secs(16)).await;
    assert!(attempt(&a).await, "unchanged for a whole lease duration");
    assert_eq!(api.holder().as_deref(), Some("pod-a"));
}

#[tokio::test(start_paused = true)]
async fn of_two_replicas_racing_for_an_expired_lease_one_wins() {
    let (client, api) = fake_api(world_with_namespace(), "default");
    api.write_lease("pod-c", "2023-11-14T22:12:00.000000Z");
    let a = LeaderElection::new(client.clone(), lease_config("serin-system"));
    let mut b_config = lease_config("serin-system");
    b_config.identity = "pod-b".into();
    let b = LeaderElection::new(client, b_config);
    assert!(!attempt(&a).await);
    assert!(!attempt(&b).await);
    tokio::time::advance(Duration::from_secs(16)).await;
    let (ra, rb) = tokio::join!(attempt(&a), attempt(&b));
    assert!(ra ^ rb, "exactly one leads: a={ra} b={rb}");
    let winner = if ra { "pod-a" } else { "pod-b" };
    assert_eq!(api.holder().as_deref(), Some(winner));
    // The loser saw the winner's write: a fresh record, so it keeps standing by.
    let loser = if ra { &b } else { &a };
    assert!(!attempt(loser).await);
}
