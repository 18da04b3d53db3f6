//! The delivery promise of queue jobs, tried the way it broke: "every message recorded as
//! delivered arrived, once". Real RabbitMQ on 127.0.0.1:5672, Redis servers of the tests' own,
//! unmodified Celery workers, and a TCP proxy that cuts connections mid-batch.
//!
//! Every beatd here logs at `trace`, and no task argument may appear in its log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::queue::{celery_worker, recorded, unique_queue};
use crate::util::{Beatd, Proxy, Reaped, RedisServer, once, wait_for};

const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672//";
/// Put in task arguments: it must never reach beatd's log.
const MARKER: &str = "do-not-log-7f3a9c";

/// Whether `log` holds the marker, as text or as the list of bytes a library's `Debug` of a
/// message body prints (`[100, 111, 45, ...]`).
fn leaked(log: &str) -> bool {
    let bytes: Vec<String> = MARKER.bytes().map(|b| b.to_string()).collect();
    log.contains(MARKER) || log.contains(&bytes.join(", "))
}

/// A lapin client of the test's own, for declaring and reading queues.
struct Rabbit {
    rt: tokio::runtime::Runtime,
    ch: lapin::Channel,
    _conn: lapin::Connection,
    declared: Vec<String>,
}

impl Rabbit {
    fn connect() -> Rabbit {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (conn, ch) = rt.block_on(async {
            let conn =
                lapin::Connection::connect(RABBIT, Default::default()).await.expect("RabbitMQ on 127.0.0.1:5672");
            let ch = conn.create_channel().await.expect("channel");
            (conn, ch)
        });
        Rabbit { rt, ch, _conn: conn, declared: Vec::new() }
    }

    fn declare(&mut self, queue: &str) {
        use lapin::options::QueueDeclareOptions;
        self.rt
            .block_on(self.ch.queue_declare(queue.into(), QueueDeclareOptions::default(), Default::default()))
            .expect("declare");
        self.declared.push(queue.to_string());
    }

    /// Every message in `queue`, taken off it.
    fn take_all(&self, queue: &str) -> Vec<Value> {
        use lapin::options::BasicGetOptions;
        self.rt.block_on(async {
            let mut got = Vec::new();
            while let Ok(Some(m)) = self.ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await {
                got.push(serde_json::from_slice(&m.delivery.data).expect("json"));
            }
            got
        })
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        use lapin::options::QueueDeleteOptions;
        for q in &self.declared {
            let _ = self.rt.block_on(self.ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()));
        }
    }
}

/// Every recorded run of every job, newest first.
fn all_runs(b: &Beatd) -> Vec<Value> {
    let out = b.cmd(&["history", "-c", "beatd.toml", "--json", "-n", "1000000"]).output().expect("history");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}

/// The fire ids recorded as delivered for each job, each checked to be recorded once.
fn delivered_ids(b: &Beatd) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_job: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in all_runs(b) {
        assert_eq!(r["outcome"], "success", "{r}");
        let id = r["fire_id"].as_str().expect("id").to_string();
        assert!(by_job.entry(r["job"].as_str().expect("job").into()).or_default().insert(id), "recorded twice: {r}");
    }
    by_job
}

fn worker_ready(b: &Beatd, queue: &str) {
    let log = || std::fs::read_to_string(b.path(&format!("worker-{queue}.log"))).unwrap_or_default();
    assert!(wait_for(Duration::from_secs(40), || log().contains("ready.")), "{}", log());
}

/// The task ids the worker ran whose first argument is `tag`.
fn ran(b: &Beatd, tag: &str) -> Vec<String> {
    recorded(b).iter().filter(|r| r["args"][0] == tag).map(|r| r["id"].as_str().expect("task id").to_string()).collect()
}

#[test]
fn a_queue_no_worker_has_declared_waits_alone_and_the_others_arrive_once() {
    let (healthy, orphan) = (unique_queue(), unique_queue());
    let b = Beatd::with_config(&format!(
        r#"
[brokers.rabbit]
url = "{RABBIT}"

# The orphan first: in each tick's batch its message comes before the healthy one's.
[jobs.orphan]
every = "1s"
action = "celery"
broker = "rabbit"
queue = "{orphan}"
task = "tasks.record"
args = ["orphan"]
kwargs = {{ secret = "{MARKER}" }}

[jobs.healthy]
every = "1s"
action = "celery"
broker = "rabbit"
queue = "{healthy}"
task = "tasks.record"
args = ["healthy", "{MARKER}"]
"#
    ));
    let _w1 = Reaped(celery_worker(&b, RABBIT, &healthy, "{}"));
    worker_ready(&b, &healthy);
    let mut d = b.run(&["--log-level", "trace"]);
    let held = format!("queue \"{orphan}\" has no binding");
    d.wait_for_log(&held, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    // A worker for the orphan queue comes up and declares it.
    let _w2 = Reaped(celery_worker(&b, RABBIT, &orphan, "{}"));
    worker_ready(&b, &orphan);
    let back = format!("queue \"{orphan}\" takes messages again");
    d.wait_for_log(&back, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    d.stop();

    let delivered = delivered_ids(&b);
    let total = delivered.values().map(BTreeSet::len).sum::<usize>();
    assert!(wait_for(Duration::from_secs(30), || recorded(&b).len() >= total), "{}", recorded(&b).len());
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show up now
    for job in ["healthy", "orphan"] {
        let ran = once(ran(&b, job), job);
        assert_eq!(ran, delivered[job], "{job}: what ran is what was recorded as delivered");
    }
    assert!(delivered["orphan"].len() >= 5, "the held slots arrive: {:?}", delivered["orphan"]);
    let log = b.log();
    assert!(!log.contains("unreachable"), "the broker was never unreachable:\n{log}");
    assert!(!leaked(&log), "a task argument reached the log");
}

#[test]
fn large_kwargs_arrive_and_a_message_too_large_for_a_frame_fails_alone() {
    let queue = unique_queue();
    let blob = "x".repeat(200_000);
    let pad = "y".repeat(200_000);
    let b = Beatd::with_config(&format!(
        r#"
[brokers.rabbit]
url = "{RABBIT}"

[jobs.big]
every = "1s"
action = "celery"
broker = "rabbit"
queue = "{queue}"
task = "tasks.record"
args = ["big"]
kwargs = {{ blob = "{blob}", marker = "{MARKER}" }}

[jobs.small]
every = "1s"
action = "celery"
broker = "rabbit"
queue = "{queue}"
task = "tasks.record"
args = ["small"]

[jobs.huge-headers]
every = "1s"
action = "celery"
broker = "rabbit"
queue = "{queue}"
task = "tasks.record"
args = ["huge-headers"]
headers = {{ pad = "{pad}" }}
"#
    ));
    let _worker = Reaped(celery_worker(&b, RABBIT, &queue, "{}"));
    worker_ready(&b, &queue);
    let mut d = b.run(&["--log-level", "trace"]);
    assert!(wait_for(Duration::from_secs(10), || crate::util::history(&b, "small").len() >= 4), "{}", b.log());
    d.stop();

    let runs = all_runs(&b);
    let refused: Vec<&Value> = runs.iter().filter(|r| r["job"] == "huge-headers").collect();
    assert!(!refused.is_empty());
    for r in &refused {
        assert_eq!(r["outcome"], "failure", "{r}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("refused by the broker: the message's headers take ")
                && error.ends_with("bytes, more than fits in one AMQP frame (131072 bytes, the broker's frame_max)"),
            "{error}"
        );
    }
    let ok = |job: &str| -> BTreeSet<String> {
        runs.iter()
            .filter(|r| r["job"] == job)
            .inspect(|r| assert_eq!(r["outcome"], "success", "{r}"))
            .map(|r| r["fire_id"].as_str().expect("id").to_string())
            .collect()
    };
    let (big, small) = (ok("big"), ok("small"));
    assert!(big.len() >= 4 && small.len() >= 4);
    assert!(wait_for(Duration::from_secs(30), || recorded(&b).len() >= big.len() + small.len()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(once(ran(&b, "big"), "big"), big);
    assert_eq!(once(ran(&b, "small"), "small"), small);
    assert!(ran(&b, "huge-headers").is_empty());
    let sizes: BTreeSet<usize> = recorded(&b)
        .iter()
        .filter(|r| r["args"][0] == "big")
        .map(|r| r["kwargs"]["blob"].as_str().map_or(0, str::len))
        .collect();
    assert_eq!(sizes, BTreeSet::from([200_000]), "the worker got the whole 200 KB kwargs");
    let log = b.log();
    assert!(!log.contains("unreachable"), "{log}");
    assert!(!leaked(&log) && !log.contains(&blob[..1000]), "a task argument reached the log");
}

#[test]
fn a_connection_cut_in_the_middle_of_a_batch_loses_and_doubles_nothing() {
    let mut rabbit = Rabbit::connect();
    let queue = unique_queue();
    rabbit.declare(&queue);
    let proxy = Proxy::start("127.0.0.1:5672");
    // 200 jobs due in the same second: each tick is one batch of about 250 KB.
    let pad = "z".repeat(1000);
    let mut config = format!("[brokers.rabbit]\nurl = \"amqp://guest:guest@127.0.0.1:{}//\"\n", proxy.port);
    for i in 0..200 {
        config.push_str(&format!(
            "[jobs.p{i:03}]\nevery = \"1s\"\naction = \"push\"\nbroker = \"rabbit\"\nqueue = \"{queue}\"\ncatch_up = \"all\"\npayload = {{ pad = \"{pad}\", secret = \"{MARKER}\" }}\n"
        ));
    }
    let b = Beatd::with_config(&config);
    let mut d = b.run(&["--log-level", "trace"]);
    assert!(wait_for(Duration::from_secs(10), || crate::util::history(&b, "p000").len() >= 2), "{}", b.log());
    // Cut twice, each time about half way into a batch.
    for cut in 1..=2 {
        proxy.arm(120_000);
        assert!(wait_for(Duration::from_secs(10), || proxy.cuts() == cut), "{}", b.log());
        let back = || b.log().matches(" is back ").count() >= cut;
        assert!(wait_for(Duration::from_secs(15), back), "{}", b.log());
    }
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();

    let delivered = delivered_ids(&b);
    let arrived = once(rabbit.take_all(&queue).iter().map(|m| m["fire_id"].as_str().expect("id").to_string()), "queue");
    let recorded: BTreeSet<String> = delivered.values().flatten().cloned().collect();
    let lost: Vec<&String> = recorded.difference(&arrived).collect();
    assert!(lost.is_empty(), "{} recorded as delivered never arrived: {lost:?}", lost.len());
    let unrecorded: Vec<&String> = arrived.difference(&recorded).collect();
    assert!(unrecorded.is_empty(), "{} arrived but are not recorded: {unrecorded:?}", unrecorded.len());
    // Every job has every slot: as many as the first job, and nothing left in the outbox.
    let counts: BTreeSet<usize> = delivered.values().map(BTreeSet::len).collect();
    assert_eq!(counts.len(), 1, "every job delivered the same number of slots: {counts:?}");
    let outbox = rusqlite::Connection::open(b.path("state/outbox.sqlite3")).expect("outbox");
    let left: i64 = outbox.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).expect("count");
    assert_eq!(left, 0);
    assert!(b.log().matches("is unreachable").count() >= 2, "{}", b.log());
    assert!(!leaked(&b.log()), "a task argument reached the log");
}

#[test]
fn every_amqp_url_form_kombu_reads_as_the_default_vhost_delivers() {
    let mut rabbit = Rabbit::connect();
    let forms = ["5672", "5672/", "5672//", "5672/%2F"];
    let mut config = String::new();
    let mut queues = Vec::new();
    for (i, form) in forms.iter().enumerate() {
        let q = unique_queue();
        rabbit.declare(&q);
        config.push_str(&format!(
            "[brokers.b{i}]\nurl = \"amqp://guest:guest@127.0.0.1:{form}\"\n[jobs.j{i}]\nevery = \"1s\"\naction = \"push\"\nbroker = \"b{i}\"\nqueue = \"{q}\"\n"
        ));
        queues.push(q);
    }
    let b = Beatd::with_config(&config);
    let mut d = b.run(&[]);
    assert!(
        wait_for(Duration::from_secs(10), || (0..forms.len())
            .all(|i| crate::util::history(&b, &format!("j{i}")).len() >= 2)),
        "{}",
        b.log()
    );
    d.stop();
    let delivered = delivered_ids(&b);
    for (i, q) in queues.iter().enumerate() {
        let got = rabbit.take_all(q).len();
        assert_eq!(got, delivered[&format!("j{i}")].len(), "amqp://...:{}", forms[i]);
    }
}

/// Sets RabbitMQ's `max_message_size` for the test's length (channels opened meanwhile take
/// it), and puts back what it was.
struct MaxMessageSize(u64);

impl MaxMessageSize {
    fn set(limit: u64) -> MaxMessageSize {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["eval", "application:get_env(rabbit, max_message_size)."])
            .output()
            .expect("rabbitmqctl");
        let text = String::from_utf8_lossy(&out.stdout);
        let before: u64 = text.trim().trim_start_matches("{ok,").trim_end_matches('}').parse().unwrap_or(134_217_728);
        // A run killed before it could put the limit back left its own value: use the default.
        let before = if before == limit { 134_217_728 } else { before };
        eval_max(limit);
        MaxMessageSize(before)
    }
}

fn eval_max(limit: u64) {
    let ok = std::process::Command::new("rabbitmqctl")
        .args(["eval", &format!("application:set_env(rabbit, max_message_size, {limit}).")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "rabbitmqctl eval (the test runs as root on the broker's host)");
}

impl Drop for MaxMessageSize {
    fn drop(&mut self) {
        eval_max(self.0);
    }
}

#[test]
fn a_body_over_rabbitmqs_max_message_size_fails_alone() {
    let mut rabbit = Rabbit::connect();
    let queue = unique_queue();
    rabbit.declare(&queue);
    let _limit = MaxMessageSize::set(300_017);
    let blob = "w".repeat(400_000);
    let b = Beatd::with_config(&format!(
        r#"
[brokers.rabbit]
url = "{RABBIT}"

[jobs.oversized]
every = "1s"
action = "push"
broker = "rabbit"
queue = "{queue}"
payload = {{ blob = "{blob}" }}

[jobs.fine]
every = "1s"
action = "push"
broker = "rabbit"
queue = "{queue}"
payload = {{ n = 1 }}
"#
    ));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(12), || crate::util::history(&b, "fine").len() >= 4), "{}", b.log());
    d.stop();
    let runs = all_runs(&b);
    let oversized: Vec<&Value> = runs.iter().filter(|r| r["job"] == "oversized").collect();
    assert!(oversized.len() >= 3, "{oversized:?}");
    for r in &oversized {
        assert_eq!(r["outcome"], "failure", "{r}");
        let e = r["error"].as_str().unwrap_or_default();
        assert!(
            e.starts_with("refused by the broker: the message body is ")
                && e.ends_with("bytes, more than the broker's max_message_size of 300017"),
            "{e}"
        );
    }
    let fine = runs.iter().filter(|r| r["job"] == "fine").inspect(|r| assert_eq!(r["outcome"], "success", "{r}"));
    let fine: BTreeSet<String> = fine.map(|r| r["fire_id"].as_str().expect("id").to_string()).collect();
    let arrived: Vec<Value> = rabbit.take_all(&queue);
    assert!(arrived.iter().all(|m| m["job"] == "fine"), "an oversized message arrived");
    let arrived = once(arrived.iter().map(|m| m["fire_id"].as_str().expect("id").to_string()), "fine");
    assert_eq!(arrived, fine);
}

/// kombu's Redis transport options, as the workers have them: `priority_steps` of every
/// priority with `sep = ":"`, and `global_keyprefix`.
fn redis_options_case(options: &str, beatd_options: &str) -> (Beatd, RedisServer, Vec<Value>) {
    let redis = RedisServer::start();
    let mut config = format!("[brokers.main]\nurl = \"{}\"\ntransport_options = {beatd_options}\n", redis.url());
    for p in 0..10 {
        config.push_str(&format!(
            "[jobs.p{p}]\nevery = \"1s\"\naction = \"celery\"\nbroker = \"main\"\nqueue = \"work\"\ntask = \"tasks.record\"\nargs = [\"p{p}\"]\npriority = {p}\nkwargs = {{ secret = \"{MARKER}\" }}\n"
        ));
    }
    let b = Beatd::with_config(&config);
    // Messages wait until the worker starts, so it has every priority to choose from.
    let mut d = b.run(&["--log-level", "trace"]);
    assert!(wait_for(Duration::from_secs(8), || crate::util::history(&b, "p9").len() >= 3), "{}", b.log());
    d.stop();
    let delivered = delivered_ids(&b);
    let total: usize = delivered.values().map(BTreeSet::len).sum();
    let _worker = Reaped(celery_worker(&b, &redis.url(), "work", options));
    assert!(wait_for(Duration::from_secs(40), || recorded(&b).len() >= total), "{}", recorded(&b).len());
    std::thread::sleep(Duration::from_millis(500));
    for (job, ids) in &delivered {
        assert_eq!(&once(ran(&b, job), job), ids, "{job}");
    }
    assert!(!leaked(&b.log()), "a task argument reached the log");
    let ran = recorded(&b);
    (b, redis, ran)
}

#[test]
fn redis_priority_steps_and_separator_match_the_workers() {
    let options = r#"{"priority_steps": [0,1,2,3,4,5,6,7,8,9], "sep": ":", "queue_order_strategy": "priority"}"#;
    let beatd = r#"{ priority_steps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], sep = ":", queue_order_strategy = "priority" }"#;
    let (_b, _redis, ran) = redis_options_case(options, beatd);
    // One worker, one message at a time: kombu polls the lists in step order, so every
    // message of priority 0 runs before any of 1, and so on.
    let order: Vec<u32> =
        ran.iter().map(|r| r["args"][0].as_str().expect("tag")[1..].parse().expect("priority")).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "run in priority order");
    assert_eq!(order.iter().collect::<BTreeSet<_>>().len(), 10, "every priority ran");
}

#[test]
fn a_global_key_prefix_matches_the_workers() {
    let (_b, redis, ran) = redis_options_case(r#"{"global_keyprefix": "app1:"}"#, r#"{ global_keyprefix = "app1:" }"#);
    assert_eq!(ran.iter().map(|r| r["args"][0].to_string()).collect::<BTreeSet<_>>().len(), 10);
    let mut conn = redis.conn();
    let unprefixed: Vec<String> = redis::cmd("KEYS").arg("work*").query(&mut conn).expect("keys");
    assert!(unprefixed.is_empty(), "{unprefixed:?}");
}

/// The outage the hardening issue asks for: a 1 s celery job into a RabbitMQ node of the
/// test's own; the node stops (cleanly, as a restart does), beatd is SIGKILLed while it is
/// down and started again, the node comes back. Every slot from the first message to the last
/// is in the queue once, in slot order, under the task id beatd gives that slot.
#[test]
fn a_rabbitmq_restart_with_a_sigkill_of_beatd_in_the_outage_loses_and_doubles_nothing() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    if !crate::util::RabbitNode::possible() {
        eprintln!("skipped: a RabbitMQ node of the test's own needs root");
        return;
    }
    let mut node = crate::util::RabbitNode::start(None);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    rt.block_on(async {
        let conn = lapin::Connection::connect(&node.url(), Default::default()).await.expect("the node");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare("ticks".into(), durable, Default::default()).await.expect("declare");
        let _ = conn.close(0, "declared".into()).await;
    });
    let b = Beatd::with_config(&format!(
        "[brokers.node]\nurl = \"{}\"\n[jobs.tick]\nevery = \"1s\"\naction = \"celery\"\nbroker = \"node\"\ntask = \"tasks.tick\"\nqueue = \"ticks\"\ncatch_up = \"all\"\n",
        node.url()
    ));
    let started = chrono::Utc::now().timestamp();
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(10), || crate::util::history(&b, "tick").len() >= 3), "{}", b.log());
    node.stop();
    assert!(wait_for(Duration::from_secs(10), || b.log().contains("is unreachable")), "{}", b.log());
    std::thread::sleep(Duration::from_secs(2));
    d.kill();
    std::thread::sleep(Duration::from_secs(1));
    d.start_again();
    std::thread::sleep(Duration::from_secs(2));
    node.restart();
    assert!(wait_for(Duration::from_secs(30), || b.log().contains("is back")), "{}", b.log());
    std::thread::sleep(Duration::from_secs(2));
    d.stop();
    let ended = chrono::Utc::now().timestamp();

    let ids: Vec<String> = rt.block_on(async {
        let conn = lapin::Connection::connect(&node.url(), Default::default()).await.expect("the node");
        let ch = conn.create_channel().await.expect("channel");
        let mut ids = Vec::new();
        while let Ok(Some(m)) = ch.basic_get("ticks".into(), BasicGetOptions { no_ack: true }).await {
            ids.push(m.properties.correlation_id().as_ref().expect("a task id").to_string());
        }
        ids
    });
    let slot_of: BTreeMap<String, i64> = (started - 2..=ended + 2)
        .map(|t| {
            let slot = chrono::DateTime::from_timestamp(t, 0).expect("in range");
            (beatd::job::fire_id("tick", slot).to_string(), t)
        })
        .collect();
    let slots: Vec<i64> =
        ids.iter().map(|id| *slot_of.get(id).unwrap_or_else(|| panic!("unknown task id {id}"))).collect();
    let log = b.log();
    assert!(slots.len() >= 8, "{slots:?}\n{log}");
    let expected: Vec<i64> = (slots[0]..slots[0] + slots.len() as i64).collect();
    assert_eq!(slots, expected, "slots lost, doubled or out of order\n{log}");
    // Nothing is left behind either: the last slot is the last one before beatd stopped.
    assert!(*slots.last().expect("slots") >= ended - 4, "{slots:?} ended {ended}\n{log}");
}
