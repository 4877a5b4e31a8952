//! The axum router: the JSON API under `/api/v1`, server-sent events, the pages, and the
//! Flagger load-tester-compatible gate endpoints, all over one [`Backend`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::Stream;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::backend::{Backend, BackendError, HistoryQuery};
use crate::listing::{self, ListQuery, Listing, PAGE_SIZE};
use crate::model::{
    Action, ApiError, CanaryDetail, CanaryKey, CanaryList, Command, EntryKind, HistoryEntry,
    HistoryList, Phase, RunDetail, Series, SeriesPoint, gate,
};
use crate::page;

/// How the dashboard is served.
#[derive(Clone, Default)]
pub struct DashboardConfig {
    /// Bearer token that enables actions. `None`: the dashboard is read-only and every action
    /// endpoint answers 401.
    pub token: Option<String>,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("DashboardConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

struct AppState<B> {
    backend: Arc<B>,
    token: Option<Arc<str>>,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            token: self.token.clone(),
        }
    }
}

/// Builds the dashboard's router over `backend`.
///
/// Routes (see dashboards/README.md for the JSON):
/// - pages: `GET /`, `GET /canaries/{namespace}/{name}`, fragments under `/partials/...`;
/// - API: `GET /api/v1/canaries`, `GET /api/v1/canaries/{ns}/{name}`, `.../history`,
///   `.../series`, `GET /api/v1/events` (SSE), `POST .../actions/{action}` (bearer token);
/// - Flagger gates: `POST /gate/{check,open,close,approve,halt}`,
///   `POST /rollback/{check,open,close}`;
/// - `GET /healthz`.
pub fn router<B: Backend>(backend: Arc<B>, config: DashboardConfig) -> Router {
    let state = AppState {
        backend,
        token: config
            .token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::from(t.as_str())),
    };
    Router::new()
        .route("/", get(overview_page::<B>))
        .route("/canaries/{namespace}/{name}", get(detail_page::<B>))
        .route("/partials/overview", get(overview_partial::<B>))
        .route("/partials/overview/counts", get(overview_counts::<B>))
        .route(
            "/partials/overview/rows/{namespace}/{name}",
            get(overview_row::<B>),
        )
        .route(
            "/partials/canaries/{namespace}/{name}",
            get(detail_partial::<B>),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1", get(api_index::<B>))
        .route("/api/v1/canaries", get(list::<B>))
        .route("/api/v1/canaries/{namespace}/{name}", get(detail::<B>))
        .route(
            "/api/v1/canaries/{namespace}/{name}/history",
            get(history::<B>),
        )
        .route(
            "/api/v1/canaries/{namespace}/{name}/series",
            get(series::<B>),
        )
        .route(
            "/api/v1/canaries/{namespace}/{name}/actions/{action}",
            post(act::<B>),
        )
        .route("/api/v1/events", get(events::<B>))
        // Every /api/v1 error is the documented JSON body, an unknown path too.
        .route("/api/v1/{*rest}", any(api_not_found))
        .route("/gate/check", post(gate_check::<B>))
        .route("/gate/open", post(gate_open::<B>))
        .route("/gate/close", post(gate_close::<B>))
        .route(
            "/gate/approve",
            post(|| async { (StatusCode::OK, "Approved") }),
        )
        .route(
            "/gate/halt",
            post(|| async { (StatusCode::FORBIDDEN, "Forbidden") }),
        )
        .route("/rollback/check", post(rollback_check::<B>))
        .route("/rollback/open", post(rollback_open::<B>))
        .route("/rollback/close", post(rollback_close::<B>))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An API error answer: a status and an [`ApiError`] body.
struct ApiFailure {
    status: StatusCode,
    body: ApiError,
}

impl ApiFailure {
    fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                error: error.to_string(),
                message: message.into(),
            },
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
}

impl From<BackendError> for ApiFailure {
    fn from(e: BackendError) -> Self {
        match &e {
            BackendError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "notFound", e.to_string())
            }
            BackendError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            BackendError::Invalid(_) => Self::invalid(e.to_string()),
            BackendError::Unavailable { .. } => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "dashboard backend unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"serin\""),
            );
        }
        resp
    }
}

type ApiResult<T> = Result<axum::Json<T>, ApiFailure>;

async fn api_not_found(uri: axum::http::Uri) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "notFound",
        format!(
            "{} is not an API path; see GET /api/v1 and the JSON API table in the dashboard's README",
            uri.path()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Auth

/// Compares in time independent of where the strings differ, so the token cannot be guessed
/// byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize<B>(state: &AppState<B>, headers: &HeaderMap) -> Result<(), ApiFailure> {
    let Some(token) = &state.token else {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "readOnly",
            "the dashboard is read-only: start the controller with --dashboard-token (or \
             SERIN_DASHBOARD_TOKEN) to enable actions",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(str::trim));
    match presented {
        None => Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <token> header",
        )),
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong token",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON API

async fn api_index<B: Backend>(State(state): State<AppState<B>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "version": "v1",
        "actionsEnabled": state.token.is_some(),
        "actions": Action::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
    }))
}

/// Query parameters of the list endpoint and the overview page (all optional; an empty value
/// is the same as none, as a form sends an unset field).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    phase: Option<String>,
    namespace: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    page: Option<String>,
}

const LIST_PARAMS: &str = "phase, namespace, q, limit, offset, page";

/// Reads the list parameters; `page` (1-based, [`PAGE_SIZE`] rows) stands for offset and limit.
fn list_query(
    raw: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<ListQuery, ApiFailure> {
    let p = raw
        .map_err(|e| ApiFailure::invalid(format!("{e}; accepted parameters: {LIST_PARAMS}")))?
        .0;
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let phase = given(p.phase)
        .map(|v| {
            Phase::parse(&v).ok_or_else(|| {
                ApiFailure::invalid(format!(
                    "phase: {v:?} is not a phase; accepted: {}",
                    Phase::ALL.map(|p| p.as_str()).join(", ")
                ))
            })
        })
        .transpose()?;
    let page: Option<usize> = parse_param("page", given(p.page).as_deref(), "1, 2, ...")?;
    let (offset, limit) = match page {
        Some(0) => {
            return Err(ApiFailure::invalid(
                "page: 0 is not valid; accepted: 1, 2, ...",
            ));
        }
        Some(n) => ((n - 1) * PAGE_SIZE, Some(PAGE_SIZE)),
        None => (
            parse_param(
                "offset",
                given(p.offset).as_deref(),
                "a non-negative integer",
            )?
            .unwrap_or(0),
            parse_param("limit", given(p.limit).as_deref(), "a non-negative integer")?,
        ),
    };
    Ok(ListQuery {
        phase,
        namespace: given(p.namespace),
        search: given(p.q),
        offset,
        limit,
    })
}

async fn list<B: Backend>(
    State(state): State<AppState<B>>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<CanaryList> {
    let query = list_query(query)?;
    let listing = listing::select(&state.backend.list().await?, &query);
    Ok(axum::Json(CanaryList {
        items: listing.items,
        total: Some(listing.total),
        counts: Some(
            listing
                .counts
                .iter()
                .map(|(p, n)| (p.as_str().to_string(), *n))
                .collect(),
        ),
    }))
}

async fn load_detail<B: Backend>(backend: &B, key: &CanaryKey) -> Result<CanaryDetail, ApiFailure> {
    let state = backend
        .get(key)
        .await?
        .ok_or_else(|| BackendError::NotFound(key.clone()))?;
    let entries = backend.history(key, &HistoryQuery::default()).await?;
    let mut runs: Vec<RunDetail> = state
        .runs
        .iter()
        .map(|r| RunDetail {
            run: r.clone(),
            timeline: Vec::new(),
        })
        .collect();
    let mut other = Vec::new();
    for entry in entries {
        if matches!(entry.kind, EntryKind::Sample { .. }) {
            continue;
        }
        match entry
            .run
            .and_then(|id| runs.iter_mut().find(|r| r.run.id == id))
        {
            Some(run) => run.timeline.push(entry),
            None => other.push(entry),
        }
    }
    runs.reverse();
    Ok(CanaryDetail {
        canary: state.summary,
        analysis: state.analysis,
        runs,
        other,
    })
}

async fn detail<B: Backend>(
    State(state): State<AppState<B>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<CanaryDetail> {
    let key = CanaryKey::new(namespace, name);
    Ok(axum::Json(load_detail(state.backend.as_ref(), &key).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    run: Option<String>,
    limit: Option<String>,
}

fn parse_param<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
    accepted: &str,
) -> Result<Option<T>, ApiFailure> {
    value
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiFailure::invalid(format!("{name}: {v:?} is not valid; accepted: {accepted}"))
            })
        })
        .transpose()
}

fn query_params(raw: Option<Query<HistoryParams>>) -> Result<HistoryQuery, ApiFailure> {
    let params = raw.map(|q| q.0).unwrap_or_default();
    Ok(HistoryQuery {
        run: parse_param("run", params.run.as_deref(), "a run number (1, 2, ...)")?,
        limit: parse_param("limit", params.limit.as_deref(), "a non-negative integer")?,
    })
}

async fn history<B: Backend>(
    State(state): State<AppState<B>>,
    Path((namespace, name)): Path<(String, String)>,
    query: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<HistoryList> {
    let query = query_params(Some(query.map_err(|e| {
        ApiFailure::invalid(format!("{e}; accepted parameters: run, limit"))
    })?))?;
    let key = CanaryKey::new(namespace, name);
    let items = state.backend.history(&key, &query).await?;
    Ok(axum::Json(HistoryList { items }))
}

/// Builds the chart series of one run from its sample entries; without samples, from its
/// weight steps (so the weight chart is never empty while a run advances).
pub(crate) fn series_of(entries: &[HistoryEntry], run: Option<u64>) -> Series {
    let in_run = |e: &&HistoryEntry| run.is_none() || e.run == run;
    let mut points: Vec<SeriesPoint> = entries
        .iter()
        .filter(in_run)
        .filter_map(|e| match &e.kind {
            EntryKind::Sample {
                weight,
                canary,
                primary,
            } => Some(SeriesPoint {
                at: e.at,
                weight: *weight,
                canary: canary.clone(),
                primary: primary.clone(),
            }),
            _ => None,
        })
        .collect();
    if points.is_empty() {
        points = entries
            .iter()
            .filter(in_run)
            .filter_map(|e| match &e.kind {
                EntryKind::Weight { to, .. } => Some(SeriesPoint {
                    at: e.at,
                    weight: *to,
                    canary: Default::default(),
                    primary: Default::default(),
                }),
                _ => None,
            })
            .collect();
    }
    Series { run, points }
}

async fn series<B: Backend>(
    State(state): State<AppState<B>>,
    Path((namespace, name)): Path<(String, String)>,
    query: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Series> {
    let query =
        query_params(Some(query.map_err(|e| {
            ApiFailure::invalid(format!("{e}; accepted parameters: run"))
        })?))?;
    let key = CanaryKey::new(namespace, name);
    let canary = state
        .backend
        .get(&key)
        .await?
        .ok_or_else(|| BackendError::NotFound(key.clone()))?;
    // Default: the current (or most recent) run.
    let run = query.run.or(canary.summary.run.as_ref().map(|r| r.id));
    let entries = state
        .backend
        .history(&key, &HistoryQuery { run, limit: None })
        .await?;
    Ok(axum::Json(series_of(&entries, run)))
}

/// Body of `POST /api/v1/canaries/{ns}/{name}/actions/{action}`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// Who asks (shown in the history). Default `api`.
    by: Option<String>,
    /// Gate name for gate-open/gate-close (`confirm` or `rollback`).
    gate: Option<String>,
    /// Command id, for idempotent retries. Default: generated.
    id: Option<String>,
}

static COMMAND_SEQ: AtomicU64 = AtomicU64::new(0);

/// A command id unique within this process and very likely across restarts.
pub fn new_command_id(at: Timestamp) -> String {
    let seq = COMMAND_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{seq}", at.as_millisecond(), std::process::id())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiFailure> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiFailure::invalid(format!(
            "{field}: must be 1 to {max} printable characters, got {value:?}"
        )));
    }
    Ok(())
}

async fn act<B: Backend>(
    State(state): State<AppState<B>>,
    Path((namespace, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<crate::model::CommandReceipt>), ApiFailure> {
    authorize(&state, &headers)?;
    let action = Action::parse(&action).ok_or_else(|| {
        ApiFailure::new(
            StatusCode::NOT_FOUND,
            "notFound",
            format!(
                "action {action:?} does not exist; accepted: {}",
                Action::ALL.map(|a| a.as_str()).join(", ")
            ),
        )
    })?;
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiFailure::invalid(format!(
                "body: {e}; accepted: a JSON object with optional \"by\", \"gate\", \"id\""
            ))
        })?
    };
    if let Some(by) = &body.by {
        check_text("by", by, 128)?;
    }
    if let Some(id) = &body.id {
        check_text("id", id, 128)?;
    }
    let at = Timestamp::now();
    let command = Command {
        id: body.id.unwrap_or_else(|| new_command_id(at)),
        action,
        gate: body.gate,
        by: body.by.unwrap_or_else(|| "api".to_string()),
        at,
    };
    let key = CanaryKey::new(namespace, name);
    let receipt = state.backend.apply(&key, command).await?;
    tracing::info!(canary = %key.name, ns = %key.namespace, action = %receipt.command.action, by = %receipt.command.by, "manual command received");
    Ok((StatusCode::ACCEPTED, axum::Json(receipt)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    namespace: Option<String>,
    name: Option<String>,
}

async fn events<B: Backend>(
    State(state): State<AppState<B>>,
    query: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiFailure> {
    let params = query
        .map_err(|e| ApiFailure::invalid(format!("{e}; accepted parameters: namespace, name")))?
        .0;
    let rx = state.backend.subscribe();
    let hello = Event::default().event("hello").data("{}");
    let stream = futures::stream::unfold(
        (Some(hello), rx, params),
        |(first, mut rx, params)| async move {
            if let Some(hello) = first {
                return Some((Ok(hello), (None, rx, params)));
            }
            loop {
                match rx.recv().await {
                    Ok(update) => {
                        let key = update.key();
                        if params
                            .namespace
                            .as_ref()
                            .is_some_and(|n| *n != key.namespace)
                            || params.name.as_ref().is_some_and(|n| *n != key.name)
                        {
                            continue;
                        }
                        let event = Event::default().event(update.event_name());
                        let event = match serde_json::to_string(&update) {
                            Ok(json) => event.data(json),
                            Err(_) => continue,
                        };
                        return Some((Ok(event), (None, rx, params)));
                    }
                    // The page refetches everything on `resync`, so nothing is lost for good.
                    Err(RecvError::Lagged(_)) => {
                        let event = Event::default().event("resync").data("{}");
                        return Some((Ok(event), (None, rx, params)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

// ---------------------------------------------------------------------------------------------
// Flagger load-tester gates

/// The part of Flagger's webhook payload the gates read: `{"name":..,"namespace":..}`; `phase`,
/// `checksum`, `type` and `metadata` are accepted and ignored.
#[derive(Debug, Deserialize)]
struct GatePayload {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    metadata: Option<std::collections::BTreeMap<String, String>>,
}

fn gate_key(body: &Bytes) -> Result<(CanaryKey, Option<String>), (StatusCode, String)> {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg);
    let payload: GatePayload = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "body: {e}; accepted: Flagger's webhook payload {{\"name\":\"...\",\"namespace\":\"...\"}}"
        ))
    })?;
    let name = payload
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("name: required (the Canary's name)".into()))?;
    let namespace = payload
        .namespace
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("namespace: required (the Canary's namespace)".into()))?;
    let by = payload.metadata.and_then(|m| m.get("by").cloned());
    Ok((CanaryKey::new(namespace, name), by))
}

async fn check_gate<B: Backend>(state: &AppState<B>, body: &Bytes, which: &str) -> Response {
    let (key, _) = match gate_key(body) {
        Ok(k) => k,
        Err(resp) => return resp.into_response(),
    };
    let open = match state.backend.get(&key).await {
        Ok(Some(c)) => match which {
            gate::ROLLBACK => c.summary.gates.rollback,
            _ => c.summary.gates.confirm,
        },
        // An unknown Canary has no open gate: the safe answer for a confirm gate.
        Ok(None) => false,
        Err(e) => return ApiFailure::from(e).into_response(),
    };
    tracing::debug!(canary = %key.name, ns = %key.namespace, gate = which, open, "gate check");
    if open {
        (StatusCode::OK, "Approved").into_response()
    } else {
        (StatusCode::FORBIDDEN, "Forbidden").into_response()
    }
}

async fn set_gate<B: Backend>(
    state: &AppState<B>,
    headers: &HeaderMap,
    body: &Bytes,
    which: &str,
    open: bool,
) -> Response {
    if let Err(e) = authorize(state, headers) {
        return e.into_response();
    }
    let (key, by) = match gate_key(body) {
        Ok(k) => k,
        Err(resp) => return resp.into_response(),
    };
    let at = Timestamp::now();
    let command = Command {
        id: new_command_id(at),
        action: if open {
            Action::GateOpen
        } else {
            Action::GateClose
        },
        gate: Some(which.to_string()),
        by: by.unwrap_or_else(|| "gate-endpoint".to_string()),
        at,
    };
    match state.backend.apply(&key, command).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => ApiFailure::from(e).into_response(),
    }
}

async fn gate_check<B: Backend>(State(s): State<AppState<B>>, body: Bytes) -> Response {
    check_gate(&s, &body, gate::CONFIRM).await
}

async fn gate_open<B: Backend>(
    State(s): State<AppState<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_gate(&s, &headers, &body, gate::CONFIRM, true).await
}

async fn gate_close<B: Backend>(
    State(s): State<AppState<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_gate(&s, &headers, &body, gate::CONFIRM, false).await
}

async fn rollback_check<B: Backend>(State(s): State<AppState<B>>, body: Bytes) -> Response {
    check_gate(&s, &body, gate::ROLLBACK).await
}

async fn rollback_open<B: Backend>(
    State(s): State<AppState<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_gate(&s, &headers, &body, gate::ROLLBACK, true).await
}

async fn rollback_close<B: Backend>(
    State(s): State<AppState<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_gate(&s, &headers, &body, gate::ROLLBACK, false).await
}

// ---------------------------------------------------------------------------------------------
// Pages

fn html_error(e: ApiFailure) -> Response {
    let status = e.status;
    (
        status,
        Html(page::error_page(status.as_u16(), &e.body.message)),
    )
        .into_response()
}

/// The overview's page of rows for the request's filters (an empty query: the first page of
/// everything).
async fn overview_listing<B: Backend>(
    state: &AppState<B>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(Listing, ListQuery), ApiFailure> {
    let mut query = list_query(query)?;
    // The page always pages: a thousand rows at once is what it must not render.
    if query.limit.is_none_or(|l| l > PAGE_SIZE) {
        query.limit = Some(PAGE_SIZE);
    }
    let all = state.backend.list().await?;
    Ok((listing::select(&all, &query), query))
}

async fn overview_page<B: Backend>(
    State(state): State<AppState<B>>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match overview_listing(&state, query).await {
        Ok((listing, query)) => {
            Html(page::overview_page(&listing, &query, state.token.is_some())).into_response()
        }
        Err(e) => html_error(e),
    }
}

async fn overview_partial<B: Backend>(
    State(state): State<AppState<B>>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match overview_listing(&state, query).await {
        Ok((listing, query)) => Html(page::overview_content(&listing, &query)).into_response(),
        Err(e) => html_error(e),
    }
}

/// The counts by phase for the request's filters (swapped in when Canaries off this page change).
async fn overview_counts<B: Backend>(
    State(state): State<AppState<B>>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match overview_listing(&state, query).await {
        Ok((listing, query)) => Html(page::overview_summary(&listing, &query)).into_response(),
        Err(e) => html_error(e),
    }
}

/// One row of the overview (swapped in when that Canary changes); 404 once it is gone.
async fn overview_row<B: Backend>(
    State(state): State<AppState<B>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let key = CanaryKey::new(namespace, name);
    match state.backend.get(&key).await {
        Ok(Some(c)) => Html(page::overview_row(&c.summary)).into_response(),
        Ok(None) => html_error(BackendError::NotFound(key).into()),
        Err(e) => html_error(e.into()),
    }
}

async fn detail_data<B: Backend>(
    state: &AppState<B>,
    key: &CanaryKey,
) -> Result<(CanaryDetail, Series), ApiFailure> {
    let detail = load_detail(state.backend.as_ref(), key).await?;
    let run = detail.canary.run.as_ref().map(|r| r.id);
    let entries = state
        .backend
        .history(key, &HistoryQuery { run, limit: None })
        .await?;
    Ok((detail, series_of(&entries, run)))
}

async fn detail_page<B: Backend>(
    State(state): State<AppState<B>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let key = CanaryKey::new(namespace, name);
    match detail_data(&state, &key).await {
        Ok((detail, series)) => {
            Html(page::detail_page(&detail, &series, state.token.is_some())).into_response()
        }
        Err(e) => html_error(e),
    }
}

async fn detail_partial<B: Backend>(
    State(state): State<AppState<B>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let key = CanaryKey::new(namespace, name);
    match detail_data(&state, &key).await {
        Ok((detail, series)) => Html(page::detail_body(&detail, &series)).into_response(),
        Err(e) => html_error(e),
    }
}
