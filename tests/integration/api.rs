//! The HTTP API and the control commands against a running daemon: in-process on paused time
//! where the schedule is the point, over real HTTP to the binary where the client is.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::inproc::{Sim, eventually};
use crate::util::{Api, Beatd, Running, free_port, wait_for};

const JOBS: &str = r#"
[jobs.tick]
every = "1s"
action = "noop"

[jobs.cmd]
every = "1s"
action = "command"
command = "true"

[jobs.off]
every = "1s"
action = "noop"
enabled = false
"#;

/// A daemon with an API on a free port, `api_extra` in its `[api]`, and `jobs`.
fn start(api_extra: &str, jobs: &str) -> (Beatd, Running, Api) {
    let port = free_port();
    let b = Beatd::with_config(&format!("[api]\nlisten = \"127.0.0.1:{port}\"\n{api_extra}\n{jobs}"));
    let d = b.run(&[]);
    let api = d.api();
    (b, d, api)
}

fn metrics(api: &Api) -> prometheus_parse::Scrape {
    let (status, body) = api.get("/metrics");
    assert_eq!(status, 200);
    scrape(&body)
}

/// The value of the sample `name` with exactly these labels.
fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| {
            x.metric == name
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
                && x.labels.iter().count() == labels.len()
        })
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            _ => f64::NAN,
        })
}

/// [`JOBS`] with `cmd` a noop too, for the in-process daemon on paused time (see `inproc`).
fn noop_jobs() -> String {
    let jobs = JOBS.replace("action = \"command\"\ncommand = \"true\"", "action = \"noop\"");
    assert!(!jobs.contains("\"command\""), "a real child process would let paused time run ahead");
    jobs
}

fn scrape(body: &Value) -> prometheus_parse::Scrape {
    let text = body.as_str().expect("text").to_string();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition format")
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_with_the_token_beatd_made() {
    let port = free_port();
    // The zone is the scheduler's, not this machine's: the test runs in-process, without TZ=UTC.
    let b = Beatd::with_config(&format!(
        "[scheduler]\ntimezone = \"UTC\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n{}",
        noop_jobs()
    ));
    let mut d = Sim::start(b).await;
    // Mutations need the token even on loopback: any local account can reach loopback.
    let token = std::fs::metadata(d.b.path("state/api-token")).expect("made at the first start");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&token.permissions()) & 0o777, 0o600);
    assert_eq!(d.request("POST", "/api/jobs/cmd/run", None).await.0, 401);
    assert_eq!(d.get("/healthz").await, (200, serde_json::json!({ "status": "ok" })));

    let (status, jobs) = d.get("/api/jobs").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = jobs.as_array().expect("list").iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(names, ["tick", "cmd", "off"]);
    let off = &jobs[2];
    assert_eq!((off["enabled"].as_bool(), off["next_fire"].is_null()), (Some(false), true));
    assert_eq!((jobs[0]["action"].as_str(), jobs[0]["schedule"].as_str()), (Some("noop"), Some("every 1s")));
    assert_eq!(jobs[0]["timezone"], "UTC");

    d.advance(Duration::from_millis(2500)).await;
    assert!(eventually(|| async { d.get("/api/jobs/cmd").await.1["last_run"]["outcome"] == "success" }).await);
    let (status, cmd) = d.get("/api/jobs/cmd").await;
    assert_eq!(status, 200);
    assert!(cmd["next_fire"].as_str().is_some_and(|n| n.ends_with("+00:00")), "{cmd}");
    assert_eq!(cmd["paused"], false);

    assert_eq!(d.get("/api/jobs/nope").await, (404, serde_json::json!({ "error": "no job \"nope\"" })));
    assert_eq!(
        d.get("/api/jobs/cmd/runs?limit=lots").await,
        (400, serde_json::json!({ "error": "limit must be a whole number from 1 to 1000" }))
    );
    assert_eq!(d.get("/api/jobs/cmd/runs?limit=0").await.0, 400);
    assert_eq!(d.get("/api/jobs/nope/runs").await.0, 404);
    assert!(
        eventually(|| async { d.get("/api/jobs/cmd/runs?limit=2").await.1.as_array().is_some_and(|r| r.len() == 2) })
            .await
    );

    // Run now: a fire id, and that run in the history.
    let (status, body) = d.post("/api/jobs/cmd/run").await;
    assert_eq!(status, 202);
    let id = body["fire_id"].as_str().expect("fire id").to_string();
    let recorded = eventually(|| async {
        let (_, runs) = d.get("/api/jobs/cmd/runs?limit=50").await;
        runs.as_array().is_some_and(|r| r.iter().any(|x| x["fire_id"] == id.as_str()))
    });
    assert!(recorded.await, "the manual run is recorded with its id");
    assert_eq!(d.post("/api/jobs/off/run").await.0, 409);
    assert_eq!(d.post("/api/jobs/nope/run").await.0, 404);

    // Pause: no more runs for a simulated minute, and still paused after a restart.
    let (status, body) = d.post("/api/jobs/tick/pause").await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(true)));
    let fired =
        |body: Value| sample(&scrape(&body), "beatd_fires_total", &[("job_name", "tick"), ("outcome", "success")]);
    let before = fired(d.get("/metrics").await.1);
    d.advance(Duration::from_secs(60)).await;
    let after = fired(d.get("/metrics").await.1);
    assert!(before.is_some_and(|n| n >= 2.0), "{before:?}");
    assert_eq!(before, after, "a paused job does not run");
    d.restart().await;
    assert_eq!(d.get("/api/jobs/tick").await.1["paused"], true, "paused survives a restart");
    let (status, body) = d.post("/api/jobs/tick/resume").await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(false)));
    d.advance(Duration::from_millis(1500)).await;
    assert!(eventually(|| async { d.get("/api/jobs/tick").await.1["last_run"]["outcome"] == "success" }).await);
    d.stop().await;
}

#[test]
fn mutating_endpoints_need_the_token_and_the_cli_uses_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("write token");
    let (b, _d, api) = start(&format!("token_file = \"{}\"", token_file.display()), JOBS);

    let (status, body, headers) = api.request("POST", "/api/jobs/cmd/run", None);
    assert_eq!((status, body), (401, serde_json::json!({ "error": "missing or wrong bearer token" })));
    assert_eq!(headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    assert_eq!(api.request("POST", "/api/jobs/cmd/pause", Some("wrong")).0, 401);
    assert_eq!(api.request("POST", "/api/jobs/cmd/run", Some("s3cret-token")).0, 202);
    assert_eq!(api.get("/api/jobs").0, 200, "reads need no token on loopback");
    let warning = format!("the API token {} can be read by other users (mode 0644)", token_file.display());
    assert!(b.log().contains(&warning), "{}", b.log());

    let cli = |args: &[&str]| b.cmd(&[args, &["-c", "beatd.toml"]].concat()).output().expect("run beatd");
    let out = cli(&["trigger", "cmd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("triggered cmd: fire id "));
    assert_eq!(String::from_utf8_lossy(&cli(&["pause", "tick"]).stdout), "paused tick\n");
    let status = String::from_utf8_lossy(&cli(&["status"]).stdout).into_owned();
    let rows: Vec<&str> = status.lines().collect();
    assert!(rows[0].starts_with("JOB") && rows[0].contains("NEXT") && rows[0].contains("RUNNING"), "{status}");
    assert!(rows[1].starts_with("tick") && rows[1].contains("paused"), "{status}");
    assert!(rows[3].starts_with("off") && rows[3].contains("disabled"), "{status}");
    let json: Value = serde_json::from_slice(&cli(&["status", "--json"]).stdout).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    assert_eq!(String::from_utf8_lossy(&cli(&["resume", "tick"]).stdout), "resumed tick\n");
    let missing = cli(&["trigger", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&missing.stderr), "error: no job \"nope\"\n");
}

#[test]
fn the_cli_says_when_it_cannot_reach_the_daemon() {
    let port = free_port();
    let b = Beatd::with_config(&format!("[api]\nlisten = \"127.0.0.1:{port}\"\n{JOBS}"));
    let out = b.cmd(&["status", "-c", "beatd.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: cannot reach beatd at http://127.0.0.1:{port}: "))
            && err.contains("(is it running?)"),
        "{err}"
    );
    let none = Beatd::with_config(JOBS);
    none.cmd(&["pause", "tick", "-c", "beatd.toml"])
        .assert()
        .code(1)
        .stderr("error: beatd.toml has no [api] section: these commands talk to the running daemon's HTTP API\n");
}

#[test]
fn api_settings_are_checked() {
    // Beyond loopback is fine: mutations need a token whatever the address.
    let b = Beatd::with_config("[api]\nlisten = \"0.0.0.0:8089\"\n");
    b.cmd(&["check", "-c", "beatd.toml"]).assert().success();
    let bad = Beatd::with_config("[api]\nlisten = \"localhost\"\ntoken_file = \"missing\"\n");
    let out = bad.cmd(&["check", "-c", "beatd.toml"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2:10: api: \"listen\" must be an address and port such as 127.0.0.1:8089, or unix:/run/beatd/api.sock, not \"localhost\""),
        "{err}"
    );
    assert!(err.contains("3:14: api: cannot read token_file"), "{err}");
}

#[test]
fn metrics_parse_and_lateness_counts_equal_fires() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let jobs = format!("{JOBS}\n[jobs.db]\nevery = \"1s\"\naction = \"tcp_check\"\naddress = \"127.0.0.1:{port}\"\n");
    let (_b, _d, api) = start("", &jobs);
    assert!(wait_for(Duration::from_secs(6), || {
        let s = metrics(&api);
        sample(&s, "beatd_fires_total", &[("job_name", "db"), ("outcome", "success")]).is_some_and(|v| v >= 2.0)
            && sample(&s, "beatd_fires_total", &[("job_name", "cmd"), ("outcome", "success")]).is_some_and(|v| v >= 2.0)
    }));
    let s = metrics(&api);
    let names: std::collections::BTreeSet<&str> = s.samples.iter().map(|x| x.metric.as_str()).collect();
    for want in [
        "beatd_jobs",
        "beatd_fires_total",
        "beatd_fire_lateness_seconds",
        "beatd_job_duration_seconds",
        "beatd_jobs_running",
        "beatd_next_fire_timestamp_seconds",
        "beatd_last_success_timestamp_seconds",
        "beatd_check_up",
        "beatd_outbox_messages",
        "beatd_config_reloads_total",
        "beatd_loop_iterations_total",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    assert_eq!(sample(&s, "beatd_jobs", &[]), Some(4.0));
    assert_eq!(sample(&s, "beatd_check_up", &[("job_name", "db")]), Some(1.0));
    assert!(
        sample(&s, "beatd_next_fire_timestamp_seconds", &[("job_name", "off")]).is_none(),
        "disabled: no next fire"
    );
    let lateness = s.samples.iter().find(|x| x.metric == "beatd_fire_lateness_seconds").expect("histogram");
    let prometheus_parse::Value::Histogram(buckets) = &lateness.value else { panic!("not a histogram") };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds.first(), Some(&0.0001));
    assert!(bounds.contains(&10.0));

    // At a quiet moment (jobs paused, runs finished), every scheduled fire has one lateness
    // sample and one outcome.
    for job in ["tick", "cmd", "db"] {
        assert_eq!(api.post(&format!("/api/jobs/{job}/pause")).0, 200);
    }
    let equal = wait_for(Duration::from_secs(4), || {
        let s = metrics(&api);
        // The parser folds _bucket, _count and _sum into one histogram sample.
        let fired = sample(&s, "beatd_fire_lateness_seconds", &[]).unwrap_or(-1.0);
        let outcomes: f64 = s
            .samples
            .iter()
            .filter(|x| x.metric == "beatd_fires_total")
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .sum();
        let running = sample(&s, "beatd_jobs_running", &[("job_name", "cmd")]).unwrap_or(1.0);
        running == 0.0 && fired == outcomes && fired > 0.0
    });
    assert!(equal, "lateness count equals fires");
}

#[test]
fn per_job_series_can_be_switched_off() {
    let (_b, _d, api) = start("per_job_metrics = false", JOBS);
    assert!(wait_for(Duration::from_secs(5), || {
        sample(&metrics(&api), "beatd_fires_total", &[("outcome", "success")]).is_some_and(|v| v >= 2.0)
    }));
    let s = metrics(&api);
    assert!(s.samples.iter().all(|x| x.labels.get("job_name").is_none()), "no job label anywhere");
    assert!(sample(&s, "beatd_jobs_running", &[]).is_some());
    let by_name: HashMap<&str, usize> = s.samples.iter().fold(HashMap::new(), |mut m, x| {
        *m.entry(x.metric.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_name.get("beatd_fires_total"), Some(&5), "one series per outcome");
}

#[test]
fn the_dashboard_is_served_at_the_root_locked_down_and_can_be_turned_off() {
    let (_b, _d, api) = start("", JOBS);
    let (status, body, headers) = api.request("GET", "/", None);
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap_or("").starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap_or("");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(body.as_str().is_some_and(|b| b.contains("<tr data-job=\"tick\">")));
    for path in ["/timeline", "/jobs/cmd", "/assets/style.css", "/assets/app.js"] {
        assert_eq!(api.request("GET", path, None).0, 200, "{path}");
    }
    // Pages never change state: no method but GET (and HEAD) reaches them.
    for path in ["/", "/jobs/cmd", "/timeline"] {
        let (status, _, _) = api.request("POST", path, Some(&api.token()));
        assert_eq!(status, 405, "POST {path}");
    }

    let (_b, _d, off) = start("dashboard = false", JOBS);
    let (status, body, _) = off.request("GET", "/", None);
    assert_eq!((status, &body["error"]), (404, &Value::String("no such endpoint".into())));
    assert_eq!(off.get("/api/jobs").0, 200, "the API stays");
}
