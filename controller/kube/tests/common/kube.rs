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

/// A `GET` of the Secret `ns/name`, answered with `data` (stored as the API server stores it).
pub fn get_secret_with(ns: &str, name: &str, data: &[(&str, &[u8])]) -> Expect {
    let s = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(s).expect("a Secret serializes");
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    expect("GET", format!("/api/v1/namespaces/{ns}/secrets/{name}")).reply(200, v)
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
