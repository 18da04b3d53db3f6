//! Queue jobs against real brokers: a `redis-server` of the test's own (stopped and started
//! to make outages), and unmodified Celery workers.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::DateTime;
use serde_json::Value;

use crate::util::{Beatd, RedisServer, celery_bin, history, wait_for};

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("json")
}

#[test]
fn push_and_celery_messages_reach_redis_as_documented() {
    let redis = RedisServer::start();
    let b = Beatd::with_config(&format!(
        r#"
[brokers.main]
url = "{}"

[jobs.ping]
every = "1s"
action = "push"
broker = "main"
queue = "pings"
payload = {{ hello = "world", n = 3 }}

[jobs.urgent]
every = "1s"
action = "celery"
broker = "main"
task = "tasks.record"
args = [1, "two"]
priority = 9
"#,
        redis.url()
    ));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(6), || redis.rpushed("pings").len() >= 2), "{}", b.log());
    d.stop();

    let pings = redis.rpushed("pings");
    for p in &pings {
        let p = json(p);
        assert_eq!((p["job"].as_str(), &p["payload"]), (Some("ping"), &serde_json::json!({"hello": "world", "n": 3})));
        let slot = DateTime::parse_from_rfc3339(p["scheduled_at"].as_str().expect("slot")).expect("rfc3339");
        assert_eq!(slot.timestamp_subsec_millis(), 0, "{p}");
        assert!(p["fired_at"].is_string() && p["fire_id"].as_str().is_some_and(|id| id.len() == 36), "{p}");
    }
    // Priority 9 is its own list on Redis.
    let urgent = redis.lpushed("celery\x06\x169");
    assert!(!urgent.is_empty() && redis.lpushed("celery").is_empty());
    let e = json(&urgent[0]);
    assert_eq!(e["headers"]["task"], "tasks.record");
    assert_eq!(e["properties"]["priority"], 9);
    // Every message is in the history once, as a success, with the message's id.
    let runs = history(&b, "ping");
    assert_eq!(runs.len(), pings.len(), "{runs:?}");
    assert!(runs.iter().all(|r| r["outcome"] == "success"));
    let ids: Vec<&str> = runs.iter().rev().map(|r| r["fire_id"].as_str().unwrap_or("")).collect();
    let sent: Vec<String> = pings.iter().map(|p| json(p)["fire_id"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(ids, sent);
    assert!(!b.log().contains("s3cret"));
}

const TICK: &str = r#"
[jobs.tick]
every = "1s"
action = "push"
broker = "main"
queue = "ticks"
catch_up = "all"
"#;

/// The `scheduled_at` of every message on `ticks`, in delivery order.
fn ticks(redis: &RedisServer) -> Vec<i64> {
    redis
        .rpushed("ticks")
        .iter()
        .map(|m| {
            DateTime::parse_from_rfc3339(json(m)["scheduled_at"].as_str().expect("slot")).expect("rfc3339").timestamp()
        })
        .collect()
}

/// Each slot once, in order, none missing.
fn in_order_once(got: &[i64], log: &str) {
    assert!(got.len() >= 10, "{got:?}");
    let expected: Vec<i64> = (got[0]..got[0] + got.len() as i64).collect();
    assert_eq!(got, expected, "slots out of order, doubled or missing\n{log}");
}

#[test]
fn a_ten_second_outage_loses_nothing_and_keeps_slot_order() {
    let mut redis = RedisServer::start();
    let b = Beatd::with_config(&format!("[brokers.main]\nurl = \"{}\"\n{TICK}", redis.url()));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || ticks(&redis).len() >= 2), "{}", b.log());
    redis.stop();
    std::thread::sleep(Duration::from_secs(10));
    redis.restart();
    let before = ticks(&redis).len();
    // The outage's slots arrive at the next retry (backoff at most 8 s by then).
    assert!(wait_for(Duration::from_secs(15), || ticks(&redis).len() >= before + 10), "{}", b.log());
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();
    let log = b.log();
    assert!(log.contains("broker \"main\" is unreachable"), "{log}");
    assert!(log.contains("broker \"main\" is back"), "{log}");
    in_order_once(&ticks(&redis), &log);
}

#[test]
fn an_outage_with_a_sigkill_of_beatd_in_the_middle_loses_nothing() {
    let mut redis = RedisServer::start();
    let b = Beatd::with_config(&format!("[brokers.main]\nurl = \"{}\"\n{TICK}", redis.url()));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || ticks(&redis).len() >= 2), "{}", b.log());
    redis.stop();
    std::thread::sleep(Duration::from_millis(4500));
    d.kill();
    std::thread::sleep(Duration::from_secs(1));
    d.start_again();
    std::thread::sleep(Duration::from_secs(4));
    redis.restart();
    let before = ticks(&redis).len();
    assert!(wait_for(Duration::from_secs(15), || ticks(&redis).len() >= before + 9), "{}", b.log());
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();
    in_order_once(&ticks(&redis), &b.log());
}

/// A Celery worker (`--pool solo`, one message at a time) on `broker` whose task
/// `tasks.record` appends its task id and arguments, as JSON, to `record.jsonl` in `dir`. It
/// consumes `queue` (declared to vanish with the worker, so test runs leave nothing behind on
/// a shared RabbitMQ), with the kombu transport options `options` (JSON), and logs to
/// `worker-QUEUE.log`.
pub fn celery_worker(b: &Beatd, broker: &str, queue: &str, options: &str) -> Child {
    std::fs::write(
        b.path("tasks.py"),
        r#"import json, os
from celery import Celery
from kombu import Queue

app = Celery("tasks", broker=os.environ["BROKER"])
app.conf.task_queues = [Queue(os.environ["QUEUE"], auto_delete=True, durable=False)]
app.conf.broker_transport_options = json.loads(os.environ["OPTIONS"])
app.conf.worker_prefetch_multiplier = 1

@app.task(name="tasks.record", bind=True)
def record(self, *args, **kwargs):
    with open("record.jsonl", "a") as f:
        f.write(json.dumps({"id": self.request.id, "args": args, "kwargs": kwargs}) + "\n")
"#,
    )
    .expect("tasks.py");
    let log = std::fs::File::create(b.path(&format!("worker-{queue}.log"))).expect("log");
    Command::new(celery_bin())
        .current_dir(b.dir.path())
        .env("BROKER", broker)
        .env("QUEUE", queue)
        .env("OPTIONS", options)
        .args([
            "-A",
            "tasks",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--hostname",
            &format!("{queue}@%h"),
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("celery worker")
}

/// A 1 s `celery` job with args and kwargs, one with a priority, one whose messages expire
/// at their slot: an unmodified worker runs each message of the first two once, and discards
/// the expired ones.
fn celery_end_to_end(broker: &str, queue: &str) {
    let b = Beatd::with_config(&format!(
        r#"
[brokers.main]
url = "{broker}"

[jobs.record]
every = "1s"
action = "celery"
broker = "main"
queue = "{queue}"
task = "tasks.record"
args = [1, "two"]
kwargs = {{ three = 3 }}

[jobs.urgent]
every = "1s"
action = "celery"
broker = "main"
queue = "{queue}"
task = "tasks.record"
args = ["urgent"]
priority = 9

[jobs.stale]
every = "1s"
action = "celery"
broker = "main"
queue = "{queue}"
task = "tasks.record"
args = ["stale"]
expires = "0s"
"#
    ));
    let mut worker = celery_worker(&b, broker, queue, "{}");
    let worker_log = || std::fs::read_to_string(b.path(&format!("worker-{queue}.log"))).unwrap_or_default();
    assert!(wait_for(Duration::from_secs(30), || worker_log().contains("ready.")), "{}", worker_log());
    let mut d = b.run(&[]);
    d.wait_started();
    assert!(wait_for(Duration::from_secs(8), || history(&b, "record").len() >= 3), "{}", b.log());
    d.stop();
    let sent = |job: &str| history(&b, job).iter().filter(|r| r["outcome"] == "success").count();
    let (records, urgents, stales) = (sent("record"), sent("urgent"), sent("stale"));
    let runs = || -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for mut run in recorded(&b) {
            run.as_object_mut().expect("object").remove("id");
            *seen.entry(run.to_string()).or_default() += 1;
        }
        seen
    };
    let done = wait_for(Duration::from_secs(30), || runs().values().sum::<usize>() >= records + urgents);
    assert!(done, "the worker ran {:?}\n{}", runs(), worker_log());
    // Let a stale message that was wrongly executed show up before judging.
    std::thread::sleep(Duration::from_millis(500));
    let _ = worker.kill();
    let _ = worker.wait();
    let got = runs();
    assert_eq!(got.get(r#"{"args":[1,"two"],"kwargs":{"three":3}}"#), Some(&records), "{got:?}");
    assert_eq!(got.get(r#"{"args":["urgent"],"kwargs":{}}"#), Some(&urgents), "{got:?}");
    assert_eq!(got.len(), 2, "an expired message ran: {got:?}");
    assert!(stales >= 1);
    assert!(worker_log().contains("Discarding revoked task"), "{}", worker_log());
}

/// What the worker of [`celery_worker`] ran: `{"id", "args", "kwargs"}` each.
pub fn recorded(b: &Beatd) -> Vec<Value> {
    crate::util::lines(&b.path("record.jsonl")).iter().map(|l| json(l)).collect()
}

pub fn unique_queue() -> String {
    format!("beatd-test-{}", fastrand::u64(..))
}

#[test]
fn an_unmodified_celery_worker_runs_the_tasks_on_redis() {
    let redis = RedisServer::start();
    celery_end_to_end(&redis.url(), &unique_queue());
}

#[test]
fn an_unmodified_celery_worker_runs_the_tasks_on_rabbitmq() {
    celery_end_to_end("amqp://guest:guest@127.0.0.1:5672//", &unique_queue());
}

#[test]
fn a_full_outbox_drops_the_oldest_loudly() {
    let port = crate::util::free_port();
    let api = crate::util::free_port();
    // Nothing listens on the broker's port: every message goes to the outbox, which holds two.
    let b = Beatd::with_config(&format!(
        "[scheduler]\nmax_outbox = 2\n[api]\nlisten = \"127.0.0.1:{api}\"\n[brokers.main]\nurl = \"redis://127.0.0.1:{port}/0\"\n{TICK}"
    ));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(8), || b.log().matches("the outbox is full").count() >= 2), "{}", b.log());
    let (_, metrics) = d.api().get("/metrics");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    d.stop();
    assert!(b.log().contains("the outbox is full (2 messages): dropped the 1 oldest"), "{}", b.log());
    assert!(metrics.contains("beatd_outbox_messages 2"), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("beatd_outbox_dropped_total ") && !l.ends_with(" 0")), "{metrics}");
    let dropped = history(&b, "tick");
    assert!(
        dropped
            .iter()
            .filter(|r| r["outcome"] == "failure" && r["error"] == "dropped: the outbox was full (max_outbox)")
            .count()
            >= 2,
        "{dropped:?}"
    );
    // What is left is the newest two, kept for the next start.
    let outbox = rusqlite::Connection::open(b.path("state/outbox.sqlite3")).expect("outbox");
    let left: i64 = outbox.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).expect("count");
    assert_eq!(left, 2);
}

#[test]
fn a_redis_unix_socket_is_a_broker_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("redis.sock");
    let mut server = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let url = format!("unix://{}", socket.display());
    let client = redis::Client::open(url.as_str()).expect("url");
    assert!(wait_for(Duration::from_secs(10), || client.get_connection().is_ok()));
    let b = Beatd::with_config(&format!("[brokers.main]\nurl = \"{url}\"\n{TICK}"));
    let mut d = b.run(&[]);
    let len = || -> usize {
        client.get_connection().ok().and_then(|mut c| redis::cmd("LLEN").arg("ticks").query(&mut c).ok()).unwrap_or(0)
    };
    assert!(wait_for(Duration::from_secs(6), || len() >= 2), "{}", b.log());
    d.stop();
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn push_messages_reach_a_rabbitmq_queue() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
    let queue = unique_queue();
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ch = rt.block_on(async {
        let conn = lapin::Connection::connect(url, Default::default()).await.expect("RabbitMQ on 127.0.0.1:5672");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), Default::default())
            .await
            .expect("declare");
        std::mem::forget(conn); // kept open for the test's length
        ch
    });
    let b = Beatd::with_config(&format!(
        "[brokers.rabbit]\nurl = \"{url}\"\n[jobs.tick]\nevery = \"1s\"\naction = \"push\"\nbroker = \"rabbit\"\nqueue = \"{queue}\"\npayload = {{ n = 1 }}\n"
    ));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(8), || history(&b, "tick").len() >= 2), "{}", b.log());
    d.stop();
    let sent = history(&b, "tick").len();
    let got: Vec<Value> = rt.block_on(async {
        let mut got = Vec::new();
        while let Ok(Some(m)) = ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await {
            got.push(serde_json::from_slice(&m.delivery.data).expect("json"));
        }
        let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        got
    });
    assert_eq!(got.len(), sent, "{got:?}");
    assert!(got.iter().all(|m| m["job"] == "tick" && m["payload"] == serde_json::json!({"n": 1})), "{got:?}");
}

#[test]
fn stale_messages_and_drop_jobs_do_not_wait_for_the_broker() {
    let mut redis = RedisServer::start();
    redis.stop();
    let b = Beatd::with_config(&format!(
        r#"[brokers.main]
url = "{}"

[jobs.fresh]
every = "1s"
action = "celery"
broker = "main"
queue = "fresh"
task = "t.fresh"

[jobs.stale]
every = "1s"
action = "celery"
broker = "main"
queue = "stale"
task = "t.stale"
expires = "2s"

[jobs.beat]
every = "1s"
action = "push"
broker = "main"
queue = "beats"
on_broker_down = "drop"
"#,
        redis.url()
    ));
    let mut d = b.run(&[]);
    std::thread::sleep(Duration::from_millis(4500));
    redis.restart();
    d.wait_for_log("broker \"main\" is back", Duration::from_secs(12));
    std::thread::sleep(Duration::from_millis(1200));
    d.stop();
    let runs = |job: &str, outcome: &str| history(&b, job).iter().filter(|r| r["outcome"] == outcome).count();
    // Everything of `fresh` arrives; `stale` lost the messages older than 2 s by the time the
    // broker came back; `beat` dropped every fire of the outage at once.
    assert_eq!((runs("fresh", "failure"), redis.lpushed("fresh").len()), (0, runs("fresh", "success")));
    assert!(runs("fresh", "success") >= 5);
    let expired = history(&b, "stale")
        .iter()
        .filter(|r| r["outcome"] == "failure" && r["error"] == "expired while waiting in the outbox")
        .count();
    assert!(expired >= 2, "{}", b.log());
    assert_eq!(redis.lpushed("stale").len(), runs("stale", "success"));
    let dropped = history(&b, "beat");
    assert!(dropped.iter().filter(|r| r["outcome"] == "failure").count() >= 3, "{dropped:?}");
    assert!(dropped.iter().any(|r| r["error"].as_str().is_some_and(|e| e.contains("on_broker_down = \"drop\""))));
    assert_eq!(redis.rpushed("beats").len(), runs("beat", "success"));
}

/// A Redis that accepts connections and never answers (a black hole): the send gives up, the
/// messages wait in the outbox, and the timer loop is never delayed by it.
#[test]
fn a_redis_that_never_answers_fills_the_outbox_and_never_delays_the_loop() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = hole.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let held = held.clone();
        move || {
            for conn in hole.incoming().flatten() {
                held.lock().expect("lock").push(conn);
            }
        }
    });
    let api = crate::util::free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{api}\"\n[brokers.main]\nurl = \"redis://127.0.0.1:{port}/0\"\n\
         [jobs.send]\nevery = \"1s\"\naction = \"push\"\nbroker = \"main\"\nqueue = \"q\"\npayload = {{ a = 1 }}\n\
         [jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n"
    ));
    let mut d = b.run(&[]);
    d.wait_started();
    d.wait_for_log("broker \"main\" is unreachable", Duration::from_secs(25));
    assert!(!held.lock().expect("lock").is_empty(), "beatd did connect to the black hole");
    let api = d.api();
    let scrape = || api.get("/metrics").1.as_str().unwrap_or_default().to_string();
    let value = |text: &str, prefix: &str| {
        text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(-1.0)
    };
    // Several more retries against the black hole, while both jobs keep firing.
    assert!(wait_for(Duration::from_secs(15), || value(&scrape(), "beatd_fire_lateness_seconds_count ") >= 20.0));
    let text = scrape();
    let value = |prefix: &str| value(&text, prefix);
    assert!(value("beatd_outbox_messages ") >= 1.0, "the messages wait in the outbox\n{text}");
    // Every fire so far was dispatched within 50 ms of its slot, the waiting send included.
    let total = value("beatd_fire_lateness_seconds_count ");
    let on_time = value("beatd_fire_lateness_seconds_bucket{le=\"0.05\"} ");
    assert!(total >= 10.0 && on_time == total, "{on_time} of {total} fires on time\n{text}");
    d.stop();
    assert!(history(&b, "tick").len() >= 10, "the loop kept firing");
}
