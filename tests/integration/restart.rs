//! Restarts of the real daemon: missed slots are caught up, handled slots never run twice.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::DateTime;
use nix::sys::signal::Signal;

use crate::util::{Beatd, history, lines, wait_for};

/// Slot (Unix seconds) -> how many times it ran, from the job's own log of BEATD_SCHEDULED_AT.
fn slots(b: &Beatd) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for l in lines(&b.path("slots.txt")) {
        let t = DateTime::parse_from_rfc3339(&l).expect("rfc3339").timestamp();
        *seen.entry(t).or_default() += 1;
    }
    seen
}

fn run_for(b: &Beatd, seconds: f64, stop: Signal) {
    let mut d = b.run(&[]);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    match stop {
        Signal::SIGKILL => d.kill(),
        _ => {
            d.signal(stop);
            d.wait_exit(Duration::from_secs(10)).expect("exits");
        }
    }
}

const JOB: &str = r#"
[jobs.tick]
every = "1s"
action = "command"
command = 'echo "$BEATD_SCHEDULED_AT" >> slots.txt'
catch_up = "all"
overlap = "allow"
"#;

#[test]
fn slots_missed_while_stopped_run_once_at_start_and_none_twice() {
    let b = Beatd::with_config(JOB);
    run_for(&b, 2.5, Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(3000)); // down for three slots
    run_for(&b, 2.5, Signal::SIGTERM);
    assert!(wait_for(Duration::from_secs(2), || !slots(&b).is_empty()));
    let seen = slots(&b);
    let (first, last) = (*seen.keys().next().expect("runs"), *seen.keys().last().expect("runs"));
    assert!(last - first >= 6, "{seen:?}");
    for t in first..=last {
        assert_eq!(seen.get(&t), Some(&1), "slot {t} ran {:?} times: {seen:?}\n{}", seen.get(&t), b.log());
    }
    assert!(b.log().contains("fire(s) missed since"), "{}", b.log());
}

#[test]
fn after_sigkill_no_slot_runs_twice() {
    let b = Beatd::with_config(JOB);
    for _ in 0..3 {
        run_for(&b, 1.7, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(1300));
    }
    run_for(&b, 1.5, Signal::SIGTERM);
    let seen = slots(&b);
    assert!(seen.len() >= 6, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "a slot ran twice: {seen:?}");
    // The downtime slots were caught up: the slots form one run, bar one that a kill may have
    // caught between the journal and the start of the command.
    let (first, last) = (*seen.keys().next().expect("runs"), *seen.keys().last().expect("runs"));
    let gaps = (first..=last).filter(|t| !seen.contains_key(t)).count();
    assert!(gaps <= 3, "{gaps} slots never ran: {seen:?}");
}

/// The history of `tick` as slot (Unix seconds) -> (outcome, started late: seconds from slot
/// to start), one entry per row; panics on a slot recorded twice.
fn recorded(b: &Beatd) -> BTreeMap<i64, (String, Option<f64>)> {
    let mut rows = BTreeMap::new();
    for r in history(b, "tick") {
        let ts = |k: &str| r[k].as_str().map(|t| DateTime::parse_from_rfc3339(t).expect("rfc3339"));
        let slot = ts("scheduled_at").expect("slot");
        let late = ts("started_at").map(|s| (s - slot).num_milliseconds() as f64 / 1e3);
        let outcome = r["outcome"].as_str().expect("outcome").to_string();
        let twice = rows.insert(slot.timestamp(), (outcome, late));
        assert!(twice.is_none(), "slot {slot} recorded twice: {twice:?} and {r}");
    }
    rows
}

#[test]
fn twenty_sigkills_at_random_moments_leave_every_slot_in_the_history_exactly_once() {
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    // Each run takes 0.4 s, so many kills land between a fire and the record of its run.
    let b = Beatd::with_config(&JOB.replace(">> slots.txt'", ">> slots.txt; sleep 0.4'"));
    for _ in 0..20 {
        run_for(&b, rng.u64(150..1800) as f64 / 1e3, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(rng.u64(0..1500)));
    }
    run_for(&b, 2.5, Signal::SIGTERM);
    let rows = recorded(&b);
    let (first, last) = (*rows.keys().next().expect("runs"), *rows.keys().last().expect("runs"));
    let missing: Vec<i64> = (first..=last).filter(|t| !rows.contains_key(t)).collect();
    assert!(missing.is_empty(), "seed {seed}: slots not in the history: {missing:?}\n{rows:?}\n{}", b.log());
    assert!(rows.len() >= 20, "seed {seed}: {rows:?}");
    // The commands agree: no slot ran twice, and every slot recorded as a success ran.
    let ran = slots(&b);
    assert!(ran.values().all(|&n| n == 1), "seed {seed}: a slot ran twice: {ran:?}");
    for (slot, (outcome, _)) in &rows {
        assert!(outcome == "success" || outcome == "interrupted", "seed {seed}: {slot}: {outcome}");
        if outcome == "success" {
            assert!(ran.contains_key(slot), "seed {seed}: {slot} recorded but never ran");
        }
    }
    let interrupted = rows.values().filter(|(o, _)| o == "interrupted").count();
    assert!(interrupted >= 1, "seed {seed}: no kill landed mid-run, so the test showed nothing: {rows:?}");
}

/// Runs `tick` with `catch_up`, kills it, keeps it down for three and a half slots, restarts
/// it; returns the history and the number of slots missed while down.
fn down_for_three_slots(catch_up: &str) -> BTreeMap<i64, (String, Option<f64>)> {
    let b = Beatd::with_config(&JOB.replace("catch_up = \"all\"", &format!("catch_up = \"{catch_up}\"")));
    run_for(&b, 1.6, Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(3000));
    // Restart half-way between two slots, so catch-up runs start about 0.5 s after their slot
    // while on-time runs start within milliseconds of theirs.
    let into_second = chrono::Utc::now().timestamp_subsec_millis();
    std::thread::sleep(Duration::from_millis(u64::from((1500 - into_second) % 1000)));
    run_for(&b, 2.2, Signal::SIGTERM);
    recorded(&b)
}

/// Catch-up runs: those that started long after their slot.
fn caught_up(rows: &BTreeMap<i64, (String, Option<f64>)>) -> usize {
    rows.values().filter(|(o, late)| o == "success" && late.is_some_and(|l| l > 0.25)).count()
}

#[test]
fn after_a_kill_latest_runs_the_latest_missed_slot_once_and_skip_none() {
    let gaps = |rows: &BTreeMap<i64, (String, Option<f64>)>| {
        let (first, last) = (*rows.keys().next().expect("runs"), *rows.keys().last().expect("runs"));
        (first..=last).filter(|t| !rows.contains_key(t)).count()
    };
    let latest = down_for_three_slots("latest");
    assert_eq!(caught_up(&latest), 1, "{latest:?}");
    assert!((2..=3).contains(&gaps(&latest)), "three or four slots missed, all but the latest lost: {latest:?}");
    let skip = down_for_three_slots("skip");
    assert_eq!(caught_up(&skip), 0, "{skip:?}");
    assert!((3..=4).contains(&gaps(&skip)), "{skip:?}");
    let all = down_for_three_slots("all");
    assert!((3..=4).contains(&caught_up(&all)), "{all:?}");
    assert_eq!(gaps(&all), 0, "{all:?}");
}
