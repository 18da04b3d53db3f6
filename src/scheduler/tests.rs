//! Paused-time tests of the timer loop: simulated days run in milliseconds, and no test waits
//! for real time to pass.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tokio_util::sync::CancellationToken;

use super::{Dispatch, Scheduler};
use crate::clock::Clock;
use crate::config::parse_str;
use crate::fire::Fire;
use crate::job::Job;

/// (job, scheduled slot, dispatch time) of each fire.
type Fired = (String, DateTime<Utc>, DateTime<Utc>);

/// A dispatcher that records each fire and, for jobs named `slow-*`, keeps a task busy for
/// ten (simulated) seconds, as a long-running action would.
#[derive(Clone, Default)]
struct Recorder {
    fires: Arc<Mutex<Vec<Fired>>>,
    busy: Arc<Mutex<usize>>,
    max_busy: Arc<Mutex<usize>>,
}

impl Dispatch for Recorder {
    fn dispatch(&self, fire: Fire) {
        self.fires.lock().expect("lock").push((fire.job.name.to_string(), fire.scheduled_at, fire.fired_at));
        if fire.job.name.starts_with("slow") {
            let (busy, max) = (self.busy.clone(), self.max_busy.clone());
            *busy.lock().expect("lock") += 1;
            let now_busy = *busy.lock().expect("lock");
            let mut m = max.lock().expect("lock");
            *m = (*m).max(now_busy);
            tokio::spawn(async move {
                tokio::time::sleep(StdDuration::from_secs(10)).await;
                *busy.lock().expect("lock") -= 1;
            });
        }
    }
}

impl Recorder {
    fn of(&self, job: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let fires = self.fires.lock().expect("lock");
        fires.iter().filter(|(j, ..)| j == job).map(|(_, s, f)| (*s, *f)).collect()
    }
}

fn jobs(toml: &str) -> Vec<Job> {
    parse_str(toml, Path::new("test.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}")).jobs
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("rfc3339").with_timezone(&Utc)
}

/// Starts the loop on `jobs` at wall time `start`; returns the recorder, the clock and a stop.
fn start(toml: &str, start: &str) -> (Recorder, Clock, CancellationToken, tokio::task::JoinHandle<()>) {
    let clock = Clock::manual(at(start));
    let recorder = Recorder::default();
    let scheduler = Scheduler::new(jobs(toml), clock.clone(), recorder.clone());
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            scheduler.run(stop).await;
        }
    });
    (recorder, clock, stop, handle)
}

/// Lets simulated time run until wall time `until` (tokio auto-advances a paused clock).
async fn run_until(clock: &Clock, until: DateTime<Utc>) {
    let wait = (until - clock.now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    // Let the loop finish the tick at `until`.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_simulated_week_fires_exactly_the_expected_slots() {
    let toml = r#"
        [scheduler]
        timezone = "America/New_York"
        [jobs.quarter-hourly]
        cron = "*/15 * * * *"
        action = "noop"
        [jobs.nightly]
        cron = "30 2 * * *"
        action = "noop"
        [jobs.weekdays-9]
        cron = "0 9 * * 1-5"
        timezone = "Europe/Berlin"
        action = "noop"
        [jobs.every-90s]
        every = "90s"
        action = "noop"
        [jobs.hourly-offset]
        every = "1h"
        offset = "5m"
        action = "noop"
        [jobs.off]
        every = "1s"
        enabled = false
        action = "noop"
    "#;
    // A week around the 2026 US spring-forward (Sunday 2026-03-08, 02:00 EST -> 03:00 EDT).
    let (rec, clock, stop, handle) = start(toml, "2026-03-05T00:00:00Z");
    run_until(&clock, at("2026-03-12T00:00:00Z")).await;
    stop.cancel();
    handle.await.expect("loop ends");

    // Every fire is dispatched exactly at its slot (paused time has no lateness).
    for (job, slot, fired) in rec.fires.lock().expect("lock").iter() {
        assert_eq!(slot, fired, "{job}");
    }
    // Every 15 real minutes, straight through the skipped hour: 01:45 EST is followed by
    // 03:00 EDT, fifteen minutes later.
    let q = rec.of("quarter-hourly");
    assert_eq!(q.len(), 7 * 96);
    assert!(q.windows(2).all(|w| w[1].0 - w[0].0 == Duration::minutes(15)));
    assert!(q.iter().any(|(s, _)| *s == at("2026-03-08T06:45:00Z")));
    assert!(q.iter().any(|(s, _)| *s == at("2026-03-08T07:00:00Z")));
    // The nightly 02:30 falls in the gap on the 8th and runs at 03:00 EDT instead.
    let nightly: Vec<String> = rec.of("nightly").iter().map(|(s, _)| s.to_rfc3339()).collect();
    assert_eq!(
        nightly,
        [
            "2026-03-05T07:30:00+00:00",
            "2026-03-06T07:30:00+00:00",
            "2026-03-07T07:30:00+00:00",
            "2026-03-08T07:00:00+00:00",
            "2026-03-09T06:30:00+00:00",
            "2026-03-10T06:30:00+00:00",
            "2026-03-11T06:30:00+00:00",
        ]
    );
    // Berlin weekdays at 09:00 CET = 08:00Z: Thu 5, Fri 6, Mon 9, Tue 10, Wed 11.
    let berlin: Vec<String> = rec.of("weekdays-9").iter().map(|(s, _)| s.to_rfc3339()).collect();
    assert_eq!(
        berlin,
        [
            "2026-03-05T08:00:00+00:00",
            "2026-03-06T08:00:00+00:00",
            "2026-03-09T08:00:00+00:00",
            "2026-03-10T08:00:00+00:00",
            "2026-03-11T08:00:00+00:00",
        ]
    );
    // Intervals are epoch-aligned elapsed time, untouched by DST. The week starts exactly on a
    // 90 s boundary, which is not itself "after" the start, and ends on one, which is included.
    let every = rec.of("every-90s");
    assert_eq!(every.len(), 7 * 86_400 / 90);
    assert!(every.windows(2).all(|w| w[1].0 - w[0].0 == Duration::seconds(90)));
    assert_eq!(every[0].0, at("2026-03-05T00:01:30Z"));
    let hourly = rec.of("hourly-offset");
    assert_eq!(hourly.len(), 7 * 24);
    assert_eq!(hourly[0].0, at("2026-03-05T00:05:00Z"));
    assert!(rec.of("off").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_job_longer_than_its_period_does_not_delay_others() {
    let toml = r#"
        [jobs.slow-job]
        every = "1s"
        action = "noop"
        [jobs.fast-job]
        every = "1s"
        action = "noop"
    "#;
    let (rec, clock, stop, handle) = start(toml, "2026-01-01T00:00:00Z");
    run_until(&clock, at("2026-01-01T00:01:00Z")).await;
    stop.cancel();
    handle.await.expect("loop ends");

    let slow = rec.of("slow-job");
    let fast = rec.of("fast-job");
    assert_eq!(slow.len(), 60);
    assert_eq!(fast.len(), 60);
    assert!(fast.iter().chain(&slow).all(|(slot, fired)| slot == fired));
    // Each slow run takes 10 s, so about ten were running at once.
    assert!(*rec.max_busy.lock().expect("lock") >= 10);
}

#[tokio::test(start_paused = true)]
async fn a_forward_wall_clock_step_fires_the_passed_slots_once() {
    let toml = r#"
        [jobs.daily-3am]
        cron = "0 3 * * *"
        timezone = "UTC"
        action = "noop"
        [jobs.minutely]
        every = "1m"
        action = "noop"
    "#;
    let (rec, clock, stop, handle) = start(toml, "2026-01-01T01:00:00Z");
    run_until(&clock, at("2026-01-01T01:10:00Z")).await;
    assert_eq!(rec.of("minutely").len(), 10);
    // NTP, or a resume from suspend: three hours pass in an instant.
    clock.step(Duration::hours(3));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let daily = rec.of("daily-3am");
    assert_eq!(daily, [(at("2026-01-01T03:00:00Z"), at("2026-01-01T04:10:00Z"))]);
    // The 180 passed minutes run once, for the latest, not as a burst.
    let minutely = rec.of("minutely");
    assert_eq!(minutely.len(), 11);
    assert_eq!(minutely[10], (at("2026-01-01T04:10:00Z"), at("2026-01-01T04:10:00Z")));
    // Then the schedule carries on as before.
    run_until(&clock, at("2026-01-01T04:15:00Z")).await;
    stop.cancel();
    handle.await.expect("loop ends");
    assert_eq!(rec.of("minutely").len(), 16);
    assert_eq!(rec.of("daily-3am").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_backward_wall_clock_step_never_fires_a_slot_twice() {
    let toml = r#"
        [jobs.minutely]
        every = "1m"
        action = "noop"
        [jobs.at-0130]
        cron = "30 1 * * *"
        timezone = "UTC"
        action = "noop"
    "#;
    let (rec, clock, stop, handle) = start(toml, "2026-01-01T01:00:00Z");
    run_until(&clock, at("2026-01-01T01:45:00Z")).await;
    assert_eq!(rec.of("at-0130").len(), 1);
    clock.step(-Duration::minutes(30));
    // Wall time is 01:15 again; run to 02:30 by the wall clock.
    run_until(&clock, at("2026-01-01T02:30:00Z")).await;
    stop.cancel();
    handle.await.expect("loop ends");

    let slots: Vec<_> = rec.of("minutely").iter().map(|(s, _)| *s).collect();
    let mut seen = HashMap::new();
    for s in &slots {
        *seen.entry(*s).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "a slot fired twice");
    assert!(slots.windows(2).all(|w| w[0] < w[1]));
    // 01:01..=01:45 before the step, then 01:46..=02:30 once the wall clock gets there again.
    assert_eq!(slots.len(), 90);
    assert_eq!(rec.of("at-0130").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reboot_jobs_fire_once_at_start() {
    let toml = r#"
        [jobs.on-start]
        cron = "@reboot"
        action = "noop"
    "#;
    let (rec, clock, stop, handle) = start(toml, "2026-01-01T00:00:00Z");
    run_until(&clock, at("2026-01-02T00:00:00Z")).await;
    stop.cancel();
    handle.await.expect("loop ends");
    assert_eq!(rec.of("on-start"), [(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"))]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_new_fires() {
    let toml = r#"
        [jobs.each-second]
        every = "1s"
        action = "noop"
    "#;
    let (rec, clock, stop, handle) = start(toml, "2026-01-01T00:00:00Z");
    run_until(&clock, at("2026-01-01T00:00:05Z")).await;
    stop.cancel();
    handle.await.expect("loop ends");
    let n = rec.of("each-second").len();
    run_until(&clock, at("2026-01-01T00:01:00Z")).await;
    assert_eq!(rec.of("each-second").len(), n);
    assert_eq!(n, 5);
}

// ---- missed slots across restarts, with the real journal --------------------------------

/// Runs the loop over `toml` with the journal in `state` from wall time `from` to `until`;
/// returns the fires.
async fn run_with_journal(toml: &str, state: &Path, from: &str, until: &str) -> Recorder {
    let clock = Clock::manual(at(from));
    let recorder = Recorder::default();
    let journal = crate::state::journal::Journal::open(state).expect("journal");
    let scheduler = Scheduler::new(jobs(toml), clock.clone(), recorder.clone()).with_journal(journal);
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            scheduler.run(stop).await;
        }
    });
    run_until(&clock, at(until)).await;
    stop.cancel();
    handle.await.expect("loop ends");
    recorder
}

fn job_toml(extra: &str) -> String {
    format!("[jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n{extra}\n")
}

/// Runs 10 s, is down from 00:00:10 to 00:01:00, then runs 2 s more; returns the second run's
/// slots as seconds after midnight.
async fn restart(extra: &str) -> Vec<i64> {
    let state = tempfile::tempdir().expect("temp dir");
    let first = run_with_journal(&job_toml(extra), state.path(), "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z").await;
    assert_eq!(first.of("tick").len(), 10);
    let second =
        run_with_journal(&job_toml(extra), state.path(), "2026-01-01T00:01:00.500Z", "2026-01-01T00:01:02Z").await;
    second.of("tick").iter().map(|(s, _)| (*s - at("2026-01-01T00:00:00Z")).num_seconds()).collect()
}

#[tokio::test(start_paused = true)]
async fn catch_up_latest_runs_the_latest_missed_slot_once() {
    // Missed 11..=60; the default runs 60 at start, then 61, 62 as usual.
    assert_eq!(restart("").await, [60, 61, 62]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_skip_runs_none_of_them() {
    assert_eq!(restart("catch_up = \"skip\"").await, [61, 62]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_all_runs_each_missed_slot_up_to_the_limit() {
    let all = restart("catch_up = \"all\"").await;
    assert_eq!(all, (11..=62).collect::<Vec<_>>(), "every missed slot once, in order");
    assert_eq!(restart("catch_up = \"all\"\ncatch_up_limit = 5").await, [56, 57, 58, 59, 60, 61, 62]);
    // The window drops slots older than 10 s before the restart (00:00:50.5).
    assert_eq!(restart("catch_up = \"all\"\ncatch_up_window = \"10s\"").await, (51..=62).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_changed_schedule_or_a_new_job_starts_from_now() {
    let state = tempfile::tempdir().expect("temp dir");
    run_with_journal(&job_toml(""), state.path(), "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z").await;
    let changed = "[jobs.tick]\nevery = \"2s\"\naction = \"noop\"\n[jobs.new]\nevery = \"1s\"\naction = \"noop\"\n";
    let second = run_with_journal(changed, state.path(), "2026-01-01T00:01:00.500Z", "2026-01-01T00:01:03Z").await;
    let secs = |job: &str| -> Vec<i64> {
        second.of(job).iter().map(|(s, _)| (*s - at("2026-01-01T00:00:00Z")).num_seconds()).collect()
    };
    assert_eq!(secs("tick"), [62]);
    assert_eq!(secs("new"), [61, 62, 63]);
}

#[tokio::test(start_paused = true)]
async fn a_slot_in_the_journal_never_runs_again_even_if_the_clock_went_back() {
    let state = tempfile::tempdir().expect("temp dir");
    run_with_journal(&job_toml(""), state.path(), "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z").await;
    // Restarted with the wall clock five seconds behind the journal.
    let second = run_with_journal(&job_toml(""), state.path(), "2026-01-01T00:00:05Z", "2026-01-01T00:00:13Z").await;
    let slots: Vec<i64> =
        second.of("tick").iter().map(|(s, _)| (*s - at("2026-01-01T00:00:00Z")).num_seconds()).collect();
    assert_eq!(slots, [11, 12, 13]);
}

#[tokio::test(start_paused = true)]
async fn a_reload_is_applied_as_a_diff() {
    let before = r#"
        [jobs.same]
        every = "10s"
        action = "noop"
        [jobs.reworded]
        every = "1m"
        action = "command"
        command = "echo a"
        [jobs.rescheduled]
        every = "1h"
        action = "noop"
        [jobs.dropped]
        every = "5s"
        action = "noop"
    "#;
    // Same jobs, written differently; one command changed, one schedule changed, one job gone,
    // one new.
    let after = r#"
        [jobs]
        same = { action = "noop", every = "10s" }
        [jobs.reworded]
        every = "1m"
        action = "command"
        command = "echo b"
        [jobs.rescheduled]
        every = "2h"
        action = "noop"
        [jobs.added]
        every = "30s"
        action = "noop"
    "#;
    let clock = Clock::manual(at("2026-05-01T00:00:00Z"));
    let rec = Recorder::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let scheduler = Scheduler::new(jobs(before), clock.clone(), rec.clone()).with_reloads(rx);
    let board = scheduler.board();
    let same_before = board.get("same").expect("same");
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            scheduler.run(stop).await;
        }
    });
    run_until(&clock, at("2026-05-01T00:00:35Z")).await;
    let (done, diff) = tokio::sync::oneshot::channel();
    tx.send(super::Reload { jobs: super::prepare(&board, jobs(after)), done }).expect("loop listens");
    let diff = diff.await.expect("applied");
    assert_eq!(
        diff,
        super::Diff {
            added: vec!["added".into()],
            removed: vec!["dropped".into()],
            changed: vec![("reworded".into(), false), ("rescheduled".into(), true)],
            unchanged: vec!["same".into()],
            applied_in: diff.applied_in,
        }
    );
    // The unchanged job is the same job with the same status; its pending fire is kept.
    let same_after = board.get("same").expect("same");
    assert!(Arc::ptr_eq(&same_before.job, &same_after.job) && Arc::ptr_eq(&same_before.status, &same_after.status));
    assert_eq!(same_after.status.next_fire(), Some(at("2026-05-01T00:00:40Z")));
    assert_eq!(board.get("reworded").expect("r").status.next_fire(), Some(at("2026-05-01T00:01:00Z")));
    assert_eq!(board.get("rescheduled").expect("r").status.next_fire(), Some(at("2026-05-01T02:00:00Z")));
    assert_eq!(board.get("added").expect("a").status.next_fire(), Some(at("2026-05-01T00:01:00Z")));
    assert!(board.get("dropped").is_none());
    assert_eq!(same_before.status.next_fire(), Some(at("2026-05-01T00:00:40Z")));

    run_until(&clock, at("2026-05-01T00:02:00Z")).await;
    stop.cancel();
    handle.await.expect("loop ends");
    let secs = |v: Vec<(DateTime<Utc>, DateTime<Utc>)>| v.iter().map(|(s, _)| s.timestamp() % 1000).collect::<Vec<_>>();
    // Every 10 s, no slot lost or doubled around the reload.
    let same: Vec<i64> = (0..=12).map(|i| (at("2026-05-01T00:00:00Z").timestamp() + i * 10) % 1000).skip(1).collect();
    assert_eq!(secs(rec.of("same")), same);
    // The dropped job fired at 5..35 s and never after.
    assert_eq!(rec.of("dropped").len(), 7);
    assert_eq!(
        rec.of("added").iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [at("2026-05-01T00:01:00Z"), at("2026-05-01T00:01:30Z"), at("2026-05-01T00:02:00Z")]
    );
    assert_eq!(rec.of("rescheduled").len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reload_tells_the_journal_only_its_changes_and_a_restart_finds_them() {
    let all = "catch_up = \"all\"\ncatch_up_limit = 1000";
    let before = format!(
        "[jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n{all}\n[jobs.other]\nevery = \"1s\"\naction = \"noop\"\n{all}\n\
         [jobs.gone]\nevery = \"1s\"\naction = \"noop\"\n{all}\n"
    );
    let after = format!(
        "[jobs.other]\nevery = \"2s\"\naction = \"noop\"\n{all}\n[jobs.new]\nevery = \"1s\"\naction = \"noop\"\n{all}\n\
         [jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n{all}\n"
    );
    let state = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(at("2026-01-01T00:00:00Z"));
    let journal = crate::state::journal::Journal::open(state.path()).expect("journal");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let scheduler =
        Scheduler::new(jobs(&before), clock.clone(), Recorder::default()).with_journal(journal).with_reloads(rx);
    let board = scheduler.board();
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move { scheduler.run(stop).await }
    });
    run_until(&clock, at("2026-01-01T00:00:05.500Z")).await;
    let (done, applied) = tokio::sync::oneshot::channel();
    tx.send(super::Reload { jobs: super::prepare(&board, jobs(&after)), done }).expect("loop listens");
    applied.await.expect("applied");
    run_until(&clock, at("2026-01-01T00:00:10Z")).await;
    stop.cancel();
    let scheduler = handle.await.expect("loop ends");
    // The ids carried over and those of new jobs are the journal's ids for those names.
    let names: Vec<String> = scheduler.jobs.iter().map(|e| e.job.name.to_string()).collect();
    let carried = scheduler.ids.clone();
    drop(scheduler);
    let mut journal = crate::state::journal::Journal::open(state.path()).expect("journal");
    let ids = journal.ids(names.iter().map(String::as_str)).expect("ids");
    assert_eq!((names.len(), carried), (3, ids), "{names:?}");
    // A restart after a minute's outage: each job's missed slots counted from what the journal
    // learnt at the reload (a schedule it did not learn would start from now).
    drop(journal);
    let second = run_with_journal(&after, state.path(), "2026-01-01T00:01:00.500Z", "2026-01-01T00:01:02Z").await;
    let secs = |job: &str| -> Vec<i64> {
        second.of(job).iter().map(|(s, _)| (*s - at("2026-01-01T00:00:00Z")).num_seconds()).collect()
    };
    assert_eq!(secs("tick"), (11..=62).collect::<Vec<_>>());
    assert_eq!(secs("new"), (11..=62).collect::<Vec<_>>(), "added by the reload at 00:00:05.5");
    assert_eq!(secs("other"), (12..=62).step_by(2).collect::<Vec<_>>(), "rescheduled to 2 s at the reload");
    assert!(second.of("gone").is_empty());
}
