//! The dashboard with 10 000 jobs, over real HTTP. Targets: the overview in ≤ 100 ms, the
//! 24-hour timeline in ≤ 300 ms (server-side rendering; the browser's own drawing is not
//! counted).
//!
//! The jobs are a realistic mix: a fifth each of `every 1s`, `every 5m`, `*/15 * * * *`,
//! daily at 02:00 and weekdays at 09:30, spread over five zones (so the timeline has DST
//! work to do), each with a next fire and a last run, and a 24-hour success rate for each.
//! Besides the page requests, it times the timeline's lanes for all 10 000 jobs at once (what
//! an unpaged timeline would cost). `cargo bench --bench dashboard`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beatd::api::auth::Guard;
use beatd::api::server::Listener;
use beatd::api::{ApiState, serve};
use beatd::clock::Clock;
use beatd::config::parse_str;
use beatd::dashboard::timeline::lane;
use beatd::job::RunOutcome;
use beatd::jobs::{Actions, Services};
use beatd::metrics::Metrics;
use beatd::scheduler::runner::Runner;
use beatd::state::history::History;
use beatd::status::Board;
use chrono::Utc;

const JOBS: usize = 10_000;
const REQUESTS: usize = 30;

fn config() -> String {
    let schedules = [
        "every = \"1s\"",
        "every = \"5m\"",
        "cron = \"*/15 * * * *\"",
        "cron = \"0 2 * * *\"",
        "cron = \"30 9 * * 1-5\"",
    ];
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"];
    let mut text = String::new();
    for i in 0..JOBS {
        text.push_str(&format!(
            "[jobs.job-{i:05}]\n{}\ntimezone = \"{}\"\naction = \"command\"\ncommand = \"/usr/local/bin/task --id {i} <&-\"\n",
            schedules[i % 5],
            zones[(i / 5) % 5]
        ));
    }
    text
}

fn summary(mut t: Vec<Duration>) -> String {
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:.1} ms | {:.1} ms | {:.1} ms",
        ms(t[0]),
        ms(t[t.len() / 2]),
        ms(t[(t.len() * 99 / 100).min(t.len() - 1)])
    )
}

async fn measure() {
    let jobs = parse_str(&config(), Path::new("bench.toml"), Path::new(".")).expect("valid").jobs;
    let board = Board::new(jobs, Metrics::new(true));
    let now = Utc::now();
    for (i, e) in board.jobs().jobs.iter().enumerate() {
        e.status.set_next_fire(e.job.next_fire(now).map(|(_, at)| at));
        let outcome = if i % 17 == 0 { RunOutcome::Failure } else { RunOutcome::Success };
        e.status.finished(now, Some(now), now + chrono::Duration::milliseconds(120), outcome, None);
    }
    let services = Arc::new(Services::new(Clock::System, "unused".into(), Default::default()));
    let dir = tempfile::tempdir().expect("temp dir");
    let state = ApiState {
        board: board.clone(),
        runner: Runner::new(Actions, services, History::disabled(), None),
        clock: Clock::System,
        state_dir: dir.path().to_path_buf(),
        guard: Arc::new(Guard::open()),
        cluster: None,
        dashboard: true,
        rates: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(Listener::Tcp(listener), state, 64, tokio_util::sync::CancellationToken::new()));
    let client = reqwest::Client::new();
    println!("| request | body | min | median | p99 |");
    println!("|---|---|---|---|---|");
    for path in [
        "/",
        "/?sort=next&dir=asc",
        "/?sort=rate&dir=desc&page=50",
        "/?q=job-09",
        "/timeline",
        "/timeline?range=1h",
        "/timeline?range=7d",
        "/jobs/job-00042",
    ] {
        let url = format!("{base}{path}");
        let mut times = Vec::new();
        let mut size = 0;
        for i in 0..=REQUESTS {
            let start = Instant::now();
            let resp = client.get(&url).send().await.expect("answer");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let body = resp.text().await.expect("body");
            if i > 0 {
                times.push(start.elapsed()); // the first request warms the caches
            }
            size = body.len();
        }
        println!("| `GET {path}` | {:.0} kB | {} |", size as f64 / 1e3, summary(times));
    }
    // The lanes of every job, as an unpaged 24-hour timeline would compute them.
    let jobs = board.jobs();
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut ticks = 0;
        for e in &jobs.jobs {
            let l = lane(&e.job, now, now + chrono::Duration::hours(24));
            ticks += l.ticks.len() + l.bands.len();
        }
        std::hint::black_box(ticks);
        times.push(start.elapsed());
    }
    println!("| lanes of all {JOBS} jobs, 24 h (no HTML) | — | {} |", summary(times));
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!("The dashboard with {JOBS} jobs, {REQUESTS} requests each, release build\n");
    rt.block_on(measure());
}
