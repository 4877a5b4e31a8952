//! Commands from the `serin.dev/command` annotation: applied once, refused when malformed.

use super::fixtures::*;

#[tokio::test]
async fn a_manual_abort_from_the_annotation_rolls_back_once() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_command(
        with_status(canary, &status),
        r#"{"id":"c-1","action":"abort","by":"alice","at":"2023-11-14T22:13:20Z"}"#,
    );
    let now = at + Duration::from_secs(5);
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(100, 0),
        scale_target(0),
        event("RolledBack"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Failed");
            assert_eq!(b["status"]["lastCommandId"], "c-1");
        }),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn a_malformed_command_annotation_is_reported_not_applied() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_command(
        with_status(canary, &status),
        r#"{"id":"c-1","action":"explode"}"#,
    );
    let calls = vec![
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["reason"], "Invalid");
            assert!(
                c["message"].as_str().unwrap().contains("serin.dev/command"),
                "{c}"
            );
        }),
        event("SyncFailed"),
    ];
    let (result, _) = run(
        parse(canary),
        at + Duration::from_secs(5),
        analyzer(vec![]),
        calls,
    )
    .await;
    assert!(matches!(result.unwrap_err().to_string(), m if m.contains("serin.dev/command")));
}
