//! Celery messages into a broker: the real daemon with N `celery` jobs every second (all due at
//! the same instant). For each second it measures how long after the slot the last of the N
//! messages was in the broker (the burst's delivery time) and so the rate; it also checks that
//! every fire arrived and is in the history as a success.
//!
//! - Redis (default): a `redis-server` of the bench's own; target at least 50 000 messages a
//!   second.
//! - RabbitMQ (`BENCH_BROKER=rabbitmq`): the broker on 127.0.0.1:5672, a durable queue (as
//!   Celery declares its own), persistent messages, each counted as delivered only on its
//!   publisher confirm.
//!
//! `cargo bench --bench queue_throughput` (BENCH_JOBS, default 60 000 on Redis and 10 000 on
//! RabbitMQ; BENCH_SECONDS, default 20).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Where the messages land, as the bench sees it.
trait Sink {
    fn url(&self) -> String;
    fn describe(&self) -> &'static str;
    /// The queue the jobs send to.
    fn queue(&self) -> String;
    /// How many messages are there now.
    fn count(&mut self) -> u64;
    /// Empties it; returns how many it held.
    fn take(&mut self) -> u64;
}

struct RedisSink {
    port: u16,
    server: std::process::Child,
    conn: redis::Connection,
}

impl RedisSink {
    fn start() -> RedisSink {
        let port = free_port();
        let server = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).expect("url");
        let start = Instant::now();
        let conn = loop {
            if let Ok(c) = client.get_connection() {
                break c;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        RedisSink { port, server, conn }
    }
}

impl Sink for RedisSink {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
    fn describe(&self) -> &'static str {
        "into its own redis-server"
    }
    fn queue(&self) -> String {
        "celery".into()
    }
    fn count(&mut self) -> u64 {
        redis::cmd("LLEN").arg("celery").query(&mut self.conn).expect("llen")
    }
    fn take(&mut self) -> u64 {
        let (left,): (u64,) =
            redis::pipe().atomic().llen("celery").del("celery").ignore().query(&mut self.conn).expect("clear");
        left
    }
}

impl Drop for RedisSink {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

struct RabbitSink {
    rt: tokio::runtime::Runtime,
    ch: lapin::Channel,
    _conn: lapin::Connection,
    queue: String,
}

const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672//";

impl RabbitSink {
    fn start() -> RabbitSink {
        use lapin::options::QueueDeclareOptions;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let queue = format!("beatd-bench-{}", std::process::id());
        let (conn, ch) = rt.block_on(async {
            let conn = lapin::Connection::connect(RABBIT, Default::default()).await.expect("RabbitMQ on 5672");
            let ch = conn.create_channel().await.expect("channel");
            let durable = QueueDeclareOptions { durable: true, ..Default::default() };
            ch.queue_declare(queue.as_str().into(), durable, Default::default()).await.expect("declare");
            (conn, ch)
        });
        RabbitSink { rt, ch, _conn: conn, queue }
    }
}

impl Sink for RabbitSink {
    fn url(&self) -> String {
        RABBIT.to_string()
    }
    fn describe(&self) -> &'static str {
        "into RabbitMQ (durable queue, persistent messages, publisher confirms)"
    }
    fn queue(&self) -> String {
        self.queue.clone()
    }
    fn count(&mut self) -> u64 {
        use lapin::options::QueueDeclareOptions;
        let passive = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
        let q = self
            .rt
            .block_on(self.ch.queue_declare(self.queue.as_str().into(), passive, Default::default()))
            .expect("passive declare");
        u64::from(q.message_count())
    }
    fn take(&mut self) -> u64 {
        use lapin::options::QueuePurgeOptions;
        u64::from(
            self.rt
                .block_on(self.ch.queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default()))
                .expect("purge"),
        )
    }
}

impl Drop for RabbitSink {
    fn drop(&mut self) {
        use lapin::options::QueueDeleteOptions;
        let _ = self.rt.block_on(self.ch.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rabbit = std::env::var("BENCH_BROKER").is_ok_and(|b| b == "rabbitmq");
    let jobs = env("BENCH_JOBS", if rabbit { 10_000 } else { 60_000 });
    let seconds = env("BENCH_SECONDS", 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink: Box<dyn Sink> = if rabbit { Box::new(RabbitSink::start()) } else { Box::new(RedisSink::start()) };
    let queue = sink.queue();
    // The jobs live in drop-ins of 10 000 each: one file of 60 000 would pass the 4 MiB limit.
    std::fs::write(
        dir.path().join("beatd.toml"),
        format!(
            "[scheduler]\ntimezone = \"UTC\"\ninclude = [\"jobs/*.toml\"]\n[brokers.r]\nurl = \"{}\"\n",
            sink.url()
        ),
    )
    .expect("config");
    std::fs::create_dir(dir.path().join("jobs")).expect("jobs");
    for file in 0..jobs.div_ceil(10_000) {
        let mut f = std::fs::File::create(dir.path().join(format!("jobs/{file:02}.toml"))).expect("drop-in");
        for i in file * 10_000..jobs.min((file + 1) * 10_000) {
            writeln!(
                f,
                "[jobs.c{i}]\nevery = \"1s\"\naction = \"celery\"\nbroker = \"r\"\nqueue = \"{queue}\"\ntask = \"t.x\"\nargs = [{i}]"
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

    // Each second: empty the queue at the slot's start, then watch it fill.
    let mut bursts: Vec<f64> = Vec::new();
    let mut delivered = 0u64;
    let mut incomplete = 0;
    let since_epoch = || SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    for second in 0..seconds + 3 {
        // Just before the next whole second.
        let now = since_epoch();
        let next = Duration::from_secs(now.as_secs() + 1);
        std::thread::sleep(next - now - Duration::from_millis(20).min(next - now));
        delivered += sink.take();
        let slot = next;
        let mut full_at = None;
        while since_epoch() < slot + Duration::from_millis(980) {
            if sink.count() >= jobs {
                full_at = Some(since_epoch().saturating_sub(slot));
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // The first seconds are start-up (reading the jobs, the first connection).
        if second >= 3 {
            match full_at {
                Some(t) => bursts.push(t.as_secs_f64()),
                None => incomplete += 1,
            }
        }
    }
    // The daemon's peak resident memory, from its start to now.
    let peak_rss = std::fs::read_to_string(format!("/proc/{}/status", beatd.id()))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").to_string()))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or_else(|| "?".to_string(), |kb| format!("{:.0} MiB", kb / 1024.0));
    let _ = Command::new("kill").arg("-TERM").arg(beatd.id().to_string()).status();
    let _ = beatd.wait();
    // Whatever the last second sent before the stop.
    std::thread::sleep(Duration::from_millis(200));
    delivered += sink.take();

    let conn = beatd::state::open_read_only(&dir.path().join("state")).expect("history");
    let (runs, failures): (i64, i64) = conn
        .query_row("SELECT count(*), count(*) FILTER (WHERE outcome != 'success') FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("query");
    bursts.sort_by(f64::total_cmp);
    let pick = |q: f64| bursts.get(((bursts.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    let rate = |t: f64| jobs as f64 / t;
    println!("{jobs} celery jobs every 1 s, the beatd binary, {}; {seconds} s measured\n", sink.describe());
    println!(
        "| burst delivered in (p50 / p90 / max) | rate at p50 | rate at max | seconds not complete | messages delivered | history runs | not successes | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.0} / {:.0} / {:.0} ms | {:.0} msg/s | {:.0} msg/s | {incomplete} | {delivered} | {runs} | {failures} | {peak_rss} |",
        pick(0.5) * 1e3,
        pick(0.9) * 1e3,
        pick(1.0) * 1e3,
        rate(pick(0.5)),
        rate(pick(1.0)),
    );
}
