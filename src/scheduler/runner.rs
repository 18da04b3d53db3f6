//! The daemon's dispatcher: runs each fire under its job's execution policy.
//!
//! Per fire, in order:
//! - **overlap**: if the job is still running, the new fire is skipped, queued (at most one
//!   waits), run alongside, or replaces the running one;
//! - **max_running**: a global cap; a fire over it waits for a slot (and is counted);
//! - **attempts**: each attempt runs under the job's `timeout`; a failed one is retried after
//!   an exponential backoff, `retries` times at most;
//! - **history**: every attempt and every skip is recorded;
//! - **transitions**: a check that goes down or comes back is logged once, and the job's
//!   notifier hears about failures and recoveries.
//!
//! Instant actions (`noop`) skip all of that: they are recorded inline, because a task per
//! fire would cost more than the work. Everything else runs on a [`TaskTracker`], so shutdown
//! can wait for running jobs for the grace period and then stop what is left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Dispatch;
use crate::broker::delivery::Brokers;
use crate::fire::Fire;
use crate::job::{HistoryMode, RunOutcome};
use crate::jobs::{Execute, RunContext, RunResult, Services};
use crate::notifications::Notification;
use crate::policy::Overlap;
use crate::runs::{Cancel, Progress, Runs};
use crate::state::history::{History, Pending, RunRecord};

#[derive(Debug, Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    exec: Box<dyn Execute>,
    services: Arc<Services>,
    /// Where queue jobs' fires go: the runner is the one place that sends.
    brokers: Brokers,
    history: History,
    /// Runs with a task, by fire id: their state, progress and cancel handle.
    runs: Arc<Runs>,
    tracker: TaskTracker,
    /// Cancelled when the shutdown grace period is over: every run stops at once.
    kill: CancellationToken,
    limit: Option<Arc<Semaphore>>,
    /// Instant fires of the current tick, sent to the history as one batch at its end.
    instant: Mutex<Vec<Pending>>,
    /// Fires that had to wait for `max_running`.
    waited: AtomicU64,
    jobs: Mutex<HashMap<Arc<str>, JobState>>,
    /// Scheduled fires whose run is not recorded yet, by the tick (dispatch instant, ms) that
    /// sent them: the journal keeps those ticks' fire lists until they are.
    in_flight: Mutex<std::collections::BTreeMap<i64, usize>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("running", &self.tracker.len()).finish()
    }
}

/// What the runner knows of one job between fires.
#[derive(Debug, Default)]
struct JobState {
    /// Runs in progress: an id, and the token that stops it.
    running: Vec<(u64, CancellationToken)>,
    /// `overlap = "queue"`: the fire that runs when the current run ends.
    pending: Option<Fire>,
    next_run: u64,
}

impl Runner {
    pub fn new(exec: impl Execute, services: Arc<Services>, history: History, max_running: Option<usize>) -> Self {
        Self::with_brokers(exec, services, history, max_running, Brokers::default())
    }

    /// A runner that hands queue jobs' fires to `brokers`.
    pub fn with_brokers(
        exec: impl Execute,
        services: Arc<Services>,
        history: History,
        max_running: Option<usize>,
        brokers: Brokers,
    ) -> Self {
        Runner {
            inner: Arc::new(Inner {
                exec: Box::new(exec),
                services,
                brokers,
                history,
                runs: Runs::new(),
                tracker: TaskTracker::new(),
                kill: CancellationToken::new(),
                limit: max_running.map(|n| Arc::new(Semaphore::new(n))),
                instant: Mutex::new(Vec::new()),
                waited: AtomicU64::new(0),
                jobs: Mutex::new(HashMap::new()),
                in_flight: Mutex::default(),
            }),
        }
    }

    /// Fires that waited for a `max_running` slot so far.
    pub fn waited(&self) -> u64 {
        self.inner.waited.load(Ordering::Relaxed)
    }

    /// Runs with a task of their own, by fire id.
    pub fn runs(&self) -> &Arc<Runs> {
        &self.inner.runs
    }

    /// Stops a running or queued run the way a timeout does; it is recorded as `cancelled` and
    /// not retried.
    pub fn cancel(&self, id: uuid::Uuid) -> Cancel {
        let inner = &self.inner;
        let found = inner.runs.cancel(id);
        if let Cancel::Stopping { job, queued_without_task: true } = &found {
            // Behind a running one (`overlap = "queue"`): it leaves the queue now.
            let queued = {
                let mut jobs = inner.jobs();
                let state = jobs.get_mut(job);
                match state {
                    Some(s) if s.pending.as_ref().is_some_and(|f| f.id() == id) => s.pending.take(),
                    _ => None,
                }
            };
            if let Some(fire) = queued {
                inner.cancelled_before_start(&fire);
                inner.landed(&fire);
            }
        }
        if matches!(found, Cancel::Stopping { .. }) {
            tracing::info!(fire_id = %id, "run cancelled by an operator");
        }
        found
    }

    /// Cancelling it stops every run at once (a second Ctrl-C).
    pub fn kill_token(&self) -> CancellationToken {
        self.inner.kill.clone()
    }

    /// Waits up to `grace` for running jobs, then stops them and waits for them to end.
    /// Returns whether every fire it took has ended and been handed on (to the history, or to
    /// the brokers' sends and outbox).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let tracker = &self.inner.tracker;
        tracker.close();
        if !tracker.is_empty() {
            tracing::info!("waiting up to {} for {} running job(s)", humantime::format_duration(grace), tracker.len());
            tokio::select! {
                () = tracker.wait() => {}
                () = tokio::time::sleep(grace) => {
                    tracing::warn!("{} job(s) still running after the grace period; killing them", tracker.len());
                    self.inner.kill.cancel();
                }
                () = self.inner.kill.cancelled() => {}
            }
            tracker.wait().await;
        }
        self.inner.services.notifications.shutdown(Duration::from_secs(5)).await;
        self.inner.brokers.shutdown(Duration::from_secs(15)).await
    }
}

impl Inner {
    /// A scheduled fire's run is about to be recorded one way or another (or not: manual).
    fn track(&self, fire: &Fire) {
        if fire.manual.is_none() {
            *self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(fire.fired_at.timestamp_millis())
                .or_default() += 1;
        }
    }

    /// The run of a tracked fire has been sent to the history.
    fn landed(&self, fire: &Fire) {
        if fire.manual.is_some() {
            return;
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let tick = fire.fired_at.timestamp_millis();
        if let Some(n) = in_flight.get_mut(&tick) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&tick);
            }
        }
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<Arc<str>, JobState>> {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(
        &self,
        fire: &Fire,
        started: Option<DateTime<Utc>>,
        outcome: RunOutcome,
        attempt: u32,
        result: RunResult,
    ) {
        let (exit_code, details) = (result.exit_code, result.details);
        self.history.record(RunRecord {
            job: fire.job.name.to_string(),
            // Scheduled fires' ids are derived from job and slot by the writer, off the loop.
            fire_id: fire.manual.map(|id| id.to_string()).unwrap_or_default(),
            scheduled_at: fire.scheduled_at,
            started_at: started,
            finished_at: self.services.clock.now(),
            outcome,
            attempt,
            exit_code,
            error: result.result.err(),
            details,
        });
    }

    fn skip(&self, fire: &Fire, why: &str) {
        tracing::warn!(job = %fire.job.name, slot = %fire.scheduled_at, "skipped: {why}");
        let now = self.services.clock.now();
        fire.status.finished(fire.scheduled_at, None, now, RunOutcome::Skipped, None);
        self.runs.finished(fire.id(), RunOutcome::Skipped, now, None, Some(why.to_string()), Default::default());
        self.record(fire, None, RunOutcome::Skipped, 0, RunResult::failed(why));
    }

    /// A run cancelled before it started: recorded as `cancelled`.
    fn cancelled_before_start(&self, fire: &Fire) {
        let why = "cancelled by an operator before it started";
        tracing::info!(job = %fire.job.name, slot = %fire.scheduled_at, "{why}");
        let now = self.services.clock.now();
        fire.status.finished(fire.scheduled_at, None, now, RunOutcome::Cancelled, None);
        self.runs.finished(fire.id(), RunOutcome::Cancelled, now, None, Some(why.to_string()), Default::default());
        self.record(fire, None, RunOutcome::Cancelled, 0, RunResult::failed(why));
    }

    /// Starts `fire` as a new run of its job; the caller holds the job's state.
    fn start(self: &Arc<Self>, state: &mut JobState, fire: Fire) {
        let id = state.next_run;
        state.next_run += 1;
        let stop = self.kill.child_token();
        state.running.push((id, stop.clone()));
        self.runs.has_task(fire.id(), stop.clone());
        fire.status.running.fetch_add(1, Ordering::Relaxed);
        let inner = self.clone();
        self.tracker.spawn(async move { inner.execute(fire, stop, id).await });
    }

    async fn execute(self: Arc<Self>, fire: Fire, stop: CancellationToken, id: u64) {
        let _permit = match &self.limit {
            Some(limit) => {
                if limit.available_permits() == 0 {
                    self.waited.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(job = %fire.job.name, "waiting: max_running jobs are already running");
                }
                tokio::select! {
                    permit = limit.clone().acquire_owned() => permit.ok(),
                    () = stop.cancelled() => None,
                }
            }
            None => None,
        };
        if stop.is_cancelled() {
            if self.runs.cancel_requested(fire.id()) {
                self.cancelled_before_start(&fire);
            } else {
                self.skip(&fire, "stopped before it could start");
            }
        } else {
            let (outcome, result, started) = self.attempts(&fire, &stop).await;
            let up = result.details.up;
            let now = self.services.clock.now();
            let previous = fire.status.finished(fire.scheduled_at, Some(started), now, outcome, up);
            let error = result.result.as_ref().err().cloned();
            self.runs.finished(fire.id(), outcome, now, result.exit_code, error, result.details.clone());
            self.after_run(&fire, outcome, &result, previous);
        }
        self.landed(&fire);
        fire.status.running.fetch_sub(1, Ordering::Relaxed);
        let mut jobs = self.jobs();
        let state = jobs.entry(fire.job.name.clone()).or_default();
        state.running.retain(|(run, _)| *run != id);
        if state.running.is_empty()
            && let Some(next) = state.pending.take()
        {
            if self.tracker.is_closed() {
                drop(jobs);
                self.skip(&next, "beatd is shutting down");
                self.landed(&next);
            } else {
                self.start(state, next);
            }
        }
    }

    /// Runs attempts until one succeeds, the retries are used up or the run is stopped.
    /// Returns the last attempt's outcome, result and start.
    async fn attempts(&self, fire: &Fire, stop: &CancellationToken) -> (RunOutcome, RunResult, DateTime<Utc>) {
        let policy = &fire.job.policy;
        let id = fire.id();
        let mut attempt = 1;
        loop {
            let started = self.services.clock.now();
            self.runs.attempt(id, attempt, started);
            let cx = RunContext {
                stop: stop.child_token(),
                kill: self.kill.clone(),
                services: self.services.clone(),
                progress: Progress::new(self.runs.clone(), id, self.services.clock.clone()),
            };
            let timeout = if self.exec.handles_timeout(fire) { None } else { policy.timeout };
            let (mut outcome, mut result) = run_attempt(&*self.exec, fire, &cx, timeout).await;
            if stop.is_cancelled() {
                let cancelled = !self.kill.is_cancelled() && self.runs.cancel_requested(id);
                if cancelled {
                    outcome = RunOutcome::Cancelled;
                }
                let why = if self.kill.is_cancelled() {
                    "killed at shutdown"
                } else if cancelled {
                    "cancelled by an operator"
                } else {
                    "replaced by a newer run"
                };
                match &mut result.result {
                    Err(e) => *e = format!("{why}: {e}"),
                    // It ended well just as it was told to stop: the cancel came too late.
                    Ok(()) => outcome = RunOutcome::Success,
                }
            }
            self.record(fire, Some(started), outcome, attempt, result.clone());
            if outcome == RunOutcome::Success || attempt > policy.retries || stop.is_cancelled() {
                return (outcome, result, started);
            }
            let wait = policy.backoff(attempt);
            tracing::info!(
                job = %fire.job.name,
                "attempt {attempt} failed ({}); retry {attempt}/{} in {}",
                result.result.as_ref().err().map_or("", String::as_str),
                policy.retries,
                humantime::format_duration(wait)
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {
                    if !self.kill.is_cancelled() && self.runs.cancel_requested(id) {
                        // Cancelled between attempts: the run ends cancelled, not failed.
                        let why = format!(
                            "cancelled by an operator while waiting to retry (attempt {attempt}: {})",
                            result.result.as_ref().err().map_or("", String::as_str)
                        );
                        let cancelled = RunResult::failed(why);
                        self.record(fire, None, RunOutcome::Cancelled, attempt, cancelled.clone());
                        return (RunOutcome::Cancelled, cancelled, started);
                    }
                    return (outcome, result, started);
                }
            }
            attempt += 1;
        }
    }

    /// Logs check transitions and sends failure and recovery notifications; `previous` is
    /// whether the run before this one succeeded.
    fn after_run(&self, fire: &Fire, outcome: RunOutcome, result: &RunResult, previous: Option<bool>) {
        if outcome == RunOutcome::Cancelled {
            return; // an operator's act: neither a failure nor news
        }
        let job = &fire.job;
        let ok = outcome == RunOutcome::Success;
        let error = result.result.as_ref().err().cloned();
        if job.action.is_check() && previous != Some(ok) {
            match (ok, previous) {
                (true, Some(false)) => tracing::info!(job = %job.name, "is up again"),
                (true, _) => tracing::info!(job = %job.name, "is up"),
                (false, _) => tracing::warn!(job = %job.name, "is down: {}", error.as_deref().unwrap_or("")),
            }
        }
        let Some(notifier) = &job.notify else { return };
        let event = match (ok, previous) {
            (false, Some(false)) | (true, None | Some(true)) => return,
            (false, _) if job.notify_on.failure => "failure",
            (true, Some(false)) if job.notify_on.recovery => "recovery",
            _ => return,
        };
        let text = match event {
            "failure" if job.action.is_check() => format!("{} is down: {}", job.name, error.as_deref().unwrap_or("")),
            "failure" => format!("{} failed: {}", job.name, error.as_deref().unwrap_or("")),
            _ if job.action.is_check() => format!("{} is up again", job.name),
            _ => format!("{} succeeded again", job.name),
        };
        self.services.notifications.send(
            notifier,
            Notification {
                event,
                job: job.name.to_string(),
                fire_id: fire.id().to_string(),
                scheduled_at: fire.scheduled_at,
                text,
                error,
                report: None,
                output: result.output.clone(),
                check: job.action.is_check(),
                timezone: Some(job.timezone),
                attachment: None,
            },
        );
    }
}

/// One attempt under `timeout`: on expiry the attempt is told to stop, and awaited.
async fn run_attempt(
    exec: &dyn Execute,
    fire: &Fire,
    cx: &RunContext,
    timeout: Option<Duration>,
) -> (RunOutcome, RunResult) {
    let run = exec.execute(fire, cx);
    tokio::pin!(run);
    let result = match timeout {
        None => run.await,
        Some(limit) => tokio::select! {
            r = &mut run => r,
            () = tokio::time::sleep(limit) => {
                cx.stop.cancel();
                let r = run.await;
                let why = format!("timed out after {}", humantime::format_duration(limit));
                tracing::warn!(job = %fire.job.name, "{why}");
                return (RunOutcome::Timeout, RunResult { result: Err(why), ..r });
            }
        },
    };
    let outcome = if result.result.is_ok() { RunOutcome::Success } else { RunOutcome::Failure };
    (outcome, result)
}

impl Dispatch for Runner {
    fn oldest_in_flight(&self) -> Option<DateTime<Utc>> {
        let in_flight = self.inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.keys().next().and_then(|&ms| DateTime::from_timestamp_millis(ms))
    }

    fn end_tick(&self) {
        let batch = {
            let mut pending = self.inner.instant.lock().unwrap_or_else(|p| p.into_inner());
            let capacity = pending.len();
            std::mem::replace(&mut *pending, Vec::with_capacity(capacity))
        };
        if !batch.is_empty() {
            self.inner.history.send(Pending::Batch(batch));
        }
    }

    fn dispatch(&self, fire: Fire) {
        let inner = &self.inner;
        if fire.job.action.broker().is_some() {
            // Queue jobs: the broker's delivery task sends, retries and records.
            tracing::debug!(job = %fire.job.name, slot = %fire.scheduled_at, "to the broker");
            inner.brokers.send(fire);
            return;
        }
        if inner.exec.is_instant(&fire) {
            tracing::debug!(job = %fire.job.name, slot = %fire.scheduled_at, "fired");
            fire.status.finished(fire.scheduled_at, Some(fire.fired_at), fire.fired_at, RunOutcome::Success, None);
            if let Some(id) = fire.manual {
                inner.history.record(RunRecord {
                    job: fire.job.name.to_string(),
                    fire_id: id.to_string(),
                    scheduled_at: fire.scheduled_at,
                    started_at: Some(fire.fired_at),
                    finished_at: fire.fired_at,
                    outcome: RunOutcome::Success,
                    attempt: 1,
                    exit_code: None,
                    error: None,
                    details: Default::default(),
                });
            } else if inner.history.is_enabled() && fire.job.history.mode != HistoryMode::Off {
                // A job with `history = "off"` has nothing to write or count: the writer is
                // not handed its fires at all (at 100 000 jobs a second, most of its work).
                let entry = Pending::Instant { job: fire.job.name.clone(), slot: fire.scheduled_at, at: fire.fired_at };
                inner.instant.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
            }
            return;
        }
        let job = &fire.job;
        inner.track(&fire);
        inner.runs.queued(fire.id(), job.name.clone(), job.timezone, fire.scheduled_at);
        let mut jobs = inner.jobs();
        let state = jobs.entry(job.name.clone()).or_default();
        if !state.running.is_empty() {
            match job.policy.overlap {
                Overlap::Skip => {
                    drop(jobs);
                    inner.skip(&fire, "the previous run is still going (overlap = \"skip\")");
                    inner.landed(&fire);
                    return;
                }
                Overlap::Queue => {
                    if state.pending.is_some() {
                        drop(jobs);
                        inner.skip(&fire, "a run is already queued (overlap = \"queue\")");
                        inner.landed(&fire);
                    } else {
                        tracing::info!(job = %job.name, slot = %fire.scheduled_at, "queued behind the running one");
                        state.pending = Some(fire);
                    }
                    return;
                }
                Overlap::Replace => {
                    tracing::info!(job = %job.name, "stopping the running one for the new slot (overlap = \"replace\")");
                    for (_, stop) in &state.running {
                        stop.cancel();
                    }
                }
                Overlap::Allow => {}
            }
        }
        tracing::info!(job = %job.name, slot = %fire.scheduled_at.with_timezone(&job.timezone), fire_id = %fire.id(), "fired");
        inner.start(state, fire);
    }
}

#[cfg(test)]
mod tests;
