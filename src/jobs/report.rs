//! `report`: a summary of the run history, as Markdown and JSON files and, optionally, a
//! notification. The seed's "send the weekly report".
//!
//! [`summarize`] is a pure function of history records, so what a report says can be checked
//! against a seeded history without running anything.
//!
//! Files are written the way a root daemon must write into a folder others might reach: the
//! folder is opened without following links ([`crate::nofollow`]) and refused if other users
//! can write to it (unless it is sticky and beatd's own), and each file is a new one renamed
//! into place, so a link planted under a report's name is replaced, never written through.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{RunContext, RunResult};
use crate::fire::Fire;
use crate::job::RunOutcome;
use crate::notifications::{Notification, ReportFile};
use crate::state::history::{self, RunRecord};

/// The period of a first report, when there is no previous one.
const FIRST_PERIOD: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone)]
pub struct Report {
    /// `None`: since this job's previous report.
    pub period: Option<Duration>,
    /// `None`: every job.
    pub jobs: Option<Vec<String>>,
    pub output_dir: PathBuf,
}

/// Figures for one job over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSummary {
    pub job: String,
    pub runs: u64,
    pub successes: u64,
    pub failures: u64,
    pub skipped: u64,
    /// Successes over runs, in percent; `None` without runs.
    pub success_rate: Option<f64>,
    pub median_duration_ms: Option<f64>,
    pub max_duration_ms: Option<f64>,
    pub last_error: Option<String>,
    /// Checks: the share of runs that found the service up, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_latency_ms: Option<f64>,
    /// Cleanups: totals over the period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_deleted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<u64>,
    /// `sql` jobs: rows affected over the period, every statement of every run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_affected: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub jobs: Vec<JobSummary>,
}

impl Report {
    pub async fn run(&self, fire: &Fire, cx: &RunContext) -> RunResult {
        let me = self.clone();
        let fire2 = fire.clone();
        let state_dir = cx.services.state_dir.clone();
        let made = tokio::task::spawn_blocking(move || me.make(&fire2, &state_dir)).await;
        let (summary, files, markdown) = match made {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => return RunResult::failed(e),
            Err(e) => return RunResult::failed(format!("report task failed: {e}")),
        };
        tracing::info!(job = %fire.job.name, "report written: {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
        if let Some(notifier) = &fire.job.notify {
            cx.services.notifications.send(
                notifier,
                Notification {
                    event: "report",
                    job: fire.job.name.to_string(),
                    fire_id: fire.id().to_string(),
                    scheduled_at: fire.scheduled_at,
                    text: headline(&summary),
                    error: None,
                    report: serde_json::to_value(&summary).ok(),
                    output: Vec::new(),
                    check: false,
                    timezone: Some(fire.job.timezone),
                    attachment: Some(markdown),
                },
            );
        }
        RunResult::ok()
    }

    /// Writes the report's files; returns its figures, the files, and its Markdown.
    fn make(&self, fire: &Fire, state_dir: &Path) -> Result<(Summary, Vec<PathBuf>, ReportFile), String> {
        let conn = crate::state::open_read_only(state_dir).map_err(|e| e.to_string())?;
        let until = fire.fired_at;
        let since = match self.period {
            Some(p) => until - chrono::Duration::from_std(p).unwrap_or(chrono::Duration::MAX),
            None => {
                let previous = history::query(&conn, Some(&fire.job.name), None, Some(20))
                    .map_err(|e| format!("reading the history: {e}"))?
                    .into_iter()
                    .find(|r| r.outcome == RunOutcome::Success)
                    .and_then(|r| r.started_at);
                previous.unwrap_or(until - chrono::Duration::from_std(FIRST_PERIOD).unwrap_or_default())
            }
        };
        let records =
            history::query(&conn, None, Some(since), None).map_err(|e| format!("reading the history: {e}"))?;
        let records: Vec<RunRecord> = records
            .into_iter()
            .filter(|r| r.finished_at <= until && self.jobs.as_ref().is_none_or(|j| j.contains(&r.job)))
            .collect();
        // Successes a job with `history = "failures"` left out count too (by the hour).
        let mut unwritten =
            history::unwritten_successes(&conn, since).map_err(|e| format!("reading the history: {e}"))?;
        unwritten.retain(|job, _| self.jobs.as_ref().is_none_or(|j| j.contains(job)));
        let summary = summarize(&records, &unwritten, since, until);
        let dir = crate::nofollow::create_dir(&self.output_dir, 0o755).map_err(|e| format!("output_dir: {e}"))?;
        crate::nofollow::check_private(&dir, &self.output_dir).map_err(|e| format!("output_dir: {e}"))?;
        let local = fire.scheduled_at.with_timezone(&fire.job.timezone);
        let mut stem = format!("report-{}", local.format("%Y-%m-%d"));
        if crate::nofollow::exists(&dir, &format!("{stem}.md")) {
            stem = format!("report-{}", local.format("%Y-%m-%dT%H%M%S"));
        }
        let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())? + "\n";
        let mut written = Vec::new();
        let md = ReportFile { name: format!("{stem}.md"), text: markdown(&summary, &fire.job.timezone) };
        for (name, bytes) in [(md.name.clone(), md.text.clone()), (format!("{stem}.json"), text)] {
            let path = self.output_dir.join(&name);
            crate::nofollow::write_new(&dir, &name, bytes.as_bytes(), 0o644)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            written.push(path);
        }
        Ok((summary, written, md))
    }
}

/// What `beatd check` says of a report folder: one not there yet is made at the first run; one
/// reached through a link, not a folder, or writable by others is refused.
pub fn check_output_dir(path: &Path) -> Result<(), crate::nofollow::PathError> {
    match crate::nofollow::open_dir(path) {
        Ok(dir) => crate::nofollow::check_private(&dir, path),
        Err(crate::nofollow::PathError::Missing(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Per-job figures from history records (any order) and the successes jobs left out of the
/// history (`history = "failures"`), jobs sorted by name.
pub fn summarize(
    records: &[RunRecord],
    unwritten: &HashMap<String, u64>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Summary {
    let mut by_job: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in records {
        by_job.entry(r.job.as_str()).or_default().push(r);
    }
    for job in unwritten.keys() {
        by_job.entry(job.as_str()).or_default();
    }
    let jobs = by_job
        .into_iter()
        .map(|(job, mut runs)| {
            runs.sort_by_key(|r| r.finished_at);
            let extra = unwritten.get(job).copied().unwrap_or(0);
            let done: Vec<&&RunRecord> = runs.iter().filter(|r| r.outcome != RunOutcome::Skipped).collect();
            let written_successes = done.iter().filter(|r| r.outcome == RunOutcome::Success).count() as u64;
            let successes = written_successes + extra;
            let total = done.len() as u64 + extra;
            let durations: Vec<f64> =
                done.iter().filter_map(|r| r.duration()).map(|d| d.as_secs_f64() * 1000.0).collect();
            let checks: Vec<&&&RunRecord> = done.iter().filter(|r| r.details.up.is_some()).collect();
            let cleanups: Vec<&&&RunRecord> = done.iter().filter(|r| r.details.files_deleted.is_some()).collect();
            let sql: Vec<&crate::databases::StatementRun> =
                done.iter().filter_map(|r| r.details.statements.as_ref()).flatten().collect();
            let sql_runs = done.iter().any(|r| r.details.statements.is_some());
            JobSummary {
                job: job.to_string(),
                runs: total,
                successes,
                failures: total - successes,
                skipped: (runs.len() - done.len()) as u64,
                success_rate: (total > 0).then(|| round2(successes as f64 * 100.0 / total as f64)),
                median_duration_ms: median(durations.clone()).map(round2),
                max_duration_ms: durations.iter().copied().reduce(f64::max).map(round2),
                last_error: runs.iter().rev().find_map(|r| r.error.clone()),
                // A check's successes are its "up" runs, written or not.
                availability: (!checks.is_empty()).then(|| {
                    let up = checks.iter().filter(|r| r.details.up == Some(true)).count() as u64 + extra;
                    round2(up as f64 * 100.0 / (checks.len() as u64 + extra) as f64)
                }),
                median_latency_ms: median(checks.iter().filter_map(|r| r.details.latency_ms).collect()).map(round2),
                files_deleted: (!cleanups.is_empty())
                    .then(|| cleanups.iter().filter_map(|r| r.details.files_deleted).sum()),
                bytes_freed: (!cleanups.is_empty())
                    .then(|| cleanups.iter().filter_map(|r| r.details.bytes_freed).sum()),
                rows_affected: sql_runs.then(|| sql.iter().map(|s| s.rows).sum()),
            }
        })
        .collect();
    Summary { since, until, jobs }
}

fn headline(s: &Summary) -> String {
    let runs: u64 = s.jobs.iter().map(|j| j.runs).sum();
    let failing: Vec<&str> = s.jobs.iter().filter(|j| j.failures > 0).map(|j| j.job.as_str()).collect();
    let mut text = format!(
        "beatd report {} to {}: {} job(s), {runs} run(s)",
        s.since.format("%Y-%m-%d %H:%M"),
        s.until.format("%Y-%m-%d %H:%M UTC"),
        s.jobs.len()
    );
    if failing.is_empty() {
        text.push_str(", no failures");
    } else {
        text.push_str(&format!(", failures in: {}", failing.join(", ")));
    }
    text
}

fn markdown(s: &Summary, tz: &chrono_tz::Tz) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v}{unit}"));
    let mut out = format!(
        "# beatd report\n\n{} to {}\n\n| job | runs | successes | failures | skipped | success rate | median duration | max duration | availability | median latency | files deleted | bytes freed | rows affected | last error |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        s.since.with_timezone(tz).format("%Y-%m-%d %H:%M %Z"),
        s.until.with_timezone(tz).format("%Y-%m-%d %H:%M %Z"),
    );
    for j in &s.jobs {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            j.job,
            j.runs,
            j.successes,
            j.failures,
            j.skipped,
            opt(j.success_rate, " %"),
            opt(j.median_duration_ms, " ms"),
            opt(j.max_duration_ms, " ms"),
            opt(j.availability, " %"),
            opt(j.median_latency_ms, " ms"),
            j.files_deleted.map_or("-".into(), |v| v.to_string()),
            j.bytes_freed.map_or("-".into(), |v| v.to_string()),
            j.rows_affected.map_or("-".into(), |v| v.to_string()),
            j.last_error.as_deref().unwrap_or("-").replace('|', "\\|"),
        ));
    }
    if s.jobs.is_empty() {
        out.push_str("\nNo runs in this period.\n");
    }
    out
}

#[cfg(test)]
mod tests;
