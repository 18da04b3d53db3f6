//! Paused-time tests of the execution policy: overlap, max_running, timeouts, retries, jitter
//! and notifications, with an executor whose work follows tokio's (paused) clock.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::clock::Clock;
use crate::config::parse_str;
use crate::fire::Fire;
use crate::job::Job;
use crate::job::RunOutcome;
use crate::jobs::{Execute, RunContext, RunResult, Services};
use crate::scheduler::Scheduler;
use crate::state::history::{History, RunRecord};

/// How a scripted job behaves: each attempt takes `takes`, and the first `fail_first`
/// attempts fail.
#[derive(Clone, Copy)]
struct Script {
    takes: Duration,
    fail_first: u32,
}

/// (job, when the attempt started, how it ended).
type Attempt = (String, DateTime<Utc>, &'static str);

/// An executor that plays scripts and notes when each attempt started and how it ended.
#[derive(Clone)]
struct Scripted {
    scripts: HashMap<String, Script>,
    clock: Clock,
    log: Arc<Mutex<Vec<Attempt>>>,
    busy: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

impl Scripted {
    fn new(clock: &Clock, scripts: &[(&str, Script)]) -> Self {
        Scripted {
            scripts: scripts.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
            clock: clock.clone(),
            log: Arc::default(),
            busy: Arc::default(),
        }
    }

    /// (start, how it ended) of each attempt of `job`.
    fn attempts(&self, job: &str) -> Vec<(DateTime<Utc>, &'static str)> {
        self.log.lock().expect("lock").iter().filter(|(j, ..)| j == job).map(|(_, t, e)| (*t, *e)).collect()
    }

    /// Most attempts of `job` running at once.
    fn max_busy(&self, job: &str) -> usize {
        self.busy.lock().expect("lock").get(job).map_or(0, |b| b.1)
    }
}

impl Execute for Scripted {
    fn is_instant(&self, _fire: &Fire) -> bool {
        false
    }

    fn execute<'a>(
        &'a self,
        fire: &'a Fire,
        cx: &'a RunContext,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = RunResult> + Send + 'a>> {
        Box::pin(async move {
            let job = fire.job.name.to_string();
            let script = self.scripts.get(&job).copied().unwrap_or(Script { takes: Duration::ZERO, fail_first: 0 });
            let started = self.clock.now();
            let nth = self.attempts(&job).len() as u32;
            {
                let mut busy = self.busy.lock().expect("lock");
                let b = busy.entry(job.clone()).or_default();
                b.0 += 1;
                b.1 = b.1.max(b.0);
            }
            let ended = tokio::select! {
                () = tokio::time::sleep(script.takes) => if nth < script.fail_first { "failed" } else { "ok" },
                () = cx.stop.cancelled() => "stopped",
            };
            self.busy.lock().expect("lock").entry(job.clone()).or_default().0 -= 1;
            self.log.lock().expect("lock").push((job, started, ended));
            match ended {
                "ok" => RunResult::ok(),
                other => RunResult::failed(other),
            }
        })
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("rfc3339").with_timezone(&Utc)
}

const START: &str = "2026-01-01T00:00:00Z";

struct Harness {
    exec: Scripted,
    clock: Clock,
    runner: Runner,
    records: UnboundedReceiver<RunRecord>,
    stop: CancellationToken,
    loop_task: tokio::task::JoinHandle<()>,
}

fn start(toml: &str, scripts: &[(&str, Script)]) -> Harness {
    let config = parse_str(toml, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let clock = Clock::manual(at(START));
    let exec = Scripted::new(&clock, scripts);
    let (history, records) = History::collect();
    let services = Arc::new(Services::new(clock.clone(), "unused".into(), config.notifiers.clone()));
    let runner = Runner::new(exec.clone(), services, history, config.scheduler.max_running);
    let scheduler = Scheduler::new(config.jobs, clock.clone(), runner.clone());
    let stop = CancellationToken::new();
    let loop_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            scheduler.run(stop).await;
        }
    });
    Harness { exec, clock, runner, records, stop, loop_task }
}

impl Harness {
    /// Runs simulated time to `until`, stops the loop, lets running jobs finish, and returns
    /// every record in the order it was written.
    async fn run_until(mut self, until: &str) -> (Scripted, Vec<RunRecord>) {
        let wait = (at(until) - self.clock.now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        // Let the loop dispatch what is due at `until` before it is stopped.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        self.stop.cancel();
        self.loop_task.await.expect("loop ends");
        self.runner.shutdown(Duration::from_secs(3600)).await;
        drop(self.runner);
        let mut out = Vec::new();
        while let Ok(r) = self.records.try_recv() {
            out.push(r);
        }
        (self.exec, out)
    }
}

fn outcomes(records: &[RunRecord], job: &str) -> Vec<(DateTime<Utc>, RunOutcome)> {
    records.iter().filter(|r| r.job == job).map(|r| (r.scheduled_at, r.outcome)).collect()
}

fn secs(s: i64) -> DateTime<Utc> {
    at(START) + chrono::Duration::seconds(s)
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_skips_slots_while_the_job_runs() {
    let toml = "[jobs.slow]\nevery = \"1s\"\naction = \"noop\"\n";
    let h = start(toml, &[("slow", Script { takes: Duration::from_millis(2500), fail_first: 0 })]);
    let (exec, records) = h.run_until("2026-01-01T00:00:09Z").await;
    // Runs at 1 s (until 3.5 s), 4 s (until 6.5 s), 7 s (until 9.5 s); 2, 3, 5, 6, 8, 9 skipped.
    let starts: Vec<_> = exec.attempts("slow").iter().map(|(t, _)| *t).collect();
    assert_eq!(starts, [secs(1), secs(4), secs(7)]);
    let skipped: Vec<_> =
        outcomes(&records, "slow").into_iter().filter(|(_, o)| *o == RunOutcome::Skipped).map(|(s, _)| s).collect();
    assert_eq!(skipped, [secs(2), secs(3), secs(5), secs(6), secs(8), secs(9)]);
    assert_eq!(exec.max_busy("slow"), 1);
}

#[tokio::test(start_paused = true)]
async fn overlap_queue_runs_one_pending_slot_right_after() {
    let toml = "[jobs.slow]\nevery = \"1s\"\noverlap = \"queue\"\naction = \"noop\"\n";
    let h = start(toml, &[("slow", Script { takes: Duration::from_millis(2500), fail_first: 0 })]);
    let (exec, records) = h.run_until("2026-01-01T00:00:06Z").await;
    // 1 s runs until 3.5 s; slot 2 waits and runs 3.5-6 s; slot 3 is skipped (one pending at
    // most); slot 4 waits and runs at 6 s; slots 5 and 6 are skipped.
    let starts: Vec<_> = exec.attempts("slow").iter().map(|(t, _)| *t).collect();
    assert_eq!(starts, [secs(1), secs(1) + chrono::Duration::milliseconds(2500), secs(6)]);
    let by_slot: HashMap<_, _> = outcomes(&records, "slow").into_iter().collect();
    assert_eq!(by_slot[&secs(2)], RunOutcome::Success);
    assert_eq!(by_slot[&secs(3)], RunOutcome::Skipped);
    assert_eq!(by_slot[&secs(4)], RunOutcome::Success);
    assert_eq!(by_slot[&secs(5)], RunOutcome::Skipped);
    assert_eq!(exec.max_busy("slow"), 1);
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_runs_concurrently() {
    let toml = "[jobs.slow]\nevery = \"1s\"\noverlap = \"allow\"\naction = \"noop\"\n";
    let h = start(toml, &[("slow", Script { takes: Duration::from_millis(2500), fail_first: 0 })]);
    let (exec, records) = h.run_until("2026-01-01T00:00:10Z").await;
    assert_eq!(exec.attempts("slow").len(), 10);
    assert_eq!(exec.max_busy("slow"), 3);
    assert!(outcomes(&records, "slow").iter().all(|(_, o)| *o == RunOutcome::Success));
}

#[tokio::test(start_paused = true)]
async fn overlap_replace_stops_the_running_one() {
    let toml = "[jobs.slow]\nevery = \"1s\"\noverlap = \"replace\"\naction = \"noop\"\n";
    let h = start(toml, &[("slow", Script { takes: Duration::from_millis(2500), fail_first: 0 })]);
    let (exec, records) = h.run_until("2026-01-01T00:00:05Z").await;
    let ended: Vec<_> = exec.attempts("slow").iter().map(|(_, e)| *e).collect();
    // Slots 1-4 are each stopped by the next; slot 5 finishes during shutdown.
    assert_eq!(ended, ["stopped", "stopped", "stopped", "stopped", "ok"]);
    let errors: Vec<_> = records.iter().filter_map(|r| r.error.clone()).collect();
    assert_eq!(errors.len(), 4);
    assert!(errors.iter().all(|e| e == "replaced by a newer run: stopped"), "{errors:?}");
}

#[tokio::test(start_paused = true)]
async fn max_running_makes_fires_wait_and_counts_them() {
    let toml = "[scheduler]\nmax_running = 1\n[jobs.a]\ncron = \"0 * * * *\"\naction = \"noop\"\n[jobs.b]\ncron = \"0 * * * *\"\naction = \"noop\"\n[jobs.c]\ncron = \"0 * * * *\"\naction = \"noop\"\n";
    let script = Script { takes: Duration::from_secs(10), fail_first: 0 };
    let h = start(toml, &[("a", script), ("b", script), ("c", script)]);
    let runner = h.runner.clone();
    let (exec, _) = h.run_until("2026-01-01T01:01:00Z").await;
    let mut starts: Vec<_> = ["a", "b", "c"].iter().map(|j| exec.attempts(j)[0].0).collect();
    starts.sort();
    // One at a time: 01:00:00, 01:00:10, 01:00:20.
    assert_eq!(starts, [secs(3600), secs(3610), secs(3620)]);
    assert_eq!(runner.waited(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_stops_the_attempt_and_is_recorded() {
    let toml = "[jobs.stuck]\ncron = \"0 * * * *\"\ntimeout = \"3s\"\naction = \"noop\"\n";
    let h = start(toml, &[("stuck", Script { takes: Duration::from_secs(60), fail_first: 0 })]);
    let (exec, records) = h.run_until("2026-01-01T01:00:30Z").await;
    assert_eq!(exec.attempts("stuck"), [(secs(3600), "stopped")]);
    let r = &records[0];
    assert_eq!(r.outcome, RunOutcome::Timeout);
    assert_eq!(r.error.as_deref(), Some("timed out after 3s"));
    assert_eq!(r.finished_at - r.started_at.expect("started"), chrono::Duration::seconds(3));
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_up_to_the_cap() {
    let toml = "[jobs.flaky]\ncron = \"0 * * * *\"\nretries = 4\nretry_delay = \"2s\"\nretry_max_delay = \"5s\"\naction = \"noop\"\n";
    let h = start(toml, &[("flaky", Script { takes: Duration::from_secs(1), fail_first: 3 })]);
    let (exec, records) = h.run_until("2026-01-01T01:01:00Z").await;
    // Attempt 1 at 0 s ends at 1 s; waits 2 s; attempt 2 at 3 s; waits 4 s; attempt 3 at 8 s;
    // waits 5 s (capped, not 8); attempt 4 at 14 s succeeds. No fifth attempt.
    let starts: Vec<i64> = exec.attempts("flaky").iter().map(|(t, _)| (*t - secs(3600)).num_seconds()).collect();
    assert_eq!(starts, [0, 3, 8, 14]);
    let attempts: Vec<(u32, RunOutcome)> = records.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(
        attempts,
        [(1, RunOutcome::Failure), (2, RunOutcome::Failure), (3, RunOutcome::Failure), (4, RunOutcome::Success)]
    );
    assert!(records.iter().all(|r| r.scheduled_at == secs(3600)));
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_each_fire_within_bounds_and_as_next_shows() {
    let toml = "[jobs.spread]\nevery = \"1m\"\njitter = \"30s\"\naction = \"noop\"\n";
    let config = parse_str(toml, Path::new("t.toml"), Path::new(".")).expect("valid");
    let job: Job = config.jobs[0].clone();
    let h = start(toml, &[]);
    let (exec, records) = h.run_until("2026-01-01T01:00:00Z").await;
    let starts = exec.attempts("spread");
    assert_eq!(starts.len(), 59, "every slot ran once (the 01:00 slot runs after 01:00)");
    let mut distinct = std::collections::HashSet::new();
    for r in &records {
        let delay = (r.started_at.expect("started") - r.scheduled_at).to_std().expect("not early");
        assert!(delay < Duration::from_secs(30));
        // Exactly the jitter `next` computes for the slot.
        assert_eq!(r.started_at, Some(job.run_at(r.scheduled_at)));
        distinct.insert(delay);
    }
    assert!(distinct.len() > 50, "spread, not constant");
}
