//! The Datadog provider against a local HTTP server that answers as Datadog's
//! `GET /api/v1/query` documents: a series answer, an empty answer and an error body.

use std::collections::BTreeMap;
use std::time::Duration;

use serin_analysis::AnalysisError;
use serin_analysis::datadog::{API_KEY, APPLICATION_KEY, DatadogProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves one request with `status` and `body`; returns the address and the request's head.
async fn one_answer(
    status: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            head.extend_from_slice(&buf[..n]);
        }
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (address, task)
}

fn secret() -> BTreeMap<String, String> {
    BTreeMap::from([
        (API_KEY.to_string(), "api-123".to_string()),
        (APPLICATION_KEY.to_string(), "app-456\n".to_string()),
    ])
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the exchange finished in time")
}

#[tokio::test]
async fn the_value_is_the_last_point_of_the_first_series_over_ten_intervals() {
    let (address, server) = one_answer(
        "200 OK",
        r#"{"status":"ok","series":[{"metric":"errors","pointlist":[[1700000000000.0, 1.5],[1700000060000.0, 2.25]]},{"pointlist":[[1700000000000.0, 99.0]]}]}"#,
    )
    .await;
    let dd = DatadogProvider::from_secret(Some(&address), "datadog", &secret()).unwrap();
    let observed = within(dd.query(
        "sum:errors{app:podinfo}.as_count()",
        Duration::from_secs(60),
    ))
    .await
    .unwrap();
    assert_eq!(observed.value, Some(2.25));
    let head = within(server).await.unwrap();
    let request_line = head.lines().next().unwrap();
    assert!(
        request_line.starts_with("GET /api/v1/query?from="),
        "{request_line}"
    );
    assert!(
        request_line.contains("&query=sum%3Aerrors%7Bapp%3Apodinfo%7D.as_count%28%29"),
        "{request_line}"
    );
    let param = |name: &str| -> u64 {
        let start = request_line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        request_line[start..]
            .split(['&', ' '])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(param("to") - param("from"), 600, "ten 60s intervals");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\ndd-api-key: api-123\r\n"), "{head}");
    assert!(
        lower.contains("\r\ndd-application-key: app-456\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn no_series_no_point_or_a_null_point_is_no_data_never_a_value() {
    for body in [
        r#"{"status":"ok","series":[]}"#,
        r#"{"status":"ok","series":[{"pointlist":[]}]}"#,
        r#"{"status":"ok","series":[{"pointlist":[[1700000000000.0, null]]}]}"#,
    ] {
        let (address, server) = one_answer("200 OK", body).await;
        let dd = DatadogProvider::from_secret(Some(&address), "datadog", &secret()).unwrap();
        let observed = within(dd.query("q", Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(observed.value, None, "{body}");
        within(server).await.unwrap();
    }
}

#[tokio::test]
async fn an_error_answer_names_the_status_and_datadogs_message() {
    let (address, server) = one_answer("403 Forbidden", r#"{"errors":["Forbidden"]}"#).await;
    let dd = DatadogProvider::from_secret(Some(&address), "datadog", &secret()).unwrap();
    let err = within(dd.query("q", Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(matches!(err, AnalysisError::BadResponse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("HTTP 403 Forbidden: Forbidden"),
        "{err}"
    );
    within(server).await.unwrap();

    let (address, server) = one_answer("200 OK", "<html>maintenance</html>").await;
    let dd = DatadogProvider::from_secret(Some(&address), "datadog", &secret()).unwrap();
    let err = within(dd.query("q", Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a Datadog query answer"),
        "{err}"
    );
    within(server).await.unwrap();
}

#[test]
fn a_missing_secret_key_is_named() {
    let mut s = secret();
    s.remove(APPLICATION_KEY);
    let err = DatadogProvider::from_secret(None, "dd-keys", &s).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Secret dd-keys key datadog_application_key") && text.contains("missing"),
        "{text}"
    );
}

#[tokio::test]
async fn a_200_answer_with_status_error_is_an_error_with_datadogs_message_not_no_data() {
    // Documented: the 200 answer carries `status` and, when it is not ok, `error`.
    let (address, _server) = one_answer(
        "200 OK",
        r#"{"status":"error","res_type":"time_series","series":[],"error":"Error parsing query: unable to parse sum:errors{app:podinfo: Rule 'scope_expr' didn't match"}"#,
    )
    .await;
    let dd = DatadogProvider::from_secret(Some(&address), "datadog", &secret()).unwrap();
    let err = within(dd.query("sum:errors{app:podinfo", Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
    assert!(err.to_string().contains("Error parsing query"), "{err}");
}
