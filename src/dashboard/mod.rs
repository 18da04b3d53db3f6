//! The web dashboard: every job at a glance (`/`), the upcoming fires drawn on a timeline
//! (`/timeline`), one job with its runs (`/jobs/NAME`), served by the API's own server.
//!
//! Why it is made this way:
//! - **Server-rendered HTML** from maud templates, compiled into the binary with one small
//!   stylesheet and one small script: beatd is one binary that works offline, so no CDN and
//!   no build step. maud escapes every interpolated string, so commands, URLs, errors and
//!   output from the config and the history always render as text.
//! - **It reads well without JavaScript.** Sorting, filtering and paging are links and a GET
//!   form; the script only adds a refresh every few seconds and the buttons, which call the
//!   same API as `beatd trigger`/`pause`/`resume`/`cancel`. Pages never change state: every
//!   mutation is a `POST` to `/api/...` with the bearer token, which the page asks for once and
//!   keeps in `sessionStorage` (never a cookie, never a URL), and which the API's guard checks
//!   like any other client's (same-origin, `Host`, token).
//! - **The timeline is computed here**, with the same `next_fire` as `beatd next`, so what is
//!   drawn is what will run.
//! - **10 000 jobs**: the overview and the timeline are paged (100 jobs a page) after a filter
//!   and a sort over all jobs; the 24-hour success rates come from one grouped query, cached
//!   for 30 s, never one query per job.
//!
//! A `Content-Security-Policy` allows only the page's own script and stylesheet, so even a
//! string that escaped escaping could not run.

mod job_page;
mod overview;
pub mod timeline;
pub mod words;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::api::ApiState;
use crate::cluster::member::Role;
use crate::status::LiveJob;

pub use overview::{OverviewQuery, render as render_overview};
pub use timeline::{TimelineQuery, render as render_timeline};

/// Jobs per page, in the overview and the timeline.
pub const PAGE: usize = 100;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");

/// The dashboard's routes (all `GET`); [`crate::api::router`] serves them when it is on.
pub const PAGES: &[&str] = &["/", "/timeline", "/jobs/{name}", "/assets/style.css", "/assets/app.js"];

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(overview_page))
        .route("/timeline", get(timeline_page))
        .route("/jobs/{name}", get(job_page))
        .route("/assets/style.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/assets/app.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .layer(axum::middleware::map_response(secure))
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Only the page's own script and stylesheet run; no framing; no referrer leaves.
async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// What the health strip shows.
#[derive(Debug, Clone, Default)]
pub struct Strip {
    /// `ok`, `stuck` or `degraded`, and why.
    pub loop_state: (String, Option<String>),
    pub reload_failed: bool,
    pub outbox: i64,
    /// Role, leader, this node: with `[cluster]`.
    pub cluster: Option<(String, Option<String>, String)>,
    pub jobs: usize,
}

fn strip(state: &ApiState) -> Strip {
    let (_, health) = crate::api::health(state);
    let loop_state =
        (health["status"].as_str().unwrap_or("ok").to_string(), health["reason"].as_str().map(str::to_string));
    let cluster = state.cluster.as_ref().map(|node| {
        let view = node.view();
        let role = match view.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
        };
        (role.to_string(), view.leader.clone(), view.node.clone())
    });
    Strip {
        loop_state,
        reload_failed: state.board.health.reload_failed.load(std::sync::atomic::Ordering::Relaxed),
        outbox: state.board.metrics.outbox.get(),
        cluster,
        jobs: state.board.jobs().jobs.len(),
    }
}

/// One page: the header, the health strip, `body`; the script refreshes `#live`.
pub fn layout(title: &str, strip: &Strip, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · beatd" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "beatd" }
                    nav aria-label="Pages" {
                        a href="/" aria-current=[(current == "jobs").then_some("page")] { "Jobs" }
                        a href="/timeline" aria-current=[(current == "timeline").then_some("page")] { "Timeline" }
                    }
                    span.refresh { "refreshes every 5 s" }
                }
                div #notice role="status" aria-live="polite" {}
                main #live {
                    (strip_markup(strip))
                    (body)
                }
                dialog #token-dialog {
                    form method="dialog" {
                        h2 { "API token" }
                        p #token-why { "This action needs beatd's API token." }
                        p.hint { "It is in the state folder (" code { "api-token" } ") or the " code { "token_file" }
                            " of [api]. It is kept for this browser tab only." }
                        label for="token-input" { "Token" }
                        input #token-input type="password" autocomplete="off" required;
                        div.buttons {
                            button type="submit" value="ok" { "Use token" }
                            button type="submit" value="cancel" formnovalidate { "Cancel" }
                        }
                    }
                }
            }
        }
    }
}

fn strip_markup(s: &Strip) -> Markup {
    let (state, reason) = &s.loop_state;
    html! {
        section.strip aria-label="Health" {
            div.cell {
                span.label { "Loop" }
                span.badge.(state) title=[reason.as_deref()] { (state) }
                @if let Some(r) = reason { span.reason { (r) } }
            }
            div.cell {
                span.label { "Config" }
                @if s.reload_failed {
                    span.badge.failing title="the previous config is still running" { "last reload failed" }
                } @else {
                    span.badge.ok { "loaded" }
                }
            }
            div.cell {
                span.label { "Outbox" }
                span.badge.(if s.outbox > 0 { "degraded" } else { "ok" }) { (s.outbox) " waiting" }
            }
            @if let Some((role, leader, node)) = &s.cluster {
                div.cell {
                    span.label { "Cluster" }
                    span.badge.(if role == "leader" { "ok" } else { "paused" }) { (role) }
                    span.reason {
                        "node " (node)
                        @if role != "leader" { ", leader " (leader.as_deref().unwrap_or("none")) }
                    }
                }
            }
            div.cell {
                span.label { "Jobs" }
                span.count { (s.jobs) }
            }
        }
    }
}

/// Per job over the last 24 hours: (successful attempts, attempts), skips and cancels left out.
pub type RateMap = HashMap<String, (u64, u64)>;

/// The 24-hour success rates, one grouped query every 30 s at most.
#[derive(Debug, Default)]
pub struct Rates {
    cached: Mutex<Option<(tokio::time::Instant, Arc<RateMap>)>>,
}

const RATES_FRESH: Duration = Duration::from_secs(30);

impl Rates {
    pub async fn get(&self, state_dir: &Path, now: DateTime<Utc>) -> Arc<RateMap> {
        if let Some((at, map)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < RATES_FRESH
        {
            return map.clone();
        }
        let dir = state_dir.to_path_buf();
        let since = now - chrono::Duration::hours(24);
        let map = match tokio::task::spawn_blocking(move || rates(&dir, since)).await {
            Ok(Ok(map)) => Arc::new(map),
            Ok(Err(e)) => {
                tracing::debug!("dashboard: cannot read success rates: {e}");
                Arc::new(RateMap::new())
            }
            Err(_) => Arc::new(RateMap::new()),
        };
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((tokio::time::Instant::now(), map.clone()));
        map
    }
}

fn rates(dir: &Path, since: DateTime<Utc>) -> Result<RateMap, String> {
    let conn = match crate::state::open_read_only(dir) {
        Ok(conn) => conn,
        Err(crate::state::StateError::Missing(_)) => return Ok(RateMap::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut map = RateMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT job, SUM(outcome = 'success'), SUM(outcome NOT IN ('skipped', 'cancelled'))
             FROM runs WHERE finished_at >= ?1 GROUP BY job",
        )
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([since.timestamp_millis()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .map_err(|e| e.to_string())?;
    for row in rows {
        let (job, ok, all) = row.map_err(|e| e.to_string())?;
        map.insert(job, (ok.max(0) as u64, all.max(0) as u64));
    }
    // Successes a `history = "failures"` job did not write, counted per hour.
    let unwritten = conn.prepare("SELECT job, SUM(n) FROM unwritten_successes WHERE hour >= ?1 GROUP BY job");
    if let Ok(mut stmt) = unwritten {
        let rows = stmt
            .query_map([since.timestamp() / 3600], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (job, n) = row.map_err(|e| e.to_string())?;
            let e = map.entry(job).or_default();
            e.0 += n.max(0) as u64;
            e.1 += n.max(0) as u64;
        }
    }
    Ok(map)
}

/// A job's state as the dashboard names it.
pub fn job_state(e: &LiveJob) -> &'static str {
    use crate::job::RunOutcome;
    if !e.job.enabled {
        "disabled"
    } else if e.status.is_paused() {
        "paused"
    } else if e.status.running.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        "running"
    } else if e.status.check_up() == Some(false)
        || e.status
            .last_run()
            .is_some_and(|r| matches!(r.outcome, RunOutcome::Failure | RunOutcome::Timeout | RunOutcome::Interrupted))
    {
        "failing"
    } else {
        "ok"
    }
}

/// `2026-11-24 17:00:00 +01:00` in `zone`.
pub fn local(t: DateTime<Utc>, zone: chrono_tz::Tz) -> String {
    t.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S %:z").to_string()
}

/// `in 5m 10s`, `3m 2s ago`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t >= now {
        crate::cli::relative(t - now)
    } else {
        format!("{} ago", crate::cli::relative(now - t).trim_start_matches("in "))
    }
}

/// `1.2 s`, `340 ms`, `2m 5s`.
pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        crate::cli::relative(d).trim_start_matches("in ").to_string()
    }
}

async fn overview_page(State(state): State<ApiState>, query: Result<Query<OverviewQuery>, QueryRejection>) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default(); // a parameter that cannot be read is ignored
    let now = state.clock.now();
    let rates = state.rates.get(&state.state_dir, now).await;
    let jobs = state.board.jobs();
    let active = state.runner.runs().active();
    html_page(render_overview(&jobs, &rates, &active, &strip(&state), now, &q))
}

async fn timeline_page(State(state): State<ApiState>, query: Result<Query<TimelineQuery>, QueryRejection>) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default(); // a parameter that cannot be read is ignored
    let now = state.clock.now();
    let jobs = state.board.jobs();
    match render_timeline(&jobs, &strip(&state), now, &q) {
        Ok(page) => html_page(page),
        Err(why) => {
            let s = strip(&state);
            let body = html! { h1 { "Timeline" } p.error { (why) } p { a href="/timeline" { "The next 24 hours" } } };
            (StatusCode::BAD_REQUEST, html_page(layout("Bad request", &s, "timeline", body))).into_response()
        }
    }
}

async fn job_page(State(state): State<ApiState>, UrlPath(name): UrlPath<String>) -> Response {
    let Some(entry) = state.board.get(&name) else {
        let s = strip(&state);
        let body = html! {
            h1 { "No job \u{201c}" (name) "\u{201d}" }
            p { "The config has no job of that name. " a href="/" { "All jobs" } }
        };
        return (StatusCode::NOT_FOUND, html_page(layout("Not found", &s, "", body))).into_response();
    };
    let dir = state.state_dir.clone();
    let job = name.clone();
    let runs = tokio::task::spawn_blocking(move || -> Result<Vec<crate::state::history::RunRecord>, String> {
        let conn = match crate::state::open_read_only(&dir) {
            Ok(conn) => conn,
            Err(crate::state::StateError::Missing(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        crate::state::history::query(&conn, Some(&job), None, Some(50)).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let active: Vec<_> = state.runner.runs().active().into_iter().filter(|r| r.job == name).collect();
    html_page(job_page::render(&entry, runs, &active, &strip(&state), state.clock.now()))
}

fn html_page(m: Markup) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], m.into_string())
        .into_response()
}
