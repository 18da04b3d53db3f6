//! Built-in jobs and the execution policy through the real daemon, read back with
//! `beatd history`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::{Beatd, CLOSED_PORT, history, lines, wait_for};

/// A webhook receiver that always answers 500, counting the attempts.
fn failing_webhook() -> (String, Arc<Mutex<u32>>) {
    let hits = Arc::new(Mutex::new(0));
    let counter = hits.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let app = Router::new().route(
                "/",
                post(move || {
                    let counter = counter.clone();
                    async move {
                        *counter.lock().expect("lock") += 1;
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    (format!("http://{addr}/"), hits)
}

#[test]
fn bad_input_at_run_time_is_a_recorded_failure_and_the_daemon_keeps_running() {
    let (hook, hits) = failing_webhook();
    // A port nothing listens on: refused at once. (A name that does not resolve was used
    // before, but on a loaded machine its lookup sometimes outlasted the check's timeout.)
    let closed = CLOSED_PORT;
    let b = Beatd::with_config(&format!(
        r#"
[notifiers.pager]
kind = "webhook"
url = "{hook}"

[jobs.clean-missing]
every = "1s"
action = "cleanup"
path = "var/not-there"
older_than = "1d"

[jobs.web-nowhere]
every = "1s"
action = "http_check"
url = "http://127.0.0.1:{closed}/health"
timeout = "2s"

[jobs.alerting]
every = "1s"
action = "command"
command = "exit 4"
notify = "pager"

[jobs.heartbeat]
every = "1s"
action = "noop"
"#
    ));
    let mut d = b.run(&[]);
    let runs = |job: &str| {
        let out = b.cmd(&["history", "-c", "beatd.toml", "--job", job, "--json"]).output().expect("history");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert!(
        wait_for(Duration::from_secs(8), || ["clean-missing", "web-nowhere", "alerting"].iter().all(|j| runs(j) >= 2)),
        "{}",
        b.log()
    );
    assert!(wait_for(Duration::from_secs(5), || *hits.lock().expect("lock") >= 1), "the webhook was tried");
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", b.log());

    // Under load a run may outlast its one-second period and the next fire is then skipped by
    // the overlap policy; a skip is a row too. Every row that is not such a skip must be the
    // failure.
    let ran = |job: &str| -> Vec<serde_json::Value> {
        let rows = history(&b, job);
        let (skipped, ran): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r["outcome"] == "skipped");
        for r in &skipped {
            assert!(r["error"].as_str().is_some_and(|e| e.contains("overlap")), "{job}: {r:#}");
        }
        assert!(!ran.is_empty(), "{job}: {ran:#?}");
        ran
    };
    let clean = ran("clean-missing");
    assert!(clean.iter().all(|r| r["outcome"] == "failure"), "{clean:#?}");
    // Named as it is opened: absolute, one component at a time from "/".
    let missing = b.path("var/not-there");
    assert_eq!(clean[0]["error"], format!("{} does not exist", missing.display()));

    let web = ran("web-nowhere");
    assert!(web.iter().all(|r| r["outcome"] == "failure" && r["details"]["up"] == false), "{web:#?}");
    let err = web[0]["error"].as_str().unwrap_or("");
    assert!(
        err.starts_with(&format!("GET http://127.0.0.1:{closed}/health: ")) && err.contains("Connection refused"),
        "{err}"
    );

    let alerting = ran("alerting");
    assert!(alerting.iter().all(|r| r["outcome"] == "failure" && r["exit_code"] == 4), "{alerting:#?}");
    let log = b.log();
    assert!(log.contains("notification attempt 1/6 failed (answered 500 Internal Server Error)"), "{log}");
    assert!(log.contains("web-nowhere") && log.contains("is down"), "{log}");
    // A down check is logged once, not at every run.
    assert_eq!(log.matches("is down").count(), 1, "{log}");
    assert!(history(&b, "heartbeat").len() >= 2, "the other jobs kept running");
}

#[test]
fn a_timeout_kills_the_command_with_its_children() {
    let b = Beatd::with_config(
        r#"
[jobs.stuck]
every = "1s"
action = "command"
command = "echo $$ >> groups.txt; sleep 60 & sleep 60"
timeout = "1s"
kill_grace = "500ms"
"#,
    );
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(8), || history_count(&b, "stuck", "timeout") >= 1), "{}", b.log());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0), "{}", b.log());
    let runs = history(&b, "stuck");
    let timeout = runs.iter().find(|r| r["outcome"] == "timeout").expect("a timeout");
    assert_eq!(timeout["error"], "timed out after 1s");
    // Every process group the job started is gone: the shell and both sleeps.
    for pgid in lines(&b.path("groups.txt")) {
        let pgid = nix::unistd::Pid::from_raw(pgid.parse().expect("pid"));
        assert!(
            wait_for(Duration::from_secs(2), || nix::sys::signal::killpg(pgid, None).is_err()),
            "group {pgid} survived"
        );
    }
}

fn history_count(b: &Beatd, job: &str, outcome: &str) -> usize {
    let out = b.cmd(&["history", "-c", "beatd.toml", "--job", job, "--json", "-n", "1000"]).output().expect("history");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&format!("\"outcome\":\"{outcome}\""))).count()
}

#[test]
fn history_prints_a_table_and_rejects_unknown_jobs() {
    let b = Beatd::with_config("[jobs.tick]\nevery = \"1s\"\naction = \"command\"\ncommand = \"true\"\n");
    b.cmd(&["history", "-c", "beatd.toml"]).assert().code(1).stderr(predicate_has("no state database at"));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || history_count(&b, "tick", "success") >= 1), "{}", b.log());
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).expect("exits");
    let out = b.cmd(&["history", "-c", "beatd.toml"]).assert().success().get_output().stdout.clone();
    let text = String::from_utf8_lossy(&out);
    let mut rows = text.lines();
    assert!(rows.next().is_some_and(|h| h.starts_with("SCHEDULED") && h.contains("OUTCOME")), "{text}");
    assert!(rows.next().is_some_and(|r| r.contains(" tick ") && r.contains("success")), "{text}");
    b.cmd(&["history", "-c", "beatd.toml", "--job", "tock"])
        .assert()
        .code(1)
        .stderr("error: no job \"tock\" in beatd.toml (did you mean \"tick\"?)\n");
}

fn predicate_has(s: &'static str) -> impl predicates::Predicate<[u8]> {
    predicates::function::function(move |out: &[u8]| String::from_utf8_lossy(out).contains(s))
}

#[test]
fn next_shows_the_jittered_run_time_and_its_slot() {
    let b = Beatd::with_config(
        "[jobs.spread]\ncron = \"0 * * * *\"\ntimezone = \"UTC\"\njitter = \"10m\"\naction = \"noop\"\n",
    );
    let out = b
        .cmd(&["next", "-c", "beatd.toml", "--from", "2026-11-23T00:30:00Z", "-n", "3", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let fires: Vec<Value> =
        String::from_utf8_lossy(&out).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(fires.len(), 3);
    for (i, f) in fires.iter().enumerate() {
        assert_eq!(f["slot"], format!("2026-11-23T0{}:00:00+00:00", i + 1));
        let at = chrono::DateTime::parse_from_rfc3339(f["at"].as_str().expect("at")).expect("rfc3339");
        let slot = chrono::DateTime::parse_from_rfc3339(f["slot"].as_str().expect("slot")).expect("rfc3339");
        assert!(at >= slot && at - slot < chrono::Duration::minutes(10));
    }
    // Stable: the same listing every time (and on every replica).
    let again = b
        .cmd(&["next", "-c", "beatd.toml", "--from", "2026-11-23T00:30:00Z", "-n", "3", "--json"])
        .output()
        .expect("run");
    assert_eq!(again.stdout, out);
}

#[test]
fn commands_run_as_another_user_only_when_beatd_is_root() {
    let b = Beatd::with_config(
        "[jobs.whoami]\nevery = \"1s\"\naction = \"command\"\ncommand = \"id -u > uid.txt\"\nuser = \"nobody\"\n",
    );
    std::fs::set_permissions(b.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let mut d = b.run(&[]);
    let root = nix::unistd::Uid::effective().is_root();
    let outcome = if root { "success" } else { "failure" };
    assert!(wait_for(Duration::from_secs(5), || history_count(&b, "whoami", outcome) >= 1), "{}", b.log());
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).expect("exits");
    if root {
        let nobody = nix::unistd::User::from_name("nobody").expect("lookup").expect("nobody exists");
        assert_eq!(lines(&b.path("uid.txt")), [nobody.uid.to_string()]);
    } else {
        assert_eq!(history(&b, "whoami")[0]["error"], "\"user\" and \"group\" need beatd to run as root");
    }
}

#[test]
fn output_beyond_the_limit_is_read_but_not_logged() {
    let b = Beatd::with_config(
        "[jobs.chatty]\nevery = \"1s\"\naction = \"command\"\ncommand = \"seq 1 1000; echo done > done.txt\"\noutput_limit = 40\n",
    );
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || history_count(&b, "chatty", "success") >= 1), "{}", b.log());
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).expect("exits");
    let log = b.log();
    // "1\n" .. "9\n" is 18 bytes, "10\n" .. "16\n" 21 more: 39 of the 40 allowed.
    assert!(log.contains(" 16 job=chatty"), "{log}");
    assert!(!log.contains(" 17 job=chatty"), "{log}");
    assert!(log.contains("output truncated:"), "{log}");
}
