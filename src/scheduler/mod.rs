//! The timer loop: sleep until the earliest fire, dispatch everything due, repeat.
//!
//! The loop never polls. It sleeps on [`Clock::sleep_until`] for the earliest entry of the
//! [`Timers`], or until shutdown; with nothing due it does not wake at all. Dispatch hands
//! each fire to a [`Dispatch`] and never waits for the job, so a slow job cannot delay another
//! job's fire.
//!
//! Reload: a new set of jobs arrives on a channel and is applied between two ticks, as a diff
//! (see [`Scheduler::apply`]): jobs whose definition is unchanged keep their pending fire and
//! their running instances, a changed schedule starts from now, a removed job fires no more.
//!
//! Wall-clock steps: when the wall clock jumps forward past several slots of a job (an NTP
//! correction, a resume from suspend), those slots run once, for the latest of them, and the
//! skipped count is logged. When it jumps back, the timers keep the slots after the ones already
//! fired, so no slot fires twice; jobs resume when the wall clock reaches them again.

pub mod runner;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster::member::{Member, Verdict};
use crate::fire::Fire;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::policy::CatchUp;
use crate::schedule::Schedule;
use crate::state::alarm::Part;
use crate::state::journal::Journal;
use crate::status::{Board, JobSet, LiveJob};
use crate::timers::Timers;

/// Where fires go. The daemon's [`runner::Runner`] runs the job's action; tests record.
pub trait Dispatch: Send + Sync {
    /// Must not block: start the work and return.
    fn dispatch(&self, fire: Fire);

    /// Called once after each tick's fires: a place to send per-fire bookkeeping as one batch.
    fn end_tick(&self) {}

    /// The dispatch instant of the oldest fire whose run is not yet recorded, if any: the
    /// journal keeps the fire lists of that tick and later ones.
    fn oldest_in_flight(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// How long a finished run may take to reach the history database (the writer batches).
const RECORD_SLACK: chrono::Duration = chrono::Duration::seconds(60);

/// A wall-clock discrepancy larger than this, between two loop iterations, is logged as a step.
const STEP_TOLERANCE_MS: i64 = 1000;

/// Called by the loop itself at a fixed interval: the systemd watchdog ping.
pub type Ping = Box<dyn Fn() + Send + Sync>;

/// Called by the loop after each iteration with a one-line summary (systemd's STATUS=).
pub type StatusLine = Box<dyn Fn(&str) + Send + Sync>;

/// A validated set of jobs for the running loop, [`prepare`]d off it, and where to report
/// what changed.
#[derive(Debug)]
pub struct Reload {
    pub jobs: Prepared,
    pub done: tokio::sync::oneshot::Sender<Diff>,
}

/// A reload worked out off the loop against the jobs the loop runs now: the new job set (not
/// yet published), the diff, the loop's new job list, and for each new
/// job where it was in the old list. The loop then only renumbers its timers and arms the
/// jobs that changed: at 100 000 jobs, building all this in the loop held it for 0.3 s.
#[derive(Debug, Default)]
pub struct Prepared {
    set: Arc<JobSet>,
    diff: Diff,
    /// The enabled jobs, in config order: the loop's new `jobs`.
    jobs: Vec<LiveJob>,
    /// Per new job: its number in the old list (the enabled jobs of the current set).
    old: Vec<Option<u32>>,
    /// Per new job: the same `Arc<Job>` as before (same definition: its timer stays).
    unchanged: Vec<bool>,
    /// Per new job: the same schedule key as before (its pending slot stays).
    same_key: Vec<bool>,
    /// How many jobs the old list had.
    against: usize,
}

impl Prepared {
    /// Fills `old`, `unchanged` and `same_key` against `jobs`, matching by name.
    fn match_onto<J: std::borrow::Borrow<LiveJob>>(&mut self, jobs: &[J]) {
        let job = |i: usize| &jobs[i].borrow().job;
        let index: HashMap<&str, usize> = (0..jobs.len()).map(|i| (&*job(i).name, i)).collect();
        self.old.clear();
        self.unchanged.clear();
        self.same_key.clear();
        for e in &self.jobs {
            let oi = index.get(&*e.job.name).copied();
            self.old.push(oi.map(|i| i as u32));
            self.unchanged.push(oi.is_some_and(|i| Arc::ptr_eq(job(i), &e.job)));
            self.same_key.push(oi.is_some_and(|i| same_schedule(job(i), &e.job)));
        }
        self.against = jobs.len();
    }
}

/// Works out a reload of `jobs` against the board's current jobs (which the loop runs), off
/// the loop: see [`Prepared`].
pub fn prepare(board: &Board, jobs: Vec<Job>) -> Prepared {
    let old_set = board.jobs();
    let (set, gone) = board.prepare(jobs);
    let mut diff = Diff::default();
    for e in &set.jobs {
        match old_set.get(&e.job.name) {
            None => diff.added.push(e.job.name.to_string()),
            Some(old) if Arc::ptr_eq(&old.job, &e.job) => diff.unchanged.push(e.job.name.clone()),
            Some(old) => diff.changed.push((e.job.name.to_string(), !same_schedule(&old.job, &e.job))),
        }
    }
    diff.removed = gone.iter().map(|n| n.to_string()).collect();
    let old_jobs: Vec<&LiveJob> = old_set.jobs.iter().filter(|e| e.job.enabled).collect();
    let jobs: Vec<LiveJob> = set.jobs.iter().filter(|e| e.job.enabled).cloned().collect();
    let mut p = Prepared { set, diff, jobs, ..Prepared::default() };
    p.match_onto(&old_jobs);
    p
}

/// What a reload changed, job by job (names in config order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed jobs, and whether their schedule (and so their next fire) changed.
    pub changed: Vec<(String, bool)>,
    /// Shared names: a reload of 100 000 unchanged jobs copies pointers, not names.
    pub unchanged: Vec<Arc<str>>,
    /// How long the loop spent applying it (no fire is dispatched meanwhile).
    pub applied_in: std::time::Duration,
}

impl Diff {
    /// Logs the diff job by job; unchanged jobs are listed by name up to a point, then counted.
    pub fn log(&self) {
        for name in &self.added {
            tracing::info!(job = %name, "reload: added");
        }
        for name in &self.removed {
            tracing::info!(job = %name, "reload: removed; fires no more (a running instance finishes)");
        }
        for (name, schedule) in &self.changed {
            if *schedule {
                tracing::info!(job = %name, "reload: changed, schedule too: next fire computed from now");
            } else {
                tracing::info!(job = %name, "reload: changed; keeps its next fire");
            }
        }
        const LISTED: usize = 20;
        if self.unchanged.len() <= LISTED {
            for name in &self.unchanged {
                tracing::info!(job = %name, "reload: unchanged");
            }
        } else {
            tracing::info!("reload: {} jobs unchanged", self.unchanged.len());
        }
        tracing::info!(
            "reloaded: {} added, {} removed, {} changed, {} unchanged (applied in {:.1} ms)",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.unchanged.len(),
            self.applied_in.as_secs_f64() * 1e3
        );
    }
}

pub struct Scheduler<D: Dispatch> {
    /// The enabled jobs; timer entries index into it.
    jobs: Vec<LiveJob>,
    /// Each job's id in the journal's fire lists; parallel to `jobs` (empty without journal).
    ids: Vec<u32>,
    /// The timer entries the current tick popped: (job, slot), to arm their next fires.
    popped: Vec<(u32, DateTime<Utc>)>,
    /// Each fire's lateness in microseconds, measured as it is dispatched.
    lateness: Vec<i64>,
    journal: Option<Journal>,
    /// This tick's (journal id, slot) list, reused.
    journal_fires: Vec<(u32, DateTime<Utc>)>,
    /// Missed slots to run at start, in slot order: (job index, slot).
    catch_up: Vec<(u32, DateTime<Utc>)>,
    /// This tick's (job index, slot), reused from tick to tick.
    due: Vec<(u32, DateTime<Utc>)>,
    watchdog: Option<(std::time::Duration, Ping)>,
    status_line: Option<StatusLine>,
    reloads: Option<tokio::sync::mpsc::UnboundedReceiver<Reload>>,
    board: Arc<Board>,
    timers: Timers,
    clock: Clock,
    dispatch: D,
    /// With `[cluster]`: this node's fence; only ticks it accepts are dispatched.
    cluster: Option<Member>,
    /// When the previous tick ran (its due entries were popped, dispatched or not).
    prev_tick: Option<DateTime<Utc>>,
    /// Fires of ticks whose journal write failed, oldest first: they run once it succeeds.
    held: Vec<(u32, DateTime<Utc>)>,
    /// When to try the journal again while fires are held (monotonic).
    retry: Option<tokio::time::Instant>,
    backoff: Backoff,
}

/// 1 s, 2 s, 4 s … up to 30 s between journal retries while fires are held.
#[derive(Debug, Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> std::time::Duration {
        let wait = std::time::Duration::from_secs(1 << self.0.min(5)).min(std::time::Duration::from_secs(30));
        self.0 += 1;
        wait
    }
}

impl<D: Dispatch> std::fmt::Debug for Scheduler<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("jobs", &self.jobs.len()).field("timers", &self.timers.len()).finish()
    }
}

impl<D: Dispatch> Scheduler<D> {
    /// Arms the timers from the enabled jobs' next fires after the clock's now; `@reboot`
    /// jobs are dispatched when [`Scheduler::run`] starts.
    pub fn new(jobs: impl IntoIterator<Item = Job>, clock: Clock, dispatch: D) -> Self {
        Self::with_board(Board::new(jobs.into_iter().collect(), Metrics::default()), clock, dispatch)
    }

    /// Like [`Scheduler::new`], on a board the caller shares (with the HTTP API).
    pub fn with_board(board: Arc<Board>, clock: Clock, dispatch: D) -> Self {
        let jobs: Vec<LiveJob> = board.jobs().jobs.iter().filter(|e| e.job.enabled).cloned().collect();
        let now = clock.now();
        let mut timers = Timers::default();
        for (i, entry) in jobs.iter().enumerate() {
            if let Some((slot, at)) = entry.job.next_fire(now) {
                timers.push_slot(slot, at, i as u32);
                entry.status.set_next_fire(Some(at));
            }
        }
        Scheduler {
            jobs,
            ids: Vec::new(),
            popped: Vec::new(),
            lateness: Vec::new(),
            journal: None,
            journal_fires: Vec::new(),
            catch_up: Vec::new(),
            due: Vec::new(),
            watchdog: None,
            status_line: None,
            reloads: None,
            board,
            timers,
            clock,
            dispatch,
            cluster: None,
            prev_tick: None,
            held: Vec::new(),
            retry: None,
            backoff: Backoff::default(),
        }
    }

    /// Makes this loop one node of a cluster: a tick is dispatched only when `member`'s fence
    /// accepts it, and a tick that makes the cluster's watermark jump over slots nobody
    /// dispatched (a failover, an outage of Redis) first catches them up by each job's
    /// `catch_up`. The local journal's catch-up at start gives way to the cluster's.
    pub fn with_cluster(mut self, member: Member) -> Self {
        self.cluster = Some(member);
        self
    }

    /// Records each tick in `journal` before dispatching it, and handles the fires missed
    /// since the journal's watermark by each job's `catch_up`. A job the journal does not know,
    /// or whose schedule changed, starts from now.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        let now = self.clock.now();
        let known = journal.load().unwrap_or_else(|e| {
            tracing::error!("cannot read the fire journal ({e}); every job starts from now");
            Default::default()
        });
        if let Some(until) = known.handled_until {
            for (i, e) in self.jobs.iter().enumerate() {
                if matches!(e.job.schedule, Schedule::Reboot) {
                    continue;
                }
                match known.schedules.get(&*e.job.name) {
                    Some(schedule) if is_schedule_key(&e.job, schedule) => {}
                    Some(_) => {
                        tracing::info!(job = %e.job.name, "schedule changed since the last run; starting from now");
                        continue;
                    }
                    None => continue,
                }
                if until > now {
                    // The clock is behind the journal: handled fires must not run again.
                    self.timers.remove(i as u32);
                    let next = e.job.next_fire(until);
                    if let Some((slot, at)) = next {
                        self.timers.push_slot(slot, at, i as u32);
                    }
                    e.status.set_next_fire(next.map(|(_, at)| at));
                    continue;
                }
                self.catch_up.extend(catch_up(i as u32, &e.job, until, now, "missed"));
            }
            self.catch_up.sort_by_key(|(_, s)| *s);
        }
        self.journal = Some(journal);
        self.record_jobs(now, Some(known.schedules));
        self
    }

    /// Tells the journal the current jobs' schedules, and takes their ids for fire lists.
    /// `stored` is the journal's rows as just loaded, if at hand.
    fn record_jobs(&mut self, now: DateTime<Utc>, stored: Option<HashMap<String, String>>) {
        let Some(journal) = &mut self.journal else { return };
        let jobs = self.jobs.iter().map(|e| (&*e.job.name, schedule_key(&e.job)));
        if let Err(e) = journal.set_jobs(jobs, stored, now) {
            tracing::error!("cannot record the jobs in the fire journal: {e}");
        }
        match journal.ids(self.jobs.iter().map(|e| &*e.job.name)) {
            Ok(ids) => self.ids = ids,
            Err(e) => {
                tracing::error!("cannot read job ids from the fire journal ({e}); fires are not listed in it");
                self.ids.clear();
            }
        }
    }

    /// Makes the loop call `ping` every `interval`, from its own iterations: a loop that stops
    /// ticking stops pinging.
    pub fn with_watchdog(mut self, interval: std::time::Duration, ping: Ping) -> Self {
        self.watchdog = Some((interval, ping));
        self
    }

    /// Makes the loop report `N jobs, next: NAME at TIME` after each iteration.
    pub fn with_status_line(mut self, report: StatusLine) -> Self {
        self.status_line = Some(report);
        self
    }

    /// Applies each [`Reload`] sent on `reloads`, between two ticks.
    pub fn with_reloads(mut self, reloads: tokio::sync::mpsc::UnboundedReceiver<Reload>) -> Self {
        self.reloads = Some(reloads);
        self
    }

    /// Applies a reload [`prepare`]d off the loop:
    /// - a job whose definition is unchanged keeps its pending fire (its timer is renumbered in
    ///   place, not rebuilt), and in the runner its running instances, keyed by name;
    /// - a changed job with the same schedule keeps its pending slot; one whose schedule (or
    ///   zone) changed is scheduled from now;
    /// - a new job, or one enabled by the reload, starts from now;
    /// - a removed or disabled job fires no more; a run in progress finishes.
    ///
    /// The journal learns the changed schedules, so a restart catches up the same jobs. The
    /// loop does work in proportion to what changed, plus one pass over the timers.
    pub fn apply_prepared(&mut self, mut p: Prepared) -> Diff {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        if p.against != self.jobs.len() {
            // Prepared against another job list than the loop's (never, while reloads come
            // one at a time): match the jobs by name here.
            p.match_onto(&self.jobs);
        }
        // Old number -> new number, for the jobs whose timer stays as it is.
        let mut renumber = vec![None; self.jobs.len()];
        let mut present = vec![false; self.jobs.len()];
        for (i, old) in p.old.iter().enumerate() {
            if let Some(oi) = *old {
                present[oi as usize] = true;
                if p.unchanged[i] {
                    renumber[oi as usize] = Some(i as u32);
                }
            }
        }
        let taken = self.timers.remap(|job| renumber.get(job as usize).copied().flatten());
        let slots: HashMap<u32, DateTime<Utc>> = taken.iter().map(|t| (t.job, t.slot)).collect();
        for (i, e) in p.jobs.iter().enumerate() {
            if p.unchanged[i] {
                continue;
            }
            let kept = if p.same_key[i] { p.old[i].and_then(|oi| slots.get(&oi)) } else { None };
            let next = match kept {
                // Same schedule: the same slot, at the (possibly new) jitter's time.
                Some(&slot) => Some((slot, e.job.run_at(slot))),
                None => e.job.next_fire(now),
            };
            if let Some((slot, at)) = next {
                self.timers.push_slot(slot, at, i as u32);
            }
            e.status.set_next_fire(next.map(|(_, at)| at));
        }
        // Jobs that left the loop (removed or disabled) have no next fire any more.
        for (oi, old) in self.jobs.iter().enumerate() {
            if !present[oi] {
                old.status.set_next_fire(None);
            }
        }
        self.board.publish(std::mem::take(&mut p.set));
        let old_ids = std::mem::take(&mut self.ids);
        let old_jobs = std::mem::replace(&mut self.jobs, std::mem::take(&mut p.jobs));
        if old_ids.len() == old_jobs.len() {
            self.record_job_changes(now, &old_jobs, &p, &old_ids);
        } else {
            self.record_jobs(now, None); // the journal's ids were lost: the whole set again
        }
        let mut diff = std::mem::take(&mut p.diff);
        diff.applied_in = started.elapsed();
        // 100 000 jobs' worth of old vectors are freed off the loop.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || drop((old_jobs, old_ids, p)));
        }
        diff
    }

    /// Tells the journal what a reload changed in the scheduled set (new jobs, changed
    /// schedules, jobs gone), and carries the ids of the jobs that stayed: the loop must not
    /// wait for a write per job of a large schedule.
    fn record_job_changes(&mut self, now: DateTime<Utc>, old_jobs: &[LiveJob], p: &Prepared, old_ids: &[u32]) {
        let Some(journal) = &mut self.journal else { return };
        let mut present = vec![false; old_jobs.len()];
        for oi in p.old.iter().flatten() {
            present[*oi as usize] = true;
        }
        let upsert = self.jobs.iter().enumerate().filter_map(|(i, e)| {
            let same = p.old[i].is_some() && p.same_key[i];
            (!same).then(|| (&*e.job.name, schedule_key(&e.job)))
        });
        let remove = old_jobs.iter().enumerate().filter(|(oi, _)| !present[*oi]).map(|(_, e)| &*e.job.name);
        if let Err(e) = journal.update_jobs(upsert, remove, now) {
            tracing::error!("cannot record the jobs in the fire journal: {e}");
        }
        let new: Vec<&str> =
            self.jobs.iter().enumerate().filter(|(i, _)| p.old[*i].is_none()).map(|(_, e)| &*e.job.name).collect();
        let new_ids = match journal.ids(new.iter().copied()) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot read job ids from the fire journal ({e}); fires are not listed in it");
                self.ids.clear();
                return;
            }
        };
        let mut new_ids = new_ids.into_iter();
        self.ids = p
            .old
            .iter()
            .map(|old| match old {
                Some(oi) => old_ids[*oi as usize],
                None => new_ids.next().unwrap_or(u32::MAX),
            })
            .collect();
    }

    /// `12 jobs, next: cleanup-every-day at 02:00 CET`.
    pub fn summary(&self) -> String {
        let n = self.jobs.len();
        let jobs = format!("{n} job{}", if n == 1 { "" } else { "s" });
        match self.timers.peek() {
            Some(e) => {
                let job = &self.jobs[e.job as usize].job;
                let at = e.at.with_timezone(&job.timezone);
                let today = self.clock.now().with_timezone(&job.timezone).date_naive() == at.date_naive();
                let when = if today { at.format("%H:%M:%S %Z") } else { at.format("%Y-%m-%d %H:%M %Z") };
                format!("{jobs}, next: {} at {when}", job.name)
            }
            None => format!("{jobs}, none scheduled"),
        }
    }

    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// Runs until `shutdown` is cancelled. Returns once no new fire will be dispatched;
    /// running jobs are the dispatcher's to finish.
    pub async fn run(mut self, shutdown: CancellationToken) -> Self {
        let start = self.clock.now();
        for entry in self.jobs.iter().filter(|e| matches!(e.job.schedule, Schedule::Reboot)) {
            self.board.metrics.lateness.observe(0.0);
            self.dispatch.dispatch(Fire::scheduled(entry.job.clone(), entry.status.clone(), start, start));
            self.dispatch.end_tick();
        }
        let catch_up = std::mem::take(&mut self.catch_up);
        if self.cluster.is_none() {
            self.dispatch_due(catch_up, start);
        }
        self.prev_tick = Some(start);
        let mut last = (start, self.clock.monotonic());
        let mut next_ping = self.clock.monotonic();
        loop {
            let now = self.clock.now();
            let mono = self.clock.monotonic();
            let expected = last.0 + chrono::Duration::from_std(mono - last.1).unwrap_or_default();
            let drift = (now - expected).num_milliseconds();
            if drift.abs() > STEP_TOLERANCE_MS {
                if drift > 0 {
                    tracing::warn!("wall clock stepped forward by {}; passed slots run once", human(drift));
                } else {
                    tracing::warn!(
                        "wall clock stepped back by {}; slots already fired will not fire again",
                        human(-drift)
                    );
                }
            }
            last = (now, mono);
            if self.cluster.is_some() {
                self.tick_in_cluster(now).await;
            } else {
                self.tick(now);
            }
            let mut next = self.timers.next_at();
            if let Some((interval, ping)) = &self.watchdog {
                if self.clock.monotonic() >= next_ping {
                    ping();
                    next_ping = self.clock.monotonic() + *interval;
                }
                let ping_at = now + chrono::Duration::from_std(next_ping - self.clock.monotonic()).unwrap_or_default();
                next = Some(next.map_or(ping_at, |n| n.min(ping_at)));
            }
            if let Some(retry) = self.retry {
                let at = now + chrono::Duration::from_std(retry - self.clock.monotonic()).unwrap_or_default();
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            if let Some(report) = &self.status_line {
                report(&self.summary());
            }
            self.board.health.iteration(next.map(|n| (n - now).to_std().unwrap_or_default()));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(reload) = next_reload(&mut self.reloads) => {
                    let diff = self.apply_prepared(reload.jobs);
                    let _ = reload.done.send(diff);
                }
                () = sleep_until(&self.clock, next) => {}
                // Leadership just came: catch up now, not at the next fire.
                () = became_leader(&self.cluster) => {}
            }
        }
        self
    }

    /// Dispatches every entry due at `now` and reschedules its job. Returns how many fired.
    pub fn tick(&mut self, now: DateTime<Utc>) -> usize {
        let due = self.pop_due(now);
        let fired = self.dispatch_due(due, now);
        self.rearm();
        fired
    }

    /// A tick of a cluster node: the timers move on whatever the fence says, so a follower's
    /// `next` stays current; the fires go out only if the fence accepts the tick. Fires at or
    /// before the cluster's watermark were handled by another leader and are dropped; slots
    /// between the watermark and this node's previous tick were handled by nobody and are
    /// caught up first.
    async fn tick_in_cluster(&mut self, now: DateTime<Utc>) -> usize {
        let due = self.pop_due(now);
        let fired = self.fence_and_dispatch(due, now).await;
        self.rearm();
        fired
    }

    async fn fence_and_dispatch(&mut self, mut due: Vec<(u32, DateTime<Utc>)>, now: DateTime<Utc>) -> usize {
        let prev = self.prev_tick.replace(now);
        let Some(member) = &mut self.cluster else { return self.dispatch_due(due, now) };
        let before = match member.fence(now).await {
            Verdict::Stand => {
                self.due = due;
                return 0;
            }
            Verdict::Dispatch { before } => before,
        };
        if let Some(watermark) = before {
            due.retain(|&(i, slot)| self.jobs[i as usize].job.run_at(slot) > watermark);
            if let Some(prev) = prev.filter(|p| *p > watermark) {
                for (i, e) in self.jobs.iter().enumerate() {
                    if matches!(e.job.schedule, Schedule::Reboot) {
                        continue;
                    }
                    due.extend(catch_up(i as u32, &e.job, watermark, prev, "that no node ran"));
                }
                due.sort_by_key(|&(_, slot)| slot);
            }
        }
        self.dispatch_due(due, now)
    }

    /// Pops every entry due at `now`; the (job, slot) list. The jobs' next fires are armed
    /// by [`Scheduler::rearm`] once the burst is dispatched: computing 10 000 next fires first
    /// made every fire of the burst wait for all of them.
    fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<(u32, DateTime<Utc>)> {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.popped.clear();
        while let Some(entry) = self.timers.pop_due(now) {
            let mut slot = entry.slot;
            // Several slots of a job pass at once only when the loop is a second or more
            // behind (no schedule fires more often): then the latest runs, once.
            if now - slot >= chrono::Duration::seconds(1) {
                let job = &self.jobs[entry.job as usize].job;
                if job.next_fire(slot).is_some_and(|(_, at)| at <= now)
                    && let Some((latest, passed)) = job.schedule.latest_in(slot, now)
                {
                    tracing::warn!(
                        job = %job.name,
                        "{} slots passed at once (from {slot}); running the latest, {latest}, once",
                        passed + 1
                    );
                    slot = latest;
                }
            }
            due.push((entry.job, slot));
            self.popped.push((entry.job, slot));
        }
        due
    }

    /// Arms the next fire of each job [`Scheduler::pop_due`] took, after the slot it ran.
    fn rearm(&mut self) {
        for &(i, slot) in &self.popped {
            let LiveJob { job, status } = &self.jobs[i as usize];
            let next = job.next_fire(slot);
            status.set_next_fire(next.map(|(_, at)| at));
            if let Some((slot, at)) = next {
                self.timers.push_slot(slot, at, i);
            }
        }
        self.popped.clear();
    }

    /// Records `due` in the journal, then dispatches it. Returns how many fired. When the
    /// journal cannot be written, nothing is dispatched: the fires are held (with those of
    /// earlier held ticks) and tried again with the next tick or the retry (see
    /// [`crate::state::alarm`]).
    fn dispatch_due(&mut self, mut due: Vec<(u32, DateTime<Utc>)>, now: DateTime<Utc>) -> usize {
        let held = self.held.len();
        if held > 0 {
            due.splice(0..0, self.held.drain(..));
        }
        if !due.is_empty() {
            if let Err(e) = self.mark_handled(now, &due) {
                let n = due.len();
                self.board.state.failed(
                    Part::Journal,
                    &e,
                    &format!("{n} fire(s) held until it can be; nothing runs unrecorded"),
                );
                self.held = due;
                self.retry = Some(self.clock.monotonic() + self.backoff.next());
                self.due = Vec::new();
                return 0;
            }
            if held > 0 || self.retry.is_some() {
                self.board.state.recovered(Part::Journal, &format!("{held} held fire(s) run now, late"));
            }
            self.retry = None;
            self.backoff = Backoff::default();
        }
        let fired = self.handle(&due, now);
        self.due = due;
        fired
    }

    /// Writes the journal's watermark (every fire due at or before `now` is handled) and the
    /// list of `slots` about to run, in one transaction, before they are dispatched; then
    /// forgets the lists of ticks whose runs are all recorded.
    fn mark_handled(&mut self, now: DateTime<Utc>, slots: &[(u32, DateTime<Utc>)]) -> rusqlite::Result<()> {
        let Some(journal) = &mut self.journal else { return Ok(()) };
        let fires = &mut self.journal_fires;
        fires.clear();
        if self.ids.len() == self.jobs.len() {
            for &(i, slot) in slots {
                if !self.jobs[i as usize].status.is_paused() {
                    fires.push((self.ids[i as usize], slot));
                }
            }
        }
        journal.handled_until(now, fires.iter().copied())?;
        let recorded_before = self.dispatch.oldest_in_flight().map_or(now, |t| t.min(now)) - RECORD_SLACK;
        if let Err(e) = journal.forget_fired_before(recorded_before) {
            tracing::warn!("cannot prune the fire journal: {e}");
        }
        Ok(())
    }

    /// Dispatches `slots` (all but paused jobs'). Returns how many ran.
    fn handle(&mut self, slots: &[(u32, DateTime<Utc>)], now: DateTime<Utc>) -> usize {
        let mut fired = 0;
        // One wall-clock reading; each fire's lateness adds the monotonic time since (a wall
        // reading and its conversion per fire cost a tenth of the burst).
        let (wall, mono) = (self.clock.now(), self.clock.monotonic());
        for &(i, slot) in slots {
            let LiveJob { job, status } = &self.jobs[i as usize];
            if status.is_paused() {
                tracing::debug!(job = %job.name, %slot, "paused; not run");
                continue;
            }
            let since = (self.clock.monotonic() - mono).as_micros() as i64;
            let late = (wall - slot).num_microseconds().map_or(i64::MAX, |l| l.saturating_add(since));
            self.lateness.push(late);
            self.dispatch.dispatch(Fire::scheduled(job.clone(), status.clone(), slot, now));
            fired += 1;
        }
        if fired > 0 {
            self.dispatch.end_tick();
        }
        // Observed once the burst is out: each observation takes the histogram's lock, and
        // the last fire of a burst should not wait for the first ones' bookkeeping.
        for late in self.lateness.drain(..) {
            self.board.metrics.lateness.observe(late as f64 / 1e6);
        }
        fired
    }
}

/// The fires of `job` that were not handled by `until` and are due by `now`, as `catch_up`
/// picks them, and how many were missed in all (within `catch_up_window`).
/// Resolves when this node becomes the cluster's leader; never without a cluster.
async fn became_leader(cluster: &Option<Member>) {
    match cluster {
        Some(member) => member.node.became_leader.notified().await,
        None => std::future::pending().await,
    }
}

/// The missed slots of job `i` after `until` and up to `now` that its `catch_up` runs, logged
/// as fires `what` (missed, that no node ran).
fn catch_up(i: u32, job: &Job, until: DateTime<Utc>, now: DateTime<Utc>, what: &str) -> Vec<(u32, DateTime<Utc>)> {
    let (run, missed) = missed_slots(job, until, now);
    if missed > 0 {
        tracing::info!(
            job = %job.name,
            "{missed} fire(s) {what} since {until}; catch_up = {:?}: running {}",
            job.policy.catch_up,
            run.len()
        );
    }
    run.into_iter().map(|s| (i, s)).collect()
}

fn missed_slots(job: &Job, until: DateTime<Utc>, now: DateTime<Utc>) -> (Vec<DateTime<Utc>>, u64) {
    let policy = &job.policy;
    let oldest = policy.catch_up_window.map(|w| now - chrono::Duration::from_std(w).unwrap_or(chrono::Duration::MAX));
    let in_window = |s: &DateTime<Utc>| oldest.is_none_or(|o| *s >= o);
    // With jitter, a slot at or before the watermark may run after it: not handled yet.
    let mut early = Vec::new();
    if let Some(j) = policy.jitter {
        let mut t = until - chrono::Duration::from_std(j).unwrap_or_default();
        while let Some(s) = job.schedule.next_after(t).filter(|s| *s <= until) {
            if job.run_at(s) > until && in_window(&s) {
                early.push(s);
            }
            t = s;
        }
    }
    let after = oldest.map_or(until, |o| until.max(o - chrono::Duration::milliseconds(1)));
    let later = job.schedule.latest_in(after, now);
    let missed = early.len() as u64 + later.map_or(0, |(_, n)| n);
    let run = match (policy.catch_up, later) {
        (CatchUp::Skip, _) => Vec::new(),
        (CatchUp::Latest, Some((latest, _))) => vec![latest],
        (CatchUp::Latest, None) => early.last().copied().into_iter().collect(),
        (CatchUp::All, _) => {
            let keep = policy.catch_up_limit;
            let mut from = after;
            if let (Schedule::Every(iv), Some((latest, n))) = (&job.schedule, later)
                && n > keep as u64
            {
                // Straight to the last `keep` slots instead of walking a long outage.
                let k = i32::try_from(keep).unwrap_or(i32::MAX);
                from = latest - chrono::Duration::from_std(iv.every()).unwrap_or_default() * k;
            }
            let mut slots: std::collections::VecDeque<DateTime<Utc>> = early.into();
            let mut t = from;
            while let Some(s) = job.schedule.next_after(t).filter(|s| *s <= now) {
                slots.push_back(s);
                t = s;
            }
            while slots.len() > keep {
                slots.pop_front();
            }
            slots.into()
        }
    };
    (run, missed)
}

/// The schedule as the journal compares it: text and zone. Derived when the journal needs
/// it rather than kept per job (3 MB at 100 000 jobs).
fn schedule_key(job: &Job) -> String {
    format!("{} {}", job.schedule_text, job.timezone.name())
}

/// Whether `key` (from the journal) is `job`'s [`schedule_key`], without building it.
fn is_schedule_key(job: &Job, key: &str) -> bool {
    key.strip_prefix(&*job.schedule_text).and_then(|rest| rest.strip_prefix(' ')) == Some(job.timezone.name())
}

/// Whether two jobs have the same [`schedule_key`].
fn same_schedule(a: &Job, b: &Job) -> bool {
    a.schedule_text == b.schedule_text && a.timezone == b.timezone
}

async fn next_reload(reloads: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Reload>>) -> Option<Reload> {
    match reloads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(clock: &Clock, next: Option<DateTime<Utc>>) {
    match next {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn human(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.unsigned_abs())).to_string()
}

#[cfg(test)]
mod tests;
