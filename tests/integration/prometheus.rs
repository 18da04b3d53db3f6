//! beatd as Prometheus sees it: the real `promtool` and a real Prometheus server (Debian's
//! `prometheus` package; `.ci/run` installs it) against the real binary, and the shipped
//! Grafana dashboard and alerting rules checked against that server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{Beatd, CLOSED_PORT, Reaped, free_port, wait_for};

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const JOBS: &str = r#"
[jobs.tick]
every = "1s"
action = "noop"

[jobs.cmd]
every = "1s"
action = "command"
command = "true"

[jobs.broken]
every = "1s"
action = "command"
command = "exit 3"
"#;

fn tool(bin: &str) -> &str {
    assert!(Path::new(bin).exists(), "{bin} is missing: install Debian's prometheus package (.ci/run does)");
    bin
}

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(name)
}

/// A daemon with an API on a free port and [`JOBS`] plus a check of a port nothing serves.
fn start() -> (Beatd, crate::util::Running, u16) {
    let port = free_port();
    let closed = CLOSED_PORT;
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n{JOBS}\n[jobs.db]\nevery = \"1s\"\naction = \"tcp_check\"\naddress = \"127.0.0.1:{closed}\"\n"
    ));
    let d = b.run(&[]);
    d.api(); // waits until it answers
    (b, d, port)
}

/// GET with an `Accept` header: the content type and the body.
fn get(url: &str, accept: Option<&str>) -> (String, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let resp = req.send().await.expect("answers");
        assert_eq!(resp.status(), 200, "{url}");
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (ct, resp.text().await.expect("body"))
    })
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(tool(PROMTOOL))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[test]
fn metrics_come_in_the_format_asked_for_and_promtool_finds_nothing_to_lint() {
    let (_b, _d, port) = start();
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert!(wait_for(Duration::from_secs(8), || get(&url, None)
        .1
        .contains("job_name=\"broken\",outcome=\"failure\"} 2")));

    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (ct, text) = get(&url, accept);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(text.contains("# TYPE beatd_fires_total counter\n"), "{text}");
        let (ok, said) = promtool(&["check", "metrics"], Some(&text));
        // `check metrics` prints nothing and succeeds when it has nothing to say.
        assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");
    }

    let (ct, text) = get(&url, Some(PROMETHEUS_ACCEPT));
    assert_eq!(ct, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(text.ends_with("# EOF\n") && text.contains("# TYPE beatd_fires counter\n"), "{text}");

    // Every per-job series is labelled job_name; none has Prometheus's own `job`.
    assert!(text.contains("beatd_check_up{job_name=\"db\"} 0"), "{text}");
    assert!(text.contains("beatd_job_period_seconds{job_name=\"tick\"} 1"), "{text}");
    assert!(!text.contains("{job=") && !text.contains(",job="), "{text}");
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let rules = docs("prometheus/alerts.yml");
    let (ok, said) = promtool(&["check", "rules", rules.to_str().expect("utf-8")], None);
    assert!(ok && said.contains("SUCCESS: 9 rules found"), "{said}");
    let tests = docs("prometheus/alerts.test.yml");
    let (ok, said) = promtool(&["test", "rules", tests.to_str().expect("utf-8")], None);
    assert!(ok && said.contains("SUCCESS"), "{said}");
}

/// Every PromQL expression of the Grafana dashboard, by panel title, with Grafana's variables
/// set as a dashboard with all instances and jobs selected sets them.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(docs("grafana/beatd.json")).expect("the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL target");
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$instance", ".*")
                .replace("$job_name", ".*");
            assert!(!expr.contains('$'), "a variable the test does not set: {expr}");
            queries.push((panel["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    assert!(queries.len() >= 15, "{queries:?}");
    queries
}

/// An instant query against Prometheus: its result vector.
fn query(base: &str, expr: &str) -> Result<Vec<Value>, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let body: Value = rt.block_on(async {
        let resp = reqwest::Client::new().get(format!("{base}/api/v1/query")).query(&[("query", expr)]).send().await;
        match resp {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    });
    match body["status"].as_str() {
        Some("success") => Ok(body["data"]["result"].as_array().cloned().unwrap_or_default()),
        _ => Err(format!("{expr}: {body}")),
    }
}

#[test]
fn a_real_prometheus_scrapes_beatd_and_the_dashboard_and_rules_work_on_it() {
    let (b, _d, port) = start();
    let web = free_port();
    let rules = docs("prometheus/alerts.yml");
    b.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: beatd\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            rules.display()
        ),
    );
    let child = Command::new(tool(PROMETHEUS))
        .arg(format!("--config.file={}", b.path("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", b.path("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(b.path("prometheus.log")).expect("log"))
        .spawn()
        .expect("prometheus starts");
    let _prometheus = Reaped(child);
    let base = format!("http://127.0.0.1:{web}");
    let log = || std::fs::read_to_string(b.path("prometheus.log")).unwrap_or_default();

    // beatd's series under Prometheus's own `job` (the scrape job), with `job_name` intact.
    let tick = r#"beatd_fires_total{job_name="tick",outcome="success"}"#;
    assert!(
        wait_for(Duration::from_secs(30), || query(&base, tick).is_ok_and(|r| !r.is_empty())),
        "no series by job_name: {}",
        log()
    );
    let series = query(&base, tick).expect("query");
    assert_eq!(series.len(), 1, "{series:?}");
    let labels = &series[0]["metric"];
    assert_eq!((labels["job"].as_str(), labels["job_name"].as_str()), (Some("beatd"), Some("tick")), "{labels}");
    let renamed = query(&base, r#"{exported_job!=""}"#).expect("query");
    assert!(renamed.is_empty(), "Prometheus renamed a label: {renamed:?}");
    // It scraped OpenMetrics: the counter is whole, not an untyped `_total` series.
    let meta = query(&base, r#"count(beatd_fires_total{job="beatd"})"#).expect("query");
    assert_eq!(meta[0]["value"][1], "20", "5 outcomes x 4 jobs: {meta:?}");

    // Each dashboard query is valid PromQL on real data; those that show fires and lateness
    // have data once two scrapes are in.
    let queries = dashboard_queries();
    let must_have_data = ["Jobs", "Fires by outcome", "Lateness quantiles", "Failing jobs", "Checks down"];
    let answered = wait_for(Duration::from_secs(20), || {
        queries.iter().all(|(title, expr)| match query(&base, expr) {
            Ok(r) => !must_have_data.contains(&title.as_str()) || !r.is_empty(),
            Err(_) => false,
        })
    });
    let report: Vec<String> = queries.iter().map(|(t, e)| format!("{t}: {:?}", query(&base, e))).collect();
    assert!(answered, "{report:#?}");
    let failing = query(&base, &queries.iter().find(|(t, _)| t == "Failing jobs").expect("panel").1).expect("query");
    let mut names: Vec<&str> = failing.iter().filter_map(|s| s["metric"]["job_name"].as_str()).collect();
    names.sort_unstable();
    // A check that finds its service down is a failed run too.
    assert_eq!(names, ["broken", "db"], "{failing:?}");

    // The rules load and evaluate without error; the failing job and the down check alert.
    let alerts = || -> Vec<(String, String)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let body: Value = rt.block_on(async {
            let r = reqwest::get(format!("{base}/api/v1/alerts")).await.expect("alerts");
            r.json().await.expect("json")
        });
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                (name, a["labels"]["job_name"].as_str().unwrap_or("").to_string())
            })
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(20), || alerts().contains(&("BeatdJobFailing".into(), "broken".into()))
            && alerts().contains(&("BeatdCheckDown".into(), "db".into()))),
        "{:?}",
        alerts()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let groups: Value = rt.block_on(async {
        reqwest::get(format!("{base}/api/v1/rules")).await.expect("rules").json().await.expect("json")
    });
    let rules = groups["data"]["groups"][0]["rules"].as_array().cloned().unwrap_or_default();
    assert_eq!(rules.len(), 9, "{groups}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    let quiet: Vec<(String, String)> =
        alerts().into_iter().filter(|(n, _)| n != "BeatdJobFailing" && n != "BeatdCheckDown").collect();
    assert!(quiet.is_empty(), "nothing else is wrong: {quiet:?}");
}
