//! Webhook and alert clients against real HTTP servers on 127.0.0.1:0.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::receiver::{next, receiver};
use serin_controller::alerts::{Alert, AlertClient, AlertTarget, ProviderKind, Severity};
use serin_controller::http::HttpClient;
use serin_controller::webhook::{
    SIGNATURE_HEADER, WebhookCall, WebhookClient, WebhookPayload, verify_signature,
};

fn call(addr: SocketAddr, retries: u32, timeout: Duration, key: Option<&[u8]>) -> WebhookCall {
    WebhookCall {
        name: "load-test".into(),
        url: format!("http://{addr}/hook"),
        timeout,
        retries,
        signing_key: key.map(|k| k.to_vec()),
        payload: WebhookPayload {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            checksum: "abc123".into(),
            metadata: [(
                "cmd".to_string(),
                "hey -z 1m http://podinfo-canary".to_string(),
            )]
            .into_iter()
            .collect(),
        },
    }
}

fn client() -> WebhookClient {
    WebhookClient::new(HttpClient::new()).with_backoff(Duration::from_millis(10))
}

#[tokio::test]
async fn a_webhook_posts_flaggers_body_and_succeeds_on_200() {
    let mut r = receiver(vec![(200, Duration::ZERO)]).await;
    let out = client()
        .call(&call(r.addr, 0, Duration::from_secs(5), None))
        .await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.status, Some(200));
    assert_eq!(out.body, "answer 200");
    assert_eq!(out.attempts, 1);
    let seen = next(&mut r).await;
    assert_eq!(seen.path, "/hook");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert!(
        seen.headers.get(SIGNATURE_HEADER).is_none(),
        "no secret, no signature"
    );
    let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "abc123",
            "metadata": {"cmd": "hey -z 1m http://podinfo-canary"}
        })
    );
}

#[tokio::test]
async fn status_202_is_success_and_203_is_failure() {
    let r = receiver(vec![(202, Duration::ZERO), (203, Duration::ZERO)]).await;
    let c = client();
    assert!(
        c.call(&call(r.addr, 0, Duration::from_secs(5), None))
            .await
            .ok
    );
    let out = c.call(&call(r.addr, 0, Duration::from_secs(5), None)).await;
    assert!(!out.ok);
    assert_eq!(out.status, Some(203));
    assert_eq!(out.summary(), "status 203: answer 203");
}

#[tokio::test]
async fn a_signed_webhook_carries_a_verifiable_hmac_of_the_exact_body() {
    let mut r = receiver(vec![(200, Duration::ZERO)]).await;
    let key = b"s3cret";
    assert!(
        client()
            .call(&call(r.addr, 0, Duration::from_secs(5), Some(key)))
            .await
            .ok
    );
    let seen = next(&mut r).await;
    let sig = seen.headers[SIGNATURE_HEADER].to_str().unwrap().to_string();
    assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
    assert!(verify_signature(key, &seen.body, &sig));
    assert!(!verify_signature(b"other key", &seen.body, &sig));
    let mut tampered = seen.body.to_vec();
    tampered[0] = b' ';
    assert!(!verify_signature(key, &tampered, &sig));
}

#[tokio::test]
async fn failed_attempts_are_retried_until_one_succeeds() {
    let mut r = receiver(vec![
        (500, Duration::ZERO),
        (503, Duration::ZERO),
        (200, Duration::ZERO),
    ])
    .await;
    let out = client()
        .call(&call(r.addr, 2, Duration::from_secs(5), None))
        .await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.attempts, 3);
    for _ in 0..3 {
        next(&mut r).await;
    }
}

#[tokio::test]
async fn retries_are_bounded() {
    let mut r = receiver(vec![]).await;
    let out = client()
        .call(&call(r.addr, 1, Duration::from_secs(5), None))
        .await;
    assert!(!out.ok);
    assert_eq!(out.attempts, 2);
    assert_eq!(out.status, Some(500));
    next(&mut r).await;
    next(&mut r).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), r.seen.recv())
            .await
            .is_err(),
        "no third attempt"
    );
}

#[tokio::test]
async fn a_slow_receiver_hits_the_timeout() {
    let r = receiver(vec![(200, Duration::from_secs(3))]).await;
    let started = std::time::Instant::now();
    let out = client()
        .call(&call(r.addr, 0, Duration::from_millis(300), None))
        .await;
    let took = started.elapsed();
    assert!(!out.ok);
    assert_eq!(out.status, None);
    assert!(
        out.error.as_deref().unwrap().contains("no response within"),
        "{out:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "timeout not honoured: {took:?}"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_a_failed_call_not_a_panic() {
    // Bind and drop to get a port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = client()
        .call(&call(addr, 0, Duration::from_secs(2), None))
        .await;
    assert!(!out.ok);
    assert!(out.error.is_some());
}

#[tokio::test]
async fn a_malformed_url_is_not_retried() {
    let mut c = call(
        "127.0.0.1:1".parse().unwrap(),
        3,
        Duration::from_secs(1),
        None,
    );
    c.url = "ftp://example/hook".into();
    let out = client().call(&c).await;
    assert!(!out.ok);
    assert_eq!(out.attempts, 1);
    assert!(
        out.error
            .unwrap()
            .contains("accepted schemes are http and https")
    );
}

fn alert(severity: Severity) -> Alert {
    Alert {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: "Failed".into(),
        severity,
        message: "Canary analysis failed: request-success-rate 91.2 < 99".into(),
        fields: vec![("Target".into(), "Deployment/podinfo.test".into())],
    }
}

fn target(kind: ProviderKind, addr: SocketAddr) -> AlertTarget {
    AlertTarget {
        kind,
        address: format!("http://{addr}/alert"),
        channel: Some("#releases".into()),
        username: Some("serin-bot".into()),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn slack_alerts_use_attachments_with_the_severity_colour() {
    let mut r = receiver(vec![(200, Duration::ZERO)]).await;
    AlertClient::new(HttpClient::new())
        .send(
            &target(ProviderKind::Slack, r.addr),
            &alert(Severity::Error),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&next(&mut r).await.body).unwrap();
    assert_eq!(v["channel"], "#releases");
    assert_eq!(v["username"], "serin-bot");
    assert_eq!(v["attachments"][0]["color"], "danger");
    assert_eq!(v["attachments"][0]["author_name"], "podinfo.test");
    assert_eq!(
        v["attachments"][0]["text"],
        "Canary analysis failed: request-success-rate 91.2 < 99"
    );
    assert_eq!(v["attachments"][0]["fields"][0]["title"], "Target");
}

#[tokio::test]
async fn msteams_discord_gchat_and_generic_bodies() {
    let mut r = receiver(vec![(200, Duration::ZERO); 4]).await;
    let c = AlertClient::new(HttpClient::new());
    c.send(
        &target(ProviderKind::MsTeams, r.addr),
        &alert(Severity::Warn),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&next(&mut r).await.body).unwrap();
    assert_eq!(v["@type"], "MessageCard");
    assert_eq!(v["sections"][0]["activityTitle"], "podinfo.test");
    assert_eq!(v["sections"][0]["facts"][0]["name"], "Target");

    c.send(
        &target(ProviderKind::Discord, r.addr),
        &alert(Severity::Info),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&next(&mut r).await.body).unwrap();
    assert_eq!(v["embeds"][0]["title"], "podinfo.test");
    assert_eq!(v["embeds"][0]["color"], 0x2EB886);

    c.send(
        &target(ProviderKind::GoogleChat, r.addr),
        &alert(Severity::Info),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&next(&mut r).await.body).unwrap();
    assert!(v["text"].as_str().unwrap().contains("podinfo.test"), "{v}");

    c.send(
        &target(ProviderKind::Generic, r.addr),
        &alert(Severity::Error),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&next(&mut r).await.body).unwrap();
    assert_eq!(v["severity"], "error");
    assert_eq!(v["phase"], "Failed");
    assert_eq!(v["fields"]["Target"], "Deployment/podinfo.test");
}

#[tokio::test]
async fn a_rejected_alert_is_an_error_with_the_status() {
    let r = receiver(vec![(404, Duration::ZERO)]).await;
    let err = AlertClient::new(HttpClient::new())
        .send(
            &target(ProviderKind::Generic, r.addr),
            &alert(Severity::Info),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "rejected");
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn a_slow_alert_receiver_hits_the_timeout() {
    let r = receiver(vec![(200, Duration::from_secs(3))]).await;
    let mut t = target(ProviderKind::Slack, r.addr);
    t.timeout = Duration::from_millis(200);
    let err = AlertClient::new(HttpClient::new())
        .send(&t, &alert(Severity::Info))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "timeout");
}

#[test]
fn unset_severity_means_info_and_filters_follow_flaggers_docs() {
    assert_eq!(Severity::from_spec(None).unwrap(), Severity::Info);
    assert_eq!(Severity::from_spec(Some("")).unwrap(), Severity::Info);
    let err = Severity::from_spec(Some("critical"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("severity") && err.contains("info, warn, error"),
        "{err}"
    );
    assert!(Severity::Info.admits(Severity::Info));
    assert!(Severity::Info.admits(Severity::Error));
    assert!(!Severity::Warn.admits(Severity::Info));
    assert!(Severity::Warn.admits(Severity::Warn));
    assert!(!Severity::Error.admits(Severity::Warn));
    assert!(Severity::Error.admits(Severity::Error));
}

#[test]
fn unknown_provider_types_name_the_field_and_the_accepted_ones() {
    let err = "pagerduty".parse::<ProviderKind>().unwrap_err().to_string();
    assert!(err.starts_with("spec.type:"), "{err}");
    assert!(err.contains("slack") && err.contains("msteams") && err.contains("discord"));
}

#[tokio::test]
async fn a_hook_that_asks_for_a_signature_is_never_called_unsigned() {
    use serin_controller::adapters::Hooks;
    use serin_controller::hooks::HttpHooks;
    let mut r = receiver(vec![(200, Duration::ZERO)]).await;
    let canary: serin_api::Canary = serde_json::from_value(serde_json::json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 1, "stepWeight": 10, "webhooks": [{
                "name": "gate", "type": "confirm-rollout", "url": format!("http://{}/", r.addr),
                "signingSecretRef": {"name": "hook-keys", "key": "hmac"}
            }]}
        }
    }))
    .unwrap();
    let (_, mut ctx) = serin_controller::plan::context("test", &canary).unwrap();
    let hooks = HttpHooks::new(client());
    let webhook = ctx.plan.webhooks[0].clone();
    let phase = serin_core::Phase::Progressing;
    // No platform read the key: the call fails, naming the field, and nothing is sent.
    let out = hooks
        .call(&ctx, &webhook, phase, "rev", Default::default())
        .await;
    assert!(!out.ok);
    let error = out.error.unwrap();
    assert!(
        error.contains("spec.analysis.webhooks[0].signingSecretRef")
            && error.contains("not called"),
        "{error}"
    );
    // With the key the same hook is called and signed.
    ctx.hooks.get_mut("gate").unwrap().signing_key = Some(b"k".to_vec());
    let out = hooks
        .call(&ctx, &webhook, phase, "rev", Default::default())
        .await;
    assert!(out.ok, "{out:?}");
    let seen = next(&mut r).await;
    let header = seen.headers[SIGNATURE_HEADER].to_str().unwrap();
    assert!(verify_signature(b"k", &seen.body, header));
    assert!(
        r.seen.try_recv().is_err(),
        "exactly one request reached the receiver"
    );
}

/// A server that answers every request with `status` and `Location: location`, then closes.
async fn redirector(status: u16, location: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    redirect_with(listener, status, location);
    addr
}

fn redirect_with(listener: tokio::net::TcpListener, status: u16, location: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                // Read the request head and its body before answering, as a server does.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
}

#[tokio::test]
async fn a_307_or_308_redirect_is_followed_with_the_same_body_and_signature() {
    // Flagger's Go client follows these (method and body kept, as RFC 9110 says); a receiver
    // behind an http->https or trailing-slash redirect keeps working.
    let mut r = receiver(vec![(200, Duration::ZERO), (200, Duration::ZERO)]).await;
    for status in [307, 308] {
        let from = redirector(status, format!("http://{}/hook/", r.addr)).await;
        let key = b"k3y";
        let out = client()
            .call(&call(from, 0, Duration::from_secs(5), Some(key)))
            .await;
        assert!(out.ok, "{status}: {out:?}");
        assert_eq!(out.status, Some(200));
        let seen = next(&mut r).await;
        assert_eq!(seen.path, "/hook/");
        let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(v["checksum"], "abc123", "the same body");
        let sig = seen.headers[SIGNATURE_HEADER].to_str().unwrap();
        assert!(verify_signature(key, &seen.body, sig));
    }
}

#[tokio::test]
async fn a_301_302_or_303_redirect_fails_naming_where_it_points() {
    // These turn a POST into a GET; a webhook must not be called as something else.
    for status in [301, 302, 303] {
        let from = redirector(status, "https://hooks.example/new".into()).await;
        let out = client()
            .call(&call(from, 2, Duration::from_secs(5), None))
            .await;
        assert!(!out.ok);
        assert_eq!(out.status, Some(status));
        assert_eq!(out.attempts, 1, "a redirect is not retried");
        let s = out.summary();
        assert!(s.contains("https://hooks.example/new"), "{s}");
        assert!(s.contains("307") && s.contains("308"), "{s}");
    }
}

#[tokio::test]
async fn a_redirect_loop_ends_as_a_failed_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    redirect_with(listener, 308, format!("http://{addr}/again"));
    let out = client()
        .call(&call(addr, 0, Duration::from_secs(5), None))
        .await;
    assert!(!out.ok, "{out:?}");
    assert!(out.summary().contains("redirect"), "{}", out.summary());
}

#[tokio::test]
async fn a_4xx_answer_is_final_but_429_and_5xx_are_retried() {
    // A closed gate answers 403 (Flagger's load tester does): asking again at once gets the
    // same answer, so only what may pass on a second try is retried (as Flagger's client).
    let mut r = receiver(vec![(403, Duration::ZERO), (200, Duration::ZERO)]).await;
    let out = client()
        .call(&call(r.addr, 3, Duration::from_secs(5), None))
        .await;
    assert!(!out.ok);
    assert_eq!((out.status, out.attempts), (Some(403), 1), "{out:?}");
    next(&mut r).await;

    let r = receiver(vec![
        (429, Duration::ZERO),
        (502, Duration::ZERO),
        (200, Duration::ZERO),
    ])
    .await;
    let out = client()
        .call(&call(r.addr, 3, Duration::from_secs(5), None))
        .await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.attempts, 3);
}

#[tokio::test]
async fn a_discord_address_ending_in_slash_slack_gets_the_slack_body_it_speaks() {
    // Discord's `/slack` endpoint reads Slack's format (Flagger always posts there); an
    // address written for Flagger with `/slack` must not get Discord's native embeds, which
    // that endpoint reads as an empty message (400).
    let mut r = receiver(vec![(200, Duration::ZERO)]).await;
    let mut t = target(ProviderKind::Discord, r.addr);
    t.address = format!("http://{}/api/webhooks/1/abc/slack", r.addr);
    AlertClient::new(HttpClient::new())
        .send(&t, &alert(Severity::Error))
        .await
        .unwrap();
    let seen = next(&mut r).await;
    assert_eq!(seen.path, "/api/webhooks/1/abc/slack");
    let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert!(v.get("embeds").is_none(), "{v}");
    assert_eq!(v["attachments"][0]["author_name"], "podinfo.test");
    assert_eq!(v["attachments"][0]["color"], "danger");
}

/// A receiver that reads each request's head and answers with `answer` raw bytes (not
/// necessarily HTTP), then closes the connection.
async fn raw_receiver(answer: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_receiver_answering_garbage_or_closing_without_an_answer_is_a_failed_call() {
    for (answer, what) in [
        (&b"SSH-2.0-OpenSSH_9.6\r\n"[..], "not HTTP"),
        (&b""[..], "closed without an answer"),
    ] {
        let addr = raw_receiver(answer).await;
        let out = client()
            .call(&call(addr, 1, Duration::from_secs(5), None))
            .await;
        assert!(!out.ok, "{what}: {out:?}");
        assert_eq!(
            out.attempts, 2,
            "{what}: no answer may pass on a second try: {out:?}"
        );
        let error = out.error.clone().unwrap_or_default();
        assert!(!error.is_empty(), "{what}: the cause is named: {out:?}");
        let alert = AlertClient::new(HttpClient::new())
            .send(&target(ProviderKind::Slack, addr), &alert(Severity::Error))
            .await;
        assert!(alert.is_err(), "{what}: the alert is not delivered");
    }
}
