//! The cluster's lease and fence against a real `redis-server` of the test's own: one holder
//! at a time, only the holder renews or releases, and a holder whose lease expired (a frozen
//! leader waking up) is refused by the fence, so it can dispatch nothing.

use std::time::Duration;

use beatd::cluster::lease::{Fenced, Lease};
use chrono::{DateTime, Utc};

use crate::util::{Beatd, RedisServer, Running, wait_for};

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("valid")
}

async fn connect(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).expect("url");
    client.get_multiplexed_async_connection().await.expect("redis answers")
}

#[tokio::test]
async fn one_holder_at_a_time_and_the_fence_refuses_a_lease_that_expired() {
    let redis = RedisServer::start();
    let mut conn = connect(&redis).await;
    let ttl = Duration::from_millis(300);
    let (a, b) = (Lease::new("prod", "beat-a", ttl), Lease::new("prod", "beat-b", ttl));
    let other_cluster = Lease::new("staging", "beat-b", ttl);

    assert!(a.acquire(&mut conn).await.expect("acquire"));
    assert!(!b.acquire(&mut conn).await.expect("acquire"), "the lease is held");
    assert!(other_cluster.acquire(&mut conn).await.expect("acquire"), "clusters share a Redis by name");
    assert_eq!(b.holder(&mut conn).await.expect("holder").as_deref(), Some("beat-a"));
    assert!(!b.renew(&mut conn).await.expect("renew"), "only the holder renews");
    assert!(!b.release(&mut conn).await.expect("release"), "only the holder releases");
    assert_eq!(b.fence(&mut conn, at(0)).await.expect("fence"), Fenced::NotOurs);
    assert_eq!(b.watermark(&mut conn).await.expect("watermark"), None, "a refused fence writes nothing");

    // The holder's ticks advance the watermark, which never goes back.
    assert_eq!(a.fence(&mut conn, at(1000)).await.expect("fence"), Fenced::Ours { before: None });
    assert_eq!(a.fence(&mut conn, at(2000)).await.expect("fence"), Fenced::Ours { before: Some(at(1000)) });
    assert_eq!(a.fence(&mut conn, at(1500)).await.expect("fence"), Fenced::Ours { before: Some(at(2000)) });
    assert_eq!(a.watermark(&mut conn).await.expect("watermark"), Some(at(2000)));

    // `a` freezes past its lease; `b` takes over and reads where `a` stopped.
    assert!(a.renew(&mut conn).await.expect("renew"));
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(a.holder(&mut conn).await.expect("holder"), None, "Redis expired the lease");
    assert!(b.acquire(&mut conn).await.expect("acquire"));
    assert_eq!(b.fence(&mut conn, at(3000)).await.expect("fence"), Fenced::Ours { before: Some(at(2000)) });
    // `a` wakes up: it cannot renew, and its next tick is refused.
    assert!(!a.renew(&mut conn).await.expect("renew"));
    assert_eq!(a.fence(&mut conn, at(2500)).await.expect("fence"), Fenced::NotOurs);
    assert_eq!(b.watermark(&mut conn).await.expect("watermark"), Some(at(3000)));

    // A clean stop hands over at once.
    assert!(b.release(&mut conn).await.expect("release"));
    assert!(a.acquire(&mut conn).await.expect("acquire"));
}

#[tokio::test]
async fn a_restarted_node_of_the_same_name_is_another_holder() {
    let redis = RedisServer::start();
    let mut conn = connect(&redis).await;
    let ttl = Duration::from_secs(5);
    let before = Lease::new("prod", "beat-a", ttl);
    let after = Lease::new("prod", "beat-a", ttl);
    assert!(before.acquire(&mut conn).await.expect("acquire"));
    assert!(!after.renew(&mut conn).await.expect("renew"), "a new process does not inherit the old one's lease");
    assert_eq!(after.fence(&mut conn, at(0)).await.expect("fence"), Fenced::NotOurs);
}

// ---- replicas: real binaries on one redis-server ----------------------------------------

/// The lease in the scenarios: short, so a failover takes seconds.
const LEASE_MS: u64 = 2000;

/// Two or three replicas of one config on one Redis, each in its own folder, appending
/// `FIRE_ID SCHEDULED_AT NODE` for each fire of a 1 s job to one shared file.
struct Replicas {
    shared: tempfile::TempDir,
    nodes: Vec<(String, Beatd, Running)>,
    name: String,
}

impl Replicas {
    fn start(redis: &RedisServer, n: usize) -> Replicas {
        Replicas::start_with(redis, n, |_| String::new())
    }

    /// Node `i` gets `extra(i)` appended to its config (an `[api]`, a job of its own).
    fn start_with(redis: &RedisServer, n: usize, extra: impl Fn(usize) -> String) -> Replicas {
        Replicas::start_on(&redis.url(), n, extra)
    }

    /// Replicas on the Redis at `url` (`redis+sentinel://` too).
    fn start_on(url: &str, n: usize, extra: impl Fn(usize) -> String) -> Replicas {
        let shared = tempfile::tempdir().expect("temp dir");
        let name = format!("t{}", fastrand::u32(..));
        let fires = shared.path().join("fires.txt");
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = format!("node-{i}");
            let b = Beatd::with_config(&format!(
                "[cluster]\nredis = \"{}\"\nname = \"{name}\"\nlease = \"{LEASE_MS}ms\"\nnode = \"{node}\"\n\n\
                 [jobs.tick]\nevery = \"1s\"\naction = \"command\"\ncatch_up = \"all\"\noverlap = \"allow\"\n\
                 command = 'echo \"$BEATD_FIRE_ID $BEATD_SCHEDULED_AT $(cat node)\" >> {}'\n{}",
                url,
                fires.display(),
                extra(i)
            ));
            // The same job on every node (the same config): the node's name comes from a file
            // in its working folder.
            std::fs::write(b.path("node"), &node).expect("write");
            let d = b.run(&[]);
            d.wait_started();
            // The first node leads: later ones find the lease taken.
            if i == 0 {
                d.wait_for_log("this node is now the cluster's leader", Duration::from_secs(5));
            }
            nodes.push((node, b, d));
        }
        Replicas { shared, nodes, name }
    }

    /// The node holding the lease, from Redis.
    fn leader(&self, redis: &RedisServer) -> Option<usize> {
        let value: Option<String> =
            redis::cmd("GET").arg(format!("beatd:{}:lease", self.name)).query(&mut redis.conn()).ok()?;
        let holder = value?.split(' ').next()?.to_string();
        self.nodes.iter().position(|(n, _, _)| *n == holder)
    }

    fn wait_leader(&self, redis: &RedisServer, limit: Duration) -> Option<usize> {
        let mut found = None;
        wait_for(limit, || {
            found = self.leader(redis);
            found.is_some()
        });
        found
    }

    /// Every fire so far: (fire id, slot, node).
    fn fires(&self) -> Vec<(String, i64, String)> {
        crate::util::lines(&self.shared.path().join("fires.txt"))
            .iter()
            .map(|l| {
                let mut parts = l.split(' ');
                let id = parts.next().expect("id").to_string();
                let slot =
                    chrono::DateTime::parse_from_rfc3339(parts.next().expect("slot")).expect("rfc3339").timestamp();
                (id, slot, parts.next().expect("node").to_string())
            })
            .collect()
    }

    fn logs(&self) -> String {
        self.nodes.iter().map(|(n, b, _)| format!("--- {n}\n{}", b.log())).collect()
    }

    /// Stops every node cleanly, then asserts: no fire id twice, no slot twice, no slot
    /// missing from the first to the last.
    fn stop_and_check(mut self) -> Vec<(String, i64, String)> {
        for (_, _, d) in &mut self.nodes {
            d.stop();
        }
        // Commands started just before the stop finish writing.
        std::thread::sleep(Duration::from_millis(300));
        let fires = self.fires();
        let logs = self.logs();
        let mut ids: Vec<&str> = fires.iter().map(|f| f.0.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let duplicates = fires.len() - ids.len();
        let mut slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
        slots.sort_unstable();
        let (first, last) = (slots[0], *slots.last().expect("fires"));
        slots.dedup();
        let missing = (last - first + 1) as usize - slots.len();
        println!("fires {}, duplicate fire ids {duplicates}, missing slots {missing}", fires.len());
        assert_eq!((duplicates, missing), (0, 0), "slots doubled or missing: {fires:?}\n{logs}");
        fires
    }
}

#[test]
fn killing_the_leader_five_times_loses_and_doubles_no_slot() {
    let redis = RedisServer::start();
    let mut cluster = Replicas::start(&redis, 3);
    let mut failovers = Vec::new();
    for round in 0..5 {
        let leader = cluster.wait_leader(&redis, Duration::from_secs(5)).expect("a leader");
        std::thread::sleep(Duration::from_millis(fastrand::u64(1200..2800)));
        // Not in the first 150 ms of a second, when the leader may be between a tick's fence
        // and its dispatch: a kill there loses that tick (at most once, never twice), as a
        // crash of a single node does; the README says so. Anywhere else, nothing is lost.
        let into_second = chrono::Utc::now().timestamp_subsec_millis();
        if into_second < 150 {
            std::thread::sleep(Duration::from_millis(u64::from(150 - into_second) + fastrand::u64(0..600)));
        }
        let killed = std::time::Instant::now();
        cluster.nodes[leader].2.kill();
        let mut next = None;
        let replaced = wait_for(Duration::from_millis(LEASE_MS + 2000), || {
            next = cluster.leader(&redis).filter(|&l| l != leader);
            next.is_some()
        });
        let took = killed.elapsed();
        assert!(replaced, "round {round}: no new leader\n{}", cluster.logs());
        assert!(took <= Duration::from_millis(LEASE_MS + 1000), "round {round}: failover took {took:?}");
        failovers.push(took);
        // The killed node comes back as a follower.
        cluster.nodes[leader].2.start_again();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let fires = cluster.stop_and_check();
    let nodes: std::collections::BTreeSet<&str> = fires.iter().map(|f| f.2.as_str()).collect();
    assert!(nodes.len() >= 2, "the fires moved between nodes: {nodes:?}");
    let ms: Vec<u128> = failovers.iter().map(Duration::as_millis).collect();
    println!("failover after SIGKILL (lease {LEASE_MS} ms), ms: {ms:?}; fires {}", fires.len());
}

#[test]
fn a_leader_frozen_past_its_lease_fires_nothing_stale_and_steps_down() {
    let redis = RedisServer::start();
    let cluster = Replicas::start(&redis, 3);
    let leader = cluster.wait_leader(&redis, Duration::from_secs(5)).expect("a leader");
    std::thread::sleep(Duration::from_millis(2500));
    let frozen = &cluster.nodes[leader];
    frozen.2.signal(nix::sys::signal::Signal::SIGSTOP);
    let stopped_at = chrono::Utc::now().timestamp();
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(cluster.leader(&redis).is_some_and(|l| l != leader), "another node leads\n{}", cluster.logs());
    frozen.2.signal(nix::sys::signal::Signal::SIGCONT);
    frozen.2.wait_for_log("no longer the cluster's leader", Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(2000));
    let name = frozen.0.clone();
    let fires = cluster.stop_and_check();
    let stale: Vec<_> = fires.iter().filter(|f| f.2 == name && f.1 > stopped_at).collect();
    assert!(stale.is_empty(), "the frozen leader fired after it woke: {stale:?}");
}

#[test]
fn with_redis_down_nothing_fires_and_the_outage_is_caught_up_once() {
    let mut redis = RedisServer::start();
    let cluster = Replicas::start(&redis, 2);
    cluster.wait_leader(&redis, Duration::from_secs(5)).expect("a leader");
    std::thread::sleep(Duration::from_millis(2500));
    redis.stop();
    let down_at = chrono::Utc::now().timestamp();
    // A fire already dispatched may still be writing.
    std::thread::sleep(Duration::from_millis(500));
    let during = cluster.fires().len();
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(cluster.fires().len(), during, "something fired with Redis down\n{}", cluster.logs());
    redis.restart();
    let caught_up = wait_for(Duration::from_secs(8), || cluster.fires().iter().any(|f| f.1 > down_at + 15));
    assert!(caught_up, "no fire after Redis came back\n{}", cluster.logs());
    std::thread::sleep(Duration::from_millis(1500));
    let fires = cluster.stop_and_check();
    assert!(fires.iter().filter(|f| f.1 > down_at && f.1 <= down_at + 15).count() >= 14, "{fires:?}");
}

#[test]
fn cluster_settings_are_checked() {
    let b = Beatd::with_config(
        "[cluster]\nredis = \"http://10.0.0.5\"\nname = \"a b\"\nlease = \"100ms\"\nnode = \"\"\nextra = 1\n",
    );
    let out = b.cmd(&["check", "-c", "beatd.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "beatd.toml:2:9: cluster: \"redis\" must be a redis://, rediss://, unix:// or redis+sentinel:// URL, not \"http://10.0.0.5\"",
        "beatd.toml:3:8: cluster: \"name\" must be letters, digits, '-', '_' or '.': it is part of Redis keys",
        "beatd.toml:4:9: cluster: \"lease\" must be 500ms or more",
        "beatd.toml:5:8: cluster: \"node\" must be a name without spaces",
        "beatd.toml:6:1: cluster: unknown key \"extra\"",
    ] {
        assert!(err.contains(expected), "no {expected:?} in\n{err}");
    }
    let dropin = Beatd::with_config("[scheduler]\ninclude = [\"conf.d/*.toml\"]\n");
    std::fs::create_dir(dropin.path("conf.d")).expect("mkdir");
    dropin.write("conf.d/x.toml", "[cluster]\nredis = \"redis://127.0.0.1/\"\n");
    let out = dropin.cmd(&["check", "-c", "beatd.toml"]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[cluster] may only be set in the main config"), "{out:?}");
    let good = Beatd::with_config("[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n");
    good.cmd(&["check", "-c", "beatd.toml"]).assert().success();
}

/// An `[api]` on a free port.
fn api_section(_: usize) -> String {
    format!("\n[api]\nlisten = \"127.0.0.1:{}\"\n", crate::util::free_port())
}

#[test]
fn pause_and_run_now_on_a_follower_reach_the_leader() {
    let redis = RedisServer::start();
    let cluster = Replicas::start_with(&redis, 2, api_section);
    let (leader, follower) = (cluster.nodes[0].2.api(), cluster.nodes[1].2.api());
    assert_eq!(follower.get("/api/cluster").1["role"], "follower");
    assert_eq!(follower.get("/api/cluster").1["leader"], "node-0");
    let (_, health) = leader.get("/healthz");
    assert_eq!(
        (health["cluster"]["role"].as_str(), health["cluster"]["node"].as_str()),
        (Some("leader"), Some("node-0"))
    );
    // The dashboard's health strip shows each node's role.
    let strip = |api: &crate::util::Api| {
        let (status, page, _) = api.request("GET", "/", None);
        assert_eq!(status, 200);
        let page = page.as_str().unwrap_or_default().to_string();
        let start = page.find("<section class=\"strip\"").unwrap_or_else(|| panic!("no health strip: {page}"));
        page[start..].split("</section>").next().unwrap_or_default().to_string()
    };
    let (l, f) = (strip(&leader), strip(&follower));
    assert!(
        l.contains("Cluster</span><span class=\"badge ok\">leader</span><span class=\"reason\">node node-0</span>"),
        "{l}"
    );
    assert!(f.contains(">follower</span><span class=\"reason\">node node-1, leader node-0</span>"), "{f}");

    // Paused on the follower: the leader stops running it.
    assert_eq!(follower.post("/api/jobs/tick/pause").0, 200);
    assert!(wait_for(Duration::from_secs(2), || leader.get("/api/jobs/tick").1["paused"] == true));
    std::thread::sleep(Duration::from_millis(1200));
    let paused = cluster.fires().len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(cluster.fires().len(), paused, "the leader ran a job paused on a follower\n{}", cluster.logs());
    assert_eq!(follower.post("/api/jobs/tick/resume").0, 200);
    assert!(wait_for(Duration::from_secs(2), || leader.get("/api/jobs/tick").1["paused"] == false));

    // Run now on the follower: it runs once, on the leader, with the id the follower gave.
    let (status, body) = follower.post("/api/jobs/tick/run");
    assert_eq!(status, 202, "{body}");
    let id = body["fire_id"].as_str().expect("fire id").to_string();
    assert!(wait_for(Duration::from_secs(3), || cluster.fires().iter().any(|f| f.0 == id)), "{}", cluster.logs());
    std::thread::sleep(Duration::from_millis(1000));
    let runs: Vec<_> = cluster.fires().into_iter().filter(|f| f.0 == id).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].2, "node-0", "the leader ran it");

    // The CLI says who leads, and that the history is the node's own.
    let b = &cluster.nodes[1].1;
    let out = b.cmd(&["status", "-c", "beatd.toml"]).output().expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("cluster {}: this node node-1 is a follower; the leader is node-0.", cluster.name)),
        "{text}"
    );
    let out = b.cmd(&["history", "-c", "beatd.toml"]).output().expect("history");
    assert!(String::from_utf8_lossy(&out.stderr).contains("these are the runs of this node only"), "{out:?}");
}

#[test]
fn a_follower_whose_jobs_differ_from_the_leaders_says_so() {
    let redis = RedisServer::start();
    let extra = |i: usize| {
        let job = if i == 1 { "\n[jobs.only-here]\nevery = \"1h\"\naction = \"noop\"\n" } else { "" };
        format!("{job}{}", api_section(i))
    };
    let cluster = Replicas::start_with(&redis, 2, extra);
    let follower = &cluster.nodes[1].2;
    follower.wait_for_log("this node's jobs differ from the leader's", Duration::from_secs(3));
    let api = follower.api();
    assert_eq!(api.get("/api/cluster").1["config_mismatch"], true);
    let (_, metrics) = api.get("/metrics");
    assert!(metrics.as_str().is_some_and(|m| m.contains("beatd_cluster_config_mismatch 1")), "{metrics}");
    let (_, metrics) = cluster.nodes[0].2.api().get("/metrics");
    let m = metrics.as_str().unwrap_or_default().to_string();
    assert!(m.contains("beatd_cluster_config_mismatch 0") && m.contains("beatd_cluster_leader 1"), "{m}");
    let out = cluster.nodes[1].1.cmd(&["status", "-c", "beatd.toml"]).output().expect("status");
    assert!(String::from_utf8_lossy(&out.stdout).contains("this node's jobs DIFFER from the leader's"), "{out:?}");
}

/// A `redis-server` process of this test (a master, a replica or a Sentinel), killed on drop.
struct Proc(std::process::Child);

impl Proc {
    fn start(dir: &std::path::Path, args: &[String]) -> Proc {
        let child = std::process::Command::new("redis-server")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        Proc(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn answers(port: u16, command: &str) -> Option<String> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?.get_connection().ok()?;
    redis::cmd(command).query::<redis::Value>(&mut conn).ok().map(|v| format!("{v:?}"))
}

#[test]
fn with_sentinel_the_cluster_follows_a_promoted_replica() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (master, replica, sentinel) = (crate::util::free_port(), crate::util::free_port(), crate::util::free_port());
    let server = |port: u16, more: &[String]| {
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dbfilename"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("dump-{port}.rdb"));
        args.extend_from_slice(more);
        Proc::start(dir.path(), &args)
    };
    let mut master_proc = Some(server(master, &[]));
    let _replica = server(replica, &["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
    std::fs::write(
        dir.path().join("sentinel.conf"),
        format!(
            "port {sentinel}\nbind 127.0.0.1\nsentinel monitor beat 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds beat 1000\nsentinel failover-timeout beat 5000\nlogfile sentinel.log\n"
        ),
    )
    .expect("write");
    let _sentinel = Proc::start(dir.path(), &["sentinel.conf".into(), "--sentinel".into()]);
    assert!(wait_for(Duration::from_secs(10), || answers(sentinel, "PING").is_some()), "the Sentinel answers");
    // The Sentinel learns of replicas from the master's INFO, every 10 s: it cannot promote
    // one it has not seen yet.
    let knows_replica = wait_for(Duration::from_secs(15), || {
        let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{sentinel}/")).and_then(|c| c.get_connection())
        else {
            return false;
        };
        let replicas: redis::RedisResult<Vec<redis::Value>> =
            redis::cmd("SENTINEL").arg("replicas").arg("beat").query(&mut c);
        replicas.is_ok_and(|r| !r.is_empty())
    });
    assert!(knows_replica, "the Sentinel found the replica");
    assert!(
        wait_for(Duration::from_secs(10), || answers(replica, "INFO")
            .is_some_and(|i| i.contains("master_link_status:up"))),
        "the replica follows the master"
    );

    let cluster = Replicas::start_on(&format!("redis+sentinel://127.0.0.1:{sentinel}/beat"), 2, |_| String::new());
    assert!(wait_for(Duration::from_secs(6), || cluster.fires().len() >= 3), "{}", cluster.logs());
    drop(master_proc.take());
    let killed = chrono::Utc::now().timestamp();
    // The Sentinel notices (1 s), promotes the replica; the cluster follows it.
    let promoted = wait_for(Duration::from_secs(20), || cluster.fires().iter().any(|f| f.1 > killed + 2));
    let role = answers(replica, "INFO").map(|i| i.contains("role:master"));
    let sentinel_log = std::fs::read_to_string(dir.path().join("sentinel.log")).unwrap_or_default();
    assert!(promoted, "no fire after the master died (replica promoted: {role:?})\n{sentinel_log}\n{}", cluster.logs());
    assert_eq!(role, Some(true), "the replica was promoted");
    std::thread::sleep(Duration::from_millis(1500));
    cluster.stop_and_check();
}

#[test]
fn a_leader_stopped_cleanly_hands_over_at_once() {
    let redis = RedisServer::start();
    let mut cluster = Replicas::start(&redis, 2);
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = std::time::Instant::now();
    cluster.nodes[0].2.stop();
    assert!(cluster.nodes[0].1.log().contains("no longer the cluster's leader: stopping"), "{}", cluster.logs());
    let mut next = None;
    assert!(wait_for(Duration::from_secs(2), || {
        next = cluster.leader(&redis);
        next == Some(1)
    }));
    let took = stopped.elapsed();
    assert!(took < Duration::from_millis(LEASE_MS), "the lease was released, not left to expire: {took:?}");
    println!("handover after a clean stop: {} ms", took.as_millis());
    cluster.nodes[0].2.start_again();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.stop_and_check();
}
