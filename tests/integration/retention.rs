//! `history = "failures"` and `"off"` with the real daemon: what `beatd history` shows, and a
//! report that still counts every run.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Beatd, history};

#[test]
fn history_failures_writes_changes_only_and_reports_still_count_every_run() {
    let b = Beatd::with_config(
        r#"
[scheduler]
history = "failures"

[jobs.quiet]
every = "1s"
action = "noop"

[jobs.loud]
every = "1s"
action = "noop"
history = "all"

[jobs.silent]
every = "1s"
action = "command"
command = "false"
history = "off"

[jobs.flaky]
every = "1s"
action = "command"
command = "sh -c 'test $(( $(date +%s) % 3 )) -ne 0'"

[jobs.weekly]
every = "1s"
offset = "500ms"
action = "report"
output_dir = "reports"
period = "1d"
history = "all"
"#,
    );
    let mut d = b.run(&[]);
    std::thread::sleep(Duration::from_millis(5600));
    d.stop();
    let log = b.log();
    let loud = history(&b, "loud");
    assert!(loud.len() >= 4, "{log}");
    // A job that never failed writes nothing: its successes are counted.
    assert!(history(&b, "quiet").is_empty(), "{log}");
    assert!(history(&b, "silent").is_empty(), "{log}");
    // Every written run of the flaky job is a failure, or the success after one.
    let mut flaky = history(&b, "flaky");
    flaky.reverse();
    assert!(flaky.iter().any(|r| r["outcome"] == "failure"), "{flaky:?}");
    assert_eq!(flaky[0]["outcome"], "failure", "{flaky:?}");
    for pair in flaky.windows(2) {
        assert!(!(pair[0]["outcome"] == "success" && pair[1]["outcome"] == "success"), "two successes: {flaky:?}");
    }
    // The last report counts the quiet job's runs as the loud one's: same schedule, same slots.
    let mut reports: Vec<_> = std::fs::read_dir(b.path("reports"))
        .expect("reports")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    reports.sort();
    assert!(reports.len() >= 3, "{log}");
    for report in &reports[1..] {
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(report).expect("read")).expect("json");
        let job = |name: &str| summary["jobs"].as_array().expect("jobs").iter().find(|j| j["job"] == name).cloned();
        let (quiet, loud) = (job("quiet").expect("quiet"), job("loud").expect("loud"));
        assert!(loud["runs"].as_u64().is_some_and(|n| n >= 1), "{summary}");
        assert_eq!(quiet["runs"], loud["runs"], "{summary}");
        assert_eq!(quiet["success_rate"], 100.0, "{summary}");
        assert!(job("silent").is_none(), "{summary}");
    }
}

/// A clean stop settles the journal's list of fires in flight. Left in place, the next start
/// checked those fires against the history, where `off` and `failures` jobs write no success,
/// took them for fires a crash had cut short, and sent their messages again (a duplicate
/// task for a worker) or wrote them as interrupted into a history that is off.
#[test]
fn a_clean_restart_sends_nothing_again_and_writes_nothing_when_history_is_off() {
    let redis = crate::util::RedisServer::start();
    let b = Beatd::with_config(&format!(
        r#"
[scheduler]
history = "off"

[brokers.main]
url = "{}"

[jobs.tick]
every = "1s"
action = "noop"

[jobs.send]
every = "1s"
action = "celery"
broker = "main"
queue = "work"
task = "tasks.record"
history = "failures"
"#,
        redis.url()
    ));
    let mut d = b.run(&[]);
    d.wait_started();
    std::thread::sleep(Duration::from_millis(2500));
    d.stop();
    d.start_again();
    d.wait_started();
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();
    let log = b.log();
    let ids = redis.lpushed("work").into_iter().map(|m| {
        let v: Value = serde_json::from_str(&m).expect("a kombu envelope");
        v["headers"]["id"].as_str().expect("a task id").to_string()
    });
    let ids = crate::util::once(ids, "a task sent again after the restart");
    assert!(ids.len() >= 3, "{ids:?}\n{log}");
    assert!(!log.contains("queued again"), "{log}");
    assert!(history(&b, "tick").is_empty(), "{log}");
    assert!(history(&b, "send").is_empty(), "{log}");

    // After a kill, the fires in flight are unsettled: a history that is off still gets no
    // `interrupted` row for them.
    d.start_again();
    d.wait_started();
    std::thread::sleep(Duration::from_millis(1500));
    d.kill();
    d.start_again();
    d.wait_started();
    d.stop();
    assert!(history(&b, "tick").is_empty(), "{}", b.log());
}
