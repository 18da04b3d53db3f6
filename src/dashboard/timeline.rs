//! `/timeline`: the upcoming fires as SVG swim-lanes, one per job, computed with the same
//! `next_fire` as `beatd next`.
//!
//! A lane is cut into [`BUCKETS`] buckets. Each fire is a tick whose tooltip is its exact
//! instant in the job's zone; a bucket that holds [`DENSE`] fires or more becomes part of a
//! density band, and the walk jumps to the bucket's end. So a job every second costs a few
//! hundred `next_fire` calls for a week, not 604 800, and draws as a band, not a smear.
//! Offset changes of the lanes' zones in the window (DST) are drawn as marked lines and
//! listed under the chart.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::{PAGE, Strip, layout};
use crate::job::Job;
use crate::schedule::Schedule;
use crate::schedule::zone::ZoneTable;
use crate::status::JobSet;

/// Buckets a lane is cut into.
pub const BUCKETS: usize = 240;
/// Fires in one bucket that make it part of a band.
pub const DENSE: u32 = 3;

const LABEL_W: f64 = 230.0;
const PLOT_W: f64 = 960.0;
const LANE_H: f64 = 24.0;
const AXIS_H: f64 = 34.0;

/// `?range=1h|24h|7d&from=...&q=...&page=N`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TimelineQuery {
    pub range: Option<String>,
    /// RFC 3339, or `YYYY-MM-DD` (midnight UTC), or `YYYY-MM-DDTHH:MM` (UTC).
    pub from: Option<String>,
    pub q: Option<String>,
    pub page: Option<usize>,
}

/// What one lane draws.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Lane {
    /// Single fires: (when it runs, its slot).
    pub ticks: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Runs of dense buckets: first and last bucket index.
    pub bands: Vec<(usize, usize)>,
}

/// The fires of `job` in `[from, until)`.
pub fn lane(job: &Job, from: DateTime<Utc>, until: DateTime<Utc>) -> Lane {
    let mut lane = Lane::default();
    if matches!(job.schedule, Schedule::Reboot) || !job.enabled {
        return lane;
    }
    let span = (until - from).num_milliseconds().max(1);
    let bucket_of = |t: DateTime<Utc>| (((t - from).num_milliseconds() * BUCKETS as i64) / span) as usize;
    let bucket_end = |b: usize| from + Duration::milliseconds(span * (b as i64 + 1) / BUCKETS as i64);
    let mut counts = [0u32; BUCKETS];
    let mut per_bucket: Vec<Vec<(DateTime<Utc>, DateTime<Utc>)>> = vec![Vec::new(); BUCKETS];
    let mut after = from - Duration::milliseconds(1);
    while let Some((slot, at)) = job.next_fire(after) {
        if at >= until {
            break;
        }
        after = slot;
        if at < from {
            continue;
        }
        let b = bucket_of(at).min(BUCKETS - 1);
        counts[b] += 1;
        if counts[b] >= DENSE {
            // Dense: the rest of this bucket need not be walked.
            let end = bucket_end(b) - Duration::milliseconds(1);
            if end > after {
                after = end;
            }
        } else {
            per_bucket[b].push((at, slot));
        }
    }
    let mut b = 0;
    while b < BUCKETS {
        if counts[b] >= DENSE {
            let start = b;
            while b + 1 < BUCKETS && counts[b + 1] >= DENSE {
                b += 1;
            }
            lane.bands.push((start, b));
        } else {
            lane.ticks.extend(per_bucket[b].iter().copied());
        }
        b += 1;
    }
    lane
}

/// Offset changes of `zone` in `[from, until)`: (instant, offset before, offset after), seconds.
pub fn transitions(zone: chrono_tz::Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, i64, i64)> {
    let table = ZoneTable::for_zone(zone);
    let mut seg = table.segment_at(from.timestamp());
    let mut out = Vec::new();
    while seg.end < until.timestamp() {
        let Some(next) = table.next_segment(&seg) else { break };
        if let Some(t) = DateTime::from_timestamp(next.start, 0) {
            out.push((t, seg.offset, next.offset));
        }
        seg = next;
    }
    out
}

fn offset_text(seconds: i64) -> String {
    FixedOffset::east_opt(seconds as i32).map_or_else(|| format!("{seconds}s"), |o| o.to_string())
}

fn parse_from(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

fn range_of(text: Option<&str>) -> Option<(Duration, &'static str)> {
    match text.unwrap_or("24h") {
        "1h" => Some((Duration::hours(1), "1h")),
        "24h" | "1d" => Some((Duration::hours(24), "24h")),
        "7d" | "1w" => Some((Duration::days(7), "7d")),
        _ => None,
    }
}

fn link(range: &str, from: Option<DateTime<Utc>>, q: Option<&str>) -> String {
    let mut url = format!("/timeline?range={range}");
    if let Some(f) = from {
        url.push_str(&format!("&from={}", f.format("%Y-%m-%dT%H:%M")));
    }
    if let Some(q) = q.filter(|q| !q.is_empty()) {
        url.push_str(&format!("&q={}", percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)));
    }
    url
}

/// The axis: (instant, label or none for a minor tick).
fn axis(from: DateTime<Utc>, range: Duration) -> Vec<(DateTime<Utc>, Option<String>)> {
    let (step, label_every, format) = match range.num_hours() {
        0..=1 => (Duration::minutes(5), 2, "%H:%M"),
        2..=24 => (Duration::hours(1), 3, "%H:%M"),
        _ => (Duration::hours(6), 4, "%a %d"),
    };
    let step_s = step.num_seconds();
    let first = (from.timestamp() + step_s - 1).div_euclid(step_s) * step_s;
    let mut out = Vec::new();
    let mut t = first;
    while t < (from + range).timestamp() {
        if let Some(at) = DateTime::from_timestamp(t, 0) {
            let major = (t / step_s) % label_every == 0;
            out.push((at, major.then(|| at.format(format).to_string())));
        }
        t += step_s;
    }
    out
}

pub fn render(jobs: &JobSet, strip: &Strip, now: DateTime<Utc>, q: &TimelineQuery) -> Result<Markup, String> {
    let (range, range_name) = range_of(q.range.as_deref()).ok_or("range must be 1h, 24h or 7d".to_string())?;
    let from = match q.from.as_deref().filter(|f| !f.is_empty()) {
        Some(text) => parse_from(text).ok_or_else(|| {
            format!("from must be a date (2026-03-08), a UTC time (2026-03-08T06:00) or RFC 3339, not \u{201c}{text}\u{201d}")
        })?,
        None => now,
    };
    let until = from + range;
    let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let mut shown: Vec<&crate::status::LiveJob> = jobs
        .jobs
        .iter()
        .filter(|e| e.job.enabled && !matches!(e.job.schedule, Schedule::Reboot))
        .filter(|e| needle.is_empty() || e.job.name.to_lowercase().contains(&needle))
        .collect();
    shown.sort_by(|a, b| a.job.name.cmp(&b.job.name));
    let total = shown.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let shown = &shown[(page - 1) * PAGE..(page * PAGE).min(total)];

    // DST and other offset changes of the zones on this page, merged by instant.
    let mut changes: BTreeMap<DateTime<Utc>, Vec<(String, i64, i64)>> = BTreeMap::new();
    let mut zones: Vec<chrono_tz::Tz> = shown.iter().map(|e| e.job.timezone).collect();
    zones.sort_by_key(|z| z.name());
    zones.dedup();
    for zone in &zones {
        for (t, before, after) in transitions(*zone, from, until) {
            changes.entry(t).or_default().push((zone.name().to_string(), before, after));
        }
    }

    let x =
        |t: DateTime<Utc>| LABEL_W + (t - from).num_milliseconds() as f64 * PLOT_W / range.num_milliseconds() as f64;
    let bucket_x = |b: usize| LABEL_W + b as f64 * PLOT_W / BUCKETS as f64;
    let height = AXIS_H + shown.len().max(1) as f64 * LANE_H + 6.0;
    let width = LABEL_W + PLOT_W + 10.0;
    let qtext = q.q.as_deref();
    let body = html! {
        div.bar {
            h1 { "Timeline" }
            nav.ranges aria-label="Window" {
                @for r in ["1h", "24h", "7d"] {
                    a href=(link(r, q.from.as_ref().map(|_| from), qtext)) aria-current=[(r == range_name).then_some("true")] { (r.replace('h', " h").replace('d', " d")) }
                }
                a href=(link(range_name, Some(from - range), qtext)) { "← Earlier" }
                a href=(link(range_name, None, qtext)) { "Now" }
                a href=(link(range_name, Some(until), qtext)) { "Later →" }
            }
            form.filter method="get" action="/timeline" role="search" {
                input type="hidden" name="range" value=(range_name);
                @if let Some(f) = &q.from { input type="hidden" name="from" value=(f); }
                label for="q" { "Filter" }
                input #q type="search" name="q" value=(qtext.unwrap_or("")) placeholder="job name";
                button type="submit" { "Filter" }
            }
        }
        p.window {
            "From " time datetime=(from.to_rfc3339()) { (from.format("%Y-%m-%d %H:%M UTC")) }
            " to " time datetime=(until.to_rfc3339()) { (until.format("%Y-%m-%d %H:%M UTC")) }
            " · " (total) " job(s) with a schedule"
            @if pages > 1 { ", page " (page) " of " (pages) }
            ". Hover a tick for its exact time in the job's zone."
        }
        figure.timeline {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height) role="img" aria-label=(format!("Fires of {} jobs from {} to {}", shown.len(), from.to_rfc3339(), until.to_rfc3339())) {
                @for (t, label) in axis(from, range) {
                    line.grid.major[label.is_some()] x1=(fmt(x(t))) x2=(fmt(x(t))) y1=(AXIS_H - 6.0) y2=(height) {}
                    @if let Some(l) = label { text.axis x=(fmt(x(t))) y="16" text-anchor="middle" { (l) } }
                }
                text.axis x="4" y="16" { "UTC" }
                @for (i, e) in shown.iter().enumerate() {
                    @let y = AXIS_H + i as f64 * LANE_H;
                    @let l = lane(&e.job, from, until);
                    @let tz = e.job.timezone;
                    g.lane data-job=(e.job.name) {
                        rect.lane-bg.odd[i % 2 == 1] x="0" y=(fmt(y)) width=(width) height=(LANE_H) {}
                        a href=(format!("/jobs/{}", e.job.name)) {
                            text.name x="6" y=(fmt(y + 16.0)) { (truncate(&e.job.name, 26)) title { (e.job.name) } }
                        }
                        text.zone x=(LABEL_W - 6.0) y=(fmt(y + 16.0)) text-anchor="end" { (short_zone(tz.name())) }
                        @for (b0, b1) in &l.bands {
                            rect.band x=(fmt(bucket_x(*b0))) y=(fmt(y + 5.0)) width=(fmt(bucket_x(*b1 + 1) - bucket_x(*b0))) height=(LANE_H - 10.0) {
                                title { (band_title(&e.job, from, until, *b0, *b1)) }
                            }
                        }
                        @for (at, slot) in &l.ticks {
                            rect.tick x=(fmt(x(*at) - 1.5)) y=(fmt(y + 3.0)) width="3" height=(LANE_H - 6.0) data-at=(at.to_rfc3339()) {
                                title { (e.job.name) ": " (at.with_timezone(&tz).to_rfc3339()) @if at != slot { " (slot " (slot.with_timezone(&tz).to_rfc3339()) ", jitter)" } }
                            }
                        }
                    }
                }
                @for (t, list) in &changes {
                    g.dst data-at=(t.to_rfc3339()) {
                        line.dst x1=(fmt(x(*t))) x2=(fmt(x(*t))) y1=(AXIS_H - 10.0) y2=(height) {}
                        text.dst x=(fmt(x(*t) + 3.0)) y="30" { "DST" }
                        title {
                            @for (zone, before, after) in list { (zone) ": " (offset_text(*before)) " → " (offset_text(*after)) " at " (t.to_rfc3339()) ". " }
                        }
                    }
                }
                @if now >= from && now < until {
                    line.now x1=(fmt(x(now))) x2=(fmt(x(now))) y1=(AXIS_H - 10.0) y2=(height) {}
                    text.now x=(fmt(x(now) + 3.0)) y=(AXIS_H - 2.0) { "now" }
                }
            }
        }
        @if !changes.is_empty() {
            section.dst-list aria-labelledby="dst-title" {
                h2 #dst-title { "Offset changes in this window" }
                ul {
                    @for (t, list) in &changes {
                        @for (zone, before, after) in list {
                            li.dst-change {
                                strong { (zone) } ": " (offset_text(*before)) " → " (offset_text(*after)) ", at "
                                time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) }
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pages aria-label="Pages of jobs" {
                @if page > 1 { a href=(format!("{}&page={}", link(range_name, q.from.as_ref().map(|_| from), qtext), page - 1)) { "← Previous" } }
                span { "Page " (page) " of " (pages) }
                @if page < pages { a href=(format!("{}&page={}", link(range_name, q.from.as_ref().map(|_| from), qtext), page + 1)) { "Next →" } }
            }
        }
    };
    Ok(layout("Timeline", strip, "timeline", body))
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

/// `America/New_York` → `New_York`; the full name is in the job's page.
fn short_zone(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn band_title(job: &Job, from: DateTime<Utc>, until: DateTime<Utc>, b0: usize, b1: usize) -> String {
    let span = (until - from).num_milliseconds();
    let at = |b: usize| from + Duration::milliseconds(span * b as i64 / BUCKETS as i64);
    let words = super::words::describe(&job.schedule_text).unwrap_or_else(|| job.schedule_text.to_string());
    format!(
        "{}: {words}, too many fires to draw one by one, from {} to {}",
        job.name,
        at(b0).with_timezone(&job.timezone).to_rfc3339(),
        at(b1 + 1).with_timezone(&job.timezone).to_rfc3339()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    fn jobs(text: &str) -> Vec<Job> {
        parse_str(text, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e:?}")).jobs
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_lane_has_the_fires_next_gives_and_bands_where_they_crowd() {
        let js = jobs(
            "[jobs.daily]\ncron = \"0 2 * * *\"\naction = \"noop\"\ntimezone = \"Europe/Berlin\"\n\n\
             [jobs.fast]\nevery = \"1s\"\naction = \"noop\"\n",
        );
        let from = t("2026-03-28T00:00:00Z");
        let until = from + Duration::days(7);
        let daily = lane(&js[0], from, until);
        assert!(daily.bands.is_empty());
        let mut expected = Vec::new();
        let mut after = from;
        while let Some((slot, at)) = js[0].next_fire(after).filter(|(_, at)| *at < until) {
            expected.push((at, slot));
            after = slot;
        }
        assert_eq!(daily.ticks, expected);
        assert_eq!(daily.ticks.len(), 7);
        // 02:00 Berlin on 29 March does not exist: cron-semantics runs it at 03:00 CEST = 01:00 UTC.
        assert_eq!(daily.ticks[1].0, t("2026-03-29T01:00:00Z"));
        let fast = lane(&js[1], from, until);
        assert_eq!(fast.bands, [(0, BUCKETS - 1)], "a fire every second is one band");
        assert!(fast.ticks.is_empty());
    }

    #[test]
    fn transitions_are_the_offset_changes_in_the_window() {
        let from = t("2026-11-01T00:00:00Z");
        let ny = transitions(chrono_tz::America::New_York, from, from + Duration::days(7));
        assert_eq!(ny, [(t("2026-11-01T06:00:00Z"), -4 * 3600, -5 * 3600)]);
        assert!(transitions(chrono_tz::UTC, from, from + Duration::days(7)).is_empty());
        assert!(
            transitions(chrono_tz::America::New_York, from + Duration::days(1), from + Duration::days(8)).is_empty()
        );
    }

    #[test]
    fn from_takes_dates_times_and_rfc3339() {
        assert_eq!(parse_from("2026-03-08"), Some(t("2026-03-08T00:00:00Z")));
        assert_eq!(parse_from("2026-03-08T06:30"), Some(t("2026-03-08T06:30:00Z")));
        assert_eq!(parse_from("2026-03-08T06:30:00-05:00"), Some(t("2026-03-08T11:30:00Z")));
        assert_eq!(parse_from("yesterday"), None);
    }
}
