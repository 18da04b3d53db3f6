//! Reloading the running daemon: on SIGHUP and with `--watch`; diffs applied, invalid
//! configs kept out, and no fire of an unchanged job lost however often it happens. The
//! daemon runs in-process on paused time, except where a real signal, a real running child or
//! real file events are the point.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::DateTime;
use nix::sys::signal::Signal;

use crate::inproc::Sim;
use crate::util::{Beatd, free_port, lines, wait_for};

/// Slot (Unix seconds) -> how many times it ran, from a job's own log of BEATD_SCHEDULED_AT.
fn slots(b: &Beatd, file: &str) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for l in lines(&b.path(file)) {
        *seen.entry(DateTime::parse_from_rfc3339(&l).expect("rfc3339").timestamp()).or_default() += 1;
    }
    seen
}

/// Asserts every slot from the first to the last ran exactly once.
fn each_once(seen: &BTreeMap<i64, usize>, log: &str) {
    let (first, last) = (*seen.keys().next().expect("runs"), *seen.keys().last().expect("runs"));
    for t in first..=last {
        assert_eq!(seen.get(&t), Some(&1), "slot {t} ran {:?} times: {seen:?}\n{log}", seen.get(&t));
    }
}

const KEEP: &str =
    "[jobs.keep]\nevery = \"1s\"\naction = \"command\"\ncommand = 'echo \"$BEATD_SCHEDULED_AT\" >> keep.txt'\n";

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn a_valid_reload_is_applied_as_a_diff_and_logged_job_by_job() {
    let b = Beatd::with_config(&format!(
        "{KEEP}\n[jobs.change]\nevery = \"1h\"\naction = \"noop\"\n\n[jobs.drop]\ncron = \"@reboot\"\naction = \"command\"\n\
         command = \"sleep 2; echo finished > drop.txt\"\n"
    ));
    let mut d = b.run(&[]);
    d.wait_started();
    std::thread::sleep(Duration::from_millis(1200));
    // `keep` written differently but the same; `change` rescheduled; `drop` gone; `add` new.
    b.write(
        "beatd.toml",
        "[jobs.add]\nevery = \"1h\"\naction = \"noop\"\n\n[jobs.change]\nevery = \"2h\"\naction = \"noop\"\n\n\
         [jobs]\nkeep = { command = 'echo \"$BEATD_SCHEDULED_AT\" >> keep.txt', action = \"command\", every = \"1s\" }\n",
    );
    d.signal(Signal::SIGHUP);
    d.wait_for_log("reloaded: ", Duration::from_secs(5));
    // The removed job's run, going since the start, was left to finish.
    assert!(!b.path("drop.txt").exists(), "the run ended before the reload: the test shows nothing");
    assert!(wait_for(Duration::from_secs(3), || b.path("drop.txt").exists()), "{}", b.log());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    let log = b.log();
    for line in [
        "SIGHUP: reloading ",
        "reload: added job=add",
        "reload: removed; fires no more (a running instance finishes) job=drop",
        "reload: changed, schedule too: next fire computed from now job=change",
        "reload: unchanged job=keep",
        "reloaded: 1 added, 1 removed, 1 changed, 1 unchanged",
    ] {
        assert!(log.contains(line), "no {line:?} in\n{log}");
    }
    each_once(&slots(&b, "keep.txt"), &log);
}

/// `keep` as a noop, for the in-process daemon on paused time (see `inproc`).
const KEEP_NOOP: &str = "[jobs.keep]\nevery = \"1s\"\naction = \"noop\"\n";

/// Slot (Unix seconds) -> how many times it ran, from the history of `job`.
fn slots_in_history(d: &Sim, job: &str) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for run in d.history(job) {
        *seen.entry(run.scheduled_at.timestamp()).or_default() += 1;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn an_invalid_config_is_kept_out_and_reported_until_fixed() {
    let port = free_port();
    let api = format!("[api]\nlisten = \"127.0.0.1:{port}\"\n\n");
    let mut d = Sim::start(Beatd::with_config(&format!("{api}{KEEP_NOOP}"))).await;
    d.advance(Duration::from_millis(1500)).await;
    // Three errors, two in a job that would otherwise replace `keep`.
    d.b.write("beatd.toml", &format!("{api}[jobs.keep]\nevery = \"1 fortnight\"\naction = \"command\"\n[jobs.x]\ncron = \"61 * * * *\"\naction = \"noop\"\n"));
    assert!(!d.reload().await, "an invalid config is not applied");
    let log = d.log();
    // The daemon was given the config's full path (the binary's tests give it a relative one).
    let file = d.b.config().display().to_string();
    for error in [
        format!("reload: {file}:4:7: job \"keep\": missing key \"command\""),
        format!("reload: {file}:5:9: job \"keep\": invalid duration \"1 fortnight\" for \"every\""),
        format!("reload: {file}:8:9: job \"x\": invalid cron expression \"61 * * * *\""),
    ] {
        assert!(log.contains(&error), "no {error:?} in\n{log}");
    }
    assert!(log.contains("reload failed: 3 errors in the config; the running schedule is unchanged"), "{log}");
    let (status, health) = d.get("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")), "{health}");
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().expect("text").to_string();
    assert!(metrics.contains("beatd_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    let (_, jobs) = d.get("/api/jobs").await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "the old jobs still run: {jobs}");

    // Fixed: healthy again.
    d.b.write("beatd.toml", &format!("{api}{KEEP_NOOP}"));
    assert!(d.reload().await, "{}", d.log());
    assert!(d.log().contains("reloaded: "), "{}", d.log());
    let (_, health) = d.get("/healthz").await;
    assert_eq!(health["status"], "ok");
    d.advance(Duration::from_millis(3100)).await;
    d.stop().await;
    let seen = slots_in_history(&d, "keep");
    assert!(seen.len() >= 4, "{seen:?}");
    each_once(&seen, &d.log());
}

#[tokio::test(start_paused = true)]
async fn a_hundred_alternating_reloads_lose_no_fire_of_an_unchanged_job() {
    // `keep` never changes; `other` changes at every valid reload, so each one applies a diff.
    let valid = |i: usize| format!("{KEEP_NOOP}\n[jobs.other]\nevery = \"{}s\"\naction = \"noop\"\n", 2 + i % 7);
    let invalid = format!("{KEEP_NOOP}\n[jobs.other]\nevery = \"soon\"\naction = \"noop\"\n");
    let mut d = Sim::start(Beatd::with_config(&valid(0))).await;
    for i in 0..100 {
        let text = if i % 2 == 0 { valid(i + 1) } else { invalid.clone() };
        d.b.write("beatd.toml", &text);
        assert_eq!(d.reload().await, i % 2 == 0, "reload {i}:\n{}", d.log());
        // Reloads land at every point of a second: before, at and after `keep`'s slots.
        d.advance(Duration::from_millis(330)).await;
    }
    d.advance(Duration::from_millis(1100)).await;
    d.stop().await;
    let log = d.log();
    assert_eq!((count(&log, "reloaded: "), count(&log, "reload failed: ")), (50, 50), "{log}");
    let seen = slots_in_history(&d, "keep");
    assert!(seen.len() >= 30, "{seen:?}");
    each_once(&seen, &log);
}

#[test]
fn watch_reloads_when_a_drop_in_appears_or_changes() {
    let b = Beatd::with_config(&format!("[scheduler]\ninclude = [\"conf.d/*.toml\"]\n\n{KEEP}"));
    std::fs::create_dir(b.path("conf.d")).expect("conf.d");
    let mut d = b.run(&["--watch"]);
    d.wait_for_log("watching ", Duration::from_secs(5));
    b.write("conf.d/team.toml", "[jobs.team]\nevery = \"1h\"\naction = \"noop\"\n");
    d.wait_for_log("reload: added job=team", Duration::from_secs(5));
    // A broken save is kept out; the next good one goes in.
    b.write("conf.d/team.toml", "[jobs.team]\nevery = \"1h\"\naction = \"nope\"\n");
    d.wait_for_log("reload failed", Duration::from_secs(5));
    assert!(b.log().contains("conf.d/team.toml:3:10: job \"team\": unknown action \"nope\""), "{}", b.log());
    b.write("conf.d/team.toml", "[jobs.team]\nevery = \"2h\"\naction = \"noop\"\n");
    assert!(
        wait_for(Duration::from_secs(5), || b
            .log()
            .contains("reload: changed, schedule too: next fire computed from now job=team")),
        "{}",
        b.log()
    );
    // A file the include does not match is not a reason to reload.
    let reloads = count(&b.log(), "a config file changed: reloading");
    std::fs::write(b.path("conf.d/README"), "drop *.toml files here").expect("write");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(count(&b.log(), "a config file changed: reloading"), reloads, "{}", b.log());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    assert_eq!(reloads, 3, "{}", b.log());
}
