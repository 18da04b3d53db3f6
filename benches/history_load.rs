//! Sustained load with the run history on: 10 000 `noop` jobs every second on the real clock,
//! once with the history off and once with every fire written to SQLite. Lateness is measured
//! at dispatch (wall clock minus slot) for every fire; the history must not raise it.
//!
//! `cargo bench --bench history_load` (BENCH_SECONDS sets the length of each phase; default 20).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beatd::clock::Clock;
use beatd::config::parse_str;
use beatd::fire::Fire;
use beatd::jobs::{Actions, Services};
use beatd::scheduler::runner::Runner;
use beatd::scheduler::{Dispatch, Scheduler};
use beatd::state::history::{History, Writer};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

const JOBS: usize = 10_000;

/// Notes each fire's lateness, then hands it to the real runner.
struct Measuring {
    runner: Runner,
    late_us: Arc<Mutex<Vec<i64>>>,
}

impl Dispatch for Measuring {
    fn dispatch(&self, fire: Fire) {
        let late = (Utc::now() - fire.scheduled_at).num_microseconds().unwrap_or(i64::MAX);
        self.late_us.lock().expect("lock").push(late);
        self.runner.dispatch(fire);
    }

    fn end_tick(&self) {
        self.runner.end_tick();
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn phase(seconds: u64, with_history: bool) -> (Vec<i64>, u64, i64) {
    let mut text = String::new();
    for i in 0..JOBS {
        text.push_str(&format!("[jobs.j{i}]\nevery = \"1s\"\naction = \"noop\"\n"));
    }
    let jobs = parse_str(&text, Path::new("bench.toml"), Path::new(".")).expect("valid").jobs;
    let state = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (history, writer) = if with_history {
        let (h, w) =
            Writer::start(state.path(), Duration::from_secs(86_400), beatd::clock::Clock::System, Default::default())
                .expect("history");
        (h, Some(w))
    } else {
        (History::disabled(), None)
    };
    let late_us = Arc::new(Mutex::new(Vec::with_capacity(JOBS * seconds as usize + JOBS)));
    runtime.block_on(async {
        let services = Arc::new(Services::new(Clock::System, state.path().to_path_buf(), Default::default()));
        let runner = Runner::new(Actions, services, history, None);
        let scheduler =
            Scheduler::new(jobs, Clock::System, Measuring { runner: runner.clone(), late_us: late_us.clone() });
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                scheduler.run(stop).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.cancel();
        task.await.expect("loop");
        runner.shutdown(Duration::from_secs(5)).await;
    });
    drop(runtime);
    let mut rows = 0;
    if let Some(w) = writer {
        w.finish();
        let conn = beatd::state::open_read_only(state.path()).expect("open");
        rows = conn.query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0)).expect("count") as u64;
    }
    let late = std::mem::take(&mut *late_us.lock().expect("lock"));
    let size = std::fs::metadata(state.path().join(beatd::state::DB_FILE)).map(|m| m.len() as i64).unwrap_or(0);
    (late, rows, size)
}

fn main() {
    // `cargo test --benches` runs benches with --test: nothing to measure then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    println!("{JOBS} noop jobs every 1 s, {seconds} s per phase; lateness = dispatch wall time - slot\n");
    println!("| history | fires | rows written | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|");
    for with_history in [false, true] {
        let (mut late, rows, _) = phase(seconds, with_history);
        late.sort_unstable();
        println!(
            "| {} | {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
            if with_history { "on (SQLite, WAL)" } else { "off" },
            late.len(),
            if with_history { rows.to_string() } else { "-".into() },
            percentile(&late, 0.50),
            percentile(&late, 0.99),
            percentile(&late, 0.999),
            percentile(&late, 1.0),
        );
    }
}
