//! Live status of every job, shared by the loop, the runner and the HTTP API.
//!
//! The loop and the runner write it on every fire, so it is made of atomics and pre-built
//! metric handles: no lock, no map look-up, no allocation per fire. The API and the metrics
//! collector read it whenever they are asked.

use std::sync::atomic::{AtomicBool, AtomicI8, AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

use crate::job::Job;
use crate::job::RunOutcome;
use crate::metrics::Metrics;
use crate::metrics::per_job::DurationHistogram;

const NONE: i64 = i64::MIN;

/// One job's live state.
#[derive(Debug)]
pub struct JobStatus {
    /// Paused jobs keep their schedule but do not run (kept in the state database).
    pub paused: AtomicBool,
    next_fire_ms: AtomicI64,
    last_scheduled_ms: AtomicI64,
    last_started_ms: AtomicI64,
    last_finished_ms: AtomicI64,
    last_outcome: AtomicU8,
    /// Whether the last run that was not cancelled succeeded (1, 0; `u8::MAX` before any):
    /// failure and recovery transitions ignore cancelled runs.
    last_verdict: AtomicU8,
    last_success_ms: AtomicI64,
    /// Checks: 1 up, 0 down, -1 not yet known.
    check_up: AtomicI8,
    pub running: AtomicUsize,
    /// `beatd_fires_total` for this job, by outcome (success, failure, timeout, skipped, cancelled).
    fires: Arc<[Counter; 5]>,
    /// Set for jobs that are not instant, with per-job metrics (a reload may set it later).
    duration: OnceLock<Box<DurationHistogram>>,
    /// `beatd_job_period_seconds`, in milliseconds, worked out at the first scrape after the
    /// job was loaded or changed (`NONE` until then).
    period_ms: AtomicI64,
}

/// The last finished run of a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastRun {
    pub scheduled: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub finished: DateTime<Utc>,
    pub outcome: RunOutcome,
}

fn outcome_index(o: RunOutcome) -> usize {
    match o {
        RunOutcome::Success => 0,
        RunOutcome::Failure => 1,
        RunOutcome::Timeout => 2,
        RunOutcome::Skipped => 3,
        RunOutcome::Cancelled => 4,
        // Only ever written to the history at start, for a run a crash cut short.
        RunOutcome::Interrupted => 1,
    }
}

fn ms(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(NONE, |t| t.timestamp_millis())
}

fn at(ms: i64) -> Option<DateTime<Utc>> {
    (ms != NONE).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

impl JobStatus {
    /// A status that belongs to no board (tests, one-off runs); its metrics go nowhere.
    pub fn detached() -> Arc<JobStatus> {
        Arc::new(JobStatus::new(Default::default(), None))
    }

    fn new(fires: Arc<[Counter; 5]>, duration: Option<Box<DurationHistogram>>) -> JobStatus {
        let cell = OnceLock::new();
        if let Some(h) = duration {
            let _ = cell.set(h);
        }
        JobStatus {
            paused: AtomicBool::new(false),
            next_fire_ms: AtomicI64::new(NONE),
            last_scheduled_ms: AtomicI64::new(NONE),
            last_started_ms: AtomicI64::new(NONE),
            last_finished_ms: AtomicI64::new(NONE),
            last_outcome: AtomicU8::new(u8::MAX),
            last_verdict: AtomicU8::new(u8::MAX),
            last_success_ms: AtomicI64::new(NONE),
            check_up: AtomicI8::new(-1),
            running: AtomicUsize::new(0),
            fires,
            duration: cell,
            period_ms: AtomicI64::new(NONE),
        }
    }

    /// The job's fire counters, by outcome (shared by all jobs without per-job series).
    pub fn fires(&self) -> &[Counter; 5] {
        &self.fires
    }

    /// The job's duration histogram, if it has one.
    pub fn duration(&self) -> Option<&DurationHistogram> {
        self.duration.get().map(|h| &**h)
    }

    /// The longest gap between the job's consecutive slots, from its next fire on (for
    /// alerting on a job with no success for some periods): the interval of an `every` job;
    /// for a cron job the longest of the eight gaps after its next fire, so a weekday job's
    /// period is its weekend gap. Worked out once per definition; `None` without a next fire.
    pub fn period(&self, job: &Job) -> Option<std::time::Duration> {
        let cached = self.period_ms.load(Ordering::Relaxed);
        if cached != NONE {
            return Some(std::time::Duration::from_millis(cached.unsigned_abs()));
        }
        let mut at = self.next_fire()?;
        let mut longest = chrono::TimeDelta::zero();
        for _ in 0..8 {
            let Some(next) = job.schedule.next_after(at) else { break };
            longest = longest.max(next - at);
            at = next;
        }
        let period = longest.to_std().ok().filter(|p| !p.is_zero())?;
        self.period_ms.store(period.as_millis() as i64, Ordering::Relaxed);
        Some(period)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn set_next_fire(&self, at: Option<DateTime<Utc>>) {
        self.next_fire_ms.store(ms(at), Ordering::Relaxed);
    }

    pub fn next_fire(&self) -> Option<DateTime<Utc>> {
        at(self.next_fire_ms.load(Ordering::Relaxed))
    }

    /// A run (or the last attempt of one) ended. Returns whether the run before it succeeded
    /// (`None` before the first run), for failure and recovery transitions.
    pub fn finished(
        &self,
        scheduled: DateTime<Utc>,
        started: Option<DateTime<Utc>>,
        finished: DateTime<Utc>,
        outcome: RunOutcome,
        up: Option<bool>,
    ) -> Option<bool> {
        self.fires[outcome_index(outcome)].inc();
        if outcome == RunOutcome::Skipped {
            return None; // a skip is not a run: the last run stays what it was
        }
        self.last_scheduled_ms.store(scheduled.timestamp_millis(), Ordering::Relaxed);
        self.last_started_ms.store(ms(started), Ordering::Relaxed);
        self.last_finished_ms.store(finished.timestamp_millis(), Ordering::Relaxed);
        self.last_outcome.store(outcome_index(outcome) as u8, Ordering::Relaxed);
        // One swap, so runs that overlap still see each change exactly once.
        let previous = if outcome == RunOutcome::Cancelled {
            self.last_verdict.load(Ordering::Relaxed)
        } else {
            self.last_verdict.swap(u8::from(outcome == RunOutcome::Success), Ordering::Relaxed)
        };
        if outcome == RunOutcome::Success {
            self.last_success_ms.store(finished.timestamp_millis(), Ordering::Relaxed);
        }
        if let Some(up) = up {
            self.check_up.store(i8::from(up), Ordering::Relaxed);
        }
        if let (Some(h), Some(s)) = (self.duration.get(), started) {
            h.observe((finished - s).to_std().unwrap_or_default());
        }
        (previous != u8::MAX).then_some(previous == 1)
    }

    pub fn last_run(&self) -> Option<LastRun> {
        let outcome = match self.last_outcome.load(Ordering::Relaxed) {
            0 => RunOutcome::Success,
            1 => RunOutcome::Failure,
            2 => RunOutcome::Timeout,
            3 => RunOutcome::Skipped,
            4 => RunOutcome::Cancelled,
            _ => return None,
        };
        Some(LastRun {
            scheduled: at(self.last_scheduled_ms.load(Ordering::Relaxed))?,
            started: at(self.last_started_ms.load(Ordering::Relaxed)),
            finished: at(self.last_finished_ms.load(Ordering::Relaxed))?,
            outcome,
        })
    }

    pub fn last_success(&self) -> Option<DateTime<Utc>> {
        at(self.last_success_ms.load(Ordering::Relaxed))
    }

    pub fn check_up(&self) -> Option<bool> {
        match self.check_up.load(Ordering::Relaxed) {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        }
    }
}

/// A job and its live status.
#[derive(Debug, Clone)]
pub struct LiveJob {
    pub job: Arc<Job>,
    pub status: Arc<JobStatus>,
}

/// The jobs of the config (enabled or not), by name. A reload replaces the whole set at once,
/// so a reader sees either the old jobs or the new ones.
#[derive(Debug, Default)]
pub struct JobSet {
    pub jobs: Vec<LiveJob>,
    /// Positions in `jobs`, sorted by name: 4 bytes a job where a hash map of names took 32.
    by_name: Vec<u32>,
}

impl JobSet {
    fn new(jobs: Vec<LiveJob>) -> JobSet {
        let mut by_name: Vec<u32> = (0..jobs.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| jobs[a as usize].job.name.cmp(&jobs[b as usize].job.name));
        JobSet { jobs, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&LiveJob> {
        let at = self.by_name.binary_search_by(|&i| (*self.jobs[i as usize].job.name).cmp(name)).ok()?;
        Some(&self.jobs[self.by_name[at] as usize])
    }
}

/// Every job's live status, the loop's health and the metrics: shared by the loop, the runner
/// and the API for the daemon's whole life, across reloads.
#[derive(Debug)]
pub struct Board {
    jobs: RwLock<Arc<JobSet>>,
    pub health: LoopHealth,
    pub metrics: Metrics,
    /// State writes that fail: held fires, `/healthz` degraded.
    pub state: Arc<crate::state::alarm::StateAlarm>,
}

impl Board {
    pub fn new(jobs: Vec<Job>, metrics: Metrics) -> Arc<Board> {
        let state = Arc::new(crate::state::alarm::StateAlarm::new(metrics.state_write_errors.clone()));
        let board = Arc::new(Board { jobs: Default::default(), health: LoopHealth::default(), metrics, state });
        board.replace(jobs);
        board.metrics.watch(&board);
        board
    }

    /// The current jobs.
    pub fn jobs(&self) -> Arc<JobSet> {
        self.jobs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<LiveJob> {
        self.jobs().get(name).cloned()
    }

    /// Marks the jobs named in `paused` (and, with `among`, only those) paused: their pause,
    /// kept in the state database, outlives a restart or a reload that removed them.
    pub fn restore_paused(&self, paused: &[String], among: Option<&[String]>, since: &str) {
        for name in paused.iter().filter(|n| among.is_none_or(|a| a.contains(n))) {
            if let Some(e) = self.get(name) {
                e.status.paused.store(true, Ordering::Relaxed);
                tracing::info!(job = %name, "paused ({since})");
            }
        }
    }

    /// Replaces the jobs (a reload): [`Board::prepare`], then [`Board::publish`].
    pub fn replace(&self, jobs: Vec<Job>) -> Arc<JobSet> {
        let (set, _gone) = self.prepare(jobs);
        self.publish(set.clone());
        set
    }

    /// The set that will replace the current jobs, not yet published, and the names of the
    /// current jobs it drops. A job whose name was there before keeps its status (last run,
    /// running count, paused), and, if its definition is the same, its `Arc<Job>` too. All the
    /// work of a reload that does not touch the timer loop happens here, off the loop.
    pub fn prepare(&self, jobs: Vec<Job>) -> (Arc<JobSet>, Vec<Arc<str>>) {
        let old = self.jobs();
        let mut entries = Vec::with_capacity(jobs.len());
        for job in jobs {
            let entry = match old.get(&job.name) {
                Some(e) => {
                    if let Some(h) = self.metrics.duration_handle(&job) {
                        let _ = e.status.duration.set(h);
                    }
                    let job = if e.job.definition == job.definition {
                        e.job.clone()
                    } else {
                        e.status.period_ms.store(NONE, Ordering::Relaxed);
                        Arc::new(job)
                    };
                    LiveJob { job, status: e.status.clone() }
                }
                None => {
                    let (fires, duration) = self.metrics.job_handles(&job);
                    LiveJob { job: Arc::new(job), status: Arc::new(JobStatus::new(fires, duration)) }
                }
            };
            entries.push(entry);
        }
        let set = Arc::new(JobSet::new(entries));
        let gone = old.jobs.iter().filter(|e| set.get(&e.job.name).is_none()).map(|e| e.job.name.clone()).collect();
        (set, gone)
    }

    /// Makes `set` (from [`Board::prepare`]) the current jobs; the series of the jobs that are
    /// gone go with their statuses.
    pub fn publish(&self, set: Arc<JobSet>) {
        self.metrics.jobs.set(set.jobs.len() as i64);
        *self.jobs.write().unwrap_or_else(|p| p.into_inner()) = set;
    }
}

/// Whether the timer loop is alive: it notes each completed iteration and the deadline it
/// sleeps until. A loop still short of that deadline is healthy however long it sleeps; one
/// past it by more than the tolerance has stopped ticking.
#[derive(Debug)]
pub struct LoopHealth {
    started: std::time::Instant,
    /// Milliseconds since `started` of the last completed iteration.
    last_iteration: AtomicI64,
    /// Milliseconds since `started` the loop sleeps until; `i64::MAX` when nothing is due.
    sleeping_until: AtomicI64,
    pub iterations: Counter,
    /// Set when a config reload fails; `/healthz` then says "degraded".
    pub reload_failed: AtomicBool,
    /// Milliseconds since `started` when the process last ran out of file descriptors.
    out_of_descriptors: AtomicI64,
}

impl Default for LoopHealth {
    fn default() -> Self {
        LoopHealth {
            started: std::time::Instant::now(),
            last_iteration: AtomicI64::new(0),
            sleeping_until: AtomicI64::new(i64::MAX),
            iterations: Counter::default(),
            reload_failed: AtomicBool::new(false),
            out_of_descriptors: AtomicI64::new(i64::MIN),
        }
    }
}

/// A loop this late past its deadline is stuck.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl LoopHealth {
    /// Pretends the loop slept through a deadline `late` ago (tests of the stuck state).
    #[cfg(test)]
    pub fn set_overdue(&self, late: std::time::Duration) {
        self.sleeping_until.store(self.now_ms() - late.as_millis() as i64, Ordering::Relaxed);
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// The loop finished an iteration and will sleep for `sleep` (`None`: until woken).
    pub fn iteration(&self, sleep: Option<std::time::Duration>) {
        let now = self.now_ms();
        self.last_iteration.store(now, Ordering::Relaxed);
        let until = sleep.map_or(i64::MAX, |s| now.saturating_add(s.as_millis() as i64));
        self.sleeping_until.store(until, Ordering::Relaxed);
        self.iterations.inc();
    }

    /// The process ran out of file descriptors (an accept failed with EMFILE).
    pub fn out_of_descriptors(&self) {
        self.out_of_descriptors.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long ago the process last ran out of file descriptors, within the last minute.
    pub fn out_of_descriptors_since(&self) -> Option<std::time::Duration> {
        let at = self.out_of_descriptors.load(Ordering::Relaxed);
        let ago = self.now_ms().saturating_sub(at);
        (at != i64::MIN && ago < 60_000).then(|| std::time::Duration::from_millis(ago.unsigned_abs()))
    }

    /// How far past the deadline it slept until the loop is: zero while it keeps time, above
    /// [`STUCK_AFTER`] when it is stuck.
    pub fn overdue(&self) -> std::time::Duration {
        let late = self.now_ms().saturating_sub(self.sleeping_until.load(Ordering::Relaxed));
        std::time::Duration::from_millis(late.max(0).unsigned_abs())
    }

    /// `None` when healthy, else why not.
    pub fn stuck(&self) -> Option<String> {
        let until = self.sleeping_until.load(Ordering::Relaxed);
        let late = self.now_ms().saturating_sub(until);
        (late > STUCK_AFTER.as_millis() as i64).then(|| {
            let since = self.now_ms() - self.last_iteration.load(Ordering::Relaxed);
            format!(
                "the timer loop should have woken {:.1}s ago; its last iteration ended {:.1}s ago",
                late as f64 / 1e3,
                since as f64 / 1e3
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_past_its_deadline_is_stuck() {
        let h = LoopHealth::default();
        assert_eq!(h.stuck(), None, "asleep with nothing due is healthy");
        h.iteration(Some(std::time::Duration::from_secs(3600)));
        assert_eq!(h.stuck(), None, "a long sleep is healthy");
        // A deadline already 10 s past.
        h.sleeping_until.store(h.now_ms() - 10_000, Ordering::Relaxed);
        let why = h.stuck().expect("stuck");
        assert!(why.starts_with("the timer loop should have woken 10."), "{why}");
        assert!(h.overdue() >= std::time::Duration::from_secs(10), "the metric says so too");
        h.iteration(Some(std::time::Duration::from_secs(1)));
        assert_eq!(h.overdue(), std::time::Duration::ZERO);
    }

    #[test]
    fn a_jobs_period_is_its_longest_gap_between_slots() {
        let toml = "[jobs.weekdays]\ncron = \"30 9 * * 1-5\"\ntimezone = \"UTC\"\naction = \"noop\"\n\
                    [jobs.often]\nevery = \"90s\"\naction = \"noop\"\n";
        let jobs = crate::config::parse_str(toml, std::path::Path::new("t.toml"), std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"))
            .jobs;
        let (weekdays, often) = (&jobs[0], &jobs[1]);
        let s = JobStatus::detached();
        assert_eq!(s.period(weekdays), None, "no next fire yet");
        // Tuesday 2026-11-24 09:30 UTC: the eight gaps after it include a weekend.
        let tuesday = DateTime::from_timestamp(1_795_512_600, 0).expect("valid");
        s.set_next_fire(Some(tuesday));
        assert_eq!(s.period(weekdays), Some(std::time::Duration::from_secs(3 * 86_400)));
        let s = JobStatus::detached();
        s.set_next_fire(Some(tuesday));
        assert_eq!(s.period(often), Some(std::time::Duration::from_secs(90)));
    }

    #[test]
    fn last_run_skips_and_counters() {
        let s = JobStatus::detached();
        assert_eq!(s.last_run(), None);
        let t = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        assert_eq!(s.finished(t, Some(t), t + chrono::Duration::seconds(2), RunOutcome::Failure, Some(false)), None);
        assert_eq!(s.finished(t + chrono::Duration::seconds(60), None, t, RunOutcome::Skipped, None), None);
        let later = t + chrono::Duration::seconds(120);
        assert_eq!(s.finished(later, Some(later), later, RunOutcome::Failure, Some(false)), Some(false));
        let last = s.last_run().expect("a run");
        assert_eq!((last.scheduled, last.outcome), (later, RunOutcome::Failure));
        assert_eq!(s.check_up(), Some(false));
        assert_eq!(s.last_success(), None);
        assert_eq!(s.fires[1].get(), 2);
        assert_eq!(s.fires[3].get(), 1);
    }

    #[test]
    fn a_cancelled_run_is_shown_last_but_is_no_failure_and_no_recovery() {
        let s = JobStatus::detached();
        let t = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        let at = |n: i64| t + chrono::Duration::seconds(n);
        assert_eq!(s.finished(at(0), Some(at(0)), at(1), RunOutcome::Success, None), None);
        // Cancelled after a success: not a failure (the caller sends nothing for it)...
        assert_eq!(s.finished(at(60), Some(at(60)), at(61), RunOutcome::Cancelled, None), Some(true));
        assert_eq!(s.last_run().map(|r| r.outcome), Some(RunOutcome::Cancelled));
        // ...and the next success is not a recovery: the run before it that counts succeeded.
        assert_eq!(s.finished(at(120), Some(at(120)), at(121), RunOutcome::Success, None), Some(true));
        assert_eq!(s.finished(at(180), Some(at(180)), at(181), RunOutcome::Failure, None), Some(true));
        assert_eq!(s.finished(at(240), Some(at(240)), at(241), RunOutcome::Cancelled, None), Some(false));
        assert_eq!(s.finished(at(300), Some(at(300)), at(301), RunOutcome::Success, None), Some(false));
        assert_eq!(s.fires[4].get(), 2);
    }
}
