//! The real daemon under load: 10 000 `noop` jobs every second for a minute. Lateness comes
//! from beatd's own histogram (`/metrics`); "no fire lost" from its run history: every job must
//! have one run for every second between its first and last. Target: p99 under 10 ms.
//!
//! `cargo bench --bench daemon_load` (BENCH_SECONDS sets the length; default 60).
//! `BENCH_CLUSTER=redis://127.0.0.1:6379/0` runs the same daemon as a one-node `[cluster]` on
//! that Redis, so every tick waits for its fence; the fence's own round trip is printed too.
//! `BENCH_JOBS` sets the number of jobs (default 10 000); `BENCH_HISTORY=failures` (or `off`)
//! sets `[scheduler] history`: the run history is then not checked slot by slot, and what
//! matters is how many bytes the state folder grew by.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn get(url: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

/// The histogram's buckets as (upper bound, cumulative count).
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, value.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket that holds quantile `q`.
fn quantile(b: &[(f64, f64)], q: f64) -> f64 {
    let total = b.last().map_or(0.0, |x| x.1);
    b.iter().find(|(_, c)| *c >= q * total).map_or(f64::NAN, |x| x.0)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let jobs_n: usize = std::env::var("BENCH_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let retention = std::env::var("BENCH_HISTORY").unwrap_or_else(|_| "all".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut config = std::fs::File::create(dir.path().join("beatd.toml")).expect("config");
    writeln!(
        config,
        "[scheduler]\ntimezone = \"UTC\"\nhistory = \"{retention}\"\ninclude = [\"conf.d/*.toml\"]\n[api]\nlisten = \"127.0.0.1:{port}\"\nper_job_metrics = false\n"
    )
    .expect("write");
    let cluster = std::env::var("BENCH_CLUSTER").ok();
    if let Some(redis) = &cluster {
        let name = format!("bench-{}", std::process::id());
        writeln!(config, "[cluster]\nredis = \"{redis}\"\nname = \"{name}\"\n").expect("write");
    }
    drop(config);
    // Drop-ins of 20 000 jobs each: a config file is at most 4 MiB.
    std::fs::create_dir(dir.path().join("conf.d")).expect("conf.d");
    for (part, first) in (0..jobs_n).step_by(20_000).enumerate() {
        let mut file = std::fs::File::create(dir.path().join(format!("conf.d/part-{part:02}.toml"))).expect("drop-in");
        for i in first..(first + 20_000).min(jobs_n) {
            writeln!(file, "[jobs.j{i}]\nevery = \"1s\"\naction = \"noop\"").expect("write");
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_beatd"))
        .args(["run", "--config"])
        .arg(dir.path().join("beatd.toml"))
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start beatd");
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while get(&format!("{base}/healthz")).is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "beatd did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A first scrape after a warm-up separates start-up (zone tables, first inserts, page
    // faults of a fresh heap) from the steady state.
    const WARM_UP: u64 = 5;
    std::thread::sleep(Duration::from_secs(WARM_UP));
    let warm = buckets(&get(&format!("{base}/metrics")).expect("metrics"), "beatd_fire_lateness_seconds");
    std::thread::sleep(Duration::from_secs(seconds.saturating_sub(WARM_UP)));
    let text = get(&format!("{base}/metrics")).expect("metrics");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let (rss, peak) = (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();

    let late = buckets(&text, "beatd_fire_lateness_seconds");
    let fired = late.last().map_or(0.0, |x| x.1);
    let files: Vec<(String, u64)> = std::fs::read_dir(dir.path().join("state"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len())))
                .collect()
        })
        .unwrap_or_default();
    let state_bytes: u64 = files.iter().map(|f| f.1).sum();
    let conn = beatd::state::open_read_only(&dir.path().join("state")).expect("history");
    let (runs, jobs, gaps): (i64, i64, i64) = conn
        .query_row(
            "SELECT coalesce(sum(n), 0), count(*), coalesce(sum(span - n), 0) FROM (
                 SELECT count(*) AS n, (max(scheduled_at) - min(scheduled_at)) / 1000 + 1 AS span
                 FROM runs GROUP BY job)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("query");
    let mode = cluster.as_ref().map_or("alone".to_string(), |r| format!("a one-node [cluster] on {r}"));
    println!(
        "{jobs_n} noop jobs every 1 s for {seconds} s, history = \"{retention}\", the beatd binary, {mode}; lateness from its histogram\n"
    );
    println!(
        "| fires (histogram) | runs in history | jobs with runs | missing slots | p50 ≤ | p99 ≤ | p99.9 ≤ | max ≤ |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let ms = |v: f64| if v.is_finite() { format!("{} ms", v * 1e3) } else { "> 10 s".into() };
    println!(
        "| {fired} | {runs} | {jobs} | {gaps} | {} | {} | {} | {} |",
        ms(quantile(&late, 0.5)),
        ms(quantile(&late, 0.99)),
        ms(quantile(&late, 0.999)),
        ms(quantile(&late, 1.0))
    );
    let steady: Vec<(f64, f64)> = late.iter().zip(&warm).map(|(a, b)| (a.0, a.1 - b.1)).collect();
    println!(
        "| after the first {WARM_UP} s | {} | | | {} | {} | {} | {} |",
        steady.last().map_or(0.0, |x| x.1),
        ms(quantile(&steady, 0.5)),
        ms(quantile(&steady, 0.99)),
        ms(quantile(&steady, 0.999)),
        ms(quantile(&steady, 1.0))
    );
    if cluster.is_some() {
        let fence = buckets(&text, "beatd_cluster_fence_seconds");
        println!(
            "\nfence round trip per tick ({} ticks): p50 ≤ {}, p99 ≤ {}, max ≤ {}",
            fence.last().map_or(0.0, |x| x.1),
            ms(quantile(&fence, 0.5)),
            ms(quantile(&fence, 0.99)),
            ms(quantile(&fence, 1.0))
        );
    }
    println!(
        "\nRSS at the end {rss:.1} MiB, peak {peak:.1} MiB; state folder {:.1} MB after the run: {}",
        state_bytes as f64 / 1e6,
        files.iter().map(|(n, b)| format!("{n} {:.1} MB", *b as f64 / 1e6)).collect::<Vec<_>>().join(", ")
    );
    println!("\nbuckets (le, cumulative), whole run: {late:?}");
    println!("first {WARM_UP} s: {warm:?}");
}
