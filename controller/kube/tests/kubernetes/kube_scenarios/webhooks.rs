//! Signed webhooks: the HMAC key comes from a Secret; without it the Canary holds and the field is
//! named.

use super::fixtures::*;

fn signed_hook(url: &str) -> Value {
    json!([{
        "name": "load-test", "url": url, "retries": 1,
        "signingSecretRef": {"name": "hook-keys", "key": "hmac"}
    }])
}

#[tokio::test]
async fn a_signed_webhook_gets_its_key_from_the_secret_and_is_retried() {
    use serin_controller::webhook::{SIGNATURE_HEADER, verify_signature};
    // The load tester fails once, then accepts: one retry is allowed.
    let mut hook = receiver::receiver(vec![(500, Duration::ZERO), (200, Duration::ZERO)]).await;
    let canary = canary("podinfo")
        .webhooks(signed_hook(&format!("http://{}/", hook.addr)))
        .build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let calls = vec![
        get_secret("hook-keys").reply(200, secret("hook-keys", &[("hmac", b"s3cret")])),
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["canaryWeight"], 20);
            let last = b["status"]["serin"]["history"]
                .as_array()
                .unwrap()
                .last()
                .cloned()
                .unwrap();
            assert_eq!(last["gates"][0]["name"], "load-test", "{last}");
            assert_eq!(last["gates"][0]["passed"], true, "{last}");
        }),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
    for attempt in 1..=2 {
        let seen = receiver::next(&mut hook).await;
        let header = seen.headers[SIGNATURE_HEADER].to_str().unwrap().to_string();
        assert!(
            verify_signature(b"s3cret", &seen.body, &header),
            "attempt {attempt} carries a valid signature: {header}"
        );
        assert!(!verify_signature(b"other", &seen.body, &header));
    }
    assert!(
        hook.seen.try_recv().is_err(),
        "no third attempt after a success"
    );
}

#[tokio::test]
async fn a_missing_signing_secret_holds_the_canary_and_names_the_field() {
    let canary = canary("podinfo")
        .webhooks(signed_hook("http://127.0.0.1:9/"))
        .build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let calls = vec![
        get_secret("hook-keys").not_found(),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "NotFound");
            let m = c["message"].as_str().unwrap();
            assert!(
                m.contains("spec.analysis.webhooks[0].signingSecretRef")
                    && m.contains("test/hook-keys"),
                "{m}"
            );
            assert_eq!(
                b["status"]["canaryWeight"], 10,
                "nothing moved without the key"
            );
        }),
        event("SyncFailed"),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("signingSecretRef"), "{err}");
}

#[tokio::test]
async fn a_signing_secret_without_the_key_names_the_key() {
    let canary = canary("podinfo")
        .webhooks(signed_hook("http://127.0.0.1:9/"))
        .build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let calls = vec![
        get_secret("hook-keys").reply(200, secret("hook-keys", &[("token", b"x")])),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["reason"], "Invalid");
            let m = c["message"].as_str().unwrap();
            assert!(
                m.contains("spec.analysis.webhooks[0].signingSecretRef.key")
                    && m.contains("\"hmac\""),
                "{m}"
            );
        }),
        event("SyncFailed"),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    assert!(result.is_err());
}
