//! The HTTP API: health, metrics, jobs, and control (run now, pause, resume).
//!
//! Reads come from the live [`Board`] and the run history; control goes through the same
//! runner the loop uses, so a run asked for by hand obeys the job's policy like any other.
//! Who may call what is [`auth`]'s; connections and their limits are [`server`]'s. Every
//! error is JSON, `{"error": "..."}`, with the status code that fits, rejected parameters
//! included. `docs/openapi.json` describes it; a test keeps the two in step.

pub mod auth;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::Clock;
use crate::cluster::member::{Node, Role};
use crate::fire::Fire;
use crate::metrics::exposition::Format;
use crate::runs::{Cancel, RunState, RunView};
use crate::scheduler::Dispatch;
use crate::scheduler::runner::Runner;
use crate::state::{self, history};
use crate::status::{Board, LiveJob};

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: Listen,
    /// The bearer token mutations need; without it, beatd makes one in the state folder
    /// ([`auth::TOKEN_FILE`]) at its first start.
    pub token_file: Option<PathBuf>,
    /// Mutations need no token (beatd warns at every start).
    pub allow_unauthenticated: bool,
    /// `Host` names accepted besides the listen address, loopback names and IP addresses.
    pub allowed_hosts: Vec<String>,
    /// `false` drops the per-job series (label `job_name`) from metrics, for very large schedules.
    pub per_job_metrics: bool,
    /// At most this many connections at once (and never more than half the descriptor limit).
    pub max_connections: usize,
    /// The web dashboard at `/` (on by default).
    pub dashboard: bool,
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    /// `unix:/run/beatd/api.sock`: the socket's permissions decide who may use it.
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "http://{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ApiConfig {
    /// The address a client on this machine uses (a wildcard listen address means loopback).
    pub fn client_base(&self) -> String {
        match &self.listen {
            Listen::Tcp(listen) => {
                let mut addr = *listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(if addr.is_ipv4() {
                        [127, 0, 0, 1].into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                format!("http://{addr}")
            }
            Listen::Unix(_) => "http://localhost".into(),
        }
    }

    /// Where the token is: `token_file`, else the one beatd makes in `state_dir`.
    pub fn token_path(&self, state_dir: &std::path::Path) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| state_dir.join(auth::TOKEN_FILE))
    }
}

/// Why the API could not start, or its token be had.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {listen} for the HTTP API: {source}")]
    Listen { listen: String, source: std::io::Error },
    #[error("cannot listen on unix:{}: another process is listening there", .0.display())]
    SocketInUse(PathBuf),
    #[error("cannot listen on unix:{}: it exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot replace the old socket {}: {source}", .path.display())]
    OldSocket { path: PathBuf, source: std::io::Error },
    #[error("cannot set the permissions of {}: {source}", .path.display())]
    SocketMode { path: PathBuf, source: std::io::Error },
    #[error("cannot read the API token {}: {source}", .path.display())]
    ReadToken { path: PathBuf, source: std::io::Error },
    #[error("the API token {} is empty: an empty token would let anyone in", .0.display())]
    EmptyToken(PathBuf),
    #[error("cannot make the API token {}: {source}", .path.display())]
    MakeToken { path: PathBuf, source: std::io::Error },
}

/// Every route, as (method, path). [`router`] names them itself (each with its handler and
/// guard); tests check that it serves exactly these and that `docs/openapi.json` lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/cluster"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{name}"),
    ("GET", "/api/jobs/{name}/runs"),
    ("POST", "/api/jobs/{name}/run"),
    ("POST", "/api/jobs/{name}/pause"),
    ("POST", "/api/jobs/{name}/resume"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/{fire_id}"),
    ("POST", "/api/runs/{fire_id}/cancel"),
];

#[derive(Clone)]
pub struct ApiState {
    pub board: Arc<Board>,
    pub runner: Runner,
    pub clock: Clock,
    pub state_dir: PathBuf,
    pub guard: Arc<auth::Guard>,
    /// This node, with `[cluster]`.
    pub cluster: Option<Arc<Node>>,
    /// Serve the dashboard's pages.
    pub dashboard: bool,
    /// The dashboard's cache of 24-hour success rates.
    pub rates: Arc<crate::dashboard::Rates>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ApiState").field("jobs", &self.board.jobs().jobs.len()).finish()
    }
}

pub fn router(state: ApiState) -> Router {
    let guard = state.guard.clone();
    let mutating = Router::new()
        .route("/api/jobs/{name}/run", post(run_now))
        .route("/api/jobs/{name}/pause", post(pause))
        .route("/api/jobs/{name}/resume", post(resume))
        .route("/api/runs/{fire_id}/cancel", post(cancel_run))
        .route_layer(middleware::from_fn_with_state(guard.clone(), auth::mutation));
    let reads = Router::new()
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{name}", get(one_job))
        .route("/api/jobs/{name}/runs", get(runs))
        .route("/api/runs", get(active_runs))
        .route("/api/runs/{fire_id}", get(one_run))
        .route_layer(middleware::from_fn_with_state(guard.clone(), auth::private_read));
    let pages = if state.dashboard {
        crate::dashboard::router().route_layer(middleware::from_fn_with_state(guard.clone(), auth::private_read))
    } else {
        Router::new()
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/cluster", get(cluster))
        .merge(reads)
        .merge(mutating)
        .merge(pages)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here") })
        .layer(middleware::from_fn_with_state(guard, auth::every_request))
        .with_state(state)
}

/// Serves the API for `state` on `listener`, at most `cap` connections, until `shutdown`.
pub async fn serve(
    listener: server::Listener,
    state: ApiState,
    cap: usize,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let board = state.board.clone();
    server::serve(listener, router(state), cap, board, shutdown).await;
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A job name from the path; one that cannot be read (not UTF-8) is a JSON 400, like every
/// other error.
struct JobName(String);

impl<S: Send + Sync> FromRequestParts<S> for JobName {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(JobName(name)),
            Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("invalid job name in the path: {}", e.body_text()))),
        }
    }
}

/// Open descriptors and the soft limit, from `/proc/self/fd` (which itself needs one).
fn descriptors() -> std::io::Result<(usize, u64)> {
    let open = std::fs::read_dir("/proc/self/fd")?.count();
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    Ok((open, limit))
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let (code, mut body) = health(&state);
    if let Some(node) = &state.cluster {
        body["cluster"] = cluster_view(node);
    }
    (code, axum::Json(body)).into_response()
}

pub(crate) fn health(state: &ApiState) -> (StatusCode, serde_json::Value) {
    let health = &state.board.health;
    if let Some(reason) = health.stuck() {
        return (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "stuck", "reason": reason }));
    }
    // Jobs cannot start without descriptors: that is not ok, however well the loop ticks.
    let starved = match descriptors() {
        Err(e) => Some(format!("cannot count open file descriptors ({e})")),
        Ok((open, limit)) if open as u64 * 10 >= limit * 9 => {
            Some(format!("{open} of {limit} file descriptors are open: jobs may fail to start"))
        }
        Ok(_) => health
            .out_of_descriptors_since()
            .map(|ago| format!("ran out of file descriptors {:.0} s ago", ago.as_secs_f64())),
    };
    if let Some(reason) = starved {
        return (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "degraded", "reason": reason }));
    }
    if let Some(reason) = state.board.state.reason() {
        return (StatusCode::OK, json!({ "status": "degraded", "reason": reason }));
    }
    if health.reload_failed.load(Ordering::Relaxed) {
        let reason = "the last config reload failed; the previous config is still running";
        return (StatusCode::OK, json!({ "status": "degraded", "reason": reason }));
    }
    (StatusCode::OK, json!({ "status": "ok" }))
}

/// This node in its cluster: its name, its role, the leader's name, how long it has led.
pub(crate) fn cluster_view(node: &Node) -> serde_json::Value {
    let view = node.view();
    json!({
        "node": view.node,
        "role": match view.role { Role::Leader => "leader", Role::Follower => "follower" },
        "leader": view.leader,
        "leading_for_seconds": view.leading_for.map(|d| d.as_secs_f64()),
        "cluster": node.cluster.name,
        "lease_seconds": node.cluster.lease.as_secs_f64(),
        "config_mismatch": view.config_mismatch,
    })
}

async fn cluster(State(state): State<ApiState>) -> Response {
    match &state.cluster {
        Some(node) => axum::Json(cluster_view(node)).into_response(),
        None => error(StatusCode::NOT_FOUND, "this node runs alone: its config has no [cluster]"),
    }
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), else the classic text format.
async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let board = state.board.clone();
    match tokio::task::spawn_blocking(move || board.metrics.encode(format)).await {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "Accept")], text).into_response()
        }
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

fn view(e: &LiveJob) -> JobView {
    let tz = e.job.timezone;
    let fmt = |t: DateTime<Utc>| t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::AutoSi, false);
    JobView {
        name: e.job.name.to_string(),
        schedule: e.job.schedule_text.to_string(),
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

async fn one_job(State(state): State<ApiState>, JobName(name): JobName) -> Response {
    match state.board.get(&name) {
        Some(e) => axum::Json(view(&e)).into_response(),
        None => not_found(&name),
    }
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    limit: Option<String>,
}

async fn runs(
    State(state): State<ApiState>,
    JobName(name): JobName,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "limit must be given once, a whole number from 1 to 1000");
    };
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

/// A fire id from the path.
struct FireId(uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for FireId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => match uuid::Uuid::parse_str(&id) {
                Ok(id) => Ok(FireId(id)),
                Err(_) => Err(error(StatusCode::BAD_REQUEST, "a fire id is a UUID, as `POST .../run` returns it")),
            },
            Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("invalid fire id in the path: {}", e.body_text()))),
        }
    }
}

/// Runs queued or running now, oldest slot first.
async fn active_runs(State(state): State<ApiState>) -> Response {
    axum::Json(state.runner.runs().active()).into_response()
}

/// A run from memory (queued, running, or among the last finished), else from the history.
pub async fn find_run(state: &ApiState, id: uuid::Uuid) -> Result<Option<RunView>, String> {
    if let Some(run) = state.runner.runs().get(id) {
        return Ok(Some(run));
    }
    let dir = state.state_dir.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<history::RunRecord>, String> {
        let conn = match state::open_read_only(&dir) {
            Ok(conn) => conn,
            Err(state::StateError::Missing(_)) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        history::by_fire_id(&conn, &id.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(found.map(|r| {
        let zone = state.board.get(&r.job).map_or(chrono_tz::UTC, |e| e.job.timezone);
        let t = |t: DateTime<Utc>| t.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::Millis, false);
        RunView {
            fire_id: r.fire_id.clone(),
            slot: t(r.scheduled_at),
            state: RunState::of(r.outcome),
            attempt: r.attempt,
            started: r.started_at.map(t),
            finished: Some(t(r.finished_at)),
            exit_code: r.exit_code,
            error: r.error,
            details: r.details,
            progress: None,
            job: r.job,
        }
    }))
}

async fn one_run(State(state): State<ApiState>, FireId(id): FireId) -> Response {
    match find_run(&state, id).await {
        Ok(Some(run)) => axum::Json(run).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run with fire id {id}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the history: {e}")),
    }
}

async fn cancel_run(State(state): State<ApiState>, FireId(id): FireId) -> Response {
    match state.runner.cancel(id) {
        Cancel::Stopping { job, .. } => {
            tracing::info!(job = %job, fire_id = %id, "cancel requested through the API");
            let run = state.runner.runs().get(id);
            (StatusCode::ACCEPTED, axum::Json(json!({ "job": &*job, "fire_id": id.to_string(), "run": run })))
                .into_response()
        }
        Cancel::AlreadyFinished(s) => {
            let s = serde_json::to_value(s).unwrap_or_default();
            error(StatusCode::CONFLICT, format!("run {id} has already ended: {}", s.as_str().unwrap_or("finished")))
        }
        Cancel::Unknown => match find_run(&state, id).await {
            Ok(Some(run)) => {
                let s = serde_json::to_value(run.state).unwrap_or_default();
                error(StatusCode::CONFLICT, format!("run {id} has already ended: {}", s.as_str().unwrap_or("finished")))
            }
            Ok(None) => error(StatusCode::NOT_FOUND, format!("no run with fire id {id}")),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the history: {e}")),
        },
    }
}

async fn run_now(State(state): State<ApiState>, JobName(name): JobName) -> Response {
    let Some(entry) = state.board.get(&name) else { return not_found(&name) };
    if !entry.job.enabled {
        return error(StatusCode::CONFLICT, format!("job \"{name}\" is disabled"));
    }
    let now = state.clock.now();
    let fire = Fire::manual(entry.job.clone(), entry.status.clone(), now);
    let id = fire.id();
    match &state.cluster {
        // A follower hands the run to the leader, through Redis: it runs once, there.
        Some(node) if node.view().role == Role::Follower => {
            if let Err(e) = node.ask_leader_to_run(&name, now).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot reach the cluster's Redis: {e}"));
            }
            tracing::info!(job = %name, fire_id = %id, "run requested through the API; handed to the leader");
        }
        _ => {
            tracing::info!(job = %name, fire_id = %id, "run requested through the API");
            state.runner.dispatch(fire);
            state.runner.end_tick();
        }
    }
    (StatusCode::ACCEPTED, axum::Json(json!({ "job": name, "fire_id": id.to_string() }))).into_response()
}

async fn pause(state: State<ApiState>, JobName(name): JobName) -> Response {
    set_paused(state, name, true).await
}

async fn resume(state: State<ApiState>, JobName(name): JobName) -> Response {
    set_paused(state, name, false).await
}

async fn set_paused(State(state): State<ApiState>, name: String, paused: bool) -> Response {
    let Some(entry) = state.board.get(&name) else { return not_found(&name) };
    // In a cluster the paused set in Redis is every node's: it must take first.
    if let Some(node) = &state.cluster
        && let Err(e) = node.set_paused(&name, paused).await
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot reach the cluster's Redis: {e}"));
    }
    let dir = state.state_dir.clone();
    let now = state.clock.now();
    let job = name.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let conn = state::journal::connection(&dir).map_err(|e| e.to_string())?;
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
