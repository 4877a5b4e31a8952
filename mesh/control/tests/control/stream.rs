//! The proxy stream's two forms: duplex (`POST /v1/watch`, acks on the request body) and one-way
//! (`GET /v1/watch` + `POST /v1/ack`), the real client against the real control plane and against
//! a control plane that predates the duplex form.

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use common::{ROUTES, temp_dir};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serin_mesh_api::RouteTable;
use serin_mesh_api::client::{ClientConfig, Sink};
use serin_mesh_api::protocol::{
    Ack, LineDecoder, ServerMessage, StreamAck, WATCH_PATH, encode_line,
};
use serin_mesh_control::Running;
use tokio::sync::mpsc;

async fn control_plane() -> anyhow::Result<(Running, PathBuf)> {
    let dir = temp_dir("stream");
    std::fs::write(dir.join("routes.yaml"), ROUTES)?;
    // No re-reads: these tests never change the files.
    let cp = common::start_local(&dir, Duration::from_secs(3600)).await?;
    Ok((cp, dir))
}

/// Forwards each applied version; refuses versions listed in `refuse`.
struct Probe {
    tx: mpsc::UnboundedSender<u64>,
    refuse: Vec<u64>,
}

impl Sink for Probe {
    fn apply(&mut self, table: RouteTable) -> Result<(), String> {
        let _ = self.tx.send(table.version);
        if self.refuse.contains(&table.version) {
            return Err(format!("version {} is refused by the test", table.version));
        }
        Ok(())
    }
    fn connection(&mut self, _up: bool, _detail: &str) {}
}

fn config(addr: SocketAddr, id: &str, acks_on_stream: bool) -> anyhow::Result<ClientConfig> {
    let mut cfg = ClientConfig::new(
        format!("http://{addr}").parse()?,
        "default/frontend".parse()?,
        id.into(),
    );
    cfg.acks_on_stream = acks_on_stream;
    cfg.backoff_max = Duration::from_millis(200);
    Ok(cfg)
}

async fn applied_version(cp: &Running, id: &str, at_least: u64) -> anyhow::Result<u64> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let st = cp.hub.status();
            if let Some(p) = st.proxies.iter().find(|p| p.id == id)
                && p.applied_version >= at_least
            {
                return p.applied_version;
            }
            // Poll: the status has no per-proxy watch, and a short sleep bounds the wait.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .with_context(|| format!("proxy {id} never acknowledged version {at_least}"))
}

async fn set_weights(cp: &Running, v1: u32, v2: u32) -> anyhow::Result<u64> {
    let body = format!(
        r#"{{"backends":[{{"name":"web-v1","weight":{v1}}},{{"name":"web-v2","weight":{v2}}}]}}"#
    );
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let req = Request::put(format!(
        "http://{}/v1/routes/trafficsplits/default/web/weights",
        cp.addr
    ))
    .body(http_body_util::Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(
        resp.status() == StatusCode::OK,
        "weights: {}",
        resp.status()
    );
    Ok(cp.hub.current().version)
}

#[tokio::test]
async fn acks_on_the_stream_mark_the_route_converged() -> anyhow::Result<()> {
    let (cp, dir) = control_plane().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = tokio::spawn(serin_mesh_api::client::run(
        config(cp.addr, "duplex", true)?,
        Probe { tx, refuse: vec![] },
    ));
    let first = rx.recv().await.context("first snapshot")?;
    assert_eq!(applied_version(&cp, "duplex", first).await?, first);

    let v = set_weights(&cp, 50, 50).await?;
    assert!(v > first);
    assert!(
        cp.hub.wait_applied(v, Duration::from_secs(10)).await,
        "the duplex ack of version {v} was recorded"
    );
    let st = cp
        .hub
        .route_status(
            serin_mesh_control::state::RouteKind::TrafficSplit,
            &serin_mesh_control::world::ObjKey::new("default", "web"),
        )
        .context("route status")?;
    assert!(st.converged && st.proxies == 1, "{st:?}");
    client.abort();
    cp.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn a_refusal_on_the_stream_is_recorded_and_the_route_is_not_converged() -> anyhow::Result<()>
{
    let (cp, dir) = control_plane().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let next = cp.hub.current().version + 1;
    let client = tokio::spawn(serin_mesh_api::client::run(
        config(cp.addr, "picky", true)?,
        Probe {
            tx,
            refuse: vec![next],
        },
    ));
    let first = rx.recv().await.context("first snapshot")?;
    applied_version(&cp, "picky", first).await?;
    let v = set_weights(&cp, 0, 100).await?;
    assert_eq!(v, next);
    let rejected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let st = cp.hub.status();
            if let Some(r) = st.proxies.iter().find_map(|p| p.rejected.clone()) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("the refusal never arrived")?;
    assert_eq!(rejected.0, v);
    assert!(rejected.1.contains("refused by the test"), "{}", rejected.1);
    assert!(!cp.hub.wait_applied(v, Duration::from_millis(200)).await);
    client.abort();
    cp.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn one_way_clients_still_ack_with_post() -> anyhow::Result<()> {
    let (cp, dir) = control_plane().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = tokio::spawn(serin_mesh_api::client::run(
        config(cp.addr, "one-way", false)?,
        Probe { tx, refuse: vec![] },
    ));
    let first = rx.recv().await.context("first snapshot")?;
    applied_version(&cp, "one-way", first).await?;
    let v = set_weights(&cp, 10, 90).await?;
    assert!(cp.hub.wait_applied(v, Duration::from_secs(10)).await);
    client.abort();
    cp.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Opens a raw duplex stream whose request body the test writes.
async fn raw_duplex(
    addr: SocketAddr,
    id: &str,
) -> anyhow::Result<(
    mpsc::UnboundedSender<Bytes>,
    hyper::body::Incoming,
    tokio::task::JoinHandle<()>,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let body = StreamBody::new(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    })));
    let req = Request::post(format!(
        "http://{addr}{WATCH_PATH}?workload=default/frontend&proxy={id}"
    ))
    .body(body)?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    Ok((tx, resp.into_body(), conn))
}

async fn next_snapshot(body: &mut hyper::body::Incoming) -> anyhow::Result<u64> {
    let mut d: LineDecoder = LineDecoder::default();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .context("no snapshot")?
            .context("stream ended")??;
        if let Ok(data) = frame.into_data() {
            for msg in d.push(&data)? {
                if let ServerMessage::Snapshot { version, .. } = msg {
                    return Ok(version);
                }
            }
        }
    }
}

/// The first line of a one-way stream, raw.
async fn first_line(addr: SocketAddr, query: &str) -> anyhow::Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(format!("http://{addr}{WATCH_PATH}?{query}"))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    let mut body = resp.into_body();
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .context("no snapshot")?
            .context("stream ended")??;
        if let Ok(data) = frame.into_data() {
            line.extend_from_slice(&data);
        }
    }
    conn.abort();
    Ok(line)
}

#[tokio::test]
async fn proxies_that_read_aliases_get_each_route_once_and_the_same_table() -> anyhow::Result<()> {
    let (cp, dir) = control_plane().await?;
    let full = first_line(cp.addr, "workload=default/frontend&proxy=full").await?;
    let compact = first_line(cp.addr, "workload=default/frontend&proxy=compact&aliases=1").await?;
    let text = String::from_utf8(compact.clone())?;
    // `web`, `web.default`, `web.default.svc`, `web.default.svc.cluster.local` (no cluster IP).
    assert!(text.contains(r#""aliases":["web.default","#), "{text}");
    assert!(!String::from_utf8(full.clone())?.contains("aliases"));
    assert!(
        compact.len() * 2 < full.len(),
        "{} vs {}",
        compact.len(),
        full.len()
    );
    let decode = |line: &[u8]| -> anyhow::Result<Vec<ServerMessage>> {
        Ok(LineDecoder::<ServerMessage>::default().push(line)?)
    };
    let expected = ServerMessage::Snapshot {
        version: cp.hub.current().version,
        table: cp.hub.current().table("default"),
    };
    assert_eq!(decode(&full)?, vec![expected.clone()]);
    assert_eq!(decode(&compact)?, vec![expected]);
    cp.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn a_bad_ack_line_is_counted_and_the_next_good_one_still_counts() -> anyhow::Result<()> {
    let (cp, dir) = control_plane().await?;
    let (acks, mut body, conn) = raw_duplex(cp.addr, "raw").await?;
    let v = next_snapshot(&mut body).await?;
    acks.send(Bytes::from_static(
        b"{\"proxy\":\"raw\",\"version\":1}\nnot json\n",
    ))?;
    // Split across two frames on purpose.
    let good = encode_line(&StreamAck {
        version: v,
        error: None,
    });
    let (a, b) = good.split_at(3);
    acks.send(Bytes::copy_from_slice(a))?;
    acks.send(Bytes::copy_from_slice(b))?;
    assert_eq!(applied_version(&cp, "raw", v).await?, v);
    let metrics = cp.hub.metrics.encode();
    let bad = metrics
        .lines()
        .find(|l| l.contains("kind=\"ack\"") && l.contains("reason=\"BadAck\""))
        .with_context(|| format!("no BadAck error counted:\n{metrics}"))?;
    assert!(bad.ends_with(" 2"), "two bad lines: {bad}");
    conn.abort();
    cp.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn acks_read_from_a_replaced_stream_do_not_speak_for_its_successor() -> anyhow::Result<()> {
    let (cp, dir) = control_plane().await?;
    let (old_acks, mut old_body, old_conn) = raw_duplex(cp.addr, "same").await?;
    let v = next_snapshot(&mut old_body).await?;
    let (new_acks, mut new_body, new_conn) = raw_duplex(cp.addr, "same").await?;
    assert_eq!(next_snapshot(&mut new_body).await?, v);
    // The old stream acks; the proxy entry belongs to the new stream, which has not.
    old_acks.send(Bytes::from(encode_line(&StreamAck {
        version: v,
        error: None,
    })))?;
    assert!(!cp.hub.wait_applied(v, Duration::from_millis(300)).await);
    new_acks.send(Bytes::from(encode_line(&StreamAck {
        version: v,
        error: None,
    })))?;
    assert!(cp.hub.wait_applied(v, Duration::from_secs(10)).await);
    old_conn.abort();
    new_conn.abort();
    cp.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// A control plane from before the duplex form: `GET /v1/watch` and `POST /v1/ack` only (a
/// `POST /v1/watch` gets axum's `405`).
async fn old_control_plane() -> anyhow::Result<(SocketAddr, Arc<Mutex<Vec<Ack>>>)> {
    use axum::routing::{get, post};
    let acks = Arc::new(Mutex::new(Vec::new()));
    let recorded = acks.clone();
    let app = axum::Router::new()
        .route(
            WATCH_PATH,
            get(|| async {
                let line = encode_line(&ServerMessage::Snapshot {
                    version: 7,
                    table: RouteTable {
                        version: 7,
                        routes: vec![],
                    },
                });
                let stream = futures::stream::once(async move {
                    Ok::<_, std::convert::Infallible>(Bytes::from(line))
                })
                .chain(futures::stream::pending());
                axum::body::Body::from_stream(stream)
            }),
        )
        .route(
            "/v1/ack",
            post(move |body: Bytes| {
                let recorded = recorded.clone();
                async move {
                    let ack: Ack = serde_json::from_slice(&body).expect("ack body");
                    recorded.lock().expect("acks").push(ack);
                    StatusCode::NO_CONTENT
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok((addr, acks))
}

#[tokio::test]
async fn against_a_control_plane_without_duplex_the_client_falls_back_to_post_acks()
-> anyhow::Result<()> {
    let (addr, acks) = old_control_plane().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = tokio::spawn(serin_mesh_api::client::run(
        config(addr, "legacy", true)?,
        Probe { tx, refuse: vec![] },
    ));
    let v = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .context("no snapshot through the fallback")?
        .context("channel")?;
    assert_eq!(v, 7);
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(a) = acks.lock().expect("acks").first().cloned() {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("no POST /v1/ack")?;
    assert_eq!(
        got,
        Ack {
            proxy: "legacy".into(),
            version: 7,
            error: None
        }
    );
    client.abort();
    Ok(())
}

/// A control plane that takes the TCP connection (and the HTTP/2 preface) but never answers
/// the subscription: a hung process, or a node gone while the kernel still held the socket.
/// Each accepted connection is reported and then held open, unanswered.
async fn silent_control_plane() -> anyhow::Result<(SocketAddr, mpsc::UnboundedReceiver<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
            let _ = tx.send(());
        }
    });
    Ok((addr, rx))
}

#[tokio::test]
async fn a_control_plane_that_never_answers_the_subscription_is_dialled_again() -> anyhow::Result<()>
{
    let (addr, mut accepted) = silent_control_plane().await?;
    let mut cfg = config(addr, "patient", true)?;
    cfg.idle_timeout = Duration::from_millis(300);
    let (tx, _rx) = mpsc::unbounded_channel();
    let client = tokio::spawn(serin_mesh_api::client::run(
        cfg,
        Probe { tx, refuse: vec![] },
    ));
    for n in 1..=2 {
        tokio::time::timeout(Duration::from_secs(10), accepted.recv())
            .await
            .with_context(|| format!("connection {n} never came: the client waits for ever on an unanswered subscription"))?
            .context("listener gone")?;
    }
    client.abort();
    Ok(())
}
