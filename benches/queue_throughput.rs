//! Celery messages into a local Redis: the real daemon with N `celery` jobs every second (all
//! due at the same instant), against a `redis-server` of its own. For each second it measures
//! how long after the slot the last of the N messages was in Redis (the burst's delivery time)
//! and so the rate; it also checks that every fire arrived and nothing waited in the outbox.
//! Target: at least 50 000 messages a second.
//!
//! `cargo bench --bench queue_throughput` (BENCH_JOBS, default 60 000; BENCH_SECONDS, default 20).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let jobs = env("BENCH_JOBS", 60_000);
    let seconds = env("BENCH_SECONDS", 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let redis_port = free_port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/0")).expect("url");
    let start = Instant::now();
    let mut conn = loop {
        if let Ok(c) = client.get_connection() {
            break c;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The jobs live in drop-ins of 10 000 each: one file of 60 000 would pass the 4 MiB limit.
    std::fs::write(
        dir.path().join("beatd.toml"),
        format!("[scheduler]\ntimezone = \"UTC\"\ninclude = [\"jobs/*.toml\"]\n[brokers.r]\nurl = \"redis://127.0.0.1:{redis_port}/0\"\n"),
    )
    .expect("config");
    std::fs::create_dir(dir.path().join("jobs")).expect("jobs");
    for file in 0..jobs.div_ceil(10_000) {
        let mut f = std::fs::File::create(dir.path().join(format!("jobs/{file:02}.toml"))).expect("drop-in");
        for i in file * 10_000..jobs.min((file + 1) * 10_000) {
            writeln!(
                f,
                "[jobs.c{i}]\nevery = \"1s\"\naction = \"celery\"\nbroker = \"r\"\ntask = \"t.x\"\nargs = [{i}]"
            )
            .expect("write");
        }
    }
    let mut beatd = Command::new(env!("CARGO_BIN_EXE_beatd"))
        .args(["run", "--config"])
        .arg(dir.path().join("beatd.toml"))
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start beatd");

    // Each second: clear the list at the slot's start, then watch it fill.
    let mut bursts: Vec<f64> = Vec::new();
    let mut delivered = 0u64;
    let mut incomplete = 0;
    let since_epoch = || SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    for second in 0..seconds + 3 {
        // Just before the next whole second.
        let now = since_epoch();
        let next = Duration::from_secs(now.as_secs() + 1);
        std::thread::sleep(next - now - Duration::from_millis(20).min(next - now));
        let (left,): (u64,) =
            redis::pipe().atomic().llen("celery").del("celery").ignore().query(&mut conn).expect("clear");
        delivered += left;
        let slot = next;
        let mut full_at = None;
        while since_epoch() < slot + Duration::from_millis(980) {
            let n: u64 = redis::cmd("LLEN").arg("celery").query(&mut conn).expect("llen");
            if n >= jobs {
                full_at = Some(since_epoch().saturating_sub(slot));
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // The first seconds are start-up (reading 60 000 jobs, the first connection).
        if second >= 3 {
            match full_at {
                Some(t) => bursts.push(t.as_secs_f64()),
                None => incomplete += 1,
            }
        }
    }
    let _ = Command::new("kill").arg("-TERM").arg(beatd.id().to_string()).status();
    let _ = beatd.wait();
    let (left,): (u64,) = redis::pipe().atomic().llen("celery").del("celery").ignore().query(&mut conn).expect("clear");
    delivered += left;
    let _ = redis.kill();
    let _ = redis.wait();

    let conn = beatd::state::open_read_only(&dir.path().join("state")).expect("history");
    let (runs, failures): (i64, i64) = conn
        .query_row("SELECT count(*), count(*) FILTER (WHERE outcome != 'success') FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("query");
    bursts.sort_by(f64::total_cmp);
    let pick = |q: f64| bursts.get(((bursts.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    let rate = |t: f64| jobs as f64 / t;
    println!("{jobs} celery jobs every 1 s, the beatd binary, into its own redis-server; {seconds} s measured\n");
    println!(
        "| burst delivered in (p50 / p90 / max) | rate at p50 | rate at max | seconds not complete | messages in Redis | history runs | not successes |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {:.0} / {:.0} / {:.0} ms | {:.0} msg/s | {:.0} msg/s | {incomplete} | {delivered} | {runs} | {failures} |",
        pick(0.5) * 1e3,
        pick(0.9) * 1e3,
        pick(1.0) * 1e3,
        rate(pick(0.5)),
        rate(pick(1.0)),
    );
}
