//! `beatd next`: the listing, in human and JSON form, from a config and inline.

use crate::util::Beatd;

const CONFIG: &str = r#"
[scheduler]
timezone = "America/New_York"

[jobs.nightly]
cron = "30 2 * * *"
action = "noop"

[jobs.berlin-morning]
cron = "0 9 * * 1-5"
timezone = "Europe/Berlin"
action = "noop"

[jobs.every-6h]
every = "6h"
action = "noop"

[jobs.on-start]
cron = "@reboot"
action = "noop"
"#;

#[test]
fn human_listing_merges_jobs_in_time_order() {
    let b = Beatd::with_config(CONFIG);
    b.cmd(&["next", "-c", "beatd.toml", "--from", "2026-03-07T12:00:00-05:00", "--count", "2"])
        .assert()
        .success()
        .stderr("note: job \"on-start\" runs only when beatd starts (@reboot)\n")
        .stdout(
            "TIME                                IN            JOB
Sat 2026-03-07 13:00:00 -05:00 EST  in 1h         every-6h
Sat 2026-03-07 19:00:00 -05:00 EST  in 7h         every-6h
Sun 2026-03-08 03:00:00 -04:00 EDT  in 14h        nightly
Mon 2026-03-09 02:30:00 -04:00 EDT  in 1d 13h     nightly
Mon 2026-03-09 09:00:00 +01:00 CET  in 1d 15h     berlin-morning
Tue 2026-03-10 09:00:00 +01:00 CET  in 2d 15h     berlin-morning
",
        );
}

#[test]
fn json_listing_with_job_filter_and_until() {
    let b = Beatd::with_config(CONFIG);
    b.cmd(&[
        "next",
        "-c",
        "beatd.toml",
        "--job",
        "nightly",
        "--job",
        "every-6h",
        "--from",
        "2026-03-07T12:00:00-05:00",
        "--until",
        "2026-03-08T12:00:00-04:00",
        "--json",
    ])
    .assert()
    .success()
    .stdout(
        r#"{"job":"every-6h","at":"2026-03-07T13:00:00-05:00","zone":"America/New_York"}
{"job":"every-6h","at":"2026-03-07T19:00:00-05:00","zone":"America/New_York"}
{"job":"every-6h","at":"2026-03-08T01:00:00-05:00","zone":"America/New_York"}
{"job":"nightly","at":"2026-03-08T03:00:00-04:00","zone":"America/New_York"}
{"job":"every-6h","at":"2026-03-08T08:00:00-04:00","zone":"America/New_York"}
"#,
    );
}

#[test]
fn inline_cron_shows_the_dst_fold() {
    let b = Beatd::with_config("");
    b.cmd(&[
        "next",
        "--cron",
        "*/30 * * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-11-01T00:45:00-04:00",
        "--count",
        "5",
        "--json",
    ])
    .assert()
    .success()
    .stdout(
        r#"{"job":"inline","at":"2026-11-01T01:00:00-04:00","zone":"America/New_York"}
{"job":"inline","at":"2026-11-01T01:30:00-04:00","zone":"America/New_York"}
{"job":"inline","at":"2026-11-01T01:00:00-05:00","zone":"America/New_York"}
{"job":"inline","at":"2026-11-01T01:30:00-05:00","zone":"America/New_York"}
{"job":"inline","at":"2026-11-01T02:00:00-05:00","zone":"America/New_York"}
"#,
    );
}

#[test]
fn inline_every_with_offset() {
    let b = Beatd::with_config("");
    b.cmd(&["next", "--every", "5m", "--offset", "90s", "--from", "2026-01-01T00:00:00Z", "-n", "2", "--json"])
        .assert()
        .success()
        .stdout(
            r#"{"job":"inline","at":"2026-01-01T00:01:30+00:00","zone":"UTC"}
{"job":"inline","at":"2026-01-01T00:06:30+00:00","zone":"UTC"}
"#,
        );
}

#[test]
fn bad_inline_input_and_unknown_jobs_fail_clearly() {
    let b = Beatd::with_config(CONFIG);
    b.cmd(&["next", "--cron", "* * * * 8"])
        .assert()
        .code(1)
        .stderr("error: --cron: invalid cron expression \"* * * * 8\": day-of-week field: 8 is out of range 0-7\n");
    b.cmd(&["next", "--cron", "0 0 * * *", "--tz", "Europe/Pari"])
        .assert()
        .code(1)
        .stderr("error: unknown time zone \"Europe/Pari\" (did you mean \"Europe/Paris\"?)\n");
    b.cmd(&["next", "--every", "0s"])
        .assert()
        .code(1)
        .stderr("error: --every: \"every\" must be at least 1s, not \"0s\"\n");
    b.cmd(&["next", "-c", "beatd.toml", "--job", "nightlly"])
        .assert()
        .code(1)
        .stderr("error: no job \"nightlly\" in beatd.toml (did you mean \"nightly\"?)\n");
    b.cmd(&["next", "--cron", "* * * * *", "--from", "yesterday"]).assert().code(2);
}
