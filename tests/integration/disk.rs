//! The state folder on a real full file system (a small tmpfs, mounted by the test: CI runs as
//! root): fires are held while the journal cannot be written, `/healthz` and the metric say
//! so, the log is not flooded, and no slot runs twice, not even across a restart.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use chrono::DateTime;

use crate::util::{Beatd, free_port, history, lines, wait_for};

/// A tmpfs mounted for the test's life.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system `path` is on with one file; returns it.
fn fill(path: &std::path::Path) -> std::path::PathBuf {
    let filler = path.join("filler");
    let mut f = std::fs::File::create(&filler).expect("create the filler");
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    filler
}

fn slots(b: &Beatd) -> Vec<i64> {
    lines(&b.path("slots.txt")).iter().map(|l| DateTime::parse_from_rfc3339(l).expect("rfc3339").timestamp()).collect()
}

#[test]
fn a_full_disk_holds_fires_and_never_doubles_one_across_a_restart() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let port = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n[jobs.tick]\nevery = \"1s\"\naction = \"command\"\n\
         catch_up = \"all\"\noverlap = \"allow\"\ncommand = 'echo \"$BEATD_SCHEDULED_AT\" >> slots.txt'\n"
    ));
    let _tmpfs = Tmpfs::mount(&b.path("state"), "2m");
    let mut d = b.run(&[]);
    d.wait_started();
    let api = d.api();
    assert!(wait_for(Duration::from_secs(5), || slots(&b).len() >= 2), "{}", b.log());

    let filler = fill(&b.path("state"));
    let journal_failing = || {
        let (_, health) = api.get("/healthz");
        health["status"] == "degraded"
            && health["reason"].as_str().is_some_and(|r| r.starts_with("cannot write the fire journal: "))
    };
    assert!(
        wait_for(Duration::from_secs(5), journal_failing),
        "/healthz says degraded while the journal cannot be written\n{}",
        b.log()
    );
    let (_, health) = api.get("/healthz");
    let reason = health["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("cannot write the fire journal: ") && reason.contains("held"), "{reason}");
    // Fires are held: nothing runs unrecorded (a run already started may still finish).
    std::thread::sleep(Duration::from_millis(1500));
    let during = slots(&b).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(slots(&b).len(), during, "a fire ran while the journal could not be written\n{}", b.log());
    let (_, metrics) = api.get("/metrics");
    let errors = metrics
        .as_str()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("beatd_state_write_errors_total ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors >= 2.0, "every failed write is counted: {errors}");
    assert_eq!(b.log().matches("cannot write the fire journal").count(), 1, "one line a minute\n{}", b.log());

    // Space returns: recording resumes without a restart, and the held fires run, late.
    std::fs::remove_file(&filler).expect("free the space");
    assert!(
        wait_for(Duration::from_secs(20), || api.get("/healthz").1["status"] == "ok"),
        "healthy again without a restart\n{}",
        b.log()
    );
    assert!(b.log().contains("the fire journal is written again: "), "{}", b.log());
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();

    // A restart reads the journal: nothing ran twice.
    d.start_again();
    d.wait_started();
    std::thread::sleep(Duration::from_millis(2500));
    d.stop();
    std::thread::sleep(Duration::from_millis(200));
    let mut seen = slots(&b);
    let all = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(all, seen.len(), "a slot ran twice: {:?}", slots(&b));
    let expected: Vec<i64> = (seen[0]..=*seen.last().expect("slots")).collect();
    assert_eq!(seen, expected, "no slot lost either (catch_up = all)");
    // The history was kept in memory while it could not be written: it has every run, once.
    let mut recorded: Vec<i64> = history(&b, "tick")
        .iter()
        .filter(|r| r["outcome"] == "success")
        .map(|r| DateTime::parse_from_rfc3339(r["scheduled_at"].as_str().expect("slot")).expect("rfc3339").timestamp())
        .collect();
    recorded.sort_unstable();
    assert_eq!(recorded, seen, "the history holds each run once");
}
