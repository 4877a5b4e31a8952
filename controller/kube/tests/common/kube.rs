//! The fake API server of the scenarios: a `kube::Client` over a `tower_test` mock that expects
//! each call in order (method, path, a check of the body) and answers as the API server would.

#![allow(dead_code)]

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

pub type Check = Box<dyn FnOnce(&Value) + Send>;
pub type Answer = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;

pub struct Expect {
    pub method: &'static str,
    pub path: String,
    pub check: Check,
    pub answer: Answer,
}

pub fn expect(method: &'static str, path: impl Into<String>) -> Expect {
    Expect {
        method,
        path: path.into(),
        check: Box::new(|_| {}),
        answer: Box::new(|body| (200, body)),
    }
}

impl Expect {
    pub fn check(mut self, f: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Box::new(f);
        self
    }
    pub fn reply(mut self, code: u16, body: Value) -> Self {
        self.answer = Box::new(move |_| (code, body));
        self
    }
    pub fn not_found(self) -> Self {
        self.reply(404, status_err(404, "NotFound", "not found"))
    }
}

pub fn status_err(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

pub struct Scenario {
    pub handle: Handle<Request<Body>, Response<Body>>,
}

impl Scenario {
    pub async fn play(mut self, calls: Vec<Expect>) -> Handle<Request<Body>, Response<Body>> {
        for (i, e) in calls.into_iter().enumerate() {
            let next =
                tokio::time::timeout(Duration::from_secs(5), self.handle.next_request()).await;
            let (req, send): (Request<Body>, SendResponse<Response<Body>>) = next
                .unwrap_or_else(|_| {
                    panic!(
                        "call #{i}: expected {} {} but the controller made no call",
                        e.method, e.path
                    )
                })
                .expect("the client went away");
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            super::api_log::record(&method, &path, &query);
            let ssa = req
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/apply-patch+yaml");
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            assert_eq!(
                (method.as_str(), path.as_str()),
                (e.method, e.path.as_str()),
                "call #{i} (query {query}, body {body})"
            );
            if method == "PATCH" && ssa {
                assert!(
                    query.contains("fieldManager=serin") && query.contains("force=true"),
                    "server-side apply as serin: {query}"
                );
            }
            (e.check)(&body);
            let (code, answer) = (e.answer)(body);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
        self.handle
    }
}
