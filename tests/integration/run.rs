//! `beatd run`: the daemon with real commands, real signals and a few seconds of real time.

use std::time::Duration;

use chrono::DateTime;
use nix::sys::signal::Signal;

use crate::util::{Beatd, lines, wait_for};

#[test]
fn a_one_second_command_job_writes_what_is_expected() {
    let b = Beatd::with_config(
        r#"
[jobs.tick]
every = "1s"
action = "command"
command = 'echo "$BEATD_JOB $BEATD_SCHEDULED_AT $BEATD_FIRE_ID $GREETING $(pwd)" >> fires.txt; echo "said hello"; echo "oops" >&2'
workdir = "work"
env = { GREETING = "hello" }
"#,
    );
    std::fs::create_dir(b.path("work")).expect("mkdir");
    let mut d = b.run(&[]);
    let fires = b.path("work/fires.txt");
    assert!(wait_for(Duration::from_secs(5), || lines(&fires).len() >= 3), "log:\n{}", b.log());
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5)).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", b.log());

    let fires = lines(&fires);
    let mut previous = None;
    for line in &fires {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 5, "{line}");
        assert_eq!(parts[0], "tick");
        let at = DateTime::parse_from_rfc3339(parts[1]).expect("RFC 3339 with offset");
        assert_eq!(at.timestamp_subsec_nanos(), 0, "slots are whole seconds: {line}");
        if let Some(p) = previous {
            assert_eq!(at.timestamp() - p, 1, "one fire per second, none doubled or lost");
        }
        previous = Some(at.timestamp());
        assert_eq!(uuid::Uuid::parse_str(parts[2]).map(|u| u.get_version_num()), Ok(5), "{line}");
        assert_eq!(parts[3], "hello");
        assert!(parts[4].ends_with("/work"), "{line}");
    }
    let log = b.log();
    assert!(log.contains("tick") && log.contains("said hello"), "stdout is logged with the job name:\n{log}");
    assert!(log.contains("oops"), "stderr is logged:\n{log}");
    assert!(log.contains("command exited with status 0"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colours when stderr is not a terminal:\n{log}");
}

#[test]
fn sigterm_lets_a_running_command_finish_within_the_grace_period() {
    let b = Beatd::with_config(
        r#"
[scheduler]
shutdown_grace = "10s"

[jobs.slow]
every = "1s"
action = "command"
command = "echo started >> runs.txt; sleep 1; echo finished >> runs.txt"
"#,
    );
    let mut d = b.run(&[]);
    let runs = b.path("runs.txt");
    assert!(wait_for(Duration::from_secs(5), || lines(&runs).contains(&"started".to_string())), "{}", b.log());
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(8)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", b.log());
    let runs = lines(&runs);
    let started = runs.iter().filter(|l| *l == "started").count();
    let finished = runs.iter().filter(|l| *l == "finished").count();
    assert_eq!(started, finished, "every started run finished: {runs:?}");
}

#[test]
fn commands_still_running_after_the_grace_period_are_killed() {
    let b = Beatd::with_config(
        r#"
[scheduler]
shutdown_grace = "1s"

[jobs.stuck]
every = "1s"
action = "command"
command = "echo $$ >> pids.txt; sleep 60 & wait"
"#,
    );
    let mut d = b.run(&[]);
    let pids = b.path("pids.txt");
    assert!(wait_for(Duration::from_secs(5), || !lines(&pids).is_empty()), "{}", b.log());
    d.signal(Signal::SIGINT);
    let status = d.wait_exit(Duration::from_secs(6)).expect("exits after the grace period");
    assert_eq!(status.code(), Some(0), "{}", b.log());
    assert!(b.log().contains("killing them"), "{}", b.log());
    // The shell and its `sleep` child are gone: the whole process group was killed.
    for pid in lines(&pids) {
        let pid: i32 = pid.parse().expect("pid");
        let gone = wait_for(Duration::from_secs(2), || {
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), None).is_err()
        });
        assert!(gone, "process group {pid} still alive");
    }
}

#[test]
fn run_refuses_an_invalid_config() {
    let b = Beatd::with_config("[jobs.a]\nevery = \"1m\"\n");
    let out = b.cmd(&["run", "-c", "beatd.toml"]).assert().code(1).get_output().stderr.clone();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "beatd.toml:1:7: job \"a\": missing key \"action\" (one of: command, noop, cleanup, http_check, tcp_check, report, celery, push, sql, sql_check)\n1 error\n"
    );
}
