//! Next-fire cost: `next_after` called on its own previous answer, as the timer loop does.
//! Target (issue 2): at most 150 ns per call for `*/5 * * * *` in America/New_York and for
//! `0 0 1 1 *`.

use std::hint::black_box;

use beatd::schedule::{CronSchedule, Interval, cron};
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};

fn schedule(expr: &str, zone: &str) -> CronSchedule {
    match cron::parse(expr) {
        Ok(cron::Parsed::Fields(e)) => CronSchedule::new(e, zone.parse().expect("zone")),
        other => panic!("{expr}: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).expect("2026-01-01");
    let mut group = c.benchmark_group("next_after");
    for (expr, zone) in [
        ("*/5 * * * *", "America/New_York"),
        ("0 0 1 1 *", "UTC"),
        ("0 0 1 1 *", "America/New_York"),
        ("30 2 * * 1-5", "Europe/Berlin"),
        ("0 18 * * 5L", "UTC"),
    ] {
        let s = schedule(expr, zone);
        group.bench_function(format!("{expr} {zone}"), |b| {
            let mut t = start;
            b.iter(|| {
                t = s.next_after(black_box(t)).unwrap_or(start);
                t
            })
        });
    }
    let every = Interval::new(std::time::Duration::from_secs(30), std::time::Duration::ZERO).expect("valid");
    group.bench_function("every 30s", |b| {
        let mut t = start;
        b.iter(|| {
            t = every.next_after(black_box(t)).unwrap_or(start);
            t
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
