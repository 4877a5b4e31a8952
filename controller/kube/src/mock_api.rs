//! A mocked Kubernetes API server for the CLI's scenarios (`serin status`/`wait`): each
//! expected call is asserted by method and URI and answered with a JSON body, as the API server
//! would.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

/// The test's end of a `kube::Client` built over `tower_test::mock::pair`.
pub(crate) type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Awaits the next API call, asserts its method and URI, answers `answer`, and returns the
/// request's JSON body (`Null` when it had none) for the caller to check.
pub(crate) async fn expect(handle: &mut Handle, method: &str, uri: &str, answer: Value) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected {method} {uri}, got no call"))
        .expect("client alive");
    assert_eq!(req.method().as_str(), method);
    assert_eq!(req.uri().to_string(), uri);
    let body = req.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}
