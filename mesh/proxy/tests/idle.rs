//! Connections and bodies that go quiet: closed after their idle timeouts, busy ones kept.

mod support;

use std::time::Duration;

use http::Request;
use serin_proxy::{Proxy, ProxyConfig};
use support::*;

async fn proxy_idle(h2_idle: Duration, app: &Upstream) -> Proxy {
    let p = Proxy::start(ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        h2_idle_timeout: h2_idle,
        ..ProxyConfig::default()
    })
    .await
    .expect("proxy starts");
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: svc\n    rules:\n      - backends: [{{ name: app, endpoints: [\"{}\"] }}]\n",
            app.addr
        )))
        .expect("table");
    p
}

async fn h2_request(send: &mut h2::client::SendRequest<bytes::Bytes>, path: &str) -> Vec<u8> {
    let req = Request::get(format!("http://svc{path}"))
        .body(())
        .expect("request");
    let (resp, _) = send
        .clone()
        .ready()
        .await
        .expect("ready")
        .send_request(req, true)
        .expect("send");
    let mut body = resp.await.expect("response").into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test]
async fn an_idle_h2c_client_connection_is_closed_and_a_busy_one_is_not() {
    let app = upstream("app").await;
    let p = proxy_idle(Duration::from_millis(300), &app).await;
    let tcp = tokio::net::TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("handshake");
    let mut conn = tokio::spawn(conn);

    // A stream open for longer than the idle timeout keeps the connection.
    let slow = {
        let mut send = send.clone();
        tokio::spawn(async move { h2_request(&mut send, "/wait").await })
    };
    let mut app = app;
    assert_eq!(
        within(10, app.seen.recv()).await.expect("seen").path,
        "/wait"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut conn)
            .await
            .is_err(),
        "closed while a stream was open"
    );
    app.release.notify_one();
    assert_eq!(within(10, slow).await.expect("task"), b"app");
    assert_eq!(h2_request(&mut send, "/").await, b"app");

    // Then nothing: the proxy says GOAWAY and the connection ends.
    within(10, &mut conn)
        .await
        .expect("connection task")
        .expect("closed cleanly");
}
