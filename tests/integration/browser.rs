//! The dashboard in a real browser: Debian's Chromium driven by its ChromeDriver over
//! WebDriver (fantoccini), against the real `beatd` binary. Each test saves a screenshot under
//! `target/screenshots/`.
//!
//! `.ci/run` installs `chromium` and `chromium-driver` when they are missing; without them
//! these tests fail and say so.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::util::{Api, Beatd, Reaped, Running, free_port, wait_for};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session; synchronous, so tests read like the others.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Reaped,
}

impl Browser {
    fn start() -> Browser {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        beatd::tls::install_crypto_provider(); // two rustls providers are linked: pick beatd's
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Reaped(driver);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--force-prefers-reduced-motion"]
            }
        });
        let caps: serde_json::Map<String, Value> = match caps {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let attempt = rt.block_on(
                ClientBuilder::rustls()
                    .expect("rustls")
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}")),
            );
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("cannot start a Chromium session: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        Browser { rt, client: Some(client), _driver: driver }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("open session")
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).expect("navigate");
    }

    fn js(&self, script: &str) -> Value {
        self.rt.block_on(self.c().execute(script, vec![])).expect("script")
    }

    /// The text of the first element matching `css`, or `None`.
    fn text(&self, css: &str) -> Option<String> {
        self.rt.block_on(async {
            let el = self.c().find(Locator::Css(css)).await.ok()?;
            el.text().await.ok()
        })
    }

    fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.rt.block_on(async {
            let el = self.c().find(Locator::Css(css)).await.ok()?;
            el.attr(name).await.ok().flatten()
        })
    }

    fn count(&self, css: &str) -> usize {
        self.rt.block_on(self.c().find_all(Locator::Css(css))).map_or(0, |v| v.len())
    }

    fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let el = self.c().find(Locator::Css(css)).await?;
                el.clear().await?;
                el.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Waits (10 s at most) until the text of `css` satisfies `ok`; returns it.
    fn wait_text(&self, css: &str, mut ok: impl FnMut(&str) -> bool) -> String {
        let mut last = None;
        let found = wait_for(Duration::from_secs(10), || {
            last = self.text(css);
            last.as_deref().is_some_and(&mut ok)
        });
        assert!(found, "{css} never had the expected text; last: {last:?}");
        last.unwrap_or_default()
    }

    fn wait_count(&self, css: &str, n: usize) {
        assert!(wait_for(Duration::from_secs(10), || self.count(css) >= n), "never {n} of {css}");
    }

    /// Saves the page as `target/screenshots/NAME.png`.
    fn screenshot(&self, name: &str) {
        let png = self.rt.block_on(self.c().screenshot()).expect("screenshot");
        let dir = screenshots();
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
    }
}

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    target.join("screenshots")
}

fn start(jobs: &str) -> (Beatd, Running, Api) {
    let port = free_port();
    let b = Beatd::with_config(&format!(
        "[scheduler]\nstate_dir = \"state\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n{jobs}"
    ));
    let d = b.run(&[]);
    let api = d.api();
    (b, d, api)
}

/// Answers the token dialog with `token`.
fn give_token(browser: &Browser, token: &str) {
    browser.wait_count("dialog#token-dialog[open]", 1);
    browser.type_into("#token-input", token);
    browser.click("#token-dialog button[value='ok']");
}

#[test]
fn the_overview_lists_the_example_configs_jobs_with_their_next_runs() {
    let port = free_port();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/beatd.toml")).expect("example");
    let b = Beatd::with_config(&example.replace("127.0.0.1:8089", &format!("127.0.0.1:{port}")));
    std::fs::create_dir_all(b.path("var/uploads")).expect("mkdir");
    std::fs::create_dir_all(b.path("var/reports")).expect("mkdir");
    let d = b.run(&[]);
    let api = d.api();
    // What `beatd next` says, the first fire of each job.
    let out = b.cmd(&["next", "-c", "beatd.toml", "--json", "-n", "1"]).output().expect("beatd next");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let next: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(next.len(), 3, "{next:?}");

    let browser = Browser::start();
    browser.goto(&api.url("/"));
    assert_eq!(browser.count("table.jobs tbody tr[data-job]"), 3);
    for fire in &next {
        let job = fire["job"].as_str().expect("job");
        let row = format!("tr[data-job='{job}']");
        let shown = browser.attr(&format!("{row} td.next time"), "datetime").expect("a next run");
        let expected = chrono::DateTime::parse_from_rfc3339(fire["at"].as_str().expect("at")).expect("rfc3339");
        let shown = chrono::DateTime::parse_from_rfc3339(&shown).expect("rfc3339");
        // The 5-minute check may have moved on between `next` and the page.
        let late = (shown - expected).num_seconds();
        assert!(late == 0 || (job.starts_with("check-status") && late % 300 == 0), "{job}: {shown} vs {expected}");
        let abs = browser.text(&format!("{row} td.next .abs")).expect("absolute time");
        assert!(abs.ends_with("+01:00") || abs.ends_with("+02:00"), "shown in the job's zone (Berlin): {abs}");
    }
    let words = browser.text("tr[data-job='send-reports-weekly'] td.schedule").expect("schedule");
    assert!(words.contains("at 09:00 on Monday") && words.contains("0 9 * * 1"), "{words}");
    let words = browser.text("tr[data-job='check-status-every-5-minutes'] td.schedule").expect("schedule");
    assert!(words.contains("every 5 minutes"), "{words}");
    assert_eq!(browser.text("section.strip .badge").as_deref(), Some("ok"));
    // Sorted by next run, then filtered, without JavaScript's help (links and a GET form).
    browser.click("th a[href^='/?sort=next']");
    let first = browser.attr("table.jobs tbody tr[data-job]", "data-job").expect("a row");
    assert_eq!(first, "check-status-every-5-minutes");
    browser.type_into("#q", "report");
    browser.click("form.filter button");
    browser.wait_text("table.jobs tbody", |t| t.contains("send-reports-weekly") && !t.contains("cleanup"));
    browser.goto(&api.url("/"));
    browser.screenshot("overview");
    drop(d);
}

#[test]
fn a_failing_job_shows_as_failing_and_its_error_is_on_its_page() {
    let (_b, _d, api) = start(
        r#"
[jobs.broken]
every = "1s"
action = "command"
command = "echo 'disk is full' >&2; exit 3"

[jobs.fine]
every = "1h"
action = "noop"
"#,
    );
    let browser = Browser::start();
    browser.goto(&api.url("/"));
    // The page refreshes itself: the state arrives without a reload.
    browser.wait_text("tr[data-job='broken'] td span[data-state]", |t| t == "failing");
    assert_eq!(browser.text("tr[data-job='fine'] td span[data-state]").as_deref(), Some("ok"));
    browser.screenshot("failing-overview");
    browser.click("tr[data-job='broken'] th a");
    browser.wait_count("table.history tr.run[data-outcome='failure']", 1);
    let summary = browser.text("tr.run[data-outcome='failure'] details.error summary").expect("an error");
    assert_eq!(summary, "exited with status 3");
    browser.click("tr.run[data-outcome='failure'] details.error summary");
    let shown = browser.wait_text("tr.run[data-outcome='failure'] details.error pre", |t| !t.is_empty());
    assert_eq!(shown, "exited with status 3");
    assert!(browser.text("dl.config").is_some_and(|c| c.contains("echo 'disk is full' >&2; exit 3")));
    browser.screenshot("failing-job");
}

#[test]
fn pause_and_resume_from_the_page_with_a_token_asked_once_a_wrong_one_refused() {
    let (_b, _d, api) = start("[jobs.nightly]\ncron = \"0 3 * * *\"\naction = \"noop\"\n");
    let browser = Browser::start();
    browser.goto(&api.url("/jobs/nightly"));
    browser.js("window.beatdNotReloaded = true; return null;");
    browser.click("button[data-post$='/pause']");
    // No token yet: the page asks. A wrong one is refused and it asks again, saying so.
    give_token(&browser, "not-the-token");
    browser.wait_text("#token-why", |t| t.contains("The token was refused"));
    browser.screenshot("token-refused");
    let (_, job) = api.get("/api/jobs/nightly");
    assert_eq!(job["paused"], false, "a refused token changed nothing");
    browser.type_into("#token-input", &api.token());
    browser.click("#token-dialog button[value='ok']");
    browser.wait_text("#job-state", |t| t == "paused");
    assert_eq!(browser.js("return window.beatdNotReloaded === true;"), Value::Bool(true), "the page was reloaded");
    let (_, job) = api.get("/api/jobs/nightly");
    assert_eq!(job["paused"], true);
    browser.screenshot("paused");
    // The token is kept for the session: Resume asks nothing.
    browser.click("button[data-post$='/resume']");
    browser.wait_text("#job-state", |t| t == "ok");
    assert_eq!(browser.count("dialog#token-dialog[open]"), 0);
    let (_, job) = api.get("/api/jobs/nightly");
    assert_eq!(job["paused"], false);
    // Kept in sessionStorage, never in a cookie or the URL.
    assert_eq!(browser.js("return document.cookie;"), Value::String(String::new()));
    assert!(!browser.js("return location.href;").as_str().unwrap_or("").contains(&api.token()));
}

#[test]
fn run_now_appears_in_the_history_and_a_long_run_shows_progress_and_is_cancelled() {
    let (b, _d, api) = start(
        r#"
[jobs.quick]
cron = "0 3 * * *"
action = "command"
command = "echo done"

[jobs.long]
cron = "0 3 * * *"
action = "command"
command = "echo 'PROGRESS=42 copying files' >&$BEATD_PROGRESS_FD; exec sleep 60"
kill_grace = "1s"
"#,
    );
    let browser = Browser::start();
    browser.goto(&api.url("/jobs/quick"));
    assert_eq!(browser.count("table.history tr.run"), 0);
    browser.click("button[data-post$='/run']");
    give_token(&browser, &api.token());
    browser.wait_count("table.history tr.run[data-outcome='success']", 1);

    browser.goto(&api.url("/jobs/long"));
    browser.click("button[data-post$='/run']");
    let progress = browser.wait_text("table.runs td.progress", |t| t.contains("copying files"));
    assert!(progress.contains("42 %"), "{progress}");
    assert_eq!(browser.attr("table.runs progress", "value").as_deref(), Some("42"));
    browser.screenshot("running-with-progress");
    browser.click("table.runs button[data-post$='/cancel']");
    browser.wait_count("table.history tr.run[data-outcome='cancelled']", 1);
    assert_eq!(browser.count("table.runs"), 0, "no run left in progress");
    let runs = crate::util::history(&b, "long");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["outcome"], "cancelled");
    browser.screenshot("cancelled");
}

#[test]
fn the_timeline_marks_the_dst_change_of_a_new_york_job() {
    let (_b, _d, api) = start(
        r#"
[jobs.ny-open]
cron = "30 9 * * 1-5"
timezone = "America/New_York"
action = "noop"

[jobs.every-minute]
cron = "* * * * *"
action = "noop"
"#,
    );
    let browser = Browser::start();
    // The week New York leaves daylight saving time: 2026-11-01, 2:00 EDT becomes 1:00 EST.
    browser.goto(&api.url("/timeline?range=7d&from=2026-11-01"));
    assert_eq!(browser.attr("g.dst", "data-at").as_deref(), Some("2026-11-01T06:00:00+00:00"));
    let listed = browser.text("li.dst-change").expect("the change is listed");
    assert_eq!(listed, "America/New_York: -04:00 → -05:00, at 2026-11-01 06:00 UTC");
    // Mon 2 Nov to Fri 6 Nov at 09:30 EST; each tick's tooltip is its instant with the offset.
    let titles = browser.js(
        "return [...document.querySelectorAll(\"g.lane[data-job='ny-open'] rect.tick title\")].map(t => t.textContent);",
    );
    let titles: Vec<&str> = titles.as_array().expect("list").iter().filter_map(Value::as_str).collect();
    assert_eq!(titles.len(), 5, "{titles:?}");
    assert_eq!(titles[0], "ny-open: 2026-11-02T09:30:00-05:00");
    // A job every minute is a band, not 10 080 ticks.
    assert_eq!(browser.count("g.lane[data-job='every-minute'] rect.tick"), 0);
    assert!(browser.count("g.lane[data-job='every-minute'] rect.band") >= 1);
    browser.screenshot("timeline-dst");
    // The default window is the next 24 hours, with a now line.
    browser.goto(&api.url("/timeline"));
    assert_eq!(browser.count("line.now"), 1);
}

#[test]
fn html_in_a_command_and_in_an_error_renders_as_text() {
    let evil = "<img src=x onerror=\"window.beatdPwned=1\">";
    let (b, _d, api) = start(&format!(
        r#"
[jobs.evil]
cron = "0 3 * * *"
action = "command"
command = "echo '<script>window.beatdPwned=2</script>'"

[jobs.tidy]
cron = "0 3 * * *"
action = "cleanup"
path = 'gone/{evil}'
older_than = "1d"
"#
    ));
    let _ = b;
    let (status, _) = api.post("/api/jobs/tidy/run");
    assert_eq!(status, 202);
    let browser = Browser::start();
    browser.goto(&api.url("/jobs/evil"));
    let shown = browser.text("dl.config").expect("config");
    assert!(shown.contains("echo '<script>window.beatdPwned=2</script>'"), "{shown}");
    assert_eq!(browser.count("dl.config script"), 0);
    browser.goto(&api.url("/jobs/tidy"));
    browser.wait_count("tr.run[data-outcome='failure']", 1);
    browser.click("tr.run details.error summary");
    let error = browser.wait_text("tr.run details.error pre", |t| !t.is_empty());
    assert!(error.contains(evil) && error.ends_with("does not exist"), "{error}");
    assert_eq!(browser.count("tr.run details.error img"), 0);
    assert_eq!(browser.count("dl.config img"), 0);
    assert_eq!(browser.js("return window.beatdPwned === undefined;"), Value::Bool(true));
    browser.screenshot("escaping");
    // Unknown job: a 404 page, in HTML.
    let (status, body, headers) = api.request("GET", "/jobs/nope%3Cb%3E", None);
    assert_eq!(status, 404);
    assert!(headers["content-type"].to_str().unwrap_or("").starts_with("text/html"));
    assert!(body.as_str().is_some_and(|b| b.contains("No job \u{201c}nope&lt;b&gt;\u{201d}")), "{body}");
}
