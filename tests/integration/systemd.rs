//! systemd: the notify protocol over a real datagram socket, and a watchdog that is fed by the
//! timer loop itself.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beatd::clock::Clock;
use beatd::config::parse_str;
use beatd::fire::Fire;
use beatd::scheduler::{Dispatch, Scheduler};
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::util::Beatd;

/// Messages received on `sock` until `until` says stop or `limit` passes.
fn receive(sock: &UnixDatagram, limit: Duration, mut until: impl FnMut(&[String]) -> bool) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_status_watchdog_and_stopping() {
    let b = Beatd::with_config("[jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n");
    let socket = b.path("notify.sock");
    let sock = UnixDatagram::bind(&socket).expect("bind");
    let mut d = b.run_with_env(&[], &[("NOTIFY_SOCKET", socket.as_os_str()), ("WATCHDOG_USEC", "400000".as_ref())]);

    let first = receive(&sock, Duration::from_secs(5), |m| !m.is_empty());
    assert!(first[0].contains("READY=1"), "{first:?}");
    assert!(first[0].contains("STATUS=1 job, next: tick at "), "{first:?}");

    // Pings every 200 ms (half of WATCHDOG_USEC), and a status kept current.
    let more = receive(&sock, Duration::from_millis(1500), |_| false);
    let pings = more.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!((4..=10).contains(&pings), "{pings} pings in 1.5 s: {more:?}");
    assert!(more.iter().any(|m| m.starts_with("STATUS=1 job, next: tick at ")), "{more:?}");

    // A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    b.write(
        "beatd.toml",
        "[jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n[jobs.tock]\nevery = \"1h\"\naction = \"noop\"\n",
    );
    d.signal(Signal::SIGHUP);
    let reload = receive(&sock, Duration::from_secs(5), |m| m.iter().any(|x| x.contains("READY=1")));
    let reloading = reload.iter().position(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="));
    let ready = reload.iter().position(|m| m.contains("READY=1") && m.contains("STATUS=reloaded: 2 jobs"));
    assert!(matches!((reloading, ready), (Some(a), Some(b)) if a < b), "{reload:?}");

    // A broken config: READY=1 again (the daemon runs on), and the status says so until fixed.
    b.write("beatd.toml", "[jobs.tick]\nevery = \"1 fortnight\"\naction = \"noop\"\n");
    d.signal(Signal::SIGHUP);
    let failed = receive(&sock, Duration::from_secs(5), |m| m.iter().any(|x| x.contains("READY=1")));
    assert!(
        failed.iter().any(|m| m.contains("READY=1") && m.contains("STATUS=reload failed (1 error in the config)")),
        "{failed:?}"
    );
    let later = receive(&sock, Duration::from_millis(1500), |_| false);
    assert!(
        later.iter().any(|m| m.starts_with("STATUS=reload failed, previous config running; 2 jobs, next: ")),
        "{later:?}"
    );

    d.signal(Signal::SIGTERM);
    let last = receive(&sock, Duration::from_secs(5), |m| m.iter().any(|x| x.contains("STOPPING=1")));
    assert!(last.iter().any(|m| m.contains("STOPPING=1")), "{last:?}");
    assert_eq!(d.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()), Some(0));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_nothing_breaks() {
    let b = Beatd::with_config("[jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n");
    let mut d = b.run(&[]);
    std::thread::sleep(Duration::from_millis(1500));
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()), Some(0), "{}", b.log());
    assert!(!b.log().contains("cannot notify systemd"), "{}", b.log());
}

#[test]
fn in_a_cluster_the_status_line_says_the_role() {
    let redis = crate::util::RedisServer::start();
    let config = |node: &str| {
        format!(
            "[cluster]\nredis = \"{}\"\nname = \"sd\"\nlease = \"2s\"\nnode = \"{node}\"\n\
             [jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n",
            redis.url()
        )
    };
    let (a, b) = (Beatd::with_config(&config("beat-a")), Beatd::with_config(&config("beat-b")));
    let (sock_a, sock_b) = (a.path("notify.sock"), b.path("notify.sock"));
    let (listen_a, listen_b) = (UnixDatagram::bind(&sock_a).expect("bind"), UnixDatagram::bind(&sock_b).expect("bind"));
    let leader = a.run_with_env(&[], &[("NOTIFY_SOCKET", sock_a.as_os_str())]);
    leader.wait_for_log("this node is now the cluster's leader", Duration::from_secs(5));
    let _follower = b.run_with_env(&[], &[("NOTIFY_SOCKET", sock_b.as_os_str())]);
    let seen = |sock: &UnixDatagram, prefix: &str| {
        let got = receive(sock, Duration::from_secs(5), |m| m.iter().any(|x| x.contains(prefix)));
        got.iter().any(|m| m.contains(prefix))
    };
    assert!(seen(&listen_a, "STATUS=leader; 1 job, next: tick at "), "{}", a.log());
    assert!(seen(&listen_b, "STATUS=follower of beat-a; 1 job, next: tick at "), "{}", b.log());
}

/// Blocks the loop's thread while `stall` is set, as a loop stuck in a tick would.
struct Stalling {
    stall: Arc<Mutex<Option<Duration>>>,
}

impl Dispatch for Stalling {
    fn dispatch(&self, _fire: Fire) {
        if let Some(d) = self.stall.lock().expect("lock").take() {
            std::thread::sleep(d);
        }
    }
}

#[test]
fn a_loop_that_stops_ticking_stops_the_pings() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let jobs = parse_str("[jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n", Path::new("t.toml"), Path::new("."))
        .expect("valid")
        .jobs;
    let pings: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stall = Arc::new(Mutex::new(Some(Duration::from_millis(1200))));
    let recorder = pings.clone();
    let scheduler = Scheduler::new(jobs, Clock::System, Stalling { stall }).with_watchdog(
        Duration::from_millis(50),
        Box::new(move || recorder.lock().expect("lock").push(Instant::now())),
    );
    let stop = CancellationToken::new();
    rt.block_on(async {
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                scheduler.run(stop).await;
            }
        });
        // The first fire (within a second) stalls the loop for 1.2 s; watch 2.5 s in all.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.cancel();
        task.await.expect("loop ends");
    });
    let pings = pings.lock().expect("lock").clone();
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(longest >= Duration::from_millis(1150), "no ping while the loop was stuck: {longest:?}");
    // Otherwise the loop pings on time.
    let on_time = gaps.iter().filter(|g| **g < Duration::from_millis(150)).count();
    assert!(on_time + 1 >= gaps.len(), "{gaps:?}");
    assert!(pings.len() >= 15, "{} pings", pings.len());
}
