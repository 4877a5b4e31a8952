//! The control plane's HTTP server: the proxy stream (see `serin_mesh_api::protocol`), the
//! route-status API the canary controller polls, the local weights/objects API, and
//! `/metrics`, `/ready`, `/live`. One listener, HTTP/1.1 and cleartext HTTP/2.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serin_mesh_api::protocol::{ACK_PATH, ALIASES_PARAM, Ack, CONTENT_TYPE, WATCH_PATH, Workload};

use crate::hub::Hub;
use crate::local::{ApiError, LocalSource, WeightsRequest};
use crate::state::RouteKind;
use crate::world::ObjKey;

/// What the router serves from.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The local source, when running with `--routes` (enables the write API).
    pub local: Option<Arc<LocalSource>>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(WATCH_PATH, get(watch).post(watch_duplex))
        .route(ACK_PATH, post(ack))
        .route("/v1/status", get(status))
        .route("/v1/routes", get(routes))
        .route("/v1/table", get(table))
        .route(
            "/v1/routes/{kind}/{namespace}/{name}",
            get(route).put(put_object).delete(delete_object),
        )
        .route(
            "/v1/routes/{kind}/{namespace}/{name}/weights",
            put(put_weights),
        )
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/live", get(|| async { "live\n" }))
        .with_state(state)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct WatchQuery {
    workload: Option<String>,
    proxy: Option<String>,
    aliases: Option<String>,
}

/// `GET /v1/watch`: the one-way stream (acks come as `POST /v1/ack`).
async fn watch(State(s): State<AppState>, Query(q): Query<WatchQuery>) -> Response {
    subscribe(&s, q, None)
}

/// `POST /v1/watch`: the duplex stream; the request body carries the proxy's ack lines.
async fn watch_duplex(
    State(s): State<AppState>,
    Query(q): Query<WatchQuery>,
    body: Body,
) -> Response {
    subscribe(&s, q, Some(body.into_data_stream()))
}

fn subscribe(s: &AppState, q: WatchQuery, acks: Option<axum::body::BodyDataStream>) -> Response {
    let Some(workload) = q.workload else {
        return text(
            StatusCode::BAD_REQUEST,
            "query parameter `workload` is required (NAMESPACE/NAME)",
        );
    };
    let workload: Workload = match workload.parse() {
        Ok(w) => w,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("query parameter `workload`: {e}"),
            );
        }
    };
    let proxy = match q.proxy {
        Some(p) if !p.is_empty() && p.len() <= 256 => p,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "query parameter `proxy` is required: a unique id of 1 to 256 characters",
            );
        }
    };
    let compact = match q.aliases.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "query parameter `{ALIASES_PARAM}`: {other:?} is not one of 1, 0, true, false"
                ),
            );
        }
    };
    let stream = s.hub.subscribe(workload, proxy, acks, compact);
    Response::builder()
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

async fn ack(State(s): State<AppState>, body: Bytes) -> Response {
    let ack: Ack = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("body: expected {{\"proxy\":ID,\"version\":N[,\"error\":TEXT]}}: {e}"),
            );
        }
    };
    if s.hub.ack(&ack) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!("no open stream for proxy {:?}", ack.proxy),
        )
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(s): State<AppState>) -> Response {
    json(&s.hub.status())
}

async fn routes(State(s): State<AppState>) -> Response {
    json(&s.hub.status().routes)
}

#[derive(Deserialize)]
struct TableQuery {
    namespace: Option<String>,
}

async fn table(State(s): State<AppState>, Query(q): Query<TableQuery>) -> Response {
    let ns = q.namespace.unwrap_or_else(|| "default".into());
    json(&s.hub.current().table(&ns))
}

fn kind_of(kind: &str) -> Result<RouteKind, ApiError> {
    RouteKind::from_plural(kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown route kind {kind:?}; accepted: httproutes, trafficsplits"),
        )
    })
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

async fn route(
    State(s): State<AppState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    Query(q): Query<WaitQuery>,
) -> Response {
    let kind = match kind_of(&kind) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let key = ObjKey::new(namespace, name);
    let found = match q.wait {
        None => s.hub.route_status(kind, &key),
        Some(w) => {
            let timeout = match serin_mesh_api::table::parse_duration(&w) {
                Ok(d) if d <= Duration::from_secs(300) => d,
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "query parameter `wait`: {w:?} is not a duration up to 5m (e.g. 10s, 500ms)"
                        ),
                    );
                }
            };
            s.hub.wait_converged(kind, &key, timeout).await
        }
    };
    match found {
        Some(st) => json(&st),
        None => text(StatusCode::NOT_FOUND, format!("no {} {key}", kind.kind())),
    }
}

fn local(s: &AppState) -> Result<&Arc<LocalSource>, ApiError> {
    s.local.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this control plane reads routes from Kubernetes; change the HTTPRoute or TrafficSplit there",
        )
    })
}

async fn put_weights(
    State(s): State<AppState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let kind = match kind_of(&kind) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let local = match local(&s) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let req: WeightsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "body: expected {{\"backends\":[{{\"name\":SERVICE,\"weight\":N}},...]}}: {e}"
                ),
            );
        }
    };
    let key = ObjKey::new(namespace, name);
    match local.set_weights(kind, &key, &req, Instant::now()) {
        Ok(()) => match s.hub.route_status(kind, &key) {
            Some(st) => json(&st),
            None => text(StatusCode::NOT_FOUND, format!("no {} {key}", kind.kind())),
        },
        Err(e) => e.into_response(),
    }
}

async fn put_object(
    State(s): State<AppState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let kind = match kind_of(&kind) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let local = match local(&s) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let key = ObjKey::new(namespace, name);
    match local.put_object(kind, &key, &body, Instant::now()) {
        Ok(()) => match s.hub.route_status(kind, &key) {
            Some(st) => json(&st),
            None => text(StatusCode::NOT_FOUND, format!("no {} {key}", kind.kind())),
        },
        Err(e) => e.into_response(),
    }
}

async fn delete_object(
    State(s): State<AppState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let kind = match kind_of(&kind) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let local = match local(&s) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let key = ObjKey::new(namespace, name);
    match local.delete_object(kind, &key, Instant::now()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.hub.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.hub.is_ready() {
        text(StatusCode::OK, "ready")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first complete state from the source",
        )
    }
}
