//! Loop work per fire when 10 000 (and 100 000) jobs are due at the same instant: take them
//! from the timers, compute the next fire, dispatch (the daemon's real runner, `noop` action),
//! arm the next. Target: a few hundred nanoseconds per fire; 150 ns is the limit to aim at.

use std::path::Path;
use std::time::{Duration, Instant};

use beatd::clock::Clock;
use beatd::config::parse_str;
use beatd::jobs::{Actions, Services};
use beatd::scheduler::Scheduler;
use beatd::scheduler::runner::Runner;
use beatd::state::history::History;
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};

fn config(kind: &str, jobs: usize) -> String {
    let mut text = String::from("[scheduler]\ntimezone = \"America/New_York\"\n");
    for i in 0..jobs {
        match kind {
            "every" => text.push_str(&format!("[jobs.j{i}]\nevery = \"1s\"\naction = \"noop\"\n")),
            _ => text.push_str(&format!("[jobs.j{i}]\ncron = \"* * * * *\"\naction = \"noop\"\n")),
        }
    }
    text
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = runtime.enter();
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).expect("2026-01-01");
    let mut group = c.benchmark_group("loop_burst");
    // The history's cost under sustained load is measured by `benches/history_load.rs`: here
    // bursts run back to back, far faster than any real schedule, so it stays off.
    for (kind, step, n) in [("every", 1, 10_000), ("cron", 60, 10_000), ("every", 1, 100_000)] {
        group.throughput(criterion::Throughput::Elements(n as u64));
        let jobs = parse_str(&config(kind, n), Path::new("bench.toml"), Path::new(".")).expect("valid").jobs;
        let clock = Clock::manual(start);
        let services = std::sync::Arc::new(Services::new(clock.clone(), "unused".into(), Default::default()));
        let runner = Runner::new(Actions, services, History::disabled(), None);
        let mut scheduler = Scheduler::new(jobs, clock, runner);
        let mut now = start;
        group.bench_function(format!("{n} {kind} noop, per burst"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    now += chrono::Duration::seconds(step);
                    let t = Instant::now();
                    let fired = scheduler.tick(now);
                    total += t.elapsed();
                    assert_eq!(fired, n);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
