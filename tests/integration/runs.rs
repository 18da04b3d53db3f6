//! Runs by fire id against the real binary: status and progress (`GET /api/runs/{id}`, the
//! `$BEATD_PROGRESS_FD` protocol, `beatd status`), and cancellation (`POST .../cancel`,
//! `beatd cancel`) of a command with children, of a queued run, and of what is not there.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Api, Beatd, Running, free_port, history, wait_for};

/// Never due by itself: these tests trigger their runs.
const NEVER: &str = "cron = \"0 0 1 1 *\"";

fn start(jobs: &str) -> (Beatd, Running, Api) {
    let port = free_port();
    let b =
        Beatd::with_config(&format!("[scheduler]\nmax_running = 1\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n{jobs}"));
    let d = b.run(&[]);
    let api = d.api();
    (b, d, api)
}

fn trigger(api: &Api, job: &str) -> String {
    let (status, body) = api.post(&format!("/api/jobs/{job}/run"));
    assert_eq!(status, 202, "{body}");
    body["fire_id"].as_str().expect("a fire id").to_string()
}

fn run(api: &Api, id: &str) -> Value {
    let (status, body) = api.get(&format!("/api/runs/{id}"));
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the run's field `key` is `value`; returns the run.
fn wait_run(api: &Api, id: &str, key: &str, value: &str, d: &Running) -> Value {
    let mut last = Value::Null;
    let ok = wait_for(Duration::from_secs(10), || {
        last = run(api, id);
        last[key] == value
    });
    assert!(ok, "run {id} never had {key} = {value}; last: {last}\n{}", d.log());
    last
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose: its process group was signalled and it has ended.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn a_cancel_stops_sleep_60_and_its_children_records_cancelled_and_does_not_retry() {
    let (b, d, api) = start(&format!(
        r#"
[jobs.slow]
{NEVER}
action = "command"
command = "sleep 60 & echo $! > children; sleep 60 & echo $! >> children; echo $$ >> children; wait"
retries = 3
retry_delay = "1s"
kill_grace = "2s"
"#
    ));
    let id = trigger(&api, "slow");
    let running = wait_run(&api, &id, "state", "running", &d);
    assert_eq!(running["job"], "slow");
    assert_eq!(running["attempt"], 1);
    assert!(running["started"].is_string() && running["finished"].is_null(), "{running}");
    let pids_file = b.path("children");
    assert!(
        wait_for(Duration::from_secs(5), || std::fs::read_to_string(&pids_file).is_ok_and(|s| s.lines().count() == 3))
    );
    let pids: Vec<i32> =
        std::fs::read_to_string(&pids_file).expect("pids").lines().map(|l| l.trim().parse().expect("pid")).collect();
    assert!(pids.iter().all(|&p| alive(p)), "the command and its children run: {pids:?}");

    let (status, body) = api.post(&format!("/api/runs/{id}/cancel"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["job"], "slow");
    let ended = wait_run(&api, &id, "state", "cancelled", &d);
    assert!(ended["error"].as_str().is_some_and(|e| e.starts_with("cancelled by an operator")), "{ended}");
    assert!(ended["finished"].is_string());
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p))),
        "a child outlived the cancel: {pids:?}"
    );

    // Not retried: one attempt, recorded as cancelled; a second cancel finds it ended.
    std::thread::sleep(Duration::from_millis(1500)); // longer than retry_backoff: a retry would have started
    assert_eq!(run(&api, &id)["attempt"], 1);
    let runs: Vec<Value> = history(&b, "slow").into_iter().filter(|r| r["fire_id"] == id.as_str()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["outcome"], "cancelled");
    let (status, body) = api.post(&format!("/api/runs/{id}/cancel"));
    assert_eq!(
        (status, body["error"].as_str().unwrap_or("")),
        (409, format!("run {id} has already ended: cancelled").as_str())
    );
    let (_, job) = api.get("/api/jobs/slow");
    assert_eq!(job["last_run"]["outcome"], "cancelled");
}

#[test]
fn a_queued_run_is_cancelled_before_it_starts_and_beatd_cancel_takes_a_job_name() {
    let (b, d, api) = start(&format!(
        r#"
[jobs.first]
{NEVER}
action = "command"
command = "sleep 60"

[jobs.second]
{NEVER}
action = "command"
command = "touch second-ran"
"#
    ));
    let first = trigger(&api, "first");
    wait_run(&api, &first, "state", "running", &d);
    // max_running = 1: the second waits for the first.
    let second = trigger(&api, "second");
    let queued = run(&api, &second);
    assert_eq!(queued["state"], "queued", "{queued}");
    let (_, active) = api.get("/api/runs");
    let states: Vec<(&str, &str)> = active
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| (r["job"].as_str().unwrap_or(""), r["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(states, [("first", "running"), ("second", "queued")]);

    let out = b.cmd(&["cancel", "-c", "beatd.toml", &second]).output().expect("beatd cancel");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ended = wait_run(&api, &second, "state", "cancelled", &d);
    assert_eq!(ended["attempt"], 0, "it never started: {ended}");
    assert!(ended["started"].is_null());

    // By name: every queued or running run of the job.
    let out = b.cmd(&["cancel", "-c", "beatd.toml", "first"]).output().expect("beatd cancel");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("cancelling first run {first}")));
    wait_run(&api, &first, "state", "cancelled", &d);
    assert!(!b.path("second-ran").exists(), "the cancelled queued run ran");

    let out = b.cmd(&["cancel", "-c", "beatd.toml", "first"]).output().expect("beatd cancel");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job \"first\" has no queued or running run"));
}

#[test]
fn a_command_reports_progress_through_its_descriptor_shown_by_the_api_and_beatd_status() {
    let (b, d, api) = start(&format!(
        r#"
[jobs.copy]
{NEVER}
action = "command"
command = """
echo "not a progress line" >&$BEATD_PROGRESS_FD
echo "PROGRESS=10 starting" >&$BEATD_PROGRESS_FD
echo "PROGRESS=60 copying files <b>" >&$BEATD_PROGRESS_FD
echo "PROGRESS=nonsense" >&$BEATD_PROGRESS_FD
touch reported
exec sleep 60
"""
kill_grace = "1s"
"#
    ));
    let id = trigger(&api, "copy");
    assert!(wait_for(Duration::from_secs(10), || b.path("reported").exists()), "{}", d.log());
    let mut last = Value::Null;
    let ok = wait_for(Duration::from_secs(5), || {
        last = run(&api, &id);
        last["progress"]["percent"] == 60
    });
    assert!(ok, "no progress: {last}");
    assert_eq!(last["progress"]["message"], "copying files <b>");
    assert_eq!(last["state"], "running");

    let out = b.cmd(&["status", "-c", "beatd.toml"]).output().expect("beatd status");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("no row for the run:\n{text}"));
    assert!(row.contains("copy") && row.contains("running") && row.ends_with(" 60% copying files <b>"), "{row}");

    let (status, _) = api.post(&format!("/api/runs/{id}/cancel"));
    assert_eq!(status, 202);
    let ended = wait_run(&api, &id, "state", "cancelled", &d);
    assert_eq!(ended["progress"]["percent"], 60, "the last report stays with the run");
}

#[test]
fn a_cleanup_reports_its_progress_and_a_finished_run_is_read_from_the_history_too() {
    let port = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n[jobs.tidy]\n{NEVER}\naction = \"cleanup\"\npath = \"old\"\nolder_than = \"1d\"\n"
    ));
    let old = b.path("old");
    std::fs::create_dir(&old).expect("mkdir");
    let ancient = std::time::SystemTime::now() - Duration::from_secs(10 * 86_400);
    for i in 0..20 {
        let f = std::fs::File::create(old.join(format!("f{i}"))).expect("file");
        f.set_modified(ancient).expect("mtime");
    }
    let mut d = b.run(&[]);
    let api = d.api();
    let id = trigger(&api, "tidy");
    let ended = wait_run(&api, &id, "state", "success", &d);
    assert_eq!(ended["details"]["files_deleted"], 20);
    assert_eq!(ended["progress"]["percent"], 100, "{ended}");
    assert_eq!(ended["progress"]["message"], "deleted 20 file(s), 0 byte(s)");

    // After a restart the run is no longer in memory: the history answers, without progress.
    d.stop();
    d.start_again();
    let api = d.api();
    let again = run(&api, &id);
    assert_eq!((again["job"].as_str(), again["state"].as_str()), (Some("tidy"), Some("success")), "{again}");
    assert_eq!(again["details"]["files_deleted"], 20);
    assert!(again["progress"].is_null());
}

#[test]
fn unknown_and_malformed_fire_ids_are_refused_with_json() {
    let (_b, _d, api) = start(&format!("[jobs.x]\n{NEVER}\naction = \"noop\"\n"));
    let unknown = "0b7e0d0a-1111-4222-8333-444455556666";
    let (status, body) = api.get(&format!("/api/runs/{unknown}"));
    assert_eq!((status, body["error"].as_str()), (404, Some(format!("no run with fire id {unknown}").as_str())));
    let (status, body) = api.post(&format!("/api/runs/{unknown}/cancel"));
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.get("/api/runs/not-a-uuid");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("UUID")));
    // A cancel needs the token like every mutation.
    let (status, _, _) = api.request("POST", &format!("/api/runs/{unknown}/cancel"), Some("wrong"));
    assert_eq!(status, 401);
    // An instant job's manual run is in the history at once.
    let id = trigger(&api, "x");
    assert!(wait_for(Duration::from_secs(5), || api.get(&format!("/api/runs/{id}")).0 == 200));
    assert_eq!(run(&api, &id)["state"], "success");
}

#[test]
fn a_cancel_while_a_failed_run_waits_to_retry_ends_it_cancelled_with_no_more_attempts() {
    let (b, d, api) = start(&format!(
        "[jobs.flaky]\n{NEVER}\naction = \"command\"\ncommand = \"echo x >> attempts; exit 1\"\nretries = 3\nretry_delay = \"30s\"\n"
    ));
    let id = trigger(&api, "flaky");
    // The first attempt failed; the run waits 30 s for its retry.
    assert!(wait_for(Duration::from_secs(10), || history(&b, "flaky").iter().any(|r| r["outcome"] == "failure")));
    assert_eq!(run(&api, &id)["state"], "running");
    let (status, _) = api.post(&format!("/api/runs/{id}/cancel"));
    assert_eq!(status, 202);
    let ended = wait_run(&api, &id, "state", "cancelled", &d);
    assert_eq!(ended["attempt"], 1, "{ended}");
    assert!(ended["error"].as_str().is_some_and(|e| e.starts_with("cancelled by an operator while waiting to retry")));
    assert_eq!(std::fs::read_to_string(b.path("attempts")).unwrap_or_default().lines().count(), 1, "retried");
    let outcomes: Vec<String> =
        history(&b, "flaky").iter().map(|r| r["outcome"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(outcomes, ["cancelled", "failure"], "newest first");
    let (_, job) = api.get("/api/jobs/flaky");
    assert_eq!(job["last_run"]["outcome"], "cancelled");
}
