//! `GET /metrics` with 10 000 jobs, over real HTTP, in both formats, and the encoding alone.
//! Target (issue 17): 20 ms a scrape with per-job series.
//!
//! The worst case: every job is a `command`, so each has a duration histogram besides its
//! counters and gauges, and each has run once. `cargo bench --bench api_metrics`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beatd::api::auth::Guard;
use beatd::api::server::Listener;
use beatd::api::{ApiState, serve};
use beatd::clock::Clock;
use beatd::config::parse_str;
use beatd::job::RunOutcome;
use beatd::jobs::{Actions, Services};
use beatd::metrics::Metrics;
use beatd::scheduler::runner::Runner;
use beatd::state::history::History;
use beatd::status::Board;
use chrono::Utc;

const JOBS: usize = 10_000;

/// Prometheus's own scrape header (OpenMetrics first); without it, the classic text format.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn measure(per_job: bool, accept: Option<&str>) -> (Vec<Duration>, Duration, usize) {
    let mut text = String::new();
    for i in 0..JOBS {
        text.push_str(&format!("[jobs.job-{i:05}]\nevery = \"1m\"\naction = \"command\"\ncommand = \"true\"\n"));
    }
    let jobs = parse_str(&text, Path::new("bench.toml"), Path::new(".")).expect("valid").jobs;
    let board = Board::new(jobs, Metrics::new(per_job));
    let now = Utc::now();
    for e in &board.jobs().jobs {
        e.status.set_next_fire(Some(now + chrono::Duration::minutes(1)));
        e.status.finished(now, Some(now), now + chrono::Duration::milliseconds(120), RunOutcome::Success, None);
    }
    // The encoding alone, in-process: what the HTTP figure spends outside the transfer.
    let format = beatd::metrics::exposition::Format::negotiate(accept);
    let mut encode = Vec::new();
    for _ in 0..25 {
        let start = Instant::now();
        let text = board.metrics.encode(format).expect("encodes");
        encode.push(start.elapsed());
        std::hint::black_box(text);
    }
    encode.sort();
    let services = Arc::new(Services::new(Clock::System, "unused".into(), Default::default()));
    let state = ApiState {
        board,
        runner: Runner::new(Actions, services, History::disabled(), None),
        clock: Clock::System,
        state_dir: "unused".into(),
        guard: Arc::new(Guard::open()),
        cluster: None,
        dashboard: true,
        rates: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    tokio::spawn(serve(Listener::Tcp(listener), state, 64, tokio_util::sync::CancellationToken::new()));
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..25 {
        let start = Instant::now();
        let mut req = client.get(&url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let body = req.send().await.expect("answer").bytes().await.expect("body");
        times.push(start.elapsed());
        size = body.len();
    }
    times.sort();
    (times, encode[encode.len() / 2], size)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!("GET /metrics with {JOBS} command jobs, 25 requests each\n");
    println!("| per_job_metrics | format | body | min | median | max | encoding alone (median) |");
    println!("|---|---|---|---|---|---|---|");
    for (per_job, accept) in [(true, Some(PROMETHEUS_ACCEPT)), (true, None), (false, Some(PROMETHEUS_ACCEPT))] {
        let (t, encode, size) = rt.block_on(measure(per_job, accept));
        let format = if accept.is_some() { "OpenMetrics" } else { "text 0.0.4" };
        println!(
            "| {per_job} | {format} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            size as f64 / 1e6,
            t[0].as_secs_f64() * 1e3,
            t[t.len() / 2].as_secs_f64() * 1e3,
            t[t.len() - 1].as_secs_f64() * 1e3,
            encode.as_secs_f64() * 1e3
        );
    }
}
