//! Runs in progress and just finished, by fire id: what `GET /api/runs/{id}` answers from
//! memory, the progress a running job reports, and the handle that cancels it.
//!
//! Every fire that gets a task of its own (commands, checks, cleanups, reports, SQL) is entered
//! here when it is dispatched, as `queued`, and follows its run: `running` with its attempt,
//! then its outcome. The last [`KEEP_FINISHED`] finished runs stay, so a client that polls a
//! run it started sees how it ended; older ones are read from the history. Instant jobs and
//! queue jobs never enter: a registry entry per fire would cost more than their work, and their
//! runs are in the history the moment they happen.
//!
//! Progress comes from the job itself: a `command` writes `PROGRESS=42 copying files` lines
//! to the descriptor named by `$BEATD_PROGRESS_FD` (see `docs/runs.md`), and built-in cleanups
//! report through the same [`Progress`] handle. Only the last report is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::job::{Details, RunOutcome};

/// Finished runs kept in memory, newest first out.
pub const KEEP_FINISHED: usize = 1000;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Dispatched, waiting for a `max_running` slot or behind a running one (`overlap = "queue"`).
    Queued,
    Running,
    Success,
    Failure,
    Timeout,
    Skipped,
    Cancelled,
    Interrupted,
}

impl RunState {
    pub fn of(outcome: RunOutcome) -> RunState {
        match outcome {
            RunOutcome::Success => RunState::Success,
            RunOutcome::Failure => RunState::Failure,
            RunOutcome::Timeout => RunState::Timeout,
            RunOutcome::Skipped => RunState::Skipped,
            RunOutcome::Cancelled => RunState::Cancelled,
            RunOutcome::Interrupted => RunState::Interrupted,
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

/// The last progress a run reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// 0 to 100, when the job gave a figure.
    pub percent: Option<u8>,
    pub message: String,
    pub at: String,
}

/// A run as `GET /api/runs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub fire_id: String,
    pub job: String,
    /// The slot, RFC 3339 in the job's zone.
    pub slot: String,
    pub state: RunState,
    /// The attempt running or last run; 0 before the first.
    pub attempt: u32,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub exit_code: Option<i32>,
    /// Why it failed, was skipped or was cancelled.
    pub error: Option<String>,
    /// Figures specific to the action (files deleted, latency, ...).
    pub details: Details,
    pub progress: Option<ProgressReport>,
}

struct Entry {
    job: Arc<str>,
    zone: Tz,
    slot: DateTime<Utc>,
    state: RunState,
    attempt: u32,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    error: Option<String>,
    details: Details,
    progress: Option<(Option<u8>, String, DateTime<Utc>)>,
    /// Stops the run once it has started.
    stop: Option<CancellationToken>,
    /// A cancel was asked for: the run ends as `cancelled`, and is not retried.
    cancel: bool,
}

/// What a cancel found.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// The run is being stopped (running), or was taken out of its queue; `job` is its job.
    Stopping {
        job: Arc<str>,
        queued_without_task: bool,
    },
    /// It had already ended, as this.
    AlreadyFinished(RunState),
    Unknown,
}

/// The registry; one per daemon, shared by the runner, the jobs' progress handles and the API.
#[derive(Default)]
pub struct Runs {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<Uuid, Entry>,
    /// Finished runs, oldest first, at most [`KEEP_FINISHED`].
    finished: VecDeque<Uuid>,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").field("known", &self.lock().runs.len()).finish()
    }
}

fn rfc3339(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::Millis, false)
}

impl Runs {
    pub fn new() -> Arc<Runs> {
        Arc::new(Runs::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fire was dispatched: it waits until [`Runs::started`].
    pub fn queued(&self, id: Uuid, job: Arc<str>, zone: Tz, slot: DateTime<Utc>) {
        let entry = Entry {
            job,
            zone,
            slot,
            state: RunState::Queued,
            attempt: 0,
            started: None,
            finished: None,
            exit_code: None,
            error: None,
            details: Details::default(),
            progress: None,
            stop: None,
            cancel: false,
        };
        self.lock().runs.insert(id, entry);
    }

    /// The run has a task, stopped by `stop`; a cancel asked for while it was queued stops it
    /// at once.
    pub fn has_task(&self, id: Uuid, stop: CancellationToken) {
        let mut inner = self.lock();
        if let Some(e) = inner.runs.get_mut(&id) {
            if e.cancel {
                stop.cancel();
            }
            e.stop = Some(stop);
        }
    }

    /// Attempt `attempt` starts at `at`.
    pub fn attempt(&self, id: Uuid, attempt: u32, at: DateTime<Utc>) {
        if let Some(e) = self.lock().runs.get_mut(&id) {
            e.state = RunState::Running;
            e.attempt = attempt;
            e.started.get_or_insert(at);
        }
    }

    /// Whether a cancel was asked for this run.
    pub fn cancel_requested(&self, id: Uuid) -> bool {
        self.lock().runs.get(&id).is_some_and(|e| e.cancel)
    }

    /// The run ended: kept among the last [`KEEP_FINISHED`].
    pub fn finished(
        &self,
        id: Uuid,
        outcome: RunOutcome,
        at: DateTime<Utc>,
        exit_code: Option<i32>,
        error: Option<String>,
        details: Details,
    ) {
        let mut inner = self.lock();
        let Some(e) = inner.runs.get_mut(&id) else { return };
        if e.state.is_finished() {
            return;
        }
        e.state = RunState::of(outcome);
        e.finished = Some(at);
        e.exit_code = exit_code;
        e.error = error;
        e.details = details;
        e.stop = None;
        inner.finished.push_back(id);
        while inner.finished.len() > KEEP_FINISHED {
            if let Some(old) = inner.finished.pop_front() {
                inner.runs.remove(&old);
            }
        }
    }

    /// Asks the run to stop; see [`Cancel`].
    pub fn cancel(&self, id: Uuid) -> Cancel {
        let mut inner = self.lock();
        let Some(e) = inner.runs.get_mut(&id) else { return Cancel::Unknown };
        if e.state.is_finished() {
            return Cancel::AlreadyFinished(e.state);
        }
        e.cancel = true;
        if let Some(stop) = &e.stop {
            stop.cancel();
        }
        Cancel::Stopping { job: e.job.clone(), queued_without_task: e.stop.is_none() }
    }

    /// The newest unfinished run of `job`, if any (`beatd cancel NAME`).
    pub fn active_of(&self, job: &str) -> Vec<Uuid> {
        let inner = self.lock();
        let mut ids: Vec<(DateTime<Utc>, Uuid)> = inner
            .runs
            .iter()
            .filter(|(_, e)| &*e.job == job && !e.state.is_finished())
            .map(|(id, e)| (e.slot, *id))
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Records a progress report of a running run.
    pub fn progress(&self, id: Uuid, percent: Option<u8>, message: &str, at: DateTime<Utc>) {
        if let Some(e) = self.lock().runs.get_mut(&id)
            && !e.state.is_finished()
        {
            e.progress = Some((percent, message.to_string(), at));
        }
    }

    pub fn get(&self, id: Uuid) -> Option<RunView> {
        let inner = self.lock();
        let e = inner.runs.get(&id)?;
        let t = |t: DateTime<Utc>| rfc3339(t, e.zone);
        Some(RunView {
            fire_id: id.to_string(),
            job: e.job.to_string(),
            slot: t(e.slot),
            state: e.state,
            attempt: e.attempt,
            started: e.started.map(t),
            finished: e.finished.map(t),
            exit_code: e.exit_code,
            error: e.error.clone(),
            details: e.details.clone(),
            progress: e.progress.as_ref().map(|(percent, message, at)| ProgressReport {
                percent: *percent,
                message: message.clone(),
                at: t(*at),
            }),
        })
    }

    /// The unfinished runs, oldest slot first (the dashboard's running rows, `beatd status`).
    pub fn active(&self) -> Vec<RunView> {
        let ids: Vec<Uuid> = {
            let inner = self.lock();
            let mut v: Vec<(DateTime<Utc>, Uuid)> =
                inner.runs.iter().filter(|(_, e)| !e.state.is_finished()).map(|(id, e)| (e.slot, *id)).collect();
            v.sort();
            v.into_iter().map(|(_, id)| id).collect()
        };
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }
}

/// What a running job holds to report its progress.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    to: Option<(Arc<Runs>, Uuid, Clock)>,
}

impl Progress {
    pub fn new(runs: Arc<Runs>, id: Uuid, clock: Clock) -> Progress {
        Progress { to: Some((runs, id, clock)) }
    }

    /// A handle that reports nowhere (tests, one-off runs).
    pub fn none() -> Progress {
        Progress::default()
    }

    pub fn report(&self, percent: Option<u8>, message: &str) {
        if let Some((runs, id, clock)) = &self.to {
            runs.progress(*id, percent, message, clock.now());
        }
    }

    /// One line of the `$BEATD_PROGRESS_FD` protocol; lines that do not follow it are ignored.
    pub fn report_line(&self, line: &str) {
        if let Some((percent, message)) = parse_line(line) {
            self.report(percent, &message);
        }
    }
}

/// Parses `PROGRESS=42 copying files`, `PROGRESS=42`, `PROGRESS=- copying files` (no figure).
/// The figure is clamped to 100; the message is cut at 200 characters, control characters
/// dropped.
pub fn parse_line(line: &str) -> Option<(Option<u8>, String)> {
    let rest = line.trim_end_matches(['\r', '\n']).strip_prefix("PROGRESS=")?;
    let (figure, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let percent = match figure {
        "-" | "" => None,
        f => Some(f.trim_end_matches('%').parse::<u64>().ok()?.min(100) as u8),
    };
    let message: String = message.trim().chars().filter(|c| !c.is_control()).take(200).collect();
    Some((percent, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap_or_default()
    }

    #[test]
    fn progress_lines_follow_the_protocol_and_nothing_else_counts() {
        assert_eq!(parse_line("PROGRESS=42 copying files\n"), Some((Some(42), "copying files".into())));
        assert_eq!(parse_line("PROGRESS=7"), Some((Some(7), String::new())));
        assert_eq!(parse_line("PROGRESS=250% over"), Some((Some(100), "over".into())));
        assert_eq!(parse_line("PROGRESS=- scanning"), Some((None, "scanning".into())));
        assert_eq!(parse_line("PROGRESS=abc nope"), None);
        assert_eq!(parse_line("progress=4"), None);
        assert_eq!(parse_line("hello"), None);
        let long = format!("PROGRESS=1 {}\u{7}x", "y".repeat(500));
        let (_, m) = parse_line(&long).unwrap_or_default();
        assert_eq!(m.chars().count(), 200);
        assert!(!m.contains('\u{7}'));
    }

    #[test]
    fn a_run_goes_from_queued_to_its_outcome_and_a_cancel_reaches_its_token() {
        let runs = Runs::new();
        let id = Uuid::from_u128(1);
        runs.queued(id, "copy".into(), Tz::Europe__Berlin, at(3600));
        assert_eq!(runs.get(id).map(|v| v.state), Some(RunState::Queued));
        assert_eq!(runs.get(id).map(|v| v.slot), Some("1970-01-01T02:00:00.000+01:00".to_string()));
        // Cancelled while queued, before it had a task: the token it gets is cancelled at once.
        assert!(matches!(runs.cancel(id), Cancel::Stopping { queued_without_task: true, .. }));
        let stop = CancellationToken::new();
        runs.has_task(id, stop.clone());
        assert!(stop.is_cancelled());
        assert!(runs.cancel_requested(id));
        runs.attempt(id, 1, at(3601));
        runs.progress(id, Some(30), "a third", at(3602));
        let v = runs.get(id).unwrap_or_else(|| panic!("known"));
        assert_eq!((v.state, v.attempt), (RunState::Running, 1));
        assert_eq!(v.progress.map(|p| (p.percent, p.message)), Some((Some(30), "a third".to_string())));
        runs.finished(id, RunOutcome::Cancelled, at(3603), None, Some("cancelled".into()), Details::default());
        assert_eq!(runs.get(id).map(|v| v.state), Some(RunState::Cancelled));
        assert_eq!(runs.cancel(id), Cancel::AlreadyFinished(RunState::Cancelled));
        assert_eq!(runs.cancel(Uuid::from_u128(2)), Cancel::Unknown);
        assert!(runs.active().is_empty());
    }

    #[test]
    fn only_the_last_finished_runs_are_kept() {
        let runs = Runs::new();
        for i in 0..(KEEP_FINISHED as u128 + 10) {
            let id = Uuid::from_u128(i);
            runs.queued(id, "j".into(), Tz::UTC, at(0));
            runs.finished(id, RunOutcome::Success, at(1), Some(0), None, Details::default());
        }
        assert!(runs.get(Uuid::from_u128(9)).is_none());
        assert!(runs.get(Uuid::from_u128(10)).is_some());
        assert_eq!(runs.lock().runs.len(), KEEP_FINISHED);
    }
}
