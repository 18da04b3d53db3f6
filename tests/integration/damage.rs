//! Damaged state files: truncated at 100, 4 096 and 6 000 bytes, garbage, zero-length, and from
//! a newer beatd, for each of the history, the journal and the outbox. A damaged history is
//! moved aside and the schedule runs; a damaged journal or outbox stops the start with exit
//! status 3 and the command that starts afresh, which then works.

use std::time::Duration;

use crate::util::{Beatd, free_port, history, wait_for};

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate(u64),
    Garbage,
    Empty,
    Newer,
}

const DAMAGES: [Damage; 6] = [
    Damage::Truncate(100),
    Damage::Truncate(4096),
    Damage::Truncate(6000),
    Damage::Garbage,
    Damage::Empty,
    Damage::Newer,
];

/// A config whose state has all three files (the outbox holds a message for a dead broker).
fn with_state() -> Beatd {
    let b = Beatd::with_config(&format!(
        "[brokers.main]\nurl = \"redis://127.0.0.1:{}/0\"\n\
         [jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n\
         [jobs.send]\nevery = \"1s\"\naction = \"push\"\nbroker = \"main\"\nqueue = \"q\"\npayload = {{ a = 1 }}\n",
        free_port()
    ));
    let mut d = b.run(&[]);
    d.wait_started();
    assert!(wait_for(Duration::from_secs(5), || history(&b, "tick").len() >= 2), "{}", b.log());
    d.stop();
    b
}

fn damage(path: &std::path::Path, how: Damage) {
    match how {
        Damage::Truncate(n) => {
            let f = std::fs::OpenOptions::new().write(true).open(path).expect("open");
            assert!(f.metadata().expect("stat").len() > n, "{} is too small to truncate to {n}", path.display());
            f.set_len(n).expect("truncate");
        }
        Damage::Garbage => {
            std::fs::write(path, (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).expect("write")
        }
        Damage::Empty => std::fs::write(path, b"").expect("write"),
        Damage::Newer => {
            let conn = rusqlite::Connection::open(path).expect("open");
            conn.pragma_update(None, "user_version", 99).expect("version");
        }
    }
}

#[test]
fn a_damaged_history_is_moved_aside_and_the_schedule_runs() {
    for how in DAMAGES {
        let b = with_state();
        // A job paused through the API stays paused: the paused set is in the journal.
        let journal = rusqlite::Connection::open(b.path("state/journal.sqlite3")).expect("journal");
        journal.execute("INSERT INTO paused (job, since) VALUES ('send', 0)", []).expect("pause");
        drop(journal);
        damage(&b.path("state/beatd.sqlite3"), how);
        let mut d = b.run(&[]);
        d.wait_started();
        assert!(
            wait_for(Duration::from_secs(5), || history(&b, "tick").len() >= 2),
            "{how:?}: runs again\n{}",
            b.log()
        );
        d.stop();
        let log = b.log();
        let aside = std::fs::read_dir(b.path("state"))
            .expect("list")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("beatd.sqlite3.damaged-"));
        match how {
            Damage::Empty => {
                assert!(log.contains("is empty: it starts afresh"), "{how:?}\n{log}");
                assert!(!aside, "{how:?}: an empty file is not damage");
            }
            _ => {
                assert!(log.contains("is damaged") && log.contains("moved aside as"), "{how:?}\n{log}");
                assert_eq!(log.matches("is damaged").count(), 1, "{how:?}: one error\n{log}");
                assert!(aside, "{how:?}: the damaged file is kept");
            }
        }
        assert!(log.contains("paused (since before this start) job=send"), "{how:?}: still paused\n{log}");
        // Nothing earlier was relabelled: the fresh history holds only this start's runs.
        assert!(history(&b, "tick").iter().all(|r| r["outcome"] == "success"), "{how:?}: {:?}", history(&b, "tick"));
    }
}

fn refused_then_reset(file: &str, flag: &str) {
    for how in DAMAGES {
        let b = with_state();
        damage(&b.path(&format!("state/{file}")), how);
        let mut d = b.run(&[]);
        if matches!(how, Damage::Empty) {
            // A zero-length file is an empty database: set up as new.
            d.wait_started();
            d.stop();
            continue;
        }
        let status = d.wait_exit(Duration::from_secs(10)).and_then(|s| s.code());
        let log = b.log();
        assert_eq!(status, Some(3), "{file} {how:?}: exit status 3, which the unit does not restart on\n{log}");
        assert!(
            log.contains(&format!("state/{file} is damaged ("))
                && log.contains(&format!("To start afresh, with beatd stopped: beatd state reset {flag} -c CONFIG")),
            "{file} {how:?}\n{log}"
        );
        let out = b.cmd(&["state", "reset", flag, "-c", "beatd.toml"]).output().expect("reset");
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("aside as"), "{out:?}");
        d.start_again();
        d.wait_started();
        d.stop();
    }
}

#[test]
fn a_damaged_journal_stops_the_start_with_the_command_that_starts_afresh() {
    refused_then_reset("journal.sqlite3", "--journal");
}

#[test]
fn a_damaged_outbox_stops_the_start_with_the_command_that_starts_afresh() {
    refused_then_reset("outbox.sqlite3", "--outbox");
}
