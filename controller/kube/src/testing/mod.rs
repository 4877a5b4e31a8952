//! The one mocked Kubernetes API server of Serin's tests (feature `test-support`, never part of a
//! production build): a `kube::Client` over a `tower_test` mock, in the controller-rs style.
//!
//! Two ways to play it:
//! - a *scenario*: the expected calls in order ([`expect`] builds each one: method, path, a check
//!   of the body, the answer), played by [`play`] or [`scenario`]; a missing call, an extra call
//!   or a call out of order fails the test, and every wait is bounded;
//! - a *routed fake* (a cluster that answers by path, for watches running concurrently): it reads
//!   each request with [`Call::read`] and answers with [`respond`], so every fake logs its calls
//!   the same way.
//!
//! Every call answered is logged through [`api_log`] (tests/kubernetes/rbac.rs compares them with
//! the install's RBAC rules). Answers are what the API server sends: JSON bodies, `Status` errors
//! ([`status_err`]) with their codes.

pub mod api_log;

use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::SendResponse;

/// The test's end of a `kube::Client` built over `tower_test::mock::pair`.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// How long a scenario waits for the next expected call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a finished scenario listens for a call nobody expected.
const EXTRA_CALL_WINDOW: Duration = Duration::from_millis(200);

/// A client whose every request arrives on the returned handle; `namespace` is the client's
/// default namespace.
pub fn mock_client(namespace: &str) -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    // The controller's own stack on top (see `crate::client`), so the scenarios see what the
    // controller sees.
    let client = kube::client::ClientBuilder::new(svc, namespace)
        .with_layer(&crate::throttle::RetryAfterLayer)
        .build();
    (client, handle)
}

/// A `Status` error body, as the API server sends with a failed call.
pub fn status_err(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// One request as the fake API server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, `""` when there is none.
    pub query: String,
    /// The JSON body, `Null` when there is none.
    pub body: Value,
    /// Whether the body is a server-side apply patch.
    pub apply: bool,
}

impl Call {
    /// Reads `req` whole and logs it (see [`api_log`]).
    pub async fn read(req: Request<Body>) -> Call {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let apply = req
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/apply-patch+yaml");
        api_log::record(&method, &path, &query);
        let bytes = req
            .into_body()
            .collect_bytes()
            .await
            .expect("the client sent a whole body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Call {
            method,
            path,
            query,
            body,
            apply,
        }
    }

    /// Whether this is a watch (held open by the API server until something changes).
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true")
    }
}

/// Answers a request with `code` and the JSON `body`.
pub fn respond(send: SendResponse<Response<Body>>, code: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::to_vec(body).expect("a JSON value serializes"),
            ))
            .expect("status and header are valid"),
    );
}

/// A check of the request body.
pub type Check = Box<dyn FnOnce(&Value) + Send>;
/// The answer, computed from the request body: (status code, JSON body).
pub type Answer = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;

/// One expected API call and its answer.
pub struct Expect {
    method: &'static str,
    path: String,
    check: Check,
    answer: Answer,
    /// Extra response headers (`Retry-After`, ...).
    headers: Vec<(&'static str, String)>,
    /// A plain-text answer body instead of the JSON one (what the API server's load shedding
    /// and some proxies send).
    text: Option<String>,
}

/// A Secret as the API server returns it (built from the typed object, `data` base64-encoded
/// by its serialisation): one builder for every scenario that reads a Secret.
pub fn secret(namespace: &str, name: &str, data: &[(&str, &[u8])]) -> Value {
    let s = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(s).expect("a Secret serialises");
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

/// Expects a GET of Secret `namespace/name` and answers it with [`secret`] holding `data`
/// (text values, as the metric-provider and webhook Secrets hold).
pub fn get_secret_answered(namespace: &str, name: &str, data: &[(&str, &str)]) -> Expect {
    let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    expect(
        "GET",
        format!("/api/v1/namespaces/{namespace}/secrets/{name}"),
    )
    .reply(200, secret(namespace, name, &data))
}

/// Expects `method path` next. `path` is matched without the query unless it contains a `?`
/// (then the query must be exactly what follows it). By default the body is not checked and the
/// answer is `200` echoing the body, as the API server does for an apply.
pub fn expect(method: &'static str, path: impl Into<String>) -> Expect {
    Expect {
        method,
        path: path.into(),
        check: Box::new(|_| {}),
        answer: Box::new(|body| (200, body)),
        headers: Vec::new(),
        text: None,
    }
}

impl Expect {
    /// Checks the request body.
    pub fn check(mut self, f: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Box::new(f);
        self
    }

    /// Also hands the body to `f`, after the check already set (to keep what was sent).
    pub fn also(mut self, f: impl FnOnce(&Value) + Send + 'static) -> Self {
        let first = std::mem::replace(&mut self.check, Box::new(|_| {}));
        self.check = Box::new(move |body| {
            first(body);
            f(body);
        });
        self
    }

    /// Answers `code` with `body`.
    pub fn reply(mut self, code: u16, body: Value) -> Self {
        self.answer = Box::new(move |_| (code, body));
        self
    }

    /// Answers with `f(request body)`.
    pub fn answer(mut self, f: impl FnOnce(Value) -> (u16, Value) + Send + 'static) -> Self {
        self.answer = Box::new(f);
        self
    }

    /// Adds a header to the answer.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Answers `code` with a plain-text body (`text/plain; charset=utf-8`, as Go's
    /// `http.Error` writes it).
    pub fn reply_text(mut self, code: u16, text: impl Into<String>) -> Self {
        self.answer = Box::new(move |_| (code, Value::Null));
        self.text = Some(text.into());
        self
    }

    /// Answers 404 NotFound.
    pub fn not_found(self) -> Self {
        self.reply(404, status_err(404, "NotFound", "not found"))
    }

    /// Awaits the next call on `handle`, asserts it is this one (a server-side apply must be
    /// forced, as field manager `serin`), answers it, and returns its body for further checks.
    pub async fn serve(self, handle: &mut Handle) -> Value {
        self.serve_nth(handle, 0).await
    }

    async fn serve_nth(self, handle: &mut Handle, i: usize) -> Value {
        let (req, send) = tokio::time::timeout(CALL_TIMEOUT, handle.next_request())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "call #{i}: expected {} {} but no call came",
                    self.method, self.path
                )
            })
            .expect("the client went away");
        let call = Call::read(req).await;
        let seen = if self.path.contains('?') {
            format!("{}?{}", call.path, call.query)
        } else {
            call.path.clone()
        };
        assert_eq!(
            (call.method.as_str(), seen.as_str()),
            (self.method, self.path.as_str()),
            "call #{i} (query {}, body {})",
            call.query,
            call.body
        );
        if call.method == "PATCH" && call.apply {
            assert!(
                call.query.contains("fieldManager=serin") && call.query.contains("force=true"),
                "server-side apply as serin: {}",
                call.query
            );
        }
        (self.check)(&call.body);
        let (code, answer) = (self.answer)(call.body.clone());
        let (content_type, body) = match self.text {
            Some(text) => ("text/plain; charset=utf-8", text.into_bytes()),
            None => (
                "application/json",
                serde_json::to_vec(&answer).expect("a JSON value serializes"),
            ),
        };
        let mut res = Response::builder()
            .status(code)
            .header("content-type", content_type);
        for (name, value) in self.headers {
            res = res.header(name, value);
        }
        send.send_response(
            res.body(Body::from(body))
                .expect("status and headers are valid"),
        );
        call.body
    }
}

/// Plays `calls` in order on `handle` and gives the handle back (to look for extra calls).
pub async fn play(mut handle: Handle, calls: Vec<Expect>) -> Handle {
    for (i, e) in calls.into_iter().enumerate() {
        e.serve_nth(&mut handle, i).await;
    }
    handle
}

/// Fails if the client makes another call within a short window.
pub async fn assert_no_more_calls(handle: &mut Handle) {
    if let Ok(Some((req, _))) = tokio::time::timeout(EXTRA_CALL_WINDOW, handle.next_request()).await
    {
        panic!("unexpected extra call {} {}", req.method(), req.uri());
    }
}

/// Runs `run` with a client (default namespace `namespace`) whose API server answers exactly
/// `calls`: every call made, in order, none left over, none extra; `run` is bounded by
/// `timeout`.
pub async fn scenario<T>(
    namespace: &str,
    timeout: Duration,
    calls: Vec<Expect>,
    run: impl AsyncFnOnce(Client) -> T,
) -> T {
    let (client, handle) = mock_client(namespace);
    let server = tokio::spawn(play(handle, calls));
    let out = tokio::time::timeout(timeout, run(client))
        .await
        .unwrap_or_else(|_| panic!("the code under test did not finish within {timeout:?}"));
    let mut handle = server.await.expect("every expected call was made");
    assert_no_more_calls(&mut handle).await;
    out
}
