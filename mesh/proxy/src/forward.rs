//! The request path: route, pick, forward, observe.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use crate::balance::{self, Endpoint};
use crate::body::{BodyWatch, ClientBody, IdleWatch, Recorder, ReqBody, ResBody};
use crate::metrics::{Counted, ErrorKind, Outcome, Registry, RouteMetrics};
use crate::router::{BackendRt, HeaderEdits, RequestView};
use crate::table::TableHandle;

use crate::pool::SendError;
pub use crate::pool::Upstreams;
use serin_http1::UpgradeRequested;

/// State shared by every connection of one proxy.
pub struct Shared {
    /// The route table in force.
    pub table: TableHandle,
    /// All metrics.
    pub registry: Arc<Registry>,
    /// Outbound upstream pools.
    pub outbound: Upstreams,
    /// Inbound target (the local app), if the inbound listener is on.
    pub inbound: Option<InboundTarget>,
    /// Series for requests without a route.
    pub no_route: Arc<RouteMetrics>,
    /// Longest wait for the next piece of an upstream response (its head on routes without a
    /// `timeout`, then each body frame).
    pub body_idle: Duration,
}

/// Where the inbound listener forwards to.
pub struct InboundTarget {
    /// The local app of the explicit inbound listener (None: transparent inbound only, where
    /// each connection names its port).
    pub endpoint: Option<Arc<Endpoint>>,
    /// Pools to the app.
    pub upstreams: Upstreams,
    /// Inbound series.
    pub metrics: Arc<RouteMetrics>,
    /// Time allowed until response headers.
    pub timeout: Option<Duration>,
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), plus the ones
/// HTTP/2 forbids. `te: trailers` is kept for gRPC.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the headers finds what is there: most messages carry none of these, and
    // most others only `connection: keep-alive`, so hashing every candidate name for a
    // removal would cost more than the rest of the header handling.
    let mut present: Vec<HeaderName> = Vec::new();
    let mut named: Vec<HeaderName> = Vec::new();
    let mut te_other_than_trailers = false;
    let mut last: Option<&HeaderName> = None;
    for (n, v) in h.iter() {
        if n == header::CONNECTION {
            // Headers named in Connection are hop-by-hop too (`close` names nothing, and
            // `keep-alive` is removed below anyway).
            let tokens = v.to_str().unwrap_or_default().split(',').map(str::trim);
            for t in tokens.filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("keep-alive")
            }) {
                if let Ok(name) = HeaderName::from_bytes(t.as_bytes())
                    && !is_end_to_end_kept(&name)
                {
                    named.push(name);
                }
            }
        } else if n == header::TE {
            te_other_than_trailers |= !v.as_bytes().eq_ignore_ascii_case(b"trailers");
            continue;
        }
        // Repeated names come in a row; note each once.
        if is_hop_by_hop(n) && last != Some(n) {
            present.push(n.clone());
        }
        last = Some(n);
    }
    for n in present.into_iter().chain(named) {
        h.remove(n);
    }
    if te_other_than_trailers {
        h.remove(header::TE);
    }
}

/// End-to-end fields the request's meaning rests on (its target, framing, content and
/// credentials): `Connection` naming one (`Connection: host`, the hop-by-hop abuse) does not
/// make the proxy drop it. RFC 9110 §7.6.1 lets a proxy decline such a request; keeping the
/// field is the gentler way to decline the removal.
fn is_end_to_end_kept(n: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::AUTHORIZATION,
        header::COOKIE,
    ]
    .contains(n)
}

/// The names [`strip_hop_by_hop`] acts on (`te` included: it may have to go).
fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::PROXY_AUTHORIZATION
        || n == header::PROXY_AUTHENTICATE
        || n == header::TE
        || n.as_str() == "keep-alive"
        || n.as_str() == "proxy-connection"
}

fn upgrade_values(h: &HeaderMap) -> Vec<HeaderValue> {
    h.get_all(header::UPGRADE).iter().cloned().collect()
}

fn restore_upgrade(h: &mut HeaderMap, values: Vec<HeaderValue>) {
    for v in values {
        h.append(header::UPGRADE, v);
    }
}

fn text(status: StatusCode, msg: String) -> Response<ResBody> {
    let mut r = Response::new(ResBody::full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `405` for CONNECT, as the HTTP/1.1 server answers it: forwarded, the upstream would see an
/// ordinary request, and its `200` would tell the client a tunnel is open. Only h2c streams get
/// this far (extended CONNECT, RFC 8441, is not enabled).
fn refuse_connect() -> Response<ResBody> {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        "CONNECT is not supported: serin-proxy forwards HTTP requests, it does not open tunnels\n"
            .into(),
    )
}

/// A response the proxy made up, counted as a failure with `error`.
fn proxy_error(
    metrics: Counted<'_>,
    started: Instant,
    status: StatusCode,
    error: ErrorKind,
    msg: String,
) -> Response<ResBody> {
    metrics
        .latency(status.as_u16(), started.elapsed())
        .response(Outcome {
            status: status.as_u16(),
            grpc_status: None,
            error: Some(error),
        });
    let mut r = text(status, msg);
    r.headers_mut().insert(
        HeaderName::from_static("l5d-proxy-error"),
        HeaderValue::from_static(error.label()),
    );
    r
}

/// The request's authority: `:authority`/absolute-form URI first, then `Host`.
fn authority_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
}

/// Keeps only `max` characters of client input echoed in an error body.
fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Handles one outbound request.
// Not an `async fn` awaiting the other: that would keep a second copy of the request in the
// future, which is allocated and moved for every request.
pub fn outbound(
    shared: Arc<Shared>,
    req: Request<ClientBody>,
) -> impl Future<Output = Response<ResBody>> + Send {
    outbound_via(shared, None, req)
}

/// Handles one outbound request of a transparently captured connection: routed by its
/// authority when the table knows it, else by the connection's original destination
/// (`ip:port`, a Service's cluster IP for a client that only knows the IP).
pub async fn outbound_via(
    shared: Arc<Shared>,
    original_dst: Option<Arc<str>>,
    req: Request<ClientBody>,
) -> Response<ResBody> {
    if req.method() == Method::CONNECT {
        return refuse_connect();
    }
    let started = Instant::now();
    let table = shared.table.compiled();
    let authority = authority_of(&req);
    let by_name = authority.and_then(|a| table.route(a));
    let by_dst = || original_dst.as_deref().and_then(|d| table.route(d));
    let Some(route) = by_name.or_else(by_dst) else {
        shared.no_route.request();
        let Some(authority) = authority.or(original_dst.as_deref()) else {
            return proxy_error(
                Counted::only(&shared.no_route),
                started,
                StatusCode::NOT_FOUND,
                ErrorKind::NoRoute,
                "no route: the request has no authority (Host header or :authority)\n".into(),
            );
        };
        let msg = format!("no route for authority {:?}\n", clip(authority, 200));
        return proxy_error(
            Counted::only(&shared.no_route),
            started,
            StatusCode::NOT_FOUND,
            ErrorKind::NoRoute,
            msg,
        );
    };
    let view = RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let Some(rule) = route.rule(&view) else {
        shared.no_route.request();
        let msg = format!(
            "no route for authority {:?}: no rule matches this request\n",
            route.authority
        );
        return proxy_error(
            Counted::only(&shared.no_route),
            started,
            StatusCode::NOT_FOUND,
            ErrorKind::NoRoute,
            msg,
        );
    };
    if let Some(redirect) = &rule.redirect {
        // Gateway API RequestRedirect: answered here, no upstream request. There is no backend,
        // so it is counted in the series of the other responses the proxy makes without one
        // (and in the rule's route series).
        let counted = Counted {
            main: &shared.no_route,
            route: rule.metrics.as_deref(),
        };
        counted.request();
        let location = redirect.location(
            req.uri().scheme_str().unwrap_or("http"),
            authority.or(original_dst.as_deref()).unwrap_or_default(),
            view.path,
            view.query,
            rule.matched_prefix(&view).unwrap_or("/"),
        );
        counted
            .latency(redirect.status.as_u16(), started.elapsed())
            .response(Outcome {
                status: redirect.status.as_u16(),
                grpc_status: None,
                error: None,
            });
        let mut r = Response::new(ResBody::full(Bytes::new()));
        *r.status_mut() = redirect.status;
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                r.headers_mut().insert(header::LOCATION, v);
            }
            // The request's own head parsed, and the table's parts are plain names, so this
            // is unreachable; an answer without Location is still better than a panic.
            Err(_) => tracing::warn!(%location, "redirect location is not a header value"),
        }
        redirect.response_headers.apply(r.headers_mut());
        return r;
    }
    let (backend, response_headers) =
        rule.pick_with_headers(fastrand::u64(..rule.total_weight().max(1)));
    let picked = balance::pick_index(&backend.endpoints);
    let counted = Counted {
        main: picked.map_or(&backend.metrics, |i| backend.series(i)),
        route: rule.metrics.as_deref(),
    };
    counted.request();
    let ep = match (&backend.invalid, picked) {
        (None, Some(i)) => &backend.endpoints[i],
        (invalid, _) => {
            let (status, error, msg) = match invalid {
                Some(reason) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::InvalidBackend,
                    format!("backend {:?} is invalid: {reason}\n", backend.name),
                ),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::NoEndpoints,
                    format!("backend {:?} has no endpoints\n", backend.name),
                ),
            };
            return proxy_error(counted, started, status, error, msg);
        }
    };
    let (mut parts, body) = req.into_parts();
    // Gateway API RequestHeaderModifier: before the mirror copies the head, so the shadow sees
    // the request the backend sees.
    rule.request_headers.apply(&mut parts.headers);

    // Mirror: decided per request; the copy is sent from its own task and never awaited.
    let body = match &rule.mirror {
        // A WebSocket handshake is not copied: the shadow could not be given the tunnel.
        Some((mb, share))
            if parts.extensions.get::<UpgradeRequested>().is_none()
                && share.takes(fastrand::u32(..)) =>
        {
            // No endpoint, or one with every mirror slot taken (a shadow that stopped
            // answering): the copy is dropped, never queued.
            match balance::pick(&mb.endpoints).and_then(|mep| Some((mep, mep.try_mirror()?))) {
                Some((mep, slot)) => {
                    let (real, copy) = ReqBody::tee(body);
                    spawn_mirror(&shared, mb.clone(), mep.clone(), slot, &parts, copy);
                    real
                }
                None => {
                    shared.registry.mirror(&mb.name, "dropped");
                    ReqBody::Incoming(body)
                }
            }
        }
        _ => ReqBody::Incoming(body),
    };

    let h2 = parts.version == Version::HTTP_2;
    prepare_upstream(&mut parts, ep, h2);
    send(
        &shared.outbound,
        parts,
        body,
        started,
        ep,
        counted,
        &backend.name,
        rule.timeout,
        shared.body_idle,
        response_headers,
    )
    .await
}

/// Handles one inbound request (to the local app).
pub fn inbound(
    shared: Arc<Shared>,
    req: Request<ClientBody>,
) -> impl Future<Output = Response<ResBody>> + Send {
    let endpoint = shared.inbound.as_ref().and_then(|t| t.endpoint.clone());
    inbound_to(shared, endpoint, req)
}

/// Handles one inbound request to `endpoint` (transparent mode: the app at
/// `127.0.0.1:<original port>`), counted with `direction="inbound"`.
pub async fn inbound_to(
    shared: Arc<Shared>,
    endpoint: Option<Arc<Endpoint>>,
    req: Request<ClientBody>,
) -> Response<ResBody> {
    if req.method() == Method::CONNECT {
        return refuse_connect();
    }
    let started = Instant::now();
    let (Some(target), Some(endpoint)) = (&shared.inbound, endpoint) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "inbound is not configured\n".into(),
        );
    };
    target.metrics.request();
    let (mut parts, body) = req.into_parts();
    let h2 = parts.version == Version::HTTP_2;
    prepare_upstream(&mut parts, &endpoint, h2);
    send(
        &target.upstreams,
        parts,
        ReqBody::Incoming(body),
        started,
        &endpoint,
        Counted::only(&target.metrics),
        "inbound",
        target.timeout,
        shared.body_idle,
        &HeaderEdits::NONE,
    )
    .await
}

/// Points a request at an endpoint. HTTP/1.1 goes out in origin form (`/path?query`) and keeps
/// the client's authority in `Host`. HTTP/2 needs an absolute URI, from which hyper derives
/// `:authority`, so an h2 upstream sees the endpoint address there.
fn prepare_upstream(parts: &mut http::request::Parts, ep: &Endpoint, h2: bool) {
    // An HTTP/1.1 client's Host is already the authority. An absolute-form request line
    // names it in the URI, which then replaces any Host the client sent (RFC 9112 §3.2.2: the
    // route was chosen by the URI, so the upstream must see that authority too); an HTTP/1.0
    // request without either gets `localhost`.
    if !h2 {
        let from_uri = parts.uri.authority().map(|a| a.as_str());
        if (from_uri.is_some() || !parts.headers.contains_key(header::HOST))
            && let Ok(v) = HeaderValue::from_str(from_uri.unwrap_or("localhost"))
        {
            parts.headers.insert(header::HOST, v);
        }
    }
    if h2 || parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = if h2 {
            Uri::builder()
                .scheme("http")
                .authority(ep.base_uri.clone())
                .path_and_query(path)
                .build()
        } else {
            Uri::builder().path_and_query(path).build()
        };
        if let Ok(u) = uri {
            parts.uri = u;
        }
    }
    // An upgrade the client's connection can tunnel (WebSocket) keeps what asks for it.
    let upgrade = (!h2 && parts.extensions.get::<UpgradeRequested>().is_some())
        .then(|| upgrade_values(&parts.headers));
    strip_hop_by_hop(&mut parts.headers);
    if let Some(values) = upgrade {
        restore_upgrade(&mut parts.headers, values);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if h2 {
        parts.headers.remove(header::HOST);
        parts.version = Version::HTTP_2;
    } else {
        parts.version = Version::HTTP_11;
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    upstreams: &Upstreams,
    parts: http::request::Parts,
    body: ReqBody,
    started: Instant,
    ep: &Arc<Endpoint>,
    metrics: Counted<'_>,
    backend: &str,
    timeout: Option<Duration>,
    idle: Duration,
    response_headers: &HeaderEdits,
) -> Response<ResBody> {
    let in_flight = ep.start();
    // A route without `timeout` still gets no response head for ever: the idle timeout
    // bounds that wait, with its own error label.
    let (limit, kind) = match timeout {
        Some(t) => (t, ErrorKind::Timeout),
        None => (idle, ErrorKind::IdleTimeout),
    };
    // The timeout runs from the moment the client has sent its whole body: a client that
    // uploads slowly must not make the backend look slow (its pauses are bounded by the body
    // idle timeout instead, and a broken body is the client's 400).
    let (body, body_watch) = body.watched();
    // Without a body still to come it runs from now, and the upstream connection keeps it
    // (an HTTP/1.1 connection with its own timer, not a timer armed per request).
    let deadline = body_watch
        .is_none()
        .then(|| tokio::time::Instant::now() + limit);
    // The request is put together only as the upstream send takes it: every copy of it
    // held here would be part of the request's future (allocated and moved per request).
    let mut fut = std::pin::pin!(upstreams.send(ep, Request::from_parts(parts, body), deadline));
    let early = match body_watch {
        Some(BodyWatch { sent, handed }) => tokio::select! {
            r = &mut fut => Some(r),
            _ = sent => None,
            // An upstream that stops reading the body (and does not answer) would otherwise
            // hold the request for ever: the route timeout has not started yet.
            _ = handed.upstream_stalled(idle) => {
                let msg = format!(
                    "backend {backend:?} stopped reading the request body for {}\n",
                    serin_mesh_api::table::format_duration(idle)
                );
                ep.observe(started.elapsed());
                return proxy_error(
                    metrics,
                    started,
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::IdleTimeout,
                    msg,
                );
            }
        },
        None => None,
    };
    let result = match early {
        Some(r) => r,
        None if deadline.is_some() => fut.await,
        None => tokio::time::timeout(limit, fut)
            .await
            .unwrap_or(Err(SendError::TimedOut)),
    };
    let result = match result {
        Err(SendError::TimedOut) => {
            let msg = format!(
                "backend {backend:?} did not answer within {}\n",
                serin_mesh_api::table::format_duration(limit)
            );
            ep.observe(started.elapsed());
            return proxy_error(metrics, started, StatusCode::GATEWAY_TIMEOUT, kind, msg);
        }
        r => r,
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) if e.is_request_body() => {
            // The client's body broke, not the upstream: answer like a malformed head, and
            // neither penalise the endpoint in the balancer nor count an upstream error.
            tracing::debug!(backend, endpoint = %ep.addr, error = %e, "request body failed");
            metrics
                .latency(StatusCode::BAD_REQUEST.as_u16(), started.elapsed())
                .response(Outcome {
                    status: StatusCode::BAD_REQUEST.as_u16(),
                    grpc_status: None,
                    error: None,
                });
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad request: the request body could not be read ({e})\n"),
            );
        }
        Err(e) => {
            let (kind, what) = if e.is_connect() {
                (ErrorKind::Connect, "could not connect to")
            } else {
                (ErrorKind::Upstream, "failed talking to")
            };
            tracing::debug!(backend, endpoint = %ep.addr, error = %e, "upstream request failed");
            // A failing endpoint should look expensive to the balancer.
            ep.observe(Duration::from_secs(1));
            let msg = format!("{what} backend {backend:?} endpoint {}\n", ep.addr);
            return proxy_error(metrics, started, StatusCode::BAD_GATEWAY, kind, msg);
        }
    };
    let latency = started.elapsed();
    ep.observe(latency);
    let (mut parts, body) = resp.into_parts();
    let series = metrics.series(parts.status.as_u16());
    // A 101 (only ever the answer to an upgrade the client asked for) says what it switched
    // to; the client's connection adds `connection: upgrade`.
    let switched =
        (parts.status == StatusCode::SWITCHING_PROTOCOLS).then(|| upgrade_values(&parts.headers));
    // A switched connection has no response body: its latency is its answer's.
    let first_byte_from = if switched.is_some() {
        series.observe(latency);
        None
    } else {
        Some(started)
    };
    strip_hop_by_hop(&mut parts.headers);
    if let Some(values) = switched {
        restore_upgrade(&mut parts.headers, values);
    }
    response_headers.apply(&mut parts.headers);
    let rec = Recorder::new(
        series,
        first_byte_from,
        parts.status.as_u16(),
        &parts.headers,
        Some(in_flight),
    );
    Response::from_parts(
        parts,
        ResBody::Upstream {
            inner: body,
            rec,
            idle: IdleWatch::new(idle),
        },
    )
}

fn spawn_mirror(
    shared: &Arc<Shared>,
    backend: Arc<BackendRt>,
    ep: Arc<Endpoint>,
    slot: balance::MirrorSlot,
    parts: &http::request::Parts,
    body: ReqBody,
) {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    let (mut mparts, body) = req.into_parts();
    let h2 = mparts.version == Version::HTTP_2;
    prepare_upstream(&mut mparts, &ep, h2);
    let req = Request::from_parts(mparts, body);
    let upstreams = shared.outbound.clone();
    let registry = shared.registry.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let _in_flight = ep.start();
        let sent =
            tokio::time::timeout(Duration::from_secs(30), upstreams.send(&ep, req, None)).await;
        let result = match sent {
            Ok(Ok(resp)) => {
                ep.observe(started.elapsed());
                // A 5xx is the shadow failing, which is what a mirror is there to show.
                let failed = resp.status().is_server_error();
                // Drain so the connection goes back to the pool.
                let ok = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .is_ok();
                match (ok, failed) {
                    (false, _) => "error",
                    (true, true) => "failure",
                    (true, false) => "ok",
                }
            }
            _ => "error",
        };
        registry.mirror(&backend.name, result);
        drop(slot);
    });
}

/// A full response for admin endpoints.
pub fn admin_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResBody> {
    let mut r = Response::new(ResBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "basic x"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("x-kept", "yes"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn te_trailers_stays_for_grpc_and_plain_messages_are_untouched() {
        let mut h = headers(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        let mut h = headers(&[("te", "trailers"), ("te", "gzip")]);
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::TE).is_none());
    }
}
