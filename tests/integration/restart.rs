//! Restarts of the real daemon: missed slots are caught up, handled slots never run twice.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::DateTime;
use nix::sys::signal::Signal;

use crate::util::{Beatd, lines, signal, wait_exit, wait_for};

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
    let mut child = b.spawn_run(&[]);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    signal(&child, stop);
    wait_exit(&mut child, Duration::from_secs(10)).expect("exits");
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
