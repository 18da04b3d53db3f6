//! `/`: the jobs table, filtered, sorted and paged on the server, and the runs in progress.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::{PAGE, RateMap, Strip, job_state, layout, local, relative};
use crate::runs::RunView;
use crate::status::{JobSet, LiveJob};

/// `?q=&sort=&dir=&page=`: every field optional, anything unknown ignored.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct OverviewQuery {
    pub q: Option<String>,
    pub sort: Option<String>,
    pub dir: Option<String>,
    pub page: Option<usize>,
}

const COLUMNS: [(&str, &str); 9] = [
    ("name", "Job"),
    ("schedule", "Schedule"),
    ("zone", "Zone"),
    ("action", "Action"),
    ("state", "State"),
    ("last", "Last run"),
    ("next", "Next run"),
    ("rate", "24 h success"),
    ("", ""),
];

fn matches(e: &LiveJob, needle: &str) -> bool {
    let j = &e.job;
    let has = |s: &str| s.to_lowercase().contains(needle);
    has(&j.name) || has(&j.schedule_text) || has(j.action.name()) || has(j.timezone.name()) || has(super::job_state(e))
}

fn rate(rates: &RateMap, name: &str) -> Option<f64> {
    rates.get(name).filter(|(_, all)| *all > 0).map(|(ok, all)| *ok as f64 / *all as f64)
}

fn compare(a: &LiveJob, b: &LiveJob, key: &str, rates: &RateMap) -> Ordering {
    let by_name = || a.job.name.cmp(&b.job.name);
    let some_first = |x: Option<i64>, y: Option<i64>| match (x, y) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let o = match key {
        "schedule" => a.job.schedule_text.cmp(&b.job.schedule_text),
        "zone" => a.job.timezone.name().cmp(b.job.timezone.name()),
        "action" => a.job.action.name().cmp(b.job.action.name()),
        "state" => job_state(a).cmp(job_state(b)),
        "last" => some_first(
            b.status.last_run().map(|r| r.finished.timestamp_millis()),
            a.status.last_run().map(|r| r.finished.timestamp_millis()),
        ),
        "next" => some_first(
            a.status.next_fire().filter(|_| a.job.enabled).map(|t| t.timestamp_millis()),
            b.status.next_fire().filter(|_| b.job.enabled).map(|t| t.timestamp_millis()),
        ),
        "rate" => rate(rates, &a.job.name).partial_cmp(&rate(rates, &b.job.name)).unwrap_or(Ordering::Equal),
        _ => Ordering::Equal,
    };
    o.then_with(by_name)
}

/// The link that sorts by `key`, keeping the filter; the current column's link flips it.
fn sort_link(q: &OverviewQuery, key: &str) -> String {
    let current = q.sort.as_deref().unwrap_or("name") == key;
    let dir = if current && q.dir.as_deref() != Some("desc") { "desc" } else { "asc" };
    let mut url = format!("/?sort={key}&dir={dir}");
    if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
        url.push_str("&q=");
        url.push_str(&percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string());
    }
    url
}

fn page_link(q: &OverviewQuery, page: usize) -> String {
    let mut url = format!("/?page={page}");
    for (k, v) in [("sort", &q.sort), ("dir", &q.dir), ("q", &q.q)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            url.push_str(&format!(
                "&{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
    }
    url
}

pub fn render(
    jobs: &JobSet,
    rates: &RateMap,
    active: &[RunView],
    strip: &Strip,
    now: DateTime<Utc>,
    q: &OverviewQuery,
) -> Markup {
    let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let mut rows: Vec<&LiveJob> = jobs.jobs.iter().filter(|e| needle.is_empty() || matches(e, &needle)).collect();
    let key = q.sort.as_deref().unwrap_or("name");
    let desc = q.dir.as_deref() == Some("desc");
    rows.sort_by(|a, b| {
        let o = compare(a, b, key, rates);
        if desc { o.reverse() } else { o }
    });
    let pages = rows.len().div_ceil(PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let shown = &rows[(page - 1) * PAGE..(page * PAGE).min(rows.len())];
    let body = html! {
        @if !active.is_empty() {
            section aria-labelledby="running-title" {
                h2 #running-title { "Running now" }
                (running_table(active, true))
            }
        }
        section aria-labelledby="jobs-title" {
            div.bar {
                h1 #jobs-title { "Jobs" }
                form.filter method="get" action="/" role="search" {
                    label for="q" { "Filter" }
                    input #q type="search" name="q" value=(q.q.as_deref().unwrap_or("")) placeholder="name, schedule, action, zone, state";
                    @if let Some(s) = &q.sort { input type="hidden" name="sort" value=(s); }
                    @if let Some(d) = &q.dir { input type="hidden" name="dir" value=(d); }
                    button type="submit" { "Filter" }
                }
                span.count { (rows.len()) " of " (jobs.jobs.len()) " jobs" }
            }
            table.jobs {
                thead {
                    tr {
                        @for (k, title) in COLUMNS {
                            @if k.is_empty() {
                                th { span.visually-hidden { "Actions" } }
                            } @else {
                                th scope="col" aria-sort=(aria_sort(key, desc, k)) {
                                    a href=(sort_link(q, k)) { (title) @if key == k { (if desc { " ▾" } else { " ▴" }) } }
                                }
                            }
                        }
                    }
                }
                tbody {
                    @for e in shown { (row(e, rates, now)) }
                    @if shown.is_empty() {
                        tr { td colspan="9" .empty { "No job matches \u{201c}" (needle) "\u{201d}." } }
                    }
                }
            }
            @if pages > 1 {
                nav.pages aria-label="Pages of jobs" {
                    @if page > 1 { a href=(page_link(q, page - 1)) rel="prev" { "← Previous" } }
                    span { "Page " (page) " of " (pages) }
                    @if page < pages { a href=(page_link(q, page + 1)) rel="next" { "Next →" } }
                }
            }
        }
    };
    layout("Jobs", strip, "jobs", body)
}

fn aria_sort(key: &str, desc: bool, column: &str) -> &'static str {
    match (key == column, desc) {
        (false, _) => "none",
        (true, false) => "ascending",
        (true, true) => "descending",
    }
}

fn row(e: &LiveJob, rates: &RateMap, now: DateTime<Utc>) -> Markup {
    let j = &e.job;
    let tz = j.timezone;
    let state = job_state(e);
    let words = super::words::describe(&j.schedule_text);
    html! {
        tr data-job=(j.name) {
            th scope="row" { a href=(format!("/jobs/{}", j.name)) { (j.name) } }
            td.schedule {
                @if let Some(w) = &words { span.words { (w) } " " }
                code { (j.schedule_text) }
            }
            td { (tz.name()) }
            td { (j.action.name()) }
            td { span.badge.(state) data-state=(state) { (state) } }
            td.last {
                @if let Some(r) = e.status.last_run() {
                    span.badge.(r.outcome.as_str()) { (r.outcome.as_str()) }
                    " "
                    time datetime=(r.finished.to_rfc3339()) title=(local(r.finished, tz)) { (relative(r.finished, now)) }
                    @if let Some(s) = r.started { " · " (super::duration(r.finished - s)) }
                } @else { span.muted { "never" } }
            }
            td.next {
                @match e.status.next_fire().filter(|_| j.enabled) {
                    Some(t) => {
                        time datetime=(t.to_rfc3339()) { (relative(t, now)) }
                        br;
                        span.abs { (local(t, tz)) }
                    }
                    None => span.muted { "—" },
                }
            }
            td.rate {
                @match rates.get(&*j.name).filter(|(_, all)| *all > 0) {
                    Some((ok, all)) => {
                        @let pct = *ok as f64 * 100.0 / *all as f64;
                        span class=(if pct >= 99.5 { "good" } else if pct >= 90.0 { "fair" } else { "poor" }) title=(format!("{ok} of {all} attempts")) {
                            (format!("{pct:.0} %"))
                        }
                    }
                    None => span.muted { "—" },
                }
            }
            td.actions {
                @if j.enabled {
                    button type="button" data-post=(format!("/api/jobs/{}/run", j.name)) data-done="started" { "Run now" }
                }
            }
        }
    }
}

/// `2026-11-24 17:00:00 +01:00` from the run's RFC 3339 slot.
fn slot_text(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map_or_else(|_| rfc3339.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
}

/// Runs queued or running, with their progress and a cancel button.
pub fn running_table(active: &[RunView], with_job: bool) -> Markup {
    html! {
        table.runs {
            thead {
                tr {
                    @if with_job { th scope="col" { "Job" } }
                    th scope="col" { "Slot" }
                    th scope="col" { "State" }
                    th scope="col" { "Attempt" }
                    th scope="col" { "Progress" }
                    th { span.visually-hidden { "Actions" } }
                }
            }
            tbody {
                @for r in active {
                    tr data-run=(r.fire_id) {
                        @if with_job { th scope="row" { a href=(format!("/jobs/{}", r.job)) { (r.job) } } }
                        td { (slot_text(&r.slot)) }
                        td { span.badge.running { (serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) } }
                        td { (r.attempt) }
                        td.progress {
                            @if let Some(p) = &r.progress {
                                @if let Some(n) = p.percent { progress value=(n) max="100" { (n) " %" } " " (n) " % " }
                                span.message { (p.message) }
                            } @else { span.muted { "—" } }
                        }
                        td.actions {
                            button type="button" .danger data-post=(format!("/api/runs/{}/cancel", r.fire_id)) data-done="cancelled" { "Cancel" }
                        }
                    }
                }
            }
        }
    }
}
