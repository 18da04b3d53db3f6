//! Checks and notifications against real servers on 127.0.0.1, started by the tests.

use crate::util::CLOSED_PORT;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use beatd::clock::Clock;
use beatd::config::parse_str;
use beatd::fire::Fire;
use beatd::job::Job;
use beatd::job::RunOutcome;
use beatd::jobs::{Actions, Execute, RunContext, RunResult, Services};
use beatd::scheduler::Dispatch;
use beatd::scheduler::runner::Runner;
use beatd::state::history::{History, RunRecord};
use beatd::status::JobStatus;
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What the test server has seen.
#[derive(Clone, Default)]
pub(crate) struct Seen {
    pub(crate) hooks: Arc<Mutex<Vec<Value>>>,
    failing_hits: Arc<Mutex<u32>>,
}

/// Starts the test server; returns its base URL.
pub(crate) async fn server(seen: Seen) -> String {
    let hooks = seen.hooks.clone();
    let failing = seen.failing_hits.clone();
    let app = Router::new()
        .route("/up", get(|| async { "service ok" }))
        .route("/down", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "finally"
            }),
        )
        .route("/teapot", get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }))
        .route(
            "/secret",
            get(|h: HeaderMap| async move {
                if h.get("x-token").is_some_and(|v| v == "s3cret") { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
            }),
        )
        .route(
            "/hook",
            post(move |axum::Json(v): axum::Json<Value>| {
                let hooks = hooks.clone();
                async move {
                    hooks.lock().expect("lock").push(v);
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/hook-500",
            post(move || {
                let failing = failing.clone();
                async move {
                    *failing.lock().expect("lock") += 1;
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn job(toml: &str) -> Job {
    let config = parse_str(toml, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    config.jobs.into_iter().next().expect("one job")
}

fn services(notifiers_toml: &str) -> Arc<Services> {
    let config = parse_str(notifiers_toml, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let mut services = Services::new(Clock::System, "unused".into(), config.notifiers);
    services.notifications =
        services.notifications.with_backoff(vec![Duration::from_millis(50), Duration::from_millis(50)]);
    Arc::new(services)
}

async fn check(toml: &str) -> RunResult {
    let job = Arc::new(job(toml));
    let now = Utc::now();
    let fire = Fire::scheduled(job, JobStatus::detached(), now, now);
    let cx = RunContext {
        stop: CancellationToken::new(),
        kill: CancellationToken::new(),
        services: services(""),
        progress: Default::default(),
    };
    Actions.execute(&fire, &cx).await
}

fn http_job(url: &str, extra: &str) -> String {
    format!("[jobs.web]\nevery = \"1m\"\naction = \"http_check\"\nurl = \"{url}\"\n{extra}\n")
}

#[tokio::test]
async fn http_check_up_down_slow_wrong_status_and_wrong_body() {
    let base = server(Seen::default()).await;

    let up = check(&http_job(&format!("{base}/up"), "expect_body = \"ok\"")).await;
    assert_eq!(up.result, Ok(()));
    assert_eq!((up.details.up, up.details.status), (Some(true), Some(200)));
    assert!(up.details.latency_ms.is_some_and(|ms| ms >= 0.0));

    let down = check(&http_job(&format!("{base}/down"), "")).await;
    assert_eq!(down.details.up, Some(false));
    assert_eq!(down.result, Err(format!("GET {base}/down: unexpected status 503 Service Unavailable")));

    let slow = check(&http_job(&format!("{base}/slow"), "timeout = \"300ms\"")).await;
    assert_eq!(slow.details.up, Some(false));
    let err = slow.result.expect_err("times out");
    assert!(err.contains("timed out") || err.contains("operation timed out"), "{err}");
    assert!(slow.details.latency_ms.is_some_and(|ms| (250.0..2500.0).contains(&ms)), "{:?}", slow.details);

    let teapot = check(&http_job(&format!("{base}/teapot"), "")).await;
    assert_eq!(teapot.details.up, Some(false));
    let teapot_ok = check(&http_job(&format!("{base}/teapot"), "expect_status = [200, \"400-499\"]")).await;
    assert_eq!(teapot_ok.result, Ok(()));

    let body = check(&http_job(&format!("{base}/up"), "expect_body = \"all systems go\"")).await;
    assert_eq!(body.result, Err(format!("GET {base}/up: body does not contain \"all systems go\"")));
    assert_eq!((body.details.up, body.details.status), (Some(false), Some(200)));

    let no_token = check(&http_job(&format!("{base}/secret"), "")).await;
    assert_eq!(no_token.details.status, Some(401));
    let token = check(&http_job(&format!("{base}/secret"), "headers = { X-Token = \"s3cret\" }")).await;
    assert_eq!(token.result, Ok(()));
}

#[tokio::test]
async fn http_check_against_an_unresolvable_host_and_a_closed_port() {
    let dns = check(&http_job("http://no-such-host.invalid/", "")).await;
    assert_eq!(dns.details.up, Some(false));
    let err = dns.result.expect_err("fails");
    assert!(err.contains("no-such-host.invalid") && err.contains("dns error"), "{err}");

    let closed = CLOSED_PORT;
    let refused = check(&http_job(&format!("http://127.0.0.1:{closed}/"), "")).await;
    let err = refused.result.expect_err("fails");
    assert!(err.contains("Connection refused"), "{err}");
}

#[tokio::test]
async fn tcp_check_open_and_closed_ports() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let up =
        check(&format!("[jobs.db]\nevery = \"1m\"\naction = \"tcp_check\"\naddress = \"127.0.0.1:{open}\"\n")).await;
    assert_eq!((up.result, up.details.up), (Ok(()), Some(true)));

    let closed = CLOSED_PORT;
    let down = check(&format!(
        "[jobs.db]\nevery = \"1m\"\naction = \"tcp_check\"\naddress = \"127.0.0.1:{closed}\"\ntimeout = \"2s\"\n"
    ))
    .await;
    assert_eq!(down.details.up, Some(false));
    let err = down.result.expect_err("refused");
    assert!(err.starts_with(&format!("tcp 127.0.0.1:{closed}: ")) && err.contains("refused"), "{err}");
}

/// Dispatches `n` fires of `job` through a real runner, one after another, and returns what
/// was recorded.
pub(crate) async fn runs(job: Job, services: Arc<Services>, n: usize, between: impl Fn(usize)) -> Vec<RunRecord> {
    let (history, mut records) = History::collect();
    let runner = Runner::new(Actions, services, history, None);
    let job = Arc::new(job);
    let status = JobStatus::detached(); // one per job, as the board gives it
    let mut out = Vec::new();
    for i in 0..n {
        between(i);
        let now = Utc::now();
        runner.dispatch(Fire::scheduled(job.clone(), status.clone(), now, now));
        out.push(tokio::time::timeout(Duration::from_secs(10), records.recv()).await.expect("recorded").expect("open"));
    }
    runner.shutdown(Duration::from_secs(10)).await;
    out
}

#[tokio::test]
async fn checks_notify_on_transitions_as_json_and_slack() {
    let seen = Seen::default();
    let base = server(seen.clone()).await;
    // The check's URL flips between up and down; only changes are notified.
    let state = Arc::new(Mutex::new("up"));
    let flip_base = {
        let state = state.clone();
        let app =
            Router::new().route(
                "/",
                get(move || {
                    let state = state.clone();
                    async move {
                        if *state.lock().expect("lock") == "up" { StatusCode::OK } else { StatusCode::BAD_GATEWAY }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/")
    };
    let notifiers = format!(
        "[notifiers.ops]\nkind = \"webhook\"\nurl = \"{base}/hook\"\n[notifiers.chat]\nkind = \"webhook\"\nurl = \"{base}/hook\"\nformat = \"slack\"\n"
    );
    let sequence = ["up", "down", "down", "up", "up", "down"];
    let job_toml = format!("{notifiers}{}notify = \"ops\"\n", http_job(&flip_base, ""));
    let recorded = runs(job(&job_toml), services(&notifiers), sequence.len(), |i| {
        *state.lock().expect("lock") = sequence[i];
    })
    .await;
    let ups: Vec<Option<bool>> = recorded.iter().map(|r| r.details.up).collect();
    assert_eq!(ups, [Some(true), Some(false), Some(false), Some(true), Some(true), Some(false)]);
    let hooks = seen.hooks.lock().expect("lock").clone();
    let events: Vec<&str> = hooks.iter().map(|h| h["event"].as_str().unwrap_or("")).collect();
    assert_eq!(events, ["failure", "recovery", "failure"], "{hooks:#?}");
    assert_eq!(hooks[0]["job"], "web");
    assert_eq!(hooks[0]["text"], format!("web is down: GET {flip_base}: unexpected status 502 Bad Gateway"));
    assert_eq!(hooks[1]["text"], "web is up again");
    assert!(hooks[0]["fire_id"].as_str().is_some_and(|id| id.len() == 36));

    // The same through a Slack-format notifier: only {"text": ...}.
    seen.hooks.lock().expect("lock").clear();
    let job_toml = format!("{notifiers}{}notify = \"chat\"\nnotify_on = [\"recovery\"]\n", http_job(&flip_base, ""));
    let sequence = ["down", "up"];
    runs(job(&job_toml), services(&notifiers), 2, |i| *state.lock().expect("lock") = sequence[i]).await;
    let hooks = seen.hooks.lock().expect("lock").clone();
    assert_eq!(hooks, [serde_json::json!({ "text": "web is up again" })]);
}

#[tokio::test]
async fn a_webhook_that_answers_500_is_retried_and_never_blocks_the_job() {
    let seen = Seen::default();
    let base = server(seen.clone()).await;
    let notifiers = format!("[notifiers.broken]\nkind = \"webhook\"\nurl = \"{base}/hook-500\"\n");
    let job_toml = format!(
        "{notifiers}[jobs.fails]\nevery = \"1m\"\naction = \"command\"\ncommand = \"exit 3\"\nnotify = \"broken\"\n"
    );
    let started = std::time::Instant::now();
    let recorded = runs(job(&job_toml), services(&notifiers), 1, |_| {}).await;
    assert_eq!(recorded[0].outcome, RunOutcome::Failure);
    assert_eq!(recorded[0].exit_code, Some(3));
    assert_eq!(recorded[0].error.as_deref(), Some("exited with status 3"));
    // One try and two retries (the test's backoff), then given up.
    assert_eq!(*seen.failing_hits.lock().expect("lock"), 3);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_report_posts_its_summary_to_the_notifier() {
    let seen = Seen::default();
    let base = server(seen.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    drop(beatd::state::open(&state).expect("state"));
    let notifiers = format!("[notifiers.team]\nkind = \"webhook\"\nurl = \"{base}/hook\"\n");
    let toml = format!(
        "{notifiers}[jobs.weekly]\ncron = \"0 9 * * 1\"\naction = \"report\"\noutput_dir = \"{}\"\nnotify = \"team\"\n",
        dir.path().join("reports").display()
    );
    let config = parse_str(&toml, Path::new("t.toml"), Path::new(".")).expect("valid");
    let services = Arc::new(Services::new(Clock::System, state, config.notifiers));
    let recorded = runs(config.jobs.into_iter().next().expect("job"), services, 1, |_| {}).await;
    assert_eq!(recorded[0].outcome, RunOutcome::Success, "{:?}", recorded[0].error);
    let hooks = seen.hooks.lock().expect("lock").clone();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["event"], "report");
    assert!(hooks[0]["text"].as_str().is_some_and(|t| t.starts_with("beatd report ")), "{hooks:?}");
    assert!(hooks[0]["report"]["jobs"].is_array(), "{hooks:?}");
}
