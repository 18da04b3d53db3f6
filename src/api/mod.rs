//! The HTTP API: health, metrics, jobs, and control (run now, pause, resume).
//!
//! Reads come from the live [`Board`] and the run history; control goes through the same
//! runner the loop uses, so a run asked for by hand obeys the job's policy like any other.
//! Mutating endpoints need `Authorization: Bearer <token>` when a token is configured. Every
//! error is JSON, `{"error": "..."}`, with the status code that fits. `docs/openapi.json`
//! describes it; a test keeps the two in step.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::Clock;
use crate::fire::Fire;
use crate::scheduler::Dispatch;
use crate::scheduler::runner::Runner;
use crate::state::{self, history};
use crate::status::{Board, Entry};

/// Every route, as (method, path): the router is built from it, and the OpenAPI test checks
/// `docs/openapi.json` against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{name}"),
    ("GET", "/api/jobs/{name}/runs"),
    ("POST", "/api/jobs/{name}/run"),
    ("POST", "/api/jobs/{name}/pause"),
    ("POST", "/api/jobs/{name}/resume"),
];

#[derive(Clone)]
pub struct ApiState {
    pub board: Arc<Board>,
    pub runner: Runner,
    pub clock: Clock,
    pub state_dir: PathBuf,
    pub token: Option<Arc<str>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ApiState")
            .field("jobs", &self.board.jobs().jobs.len())
            .field("auth", &self.token.is_some())
            .finish()
    }
}

pub fn router(state: ApiState) -> Router {
    let mutating = Router::new()
        .route("/api/jobs/{name}/run", post(run_now))
        .route("/api/jobs/{name}/pause", post(pause))
        .route("/api/jobs/{name}/resume", post(resume))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{name}", get(one_job))
        .route("/api/jobs/{name}/runs", get(runs))
        .merge(mutating)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here") })
        .with_state(state)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, shutdown: tokio_util::sync::CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!("HTTP API stopped: {e}");
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let health = &state.board.health;
    if let Some(reason) = health.stuck() {
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "stuck", "reason": reason })))
            .into_response();
    }
    if health.reload_failed.load(Ordering::Relaxed) {
        let reason = "the last config reload failed; the previous config is still running";
        return axum::Json(json!({ "status": "degraded", "reason": reason })).into_response();
    }
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let board = state.board.clone();
    match tokio::task::spawn_blocking(move || board.metrics.encode()).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"),
    }
}

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub action: String,
    pub enabled: bool,
    pub paused: bool,
    /// RFC 3339 in the job's zone; `null` when nothing is scheduled.
    pub next_fire: Option<String>,
    pub last_run: Option<LastRunView>,
    pub running: usize,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LastRunView {
    pub scheduled: String,
    pub started: Option<String>,
    pub finished: String,
    pub outcome: String,
}

fn view(e: &Entry) -> JobView {
    let tz = e.job.timezone;
    let fmt = |t: DateTime<Utc>| t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::AutoSi, false);
    JobView {
        name: e.job.name.clone(),
        schedule: e.job.schedule_text.clone(),
        timezone: tz.name().to_string(),
        action: e.job.action.name().to_string(),
        enabled: e.job.enabled,
        paused: e.status.is_paused(),
        next_fire: if e.job.enabled { e.status.next_fire().map(fmt) } else { None },
        last_run: e.status.last_run().map(|r| LastRunView {
            scheduled: fmt(r.scheduled),
            started: r.started.map(fmt),
            finished: fmt(r.finished),
            outcome: r.outcome.as_str().to_string(),
        }),
        running: e.status.running.load(Ordering::Relaxed),
    }
}

async fn list_jobs(State(state): State<ApiState>) -> Response {
    axum::Json(state.board.jobs().jobs.iter().map(view).collect::<Vec<_>>()).into_response()
}

fn not_found(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no job \"{name}\""))
}

async fn one_job(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    match state.board.get(&name) {
        Some(e) => axum::Json(view(&e)).into_response(),
        None => not_found(&name),
    }
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    limit: Option<String>,
}

async fn runs(State(state): State<ApiState>, Path(name): Path<String>, Query(q): Query<RunsQuery>) -> Response {
    if state.board.get(&name).is_none() {
        return not_found(&name);
    }
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n @ 1..=1000)) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be a whole number from 1 to 1000"),
    };
    let dir = state.state_dir.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<history::RunRecord>, String> {
        let conn = match state::open_read_only(&dir) {
            Ok(conn) => conn,
            Err(state::StateError::Missing(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        history::query(&conn, Some(&name), None, Some(limit)).map_err(|e| e.to_string())
    })
    .await;
    match read {
        Ok(Ok(runs)) => axum::Json(runs).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the history: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn run_now(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    let Some(entry) = state.board.get(&name) else { return not_found(&name) };
    if !entry.job.enabled {
        return error(StatusCode::CONFLICT, format!("job \"{name}\" is disabled"));
    }
    let fire = Fire::manual(entry.job.clone(), entry.status.clone(), state.clock.now());
    let id = fire.id();
    tracing::info!(job = %name, fire_id = %id, "run requested through the API");
    state.runner.dispatch(fire);
    state.runner.end_tick();
    (StatusCode::ACCEPTED, axum::Json(json!({ "job": name, "fire_id": id.to_string() }))).into_response()
}

async fn pause(state: State<ApiState>, name: Path<String>) -> Response {
    set_paused(state, name, true).await
}

async fn resume(state: State<ApiState>, name: Path<String>) -> Response {
    set_paused(state, name, false).await
}

async fn set_paused(State(state): State<ApiState>, Path(name): Path<String>, paused: bool) -> Response {
    let Some(entry) = state.board.get(&name) else { return not_found(&name) };
    let dir = state.state_dir.clone();
    let now = state.clock.now();
    let job = name.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let conn = state::open(&dir).map_err(|e| e.to_string())?;
        state::set_paused(&conn, &job, paused, now).map_err(|e| e.to_string())
    })
    .await;
    match saved {
        Ok(Ok(())) => {
            entry.status.paused.store(paused, Ordering::Relaxed);
            tracing::info!(job = %name, "{} through the API", if paused { "paused" } else { "resumed" });
            axum::Json(view(&entry)).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot save the paused state: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests;
