//! `/jobs/NAME`: the job as beatd understood it, its next ten fires, its runs in progress and
//! its recent runs, and the Run now / Pause / Resume buttons.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::overview::running_table;
use super::{Strip, duration, job_state, layout, local, relative};
use crate::jobs::Action;
use crate::runs::RunView;
use crate::state::history::RunRecord;
use crate::status::LiveJob;

/// The action's settings worth showing. Secrets stay out: of headers and environment
/// variables only the names are shown.
fn action_rows(action: &Action) -> Vec<(&'static str, String)> {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    match action {
        Action::Command(c) => {
            let mut rows = vec![("command", c.command.to_string())];
            let c = c.settings();
            if let Some(w) = &c.workdir {
                rows.push(("workdir", w.display().to_string()));
            }
            if let Some((u, _)) = &c.user {
                rows.push(("user", u.to_string()));
            }
            if let Some((g, _)) = &c.group {
                rows.push(("group", g.to_string()));
            }
            if !c.env.is_empty() {
                rows.push(("env", c.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")));
            }
            rows.push(("kill_grace", d(c.kill_grace)));
            rows
        }
        Action::Noop(_) => vec![],
        Action::Cleanup(c) => vec![
            ("path", c.path.display().to_string()),
            ("older_than", d(c.older_than)),
            ("recursive", c.recursive.to_string()),
            ("remove_empty_dirs", c.remove_empty_dirs.to_string()),
            ("dry_run", c.dry_run.to_string()),
        ],
        Action::HttpCheck(h) => {
            let mut rows = vec![
                ("url", h.url.to_string()),
                ("method", h.method.to_string()),
                ("timeout", d(h.timeout)),
                (
                    "expect_status",
                    h.expect_status
                        .iter()
                        .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ];
            if let Some(body) = &h.expect_body {
                rows.push(("expect_body", body.clone()));
            }
            if !h.headers.is_empty() {
                rows.push(("headers", h.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")));
            }
            rows
        }
        Action::TcpCheck(t) => vec![("address", t.address.clone()), ("timeout", d(t.timeout))],
        Action::Report(r) => {
            let mut rows = vec![("output_dir", r.output_dir.display().to_string())];
            if let Some(p) = r.period {
                rows.push(("period", d(p)));
            }
            if let Some(jobs) = &r.jobs {
                rows.push(("jobs", jobs.join(", ")));
            }
            rows
        }
        Action::Celery(c) => {
            let mut rows = vec![
                ("broker", c.broker.clone()),
                ("task", c.task.clone()),
                ("queue", c.queue.clone()),
                ("args", c.args.to_string()),
                ("kwargs", c.kwargs.to_string()),
            ];
            if let Some(p) = c.priority {
                rows.push(("priority", p.to_string()));
            }
            if let Some(e) = c.expires {
                rows.push(("expires", d(e)));
            }
            rows
        }
        Action::Push(p) => {
            vec![("broker", p.broker.clone()), ("queue", p.queue.clone()), ("payload", p.payload.to_string())]
        }
        Action::Sql(s) => {
            let mut rows = vec![("database", s.database.clone()), ("transaction", s.transaction.to_string())];
            for st in &s.statements {
                rows.push(("statement", st.clone()));
            }
            rows
        }
        Action::SqlCheck(s) => {
            vec![("database", s.database.clone()), ("query", s.query.clone()), ("timeout", d(s.timeout))]
        }
    }
}

fn policy_rows(e: &LiveJob) -> Vec<(&'static str, String)> {
    let p = &e.job.policy;
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let mut rows = vec![];
    if let Some(t) = p.timeout {
        rows.push(("timeout", d(t)));
    }
    rows.push(("overlap", format!("{:?}", p.overlap).to_lowercase()));
    rows.push(("retries", p.retries.to_string()));
    if p.retries > 0 {
        rows.push(("retry_delay", format!("{} (up to {})", d(p.retry_delay), d(p.retry_max_delay))));
    }
    if let Some(j) = p.jitter {
        rows.push(("jitter", d(j)));
    }
    rows.push(("catch_up", format!("{:?}", p.catch_up).to_lowercase()));
    if let Some(n) = &e.job.notify {
        rows.push(("notify", n.to_string()));
    }
    rows.push(("history", format!("{:?}", e.job.history.mode).to_lowercase()));
    if let Some(n) = e.job.history.max_runs {
        rows.push(("history_keep_runs", n.to_string()));
    }
    rows
}

/// A run's details in a line: files deleted, latency, status, value.
fn details(r: &RunRecord) -> String {
    let d = &r.details;
    let mut parts = Vec::new();
    if let Some(n) = d.files_deleted {
        parts.push(format!("{n} file(s) deleted"));
    }
    if let Some(n) = d.bytes_freed {
        parts.push(format!("{n} byte(s) freed"));
    }
    if let Some(n) = d.errors.filter(|n| *n > 0) {
        parts.push(format!("{n} error(s)"));
    }
    if let Some(up) = d.up {
        parts.push(if up { "up".into() } else { "down".into() });
    }
    if let Some(ms) = d.latency_ms {
        parts.push(format!("{ms:.1} ms"));
    }
    if let Some(s) = d.status {
        parts.push(format!("HTTP {s}"));
    }
    if let Some(v) = &d.value {
        parts.push(format!("value {v}"));
    }
    if let Some(st) = &d.statements {
        parts.push(format!("{} statement(s)", st.len()));
    }
    if let Some(code) = r.exit_code {
        parts.push(format!("exit code {code}"));
    }
    parts.join(", ")
}

pub fn render(
    e: &LiveJob,
    runs: Result<Vec<RunRecord>, String>,
    active: &[RunView],
    strip: &Strip,
    now: DateTime<Utc>,
) -> Markup {
    let j = &e.job;
    let tz = j.timezone;
    let state = job_state(e);
    let mut next = Vec::new();
    let mut after = now;
    if j.enabled {
        while next.len() < 10 {
            let Some((slot, at)) = j.next_fire(after) else { break };
            next.push((slot, at));
            after = slot;
        }
    }
    let name = &*j.name;
    let body = html! {
        div.bar {
            h1 { (name) " " span.badge.(state) #job-state data-state=(state) { (state) } }
            div.buttons role="group" aria-label="Actions" {
                @if j.enabled {
                    button type="button" data-post=(format!("/api/jobs/{name}/run")) data-done="started" { "Run now" }
                }
                @if e.status.is_paused() {
                    button type="button" data-post=(format!("/api/jobs/{name}/resume")) data-done="resumed" { "Resume" }
                } @else {
                    button type="button" data-post=(format!("/api/jobs/{name}/pause")) data-done="paused" { "Pause" }
                }
            }
        }
        div.columns {
            section aria-labelledby="config-title" {
                h2 #config-title { "Configuration" }
                dl.config {
                    dt { "schedule" }
                    dd {
                        @if let Some(w) = super::words::describe(&j.schedule_text) { (w) " · " }
                        code { (j.schedule_text) }
                    }
                    dt { "timezone" } dd { (tz.name()) }
                    dt { "action" } dd { (j.action.name()) }
                    dt { "enabled" } dd { (j.enabled) }
                    @for (k, v) in action_rows(&j.action) { dt { (k) } dd { code.value { (v) } } }
                    @for (k, v) in policy_rows(e) { dt { (k) } dd { (v) } }
                }
            }
            section aria-labelledby="next-title" {
                h2 #next-title { "Next fires" }
                @if next.is_empty() {
                    p.muted { @if j.enabled { "No fire ahead." } @else { "Disabled: nothing is scheduled." } }
                } @else {
                    ol.next {
                        @for (slot, at) in &next {
                            li {
                                time datetime=(at.to_rfc3339()) { (local(*at, tz)) }
                                " " span.muted { (relative(*at, now)) }
                                @if at != slot { " " span.muted { "(slot " (local(*slot, tz)) ", jitter)" } }
                            }
                        }
                    }
                }
            }
        }
        @if !active.is_empty() {
            section aria-labelledby="running-title" {
                h2 #running-title { "Running now" }
                (running_table(active, false))
            }
        }
        section aria-labelledby="runs-title" {
            h2 #runs-title { "Recent runs" }
            @match &runs {
                Err(why) => p.error { "Cannot read the run history: " (why) },
                Ok(runs) if runs.is_empty() => p.muted { "No run in the history yet." },
                Ok(runs) => table.history {
                    thead { tr {
                        th scope="col" { "Slot" } th scope="col" { "Outcome" } th scope="col" { "Attempt" }
                        th scope="col" { "Started" } th scope="col" { "Duration" } th scope="col" { "Details" }
                    } }
                    tbody {
                        @for r in runs {
                            tr.run data-outcome=(r.outcome.as_str()) data-fire-id=(r.fire_id) {
                                td { time datetime=(r.scheduled_at.to_rfc3339()) { (local(r.scheduled_at, tz)) } }
                                td { span.badge.(r.outcome.as_str()) { (r.outcome.as_str()) } }
                                td { (r.attempt) }
                                td { @match r.started_at { Some(s) => span title=(local(s, tz)) { (relative(s, now)) }, None => span.muted { "—" } } }
                                td { @match r.duration() { Some(d) => (duration(chrono::Duration::from_std(d).unwrap_or_default())), None => "—" } }
                                td.details {
                                    (details(r))
                                    @if let Some(err) = &r.error {
                                        details.error {
                                            summary { (first_line(err)) }
                                            pre { (err) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
    };
    layout(name, strip, "", body)
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(79).collect::<String>())
    } else {
        line.to_string()
    }
}
