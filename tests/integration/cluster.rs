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

/// Three (or more) replicas of one config on one Redis, each in its own folder, appending
/// `FIRE_ID SCHEDULED_AT NODE` for each fire of a 1 s job to one shared file.
struct Replicas {
    shared: tempfile::TempDir,
    nodes: Vec<(String, Beatd, Running)>,
    name: String,
}

impl Replicas {
    fn start(redis: &RedisServer, n: usize) -> Replicas {
        let shared = tempfile::tempdir().expect("temp dir");
        let name = format!("t{}", fastrand::u32(..));
        let fires = shared.path().join("fires.txt");
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = format!("node-{i}");
            let b = Beatd::with_config(&format!(
                "[cluster]\nredis = \"{}\"\nname = \"{name}\"\nlease = \"{LEASE_MS}ms\"\nnode = \"{node}\"\n\n\
                 [jobs.tick]\nevery = \"1s\"\naction = \"command\"\ncatch_up = \"all\"\noverlap = \"allow\"\n\
                 command = 'echo \"$BEATD_FIRE_ID $BEATD_SCHEDULED_AT {node}\" >> {}'\n",
                redis.url(),
                fires.display()
            ));
            let d = b.run(&[]);
            d.wait_started();
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
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "a fire id ran twice: {fires:?}\n{logs}");
        let mut slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
        slots.sort_unstable();
        let (first, last) = (slots[0], *slots.last().expect("fires"));
        let expected: Vec<i64> = (first..=last).collect();
        assert_eq!(slots, expected, "slots doubled or missing: {fires:?}\n{logs}");
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
        "beatd.toml:2:9: cluster: \"redis\" must be a redis://, rediss:// or unix:// URL, not \"http://10.0.0.5\"",
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
